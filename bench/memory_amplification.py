"""Memory amplification: how much a server's peak RSS grows for one body at the byte limit.

A benchmark, not a test: it prints a markdown table and asserts nothing (CI smoke-runs it
with ``--quick``, ``tests/integration/test_bench_smoke.py``). For every body kind it builds
one body just under ``--max-body-bytes`` (default 16 MiB, the server's default), starts a
fresh ``python -m gateway.cli serve`` on a private copy of ``models/`` (so one kind's peak
cannot mask another's), warms the routes with one small request each, resets the server's
peak RSS (``echo 5 > /proc/PID/clear_refs``) and sends that one body. The row says what the
server answered and how far its peak RSS (``VmHWM`` in ``/proc/PID/status``) rose above its
RSS just before: amplification is that growth over the body's size. The kinds ending in
``-at-value-cap`` or ``-at-cap`` are sized to the model's other limits instead (just under
its JSON value limit, ``gateway.protocol.json_values``, or at the rows and inputs caps): the
most a body that the caps let in can cost.

The servers are the integration tests' ``ServerProcess`` (port 0, learnt from the server's
"Uvicorn running on" line, so they log at the default level, info: at warning that line is
not printed); Linux only (``/proc``), with the dev extras (pytest, httpx).

The last row sends ``--connections`` bodies at once, each held back by its last byte until
all of them have arrived, to show what buffered bodies cost: the RSS while they wait, then
the peak once all are answered (they are decoded one after the other: decoding runs on
the event loop).

    python bench/memory_amplification.py                   # every kind at 16 MiB (about a minute)
    python bench/memory_amplification.py --kinds v1-empty-rows,v2-binary
    python bench/memory_amplification.py --quick           # a smoke run: small bodies, few kinds
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from http_bench import v1_body, v2_body

from gateway.codecs.v1 import value_limit as v1_value_limit
from gateway.codecs.v2 import EXTRA_INPUTS
from gateway.protocol.json_values import json_values
from gateway.protocol.v2 import value_limit as v2_value_limit
from gateway.samples import sample_records
from gateway.spec import FeatureSpec, load_spec
from tests.helpers.procfs import reset_peak, status_kib
from tests.integration.conftest import ServerProcess
from tests.integration.support import copy_models

MIB = 1024 * 1024
T = TypeVar("T")
DEPTH = 500
"""Nesting of the nested-lists kind: deep, yet well inside what the decoder accepts."""
OBJECT_DEPTH = 100
"""Nesting of the nested-objects kinds (one-key objects: the most memory a counted value costs)."""


# --- bodies --------------------------------------------------------------------------------------


def fill(prefix: bytes, items: Sequence[bytes], suffix: bytes, limit: int, count: int | None = None) -> bytes:
    """``prefix``, then ``items`` (cycled) joined by commas, then ``suffix``: as many items
    as fit in ``limit`` bytes, or ``count`` if fewer."""
    budget = limit - len(prefix) - len(suffix) + 1  # n items take their lengths + n - 1 commas
    cycle = sum(len(item) + 1 for item in items)
    fits = budget // cycle * len(items)
    budget -= budget // cycle * cycle
    for item in items:
        if len(item) + 1 > budget:
            break
        fits, budget = fits + 1, budget - len(item) - 1
    n = fits if count is None else min(count, fits)
    return prefix + b",".join(items[i % len(items)] for i in range(n)) + suffix


def most(limit: int, prefix: bytes, item: bytes, suffix: bytes) -> int:
    """How many ``item``s ``fill`` may put between ``prefix`` and ``suffix`` for the body to
    hold at most ``limit`` JSON values as the server counts them (``json_values``)."""
    one, two = (json_values(prefix + b",".join([item] * n) + suffix) for n in (1, 2))
    return 1 + (limit - one) // (two - one)


def rows(spec: FeatureSpec, n: int) -> list[bytes]:
    return [json.dumps(r, separators=(",", ":")).encode() for r in sample_records(spec, n, seed=7)]


def v2_json(name: str, datatype: str, items: Sequence[bytes], limit: int) -> bytes:
    """One JSON tensor holding as many ``items`` as fit; its shape says how many."""
    probe = fill(b"", items, b"", limit - 200)
    count = probe.count(b",") + 1 if probe else 0
    head = f'{{"inputs":[{{"name":"{name}","datatype":"{datatype}","shape":[{count}],"data":['.encode()
    return head + probe + b"]}]}"


def v2_binary(name: str, datatype: str, count: int, raw: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {"name": name, "datatype": datatype, "shape": [count], "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    ).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def binary_fp64(limit: int) -> tuple[bytes, dict[str, str]]:
    count = (limit - 200) // 8
    return v2_binary("age", "FP64", count, b"\x00" * (8 * count))


def binary_bytes(limit: int) -> tuple[bytes, dict[str, str]]:
    element = b"\x02\x00\x00\x00ab"  # Triton's BYTES layout: 4-byte length, then the bytes
    count = (limit - 200) // len(element)
    return v2_binary("island", "BYTES", count, element * count)


@dataclass(frozen=True)
class Kind:
    name: str
    path: str
    what: str
    build: Callable[[int, int], tuple[bytes, dict[str, str]]]
    """(byte limit, rows cap) -> (body, extra headers)."""


def kinds(specs: dict[str, FeatureSpec]) -> list[Kind]:
    """Every body kind; ``specs``: penguins, diabetes and digits (the widest, so its value
    limits are the highest)."""
    P1, D1 = "/v1/models/penguins:predict", "/v1/models/diabetes:predict"
    P2, D2 = "/v2/models/penguins/infer", "/v2/models/diabetes/infer"
    G1, G2 = "/v1/models/digits:predict", "/v2/models/digits/infer"
    valid_p, valid_d = rows(specs["penguins"], 512), rows(specs["diabetes"], 512)
    features = rows(specs["penguins"], 1)[0][1:-1]  # a valid row's fields, without its braces
    two_letters = [f'"{a}{b}"'.encode() for a in "abcdefgh" for b in "abcdefgh"]
    nested_lists = b"[" * DEPTH + b"]" * DEPTH
    nested_objects = b'{"a":' * OBJECT_DEPTH + b"0" + b"}" * OBJECT_DEPTH
    width = {name: len(spec.feature_names) for name, spec in specs.items()}

    def json_only(make: Callable[[int, int], bytes]) -> Callable[[int, int], tuple[bytes, dict[str, str]]]:
        return lambda limit, max_rows: (make(limit, max_rows), {})

    def unknown_keys(limit: int, count: int | None = None) -> bytes:
        keys = [f'"x{i:07d}":0'.encode() for i in range(count or limit // 12)]
        return fill(b'{"instances":[{' + features + b",", keys, b"}]}", limit, count)

    def long_strings(limit: int, max_rows: int) -> bytes:
        row = json.loads(valid_p[0])
        row["island"] = "Z" * ((limit - 300 * max_rows) // max_rows)
        return fill(b'{"instances":[', [json.dumps(row).encode()], b"]}", limit, max_rows)

    def v1_objects_at_cap(limit: int, max_rows: int) -> bytes:
        prefix = b'{"instances":[{"px_0_0":['
        count = most(v1_value_limit(width["digits"], max_rows), prefix, nested_objects, b"]}]}")
        return fill(prefix, [nested_objects], b"]}]}", limit, count)

    def v2_objects_at_cap(limit: int, max_rows: int) -> bytes:
        prefix = b'{"inputs":[{"name":"px_0_0","datatype":"BYTES","shape":[1],"data":['
        count = most(v2_value_limit(width["digits"] + EXTRA_INPUTS, max_rows), prefix, nested_objects, b"]}]}")
        return fill(prefix, [nested_objects], b"]}]}", limit, count)

    def v1_unknown_at_cap(limit: int, max_rows: int) -> bytes:
        prefix = b'{"instances":[{' + features + b","
        return unknown_keys(limit, most(v1_value_limit(width["penguins"], max_rows), prefix, b'"x":0', b"}]}"))

    def v2_unknown_inputs(limit: int, max_rows: int) -> bytes:
        body = json.loads(v2_body(specs["penguins"], sample_records(specs["penguins"], max_rows, seed=7)))
        zeros = [0] * max_rows
        extra = [{"name": f"x{i}", "datatype": "FP64", "shape": [max_rows], "data": zeros} for i in range(EXTRA_INPUTS)]
        return json.dumps({"inputs": body["inputs"] + extra}, separators=(",", ":")).encode()

    return [
        Kind("v1-penguins-max-rows", P1, "valid rows at the rows cap (general decoder)",
             json_only(lambda limit, max_rows: fill(b'{"instances":[', valid_p, b"]}", limit, max_rows))),
        Kind("v1-diabetes-max-rows", D1, "valid rows at the rows cap (all-numeric decoder)",
             json_only(lambda limit, max_rows: fill(b'{"instances":[', valid_d, b"]}", limit, max_rows))),
        Kind("v1-penguins-rows-to-limit", P1, "valid rows filling the byte limit",
             json_only(lambda limit, _: fill(b'{"instances":[', valid_p, b"]}", limit))),
        Kind("v1-diabetes-rows-to-limit", D1, "valid rows filling the byte limit",
             json_only(lambda limit, _: fill(b'{"instances":[', valid_d, b"]}", limit))),
        Kind("v1-empty-rows", P1, '`{"instances":[{},{},...]}`',
             json_only(lambda limit, _: fill(b'{"instances":[', [b"{}"], b"]}", limit))),
        Kind("v1-unknown-keys", P1, 'one row: the features and `"x0000001":0, ...`',
             json_only(lambda limit, _: unknown_keys(limit))),
        Kind("v1-long-strings", P1, "rows cap of rows, each `island` one long string", json_only(long_strings)),
        Kind("v1-nested-lists", P1, f"one cell: lists nested {DEPTH} deep, side by side",
             json_only(lambda limit, _: fill(b'{"instances":[{"island":[', [nested_lists], b"]}]}", limit))),
        Kind("v2-json-numbers", D2, "one FP64 tensor, `data` of one-digit numbers",
             json_only(lambda limit, _: v2_json("age", "FP64", [str(i).encode() for i in range(10)], limit))),
        Kind("v2-json-bytes", P2, "one BYTES tensor, `data` of two-letter strings",
             json_only(lambda limit, _: v2_json("island", "BYTES", two_letters, limit))),
        Kind("v2-binary", D2, "one FP64 tensor, binary data", lambda limit, _: binary_fp64(limit)),
        Kind("v2-binary-bytes", P2, "one BYTES tensor, binary data of two-letter strings",
             lambda limit, _: binary_bytes(limit)),
        Kind("v1-unknown-keys-at-value-cap", P1, "as v1-unknown-keys, just under the value limit",
             json_only(v1_unknown_at_cap)),
        Kind("v2-unknown-inputs-at-cap", P2, f"rows cap of valid rows and {EXTRA_INPUTS} unknown inputs (all read)",
             json_only(v2_unknown_inputs)),
        Kind("v1-nested-objects-at-value-cap", G1,
             f'digits, one cell: `{{"a":{{"a":...}}}}` {OBJECT_DEPTH} deep, side by side, just under the value limit',
             json_only(v1_objects_at_cap)),
        Kind("v2-nested-objects-at-value-cap", G2, "the same in a V2 tensor's `data`, just under its value limit",
             json_only(v2_objects_at_cap)),
    ]  # fmt: skip


# --- requests ------------------------------------------------------------------------------------


def warm(port: int, specs: dict[str, FeatureSpec]) -> None:
    """One small valid request per model and protocol, so first-use costs are not measured."""
    for name, spec in specs.items():
        records = sample_records(spec, 2)
        for path, body in (
            (f"/v1/models/{name}:predict", v1_body(records)),
            (f"/v2/models/{name}/infer", v2_body(spec, records)),
        ):
            status, _ = send(port, path, body)
            if status != 200:
                raise SystemExit(f"the warm-up request to {path} was answered {status}; the server is not usable")


def open_request(port: int, path: str, body_length: int, headers: dict[str, str]) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.putrequest("POST", path)
    for name, value in {"Content-Type": "application/json", **headers}.items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(body_length))
    conn.endheaders()
    return conn


def answer(conn: http.client.HTTPConnection) -> tuple[int, int]:
    """(status, response bytes) of the request sent on ``conn``; closes it."""
    try:
        response = conn.getresponse()
        return response.status, len(response.read())
    finally:
        conn.close()


def send(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, int]:
    conn = open_request(port, path, len(body), headers or {})
    conn.send(body)
    return answer(conn)


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Row:
    kind: str
    what: str
    status: str
    body_bytes: int
    response_bytes: int
    growth_kib: int
    retained_kib: int
    seconds: float
    note: str = ""

    @property
    def amplification(self) -> float:
        return self.growth_kib * 1024 / self.body_bytes if self.body_bytes else 0.0


def baseline(pid: int) -> int:
    """The RSS (KiB) that growth is measured from, once the peak is reset to it; where the
    kernel refuses the reset, the old peak (growth is then only what rises above it)."""
    rss = reset_peak(pid)
    return status_kib(pid, "VmHWM") if rss is None else rss


def on_fresh_server(work: Path, args: Sequence[str], specs: dict[str, FeatureSpec],
                    action: Callable[[ServerProcess, int], T]) -> tuple[T, float, int, int]:  # fmt: skip
    """``action(server, baseline RSS)`` on a fresh server (a private copy of ``models/``),
    warmed up, its peak reset. Returns the action's result, its seconds, and the growth of
    the peak and of the RSS (KiB) above the baseline."""
    n = len(list(work.glob("run-*")))
    proc = ServerProcess(work / f"run-{n}", copy_models(work / f"models-{n}"), args=args)
    proc.start()
    try:
        assert proc.process is not None
        pid = proc.process.pid
        warm(proc.port, specs)
        before = baseline(pid)
        t0 = time.perf_counter()
        result = action(proc, before)
        seconds = time.perf_counter() - t0
        time.sleep(0.2)  # let the response's buffers go
        peak, now = status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS")
    finally:
        proc.stop()
    return result, seconds, peak - before, now - before


def measure(kind: Kind, body: bytes, headers: dict[str, str], work: Path, args: Sequence[str],
            specs: dict[str, FeatureSpec]) -> Row:  # fmt: skip
    (status, response_bytes), seconds, growth, retained = on_fresh_server(
        work, args, specs, lambda proc, _: send(proc.port, kind.path, body, headers)
    )
    return Row(kind.name, kind.what, str(status), len(body), response_bytes, growth, retained, seconds)


def measure_buffered(kind: Kind, body: bytes, headers: dict[str, str], connections: int, work: Path,
                     args: Sequence[str], specs: dict[str, FeatureSpec]) -> Row:  # fmt: skip
    """``connections`` bodies sent at once, each but its last byte; the RSS once all wait,
    then the peak once all are answered."""

    def hold(proc: ServerProcess, before: int) -> tuple[list[int], int]:
        assert proc.process is not None
        conns = [open_request(proc.port, kind.path, len(body), headers) for _ in range(connections)]
        for conn in conns:
            conn.send(body[:-1])
        waiting = settle(proc.process.pid) - before
        for conn in conns:
            conn.send(body[-1:])
        return sorted({answer(conn)[0] for conn in conns}), waiting

    (statuses, waiting), seconds, growth, retained = on_fresh_server(work, args, specs, hold)
    note = f"RSS +{waiting / 1024:,.1f} MiB while all {connections} bodies waited for their last byte"
    return Row(f"{connections} × {kind.name}", f"{connections} bodies buffered at once", "/".join(map(str, statuses)),
               connections * len(body), 0, growth, retained, seconds, note)  # fmt: skip


def settle(pid: int, timeout: float = 30.0) -> int:
    """The process's RSS (KiB) once it has stopped growing (the kernel's socket buffers drained)."""
    deadline = time.monotonic() + timeout
    last = status_kib(pid, "VmRSS")
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = status_kib(pid, "VmRSS")
        if now - last < 256:
            return now
        last = now
    return last


def table(rows: Iterable[Row]) -> str:
    lines = [
        "| kind | body | status | body MiB | response KiB | peak RSS growth MiB | amplification | retained MiB | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for r in rows:
        lines.append(
            f"| {r.kind} | {r.what} | {r.status} | {r.body_bytes / MIB:,.2f} | {r.response_bytes / 1024:,.1f} | "
            f"{r.growth_kib / 1024:,.1f} | {r.amplification:.1f}× | {r.retained_kib / 1024:,.1f} | {r.seconds:.2f} |"
        )
        if r.note:
            notes.append(f"{r.kind}: {r.note}")
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Peak RSS growth of a driftgate server for one body at the byte limit, per body kind "
        "(a fresh server per kind), and for several bodies buffered at once. Prints a markdown table."
    )
    parser.add_argument("--max-body-bytes", type=int, default=16 * MIB,
                        help="the byte limit: each body is built just under it, and the server runs with it (default 16 MiB)")  # fmt: skip
    parser.add_argument("--max-batch-rows", type=int, default=4096, help="the rows cap (default 4096, the server's)")
    parser.add_argument("--kinds", default="", help="comma-separated kinds to run (default: all; see --list)")
    parser.add_argument("--connections", type=int, default=8,
                        help="bodies buffered at once in the last row (0: no such row; default 8)")  # fmt: skip
    parser.add_argument("--buffered-kind", default="v2-binary", help="the body kind they send (default v2-binary)")
    parser.add_argument("--list", action="store_true", help="list the kinds and exit")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 MiB bodies, three kinds, 2 connections (numbers meaningless)")  # fmt: skip
    args = parser.parse_args(argv)

    specs = {name: load_spec(ROOT / "models" / name / "1" / "spec.yaml") for name in ("penguins", "diabetes", "digits")}
    catalogue = {k.name: k for k in kinds(specs)}
    if args.list:
        for k in catalogue.values():
            print(f"{k.name}: {k.what}")
        return 0
    limit, connections = args.max_body_bytes, args.connections
    names = [n for n in args.kinds.split(",") if n] or list(catalogue)
    if args.quick:
        limit, connections = MIB, 2
        names = [n for n in args.kinds.split(",") if n] or ["v1-penguins-max-rows", "v1-empty-rows", "v2-binary"]
    unknown = [n for n in [*names, args.buffered_kind] if n not in catalogue]
    if unknown:
        parser.error(f"unknown kinds: {', '.join(unknown)} (see --list)")
    server_args = ["--max-body-bytes", str(limit), "--max-batch-rows", str(args.max_batch_rows)]

    print(f"driftgate memory amplification: bodies just under {limit:,} bytes, rows cap {args.max_batch_rows:,}, "
          f"a fresh server per row", flush=True)  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory(prefix="driftgate-memory-") as tmp:
        work = Path(tmp)
        for name in names:
            body, headers = catalogue[name].build(limit, args.max_batch_rows)
            results.append(measure(catalogue[name], body, headers, work, server_args, specs))
            print(
                f"  {name}: {results[-1].status}, +{results[-1].growth_kib / 1024:,.1f} MiB",
                file=sys.stderr,
                flush=True,
            )
        if connections > 0:
            kind = catalogue[args.buffered_kind]
            body, headers = kind.build(limit, args.max_batch_rows)
            results.append(measure_buffered(kind, body, headers, connections, work, server_args, specs))
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
