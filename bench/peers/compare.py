"""driftgate beside its peers, one server at a time on one machine, measured alike.

Each server runs from its own pinned environment (``setup.sh``), pinned to one core
(``--server-cpu``), serving the same two ONNX models (``make_models.py``: ``lr`` and ``gbt``,
input ``[N, 30]`` float32), and is loaded by wrk pinned to the other core (``--client-cpu``),
through ``bench/http_bench.py``'s server and wrk runner. For every server, round after
round (the order rotates each round, so that every server meets the machine's moods alike):
start it and wait until ready, check each protocol's answers against the expected labels
(``payload.json``), warm up, then time every model x rows per request (1, 64) x connections
(1, 8, 32) cell, and stop it. Each cell reports its median round by requests/s, and its
ratio to the reference server in the same cell.

The servers (``PEERS``), and the request each is sent:

- ``driftgate``: named records on V1 (``{"instances": [{"mean radius": ...}]}``, what its
  guards validate) and a V2 JSON ``[N, 30]`` tensor; its repository is built by
  ``bench/peer_repository.py``, specs fitted on the same data;
- ``mlserver`` (inference in the HTTP process) and ``mlserver-pw1`` (MLServer's default, one
  inference worker process): V2 JSON;
- ``kserve``: V1 (``{"instances": [[...]]}``) and V2 JSON;
- ``bentoml``: its own JSON (``{"input": [[...]]}``);
- ``litestar-uvicorn`` / ``litestar-granian``: a bare litestar + msgspec app, no checks;
- ``hello-uvicorn`` / ``hello-granian``: a bare ASGI app answering a constant (the HTTP floor).

    python bench/peers/compare.py --only driftgate,mlserver --rounds 1 --duration 2   (bench/peers.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from http_bench import Server, free_port, run_wrk

PEERS_HOME = Path(os.environ.get("PEERS_HOME", "/tmp/driftgate-peers"))
MODELS = ("lr", "gbt")
BATCHES = (1, 64)
CONNECTIONS = (1, 8, 32)


# --- what each protocol sends and how its labels are read ---------------------------------------


@dataclass(frozen=True)
class Protocol:
    path: Callable[[str], str]
    body: Callable[[list[list[float]], list[str]], Any]
    labels: Callable[[Any], list[Any] | None]


def _v2_body(rows: list[list[float]], _: list[str]) -> Any:
    flat = [v for row in rows for v in row]
    return {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": flat}]}


PROTOCOLS = {
    "v1-records": Protocol(
        lambda m: f"/v1/models/{m}:predict",
        lambda rows, names: {"instances": [dict(zip(names, row, strict=True)) for row in rows]},
        lambda answer: [p["label"] for p in answer["predictions"]],
    ),
    "v2": Protocol(
        lambda m: f"/v2/models/{m}/infer",
        _v2_body,
        lambda answer: next(o["data"] for o in answer["outputs"] if o["name"] == "label"),
    ),
    "v1": Protocol(
        lambda m: f"/v1/models/{m}:predict", lambda rows, _: {"instances": rows}, lambda answer: answer["predictions"]
    ),
    "bento": Protocol(lambda m: f"/{m}", lambda rows, _: {"input": rows}, lambda answer: answer["label"]),
    "hello": Protocol(lambda m: "/", _v2_body, lambda answer: None),
}


# --- the servers -----------------------------------------------------------------------------------

LISTEN = ["--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
QUIET = ["--log-level", "warning"]
UVICORN = [*LISTEN, "--loop", "uvloop", "--http", "httptools", "--no-access-log", *QUIET]
GRANIAN = [
    "--interface",
    "asgi",
    *LISTEN,
    "--runtime-threads",
    "1",
    "--loop",
    "uvloop",
    "--http",
    "1",
    "--no-ws",
    *QUIET,
]


@dataclass(frozen=True)
class Peer:
    venv: str
    """Its environment under ``$PEERS_HOME/venvs`` ("" for driftgate: this interpreter's)."""
    command: list[str]
    """``{venv}``, ``{home}`` and ``{port}`` are filled in."""
    folder: str
    """Where it runs, under ``servers/``."""
    ready: str
    protocols: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = MODELS


def _mlserver(parallel_workers: str) -> Peer:
    env = {
        "MLSERVER_HTTP_PORT": "{port}",
        "MLSERVER_PARALLEL_WORKERS": parallel_workers,
        "PYTHONPATH": str(HERE / "servers" / "mlserver"),
    }
    return Peer("mlserver", ["{venv}/bin/mlserver", "start", "."], "mlserver", "/v2/health/ready", ("v2",), env)


PEERS = {
    "hello-uvicorn": Peer(
        "litestar", ["{venv}/bin/uvicorn", "app:app", *UVICORN], "hello", "/", ("hello",), models=("-",)
    ),
    "hello-granian": Peer(
        "litestar", ["{venv}/bin/granian", *GRANIAN, "app:app"], "hello", "/", ("hello",), models=("-",)
    ),
    "mlserver": _mlserver("0"),
    "mlserver-pw1": _mlserver("1"),
    "kserve": Peer(
        "kserve",
        ["{venv}/bin/python", "server.py", "--http_port", "{port}"],
        "kserve",
        "/v2/health/ready",
        ("v1", "v2"),
    ),
    "bentoml": Peer(
        "bentoml",
        ["{venv}/bin/bentoml", "serve", "service:Onnx", "--host", "127.0.0.1", "--port", "{port}"],
        "bentoml",
        "/readyz",
        ("bento",),
        {"BENTOML_HOME": "{home}/bentoml", "BENTOML_DO_NOT_TRACK": "True"},
    ),
    "litestar-uvicorn": Peer(
        "litestar", ["{venv}/bin/uvicorn", "app:app", *UVICORN], "litestar", "/v2/health/ready", ("v2",)
    ),
    "litestar-granian": Peer(
        "litestar", ["{venv}/bin/granian", *GRANIAN, "app:app"], "litestar", "/v2/health/ready", ("v2",)
    ),
    "driftgate": Peer(
        "",
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--repository",
            "{home}/driftgate-repository",
            "--port",
            "{port}",
        ],
        "",
        "/v2/health/ready",
        ("v1-records", "v2"),
    ),
}


def start(name: str, cpu: str | None, workdir: Path, home: Path = PEERS_HOME) -> Server:
    """``name`` started pinned to ``cpu`` and ready (http_bench's ``Server``)."""
    peer = PEERS[name]
    venv = home / "venvs" / peer.venv
    if peer.venv and not (venv / "bin" / "python").exists():
        raise SystemExit(f"{name}: no environment {venv}: run bash bench/peers/setup.sh {peer.venv}")
    if name == "driftgate" and not (home / "driftgate-repository").is_dir():
        raise SystemExit(f"no {home}/driftgate-repository: run python bench/peer_repository.py")

    def fill(text: str) -> str:
        return text.replace("{venv}", str(venv)).replace("{home}", str(home))

    env = {"PEER_MODELS": str(home / "models"), "ORT_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.update({key: fill(value) for key, value in peer.env.items()})
    if peer.venv == "mlserver":  # its gRPC and metrics listeners need ports of their own
        env.update(MLSERVER_GRPC_PORT=str(free_port()), MLSERVER_METRICS_PORT=str(free_port()))
    folder = HERE / "servers" / peer.folder if peer.folder else ROOT
    command = [fill(part) for part in peer.command]
    return Server(Path(), env, cpu, workdir, command=command, cwd=folder, ready=peer.ready)


# --- one run ---------------------------------------------------------------------------------------


def post(url: str, body: bytes) -> Any:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def measure(
    name: str, args: argparse.Namespace, payload: dict[str, Any], names: list[str], workdir: Path
) -> list[dict[str, Any]]:
    """Every cell of one server, once."""
    peer, cells = PEERS[name], []
    server = start(name, args.server_cpu, workdir)
    try:
        for protocol_name in peer.protocols:
            protocol = PROTOCOLS[protocol_name]
            target = name if len(peer.protocols) == 1 else f"{name}-{protocol_name}"
            for model in [m for m in peer.models if m in args.models or m == "-"]:
                url = server.url + protocol.path(model)
                bodies = {}
                for batch in args.batches:
                    bodies[batch] = workdir / f"{protocol_name}-{model}-{batch}.json"
                    bodies[batch].write_bytes(json.dumps(protocol.body(payload["rows"][:batch], names)).encode())
                    labels = protocol.labels(post(url, bodies[batch].read_bytes()))
                    expected = payload["expected"][model][:batch] if model != "-" else None
                    if labels is not None and [str(v) for v in labels] != [str(v) for v in expected or []]:
                        raise SystemExit(f"{target} {model}, {batch} rows: wrong labels {labels[:8]}")
                if args.warmup:
                    run_wrk(url, bodies[max(args.batches)], "", 8, args.warmup, args.client_cpu)
                for batch in args.batches:
                    for connections in args.connections:
                        result = run_wrk(url, bodies[batch], "", connections, args.duration, args.client_cpu)
                        cells.append({"target": target, "model": model, "batch": batch, "conns": connections, **result})
                        print(
                            f"  {target:22} {model:3} rows={batch:<3} c={connections:<3} {result['rps']:>8,.0f} req/s",
                            file=sys.stderr,
                        )
    finally:
        server.stop()
    return cells


def table(cells: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The cells' median rounds: requests/s (ratio to the reference) and latencies."""
    rounds: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    for cell in cells:
        rounds.setdefault((cell["target"], cell["model"], cell["batch"], cell["conns"]), []).append(cell)
    median = {key: sorted(runs, key=lambda r: r["rps"])[len(runs) // 2] for key, runs in rounds.items()}
    targets = list(dict.fromkeys(cell["target"] for cell in cells))
    columns = [(m, b, c) for m in args.models for b in args.batches for c in args.connections]

    def at(target: str, m: str, b: int, c: int) -> dict[str, Any] | None:
        return median.get((target, m, b, c)) or median.get((target, "-", b, c))  # the floor: one body for both

    title = (
        f"Requests/s, median of {args.rounds} interleaved round(s) x {args.duration:g} s per cell; server on CPU "
        f"{args.server_cpu or 'any'}, wrk on CPU {args.client_cpu or 'any'}; (x) = ratio to {args.reference} in "
        "the same cell"
    )
    lines = [
        title,
        "",
        "| server | " + " | ".join(f"{m} b{b} c{c}" for m, b, c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for target in targets:
        row = []
        for m, b, c in columns:
            cell, reference = at(target, m, b, c), at(args.reference, m, b, c)
            ratio = cell["rps"] / reference["rps"] if cell and reference and target != args.reference else None
            row.append("—" if cell is None else f"{cell['rps']:,.0f}" + (f" ({ratio:.2f})" if ratio else ""))
        lines.append(f"| {target} | " + " | ".join(row) + " |")
    lines += [
        "",
        "| server | model | rows | conns | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (target, m, b, c), cell in sorted(median.items(), key=lambda kv: (targets.index(kv[0][0]), *kv[0][1:])):
        errors = sum(r["errors"] + r["status_errors"] for r in rounds[target, m, b, c])
        lines.append(
            f"| {target} | {m} | {b} | {c} | {cell['rps']:,.0f} | {cell['p50_us'] / 1000:.2f} | "
            f"{cell['p99_us'] / 1000:.2f} | {errors} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default="driftgate,mlserver,litestar-uvicorn,hello-uvicorn",
        help=f"comma-separated, from: {', '.join(PEERS)}",
    )
    parser.add_argument("--reference", default="mlserver", help="the server the ratios divide by")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each model's cells (0: none)")
    parser.add_argument("--models", default="lr,gbt")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--connections", default=",".join(map(str, CONNECTIONS)))
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--client-cpu", default="0")
    parser.add_argument("--out", type=Path, default=PEERS_HOME / "out" / "latest.md", help="the tables, also printed")
    parser.add_argument("--print-envs", action="store_true", help="print the environments --only needs, and stop")
    args = parser.parse_args()
    names = args.only.split(",")
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        parser.error(f"unknown server(s) {unknown}; known: {', '.join(PEERS)}")
    if args.print_envs:
        print(" ".join(sorted({PEERS[name].venv for name in names} - {""} | {"models"})))
        return 0
    args.models = args.models.split(",")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.connections = [int(c) for c in args.connections.split(",")]
    payload = json.loads((PEERS_HOME / "models" / "payload.json").read_text())
    features = json.loads((PEERS_HOME / "models" / "features.json").read_text())
    cells: list[dict[str, Any]] = []
    failures: list[str] = []
    started = time.monotonic()
    workdir = args.out.parent / "work"  # the servers' logs and the request bodies
    workdir.mkdir(parents=True, exist_ok=True)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        print(f"round {round_ + 1}/{args.rounds}: {', '.join(order)}", file=sys.stderr)
        for name in order:
            try:
                cells += measure(name, args, payload, features, workdir)
            except (RuntimeError, OSError, SystemExit) as exc:  # one server failing must not stop the others
                failures.append(f"{name}, round {round_ + 1}: {exc}")
                print(f"  {name} FAILED: {exc}", file=sys.stderr)
    report = table(cells, args) + "".join(f"\n\nFailed: {failure}" for failure in failures)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(cells, indent=1) + "\n")
    print(f"{len(cells)} cells in {time.monotonic() - started:.0f} s; tables in {args.out}", file=sys.stderr)
    failed = failures or any(cell["errors"] + cell["status_errors"] or not cell["requests"] for cell in cells)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
