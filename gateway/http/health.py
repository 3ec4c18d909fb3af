"""Liveness, readiness and metrics: what Kubernetes and Prometheus call.

Liveness answers 200 while the process can answer at all. Readiness answers 200 only
once every model in the repository has been loaded and warmed, and 503 from the moment
SIGTERM arrives (so the endpoints controller stops routing here while in-flight
requests finish). Both are cheap and never touch a model.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.http.context import gateway_of
from gateway.monitoring.exposition import render_metrics

__all__ = ["ROUTES"]

LIVE = b'{"live":true}'
READY = b'{"ready":true}'
NOT_READY = b'{"ready":false}'


@get("/v2/health/live", summary="Liveness")
async def live() -> Response[bytes]:
    """200 while the server process is up."""
    return Response(content=LIVE, media_type="application/json")


@get("/v2/health/ready", summary="Readiness")
async def ready(request: Request[Any, Any, Any]) -> Response[bytes]:
    """200 when every model is loaded and warmed and the server is not draining, else 503."""
    if gateway_of(request).ready:
        return Response(content=READY, media_type="application/json")
    return Response(content=NOT_READY, status_code=503, media_type="application/json", headers={"Retry-After": "1"})


@get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus text format (``gateway.monitoring.exposition``), built off the event loop."""
    body = await render_metrics(gateway_of(request))
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)


ROUTES = [live, ready, metrics]
