"""Several server processes on one port: ``driftgate serve --workers N``.

The supervisor (this module, in the process the user started) binds the listening socket,
creates the server's state folder, and starts N worker processes (multiprocessing's spawn
context, as uvicorn's own supervisor does) that each run the ordinary server
(``gateway.server.serve``) on that one socket: the kernel hands each new connection to
one of them. The supervisor itself never serves a request.

- SIGTERM or SIGINT: the supervisor closes its copy of the socket and sends SIGTERM to every
  worker; each drains as a single server does (readiness fails at once, in-flight requests
  finish, bounded by ``drain_seconds``) and publishes its last monitoring state. The
  supervisor exits 0 once they have ended (killing any still running ``drain_seconds`` plus
  ``EXIT_GRACE`` later).
- A worker that dies unexpectedly is replaced in the same slot (one log line); the new one
  continues its predecessor's monitoring state and prediction ring. Exit code 3 only if
  start-up fails: a worker ends before it has ever served, or the socket cannot be bound.
- A worker whose supervisor disappears drains and ends by itself (``gateway.monitoring.fleet``).

The state folder (under ``/dev/shm`` when it has room, else the temporary folder) holds each
worker's published monitoring state and prediction ring, and the models unloaded through the
repository extension (``gateway.unloads``: an unload or load at one worker reaches every
worker, replacements included); it is removed at exit.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.listeners import open_listeners, url_host
from gateway.monitoring.feedback import ring_file_bytes
from gateway.monitoring.fleet import WorkerContext

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from multiprocessing.synchronize import Event

    from gateway.config import Settings

__all__ = ["EXIT_GRACE", "create_state_folder", "supervise"]

log = logging.getLogger("driftgate.workers")

EXIT_GRACE = 10.0
"""Seconds a draining worker gets beyond ``drain_seconds`` to shut down and publish."""
RESTART_BACKOFF = (0.5, 30.0)
"""A slot's first replacement waits 0.5 s; one that keeps dying waits up to 30 s."""
STABLE_SECONDS = 30.0
"""A worker that served this long before dying is replaced without back-off."""

_spawn = multiprocessing.get_context("spawn")


def create_state_folder(settings: Settings, base: str | Path | None = None) -> Path:
    """A fresh state folder with a zero-filled (sparse) prediction ring file per worker, in
    ``base``; by default in ``/dev/shm`` when it has room for every ring, else in the
    temporary folder."""
    ring = ring_file_bytes(settings.prediction_store_size)
    need = settings.workers * ring + (64 << 20)
    if base is None:
        with contextlib.suppress(OSError):
            st = os.statvfs("/dev/shm")
            if os.access("/dev/shm", os.W_OK) and st.f_bavail * st.f_frsize >= need:
                base = "/dev/shm"
    folder = Path(tempfile.mkdtemp(prefix="driftgate-", dir=base))
    for worker in range(settings.workers):
        with open(folder / f"predictions-{worker}.bin", "wb") as fh:
            fh.truncate(ring)
    return folder


def _worker_main(settings: Settings, sockets: list[socket.socket], context: WorkerContext, started: Event) -> None:
    """A worker process: the ordinary server on the supervisor's socket."""
    from gateway.server import serve

    try:
        code = serve(settings, worker=context, sockets=sockets, on_started=started.set)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the drain is done
        code = 0
    sys.exit(code)


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: SpawnProcess | None = None
        self.started: Event | None = None
        self.ever_started = False
        self.served_since: float | None = None
        self.failures = 0
        """Replacements in a row of workers that served less than ``STABLE_SECONDS``."""
        self.restart_at = 0.0


def supervise(settings: Settings) -> int:
    """Run ``settings.workers`` worker processes until SIGTERM/SIGINT (module docstring)."""
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings, sockets = open_listeners(settings)
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return 3
    folder = create_state_folder(settings)
    server = os.urandom(3).hex()
    # the same line a single server logs: scripts and tests learn the port from it
    log.info(
        "Uvicorn running on http://%s:%d (Press CTRL+C to quit); %d workers",
        url_host(settings.host),
        settings.port,
        settings.workers,
    )
    log.info("monitoring state of the workers in %s", folder)
    slots = [_Slot(i) for i in range(settings.workers)]
    stopping = False

    def start(slot: _Slot) -> None:
        context = WorkerContext(str(folder), server, slot.index, settings.workers)
        slot.started = _spawn.Event()
        slot.process = _spawn.Process(
            target=_worker_main, args=(settings, sockets, context, slot.started), name=f"driftgate-worker-{slot.index}"
        )
        slot.process.start()

    def on_signal(sig: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        log.info("%s: draining %d workers", signal.Signals(sig).name, settings.workers)
        for sock in sockets:  # the workers hold their own copies until each has drained
            sock.close()
        for slot in slots:
            if slot.process is not None and slot.process.pid is not None and slot.process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        for slot in slots:
            start(slot)
        while not stopping:
            running = [s.process.sentinel for s in slots if s.process is not None and s.process.exitcode is None]
            wait(running, timeout=0.2)
            now = time.monotonic()
            for slot in slots:
                if stopping:
                    break
                if slot.process is None:  # waiting out a restart back-off
                    if now >= slot.restart_at:
                        start(slot)
                    continue
                if slot.served_since is None and slot.started is not None and slot.started.is_set():
                    slot.served_since = now
                    slot.ever_started = True
                if slot.process.exitcode is None:
                    continue
                slot.process.join()
                exitcode, pid = slot.process.exitcode, slot.process.pid
                if not slot.ever_started:
                    log.error("worker %d (pid %s) failed to start (exit code %s); stopping", slot.index, pid, exitcode)
                    code = 3
                    on_signal(signal.SIGTERM, None)
                    break
                if slot.served_since is not None and now - slot.served_since >= STABLE_SECONDS:
                    slot.failures = 0
                delay = min(RESTART_BACKOFF[0] * (2**slot.failures), RESTART_BACKOFF[1])
                slot.failures += 1
                slot.served_since = None
                log.warning(
                    "worker %d (pid %s) exited unexpectedly (exit code %s); starting a new one in %.1f s",
                    slot.index,
                    pid,
                    exitcode,
                    delay,
                )
                slot.process = None
                slot.restart_at = now + delay
        deadline = time.monotonic() + settings.drain_seconds + EXIT_GRACE
        for slot in slots:
            if slot.process is None:
                continue
            slot.process.join(max(deadline - time.monotonic(), 0))
            if slot.process.exitcode is None:
                log.error("worker %d (pid %s) did not end in time; killing it", slot.index, slot.process.pid)
                slot.process.kill()
                slot.process.join()
        log.info("all workers have ended")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
        shutil.rmtree(folder, ignore_errors=True)
    return code
