"""HTTP benchmark of driftgate with wrk: guarded vs unguarded, in one run.

Starts ``driftgate serve`` pinned to one core (``taskset``) once per mode, and drives it
with wrk (Debian package ``wrk``) pinned to the other core: one-row and 64-row requests
at concurrency 1, 8 and 32, for each protocol asked for. Modes:

- ``guarded``: guards, transform, inference and monitoring, as in production;
- ``batched`` (with ``--modes``): guarded, with dynamic batching on (32 rows, 2 ms);
- ``logged`` (with ``--modes``): guarded, with the prediction log on at sample 1.0
  (``DRIFTGATE_LOG_DIR`` in the run's temporary folder): what logging every row costs;
- ``unguarded``: the same server with ``DRIFTGATE_GUARDS=false DRIFTGATE_MONITORING=false``
  (no checks, no metrics, no drift, no prediction store): what they cost.

Prints a Markdown table (also written to ``--out``) with requests/s, rows/s, p50 and p99,
and the guarded/unguarded throughput ratio of each cell, all measured in this one run.
These 2-core machines are noisy: compare ratios, not absolute numbers.

    python bench/http_bench.py                       # full run (~2 min)
    python bench/http_bench.py --smoke               # seconds; what CI runs

``--reference mlserver`` loads Seldon MLServer first (as ``bench/peers`` runs it, serving
the same ``lr``/``gbt`` models) with a V2 JSON ``[N, F]`` body at the same cells, and adds a
column: each driftgate cell's rows/s ÷ MLServer's at the same rows and connections, in this
one run (MLServer speaks V2 JSON only over REST, so that is what it gets).

``--baseline DIR`` adds a ``baseline`` mode: the guarded server run from another checkout
(``git worktree add DIR <commit>``), interleaved with the others in every round, so a change
is measured against the code before it on the same machine at the same time; the baseline's
row shows guarded ÷ baseline.

``--workers N`` serves with N worker processes (``driftgate serve --workers N``); to compare
1 and 2 workers, unpin both sides (``--server-cpu '' --client-cpu ''``) so the workers can
use every core, and run it once per worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.samples import sample_records
from gateway.spec import load_spec

LUA = Path(__file__).with_name("wrk_post.lua")
MODES = {
    "guarded": {},
    "unguarded": {"DRIFTGATE_GUARDS": "false", "DRIFTGATE_MONITORING": "false"},
    # guarded, with dynamic batching on for every model (up to 32 rows per call, 2 ms wait)
    "batched": {"DRIFTGATE_BATCHING": "*=32:2"},
    # guarded, logging every row (gateway.predlog) into the run's temporary folder
    "logged": {"DRIFTGATE_LOG_DIR": "{workdir}/predictions", "DRIFTGATE_LOG_SAMPLE": "1.0"},
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu and shutil.which("taskset") else cmd


class Server:
    """One server process pinned to ``cpu``, ready once ``ready`` answers 200. By default
    ``driftgate serve`` on ``repository`` (``env`` added); ``command`` runs anything else."""

    def __init__(
        self,
        repository: Path,
        env: dict[str, str],
        cpu: str | None,
        workdir: Path,
        command: list[str] | None = None,
        cwd: Path = ROOT,
        ready: str = "/v2/health/ready",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
        full_env.update(env, DRIFTGATE_LOG_LEVEL="warning")
        self.log = open(workdir / f"server-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        cmd = command or [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--repository",
            str(repository),
            "--port",
            str(self.port),
        ]
        cmd = [part.replace("{port}", str(self.port)) for part in cmd]
        full_env = {k: v.replace("{port}", str(self.port)) for k, v in full_env.items()}
        self.process = subprocess.Popen(
            pinned(cpu, cmd), env=full_env, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}{ready}", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
            if self.process.poll() is not None:
                break
        raise RuntimeError(f"server did not become ready; see {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def mlserver(cpu: str | None, workdir: Path) -> Server:
    """Seldon MLServer as ``bench/peers`` runs it (its pinned environment, its runtime serving
    the ``lr`` and ``gbt`` models, inference in the HTTP process); ``bench/peers.sh`` or
    ``bench/peers/setup.sh mlserver`` makes its environment first."""
    from peers.compare import start

    return start("mlserver", cpu, workdir)


def wait_for_workers(url: str, spec: Any, workers: int, timeout: float = 60) -> None:
    """Predict over fresh connections until ids of every worker came back (an id's prefix
    names its worker; a worker takes connections only once its models are loaded)."""
    body = v1_body(sample_records(spec, 1))
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {workers} workers answered within {timeout} s")
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json", "Connection": "close"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            seen.add(json.loads(r.read())["predictions"][0]["id"].split("-")[0])


def v1_body(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"instances": records}).encode()


def v2_body(spec: Any, records: list[dict[str, Any]]) -> bytes:
    from gateway.codecs.v2 import feature_datatype as _feature_datatype

    inputs = [
        {
            "name": f.name,
            "datatype": _feature_datatype(f),
            "shape": [len(records), 1],
            "data": [r[f.name] for r in records],
        }
        for f in spec.features
    ]
    return json.dumps({"inputs": inputs}).encode()


def v2_binary_body(spec: Any, records: list[dict[str, Any]]) -> tuple[bytes, str]:
    """Binary tensor data, as tritonclient sends it by default; returns (body, headers)."""
    import numpy as np

    from gateway.codecs.v2 import feature_datatype as _feature_datatype
    from gateway.protocol.v2 import encode_bytes_tensor

    inputs, blobs = [], []
    for f in spec.features:
        datatype = _feature_datatype(f)
        column = [r[f.name] for r in records]
        if datatype == "BYTES":
            raw = encode_bytes_tensor(column)
        else:
            raw = np.asarray(column, dtype={"FP64": "<f8", "INT64": "<i8", "BOOL": "?"}[datatype]).tobytes()
        blobs.append(raw)
        inputs.append(
            {
                "name": f.name,
                "datatype": datatype,
                "shape": [len(records), 1],
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(
        blobs
    ), f"Content-Type: application/octet-stream|Inference-Header-Content-Length: {len(header)}"


def _matrix(spec: Any, records: list[dict[str, Any]]) -> Any:
    import numpy as np

    names = [f.name for f in spec.features]
    if any(type(f).__struct_config__.tag not in ("number", "integer") for f in spec.features):
        raise SystemExit(f"the v2-matrix protocols need an all-numeric spec; {spec.name!r} is not")
    return np.asarray([[r[name] for name in names] for r in records], dtype=np.float32)


def v2_matrix_body(spec: Any, records: list[dict[str, Any]]) -> tuple[bytes, str]:
    """One [N, F] FP32 tensor of every feature (as a model's own input is sent), JSON data."""
    x = _matrix(spec, records)
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    ).encode(), ""


def v2_matrix_binary_body(spec: Any, records: list[dict[str, Any]]) -> tuple[bytes, str]:
    """One [N, F] FP32 tensor of every feature as binary data; outputs binary too (tritonclient's default)."""
    x = _matrix(spec, records)
    raw = x.astype("<f4").tobytes()
    inputs = [
        {"name": "input", "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": len(raw)}}
    ]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return header + raw, f"Content-Type: application/octet-stream|Inference-Header-Content-Length: {len(header)}"


PROTOCOLS = {
    "v1": (lambda model: f"/v1/models/{model}:predict", lambda spec, rows: (v1_body(rows), "")),
    "v2": (lambda model: f"/v2/models/{model}/infer", lambda spec, rows: (v2_body(spec, rows), "")),
    "v2-binary": (lambda model: f"/v2/models/{model}/infer", v2_binary_body),
    "v2-matrix": (lambda model: f"/v2/models/{model}/infer", v2_matrix_body),
    "v2-matrix-binary": (lambda model: f"/v2/models/{model}/infer", v2_matrix_binary_body),
}


def run_wrk(url: str, body: Path, headers: str, connections: int, duration: float, cpu: str | None) -> dict[str, Any]:
    cmd = pinned(
        cpu,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(LUA),
            url,
            "--",
            str(body),
        ],
    )
    if headers:
        cmd.append(headers)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description="driftgate HTTP benchmark (wrk): guarded vs unguarded.")
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="penguins")
    parser.add_argument(
        "--protocols",
        default="v1",
        help="comma-separated: v1, v2 (JSON, one tensor per feature), v2-binary, v2-matrix (one [N, F] tensor, JSON; all-numeric specs), v2-matrix-binary",
    )
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--client-cpu", default="0")
    parser.add_argument("--modes", default="guarded,unguarded")
    parser.add_argument(
        "--smoke", action="store_true", help="1 s cells, one-row at c=1 and c=8 only: checks it all works"
    )
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every server and cell this many times, the modes interleaved in each round, and report "
        "each cell's median round (by req/s): on a noisy machine one 3-s cell can be 15%% off",
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="server worker processes (DRIFTGATE_WORKERS); a list such as 1,2 runs each mode with each count "
        "and reports N workers ÷ 1 in the same run",
    )
    parser.add_argument(
        "--reference",
        choices=["mlserver"],
        help="also load Seldon MLServer (as bench/peers runs it) with the same V2 JSON [N, F] body at "
        "the same cells, first, and report every driftgate cell's rows/s ÷ MLServer's in this one run; "
        "needs --repository /tmp/driftgate-peers/driftgate-repository (bench/peers.sh builds it) and --model lr or gbt",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the guarded server from this checkout (another commit), interleaved, and report "
        "guarded ÷ baseline on the baseline's rows",
    )
    args = parser.parse_args()
    if args.reference and args.model not in ("lr", "gbt"):
        parser.error("--reference serves the bench/peers models: --model lr or gbt")
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    if args.smoke:
        args.duration, args.batches, args.concurrency, args.protocols = 1.0, "1,64", "1,8", "v1,v2,v2-binary"
    spec = load_spec(
        args.repository
        / args.model
        / max((p for p in (args.repository / args.model).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        / "spec.yaml"
    )
    batches = [int(b) for b in args.batches.split(",")]
    conns = [int(c) for c in args.concurrency.split(",")]
    protocols = args.protocols.split(",")
    rounds: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bodies = {}
        for protocol in protocols + (["v2-matrix"] if args.reference and "v2-matrix" not in protocols else []):
            for batch in batches:
                path = workdir / f"{protocol}-{batch}.body"
                content, headers = PROTOCOLS[protocol][1](spec, sample_records(spec, batch, seed=batch))
                path.write_bytes(content)
                bodies[protocol, batch] = (path, headers)
        counts = [int(w) for w in args.workers.split(",")]
        runs: list[tuple[str, int]] = [(m, w) for m in args.modes.split(",") for w in counts]
        if args.reference:
            runs.insert(0, (args.reference, 1))
        if args.baseline:
            runs += [("baseline", w) for w in counts]
        for round_, (mode, workers) in ((n, run) for n in range(args.rounds) for run in runs):
            label = mode if len(counts) == 1 or mode == args.reference else f"{mode} w{workers}"
            if args.rounds > 1:
                print(f"round {round_ + 1}/{args.rounds}: {label}", file=sys.stderr)
            if mode == "mlserver":
                server = mlserver(args.server_cpu, workdir)
            elif mode == "baseline":  # the checkout's own package first on the path
                env = {"PYTHONPATH": str(args.baseline.resolve()), "DRIFTGATE_WORKERS": str(workers)}
                server = Server(args.repository, env, args.server_cpu, workdir, cwd=args.baseline.resolve())
            else:
                env = {k: v.replace("{workdir}", str(workdir)) for k, v in MODES[mode].items()}
                server = Server(args.repository, {**env, "DRIFTGATE_WORKERS": str(workers)}, args.server_cpu, workdir)
            try:
                if workers > 1:
                    wait_for_workers(server.url + PROTOCOLS["v1"][0](args.model), spec, workers)
                for protocol in ["v2-matrix"] if mode == args.reference else protocols:
                    url = server.url + PROTOCOLS[protocol][0](args.model)
                    for batch in batches:
                        path, headers = bodies[protocol, batch]
                        header_map = (
                            dict(h.split(": ", 1) for h in headers.split("|"))
                            if headers
                            else {"Content-Type": "application/json"}
                        )
                        with urllib.request.urlopen(
                            urllib.request.Request(url, data=path.read_bytes(), headers=header_map), timeout=10
                        ) as r:
                            assert r.status == 200, r.status
                        if not args.smoke:  # the smoke run checks it all works, not its numbers
                            run_wrk(url, path, headers, 8, 1.0, args.client_cpu)  # warm-up
                        for c in conns:
                            r = run_wrk(url, path, headers, c, args.duration, args.client_cpu)
                            rounds.setdefault((label, protocol, batch, c), []).append(r)
                            print(
                                f"  {label:12} {protocol} rows={batch:<3} c={c:<3} {r['rps']:>9,.0f} req/s  p50 {r['p50_us'] / 1000:.2f} ms  p99 {r['p99_us'] / 1000:.2f} ms",
                                file=sys.stderr,
                            )
            finally:
                server.stop()
    # each cell's median round by req/s (its latencies are that round's)
    results = {key: sorted(runs_, key=lambda r: r["rps"])[len(runs_) // 2] for key, runs_ in rounds.items()}
    lines = [
        (
            f"model `{args.model}`, {args.workers} server worker(s) on CPU {args.server_cpu or 'any'}, "
            f"wrk on CPU {args.client_cpu or 'any'}, {args.duration:g} s per cell"
            + (f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else "")
        ),
        "",
        "| protocol | rows/request | conns | mode | req/s | rows/s | p50 ms | p99 ms | errors | guarded ÷ unguarded, batched or logged ÷ guarded, N workers ÷ 1, guarded ÷ baseline |"
        + (f" rows/s ÷ {args.reference} |" if args.reference else ""),
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.reference else ""),
    ]
    failed = False
    for (mode, protocol, batch, c), r in sorted(
        results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][3], kv[0][0])
    ):
        base_mode, _, workers = mode.partition(" w")
        if workers and workers != "1":
            base = results.get((f"{base_mode} w1", protocol, batch, c))
        else:
            other = {"guarded": "unguarded", "batched": "guarded", "logged": "guarded"}.get(base_mode, "")
            base = results.get((other + (f" w{workers}" if workers else ""), protocol, batch, c))
        if base_mode == "baseline":  # on its row: the code under test ÷ the baseline
            guarded = results.get(("guarded" + (f" w{workers}" if workers else ""), protocol, batch, c))
            base, r_ = r, guarded
        else:
            r_ = r
        ratio = f"{r_['rps'] / base['rps']:.2f}" if base and r_ else ""
        errors = r["errors"] + r["status_errors"]
        failed |= any(x["errors"] + x["status_errors"] > 0 or x["requests"] == 0 for x in rounds[mode, protocol, batch, c])
        line = f"| {protocol} | {batch} | {c} | {mode} | {r['rps']:,.0f} | {r['rps'] * batch:,.0f} | {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {errors} | {ratio} |"
        if args.reference:
            reference = results.get((args.reference, "v2-matrix", batch, c))
            line += f" {r['rps'] / reference['rps']:.2f} |" if reference and mode != args.reference else " |"
        lines.append(line)
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
