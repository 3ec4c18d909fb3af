"""HTTP/1.1 connections: uvicorn's httptools protocol plus read deadlines and a direct path.

uvicorn's only timer is keep-alive (idle between requests, reset on every byte), so a
client that opens a connection and never sends a request, sends its head one byte every
few seconds (slowloris), or declares a body it never sends, holds a connection and its
buffers for ever. Here:

- the **head deadline** starts when the connection opens and again when a new request
  begins on a kept-alive connection; it ends when the head is complete;
- the **body deadline** starts when the head is complete; it ends when the body is.

When one passes, the client gets ``408`` (problem+json, ``Connection: close``) if no
answer has started yet, and the connection is closed. The application sees the request
as disconnected, as if the client had gone away.

The **direct path**: a prediction request (``POST`` to a V1 predict or V2 infer path,
HTTP/1.1, a declared ``Content-Length`` within the body limit, no ``Expect``) is answered
from the parser's own callback once its body has arrived: ``FastPath.answer_now`` computes
the reply and it goes out in one write, with no ASGI task, no ASGI messages and no keep-alive
timer created and cancelled. That is what uvicorn spends most of its time on for a
small request (measured: see ``bench/README.md``). A request the reply cannot be computed
for at once (a batched model, a batch expected to be slow) takes uvicorn's ASGI route from
there, its body already read, exactly as if it had come that way. So does any request
while the previous one on the connection is still being answered (pipelining keeps its
order), and any request while the client is not reading its answers (the transport's
write buffer is full: the ASGI route waits for it to drain).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.http.problems import PROBLEM_MEDIA_TYPE, problem_body

if TYPE_CHECKING:
    from gateway.http.fastpath import FastPath

__all__ = ["deadline_protocol"]

_CLOSE = (b"connection", b"close")


def _timeout_response(detail: str) -> bytes:
    body = problem_body(408, "request-timeout", "Request timeout", detail, "")
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\n"
        "connection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _DeadlineProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    direct: FastPath | None = None
    """Where direct-path requests are answered (None: every request takes the ASGI route)."""

    # the request on the direct path now: its path and the body read so far
    _direct_path: str | None = None
    _direct_chunks: list[bytes]
    _close_after: bool = False

    # One lazy timer per connection: arming a deadline only stores when it is due, and the
    # timer, when it fires, either expires the request or re-arms itself for the current
    # due time. A request therefore costs two clock reads, not two timers created and
    # cancelled (measured: about 3 us of a one-row prediction).
    _due: float | None = None
    _what: str = "head"
    _timer: asyncio.TimerHandle | None = None
    _timer_at: float = 0.0

    def _arm(self, seconds: float, what: str) -> None:
        due = self.loop.time() + seconds
        self._due, self._what = due, what
        if self._timer is not None and self._timer_at > due:
            self._timer.cancel()  # a shorter deadline than the one the timer waits for
            self._timer = None
        if self._timer is None:
            self._timer, self._timer_at = self.loop.call_at(due, self._check), due

    def _disarm(self) -> None:
        self._due = None

    def _check(self) -> None:
        self._timer = None
        due = self._due
        if due is None:
            return  # nothing pending: the next deadline armed starts a new timer
        if self.loop.time() < due:
            self._timer, self._timer_at = self.loop.call_at(due, self._check), due
            return
        self._due = None
        self._expire(self._what)

    def _expire(self, what: str) -> None:
        if self.transport.is_closing():
            return
        if what == "idle":  # keep-alive: nothing was asked for; close quietly, as uvicorn does
            self.transport.close()
            return
        if self._direct_path is not None:  # nothing of it has been answered
            self._abandon()
            self.transport.write(_timeout_response(f"the request {what} did not arrive in time"))
            self.transport.close()
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(_timeout_response(f"the request {what} did not arrive in time"))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.direct is not None and self.direct.on_admin_listener(transport.get_extra_info("sockname")):
            self.direct = None  # the admin listener answers no prediction: the ASGI route refuses them
        self._arm(self.header_timeout, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._direct_path is not None:
            self._abandon()
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._due is None or self._what == "idle":
            self._arm(self.header_timeout, "head")

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout, "body")
        path = self._direct_target()
        if path is None:
            super().on_headers_complete()
            return
        self._direct_path, self._direct_chunks = path, []

    def on_body(self, body: bytes) -> None:
        if self._direct_path is None:
            super().on_body(body)
        else:
            self._direct_chunks.append(body)

    def on_message_complete(self) -> None:
        self._disarm()
        path = self._direct_path
        if path is None:
            super().on_message_complete()
            return
        self._direct_path = None
        body = b"".join(self._direct_chunks)  # one chunk (the usual case) is not copied
        self._direct_chunks = []
        assert self.direct is not None
        reply = self.direct.answer_now(path, self.headers, body)
        if reply is None:  # it has to wait for something: the ASGI route, body in hand
            super().on_headers_complete()
            self.cycle.body, self.cycle.more_body = body, False
            self.cycle.keep_alive = self.cycle.keep_alive and not self._close_after
            self.cycle.message_event.set()
        else:
            self._write(*reply)

    def _abandon(self) -> None:
        """The request on the direct path will never be answered: count it, forget it."""
        path, self._direct_path, self._direct_chunks = self._direct_path, None, []
        if path is not None and self.direct is not None:
            self.direct.abandoned(path)

    def shutdown(self) -> None:
        if self._direct_path is None:
            super().shutdown()
        else:  # a request is arriving: answer it, then close
            self._close_after = True

    def _direct_target(self) -> str | None:
        """The path of a request for the direct path (see the module docstring), else None."""
        if self.direct is None or self.parser.get_method() != b"POST" or self.expect_100_continue:
            return None
        if self.parser.should_upgrade():  # uvicorn's own handling (websocket, or a warning)
            return None
        if self.parser.get_http_version() != "1.1" or self.pipeline or self.flow.write_paused:
            return None
        if self.transport.is_closing():
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            return None
        try:
            path = httptools.parse_url(self.url).path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return None
        if "%" in path or not self.direct.predicts(path):
            return None
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return None
                length = int(value)
            elif name == b"transfer-encoding":
                return None
        if length is None or length > self.direct.max_body:
            return None
        return path

    def _write(self, status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        """The whole answer in one write; then keep the connection or close it."""
        keep_alive = self.parser.should_keep_alive() and not self._close_after and _CLOSE not in headers
        parts = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"content-length: %d\r\n" % len(content))
        if not keep_alive and _CLOSE not in headers:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", content)
        self.transport.write(b"".join(parts))
        self.server_state.total_requests += 1
        if keep_alive:
            self._arm(self.timeout_keep_alive, "idle")
        else:
            self.transport.close()


def deadline_protocol(
    header_timeout: float, body_timeout: float, direct: FastPath | None = None
) -> type[HttpToolsProtocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)``; ``direct`` answers the
    direct path's requests (None: all take the ASGI route)."""
    return type(
        "DeadlineProtocol",
        (_DeadlineProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout, "direct": direct},
    )
