"""Errors to ``application/problem+json`` (RFC 9457): the only code that knows HTTP.

Every answer that is not a success goes through ``problem_response``: a ``GatewayError``
keeps its own status hint, code and structured extras; Litestar's own client errors
(unknown route, wrong method, body too large) keep their status with a generic body; and
anything else becomes a 500 whose body says nothing of the cause (the traceback goes to
the log, never to the client). Every body carries ``error`` equal to ``detail``, as the
Open Inference Protocol (V2) requires of its error responses.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from gateway.errors import GatewayError

__all__ = ["PROBLEM_MEDIA_TYPE", "problem_body", "problem_parts", "problem_response"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("driftgate.http")

_STATUS_CODES = {
    400: "malformed-request",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
    503: "unavailable",
}


MAX_INSTANCE = 200
"""Characters of the request path echoed as a problem's ``instance`` (a path may carry a
6,000-character model name)."""


def problem_body(
    status: int, code: str, title: str, detail: str, instance: str, extra: dict[str, Any] | None = None
) -> bytes:
    body: dict[str, Any] = {
        "type": f"https://driftgate.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance if len(instance) <= MAX_INSTANCE else instance[:MAX_INSTANCE] + "...",
        "code": code,
        "error": detail,
    }
    if extra:
        for key, value in extra.items():
            body.setdefault(key, value)
    return msgspec.json.encode(body)


def _gateway_problem(exc: GatewayError, instance: str) -> tuple[int, bytes, dict[str, str]]:
    extra = dict(exc.extra)
    violations = getattr(exc, "violations", None)
    if violations is not None:
        extra["violations"] = violations
    headers = {}
    if exc.status_hint == 503:
        headers["Retry-After"] = "1"
    return exc.status_hint, problem_body(exc.status_hint, exc.code, exc.title, exc.detail, instance, extra), headers


def problem_response(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The one exception handler of the app (see the module docstring)."""
    status, body, headers = problem_parts(exc, request.url.path, request.method)
    return Response(content=body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_parts(exc: Exception, instance: str, method: str = "") -> tuple[int, bytes, dict[str, str]]:
    """(status, problem+json body, headers) of any exception: the mapping itself, shared
    by Litestar's exception handler and the raw ASGI fast path."""
    headers: dict[str, str] = {}
    if isinstance(exc, GatewayError):
        status, body, headers = _gateway_problem(exc, instance)
    elif isinstance(exc, HTTPException) and exc.status_code < 500:
        status = exc.status_code
        code = _STATUS_CODES.get(status, "client-error")
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail else code.replace("-", " ")
        body = problem_body(status, code, code.replace("-", " ").capitalize(), detail, instance)
        headers = dict(exc.headers or {})
    else:
        log.error("unexpected error answering %s %s", method, instance, exc_info=exc)
        status = 500
        body = problem_body(
            status, "internal-error", "Internal server error", "the server failed; the cause is in its log", instance
        )
    return status, body, headers
