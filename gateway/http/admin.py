"""Admin endpoints: registering a model version over HTTP.

Off unless the server has an admin token. The token is compared in constant time
(``hmac.compare_digest``), and never echoed in an answer or a log line.
"""

from __future__ import annotations

import functools
import hmac
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, put
from litestar.datastructures import UploadFile

from gateway.errors import AdminDisabledError, NotOnThisListenerError, PayloadError, UnauthorizedError
from gateway.http.context import gateway_of
from gateway.service import register_model

__all__ = ["MAX_MODEL_BYTES", "ROUTES", "require_admin"]

MAX_MODEL_BYTES = 512 * 1024 * 1024
"""Largest registration body (model plus spec). Far above the prediction limit: models
are big, and only a holder of the admin token may send one."""


def require_admin(request: Request[Any, Any, Any]) -> None:
    """Raise unless the request carries the server's admin token and, with an admin
    listener, came in on it (the raw front refuses the others first: this is the second lock)."""
    settings = gateway_of(request).settings
    if settings.admin_port is not None:
        local = request.scope.get("server")
        if local is None or local[1] != settings.admin_port:
            raise NotOnThisListenerError("no such endpoint on this listener")
    token = settings.admin_token
    if not token:
        raise AdminDisabledError("admin endpoints are off: start the server with DRIFTGATE_ADMIN_TOKEN to enable them")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise UnauthorizedError("missing or wrong admin token: send 'Authorization: Bearer <token>'")


async def _part(form: Any, name: str) -> bytes:
    part = form.get(name)
    if part is None:
        raise PayloadError(f"the multipart body has no '{name}' part (expected parts: model, spec)")
    if isinstance(part, UploadFile):
        return await part.read()
    return part.encode() if isinstance(part, str) else bytes(part)


@put("/v1/models/{name:str}/versions/{target:str}", status_code=201, request_max_body_size=MAX_MODEL_BYTES, summary="Register a model version")
async def register(
    request: Request[Any, Any, Any], name: str, target: str, candidate: str | None = None, share: float = 1.0
) -> Response[bytes]:
    """Register and load a version: multipart parts ``model`` (ONNX) and ``spec`` (YAML or
    JSON). Refused with one clear message, changing nothing, if the bundle is bad.
    ``?candidate=shadow`` or ``?candidate=canary&share=0.2``: the version becomes the
    rollout's candidate instead of the primary (``gateway.rollout``)."""
    require_admin(request)
    gateway = gateway_of(request)
    if candidate not in (None, "shadow", "canary"):
        raise PayloadError(f"candidate must be 'shadow' or 'canary', not {candidate[:20]!r}")
    form = await request.form()
    model, spec = await _part(form, "model"), await _part(form, "spec")
    loaded = await anyio.to_thread.run_sync(
        functools.partial(
            register_model, gateway.model_registry, gateway.repository, name, target, model, spec,
            gateway.settings.intra_op_threads, rollout=None if candidate is None else (candidate, share),  # type: ignore[arg-type]
        )
    )  # fmt: skip
    gateway.rollouts.refresh(name)
    if name in gateway.unloaded:  # a new version of an unloaded model: serve the model again, on every worker
        await anyio.to_thread.run_sync(gateway.load, name)
    body = {"name": loaded.name, "version": str(loaded.version), "spec_digest": loaded.spec.digest, "default": True}
    body["default"] = gateway.model_registry.get(loaded.name).version == loaded.version
    return Response(content=msgspec.json.encode(body), status_code=201, media_type="application/json")


ROUTES = [register]
