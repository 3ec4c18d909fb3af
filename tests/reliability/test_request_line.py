"""A12: the request line and the head, fuzzed by hand on a raw socket.

Every case gets an HTTP answer (problem+json for the errors driftgate answers itself) and
the connection ends cleanly, before any reset: a head over ``MAX_HEAD_BYTES`` or with over
``MAX_HEADERS`` fields is 431, anything the parser cannot read is 400, a method a route
does not take is 405. A head that never ends (100 MB of one header line) is refused once
the limit is passed, without the server's memory following it. The server stays alive.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from gateway.http.limits import MAX_HEAD_BYTES, MAX_HEADERS
from tests.helpers.procfs import rss_bytes
from tests.reliability.conftest import ServerProcess, server_pid
from tests.reliability.fixture_models import assert_alive

LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n"
INFER = "/v2/models/penguins/infer"
PROBLEM = b"application/problem+json"


def _exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict[bytes, bytes], float]:
    """Send ``data`` from a thread while reading the answer to the end of the connection,
    as a client that does not wait for its upload to finish. Returns the status, the
    headers, and the seconds until the server closed. A reset before the answer fails."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:

        def upload() -> None:
            try:
                sock.sendall(data)
            except OSError:
                pass  # the server answered and stopped reading: expected for refused heads

        sender = threading.Thread(target=upload, daemon=True)
        t0 = time.monotonic()
        sender.start()
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        seconds = time.monotonic() - t0
        sender.join(timeout)
    head, _, _ = received.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 "), f"no HTTP answer: {received[:200]!r}"
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
    return int(lines[0].split()[1]), headers, seconds


def _fields(n: int) -> bytes:
    return b"".join(b"X-F%d: v\r\n" % i for i in range(n))


CASES: list[tuple[str, bytes, int]] = [
    ("GET with a body on infer", f"GET {INFER} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n".encode() + b"x" * 100_000, 405),
    ("PUT on infer", f"PUT {INFER} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello".encode(), 405),
    ("DELETE on infer", f"DELETE {INFER} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello".encode(), 405),
    ("unknown method", b"BREW /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("no method", b" /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("HTTP/1.2", b"GET /v2/health/live HTTP/1.2\r\nHost: t\r\n\r\n", 400),
    ("not HTTP", b"GET /v2/health/live XTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("a TLS hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 200, 400),
    ("bytes that are not a request line", b"\xff\xfe\x00\x01" * 4096, 400),
    ("a field without a colon", LIVE + b"Broken field\r\n\r\n", 400),
    ("bare LF line ends", b"GET /v2/health/live HTTP/1.1\nHost: t\n\n", 400),
    ("two Content-Lengths", f"POST {INFER} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}".encode(), 400),
    ("a negative Content-Length", f"POST {INFER} HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n".encode(), 400),
    ("Content-Length and chunked", f"POST {INFER} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(), 400),
    ("a bad chunk size", f"POST {INFER} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".encode(), 400),
    ("a 1 MB header", LIVE + b"X-Big: " + b"a" * (1 << 20) + b"\r\n\r\n", 431),
    ("a 1 MB request target", b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: t\r\n\r\n", 431),
    ("10,000 header fields", LIVE + _fields(10_000) + b"\r\n", 431),
    (f"{MAX_HEADERS + 1} header fields", LIVE + _fields(MAX_HEADERS) + b"\r\n", 431),  # Host is one
    ("a head one byte over the limit", LIVE + b"X-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", 431),
]


@pytest.mark.parametrize(("data", "status"), [pytest.param(d, s, id=name) for name, d, s in CASES])
def test_a12_every_odd_request_gets_its_answer_and_a_clean_close(server: ServerProcess, data: bytes, status: int) -> None:
    got, headers, seconds = _exchange(server.port, data)
    assert got == status
    assert headers.get(b"content-type", b"").startswith(PROBLEM), headers
    assert seconds < 5, f"the connection stayed open {seconds:.1f} s after a refused request"


def test_a12_heads_within_the_limits_are_served(server: ServerProcess) -> None:
    big = LIVE + b"Connection: close\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES - 1024) + b"\r\n\r\n"
    many = LIVE + b"Connection: close\r\n" + _fields(MAX_HEADERS - 2) + b"\r\n"
    for data in (big, many, LIVE + b"Connection: close\r\n\r\n"):
        assert _exchange(server.port, data)[0] == 200


def test_a12_an_endless_header_is_refused_without_the_memory_following_it(server: ServerProcess) -> None:
    """100 MB in one header line: 431 within a second, RSS up by less than 16 MiB, alive."""
    pid = server_pid(server)
    before = rss_bytes(pid)
    status, _, seconds = _exchange(server.port, LIVE + b"X-Endless: " + b"a" * (100 << 20))
    growth = rss_bytes(pid) - before
    assert status == 431
    assert seconds < 1, f"refused after {seconds:.2f} s"
    assert growth < 16 << 20, f"RSS grew {growth / 2**20:.1f} MiB"
    assert_alive(server.url, server.process, pid)
