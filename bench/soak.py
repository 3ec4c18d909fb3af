"""Soak test of driftgate over HTTP: a million mixed requests, watching for leaks.

A nightly-style target, not a CI test (CI smoke-runs it with a tiny ``--requests``,
``tests/integration/test_soak_smoke.py``). It starts ``python -m gateway.cli serve`` on a
free loopback port with a private copy of ``models/`` and drives it with wrk (Debian
package ``wrk``) through a Lua script that rotates a pool of prebuilt requests:

- about 70% valid: V1 one-row and 8-row penguins, V1 one-row diabetes, V1 pinned
  version, V2 JSON one-row penguins and 4-row diabetes (expected 200);
- about 20% rejected by the guards: unseen categories, out-of-range and wrongly typed
  cells, missing and unknown features, over V1 and V2 (expected 422);
- about 10% malformed: not JSON, no ``instances``, no rows, a repeated key, V2
  ``inputs`` that is not a list (expected 400);
- keep-alive connections, plus connection churn: about 2% of the requests carry
  ``Connection: close``, and every round starts wrk afresh with new connections.

wrk runs in rounds of about 10 s (a progress line after each). Every second the server's
resident memory, open file descriptors and thread count are read from ``/proc`` (summed
over the process and its children, so ``--workers`` runs are measured whole). The
comparison points are taken quiet, between rounds: at the start, after the warm-up
(``--warmup`` requests, default a tenth of the total; it fills the prediction ring, which
is kept small here with ``DRIFTGATE_PREDICTION_STORE_SIZE`` so that filling it cannot pass
for a leak, and the drift windows), and at the end.

Exit status: 0 if the run is clean; 1 if RSS grew more than ``--max-rss-growth-mb``
(default 50) after the warm-up, if open fds or threads are not flat (more than
``--fd-slack`` / ``--thread-slack`` above their after-warm-up values), if any answer had
a status other than 200, 400 or 422, if wrk saw socket errors, or if the server died;
2 if the soak could not run (no wrk, server did not start).

    python bench/soak.py                      # 1,000,000 requests (a few minutes)
    python bench/soak.py --requests 5000      # seconds; what CI runs
    python bench/soak.py --duration 3600      # an hour, however many requests that is
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from http_bench import free_port

from gateway.samples import sample_records
from gateway.spec import load_spec

EXPECTED_STATUSES = {200, 400, 422}
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024

LUA = r"""
-- driftgate soak: rotate a pool of prebuilt requests, count answers by status.
local pool = {}
local counter = 0
local threads = {}
statuses = {}

function setup(thread)
  thread:set("offset", #threads * 7919)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  while true do
    local line = f:read("*l")
    if not line then break end
    local method, path, close, ctype, len = line:match("^(%S+) (%S+) (%d) (%S+) (%d+)$")
    local body = f:read(tonumber(len))
    f:read(1)
    local headers = {["Content-Type"] = ctype}
    if close == "1" then headers["Connection"] = "close" end
    pool[#pool + 1] = wrk.format(method, path, headers, body)
  end
  f:close()
  counter = offset or 0
end

function request()
  counter = counter + 1
  return pool[counter % #pool + 1]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do
      local key = tostring(k)
      merged[key] = (merged[key] or 0) + v
    end
  end
  local parts = {}
  for k, v in pairs(merged) do parts[#parts + 1] = string.format('"%s":%d', k, v) end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(parts, ",")))
end
"""


# --- the request pool ------------------------------------------------------------------------


@dataclass
class Entry:
    path: str
    body: bytes
    expect: int
    content_type: str = "application/json"
    close: bool = False


def _v1(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps({"instances": rows}).encode()


def _v2(spec: Any, rows: list[dict[str, Any]]) -> bytes:
    from gateway.codecs.v2 import feature_datatype as _feature_datatype

    inputs = [
        {"name": f.name, "datatype": _feature_datatype(f), "shape": [len(rows), 1], "data": [r[f.name] for r in rows]}
        for f in spec.features
    ]
    return json.dumps({"inputs": inputs}).encode()


def build_pool(size: int, seed: int) -> list[Entry]:
    """``size`` requests in the mix of the module docstring, shuffled reproducibly."""
    penguins = load_spec(ROOT / "models" / "penguins" / "1" / "spec.yaml")
    diabetes = load_spec(ROOT / "models" / "diabetes" / "1" / "spec.yaml")
    rows_p = sample_records(penguins, 4 * size, seed=seed)
    rows_d = sample_records(diabetes, 4 * size, seed=seed + 1)
    rng = random.Random(seed)
    P1, D1 = "/v1/models/penguins:predict", "/v1/models/diabetes:predict"
    P2, D2 = "/v2/models/penguins/infer", "/v2/models/diabetes/infer"
    pinned = "/v1/models/penguins/versions/1:predict"

    def p(i: int) -> dict[str, Any]:
        return dict(rows_p[i % len(rows_p)])

    def d(i: int) -> dict[str, Any]:
        return dict(rows_d[i % len(rows_d)])

    makers: list[tuple[int, Any]] = [
        # valid (70)
        (25, lambda i: Entry(P1, _v1([p(i)]), 200)),
        (10, lambda i: Entry(P1, _v1([p(i + k) for k in range(8)]), 200)),
        (10, lambda i: Entry(D1, _v1([d(i)]), 200)),
        (5, lambda i: Entry(pinned, _v1([p(i)]), 200)),
        (15, lambda i: Entry(P2, _v2(penguins, [p(i)]), 200)),
        (5, lambda i: Entry(D2, _v2(diabetes, [d(i + k) for k in range(4)]), 200)),
        # rejected by the guards (20)
        (5, lambda i: Entry(P1, _v1([{**p(i), "island": "Mars"}]), 422)),
        (4, lambda i: Entry(P1, _v1([p(i), {**p(i + 1), "body_mass_g": 1e9, "year": "2008"}]), 422)),
        (3, lambda i: Entry(P1, _v1([{**{k: v for k, v in p(i).items() if k != "sex"}, "colour": "blue"}]), 422)),
        (4, lambda i: Entry(D1, _v1([{**d(i), "bmi": -1e6}]), 422)),
        (4, lambda i: Entry(P2, _v2(penguins, [{**p(i), "island": "Atlantis"}]), 422)),
        # malformed (10)
        (3, lambda i: Entry(P1, b'{"instances": [{"island": "Biscoe",', 400)),
        (2, lambda i: Entry(P1, json.dumps({"rows": [p(i)]}).encode(), 400)),
        (2, lambda i: Entry(D1, b'{"instances": []}', 400)),
        (1, lambda i: Entry(P1, b'{"instances": [{"year": 2008, "year": 2009}]}', 400)),
        (2, lambda i: Entry(P2, b'{"inputs": {"island": "Biscoe"}}', 400)),
    ]
    assert sum(w for w, _ in makers) == 100
    pool: list[Entry] = []
    for weight, make in makers:
        pool.extend(make(rng.randrange(1 << 20)) for _ in range(max(1, size * weight // 100)))
    rng.shuffle(pool)
    for entry in pool:  # churn: ~2% of the requests end their connection
        entry.close = rng.random() < 0.02
    return pool


def write_pool(pool: list[Entry], path: Path) -> None:
    with open(path, "wb") as f:
        for e in pool:
            f.write(f"POST {e.path} {int(e.close)} {e.content_type} {len(e.body)}\n".encode())
            f.write(e.body + b"\n")


# --- the server and its resources --------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


@dataclass
class Sample:
    t: float
    rss_mib: float
    fds: int
    threads: int


def sample(pid: int) -> Sample:
    rss = fds = threads = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * PAGE
            with open(f"/proc/{p}/status") as f:
                threads += next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (OSError, StopIteration):
            continue  # the process ended between listing and reading
    return Sample(time.monotonic(), rss / MIB, fds, threads)


class Server:
    def __init__(self, workdir: Path, args: list[str], store: int) -> None:
        repository = workdir / "models"
        shutil.copytree(ROOT / "models", repository)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
        env.update(
            DRIFTGATE_LOG_LEVEL="warning", DRIFTGATE_PREDICTION_STORE_SIZE=str(store), DRIFTGATE_WATCH_INTERVAL="0"
        )
        self.log_path = workdir / "server.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--repository",
            str(repository),
            "--port",
            str(self.port),
            *args,
        ]
        self.process = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)

    def wait_ready(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return True
            except OSError:
                time.sleep(0.2)
        return False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def live(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/live", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def tail(self, n: int = 30) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> int | None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


class Sampler(threading.Thread):
    """Reads the server's resources every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.pid, self.interval = pid, interval
        self.samples: list[Sample] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append(sample(self.pid))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


# --- driving -------------------------------------------------------------------------------------


@dataclass
class Totals:
    requests: int = 0
    socket_errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, result: dict[str, Any]) -> None:
        self.requests += result["requests"]
        self.socket_errors += result["socket_errors"]
        for status, count in result["statuses"].items():
            self.statuses[int(status)] = self.statuses.get(int(status), 0) + count


def run_wrk(url: str, lua: Path, pool: Path, seconds: int, connections: int, threads: int) -> dict[str, Any]:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(lua),
        url,
        "--",
        str(pool),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


def quiet_sample(pid: int, settle: float) -> Sample:
    """A sample with no load: after wrk ended and the server closed its connections."""
    time.sleep(settle)
    return sample(pid)


def fmt_statuses(statuses: dict[int, int]) -> str:
    return " ".join(f"{s}:{n:,}" for s, n in sorted(statuses.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Soak driftgate over HTTP with wrk (mixed valid, rejected and malformed requests) "
        "and watch its memory, file descriptors and threads for leaks.",
        epilog="Exit status: 0 clean; 1 a leak, an unexpected status, socket errors or a dead server; 2 could not run.",
    )
    parser.add_argument(
        "--requests", type=int, default=1_000_000, help="requests to drive at least (default 1,000,000)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds to run; stops at whichever of this and --requests comes first",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="requests before the after-warm-up sample (default: a tenth of --requests)",
    )
    parser.add_argument(
        "--round-seconds", type=int, default=10, help="seconds per wrk run, one progress line each (default 10)"
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="wrk connections, below the server's max concurrency (default 16)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=None, help="pass --workers N to driftgate serve")
    parser.add_argument(
        "--pool-size", type=int, default=1000, help="distinct prebuilt requests in the rotation (default 1000)"
    )
    parser.add_argument(
        "--prediction-store",
        type=int,
        default=65536,
        help="DRIFTGATE_PREDICTION_STORE_SIZE of the server (default 65536)",
    )
    parser.add_argument(
        "--max-rss-growth-mb", type=float, default=50.0, help="allowed RSS growth after the warm-up, MB (default 50)"
    )
    parser.add_argument(
        "--fd-slack", type=int, default=3, help="allowed growth of open fds after the warm-up (default 3)"
    )
    parser.add_argument(
        "--thread-slack", type=int, default=2, help="allowed growth of threads after the warm-up (default 2)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if shutil.which("wrk") is None:
        print("soak: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    warmup = args.warmup if args.warmup is not None else max(1, args.requests // 10)

    with tempfile.TemporaryDirectory(prefix="driftgate-soak-") as tmp:
        work = Path(tmp)
        lua, pool_file = work / "soak.lua", work / "pool.txt"
        lua.write_text(LUA)
        pool = build_pool(args.pool_size, args.seed)
        write_pool(pool, pool_file)
        expected = {s: sum(e.expect == s for e in pool) / len(pool) for s in EXPECTED_STATUSES}
        print(
            f"soak: {len(pool)} requests in rotation: "
            + ", ".join(f"{s} {share:.0%}" for s, share in sorted(expected.items()))
            + f", {sum(e.close for e in pool) / len(pool):.1%} Connection: close",
            flush=True,
        )
        server = Server(work, [] if args.workers is None else ["--workers", str(args.workers)], args.prediction_store)
        try:
            if not server.wait_ready():
                print(f"soak: the server did not become ready:\n{server.tail()}", file=sys.stderr)
                return 2
            return soak(server, args, lua, pool_file, warmup)
        finally:
            code = server.stop()
            print(f"soak: server exited with {code}", flush=True)


def soak(server: Server, args: argparse.Namespace, lua: Path, pool_file: Path, warmup: int) -> int:
    pid = server.process.pid
    start = quiet_sample(pid, 0.5)
    sampler = Sampler(pid)
    sampler.start()
    totals = Totals()
    after_warmup: Sample | None = None
    warm_requests = 0
    t0 = time.monotonic()
    rate = 0.0
    rounds = 0
    try:
        while True:
            elapsed = time.monotonic() - t0
            left = args.requests - totals.requests
            if rounds >= 2 and (left <= 0 or (args.duration is not None and elapsed >= args.duration)):
                break
            seconds = args.round_seconds
            if left <= 0 or (rate == 0 and args.requests < 50_000):
                seconds = 1  # the second round of a tiny run; or a first round that may be all of it
            elif rate > 0:
                seconds = max(1, min(seconds, round(left / rate + 0.5)))
            if args.duration is not None:
                seconds = max(1, min(seconds, round(args.duration - elapsed)))
            result = run_wrk(server.url, lua, pool_file, seconds, args.connections, args.threads)
            rounds += 1
            totals.add(result)
            rate = result["requests"] / max(result["duration_us"] / 1e6, 1e-6)
            if not server.alive:
                print(f"soak: the server died:\n{server.tail()}", file=sys.stderr)
                return 1
            now = sampler.samples[-1] if sampler.samples else sample(pid)
            print(
                f"[{time.monotonic() - t0:7.1f}s] {totals.requests:>11,} requests  {rate:8,.0f}/s  "
                f"RSS {now.rss_mib:7.1f} MiB  fds {now.fds:4d}  threads {now.threads:3d}  "
                f"p99 {result['p99_us'] / 1000:.1f} ms  {fmt_statuses(totals.statuses)}",
                flush=True,
            )
            if after_warmup is None and totals.requests >= warmup:
                after_warmup = quiet_sample(pid, 1.0)
                warm_requests = totals.requests
                print(
                    f"soak: warm-up done after {warm_requests:,} requests: RSS {after_warmup.rss_mib:.1f} MiB, "
                    f"fds {after_warmup.fds}, threads {after_warmup.threads}",
                    flush=True,
                )
    finally:
        sampler.stop()
    end = quiet_sample(pid, 1.0)
    assert after_warmup is not None
    return report(server, args, start, after_warmup, end, sampler.samples, totals, warm_requests, time.monotonic() - t0)


def report(
    server: Server,
    args: argparse.Namespace,
    start: Sample,
    warm: Sample,
    end: Sample,
    samples: list[Sample],
    totals: Totals,
    warm_requests: int,
    seconds: float,
) -> int:
    peak = max(samples, key=lambda s: s.rss_mib) if samples else end
    print()
    print(f"driftgate soak: {totals.requests:,} requests in {seconds:.0f} s ({totals.requests / seconds:,.0f}/s), "
          f"{args.connections} connections, {len(samples)} samples")  # fmt: skip
    print()
    print("| | start | after warm-up | end | end - warm-up | peak under load |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| RSS (MiB) | {start.rss_mib:.1f} | {warm.rss_mib:.1f} | {end.rss_mib:.1f} | {end.rss_mib - warm.rss_mib:+.1f} | {peak.rss_mib:.1f} |"
    )
    print(
        f"| open fds | {start.fds} | {warm.fds} | {end.fds} | {end.fds - warm.fds:+d} | {max((s.fds for s in samples), default=end.fds)} |"
    )
    print(
        f"| threads | {start.threads} | {warm.threads} | {end.threads} | {end.threads - warm.threads:+d} | "
        f"{max((s.threads for s in samples), default=end.threads)} |"
    )
    print(f"| requests | 0 | {warm_requests:,} | {totals.requests:,} | {totals.requests - warm_requests:+,} | |")
    print()
    print("| status | requests | share |")
    print("|---|---:|---:|")
    for status, count in sorted(totals.statuses.items()):
        mark = "" if status in EXPECTED_STATUSES else " (unexpected)"
        print(f"| {status}{mark} | {count:,} | {count / max(totals.requests, 1):.1%} |")
    print(f"| socket errors | {totals.socket_errors:,} | |")
    print()
    problems = []
    growth_mb = (end.rss_mib - warm.rss_mib) * MIB / 1e6
    if growth_mb > args.max_rss_growth_mb:
        problems.append(f"RSS grew {growth_mb:.1f} MB after the warm-up (limit {args.max_rss_growth_mb:g} MB)")
    if end.fds - warm.fds > args.fd_slack:
        problems.append(f"open fds grew from {warm.fds} to {end.fds}")
    if end.threads - warm.threads > args.thread_slack:
        problems.append(f"threads grew from {warm.threads} to {end.threads}")
    unexpected = {s: n for s, n in totals.statuses.items() if s not in EXPECTED_STATUSES}
    if unexpected:
        problems.append(f"unexpected statuses: {fmt_statuses(unexpected)}")
    if totals.socket_errors:
        problems.append(f"{totals.socket_errors} socket errors")
    if not server.alive or not server.live():
        problems.append("the server is not alive at the end")
    if problems:
        for p in problems:
            print(f"soak: FAIL: {p}")
        return 1
    print(
        f"soak: OK (RSS {growth_mb:+.1f} MB after warm-up, fds {end.fds - warm.fds:+d}, threads {end.threads - warm.threads:+d})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
