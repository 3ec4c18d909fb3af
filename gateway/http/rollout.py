"""Rollout endpoints: ``GET /v1/models/{name}/rollout`` (the state and the comparison) and
``PUT /v1/models/{name}/rollout`` (bearer token; an admin endpoint, ``gateway.http.routes``).

``PUT`` takes the wanted state, ``{"primary": V, "candidate": {"version": V, "mode":
"shadow"|"canary", "share": 0.1} | null}`` (optionally ``auto_rollback`` and ``tolerance``),
or a command as ``driftgate rollout`` names it, ``{"action": "promote"}`` (``shadow``,
``canary``, ``promote``, ``rollback``, ``pin``, with ``version`` and ``share`` where they
apply), done on the state the server holds. A change that cannot be made is refused with
one clear sentence (``RolloutError`` 409, ``PayloadError`` 400, ``ModelNotFoundError`` 404)
and changes nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, get, put

from gateway.http.admin import require_admin
from gateway.http.context import gateway_of
from gateway.lifecycle import Gateway
from gateway.monitoring.comparison import compare
from gateway.repository import NAME_PATTERN, check_name
from gateway.rollout import decide, decode_request

__all__ = ["ROUTES"]

MAX_BODY_BYTES = 64 * 1024
_changes = threading.Lock()
"""Orders this process's changes: each reads the state the previous one wrote."""


def _json(body: dict[str, Any], status: int = 200) -> Response[bytes]:
    return Response(content=msgspec.json.encode(body), status_code=status, media_type="application/json")


@get("/v1/models/{name:str}/rollout", summary="A model's rollout: primary, candidate and their comparison")
async def rollout_state(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
    """The primary and the candidate, and the two side by side (rows, rejection rate,
    confidence, agreement, feedback accuracy or MAE on the same rows, latency)."""
    gateway = gateway_of(request)
    return _json(await anyio.to_thread.run_sync(compare, gateway, name))


def change(gateway: Gateway, name: str, body: bytes) -> dict[str, Any]:
    """Apply a ``PUT`` body to ``name``'s rollout; the comparison after it."""
    wanted = decode_request(body)
    registered = gateway.repository.versions(check_name(name)) if NAME_PATTERN.match(name) else []
    """The repository's versions: one another worker or replica registered moments ago
    counts, and answers here once this worker has loaded it (until then, the primary)."""
    with _changes:
        gateway.rollouts.refresh(name)
        current = gateway.rollouts.states.get(name)
        default = max(registered, default=None)
        gateway.rollouts.write(name, decide(name, current, wanted, registered, default))
    return compare(gateway, name)


@put("/v1/models/{name:str}/rollout", request_max_body_size=MAX_BODY_BYTES, summary="Change a model's rollout")
async def put_rollout(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
    """Set the primary and the candidate, or run a rollout command (see the module docstring)."""
    require_admin(request)
    gateway = gateway_of(request)
    body = await request.body()
    return _json(await anyio.to_thread.run_sync(change, gateway, name, body))


ROUTES = [rollout_state, put_rollout]
