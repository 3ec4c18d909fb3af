"""Reliability catalogue, section C (load): admission (C1), slow clients (C2, lite),
malformed floods (C4), connection churn (C5). Each test names its catalogue ID.

Resource probes read ``/proc/<pid>/status`` (RSS), ``/proc/<pid>/fd`` (descriptors) and
``/proc/net/tcp`` (CLOSE_WAIT sockets) of the real server process.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.metrics import sample, scrape
from tests.helpers.procfs import open_fds, rss_bytes
from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import assert_problem
from tests.reliability.fixture_models import assert_alive, knob_predict, knob_repository, slow_model


def _close_wait(port: int) -> int:
    """Sockets on ``port`` (either end) in CLOSE_WAIT (state 08)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "08" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def _pid(proc: ServerProcess) -> int:
    assert proc.process is not None
    return proc.process.pid


# --- C1: admission --------------------------------------------------------------------------


def test_c1_over_the_concurrency_cap_is_503_at_once_and_probes_are_exempt(
    start_server: StartServer, tmp_path: Path
) -> None:
    """C1: with ``--max-concurrency 2`` and two slow inferences in progress, 8 more V1/V2
    requests are each answered 503 problem+json with ``Retry-After`` at once (median
    under 100 ms, none near a slow request's length: not queued); liveness, readiness, metrics, metadata and the monitor still answer 200;
    the two admitted requests finish 200 and the server serves again afterwards."""
    proc = start_server(
        repository=knob_repository(tmp_path / "repo", {"knob": slow_model()}), args=["--max-concurrency", "2"]
    )
    slow_body = {"instances": [{"x": 1536.0}] + [{"x": 0.5}] * 1023}
    admitted: list[httpx.Response] = []
    connected = threading.Semaphore(0)

    def slow() -> None:
        with proc.client() as client:
            assert client.get("/v2/health/live").status_code == 200
            connected.release()
            admitted.append(client.post("/v1/models/knob:predict", json=slow_body))

    workers = [threading.Thread(target=slow) for _ in range(2)]
    for t in workers:
        t.start()
    for _ in workers:
        assert connected.acquire(timeout=10)
    time.sleep(0.1)  # both are read and running (each takes 0.4 s or more)
    refused: list[tuple[float, httpx.Response]] = []
    exempt: dict[str, int] = {}
    with proc.client() as client:
        for i in range(8):
            t0 = time.monotonic()
            if i % 2:
                infer = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.5]}]}
                r = client.post("/v2/models/knob/infer", json=infer)
            else:
                r = knob_predict(client, 0.5)
            refused.append((time.monotonic() - t0, r))
        for path in (
            "/v2/health/live",
            "/v2/health/ready",
            "/metrics",
            "/v1/models/knob",
            "/v2/models/knob",
            "/v1/models/knob/monitor",
        ):
            exempt[path] = client.get(path).status_code
        still_busy = len(admitted) < 2
    for t in workers:
        t.join(timeout=60)

    assert still_busy, "the slow requests ended before the probe: the cap was not exercised"
    for _, r in refused:
        assert_problem(r, 503)
        assert r.headers.get("retry-after") == "1", r.headers
    took = sorted(seconds for seconds, _ in refused)
    # at once: a queued request would wait for a slow one to end (0.4 s or more)
    assert took[len(took) // 2] < 0.1 and took[-1] < 0.35, f"refusals took {[round(t * 1000) for t in took]} ms"
    assert set(exempt.values()) == {200}, exempt
    assert [r.status_code for r in admitted] == [200, 200], [r.text[:200] for r in admitted]
    with proc.client() as client:
        assert knob_predict(client, 0.5).status_code == 200
        assert sample(scrape(client), "driftgate_requests_total", model="knob", reason="overloaded") == 8
    assert_alive(proc.url, proc.process)


# --- C2 (lite): slow clients -----------------------------------------------------------------


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[float, bytes]:
    """Wait for the server to close ``sock`` (sending ``trickle`` a byte per 0.1 s meanwhile).
    Returns (seconds until closed, bytes received); seconds is inf if it never closed."""
    t0 = time.monotonic()
    received = b""
    sock.settimeout(0.1)
    sent = 0
    while time.monotonic() - t0 < seconds:
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except OSError:
                return time.monotonic() - t0, received
            sent += 1
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0, received
        if not chunk:
            return time.monotonic() - t0, received
        received += chunk
    return float("inf"), received


HEAD = b"POST /v1/models/knob:predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"


def test_c2_slow_heads_and_bodies_are_cut_at_their_deadlines(start_server: StartServer, tmp_path: Path) -> None:
    """C2 (lite): with 0.5 s head and body deadlines, a silent connection and a slowloris
    head (a byte every 0.1 s) are closed, and a stalled body gets 408 problem+json and a
    close, each within 1.5 s; a client that sends its body in two parts 0.2 s apart, and
    one on a normal connection meanwhile, are served 200; the server is alive."""
    proc = start_server(
        repository=knob_repository(tmp_path / "repo"), args=["--header-timeout", "0.5", "--body-timeout", "0.5"]
    )
    addr = (proc.host, proc.port)
    with socket.create_connection(addr, timeout=5) as silent:
        silent_closed, _ = _closed_within(silent, 3.0)
    with socket.create_connection(addr, timeout=5) as loris:
        loris_closed, _ = _closed_within(loris, 3.0, trickle=HEAD[:-4] + b"X-Slow: " + b"a" * 40)
    with socket.create_connection(addr, timeout=5) as stalled:
        stalled.sendall(HEAD + b'{"instances": [')
        stalled_closed, answer = _closed_within(stalled, 3.0)
    body = b'{"instances": [{"x": 0.25}, {"x": 0.75}]}'
    with socket.create_connection(addr, timeout=5) as patient:
        patient.sendall(HEAD.replace(b"1000", str(len(body)).encode()) + body[:10])
        time.sleep(0.2)
        patient.sendall(body[10:])
        patient_answer = patient.recv(65536)
    with proc.client() as client:
        normal = knob_predict(client, 0.5)

    assert silent_closed < 1.5, f"a silent connection stayed open {silent_closed:.2f} s"
    assert loris_closed < 1.5, f"a slowloris head was read for {loris_closed:.2f} s"
    assert stalled_closed < 1.5, f"a stalled body was waited on for {stalled_closed:.2f} s"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"application/problem+json" in answer and b'"error"' in answer, answer[:400]
    assert patient_answer.startswith(b"HTTP/1.1 200"), patient_answer[:200]
    assert normal.status_code == 200
    assert_alive(proc.url, proc.process)


# --- C4: malformed floods do not leak ----------------------------------------------------------

FLOOD = 1000
MIB = 1024 * 1024


def _oversize(host: str, port: int, declared: int) -> None:
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/models/knob:predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {declared}\r\nConnection: close\r\n\r\n".encode()
        )
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head[:200]


@pytest.mark.slow
def test_c4_thousand_each_of_bad_json_oversize_deep_nesting_and_duplicate_keys_leak_nothing(
    start_server: StartServer, tmp_path: Path
) -> None:
    """C4: 1,000 each of broken JSON (400), oversize bodies (413), 3,000-deep nesting (400)
    and duplicate keys (400), after 100 of each to warm up. Server RSS grows at most
    32 MiB; every answer has its status; the server is alive. (Bad gzip does not apply:
    the gateway accepts no Content-Encoding.)"""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), args=["--max-body-bytes", "65536"])
    pid = _pid(proc)
    bad_json = b'{"instances": [{"x": 0.5,}'
    deep = b'{"instances": [' + b"[" * 3000 + b"]" * 3000 + b"]}"
    dupes = b'{"instances": [{"x": 0.5, "x": 0.75}]}'
    deadline = time.monotonic() + 90

    def flood(n: int) -> dict[str, set[int]]:
        seen: dict[str, set[int]] = {"bad_json": set(), "deep": set(), "dupes": set()}
        with httpx.Client(base_url=proc.url, timeout=10, headers={"content-type": "application/json"}) as client:
            for _ in range(n):
                assert time.monotonic() < deadline, "the flood ran out of time"
                for kind, body in (("bad_json", bad_json), ("deep", deep), ("dupes", dupes)):
                    seen[kind].add(client.post("/v1/models/knob:predict", content=body).status_code)
                _oversize(proc.host, proc.port, 70_000)
        return seen

    flood(100)
    before = rss_bytes(pid)
    seen = flood(FLOOD)
    after = rss_bytes(pid)
    assert seen == {"bad_json": {400}, "deep": {400}, "dupes": {400}}, seen
    growth = after - before
    assert growth <= 32 * MIB, f"RSS grew {growth / MIB:.1f} MiB over {4 * FLOOD} malformed requests"
    assert_alive(proc.url, proc.process, pid)


# --- C5: connection churn leaves nothing behind -----------------------------------------------


@pytest.mark.slow
def test_c5_connection_churn_leaks_no_descriptor_and_no_close_wait(start_server: StartServer, tmp_path: Path) -> None:
    """C5 (lite: 2,000 requests, not 20k): 4 clients send 500 requests each with
    ``Connection: close``, and 500 connections open and close without a request. Then the
    server's descriptor count is back to its baseline (within 2) and no socket on its port
    sits in CLOSE_WAIT; the server is alive."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"))
    pid = _pid(proc)
    with httpx.Client(base_url=proc.url, timeout=10, headers={"connection": "close"}) as client:
        for _ in range(20):
            assert knob_predict(client, 0.5).status_code == 200
    time.sleep(0.3)
    baseline = open_fds(pid)
    deadline = time.monotonic() + 60
    statuses: list[set[int]] = []

    def churn() -> None:
        seen: set[int] = set()
        with httpx.Client(base_url=proc.url, timeout=10, headers={"connection": "close"}) as client:
            for i in range(500):
                if time.monotonic() > deadline:
                    break
                seen.add(knob_predict(client, (i % 10) / 10).status_code)
        statuses.append(seen)

    workers = [threading.Thread(target=churn) for _ in range(4)]
    for t in workers:
        t.start()
    for _ in range(500):
        with socket.create_connection((proc.host, proc.port), timeout=5):
            pass
    for t in workers:
        t.join(timeout=90)
    assert time.monotonic() < deadline, "the churn ran out of time"
    assert statuses and set().union(*statuses) == {200}, statuses

    settled = time.monotonic() + 5
    while time.monotonic() < settled and (open_fds(pid) > baseline + 2 or _close_wait(proc.port)):
        time.sleep(0.1)
    assert open_fds(pid) <= baseline + 2, f"descriptors: {baseline} before, {open_fds(pid)} after"
    assert _close_wait(proc.port) == 0, "sockets left in CLOSE_WAIT"
    assert_alive(proc.url, proc.process, pid)
