"""What every Litestar handler needs: the gateway of the app, and the way into the dispatcher."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from gateway.codecs import Codec
from gateway.lifecycle import Gateway

__all__ = ["dispatch", "gateway_of"]


def gateway_of(request: Request[Any, Any, Any]) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def dispatch(request: Request[Any, Any, Any], codec: Codec, name: str, version: str | None) -> Response[bytes]:
    """A prediction request that reached Litestar, answered through the dispatcher exactly as
    the raw front answers it (admitted, scheduled, counted): the raw front takes every
    spelling of the hot paths (``gateway.http.routes``), so this runs only for an app
    mounted without it, but it could never answer another way."""
    content, headers = await gateway_of(request).dispatcher.answer(
        codec, name, version, list(request.scope["headers"]), request.body
    )
    fields = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
    media_type = fields.pop("content-type")
    return Response(content=content, media_type=media_type, headers=fields)
