"""Admin endpoints: registering a model version over HTTP, and downloading one.

Off unless the server has an admin token. The token is compared in constant time
(``hmac.compare_digest``), and never echoed in an answer or a log line. Every refused
admin call (401, 403, and 404 off the admin listener) is logged with its method, path and
client (``log_refused``).
"""

from __future__ import annotations

import base64
import functools
import hmac
import logging
import tempfile
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, get, put
from litestar.datastructures import UploadFile

from gateway.baseline import missing_output_baseline
from gateway.errors import (
    AdminDisabledError,
    GatewayError,
    ModelNotFoundError,
    NotOnThisListenerError,
    PayloadError,
    UnauthorizedError,
)
from gateway.http.context import gateway_of
from gateway.repository import parse_version
from gateway.service import register_model

__all__ = ["MAX_MODEL_BYTES", "ROUTES", "log_refused", "require_admin"]

log = logging.getLogger("driftgate.admin")

MAX_MODEL_BYTES = 512 * 1024 * 1024
"""Largest registration body (model plus spec). Far above the prediction limit: models
are big, and only a holder of the admin token may send one."""


def log_refused(method: str, path: str, client: tuple[Any, ...] | None, exc: GatewayError) -> None:
    """One warning line for a refused admin call: method, path (cut at 200 characters,
    anything but printable ASCII escaped: no forged lines), client address and the answer;
    never a header (the token)."""
    shown = ascii(path[:200])[1:-1]
    peer = f"{client[0]}:{client[1]}" if client else "-"
    log.warning(
        "refused admin call %s %s from %s: %d %s",
        method, shown, peer, exc.status_hint, exc.code,
        extra={"method": method, "path": shown, "client": peer, "status": exc.status_hint},
    )  # fmt: skip


def require_admin(request: Request[Any, Any, Any]) -> None:
    """Raise unless the request carries the server's admin token and, with an admin
    listener, came in on it (the raw front refuses the others first: this is the second
    lock). Every refusal is logged (``log_refused``)."""
    try:
        _check_admin(request)
    except GatewayError as exc:
        client = request.scope.get("client")
        log_refused(request.method, request.scope.get("path", ""), client, exc)
        raise


def _check_admin(request: Request[Any, Any, Any]) -> None:
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
    JSON), and optionally ``data``: labelled held-out rows (a CSV, TSV, Parquet, JSON or
    JSON Lines file, by its file name) the model is scored on before it is stored; the
    figures and output baseline are kept with the version. Refused with one clear
    message, changing nothing, if the bundle is bad.
    ``?candidate=shadow`` or ``?candidate=canary&share=0.2``: the version becomes the
    rollout's candidate instead of the primary (``gateway.rollout``)."""
    require_admin(request)
    gateway = gateway_of(request)
    if candidate not in (None, "shadow", "canary"):
        raise PayloadError(f"candidate must be 'shadow' or 'canary', not {candidate[:20]!r}")
    form = await request.form()
    model, spec = await _part(form, "model"), await _part(form, "spec")
    data = await _part(form, "data") if form.get("data") is not None else None
    data_name = _data_name(form.get("data"))
    with tempfile.TemporaryDirectory(prefix="driftgate-holdout-") as folder:
        path = None
        if data is not None:  # read as a file, by its suffix, as the command line reads one
            path = Path(folder) / f"holdout{Path(data_name).suffix.lower() or '.csv'}"
            path.write_bytes(data)
        loaded = await anyio.to_thread.run_sync(
            functools.partial(
                register_model, gateway.model_registry, gateway.repository, name, target, model, spec,
                gateway.settings.intra_op_threads, data=path, data_name=data_name,
                rollout=None if candidate is None else (candidate, share),  # type: ignore[arg-type]
            )
        )  # fmt: skip
    gateway.rollouts.refresh(name)
    if name in gateway.unloaded:  # a new version of an unloaded model: serve the model again, on every worker
        await anyio.to_thread.run_sync(gateway.load, name)
    body: dict[str, Any] = {"name": loaded.name, "version": str(loaded.version), "spec_digest": loaded.spec.digest}
    body["default"] = gateway.model_registry.get(loaded.name).version == loaded.version
    if loaded.baseline is not None:
        body["offline"] = {"rows": loaded.baseline.scored_rows, **loaded.baseline.metrics}
    note = missing_output_baseline(loaded.spec, loaded.baseline)
    if note is not None:
        body["notes"] = [note]
    return Response(content=msgspec.json.encode(body), status_code=201, media_type="application/json")


def _data_name(part: Any) -> str:
    """The held-out part's file name, without any folder (``holdout.csv`` when it has none)."""
    filename = getattr(part, "filename", None) or "holdout.csv"
    return Path(str(filename).replace("\\", "/")).name[:200] or "holdout.csv"


@get("/v1/models/{name:str}/versions/{target:str}", summary="Download a model version")
async def download(request: Request[Any, Any, Any], name: str, target: str) -> Response[bytes]:
    """A registered version's files, as stored in the repository: ``model`` (base64),
    ``spec`` (text) and ``baseline`` (``register --data``'s record, or null). Admin only:
    a model file is its owner's property. ``driftgate evaluate --against NAME --url`` reads it."""
    require_admin(request)
    gateway = gateway_of(request)
    number = parse_version(target)
    entry = next((e for e in gateway.repository.scan() if e.name == name and e.version == number), None)
    if entry is None:
        raise ModelNotFoundError(f"no model {name[:80]!r} version {target[:20]!r} in the repository")
    raw = entry.read_baseline()
    body = {
        "name": name,
        "version": str(number),
        "model": base64.b64encode(entry.read_model()).decode(),
        "spec": entry.read_spec().decode(errors="replace"),
        "baseline": None if raw is None else msgspec.json.decode(raw),
    }
    return Response(content=msgspec.json.encode(body), media_type="application/json")


ROUTES = [register, download]
