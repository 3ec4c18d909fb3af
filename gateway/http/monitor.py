"""Monitoring endpoints: ground-truth feedback, and the live state as JSON or HTML.

``GET /v1/models/{name}/monitor`` answers JSON; a browser (``Accept: text/html``) or
``?format=html`` gets the same state as a small page with no scripts or external assets.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post

from gateway.errors import PayloadError, PayloadTooLargeError
from gateway.http.context import gateway_of
from gateway.monitoring.report import render_html, snapshot
from gateway.protocol.duplicate_keys import refuse_duplicate_keys
from gateway.protocol.json_body import decode_json
from gateway.repository import parse_version
from gateway.service import FeedbackRequest, record_feedback

__all__ = ["ROUTES"]

_decode_feedback = msgspec.json.Decoder(FeedbackRequest).decode


@post("/v1/models/{name:str}/feedback", status_code=200, summary="Send ground truth for earlier predictions")
async def feedback(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
    """``{"feedback": [{"id": ..., "label": ...}]}`` (or ``"value"`` for regressors).
    Unknown or expired ids are counted and reported, never an error for the batch."""
    gateway = gateway_of(request)
    body = await request.body()
    items = decode_json(_decode_feedback, body, "feedback").feedback
    refuse_duplicate_keys(body, 1 + sum(1 + (i.label is not None) + (i.value is not None) for i in items))
    if len(items) > gateway.settings.max_batch_rows:
        raise PayloadTooLargeError(f"{len(items)} feedback items in one request; the limit is {gateway.settings.max_batch_rows}")
    result = record_feedback(gateway.model_registry, gateway.predictions, name, items, gateway.payloads)
    return Response(content=msgspec.json.encode(result), media_type="application/json")


@get("/v1/models/{name:str}/monitor", summary="Live monitoring state")
async def monitor(request: Request[Any, Any, Any], name: str, version: str | None = None, format: str | None = None) -> Response[Any]:
    """Drift per feature, output against baseline, rejections, online accuracy."""
    pinned = None if version is None else parse_version(version)
    if version is not None and pinned is None:
        raise PayloadError("version must be a whole number from 1")
    model = gateway_of(request).model_registry.get(name, pinned)
    snap = snapshot(model)
    wants_html = format == "html" or (format is None and "text/html" in request.headers.get("accept", ""))
    if wants_html:
        return Response(content=render_html(snap), media_type="text/html")
    return Response(content=msgspec.json.encode(snap), media_type="application/json")


ROUTES = [feedback, monitor]
