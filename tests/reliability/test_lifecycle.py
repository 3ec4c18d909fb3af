"""Reliability catalogue: process lifecycle under load (B4 SIGTERM, B1 SIGSTOP/SIGCONT) and
C8 (a model is warm when it becomes ready). Each test names its catalogue ID.

The drain follows uvicorn's shutdown, which this project keeps (README, Lifecycle): on
SIGTERM readiness fails at once, the listening socket closes on the server's next tick
(so new connections are refused and clients go elsewhere), requests already accepted run
to the end with ``Connection: close``, and the process exits 0 within ``drain_seconds``.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers.metrics import sample, scrape
from tests.integration.conftest import StartServer
from tests.integration.support import (
    ADMIN_TOKEN,
    PENGUINS_MODEL,
    PENGUINS_SPEC,
    admin,
    assert_problem,
    bundle,
    copy_models,
    penguin,
    wait_serving,
)
from tests.reliability.fixture_models import assert_alive, knob_spec_bytes, slow_model, write_version

DRAIN_SECONDS = 10.0
EXIT_SLACK = 3.0
GRACE = 0.02
"""Seconds after ``kill()`` returns within which the server may not yet have run its handler."""


@dataclass(frozen=True)
class Attempt:
    kind: str
    started: float
    ended: float
    status: int | None
    connection: str = ""
    failure: str = ""


def _failure(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, httpx.ConnectError):
        return "refused"
    if isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in text:
        return "closed-idle"  # a kept-alive connection closed before the server read the request
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "reset"
    return f"other: {exc!r}"


@pytest.mark.slow
def test_b4_sigterm_under_load_drains_in_flight_work_and_exits_zero(start_server: StartServer, tmp_path: Path) -> None:
    """B4: SIGTERM while 6 clients send 256-row batches and 2 slow (0.7 s or more) requests are
    in flight. Readiness answers 503 (never 200) from the signal on while liveness answers
    200; the slow requests and every accepted request finish with 200 and
    ``Connection: close``; no request is cut mid-answer; the process exits 0 within the
    drain bound."""
    repository = copy_models(tmp_path / "models")
    write_version(repository, "slow", "1", slow_model(), knob_spec_bytes("slow"))
    proc = start_server(repository=repository, env={"DRIFTGATE_DRAIN_SECONDS": str(DRAIN_SECONDS)})
    rows = [penguin(bill_length_mm=35.0 + (i % 20)) for i in range(256)]
    slow_body = {"instances": [{"x": 1792.0}] + [{"x": 0.5}] * 1023}  # 0.7 s alone, more under load
    attempts: list[Attempt] = []
    probes: list[Attempt] = []
    lock = threading.Lock()
    stop = threading.Event()
    signalled = threading.Event()
    slow_sent = threading.Semaphore(0)
    deadline = time.monotonic() + 20

    def request(kind: str, client: httpx.Client, path: str, body: object) -> Attempt:
        started = time.monotonic()
        try:
            r = client.post(path, json=body)
            return Attempt(kind, started, time.monotonic(), r.status_code, r.headers.get("connection", ""))
        except Exception as exc:  # noqa: BLE001 - classified and asserted on
            return Attempt(kind, started, time.monotonic(), None, failure=_failure(exc))

    def load() -> None:
        with httpx.Client(base_url=proc.url, timeout=15) as client:
            for _ in range(2000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                attempt = request("load", client, "/v1/models/penguins:predict", {"instances": rows})
                with lock:
                    attempts.append(attempt)
                if attempt.failure == "refused":
                    return

    def slow() -> None:
        with httpx.Client(base_url=proc.url, timeout=15) as client:
            assert client.get("/v2/health/live").status_code == 200  # connected and accepted
            slow_sent.release()
            attempt = request("slow", client, "/v1/models/slow:predict", slow_body)
        with lock:
            attempts.append(attempt)

    def probe() -> None:
        signalled.wait(timeout=30)
        while time.monotonic() < deadline:
            for path in ("/v2/health/ready", "/v2/health/live"):
                started = time.monotonic()
                try:
                    status = httpx.get(f"{proc.url}{path}", timeout=2).status_code
                    probes.append(Attempt(path, started, time.monotonic(), status))
                except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                    # the listener is closed (a connection still in its backlog is reset): the drain has begun
                    return
            time.sleep(0.003)

    loaders = [threading.Thread(target=load) for _ in range(6)]
    slows = [threading.Thread(target=slow) for _ in range(2)]
    prober = threading.Thread(target=probe)
    for t in [*loaders, prober]:
        t.start()
    try:
        while len(attempts) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        for t in slows:
            t.start()
        for _ in slows:
            assert slow_sent.acquire(timeout=10)
        time.sleep(0.2)  # the slow requests are read and running
        signalled_at = time.monotonic()
        proc.send(signal.SIGTERM)
        signalled.set()
        stopped = proc.wait(DRAIN_SECONDS + 10)
        exit_seconds = time.monotonic() - signalled_at
    finally:
        stop.set()
        signalled.set()
        for t in [*loaders, *slows, prober]:
            t.join(timeout=20)

    assert not stopped.killed and stopped.exit_code == 0, f"exit {stopped.exit_code}:\n{stopped.stderr[-2000:]}"
    assert exit_seconds < DRAIN_SECONDS + EXIT_SLACK, exit_seconds
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]

    slow_answers = [a for a in attempts if a.kind == "slow"]
    assert len(slow_answers) == 2 and all(a.status == 200 for a in slow_answers), slow_answers
    assert all(a.started < signalled_at < a.ended for a in slow_answers), (
        "the slow requests were not in flight at the signal"
    )
    assert all(a.connection == "close" for a in slow_answers), (
        "answers finished during the drain must close their connection"
    )
    before = [a for a in attempts if a.ended < signalled_at]
    assert len(before) >= 60 and all(a.status == 200 for a in before)
    answered = [a for a in attempts if a.status is not None]
    assert all(a.status == 200 for a in answered), [a for a in answered if a.status != 200][:5]
    late = [a for a in answered if a.started > signalled_at + GRACE]
    assert all(a.connection == "close" for a in late), f"answers during the drain without Connection: close: {late[:3]}"
    lost = [a for a in attempts if a.failure and a.failure not in ("refused", "closed-idle", "reset")]
    assert not lost, f"requests cut or failing oddly: {lost[:3]}"
    assert not [a for a in attempts if a.failure and a.ended < signalled_at], "failures before the signal"

    settled = [p for p in probes if p.started > signalled_at + GRACE]
    assert all(p.status == 503 for p in settled if p.kind == "/v2/health/ready"), settled
    assert all(p.status == 200 for p in settled if p.kind == "/v2/health/live"), settled


@pytest.mark.slow
def test_b4_second_sigterm_ends_a_stalled_drain_at_once(start_server: StartServer) -> None:
    """B4: a client stalls mid-upload, so the drain would last its full 20 s bound; a second
    SIGTERM ends the process at once (within 3 s)."""
    proc = start_server(env={"DRIFTGATE_DRAIN_SECONDS": "20"})
    with socket.create_connection((proc.host, proc.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/models/penguins:predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"instances": ['
        )
        time.sleep(0.3)
        proc.send(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.running, "the first SIGTERM must drain, not exit at once"
        t0 = time.monotonic()
        proc.send(signal.SIGTERM)
        stopped = proc.wait(4)
    assert not stopped.killed and time.monotonic() - t0 < 3.0, f"{time.monotonic() - t0:.1f} s after the second SIGTERM"


# --- B4 with --workers: the whole process group signalled ------------------------------------

GROUP_RUNS = int(os.environ.get("DRIFTGATE_TEST_GROUP_SIGTERM_RUNS", "2"))
"""Runs of the group-SIGTERM test in a row (the bug it guards showed in 4 runs of 5; run it
20 times with ``DRIFTGATE_TEST_GROUP_SIGTERM_RUNS=20`` after touching the drain)."""


def _answer(kind: str, url: str, path: str, body: object, started: threading.Event | None = None) -> Attempt:
    """One request on a connection of its own (so the kernel may hand it to either worker)."""
    with httpx.Client(base_url=url, timeout=30, headers={"connection": "close"}) as client:
        t0 = time.monotonic()
        if started is not None:
            started.set()
        try:
            r = client.post(path, json=body)
        except Exception as exc:  # noqa: BLE001 - classified and asserted on
            return Attempt(kind, t0, time.monotonic(), None, failure=_failure(exc))
    problem = r.headers.get("content-type", "").startswith("application/problem+json")
    return Attempt(
        kind, t0, time.monotonic(), r.status_code, failure="" if r.status_code == 200 or problem else r.text[:200]
    )


def _group_sigterm_run(start_server: StartServer, repository: Path) -> None:
    drain = 10.0
    proc = start_server(
        repository=repository, args=["--workers", "2"], env={"DRIFTGATE_DRAIN_SECONDS": str(drain)}, new_group=True
    )
    wait_serving(proc, 2)
    rows = [penguin(bill_length_mm=35.0 + (i % 20)) for i in range(64)]
    slow_body = {"instances": [{"x": 1024.0}] + [{"x": 0.5}] * 255}  # about 0.3 s alone, more under load
    attempts: list[Attempt] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            attempt = _answer("load", proc.url, "/v1/models/penguins:predict", {"instances": rows})
            with lock:
                attempts.append(attempt)
            if attempt.failure == "refused":
                return

    def held(started: threading.Event) -> None:
        attempt = _answer("held", proc.url, "/v1/models/slow:predict", slow_body, started)
        with lock:
            attempts.append(attempt)

    loaders = [threading.Thread(target=load) for _ in range(3)]
    starts = [threading.Event() for _ in range(4)]
    holders = [threading.Thread(target=held, args=(s,)) for s in starts]
    for t in loaders:
        t.start()
    try:
        while len(attempts) < 20:
            time.sleep(0.01)
        for t in holders:
            t.start()
        for s in starts:
            assert s.wait(10)
        time.sleep(0.15)  # the held requests are read and running
        signalled = time.monotonic()
        proc.send_group(signal.SIGTERM)  # as systemd's KillMode=control-group or kill -TERM -PGID
        stopped = proc.wait(drain + 10)
        seconds = time.monotonic() - signalled
    finally:
        stop.set()
        for t in [*loaders, *holders]:
            t.join(timeout=30)
    assert not stopped.killed and stopped.exit_code == 0, f"exit {stopped.exit_code}:\n{stopped.stderr[-3000:]}"
    assert seconds < drain + EXIT_SLACK, seconds
    for words in ("Traceback", "CancelledError", "Exception in ASGI application", "ending the drain now"):
        assert words not in stopped.stderr, f"{words!r} in the log:\n{stopped.stderr[-3000:]}"
    held_answers = [a for a in attempts if a.kind == "held"]
    assert len(held_answers) == 4 and all(a.started < signalled < a.ended for a in held_answers), held_answers
    assert all(a.status == 200 for a in held_answers), held_answers  # well within the drain bound
    answered = [a for a in attempts if a.status is not None]
    # 503 only as problem+json (the drain bound; a request past it), never uvicorn's text 500
    assert all(a.status in (200, 503) and not a.failure for a in answered), [a for a in answered if a.failure][:3]
    lost = [a for a in attempts if a.status is None and a.failure not in ("refused", "closed-idle", "reset")]
    assert not lost, f"requests cut: {lost[:3]}"


@pytest.mark.slow
def test_b4_group_sigterm_with_workers_drains_every_request_in_flight(
    start_server: StartServer, tmp_path: Path
) -> None:
    """B4 with ``--workers 2``: SIGTERM to the whole process group under load (every process
    gets it, and the supervisor passes it on) is one drain, not a drain cut short by the
    copy: each request in flight is answered 200, the process exits 0 within the bound,
    and the log holds no traceback. ``GROUP_RUNS`` runs in a row."""
    repository = copy_models(tmp_path / "models")
    write_version(repository, "slow", "1", slow_model(), knob_spec_bytes("slow"))
    for _ in range(GROUP_RUNS):
        _group_sigterm_run(start_server, repository)


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "end"), [(1, "second SIGTERM"), (2, "second SIGTERM"), (1, "drain bound")])
def test_b4_a_drain_ended_early_answers_what_it_cuts_503_problem_json(
    start_server: StartServer, tmp_path: Path, workers: int, end: str
) -> None:
    """B4: a second SIGTERM (to the server, or to the supervisor of 2 workers), or the drain
    bound (0.5 s here), while requests are in flight ends the drain: each request it cuts is
    answered at once 503 problem+json ``shutting-down`` with ``Retry-After``, never uvicorn's
    text 500, and the log holds no traceback. (The process itself ends once the model calls
    already running on its threads return: a thread cannot be stopped.)"""
    drain = 20.0 if end == "second SIGTERM" else 0.5
    repository = copy_models(tmp_path / "models")
    write_version(repository, "slow", "1", slow_model(rounds=16), knob_spec_bytes("slow"))
    proc = start_server(
        repository=repository, args=["--workers", str(workers)], env={"DRIFTGATE_DRAIN_SECONDS": str(drain)}
    )
    if workers > 1:
        wait_serving(proc, workers)
    slow_body = {"instances": [{"x": 1792.0}] + [{"x": 0.5}] * 255}  # 1.4 s alone, far more two at once
    answers: list[tuple[float, httpx.Response | Exception]] = []
    started = [threading.Event() for _ in range(2)]

    def held(event: threading.Event) -> None:
        with httpx.Client(base_url=proc.url, timeout=30, headers={"connection": "close"}) as client:
            event.set()
            try:
                answer: httpx.Response | Exception = client.post("/v1/models/slow:predict", json=slow_body)
            except httpx.HTTPError as exc:
                answer = exc
            answers.append((time.monotonic(), answer))

    holders = [threading.Thread(target=held, args=(e,)) for e in started]
    for t in holders:
        t.start()
    for e in started:
        assert e.wait(10)
    time.sleep(0.3)  # read and running
    proc.send(signal.SIGTERM)
    if end == "second SIGTERM":
        time.sleep(0.5)
        assert proc.running and not answers, "the first SIGTERM drains: the requests go on"
        proc.send(signal.SIGTERM)
    cut = time.monotonic() + (0 if end == "second SIGTERM" else drain)
    for t in holders:
        t.join(timeout=15)
    stopped = proc.wait(30)
    assert not stopped.killed and stopped.exit_code == 0, f"exit {stopped.exit_code}:\n{stopped.stderr[-3000:]}"
    said = "ending the drain now" if end == "second SIGTERM" else "timeout graceful shutdown exceeded"
    assert said in stopped.stderr, stopped.stderr[-2000:]
    for words in ("Traceback", "CancelledError", "Exception in ASGI application"):
        assert words not in stopped.stderr, f"{words!r} in the log:\n{stopped.stderr[-3000:]}"
    assert len(answers) == 2, answers
    for at, answer in answers:
        assert isinstance(answer, httpx.Response), f"cut without an answer: {answer!r}"
        problem = assert_problem(answer, 503)
        assert problem["code"] == "shutting-down" and answer.headers["retry-after"] == "1", problem
        assert answer.headers["connection"] == "close"
        assert at - cut < 3.0, f"answered {at - cut:.1f} s after the {end}"


# --- B1: SIGSTOP / SIGCONT ---------------------------------------------------------------


def test_b1_stopped_and_continued_server_answers_what_it_was_sent(start_server: StartServer) -> None:
    """B1 (lite: 1 s, not 10): the process is frozen while 4 requests are sent. After
    SIGCONT each is answered 200, counters only went up, and the server is alive."""
    proc = start_server()
    pid = proc.process.pid  # type: ignore[union-attr]
    with proc.client() as client:
        for _ in range(5):
            assert client.post("/v1/models/penguins:predict", json={"instances": [penguin()]}).status_code == 200
        before = sample(scrape(client), "driftgate_requests_total", model="penguins", reason="ok")
    results: list[int] = []

    def send() -> None:
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            results.append(client.post("/v1/models/penguins:predict", json={"instances": [penguin()]}).status_code)

    proc.send(signal.SIGSTOP)
    try:
        senders = [threading.Thread(target=send) for _ in range(4)]
        for t in senders:
            t.start()
        time.sleep(1.0)
        assert not results, "answered while stopped?"
    finally:
        proc.send(signal.SIGCONT)
    for t in senders:
        t.join(timeout=15)
    assert results == [200] * 4, results
    with proc.client() as client:
        after = sample(scrape(client), "driftgate_requests_total", model="penguins", reason="ok")
    assert after == before + 4, (before, after)
    assert_alive(proc.url, proc.process, pid)


# --- C8: ready means warm ------------------------------------------------------------------


def _latency(client: httpx.Client, path: str, body: object) -> float:
    t0 = time.perf_counter()
    r = client.post(path, json=body)
    seconds = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    return seconds


def test_c8_first_request_after_start_and_after_registration_is_warm(start_server: StartServer) -> None:
    """C8: the first prediction after the server turns ready, and the first by each newly
    registered version (v2 to v7; PUT answers only once the version is loaded and
    warmed), are not cold: their median is at most 2x the steady median. Loosely
    measured: 2 ms of absolute slack cover the Python-level first-use costs of a process
    or a version (about 1-1.5 ms here, outside onnxruntime) and timer noise on a shared
    machine; a cold onnxruntime session costs far more."""
    proc = start_server(env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    body = {"instances": [penguin(bill_length_mm=36.0 + i) for i in range(8)]}
    firsts: list[float] = []
    with proc.client() as client:
        assert client.get("/v2/health/live").status_code == 200  # the connection is open: time the request only
        after_start = _latency(client, "/v1/models/penguins/versions/1:predict", body)
        steady = [_latency(client, "/v1/models/penguins/versions/1:predict", body) for _ in range(31)]
        for version in ("2", "3", "4", "5", "6", "7"):
            r = client.put(
                f"/v1/models/penguins/versions/{version}",
                files=bundle(PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes()),
                headers=admin(),
            )
            assert r.status_code == 201, r.text
            assert client.get(f"/v2/models/penguins/versions/{version}/ready").status_code == 200
            firsts.append(_latency(client, f"/v1/models/penguins/versions/{version}:predict", body))
    p50 = statistics.median(steady)
    firsts.append(after_start)
    shown = f"first requests {[round(f * 1000, 2) for f in firsts]} ms (new versions, then after start), steady p50 {p50 * 1000:.2f} ms"
    assert statistics.median(firsts) <= 2 * p50 + 0.002, shown
