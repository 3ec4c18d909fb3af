"""Bodies in flight (catalogue B9, C1): the bytes of request bodies a process receives at
once are bounded (``max_body_bytes_in_flight``), not only the requests it computes.

Without the budget, clients that upload big bodies slowly cost a body of memory each,
however low ``--max-concurrency`` is: a request is admitted only once its body is in.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.helpers.metrics import scrape
from tests.helpers.raw_http import raw_exchange, read_response
from tests.integration.conftest import StartServer
from tests.reliability.fixture_models import assert_alive, knob_repository

KIB = 1024
BODY = 900 * KIB
ENV = {"DRIFTGATE_MAX_BODY_BYTES": str(1024 * KIB), "DRIFTGATE_MAX_BODY_BYTES_IN_FLIGHT": str(2048 * KIB)}


def _request(size: int) -> tuple[bytes, bytes]:
    """A valid one-row knob prediction padded with JSON whitespace to ``size`` bytes: head, body."""
    row = b'{"instances": [{"x": 0.5}]}'
    body = row + b" " * (size - len(row))
    head = (
        b"POST /v1/models/knob:predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body)
    )
    return head, body


def _holder(port: int) -> tuple[socket.socket, bytes]:
    """A connection that has sent the head and half of a ``BODY``-byte body; the rest is returned."""
    head, body = _request(BODY)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + body[: BODY // 2])
    return sock, body[BODY // 2 :]


def test_bodies_past_the_budget_are_503_at_once_and_the_budget_comes_back(
    start_server: StartServer, tmp_path: Path
) -> None:
    """Two clients hold 900 KiB bodies half sent (1,800 of a 2,048 KiB budget): a third
    900 KiB body is 503 + Retry-After at once, counted ``overloaded``; a small request is
    served; once one holder finishes and the other gives up, the big body is served."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env=ENV)
    first, first_rest = _holder(proc.port)
    second, second_rest = _holder(proc.port)
    time.sleep(0.3)  # both heads parsed: 1,800 KiB of the 2,048 KiB budget taken

    head, body = _request(BODY)
    t0 = time.monotonic()
    status, headers, answer = raw_exchange(proc.port, head + body)
    seconds = time.monotonic() - t0
    assert status == 503, answer[:300]
    assert headers.get("retry-after") == "1" and headers["content-type"].startswith("application/problem+json")
    assert b'"overloaded"' in answer and seconds < 1.0, (answer[:300], seconds)

    small_head, small_body = _request(64)  # fits beside the two: answered as ever
    assert raw_exchange(proc.port, small_head + small_body)[0] == 200

    first.sendall(first_rest)  # the holders finish: answered, and their bytes given back
    assert read_response(first)[0] == 200
    second.close()  # one gives up mid-body: its bytes come back too
    first.close()
    deadline = time.monotonic() + 5
    while True:
        status = raw_exchange(proc.port, head + body)[0]
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200

    with proc.client() as client:
        metrics = scrape(client)
    assert metrics.get(("driftgate_requests_total", frozenset({("model", "knob"), ("reason", "overloaded")}))) == 1.0
    assert_alive(proc.url, proc.process)
    assert second_rest  # never sent: the second holder gave up


def test_a_body_above_the_limit_is_still_413_not_503(start_server: StartServer, tmp_path: Path) -> None:
    """A body over ``max_body_bytes`` never fits any budget: it is refused as too large."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env=ENV)
    holders = [_holder(proc.port) for _ in range(2)]
    time.sleep(0.3)
    head, body = _request(2048 * KIB)
    assert raw_exchange(proc.port, head + body)[0] == 413
    for sock, _ in holders:
        sock.close()
    assert_alive(proc.url, proc.process)
