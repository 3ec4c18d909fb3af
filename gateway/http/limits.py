"""What a connection may cost before it is answered: head limits, read deadlines, the body
budget, and the answers that refuse what passes them. Plain code: no uvicorn, no sockets.

``gateway.http.protocol`` is the thin uvicorn subclass that wires these into the parser's
callbacks and the event loop; unit tests drive them with bytes through ``httptools`` and a
fake clock (``tests/unit/test_http_limits.py``).

- ``HeadLimits``: the request head (request line and header fields) is bounded in bytes
  (``MAX_HEAD_BYTES``) and in fields (``MAX_HEADERS``); past either the parser is stopped
  (``HeadTooLarge``) and the answer is 431.
- ``Deadlines``: one lazy timer per connection. A deadline is armed for the head (from the
  connection or the previous answer), the body (from the end of the head), or the idle
  keep-alive; when it passes, ``_expire(what)`` is called once.
- ``BodyBudget``: the bytes of request bodies being received at once in the process.
- ``canned``: a whole HTTP answer for an error of the one tree (``gateway.errors``), in the
  problem+json every other refusal has, closing the connection.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Protocol

from gateway.errors import GatewayError, HeaderFieldsTooLargeError
from gateway.http.problems import PROBLEM_MEDIA_TYPE, problem_parts

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "RAW_SLACK",
    "BodyBudget",
    "Deadlines",
    "HeadLimits",
    "HeadTooLarge",
    "canned",
]

MAX_HEAD_BYTES = 64 * 1024
"""Largest request head (request line and header fields, as the parser delivers them);
one more byte is answered 431. nginx allows 32 KiB by default, Node.js 16 KiB: no client
of a model server sends more, and without a cap a head is buffered (and its fragments
concatenated) for as long as the head deadline lets it grow."""
MAX_HEADERS = 256
"""Most header fields in one request; one more is answered 431."""
RAW_SLACK = 512 * 1024
"""Bytes received while a head is incomplete are counted per read, not per parsed byte,
so that count may include the end of the previous request (pipelining) and one read of
up to 256 KiB: a head is refused on it only past ``MAX_HEAD_BYTES`` plus this slack. It
stops a single endless header line, which the parser buffers before any callback sees it."""

def canned(error: GatewayError) -> bytes:
    """The whole answer refusing a request with ``error``, closing the connection: its
    status line, problem+json (the same body ``problem_parts`` gives every error), the
    error's own headers (``Retry-After`` for a 503) and ``Connection: close``."""
    status, body, headers = problem_parts(error, "")
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"content-type: {PROBLEM_MEDIA_TYPE}", "connection: close"]
    lines += [f"{name.lower()}: {value}" for name, value in headers.items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limits; carries the
    ``HeaderFieldsTooLargeError`` to answer with."""

    def __init__(self, error: HeaderFieldsTooLargeError) -> None:
        super().__init__(str(error))
        self.error = error


class HeadLimits:
    """The parser callbacks that read a request head (``on_url``, ``on_header``), with its
    size and field count checked as it grows. A mixin for the class the parser calls back:
    that class holds ``url`` (bytes so far), ``headers`` (list of (name, value)) and
    ``expect_100_continue``, as uvicorn's protocol does, and calls ``begin_head`` at each
    message's start and ``count_raw`` for each read while ``in_head``.

    ``on_url`` and ``on_header`` do uvicorn's own work inline (they run for every header of
    every request: a call more each costs measurably)."""

    url: bytes
    headers: list[tuple[bytes, bytes]]
    expect_100_continue: bool
    in_head: bool = True
    head_bytes: int = 0
    """Bytes of header fields parsed so far (each name and value, and 4 for ': ' and CRLF)."""
    head_raw: int = 0
    """Bytes received since the head began (see ``RAW_SLACK``)."""
    head_refused: HeaderFieldsTooLargeError | None = None

    def begin_head(self) -> None:
        self.in_head, self.head_bytes, self.head_raw, self.head_refused = True, 0, 0, None

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) + self.head_bytes > MAX_HEAD_BYTES:
            self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace, which RFC 9110 excludes
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))
        if self.head_bytes + len(self.url) > MAX_HEAD_BYTES or len(self.headers) > MAX_HEADERS:
            self._head_too_large()

    def count_raw(self, received: int) -> bool:
        """Count a read received while the head is incomplete; True once the head is too
        large by that count (``head_refused`` then says why)."""
        self.head_raw += received
        if self.head_raw > MAX_HEAD_BYTES + RAW_SLACK:
            self.head_refused = HeaderFieldsTooLargeError(f"the request head is over {MAX_HEAD_BYTES} bytes")
            return True
        return False

    def _head_too_large(self) -> None:
        if len(self.headers) > MAX_HEADERS:
            self.head_refused = HeaderFieldsTooLargeError(f"the request has over {MAX_HEADERS} header fields")
        else:
            self.head_refused = HeaderFieldsTooLargeError(f"the request head is over {MAX_HEAD_BYTES} bytes")
        raise HeadTooLarge(self.head_refused)  # the parser stops; the caller answers 431


class Clock(Protocol):
    """What ``Deadlines`` needs of an event loop (``asyncio`` loops are one)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Any, /) -> Any: ...


class Deadlines:
    """One lazy timer for a connection's read deadlines. A mixin: the class holds ``loop``
    (a ``Clock``) and implements ``_expire(what)``.

    Arming a deadline only stores when it is due; the timer, when it fires, either expires
    the request or re-arms itself for the current due time. A request therefore costs two
    clock reads, not two timers created and cancelled (measured: about 3 us of a one-row
    prediction)."""

    loop: Any
    """A ``Clock``: the connection's event loop, or a test's fake."""
    _due: float | None = None
    _what: str = "head"
    _timer: Any = None
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

    def _stop_timer(self) -> None:
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

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
        raise NotImplementedError


class BodyBudget:
    """Bytes of request bodies being received at once, over every connection of the process.

    A body is read whole before it is decoded, and the concurrency cap counts a request only
    from then on: without a budget, N clients uploading N bodies at once cost N bodies of
    memory whatever the cap. A ``POST`` whose declared ``Content-Length`` does not fit is
    answered 503 with ``Retry-After`` at once, its body never read; the bytes are given
    back when the body is in (or the connection ends)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, declared: int) -> bool:
        """Take ``declared`` bytes if they fit (True), else take nothing (False)."""
        if self.used + declared > self.limit:
            return False
        self.used += declared
        return True

    def release(self, taken: int) -> None:
        self.used -= taken
