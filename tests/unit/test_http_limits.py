"""The connection limits as plain code (``gateway.http.limits``): request heads fed as bytes
through httptools' parser, deadlines on a fake clock, the body budget, and the canned
answers, which are the error tree's problem+json."""

from __future__ import annotations

from typing import Any

import httptools
import msgspec
import pytest

from gateway.errors import HeaderFieldsTooLargeError, OverloadedError, PayloadError, RequestTimeoutError
from gateway.http.limits import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    RAW_SLACK,
    BodyBudget,
    Deadlines,
    HeadLimits,
    HeadTooLarge,
    canned,
)


class Head(HeadLimits):
    """What the parser calls back, as uvicorn's protocol holds it."""

    def __init__(self) -> None:
        self.url, self.headers, self.expect_100_continue = b"", [], False
        self.complete = False

    def on_message_begin(self) -> None:
        self.begin_head()

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.complete = True


def feed(*chunks: bytes) -> Head:
    head = Head()
    parser = httptools.HttpRequestParser(head)
    for chunk in chunks:
        parser.feed_data(chunk)
    return head


def test_a_head_within_the_limits_is_read_as_uvicorn_reads_it() -> None:
    head = feed(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nX-Pad: a  \t\r\n\r\n")
    assert head.complete and head.url == b"/v1/models/m:predict"
    assert head.headers == [(b"host", b"x"), (b"expect", b"100-continue"), (b"x-pad", b"a")]
    assert head.expect_100_continue and head.head_refused is None


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"GET /" + b"a" * MAX_HEAD_BYTES + b" HTTP/1.1\r\n\r\n", "bytes"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: " + b"b" * (MAX_HEAD_BYTES // 2) + b"\r\nX-B: " + b"c" * (MAX_HEAD_BYTES // 2) + b"\r\n\r\n", "bytes"),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n", "header fields"),
    ],
    ids=["long-url", "long-fields", "many-fields"],
)
def test_a_head_over_the_limits_stops_the_parser_with_a_431(head: bytes, why: str) -> None:
    with pytest.raises(httptools.HttpParserError) as stopped:
        feed(head)
    assert isinstance(stopped.value.__context__, HeadTooLarge)
    error = stopped.value.__context__.error
    assert isinstance(error, HeaderFieldsTooLargeError) and why in str(error)


def test_a_head_exactly_at_the_limits_is_read() -> None:
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS))
    assert feed(b"GET / HTTP/1.1\r\n" + fields + b"\r\n").complete


def test_an_endless_line_is_refused_by_the_raw_count_before_the_parser_sees_its_end() -> None:
    head = Head()
    head.begin_head()
    chunk = 64 * 1024
    reads = 0
    while not head.count_raw(chunk):
        reads += 1
    assert reads * chunk <= MAX_HEAD_BYTES + RAW_SLACK < (reads + 1) * chunk
    assert isinstance(head.head_refused, HeaderFieldsTooLargeError)


class FakeLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Any, FakeTimer]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> FakeTimer:
        timer = FakeTimer()
        self.timers.append((when, callback, timer))
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t[0] <= self.now and not t[2].cancelled]
        self.timers = [t for t in self.timers if t not in due]
        for _, callback, _ in due:
            callback()


class FakeTimer:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Connection(Deadlines):
    def __init__(self) -> None:
        self.loop = FakeLoop()
        self.expired: list[tuple[float, str]] = []

    def _expire(self, what: str) -> None:
        self.expired.append((self.loop.now, what))


def test_a_deadline_expires_once_when_it_passes() -> None:
    c = Connection()
    c._arm(10.0, "head")
    c.loop.advance(9.9)
    assert c.expired == []
    c.loop.advance(0.2)
    assert c.expired == [(10.1, "head")]
    c.loop.advance(100)
    assert len(c.expired) == 1


def test_a_later_deadline_reuses_the_timer_and_a_shorter_one_replaces_it() -> None:
    c = Connection()
    c._arm(10.0, "head")
    c.loop.advance(5.0)
    c._arm(30.0, "body")  # later: the pending timer re-arms itself when it fires
    assert len([t for t in c.loop.timers if not t[2].cancelled]) == 1
    c.loop.advance(6.0)
    assert c.expired == []
    c._arm(1.0, "idle")  # shorter than the timer's: a new timer
    c.loop.advance(1.0)
    assert c.expired == [(12.0, "idle")]


def test_a_disarmed_deadline_never_expires() -> None:
    c = Connection()
    c._arm(1.0, "body")
    c._disarm()
    c.loop.advance(5.0)
    assert c.expired == []


def test_the_body_budget_takes_what_fits_and_gives_it_back() -> None:
    budget = BodyBudget(100)
    assert budget.reserve(60) and not budget.reserve(41) and budget.reserve(40)
    budget.release(60)
    assert budget.used == 40 and budget.reserve(60)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (PayloadError("the request is not valid HTTP/1.1"), 400, "malformed-request"),
        (RequestTimeoutError("the request head did not arrive in time"), 408, "request-timeout"),
        (HeaderFieldsTooLargeError("the request head is over 65536 bytes"), 431, "header-fields-too-large"),
        (OverloadedError("the server is receiving 64 bytes of request bodies already"), 503, "overloaded"),
    ],
)
def test_canned_answers_are_the_error_trees_problem_json_and_close(error: Any, status: int, code: str) -> None:
    answer = canned(error)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} ")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["content-type"] == "application/problem+json" and fields["connection"] == "close"
    assert int(fields["content-length"]) == len(body)
    problem = msgspec.json.decode(body)
    assert problem["status"] == status and problem["code"] == code and problem["detail"] == str(error)
    assert ("retry-after" in fields) == (status == 503)
