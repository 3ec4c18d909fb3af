"""In-process prediction requests through the gateway's dispatcher, as the HTTP edge makes
them: for unit and property tests that drive a real ``Gateway`` without a server."""

from __future__ import annotations

from gateway.codecs import V1, V2, Answer, Codec, Headers, header
from gateway.lifecycle import Gateway
from gateway.registry import LoadedModel


async def _answer(gateway: Gateway, codec: Codec, model: LoadedModel, body: bytes, headers: Headers) -> Answer:
    async def read() -> bytes:
        return body

    return await gateway.dispatcher.answer(codec, model.name, str(model.version), headers, read)


async def answer_v1(gateway: Gateway, model: LoadedModel, body: bytes) -> bytes:
    """The V1 answer's body to a request for ``model`` (raises the error it ended with)."""
    content, _ = await _answer(gateway, V1, model, body, [])
    return content


async def answer_v2(
    gateway: Gateway, model: LoadedModel, body: bytes, header_length: str | None
) -> tuple[bytes, int | None]:
    """The V2 answer's body, and its JSON header's length when binary outputs follow it."""
    headers = [] if header_length is None else [(b"inference-header-content-length", header_length.encode())]
    content, answer_headers = await _answer(gateway, V2, model, body, headers)
    length = header(answer_headers, b"inference-header-content-length")
    return content, None if length is None else int(length)
