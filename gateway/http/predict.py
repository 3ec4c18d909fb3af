"""The Litestar declarations of the prediction endpoints, one per row of the route table.

The raw front answers every prediction request (``gateway.http.fastpath``); these
declarations give the endpoints their place in the OpenAPI document, and, should a request
reach Litestar all the same (an app mounted without the front), answer it through the same
dispatcher, admitted and counted like any other (``gateway.http.context.dispatch``).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler

from gateway.errors import ModelNotFoundError
from gateway.http.context import dispatch
from gateway.http.routes import HOT_ROUTES, HotRoute, canonical

__all__ = ["ROUTES"]


def declare(route: HotRoute) -> HTTPRouteHandler:
    """The Litestar handler of one hot route."""

    async def handler(request: Request[Any, Any, Any]) -> Response[bytes]:
        target = route.target(canonical(request.scope["path"]))
        if target is None:  # "/v1/models/{target}" also matches paths without ":predict"
            raise ModelNotFoundError(f"no such endpoint: expected '<name-or-version>{route.suffix}'")
        return await dispatch(request, route.codec, target.name, target.version)

    handler.__name__ = handler.__qualname__ = f"{route.codec.name}_predict"
    handler.__doc__ = route.summary
    return post(list(route.templates), status_code=200, summary=route.summary)(handler)


ROUTES = [declare(route) for route in HOT_ROUTES]
