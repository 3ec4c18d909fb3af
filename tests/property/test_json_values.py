"""The JSON value count that decides a 413 before decoding (``gateway.protocol.json_values``).

Properties, for any JSON text (strings full of quotes, backslashes, commas and brackets
included, escaped or not): the count is exactly the one defined from the decoded value;
the quick count over the raw bytes is never below it; and ``refuse_many_values`` refuses
exactly the bodies whose count is over the limit, so a string can never get a body refused.
The scan goes a chunk at a time, carrying whether it is inside a string: a tiny chunk size
makes every body cross many chunk boundaries.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import PayloadTooLargeError
from gateway.protocol import json_values as jv

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
"""The chunk fixture sets one module constant for every example: nothing to reset."""

TRICKY = st.text(alphabet=st.sampled_from(list('",[{}]:\\ab\n\u00e9')), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=25,
)


def expected(value: Any) -> int:
    """The count defined from the value: 1, plus per array 1 and its commas, per object
    ``OBJECT`` and its commas, over every array and object inside."""

    def inner(v: Any) -> int:
        if isinstance(v, list):
            return 1 + max(len(v) - 1, 0) + sum(map(inner, v))
        if isinstance(v, dict):
            return jv.OBJECT + max(len(v) - 1, 0) + sum(map(inner, v.values()))
        return 0

    return 1 + inner(value)


def texts(value: Any) -> list[bytes]:
    """The value as clients write it: compact or spaced, escaped to ASCII or UTF-8."""
    return [
        json.dumps(value).encode(),
        json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(),
    ]


@pytest.fixture(params=[jv._CHUNK, 3, 7], ids=["1MiB", "3", "7"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(jv, "_CHUNK", request.param)
    return int(request.param)


@FAST
@given(value=JSON)
def test_the_count_is_exact_and_the_quick_count_never_below_it(chunk: int, value: Any) -> None:
    for text in texts(value):
        assert jv.json_values(text) == expected(value), text
        assert jv._anywhere(text) >= expected(value), text
        assert jv._anywhere(memoryview(text)) == jv._anywhere(text)


@FAST
@given(value=JSON, limit=st.integers(min_value=1, max_value=200))
def test_a_body_is_refused_exactly_when_its_count_is_over_the_limit(chunk: int, value: Any, limit: int) -> None:
    for text in texts(value):
        for body in (text, memoryview(text)):
            if expected(value) > limit:
                with pytest.raises(PayloadTooLargeError, match=f"at most {limit:,} are read"):
                    jv.refuse_many_values(body, limit, "test")
            else:
                jv.refuse_many_values(body, limit, "test")


def test_escaped_quotes_and_backslashes_do_not_end_a_string() -> None:
    assert jv.json_values(rb'["a\"b,c", "d\\", "e\\\"f,[{"]') == 1 + 1 + 2
    assert jv.json_values(rb'{"k\\":[1,2]}') == 1 + jv.OBJECT + 1 + 1
