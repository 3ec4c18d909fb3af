"""Monitoring endpoints: ground-truth feedback, and the live state as JSON or HTML.

``GET /v1/models/{name}/monitor`` answers JSON; a browser (``Accept: text/html``) or
``?format=html`` gets the same state as a small page with no scripts or external assets.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote

import msgspec
from litestar import Request, Response, get, post

from gateway.errors import PayloadError, PayloadTooLargeError
from gateway.http.context import gateway_of
from gateway.monitoring.comparison import compare
from gateway.monitoring.report import render_html, snapshot
from gateway.protocol.duplicate_keys import refuse_duplicate_keys
from gateway.protocol.json_body import decode_json
from gateway.repository import parse_version
from gateway.service import FeedbackRequest, answer_review, record_feedback

__all__ = ["ROUTES"]

_decode_feedback = msgspec.json.Decoder(FeedbackRequest).decode
_decode_any = msgspec.json.Decoder().decode


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
    result = record_feedback(
        gateway.model_registry, gateway.predictions, name, items, shadow=gateway.shadow, payloads=gateway.payloads
    )
    return Response(content=msgspec.json.encode(result), media_type="application/json")


@get("/v1/models/{name:str}/monitor", summary="Live monitoring state")
async def monitor(request: Request[Any, Any, Any], name: str, version: str | None = None, format: str | None = None) -> Response[Any]:
    """Drift per feature, output against baseline, rejections, online accuracy."""
    pinned = None if version is None else parse_version(version)
    if version is not None and pinned is None:
        raise PayloadError("version must be a whole number from 1")
    gateway = gateway_of(request)
    model = gateway.model_registry.get(name, pinned)
    snap = snapshot(model)
    if name in gateway.rollouts.states:  # the primary and the candidate side by side
        snap["rollout"] = compare(gateway, name)
    wants_html = format == "html" or (format is None and "text/html" in request.headers.get("accept", ""))
    if wants_html:
        return Response(content=render_html(snap), media_type="text/html")
    return Response(content=msgspec.json.encode(snap), media_type="application/json")


MAX_REVIEWS_LISTED = 1000


@get("/v1/models/{name:str}/reviews", summary="Rows waiting for a person's review")
async def reviews(request: Request[Any, Any, Any], name: str, limit: str | None = None) -> Response[bytes]:
    """The oldest rows of the model's review queue (``?limit=N``, default 100, at most 1000):
    low-confidence and flagged predictions with their inputs, prediction and why."""
    gateway = gateway_of(request)
    gateway.model_registry.get(name)  # 404 for an unknown model
    count = 100 if limit is None else int(limit) if limit.isdigit() and 1 <= int(limit) <= MAX_REVIEWS_LISTED else 0
    if not count:
        raise PayloadError(f"limit must be a whole number from 1 to {MAX_REVIEWS_LISTED}")
    queue = gateway.reviews
    stats = queue.stats().get(name, {})
    body = {
        "model": name,
        "reviews": queue.list(name, count),
        "length": stats.get("length", 0),
        "capacity": queue.capacity,
        **{k: stats.get(k, 0) for k in ("queued", "dropped", "answered", "agreed")},
    }
    return Response(content=msgspec.json.encode(body), media_type="application/json")


@post("/v1/models/{name:str}/reviews/{review_id:str}", status_code=200, summary="Answer a row of the review queue")
async def answer(request: Request[Any, Any, Any], name: str, review_id: str) -> Response[bytes]:
    """``{"label": ...}`` (or ``{"value": ...}``): recorded as feedback for that prediction,
    and the row leaves the queue. A browser form (``application/x-www-form-urlencoded``, as
    the monitor page sends) is answered with a redirect back to the page."""
    gateway = gateway_of(request)
    body = await request.body()
    form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    given: Any
    if form:
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v and v[0] != ""}
        given = _form_answer(fields)
    else:
        given = decode_json(_decode_any, body, "review answer")
    result = answer_review(
        gateway.model_registry, gateway.predictions, name, review_id, given, shadow=gateway.shadow, payloads=gateway.payloads
    )
    if form:
        return Response(
            content=b"", status_code=303, headers={"Location": f"/v1/models/{quote(name)}/monitor?format=html"}
        )
    return Response(content=msgspec.json.encode(result), media_type="application/json")


def _form_answer(fields: dict[str, str]) -> dict[str, Any]:
    """A browser form's fields as a JSON answer (a value field must hold a number)."""
    if "value" in fields:
        try:
            return {"value": float(fields["value"])}
        except ValueError:
            return {"value": fields["value"]}  # refused as not a number
    return {k: v for k, v in fields.items() if k == "label"} or fields


ROUTES = [feedback, monitor, reviews, answer]
