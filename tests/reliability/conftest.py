"""Fixtures of the reliability suite: the integration suite's real server process, re-used.

``server`` (one per module, default settings plus an admin token, a private copy of
``models/``) and ``start_server`` (a factory for tests that need settings or a process of
their own) come from ``tests/integration/conftest.py`` unchanged; this module only makes
them visible here and adds the small helpers the bad-input, security and observability
tests share: a raw HTTP/1.1 exchange for requests whose bytes matter, a Prometheus scrape
that keeps every sample, the server's PID, and a ``Prober`` that polls a health endpoint
from its own thread while a test attacks the server.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Self

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ServerProcess, StartServer, server, start_server

__all__ = [
    "Prober",
    "ServerProcess",
    "StartServer",
    "raw_exchange",
    "scrape_all",
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


def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is on a fresh loopback connection and read one HTTP/1.1 answer.

    Returns (status, headers with lower-case names, body). The body is read up to its
    Content-Length, or to the end of the connection when there is none.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer read from ``sock`` (see ``raw_exchange``)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection before an answer: {buffer[:200]!r}")
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body if length < 0 else body[:length]


def scrape_all(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``GET /metrics`` parsed with prometheus_client's parser: {(sample, labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
