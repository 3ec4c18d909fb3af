"""A raw ASGI front for the hot endpoints; everything else goes to the Litestar app.

V1 predict, V2 infer, the two health probes and ``/metrics`` are answered here, without Litestar's
routing, signature parsing and response machinery (about 60 us of a one-row request on
these machines, more than the guards, transform and inference together). They call the
very same functions the Litestar routes call (``answer_v1``, ``answer_v2``) and map
errors with the very same ``problem_parts``, so the two entry points cannot disagree;
the Litestar routes stay for the OpenAPI document and for every other method and path.

Bodies are read incrementally and refused with 413 as soon as they pass the limit (or
at once, when Content-Length says they will). Prediction requests pass admission (at
most ``max_concurrency`` in progress; one more is answered 503 at once), run under a
deadline (``request_timeout_seconds``, 504) and are counted once each in
``driftgate_requests_total`` with the reason they ended. Health probes are never refused.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from gateway.errors import NotOnThisListenerError, OverloadedError, PayloadTooLargeError
from gateway.http.health import LIVE, NOT_READY, READY
from gateway.http.problems import PROBLEM_MEDIA_TYPE, problem_parts
from gateway.http.v1 import answer_v1, answer_v1_now, v1_target
from gateway.http.v2 import answer_v2, answer_v2_now, v2_target
from gateway.lifecycle import Gateway
from gateway.listeners import is_admin_route
from gateway.monitoring.exposition import render_metrics
from gateway.monitoring.requests import UNKNOWN_MODEL, reason_of

__all__ = ["FastPath", "Reply"]

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
"""An answer computed at once: status, headers (without content-length), body."""

_JSON = [(b"content-type", b"application/json")]
_METRICS = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
V1_PREFIX = "/v1/models/"
V2_PREFIX = "/v2/models/"


class FastPath:
    """Wraps the Litestar ASGI app (see the module docstring)."""

    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.max_body = gateway.settings.max_body_bytes
        self.max_concurrency = gateway.settings.max_concurrency
        self.request_timeout = gateway.settings.request_timeout_seconds
        self.admin_port = gateway.settings.admin_port
        """The admin listener's port (``gateway.listeners``), or None: one listener for all."""

    def on_admin_listener(self, local: tuple[Any, ...] | None) -> bool:
        """True if a connection's local address (``scope["server"]``, the socket's name) is
        the admin listener's."""
        return self.admin_port is not None and local is not None and local[1] == self.admin_port

    def _on_its_listener(self, scope: dict[str, Any], method: str, path: str) -> bool:
        """With an admin listener, the admin endpoints are served only there, and there
        nothing else but the health probes."""
        if self.on_admin_listener(scope.get("server")):
            return is_admin_route(method, path) or path in ("/v2/health/live", "/v2/health/ready")
        return not is_admin_route(method, path)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if self.admin_port is not None and not self._on_its_listener(scope, method, path):
                return await _problem(send, NotOnThisListenerError("no such endpoint on this listener"), path)
            if method == "POST":
                if path.startswith(V1_PREFIX) and path.endswith(":predict"):
                    return await self._predict(scope, receive, send, path)
                if path.startswith(V2_PREFIX) and path.endswith("/infer"):
                    return await self._infer(scope, receive, send, path)
            elif method == "GET":
                if path == "/v2/health/live":
                    return await _send(send, 200, _JSON, LIVE)
                if path == "/v2/health/ready":
                    if self.gateway.ready:
                        return await _send(send, 200, _JSON, READY)
                    return await _send(send, 503, [*_JSON, (b"retry-after", b"1")], NOT_READY)
                if path == "/metrics":  # here, not in Litestar, which appends a second charset
                    return await _send(send, 200, _METRICS, await render_metrics(self.gateway))
        await self.app(scope, receive, send)

    def _closing(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """While draining, tell keep-alive clients this connection ends with this answer,
        so their next request goes elsewhere instead of meeting a reset."""
        return [*headers, (b"connection", b"close")] if self.gateway.draining else headers

    @staticmethod
    def predicts(path: str) -> bool:
        """True for a V1 predict or V2 infer path (the requests ``answer_now`` answers)."""
        return (path.startswith(V1_PREFIX) and path.endswith(":predict")) or (
            path.startswith(V2_PREFIX) and path.endswith("/infer")
        )

    def answer_now(self, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Reply | None:
        """The whole answer to a prediction request (``POST`` to a predict or infer path)
        whose body has arrived, computed now on the event loop's thread, or None when the
        request must wait for something (a batch, a worker thread) and has to take the ASGI
        route (``__call__``), which then answers it in full (nothing was counted here).

        The HTTP protocol calls this straight from the parser's callback
        (``gateway.http.protocol``): no task, no ASGI messages, one write. Admission,
        counting and error mapping are the ones ``_serve`` applies."""
        if path.startswith(V1_PREFIX) and path.endswith(":predict"):
            target, now = _v1_target, self._v1_now
        elif path.startswith(V2_PREFIX) and path.endswith("/infer"):
            target, now = _v2_target, self._v2_now
        else:
            return None
        label = UNKNOWN_MODEL
        try:
            model = self.gateway.model_registry.get(*target(path))
            label = model.name
            if self.gateway.in_flight >= self.max_concurrency:
                raise OverloadedError(
                    f"the server is at its limit of {self.max_concurrency} prediction requests in progress; retry shortly"
                )
            if len(body) > self.max_body:
                raise PayloadTooLargeError(f"the body is over the limit of {self.max_body} bytes")
            answer = now(headers, model, body)
        except Exception as exc:  # noqa: BLE001 - every failure is a problem+json answer, as in Litestar
            self.gateway.requests.add(label, reason_of(exc))
            status, content, extra = problem_parts(exc, path, "POST")
            return status, self._closing(_problem_headers(extra)), content
        if answer is None:
            return None
        self.gateway.requests.add(label, "ok")
        return 200, self._closing(answer[1]), answer[0]

    def abandoned(self, path: str) -> None:
        """Count a direct-path request whose body never arrived in full (the client went
        away, or its body deadline passed) as the ASGI route counts such a request."""
        self.refused(path, ConnectionError())

    def refused(self, path: str, exc: Exception) -> None:
        """Count a prediction request the HTTP protocol answered (or dropped) itself, with
        the reason ``exc`` gives, as the ASGI route counts it; other paths are not counted."""
        if not self.predicts(path):
            return
        label = UNKNOWN_MODEL
        target = _v1_target if path.startswith(V1_PREFIX) else _v2_target
        try:
            label = self.gateway.model_registry.get(*target(path)).name
        except Exception:  # noqa: BLE001, S110 - not a served model: counted under the unknown label
            pass
        self.gateway.requests.add(label, reason_of(exc))

    def _v1_now(
        self, headers: list[tuple[bytes, bytes]], model: Any, body: bytes
    ) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        content = answer_v1_now(self.gateway, model, body)
        return None if content is None else (content, _JSON)

    def _v2_now(
        self, headers: list[tuple[bytes, bytes]], model: Any, body: bytes
    ) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        answer = answer_v2_now(self.gateway, model, body, _find(headers, b"inference-header-content-length"))
        return None if answer is None else _v2_reply(*answer)

    async def _predict(self, scope: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        await self._serve(scope, receive, send, path, _v1_target, self._answer_v1)

    async def _infer(self, scope: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        await self._serve(scope, receive, send, path, _v2_target, self._answer_v2)

    async def _serve(self, scope: dict[str, Any], receive: Any, send: Any, path: str, target: Any, answer: Any) -> None:
        """Admission, deadline, counting and error mapping around one prediction request.

        Over the concurrency cap the answer is 503 at once (the body is not even read).
        The deadline runs from here: reading the body and predicting both count."""
        counts = self.gateway.requests
        label = UNKNOWN_MODEL
        self.gateway.in_flight += 1
        try:
            deadline = time.monotonic() + self.request_timeout
            model = self.gateway.model_registry.get(*target(path))
            label = model.name
            if self.gateway.in_flight > self.max_concurrency:
                raise OverloadedError(
                    f"the server is at its limit of {self.max_concurrency} prediction requests in progress; retry shortly"
                )
            body = await self._body(scope, receive)
            content, headers = await answer(scope, model, body, deadline)
        except Exception as exc:  # every failure is a problem+json answer, as in Litestar
            counts.add(label, reason_of(exc))
            return await _problem(send, exc, path)
        finally:
            self.gateway.in_flight -= 1
        counts.add(label, "ok")
        await _send(send, 200, self._closing(headers), content)

    async def _answer_v1(
        self, scope: dict[str, Any], model: Any, body: bytes, deadline: float
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        return await answer_v1(self.gateway, model, body, deadline), _JSON

    async def _answer_v2(
        self, scope: dict[str, Any], model: Any, body: bytes, deadline: float
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        header = _header(scope, b"inference-header-content-length")
        return _v2_reply(*await answer_v2(self.gateway, model, body, header, deadline))

    async def _body(self, scope: dict[str, Any], receive: Any) -> bytes:
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLargeError(f"the body is {declared} bytes; the limit is {self.max_body}")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLargeError(f"the body is over the limit of {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _v1_target(path: str) -> tuple[str, int | None]:
    return v1_target(path[len(V1_PREFIX) :])


def _v2_target(path: str) -> tuple[str, int | None]:
    return v2_target(path[len(V2_PREFIX) : -len("/infer")])


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    return _find(scope["headers"], name)


def _find(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _v2_reply(content: bytes, header_length: int | None) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    if header_length is None:
        return content, _JSON
    return content, [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(header_length).encode()),
    ]


def _problem_headers(extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        *((k.lower().encode(), v.encode()) for k, v in extra.items()),
    ]


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _problem(send: Any, exc: Exception, path: str) -> None:
    if isinstance(exc, ConnectionError):
        return  # nobody to answer
    status, body, headers = problem_parts(exc, path, "POST")
    await _send(send, status, _problem_headers(headers), body)
