"""Refusing a JSON body that would cost far more memory than any valid request, before decoding it.

Decoding JSON into Python objects costs far more memory than the text: ``[]`` is 2 bytes of
body and a list about 90 bytes of memory, ``{"a":`` 5 bytes and a dict about 200 (and 200
more when the duplicate-key check has to decode the body again). A 16 MiB body of such
values held the server at 400 to 800 MiB while msgspec built them, before any limit could
look at the result (``bench/memory_amplification.py``). So the values are counted first,
and a body over the caller's limit is refused (413) without being decoded.

The count is of the values JSON text can make, an object counting as ``OBJECT`` of them
(what a dict costs beside a list or a float): one, plus one for each comma and opening
bracket, plus ``OBJECT`` for each opening brace, outside strings. Every value is the whole
text, the first member of an array or object, or follows a comma, so the count is at least
the number of values, and a limit on it bounds the objects a decode can build (about 100
bytes of memory each at most, measured). Counting those bytes anywhere in the body (numpy,
about 0.4 ms a MiB) gives a number that can only be too high; only when that is over the
limit are strings skipped, for the exact count, so strings full of commas never get a body
refused that the limit allows. Valid JSON counts at most two a byte (``{}``), and a decoder
builds nothing past the first byte that is not valid JSON, so a body shorter than half the
limit is not counted at all.
"""

from __future__ import annotations

import numpy as np

from gateway.errors import PayloadTooLargeError

__all__ = ["OBJECT", "json_values", "refuse_many_values"]

OBJECT = 4
"""What an object (``{``) counts for, in values."""

_COMMA, _BRACKET, _BRACE, _QUOTE = (ord(c) for c in ',[{"')
_CHUNK = 1 << 20
"""Bytes counted at a time (the temporaries stay about a MiB each)."""


def _count(chunk: np.ndarray, where: np.ndarray | None = None) -> int:
    """Commas and brackets, plus ``OBJECT`` per brace, in ``chunk`` (only where ``where``)."""
    marks = (chunk == _COMMA) | (chunk == _BRACKET)
    braces = chunk == _BRACE
    if where is not None:
        marks &= where
        braces &= where
    return int(np.count_nonzero(marks)) + OBJECT * int(np.count_nonzero(braces))


def _anywhere(data: bytes | memoryview) -> int:
    text = np.frombuffer(data, dtype=np.uint8)
    return 1 + sum(_count(text[i : i + _CHUNK]) for i in range(0, len(text), _CHUNK))


def json_values(data: bytes) -> int:
    """The values of the JSON text ``data`` as this module counts them (see the module
    docstring): exact for valid JSON; for broken JSON, a number that only grows with it."""
    if b"\\" in data:  # escaped backslashes, then escaped quotes: every '"' left delimits a string
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = np.frombuffer(data, dtype=np.uint8)
    count, inside = 1, 0
    for start in range(0, len(text), _CHUNK):
        chunk = text[start : start + _CHUNK]
        quotes = np.cumsum(chunk == _QUOTE, dtype=np.uint8)  # wraps at 256, keeping the parity
        in_string = (quotes + inside) & 1
        inside = int(in_string[-1])
        count += _count(chunk, in_string == 0)
    return count


def refuse_many_values(body: bytes | memoryview, limit: int, formula: str) -> None:
    """Raise ``PayloadTooLargeError`` (413) if the JSON ``body`` holds more than ``limit``
    values (as counted here); ``formula`` says how the limit is made. Costs nothing for a
    body shorter than half the limit, one vectorised pass for a longer one."""
    if 2 * len(body) < limit or _anywhere(body) <= limit:
        return
    count = json_values(bytes(body))
    if count > limit:
        raise PayloadTooLargeError(
            f"the body holds {count:,} JSON values (an object counting {OBJECT}); at most {limit:,} are read "
            f"for this model ({formula}), so it was not decoded: send fewer rows or fields"
        )
