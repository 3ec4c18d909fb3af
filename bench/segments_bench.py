"""What segments cost: one-row V1 requests/s with and without them, interleaved in one run.

Two servers serve the bundled penguins model, each pinned to the same core in turn: one
with the shipped spec, one with the same spec plus ``segments`` (``island`` and ``sex``,
fitted per value on the palmerpenguins data, as ``fit-spec --segment`` does). wrk, pinned
to the other core, drives one-row V1 requests at concurrency 8; the two modes alternate
for ``--rounds`` rounds, so drift of the machine hits both alike. Prints each round's
requests/s and the ratio segmented ÷ plain, and the geometric mean of the ratios.

    python bench/segments_bench.py                 # 5 rounds of 5 s per mode
    python bench/segments_bench.py --smoke         # seconds
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_bench import Server, run_wrk, v1_body

from gateway.fitting import fit_segments
from gateway.samples import sample_records
from gateway.spec import load_spec


def repository(root: Path, segments: list[str]) -> Path:
    """A repository of the bundled penguins model, its spec with ``segments`` fitted."""
    import palmerpenguins

    source = ROOT / "models" / "penguins" / "1"
    folder = root / "penguins" / "1"
    folder.mkdir(parents=True)
    shutil.copy(source / "model.onnx", folder / "model.onnx")
    spec = load_spec(source / "spec.yaml")
    if segments:
        spec = fit_segments(spec, palmerpenguins.load_penguins(), segments)
    spec.save(folder / "spec.yaml")
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per mode per round")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--segments", default="island,sex")
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--client-cpu", default="0")
    parser.add_argument("--smoke", action="store_true", help="one round of 1 s")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.duration = 1, 1.0
    with tempfile.TemporaryDirectory(prefix="driftgate-segments-bench-") as tmp:
        work = Path(tmp)
        repos = {
            "plain": repository(work / "plain", []),
            "segmented": repository(work / "segmented", args.segments.split(",")),
        }
        body = work / "body.json"
        body.write_bytes(v1_body(sample_records(load_spec(repos["plain"] / "penguins" / "1" / "spec.yaml"), 1, seed=1)))
        servers = {mode: Server(repo, {}, args.server_cpu or None, work) for mode, repo in repos.items()}
        try:
            for server in servers.values():  # warm up: the first requests load caches
                run_wrk(f"{server.url}/v1/models/penguins:predict", body, "", args.connections, 1, args.client_cpu or None)
            ratios = []
            print("| round | plain req/s | segmented req/s | segmented / plain |\n|---|---|---|---|")
            for r in range(args.rounds):
                rps = {}
                order = list(servers) if r % 2 == 0 else list(reversed(servers))
                for mode in order:
                    url = f"{servers[mode].url}/v1/models/penguins:predict"
                    result = run_wrk(url, body, "", args.connections, args.duration, args.client_cpu or None)
                    if result.get("errors"):
                        raise RuntimeError(f"{mode}: {result['errors']} errors")
                    rps[mode] = result["rps"]
                ratio = rps["segmented"] / rps["plain"]
                ratios.append(ratio)
                print(f"| {r + 1} | {rps['plain']:.0f} | {rps['segmented']:.0f} | {ratio:.3f} |", flush=True)
            mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
            print(f"\ngeometric mean segmented / plain: {mean:.3f} ({args.segments}; c={args.connections}, one-row V1)")
        finally:
            for server in servers.values():
                server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
