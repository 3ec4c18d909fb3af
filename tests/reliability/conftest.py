"""Fixtures of the reliability suite: the integration suite's real server process, re-used.

``server`` (one per module, default settings plus an admin token, a private copy of
``models/``) and ``start_server`` (a factory for tests that need settings or a process of
their own) come from ``tests/integration/conftest.py`` unchanged; this module only makes
them visible here and adds what only this suite uses: the server's PID, and a ``Prober``
that polls a health endpoint from its own thread while a test attacks the server (raw
HTTP/1.1 exchanges and scrapes are in ``tests.helpers``).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Self

import httpx

from tests.integration.conftest import ServerProcess, StartServer, server, start_server

__all__ = [
    "Prober",
    "ServerProcess",
    "StartServer",
    "server",
    "server_pid",
    "start_server",
]


class Prober:
    """Polls ``path`` on one keep-alive connection from a thread, recording each status and
    latency. Entering returns only once the first answer is in, so a test's load never
    starts (or ends) before the prober has measured anything; leaving stops the thread."""

    def __init__(self, url: str, path: str = "/v2/health/live", *, interval: float = 0.005) -> None:
        self.url, self.path, self.interval = url, path, interval
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=5) as client:
                while not self._stop.is_set():
                    t0 = time.perf_counter()
                    status = client.get(self.path).status_code
                    self.latencies.append(time.perf_counter() - t0)
                    self.statuses.append(status)
                    self._first.set()
                    time.sleep(self.interval)
        except Exception as exc:  # noqa: BLE001 - reported to the test through `errors`
            self.errors.append(repr(exc))
        finally:
            self._first.set()

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._first.wait(timeout=10), f"no answer from {self.path} within 10 s"
        assert not self.errors, self.errors
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def server_pid(proc: ServerProcess) -> int:
    assert proc.process is not None, "the server was not started"
    return proc.process.pid
