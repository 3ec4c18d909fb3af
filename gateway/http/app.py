"""``create_app(settings)``: the ASGI application of one gateway process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin

from gateway import __version__
from gateway.config import Settings
from gateway.http import admin, health, monitor, predict, rollout, v1, v2
from gateway.http.fastpath import FastPath
from gateway.http.openapi import complete_document
from gateway.http.problems import problem_response
from gateway.lifecycle import Gateway

__all__ = ["create_app"]


def create_app(settings: Settings, gateway: Gateway | None = None) -> Any:
    """The ASGI app: the hot endpoints' fast path in front of the Litestar app, with a
    ``Gateway`` that starts loading models when the app starts. The Litestar app itself
    is the returned object's ``app`` attribute."""
    gw = gateway or Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        gw.start()
        try:
            yield
        finally:
            gw.stop()

    app = Litestar(
        route_handlers=[*health.ROUTES, *predict.ROUTES, *v1.ROUTES, *v2.ROUTES, *monitor.ROUTES, *admin.ROUTES, *rollout.ROUTES],
        exception_handlers={Exception: problem_response},
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="driftgate",
            version=__version__,
            description="Model serving with input guards and drift monitoring.",
            path="/schema",
            # The document itself, at /schema and /schema/openapi.json: the HTML viewers load
            # their scripts from a CDN, which a sidecar on a closed network cannot reach.
            render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"]), YamlRenderPlugin(path="/openapi.yaml")],
        ),
        debug=False,
        logging_config=None,
    )
    app.state.gateway = gw
    # build the document once, then add what the raw-body handlers hide from Litestar
    # (the plugin by name: Litestar keeps its class in a private module; the dict it returns
    # is the one it caches and serves)
    complete_document(app.plugins.get("OpenAPIPlugin").provide_openapi_schema())
    return FastPath(app, gw)


def app_from_env() -> Any:  # pragma: no cover - for `uvicorn gateway.http.app:app_from_env --factory`
    import os

    from gateway.config import load_settings

    return create_app(load_settings(os.environ))
