"""The direct path (``gateway.http.protocol``): prediction requests answered from the HTTP
parser's callback, and every request it does not take answered by the ASGI route as before.

Raw sockets, so the tests control exactly what goes on the wire: pipelining, bodies in
pieces, chunked bodies, HTTP/1.0, ``Expect: 100-continue``, ``Connection: close``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from tests.helpers.metrics import sample, scrape
from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import penguin, predict

PREDICT = "/v1/models/penguins:predict"


def request(path: str, body: bytes | None = None, headers: dict[str, str] | None = None, version: str = "1.1") -> bytes:
    """One request's bytes; a body gets its Content-Length unless ``headers`` say otherwise."""
    lines = [f"{'GET' if body is None else 'POST'} {path} HTTP/{version}", "Host: test"]
    fields = dict(headers or {})
    if body is not None and "Transfer-Encoding" not in fields:
        fields.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def rows_body(*rows: dict[str, Any]) -> bytes:
    return json.dumps({"instances": list(rows)}).encode()


class Reader:
    """Reads HTTP/1.1 responses off a socket, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rb")

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line = self.file.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            assert name.lower() not in headers, f"header {name} sent twice"
            headers[name.lower()] = value.strip()
        body = self.file.read(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    def closed(self) -> bool:
        return self.file.read(1) == b""


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def labels(body: bytes) -> list[str]:
    return [p["label"] for p in json.loads(body)["predictions"]]


def test_pipelined_requests_are_answered_in_order_and_each_counted_once(server: ServerProcess) -> None:
    gentoo, adelie = (
        penguin(),
        penguin(
            bill_length_mm=38.0, bill_depth_mm=18.5, flipper_length_mm=185.0, body_mass_g=3600.0, island="Torgersen"
        ),
    )
    with server.client() as client:
        before = scrape(client)
        expected = [labels(predict(client, "penguins", [row]).content) for row in (gentoo, adelie)]
    burst = b"".join(
        [
            request(PREDICT, rows_body(gentoo)),
            request("/v2/health/live"),
            request(PREDICT, rows_body(penguin(bill_length_mm=-1.0))),
            request(PREDICT, rows_body(adelie)),
            request("/v1/models/no-such-model:predict", rows_body(gentoo)),
            request(PREDICT, rows_body(gentoo, adelie)),
        ]
    )
    with connect(server) as sock:
        sock.sendall(burst)  # all six at once: the server answers them one after another
        reader = Reader(sock)
        answers = [reader.response() for _ in range(6)]
    assert [status for status, _, _ in answers] == [200, 200, 422, 200, 404, 200]
    assert labels(answers[0][2]) == expected[0]
    assert labels(answers[3][2]) == expected[1]
    assert labels(answers[5][2]) == expected[0] + expected[1]
    assert answers[2][1]["content-type"] == "application/problem+json"
    assert json.loads(answers[2][2])["violations"][0]["feature"] == "bill_length_mm"
    assert json.loads(answers[1][2])["live"] is True
    with server.client() as client:
        after = scrape(client)

    def grown(reason: str, model: str = "penguins") -> float:
        name = "driftgate_requests_total"
        return sample(after, name, model=model, reason=reason) - sample(before, name, model=model, reason=reason)

    assert grown("ok") == 3 + 2  # the burst's three, and the two made for `expected` (the scrape is not one)
    assert grown("rejected") == 1


def test_a_body_arriving_in_pieces_gets_the_same_answer(server: ServerProcess) -> None:
    body = rows_body(penguin())
    with server.client() as client:
        expected = labels(predict(client, "penguins", [penguin()]).content)
    with connect(server) as sock:
        whole = request(PREDICT, body)
        head_end = whole.index(b"\r\n\r\n") + 4
        sock.sendall(whole[: head_end - 7])  # the head, short of its end
        time.sleep(0.05)
        sock.sendall(whole[head_end - 7 : head_end + 5])
        for i in range(head_end + 5, len(whole), 17):
            time.sleep(0.005)
            sock.sendall(whole[i : i + 17])
        status, headers, answer = Reader(sock).response()
    assert status == 200, answer
    assert headers["content-type"] == "application/json"
    assert labels(answer) == expected


def test_a_chunked_body_takes_the_asgi_route_and_gets_the_same_answer(server: ServerProcess) -> None:
    body = rows_body(penguin())
    chunked = (
        b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 40]), body[i : i + 40]) for i in range(0, len(body), 40))
        + b"0\r\n\r\n"
    )
    with server.client() as client:
        expected = labels(predict(client, "penguins", [penguin()]).content)
    with connect(server) as sock:
        sock.sendall(request(PREDICT, chunked, {"Transfer-Encoding": "chunked"}))
        status, _, answer = Reader(sock).response()
    assert status == 200, answer
    assert labels(answer) == expected


def test_expect_100_continue_is_honoured(server: ServerProcess) -> None:
    body = rows_body(penguin())
    with connect(server) as sock:
        whole = request(PREDICT, body, {"Expect": "100-continue"})
        sock.sendall(whole[: len(whole) - len(body)])
        reader = Reader(sock)
        assert reader.file.readline().startswith(b"HTTP/1.1 100")
        assert reader.file.readline() == b"\r\n"
        sock.sendall(body)
        status, _, answer = reader.response()
    assert status == 200, answer


@pytest.mark.parametrize(
    ("version", "headers"),
    [("1.1", {"Connection": "close"}), ("1.0", {})],
    ids=["connection-close", "http-1.0"],
)
def test_a_client_that_wants_one_request_gets_its_answer_then_the_close(
    server: ServerProcess, version: str, headers: dict[str, str]
) -> None:
    with connect(server) as sock:
        sock.sendall(request(PREDICT, rows_body(penguin()), headers, version=version))
        reader = Reader(sock)
        status, answer_headers, answer = reader.response()
        assert status == 200, answer
        assert answer_headers.get("connection") == "close"
        assert reader.closed()


def test_a_kept_alive_connection_serves_direct_and_asgi_requests_alike(server: ServerProcess) -> None:
    """Direct (V1, V2), ASGI (model listing, chunked) and direct again, on one connection."""
    v2 = json.dumps(
        {
            "inputs": [
                {"name": k, "datatype": "BYTES" if isinstance(v, str) else "FP64", "shape": [1], "data": [v]}
                for k, v in penguin().items()
            ]
        }
    ).encode()
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(request(PREDICT, rows_body(penguin())))
        assert reader.response()[0] == 200
        sock.sendall(request("/v1/models"))
        assert reader.response()[0] == 200
        sock.sendall(request("/v2/models/penguins/infer", v2))
        status, _, answer = reader.response()
        assert status == 200, answer
        assert {o["name"] for o in json.loads(answer)["outputs"]} >= {"label", "probabilities"}
        sock.sendall(request(PREDICT, rows_body(penguin())))
        assert reader.response()[0] == 200


def test_a_body_over_the_limit_is_refused_before_it_is_read(start_server: StartServer) -> None:
    limited = start_server(env={"DRIFTGATE_MAX_BODY_BYTES": "2000"})
    with connect(limited) as sock:
        sock.sendall(request(PREDICT, b"", {"Content-Length": "5000"}))  # the head only
        status, headers, _ = Reader(sock).response()
    assert status == 413
    assert headers["content-type"] == "application/problem+json"


def test_a_batched_model_answers_through_the_asgi_route(start_server: StartServer) -> None:
    """With dynamic batching on, a request cannot be answered at once: the direct path hands
    it (body already read) to the ASGI route, which queues it. Concurrent clients all get
    their own rows' answers, equal to the unbatched server's."""
    rows = [penguin(bill_length_mm=40.0 + i * 0.5, body_mass_g=3500.0 + 40 * i) for i in range(16)]
    plain = start_server()
    with plain.client() as client:
        expected = [labels(predict(client, "penguins", [row]).content) for row in rows]
    batched = start_server(env={"DRIFTGATE_BATCHING": "penguins=8:5"})
    got: list[Any] = [None] * len(rows)

    def ask(i: int) -> None:
        with httpx.Client(base_url=batched.url, timeout=30) as client:
            got[i] = labels(predict(client, "penguins", [rows[i]]).raise_for_status().content)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


@pytest.mark.parametrize("upgrade", ["h2c", "websocket"])
def test_an_upgrade_request_is_left_to_uvicorn_and_breaks_nothing(server: ServerProcess, upgrade: str) -> None:
    """A prediction request asking to upgrade the connection is not taken by the direct
    path (uvicorn decides what an upgrade means); whatever it answers, nothing is logged
    as an error and the server goes on serving."""
    with connect(server) as sock:
        sock.settimeout(1.0)
        sock.sendall(request(PREDICT, rows_body(penguin()), {"Connection": "Upgrade", "Upgrade": upgrade}))
        try:
            answer = sock.recv(200)
        except TimeoutError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 5"), answer
    with server.client() as client:
        assert predict(client, "penguins", [penguin()]).status_code == 200
    logged = server.stderr
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-2000:]


def test_a_request_abandoned_mid_body_is_counted_once_and_only_if_it_is_a_prediction(server: ServerProcess) -> None:
    def total(metrics: dict[Any, float]) -> float:
        return sum(v for (name, _), v in metrics.items() if name == "driftgate_requests_total")

    with server.client() as client:
        before = scrape(client)
    for path in (PREDICT, "/elsewhere:predict"):
        with connect(server) as sock:
            sock.sendall(request(path, b"", {"Content-Length": "100"}) + b'{"instances": [')
    with server.client() as client:
        deadline = time.monotonic() + 5
        while total(after := scrape(client)) < total(before) + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the second abandonment, if it were counted, has been by now
        after = scrape(client)
    assert total(after) - total(before) == 1
    name = "driftgate_requests_total"
    assert (
        sample(after, name, model="penguins", reason="canceled")
        - sample(before, name, model="penguins", reason="canceled")
        == 1
    )
