"""Read deadlines for HTTP/1.1 connections: uvicorn's httptools protocol plus two timers.

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
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.http.problems import PROBLEM_MEDIA_TYPE, problem_body

__all__ = ["deadline_protocol"]


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

    _deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
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
        self._arm(self.header_timeout, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.header_timeout, "head")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout, "body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def deadline_protocol(header_timeout: float, body_timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)``."""
    return type("DeadlineProtocol", (_DeadlineProtocol,), {"header_timeout": header_timeout, "body_timeout": body_timeout})
