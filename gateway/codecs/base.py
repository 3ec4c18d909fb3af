"""The codec interface (see ``gateway.codecs``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.registry import LoadedModel
    from gateway.service import Outcome
    from gateway.table import Columns

__all__ = ["JSON_HEADERS", "Answer", "Codec", "Decoded", "Headers", "header"]

Headers = list[tuple[bytes, bytes]]
"""Request or response header fields, names in lower case, as ASGI and the parser hold them."""

Answer = tuple[bytes, Headers]
"""An encoded answer: its body, and its header fields (without ``content-length``)."""

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]


class Decoded:
    """A decoded request: the guards' columns, and what the codec needs to encode its answer."""

    __slots__ = ("columns", "state")

    def __init__(self, columns: Columns, state: Any = None) -> None:
        self.columns = columns
        self.state = state


class Codec(Protocol):
    """A prediction protocol's wire format (see the module docstring)."""

    name: str
    media_types: tuple[str, ...]
    """The media types of its request and answer bodies, the first the default."""
    request_schema: dict[str, Any]
    """The JSON Schema of a request body (its JSON part), for the OpenAPI document."""

    def decode(self, model: LoadedModel, body: bytes, headers: Headers, max_rows: int) -> Decoded:
        """The body's rows as columns for ``model``'s guards; raises ``GatewayError``s."""
        ...

    def encode(self, decoded: Decoded, outcome: Outcome) -> Answer:
        """The answer to ``decoded`` given ``outcome`` (``outcome.model`` answered it)."""
        ...


def header(headers: Headers, name: bytes) -> str | None:
    """The first value of header field ``name`` (lower case), or None."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None
