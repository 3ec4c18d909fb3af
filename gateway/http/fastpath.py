"""The raw ASGI front: the hot endpoints without Litestar; everything else goes to Litestar.

Prediction requests (the route table's ``HOT_ROUTES``, ``gateway.http.routes``), the two
health probes and ``/metrics`` are answered here, without Litestar's routing, signature
parsing and response machinery (about 60 us of a one-row request on these machines, more
than the guards, transform and inference together). A prediction goes to the dispatcher
(``gateway.dispatch``), which admits, schedules and counts it; this module reads its body
(refused with 413 as soon as it passes the limit, or at once when ``Content-Length`` says
it will), maps a failure to problem+json with the one ``problem_parts``, and asks a
keep-alive client to go elsewhere while the server drains. Health probes are never refused.

Every path is matched in its canonical spelling (``routes.canonical``), and Litestar is
handed that spelling: a doubled or trailing slash cannot make a request take another way.
With an admin listener (``--admin-port``), each listener answers only its own endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST

from gateway.codecs import header
from gateway.errors import NotOnThisListenerError, PayloadTooLargeError
from gateway.http.admin import log_refused
from gateway.http.health import LIVE, NOT_READY, READY
from gateway.http.problems import PROBLEM_MEDIA_TYPE, problem_parts
from gateway.http.routes import PROBES, HotRoute, Target, canonical, hot_route, is_admin_route, is_probe
from gateway.lifecycle import Gateway
from gateway.monitoring.exposition import SEND_CHUNK_BYTES, render_metrics

if TYPE_CHECKING:
    from gateway.codecs import Headers

__all__ = ["FastPath", "Reply"]

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
"""An answer computed at once: status, headers (without content-length), body."""

_JSON = [(b"content-type", b"application/json")]
_METRICS = [(b"content-type", CONTENT_TYPE_LATEST.encode())]


class FastPath:
    """Wraps the Litestar ASGI app (see the module docstring)."""

    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.dispatcher = gateway.dispatcher
        self.max_body = gateway.settings.max_body_bytes
        self.admin_port = gateway.settings.admin_port
        """The admin listener's port (``gateway.listeners``), or None: one listener for all."""

    def on_admin_listener(self, local: tuple[Any, ...] | None) -> bool:
        """True if a connection's local address (``scope["server"]``, the socket's name) is
        the admin listener's."""
        return self.admin_port is not None and local is not None and local[1] == self.admin_port

    def on_its_listener(self, local: tuple[Any, ...] | None, method: str, path: str) -> bool:
        """With an admin listener, the admin endpoints are served only there, and there
        nothing else but the health probes (``path``: canonical)."""
        if self.admin_port is None:
            return True
        if self.on_admin_listener(local):
            return is_admin_route(method, path) or is_probe(method, path)
        return not is_admin_route(method, path)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            path = scope["path"] = canonical(scope["path"])  # Litestar routes this spelling too
            if not self.on_its_listener(scope.get("server"), method, path):
                refusal = NotOnThisListenerError("no such endpoint on this listener")
                if is_admin_route(method, path):
                    log_refused(method, path, scope.get("client"), refusal)
                return await _problem(send, refusal, path)
            hot = hot_route(method, path)
            if hot is not None:
                return await self._serve(scope, receive, send, path, *hot)
            if method == "GET" and path in PROBES:
                return await self._probe(send, PROBES[path], scope["headers"])
        await self.app(scope, receive, send)

    async def _probe(self, send: Any, probe: str, headers: Headers) -> None:
        if probe == "live":
            return await _send(send, 200, _JSON, LIVE)
        if probe == "ready":
            if self.gateway.ready:
                return await _send(send, 200, _JSON, READY)
            return await _send(send, 503, [*_JSON, (b"retry-after", b"1")], NOT_READY)
        # here, not in Litestar, which appends a second charset
        packed = accepts_gzip(headers)
        body = await render_metrics(self.gateway, compressed=packed)
        return await _send_in_pieces(send, [*_METRICS, *_GZIP] if packed else _METRICS, body)

    def _closing(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """While draining, tell keep-alive clients this connection ends with this answer,
        so their next request goes elsewhere instead of meeting a reset."""
        return [*headers, (b"connection", b"close")] if self.gateway.draining else headers

    def answer_now(self, path: str, route: HotRoute, target: Target, headers: Headers, body: bytes) -> Reply | None:
        """The whole answer to a prediction request whose body has arrived, computed now on
        the event loop's thread, or None when it has to wait (a batch, a worker thread) and
        must take the ASGI route (``__call__``), which then answers it in full (nothing was
        counted here). The HTTP protocol calls this straight from the parser's callback
        (``gateway.http.protocol``): no task, no ASGI messages, one write."""
        try:
            answer = self.dispatcher.answer_now(route.codec, target.name, target.version, headers, body)
        except Exception as exc:  # noqa: BLE001 - every failure is a problem+json answer, as in Litestar
            status, content, extra = problem_parts(exc, path, "POST")
            return status, self._closing(_problem_headers(extra)), content
        if answer is None:
            return None
        return 200, self._closing(answer[1]), answer[0]

    def refused(self, target: Target, exc: Exception) -> None:
        """Count a prediction request the HTTP protocol answered (or dropped) itself, with
        the reason ``exc`` gives (``ConnectionError``: its body never arrived in full)."""
        self.dispatcher.refused(target.name, target.version, exc)

    async def _serve(
        self, scope: dict[str, Any], receive: Any, send: Any, path: str, route: HotRoute, target: Target
    ) -> None:
        """One prediction request through the dispatcher. Over the concurrency cap the
        answer is 503 at once (the body is not even read); the deadline counts the body."""
        headers = scope["headers"]
        try:
            content, answer_headers = await self.dispatcher.answer(
                route.codec, target.name, target.version, headers, lambda: self._body(headers, receive)
            )
        except Exception as exc:  # noqa: BLE001 - every failure is a problem+json answer, as in Litestar
            return await _problem(send, exc, path)
        await _send(send, 200, self._closing(answer_headers), content)

    async def _body(self, headers: Headers, receive: Any) -> bytes:
        declared = header(headers, b"content-length")
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


_GZIP = [(b"content-encoding", b"gzip"), (b"vary", b"accept-encoding")]


def accepts_gzip(headers: Headers) -> bool:
    """The request's ``Accept-Encoding`` names gzip (and not with ``q=0``)."""
    for name, value in headers:
        if name.lower() == b"accept-encoding":
            for item in value.lower().split(b","):
                coding, _, params = item.strip().partition(b";")
                if coding.strip() in (b"gzip", b"*") and params.replace(b" ", b"") not in (b"q=0", b"q=0.0", b"q=0.00", b"q=0.000"):
                    return True
    return False


async def _send_in_pieces(send: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """``_send``, the body in ``SEND_CHUNK_BYTES`` pieces: each ``send`` waits while the
    transport's buffer is full, so a large body never occupies the event loop at once."""
    await send({"type": "http.response.start", "status": 200, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    view = memoryview(body)
    for start in range(0, max(len(body), 1), SEND_CHUNK_BYTES):
        end = start + SEND_CHUNK_BYTES
        await send({"type": "http.response.body", "body": bytes(view[start:end]), "more_body": end < len(body)})


async def _problem(send: Any, exc: Exception, path: str) -> None:
    if isinstance(exc, ConnectionError):
        return  # nobody to answer
    status, body, headers = problem_parts(exc, path, "POST")
    await _send(send, status, _problem_headers(headers), body)
