"""One way in: the same prediction request gets the same answer and the same count
whichever entry point takes it: the HTTP protocol's direct path (``FastPath.answer_now``),
the raw ASGI front, or the Litestar declaration of the route (in process, a real
``Gateway`` serving the bundled models)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.config import load_settings
from gateway.http.app import create_app
from gateway.http.fastpath import FastPath
from gateway.http.routes import canonical, hot_route
from gateway.lifecycle import Gateway
from gateway.samples import sample_records

MODELS = Path(__file__).resolve().parents[2] / "models"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:litestar")


@pytest.fixture(scope="module")
def front() -> FastPath:
    settings = load_settings({}, repository=str(MODELS))
    gateway = Gateway(settings)
    gateway.scan()
    app = create_app(settings, gateway)
    assert isinstance(app, FastPath)
    return app


def _asgi(app: Callable[..., Any], path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
        "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 40000), "state": {},
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def _direct(front: FastPath, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    hot = hot_route("POST", canonical(path))
    assert hot is not None
    reply = front.answer_now(path, *hot, headers, body)
    assert reply is not None, "the bundled models answer one row at once"
    return reply[0], reply[2]


def _without_ids(content: bytes) -> Any:
    answer = msgspec.json.decode(content)
    for prediction in answer.get("predictions", []):
        prediction.pop("id", None)
    for output in answer.get("outputs", []):
        if output["name"] == "id":
            output["data"] = None
    return answer


def _v2(rows: list[dict[str, Any]]) -> bytes:
    def tensor(name: str) -> dict[str, Any]:
        values = [row[name] for row in rows]
        kind = "BYTES" if isinstance(values[0], str) else "FP64"
        return {"name": name, "shape": [len(rows)], "datatype": kind, "data": values}

    return msgspec.json.encode({"inputs": [tensor(name) for name in rows[0]]})


def _cases(front: FastPath) -> list[tuple[str, bytes]]:
    spec = front.gateway.model_registry.get("penguins").spec
    rows = sample_records(spec, 1, seed=3)
    return [
        ("/v1/models/penguins:predict", msgspec.json.encode({"instances": rows})),
        ("/v1/models/penguins/versions/1:predict", msgspec.json.encode({"instances": rows})),
        ("/v1/models/penguins:predict", msgspec.json.encode({"instances": [{**rows[0], "island": "Mars"}]})),
        ("/v1/models/penguins:predict", b'{"instances": [}'),
        ("/v1/models/nosuch:predict", msgspec.json.encode({"instances": rows})),
        ("/v1/models/penguins/versions/7:predict", msgspec.json.encode({"instances": rows})),
        ("/v2/models/penguins/infer", _v2(rows)),
        ("/v2/models/penguins/infer", b'{"inputs": 3}'),
    ]


def test_every_entry_point_gives_the_same_status_body_and_count(front: FastPath) -> None:
    headers = [(b"content-type", b"application/json")]
    counts = front.gateway.requests.counts
    for path, body in _cases(front):
        seen = []
        for enter in (
            lambda: _direct(front, path, headers, body),
            lambda: _asgi(front, path, headers, body),
            lambda: _asgi(front.app, path, headers, body),
        ):
            before = dict(counts)
            status, content = enter()
            delta = {k: v - before.get(k, 0) for k, v in counts.items() if v != before.get(k, 0)}
            seen.append((status, _without_ids(content), delta))
        assert seen[0][2] and sum(seen[0][2].values()) == 1, (path, seen[0])  # counted once
        assert seen[1] == seen[0], (path, seen)
        assert seen[2] == seen[0], (path, seen)


class _CsvCodec:
    """The README's worked example: CSV rows (a header line of feature names) in, V1 out."""

    name = "csv"
    media_types = ("text/csv",)
    request_schema: dict[str, Any] = {"type": "string"}  # noqa: RUF012

    def decode(self, model: Any, body: bytes, headers: Any, max_rows: int) -> Any:
        from gateway.codecs import Decoded
        from gateway.table import records_to_columns

        names, *lines = body.decode().strip().split("\n")
        rows = [dict(zip(names.split(","), map(float, line.split(",")), strict=True)) for line in lines]
        return Decoded(records_to_columns(rows, model.guards.names, model.guards.ignored))

    def encode(self, decoded: Any, outcome: Any) -> Any:
        from gateway.codecs import V1

        return V1.encode(decoded, outcome)


def test_a_new_hot_endpoint_needs_a_codec_and_a_row(front: FastPath, monkeypatch: pytest.MonkeyPatch) -> None:
    """A codec and a row in the route table: the direct path, the raw front, the dispatcher's
    admission and counting, and a Litestar declaration follow (the README's contributor section)."""
    import gateway.http.routes as routes
    from gateway.http.predict import declare

    route = routes.HotRoute(_CsvCodec(), "/csv/models/", ":predict", ("/csv/models/{target:str}",), "Predict CSV rows")
    monkeypatch.setattr(routes, "HOT_ROUTES", (*routes.HOT_ROUTES, route))
    model = front.gateway.model_registry.get("diabetes")
    rows = sample_records(model.spec, 2, seed=9)
    body = (",".join(rows[0]) + "\n" + "\n".join(",".join(str(r[k]) for k in rows[0]) for r in rows)).encode()
    path = "/csv/models/diabetes:predict"
    counts = front.gateway.requests.counts
    before = counts.get(("diabetes", "ok"), 0)
    direct = _direct(front, path, [], body)
    asgi = _asgi(front, "//csv/models/diabetes:predict/", [], body)  # any spelling
    assert direct[0] == asgi[0] == 200
    assert _without_ids(direct[1]) == _without_ids(asgi[1])
    assert len(msgspec.json.decode(direct[1])["predictions"]) == 2
    assert counts[("diabetes", "ok")] == before + 2
    handler = declare(route)
    assert handler.paths == {"/csv/models/{target:str}"} and "POST" in handler.http_methods
