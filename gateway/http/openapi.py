"""What Litestar cannot see in the OpenAPI document, added once when the app is built.

The hot routes read their bodies raw (``request.body()``), so Litestar declares no request
body for them; every error is ``application/problem+json`` from one handler, which
Litestar does not know; and the handlers return ``Response[bytes]``, so their 200 bodies
come out as strings. ``complete_document`` fills those in, so a client generator (or
schemathesis) sees the API as it behaves: request bodies, every error status a route can
answer with the problem schema, object bodies, and ``/metrics`` as Prometheus text.
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from gateway.http.problems import PROBLEM_MEDIA_TYPE
from gateway.http.routes import HOT_ROUTES

__all__ = ["complete_document"]

PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "error"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "error": {"type": "string", "description": "equal to detail (what a stock V2 client prints)"},
        "instance": {"type": "string"},
        "code": {"type": "string"},
        "violations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "row": {"type": "integer"},
                    "feature": {"type": "string"},
                    "reason": {"type": "string"},
                    "value": {},
                },
            },
        },
    },
}

_FEEDBACK = {
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": "string"},
                    "label": {"type": ["string", "integer", "boolean"]},
                    "value": {"type": "number"},
                },
            },
        }
    },
}
_BUNDLE = {
    "type": "object",
    "required": ["model", "spec"],
    "properties": {
        "model": {"type": "string", "format": "binary"},
        "spec": {"type": "string", "format": "binary"},
        "data": {"type": "string", "format": "binary", "description": "optional labelled held-out rows (register --data)"},
    },
}


_HOT_TEMPLATES = {re.sub(r":[a-z]+}", "}", t): route for route in HOT_ROUTES for t in route.templates}
"""The hot routes by their paths as the document writes them (``{name}``, not ``{name:str}``)."""


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


# (method, path prefix or exact path) -> request body; error statuses by kind of route
_PREDICT_ERRORS = ("400", "404", "408", "413", "422", "500", "503", "504")
_ADMIN_ERRORS = ("400", "401", "403", "404", "409", "413", "422", "503")
_READ_ERRORS = ("400", "404")
_DESCRIPTIONS = {
    "400": "Malformed request",
    "401": "Missing or wrong admin token",
    "403": "Admin endpoints are off (no token configured)",
    "404": "Unknown model, version or route",
    "408": "The request head or body did not arrive in time",
    "409": "The version exists (versions are immutable)",
    "413": "Body, rows or model too large",
    "422": "Rejected by the feature spec (violations), or a refused spec or model",
    "500": "Internal failure (never a trace)",
    "503": "Not ready, draining, or at the concurrency limit (Retry-After)",
    "504": "Inference deadline exceeded",
}


def _operation_kind(method: str, path: str) -> tuple[dict[str, Any] | None, tuple[str, ...], dict[str, Any]]:
    """(request body, error statuses, 200 body schema) of one operation."""
    obj: dict[str, Any] = {"type": "object"}
    if method == "post" and path.startswith("/v1/models/") and path.endswith("/feedback"):
        return _json(_FEEDBACK), ("400", "404", "413", "422"), obj
    if method == "post" and path.startswith("/v1/models/") and "/reviews/" in path:
        answer = {"type": "object", "properties": {"label": {"type": ["string", "integer", "boolean"]}, "value": {"type": "number"}}}
        return {"required": True, "content": {"application/json": {"schema": answer}}}, ("400", "404", "422"), obj
    route = _HOT_TEMPLATES.get(path) if method == "post" else None
    if route is not None:
        body = _json(route.codec.request_schema)
        for media_type in route.codec.media_types[1:]:
            body["content"][media_type] = {"schema": {"type": "string", "format": "binary"}}
        return body, _PREDICT_ERRORS, obj
    if method == "put":
        return {"required": True, "content": {"multipart/form-data": {"schema": _BUNDLE}}}, _ADMIN_ERRORS, obj
    if path.startswith("/v2/repository/") or (method == "get" and path.startswith("/v1/models/") and "/versions/" in path):
        index = path.endswith("/index")
        return None, _ADMIN_ERRORS, ({"type": "array", "items": {"type": "object"}} if index else obj)
    return None, _READ_ERRORS, obj


def complete_document(document: dict[str, Any]) -> None:
    """Add request bodies, problem+json error answers and 200 body schemas, in place."""
    problem = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    document.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            if path == "/metrics":
                responses["200"] = {
                    "description": "Prometheus text format",
                    "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                }
                continue
            if path.startswith("/v2/health/"):
                responses["200"]["content"] = {"application/json": {"schema": {"type": "object"}}}
                responses["503"] = {
                    "description": "Not ready",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
                continue
            body, errors, ok = _operation_kind(method, path)
            if body is not None and "requestBody" not in operation:
                operation["requestBody"] = body
            for status in ("200", "201"):
                if status in responses:
                    responses[status]["content"] = {"application/json": {"schema": ok}}
                    if method == "post" and path in _HOT_TEMPLATES:
                        for media_type in _HOT_TEMPLATES[path].codec.media_types[1:]:
                            responses[status]["content"][media_type] = {"schema": {"type": "string"}}
                    if path.endswith("/monitor"):
                        responses[status]["content"]["text/html"] = {"schema": {"type": "string"}}
            for status in errors:
                responses[status] = {"description": _DESCRIPTIONS[status], "content": problem}
