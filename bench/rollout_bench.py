"""What a shadow costs the primary: one-row V1 requests at c=8, with and without a shadow.

One ``driftgate serve`` (guarded, monitored, pinned to one core with ``taskset``) serves
penguins version 1 as the primary; version 2 is the same bundle registered beside it, so
the shadow does exactly the primary's work again (guards, transform, inference,
monitoring) on every request (``--sample 1``). wrk (pinned to the other core) sends one-row
V1 requests at 8 connections; the rollout is switched between *no candidate* and *v2 in
shadow* with ``PUT /v1/models/penguins/rollout`` on the same running server, the two
interleaved round by round, so both see the same machine at the same time.

Prints requests/s and p99 of each, the median over rounds of the with/without throughput
ratio and of the p99 difference, and the shadow's rows by outcome (compared and dropped:
a full queue drops shadow work, never the primary's).

    python bench/rollout_bench.py                 # 5 rounds of 2 x 3 s
    python bench/rollout_bench.py --smoke         # seconds; checks it all works
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from http_bench import Server, run_wrk, v1_body

from gateway.samples import sample_records
from gateway.spec import load_spec

TOKEN = "rollout-bench-token"
SHADOW: dict[str, Any] = {"primary": 1, "candidate": {"version": 2, "mode": "shadow", "share": 1.0}}
NO_SHADOW: dict[str, Any] = {"primary": 1, "candidate": None}


def put_rollout(url: str, state: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{url}/v1/models/penguins/rollout",
        data=json.dumps(state).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200, r.status


def shadow_rows(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/v1/models/penguins/rollout", timeout=10) as r:
        body = json.loads(r.read())
    return body.get("shadow", {}).get("rows", {}) if body.get("shadow") else {}


def main() -> int:
    parser = argparse.ArgumentParser(description="driftgate: one-row V1 at c=8 with and without a shadow, interleaved.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--client-cpu", default="0")
    parser.add_argument("--smoke", action="store_true", help="one round of 1 s cells")
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    if args.smoke:
        args.rounds, args.duration = 1, 1.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repository = work / "models"
        shutil.copytree(ROOT / "models" / "penguins" / "1", repository / "penguins" / "1")
        shutil.copytree(ROOT / "models" / "penguins" / "1", repository / "penguins" / "2")
        spec = load_spec(repository / "penguins" / "1" / "spec.yaml")
        body = work / "v1-1.body"
        body.write_bytes(v1_body(sample_records(spec, 1, seed=1)))
        server = Server(repository, {"DRIFTGATE_ADMIN_TOKEN": TOKEN}, args.server_cpu, work)
        url = server.url + "/v1/models/penguins:predict"
        results: dict[str, list[dict[str, Any]]] = {"without shadow": [], "with shadow": []}
        rows: dict[str, int] = {}
        try:
            put_rollout(server.url, NO_SHADOW)
            if not args.smoke:
                run_wrk(url, body, "", args.connections, 1.0, args.client_cpu)  # warm-up
            for round_ in range(args.rounds):
                order = [("without shadow", NO_SHADOW), ("with shadow", SHADOW)]
                if round_ % 2:
                    order.reverse()  # neither side always runs first
                for label, state in order:
                    put_rollout(server.url, state)
                    result = run_wrk(url, body, "", args.connections, args.duration, args.client_cpu)
                    assert result["errors"] == 0 and result["status_errors"] == 0, result
                    results[label].append(result)
                    if state is SHADOW:
                        rows = shadow_rows(server.url)  # before the shadow is switched off
                    print(f"round {round_ + 1}: {label}: {result['rps']:.0f} req/s, p99 {result['p99_us'] / 1000:.2f} ms", file=sys.stderr)
        finally:
            server.stop()
    ratios = [w["rps"] / wo["rps"] for w, wo in zip(results["with shadow"], results["without shadow"], strict=True)]
    p99_deltas = [
        (w["p99_us"] - wo["p99_us"]) / 1000 for w, wo in zip(results["with shadow"], results["without shadow"], strict=True)
    ]
    lines = [
        f"One-row V1, c={args.connections}, {args.rounds} interleaved rounds of {args.duration:g} s (server on CPU {args.server_cpu}, wrk on {args.client_cpu}):",
        "",
        "| | req/s (median) | p99 ms (median) |",
        "|---|---:|---:|",
    ]
    for label, runs in results.items():
        lines.append(
            f"| {label} | {statistics.median(r['rps'] for r in runs):.0f} | {statistics.median(r['p99_us'] for r in runs) / 1000:.2f} |"
        )
    lines += [
        "",
        f"with ÷ without (median of the rounds' ratios): {statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})",
        f"p99 with − without (median): {statistics.median(p99_deltas):+.2f} ms (rounds: {', '.join(f'{d:+.2f}' for d in p99_deltas)})",
        f"shadow rows: {rows}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
