"""HTTP/1.1 connections: uvicorn's httptools protocol plus read deadlines and a direct path.

A thin subclass: the limits themselves (head size, read deadlines, the body budget, the
answers that refuse) are plain code in ``gateway.http.limits``; this module wires them into
uvicorn's parser callbacks and the event loop, and adds the direct path.

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

The head is bounded in size too (``MAX_HEAD_BYTES``, ``MAX_HEADERS``): one over is
answered ``431``, and whatever the parser cannot read ``400``, both problem+json (uvicorn
answers plain text). Such an answer is followed by a lingering close: the client's
remaining bytes are read and dropped for a moment, so that it reads the answer instead of
a connection reset.

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

from gateway.errors import OverloadedError, PayloadError, RequestTimeoutError
from gateway.http.limits import BodyBudget, Deadlines, HeadLimits, HeadTooLarge, canned
from gateway.http.routes import HotRoute, Target, canonical, hot_route

if TYPE_CHECKING:
    from gateway.http.fastpath import FastPath

__all__ = ["BodyBudget", "deadline_protocol"]

_CLOSE = (b"connection", b"close")


LINGER_SECONDS = 2.0
"""How long a refused request's remaining bytes are read and dropped before the close."""


MAX_PIPELINED = 16
"""Requests queued on one connection behind the one being answered. Each costs uvicorn a
request cycle (about 2.4 KB), and one read of 256 KiB can hold thousands of small pipelined
requests: past the limit the queued ones are answered and the connection then closed,
which HTTP/1.1 lets a server do (the client sends the rest again on a new connection)."""


class _PipelineFull(Exception):
    """Raised from a parser callback to stop parsing past ``MAX_PIPELINED`` queued requests."""


class _OverBudget(Exception):
    """Raised from a parser callback to stop a request whose body does not fit the budget."""


class _DeadlineProtocol(HeadLimits, Deadlines, HttpToolsProtocol):  # the mixins' callbacks first
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    direct: FastPath | None = None
    """Where direct-path requests are answered (None: every request takes the ASGI route)."""
    budget: BodyBudget | None = None
    """The process's budget of body bytes being received (None: unbounded)."""
    _reserved: int = 0
    """Bytes of ``budget`` this connection's request body holds now."""

    # the request on the direct path now: its path, its route and target, the body read so far
    _direct_path: str | None = None
    _direct_hot: tuple[HotRoute, Target]
    _direct_chunks: list[bytes]
    _close_after: bool = False

    _lingering: bool = False
    _input_closed: bool = False
    """Past the pipelining limit: what the client sends next is dropped."""
    _cycles: list[Any]
    """uvicorn's request cycles of this connection not known to be complete."""
    _write_timer: asyncio.TimerHandle | None = None
    write_timeout: float = 30.0

    def _expire(self, what: str) -> None:
        if self.transport.is_closing():
            return
        if what == "idle":  # keep-alive: nothing was asked for; close quietly, as uvicorn does
            self._close_or_abort()
            return
        # answers already waiting in the write buffer: the client is not reading them, and a
        # close would wait for them for ever (it flushes first); drop them with the connection
        stalled = self.transport.get_write_buffer_size() > 0
        if self._direct_path is not None:  # nothing of it has been answered
            self._abandon()
        elif self.cycle is not None and self.cycle.response_started:
            stalled = True  # an answer is under way: no 408 in the middle of it
        if stalled:
            self._abort()
            return
        self.transport.write(canned(RequestTimeoutError(f"the request {what} did not arrive in time")))
        self._disconnect_cycles()
        self._close_or_abort()  # should even the 408 not go out at once, nobody is reading

    def _disconnect_cycles(self) -> None:
        """Every request of this connection still being answered or queued sees its client
        gone (uvicorn marks only the newest, so the one being answered would write to a
        closed transport and log an error)."""
        for cycle in self._cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self._cycles.clear()

    def pause_writing(self) -> None:
        """The client takes its answers slower than they are written: it has ``write_timeout``
        to take the buffered part, or the connection is dropped (a reader that stops reading
        would otherwise hold it, and the answers, for ever)."""
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def _write_stalled(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing() or self.transport.get_write_buffer_size() > 0:
            if self._direct_path is not None:
                self._abandon()
            self._abort()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._cycles = []
        if self.direct is not None and self.direct.on_admin_listener(transport.get_extra_info("sockname")):
            self.direct = None  # the admin listener answers no prediction: the ASGI route refuses them
        self._arm(self.header_timeout, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._direct_path is not None:
            self._abandon()
        self._stop_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._release()
        self._disconnect_cycles()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._input_closed:
            return  # the rest of a refused request, or past the pipelining limit: dropped
        # uvicorn's data_received, but telling the parser's stops that are this class's own
        # (a head over the limits, too many pipelined requests) from malformed input
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _PipelineFull):
                self._input_closed = True  # the queued requests are answered, then the close
                return
            if isinstance(exc.__context__, _OverBudget):
                self._refuse_over_budget()
                return
            if not isinstance(exc.__context__, HeadTooLarge):
                self.logger.warning("Invalid HTTP request received.")
            self._refuse_head()
            return
        if self.in_head and not self.transport.is_closing() and self.count_raw(len(data)):
            self._refuse_head()

    def _refuse_head(self) -> None:
        answer = canned(self.head_refused or PayloadError("the request is not valid HTTP/1.1"))
        if self._direct_path is not None:  # a direct-path body the parser refused mid-way
            self._abandon()
        under_way = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
        self._disconnect_cycles()  # an application waiting for a body sees the client gone
        if under_way:
            self._close_or_abort()  # an answer is under way: no second one on this connection
            return
        self.transport.write(answer)
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close after an answer sent while the client may still be sending: a close with
        unread data makes the kernel reset the connection, and the client would see the
        reset, not the answer. So the answer goes, the sending side is shut, and what the
        client still sends is read and dropped until it closes or ``LINGER_SECONDS`` pass."""
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self._close_or_abort)

    def timeout_keep_alive_handler(self) -> None:
        """uvicorn's keep-alive expiry (after an answer on the ASGI route), with the same
        care for answers the client never took."""
        if not self.transport.is_closing():
            self._close_or_abort()

    def _close_or_abort(self) -> None:
        """Close; but with answers still unsent (the client does not read), drop them: a
        close would wait for them to be taken."""
        if self.transport.get_write_buffer_size() > 0:
            self._abort()
        else:
            self.transport.close()

    def _abort(self) -> None:
        """Drop the connection and whatever it has not sent; its requests see the client gone."""
        self._disconnect_cycles()
        self.transport.abort()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.begin_head()
        if self._due is None or self._what == "idle":
            self._arm(self.header_timeout, "head")

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._arm(self.body_timeout, "body")
        length = self._body_length() if self.parser.get_method() == b"POST" else None
        if self.budget is not None and length:
            self._reserve(self.budget, length)
        direct = self._direct_target(length)
        if direct is None:
            self._start_cycle()
            return
        self._direct_path, self._direct_hot, self._direct_chunks = direct[0], direct[1], []

    def _body_length(self) -> int | None:
        """The request's one declared ``Content-Length``; None with none, several, a bad one,
        or a chunked body."""
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return None
                length = int(value)
            elif name == b"transfer-encoding":
                return None
        return length

    def _reserve(self, budget: BodyBudget, declared: int) -> None:
        """Take the declared body's bytes from the budget, or stop the request (503)."""
        if self.direct is not None and declared > self.direct.max_body:
            return  # refused at once as too large, never read
        if not budget.reserve(declared):
            raise _OverBudget
        self._reserved = declared

    def _release(self) -> None:
        if self._reserved and self.budget is not None:
            self.budget.release(self._reserved)
            self._reserved = 0

    def _refuse_over_budget(self) -> None:
        assert self.budget is not None
        detail = f"the server is receiving {self.budget.limit} bytes of request bodies already; retry shortly"
        path = canonical(self.url.split(b"?", 1)[0].decode("latin-1"))
        hot = hot_route("POST", path)
        refusal = OverloadedError(detail)
        if self.direct is not None and hot is not None:
            self.direct.refused(hot[1], refusal)
        self.transport.write(canned(refusal))
        self._close_lingering()

    def _start_cycle(self) -> None:
        """uvicorn's request cycle for the ASGI route; at most ``MAX_PIPELINED`` queued
        behind the one being answered (see ``MAX_PIPELINED``)."""
        if len(self.pipeline) >= MAX_PIPELINED:
            if self.cycle is not None:
                self.cycle.keep_alive = False  # the last queued answer closes the connection
            raise _PipelineFull
        super().on_headers_complete()
        if self.cycle is not None:
            self._cycles = [c for c in self._cycles if not c.response_complete]
            self._cycles.append(self.cycle)
            self.cycle.transport = _CycleTransport(self, self.cycle)  # type: ignore[assignment]  # duck-typed

    def close_after_answer(self, cycle: Any) -> None:
        """uvicorn closes the connection after an answer that ends it (``Connection: close``);
        when the request's body has not all arrived (an answer before it was read: a 405, a
        404), that close would reset the connection under the client's feet, and it could
        lose the answer: close lingering instead."""
        if cycle.more_body and not self.transport.is_closing():
            self.flow.resume_reading()  # the rest is read (and dropped), not left in the kernel
            self._close_lingering()
        else:
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        if self._direct_path is None:
            super().on_body(body)
        else:
            self._direct_chunks.append(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._release()  # the body is in: from here the concurrency cap and the deadline bound it
        path = self._direct_path
        if path is None:
            super().on_message_complete()
            return
        self._direct_path = None
        body = b"".join(self._direct_chunks)  # one chunk (the usual case) is not copied
        self._direct_chunks = []
        assert self.direct is not None
        reply = self.direct.answer_now(path, *self._direct_hot, self.headers, body)
        if reply is None:  # it has to wait for something: the ASGI route, body in hand
            self._start_cycle()
            self.cycle.body, self.cycle.more_body = body, False  # type: ignore[assignment]  # handed on as is: no copy
            self.cycle.keep_alive = self.cycle.keep_alive and not self._close_after
            self.cycle.message_event.set()
        else:
            self._write(*reply)

    def _abandon(self) -> None:
        """The request on the direct path will never be answered: count it, forget it."""
        path, self._direct_path, self._direct_chunks = self._direct_path, None, []
        if path is not None and self.direct is not None:
            self.direct.refused(self._direct_hot[1], ConnectionError("the client went away"))

    def shutdown(self) -> None:
        if self._direct_path is None:
            super().shutdown()
        else:  # a request is arriving: answer it, then close
            self._close_after = True

    def _direct_target(self, length: int | None) -> tuple[str, tuple[HotRoute, Target]] | None:
        """The canonical path and the route of a request for the direct path (see the module
        docstring), else None; ``length``: its declared body length (``_body_length``)."""
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
        if "%" in path or length is None or length > self.direct.max_body:
            return None
        path = canonical(path)
        hot = hot_route("POST", path)
        return None if hot is None else (path, hot)

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


class _CycleTransport:
    """The transport as one uvicorn request cycle sees it: the same, but its ``close``
    is the protocol's ``close_after_answer``."""

    __slots__ = ("_cycle", "_protocol", "_transport")

    def __init__(self, protocol: _DeadlineProtocol, cycle: Any) -> None:
        self._protocol, self._cycle, self._transport = protocol, cycle, protocol.transport

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def close(self) -> None:
        self._protocol.close_after_answer(self._cycle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def deadline_protocol(
    header_timeout: float,
    body_timeout: float,
    direct: FastPath | None = None,
    body_budget: int | None = None,
) -> type[HttpToolsProtocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)``; ``direct`` answers the
    direct path's requests (None: all take the ASGI route); ``body_budget``: the bytes of
    request bodies this process receives at once (``BodyBudget``; None: unbounded)."""
    return type(
        "DeadlineProtocol",
        (_DeadlineProtocol,),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "write_timeout": body_timeout,
            "direct": direct,
            "budget": BodyBudget(body_budget) if body_budget is not None else None,
        },
    )
