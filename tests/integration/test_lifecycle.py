"""Liveness, readiness and shutdown of the real server process.

- Liveness answers as soon as the process listens; readiness only once every version in
  the repository is loaded (a repository of 250 versions makes the loading window wide
  enough to see).
- SIGTERM under load: the listener closes, requests already accepted are answered in
  full, readiness no longer answers 200, and the process ends within the drain bound.
  Requests sent after the listener closed may fail to connect; that is counted apart.
"""

from __future__ import annotations

import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import ServerProcess, StartServer, Stopped
from tests.integration.support import MODELS, copy_models, penguin

BULK_VERSIONS = 250
DRAIN_SECONDS = 5.0
EXIT_SLACK = 3.0
"""Seconds beyond the drain bound the process may take to exit (interpreter shutdown)."""


# --- start-up ---------------------------------------------------------------------------


@pytest.mark.slow
def test_live_at_once_ready_only_after_every_version_is_loaded(start_server: StartServer, tmp_path: Path) -> None:
    repository = copy_models(tmp_path / "bulk-models")
    for v in range(1, BULK_VERSIONS + 1):
        shutil.copytree(MODELS / "penguins" / "1", repository / "bulk" / str(v))
    proc = start_server(repository=repository, wait=False)
    proc.wait_listening()  # the server's own "listening" line: from here on it must answer

    polls: list[tuple[int, int]] = []  # (live, ready) status pairs, from the first answer on
    listing = None
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=proc.url, timeout=2) as client:
        while time.monotonic() < deadline:
            assert proc.running, f"server died:\n{proc.stderr}"
            try:
                live = client.get("/v2/health/live").status_code
                ready = client.get("/v2/health/ready").status_code
            except httpx.TransportError as exc:
                pytest.fail(f"no answer once listening: {exc!r}")
            polls.append((live, ready))
            if ready == 200:
                listing = client.get("/v1/models").json()
                break
            time.sleep(0.005)
    assert listing is not None, f"never ready; polls: {polls[-5:]}\n{proc.stderr}"

    assert polls[0][0] == 200, "liveness answers from the first moment"
    assert all(live == 200 for live, _ in polls)
    assert (200, 503) in polls, "readiness must fail while versions are still loading"
    not_ready = polls.index((200, 503))
    assert all(ready == 503 for _, ready in polls[not_ready:-1])
    served = {m["name"]: m for m in listing["models"]}
    assert len(served["bulk"]["versions"]) == BULK_VERSIONS, "ready before every version was loaded"
    assert {"penguins", "diabetes"} <= set(served)
    assert not listing["failed"]


# --- SIGTERM under load -----------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    started: float
    ended: float
    status: int | None
    """HTTP status, or None when no response came."""
    failure: str | None = None
    """Kind of transport failure: refused, closed-idle, reset, cut or other."""
    message: str = ""


@dataclass(frozen=True)
class SigtermRun:
    attempts: list[Attempt]
    signalled_at: float
    readiness_after_signal: list[str]
    stopped: Stopped
    exit_seconds: float
    """From the signal to the end of the process."""


def _failure_kind(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, httpx.ConnectError):
        return "refused"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "complete message body" in text or "incomplete" in text:
            return "cut"  # the status line came, the body did not: an accepted request cut short
        if "without sending a response" in text:
            return "closed-idle"  # a keep-alive connection closed before it read the request
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "reset"
    return "other"


@pytest.fixture(scope="module")
def sigterm_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigtermRun]:
    """One server, loaded by 8 client threads (256 rows a request), sent SIGTERM mid-load."""
    work = tmp_path_factory.mktemp("sigterm")
    proc = ServerProcess(
        work / "run", copy_models(work / "models"), env={"DRIFTGATE_DRAIN_SECONDS": str(DRAIN_SECONDS)}
    )
    proc.start()
    rows = [penguin(bill_length_mm=35.0 + (i % 20)) for i in range(256)]
    attempts: list[Attempt] = []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + 15

    def load() -> None:
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            for _ in range(2000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                started = time.monotonic()
                try:
                    status = client.post("/v1/models/penguins:predict", json={"instances": rows}).status_code
                    attempt = Attempt(started, time.monotonic(), status)
                except Exception as exc:  # noqa: BLE001 - classified and asserted on
                    attempt = Attempt(started, time.monotonic(), None, _failure_kind(exc), repr(exc))
                with lock:
                    attempts.append(attempt)
                if attempt.failure == "refused":
                    return  # the listener is gone: this client is done

    threads = [threading.Thread(target=load, name=f"load-{i}") for i in range(8)]
    try:
        for t in threads:
            t.start()
        while len(attempts) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        signalled_at = time.monotonic()
        proc.send(signal.SIGTERM)
        time.sleep(0.1)
        readiness = []
        for _ in range(3):
            try:
                readiness.append(str(httpx.get(f"{proc.url}/v2/health/ready", timeout=2).status_code))
            except httpx.TransportError as exc:
                readiness.append(type(exc).__name__)
            time.sleep(0.05)
        stopped = proc.wait(DRAIN_SECONDS + 10)
        exit_seconds = time.monotonic() - signalled_at
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
        proc.stop(signal.SIGKILL)
    yield SigtermRun(sorted(attempts, key=lambda a: a.started), signalled_at, readiness, stopped, exit_seconds)


def test_sigterm_under_load_fails_no_accepted_request(sigterm_run: SigtermRun) -> None:
    run = sigterm_run
    answered = [a for a in run.attempts if a.status is not None]
    before = [a for a in run.attempts if a.ended < run.signalled_at]
    assert len(before) >= 100 and all(a.status == 200 for a in before), "all was well before the signal"
    in_flight = [a for a in answered if a.started < run.signalled_at < a.ended]
    assert in_flight, "no request was in flight at the signal: the test did not exercise draining"
    bad_status = [a for a in answered if a.status != 200]
    assert not bad_status, f"responses other than 200 during shutdown: {bad_status[:5]}"
    kinds = {a.failure for a in run.attempts if a.failure}
    cut = [a for a in run.attempts if a.failure in ("cut", "other")]
    assert not cut, f"requests cut mid-response or failing oddly: {cut[:5]}"
    assert kinds <= {"refused", "closed-idle", "reset"}, kinds
    early = [a for a in run.attempts if a.failure and a.ended < run.signalled_at]
    assert not early, f"failures before the signal: {early[:5]}"


def test_readiness_is_not_200_after_sigterm(sigterm_run: SigtermRun) -> None:
    """503 while draining, or no answer at all once the listener is closed; never 200."""
    readiness = sigterm_run.readiness_after_signal
    assert readiness and all(r in ("503", "ConnectError") for r in readiness), readiness


def test_sigterm_ends_the_process_within_the_drain_bound(sigterm_run: SigtermRun) -> None:
    stopped = sigterm_run.stopped
    assert not stopped.killed, f"still running {DRAIN_SECONDS + 10}s after SIGTERM:\n{stopped.stderr[-2000:]}"
    assert sigterm_run.exit_seconds < DRAIN_SECONDS + EXIT_SLACK, sigterm_run.exit_seconds
    assert "draining" in stopped.stderr
    assert "Application shutdown complete" in stopped.stderr
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]


def test_sigterm_exit_code_is_zero(sigterm_run: SigtermRun) -> None:
    """A drained process exits 0 (uvicorn would re-raise SIGTERM and die by it: exit 143)."""
    assert sigterm_run.stopped.exit_code == 0


# --- the drain bound holds even against a client that never finishes ---------------------


def _stalled_upload(proc: ServerProcess) -> socket.socket:
    """A connection whose request body never completes: the server is mid-request forever."""
    sock = socket.create_connection((proc.host, proc.port), timeout=5)
    sock.sendall(
        b"POST /v1/models/penguins:predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100000\r\n\r\n{"instances": ['
    )
    time.sleep(0.3)  # let the server read the headers and start the request
    return sock


@pytest.mark.slow
def test_drain_bound_holds_against_a_stalled_client(start_server: StartServer) -> None:
    drain = 1.0
    proc = start_server(env={"DRIFTGATE_DRAIN_SECONDS": str(drain)})
    with _stalled_upload(proc):
        stopped = proc.stop(signal.SIGTERM, timeout=drain + 6)
    assert not stopped.killed, "the drain bound did not end the stalled request"
    assert drain - 0.1 <= stopped.seconds < drain + EXIT_SLACK, stopped.seconds
    assert stopped.exit_code == 0, stopped.stderr[-2000:]


def test_subsecond_drain_bound_holds_against_a_stalled_client(start_server: StartServer) -> None:
    """``int(0.5)`` is 0, which uvicorn reads as "no bound": a sub-second bound must still hold."""
    drain = 0.5
    proc = start_server(env={"DRIFTGATE_DRAIN_SECONDS": str(drain)})
    with _stalled_upload(proc):
        stopped = proc.stop(signal.SIGTERM, timeout=drain + EXIT_SLACK)
    assert not stopped.killed, f"still running {EXIT_SLACK} s past a {drain} s drain bound"
    assert drain - 0.1 <= stopped.seconds < drain + EXIT_SLACK, stopped.seconds
    assert stopped.exit_code == 0, stopped.stderr[-2000:]
