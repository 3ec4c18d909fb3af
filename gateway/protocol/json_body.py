"""Decoding a JSON request body with every way it can be malformed mapped to one error."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from gateway.errors import PayloadError

__all__ = ["NOT_UTF8", "TOO_DEEP", "decode_json"]

T = TypeVar("T")

TOO_DEEP = "the body nests arrays or objects too deeply"
"""msgspec raises RecursionError on pathological nesting (a 1,000-deep array decodes in
microseconds, then overflows the stack): a client error, answered 400 like any bad JSON."""

NOT_UTF8 = "the body is not valid UTF-8 (JSON text must be)"


def decode_json(decode: Callable[[bytes], T], body: bytes, what: str) -> T:
    """``decode(body)``, with every way a body can be malformed mapped to ``PayloadError``
    (400): a schema mismatch, broken JSON, or pathological nesting."""
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        raise PayloadError(f"invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PayloadError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError(TOO_DEEP) from None
    except UnicodeDecodeError:
        raise PayloadError(NOT_UTF8) from None
