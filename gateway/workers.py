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
  ``EXIT_GRACE`` later). A second SIGTERM or SIGINT to the supervisor ends the workers'
  drains at once (``END_DRAIN``); the same signal sent to the whole process group, which
  each worker gets twice, is one drain (``gateway.processes``).
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

from gateway.listeners import open_listeners
from gateway.monitoring.feedback import ring_file_bytes
from gateway.monitoring.fleet import WorkerContext
from gateway.processes import END_DRAIN, announce_listening, configure_logging

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
    need = 2 * settings.workers * ring + (64 << 20)
    if base is None:
        with contextlib.suppress(OSError):
            st = os.statvfs("/dev/shm")
            if os.access("/dev/shm", os.W_OK) and st.f_bavail * st.f_frsize >= need:
                base = "/dev/shm"
    folder = Path(tempfile.mkdtemp(prefix="driftgate-", dir=base))
    for worker in range(settings.workers):
        for kind in ("predictions", "shadow"):  # the shadow ring: a rollout's shadow predictions
            with open(folder / f"{kind}-{worker}.bin", "wb") as fh:
                fh.truncate(ring)
    return folder


def _worker_main(settings: Settings, sockets: list[socket.socket], context: WorkerContext, started: Event) -> None:
    """A worker process: the ordinary server on the supervisor's socket."""
    from gateway.server import serve  # here, not at the top: the supervisor never serves

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

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.exitcode is None

    def signal(self, sig: int) -> None:
        if self.running and self.process is not None and self.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)


class _Supervisor:
    """The worker processes of one ``supervise`` call, their replacements and their end."""

    def __init__(self, settings: Settings, sockets: list[socket.socket], folder: Path) -> None:
        self.settings = settings
        self.sockets = sockets
        self.folder = folder
        self.server = os.urandom(3).hex()
        self.slots = [_Slot(i) for i in range(settings.workers)]
        self.signals = 0
        """SIGTERM and SIGINT received: the first drains, the second ends the drains."""
        self.code = 0

    @property
    def stopping(self) -> bool:
        return self.signals > 0

    def start(self, slot: _Slot) -> None:
        context = WorkerContext(str(self.folder), self.server, slot.index, self.settings.workers)
        slot.started = _spawn.Event()
        slot.process = _spawn.Process(
            target=_worker_main,
            args=(self.settings, self.sockets, context, slot.started),
            name=f"driftgate-worker-{slot.index}",
        )
        slot.process.start()

    def on_signal(self, sig: int, frame: Any) -> None:
        """The first SIGTERM or SIGINT: drain every worker. The second: end their drains now
        (a worker cannot tell it from the group's copy of the first: ``gateway.processes``)."""
        self.signals += 1
        name = signal.Signals(sig).name
        if self.signals == 1:
            log.info("%s: draining %d workers", name, self.settings.workers)
            for sock in self.sockets:  # the workers hold their own copies until each has drained
                sock.close()
            for slot in self.slots:
                slot.signal(signal.SIGTERM)
        elif self.signals == 2:
            log.warning("second %s: ending the workers' drains now", name)
            for slot in self.slots:
                slot.signal(END_DRAIN)

    def run(self) -> int:
        """Start the workers, keep them running until a signal, then wait for their end."""
        for slot in self.slots:
            self.start(slot)
        while not self.stopping:
            wait([s.process.sentinel for s in self.slots if s.running and s.process is not None], timeout=0.2)
            now = time.monotonic()
            for slot in self.slots:
                if self.stopping:
                    break
                self.tend(slot, now)
        self.wait_for_end()
        return self.code

    def tend(self, slot: _Slot, now: float) -> None:
        """Start a slot's replacement once its back-off is over, note when its worker starts
        serving, and deal with a worker that has exited."""
        if slot.process is None:  # waiting out a restart back-off
            if now >= slot.restart_at:
                self.start(slot)
            return
        if slot.served_since is None and slot.started is not None and slot.started.is_set():
            slot.served_since = now
            slot.ever_started = True
        if slot.process.exitcode is not None:
            self.exited(slot, now)

    def exited(self, slot: _Slot, now: float) -> None:
        """A worker ended unasked: replace it (after a back-off if it keeps dying), or stop
        everything (exit code 3) if it never served."""
        assert slot.process is not None
        slot.process.join()
        exitcode, pid = slot.process.exitcode, slot.process.pid
        if not slot.ever_started:
            log.error("worker %d (pid %s) failed to start (exit code %s); stopping", slot.index, pid, exitcode)
            self.code = 3
            self.on_signal(signal.SIGTERM, None)
            return
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

    def wait_for_end(self) -> None:
        """Wait for every draining worker; kill one still running ``drain_seconds`` plus
        ``EXIT_GRACE`` after the signal."""
        deadline = time.monotonic() + self.settings.drain_seconds + EXIT_GRACE
        for slot in self.slots:
            if slot.process is None:
                continue
            slot.process.join(max(deadline - time.monotonic(), 0))
            if slot.process.exitcode is None:
                log.error("worker %d (pid %s) did not end in time; killing it", slot.index, slot.process.pid)
                slot.process.kill()
                slot.process.join()
        log.info("all workers have ended")


def supervise(settings: Settings) -> int:
    """Run ``settings.workers`` worker processes until SIGTERM/SIGINT (module docstring)."""
    configure_logging(settings)
    try:
        settings, sockets = open_listeners(settings)
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return 3
    folder = create_state_folder(settings)
    announce_listening(log, settings, settings.workers)  # the same line a single server logs
    log.info("monitoring state of the workers in %s", folder)
    supervisor = _Supervisor(settings, sockets, folder)
    previous = {sig: signal.signal(sig, supervisor.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
        shutil.rmtree(folder, ignore_errors=True)
