"""Fixtures of the reliability suite: the integration suite's real server process, re-used.

``server`` (one per module, default settings plus an admin token, a private copy of
``models/``) and ``start_server`` (a factory for tests that need settings or a process of
their own) come from ``tests/integration/conftest.py`` unchanged; this module only makes
them visible here and adds the small helpers the bad-input, security and observability
tests share: a raw HTTP/1.1 exchange for requests whose bytes matter, a Prometheus scrape
that keeps every sample, and the server's PID.
"""

from __future__ import annotations

import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ServerProcess, StartServer, server, start_server

__all__ = ["ServerProcess", "StartServer", "raw_exchange", "scrape_all", "server", "server_pid", "start_server"]


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
