"""Open Inference Protocol (V2) endpoints, as KServe and Triton serve them.

Metadata, readiness, Triton's model configuration and the model repository extension.
Inference (``POST /v2/models/{name}/infer``) is a hot route: ``gateway.http.routes``,
``gateway.codecs.v2`` and ``gateway.http.predict``.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, get, post

from gateway import __version__
from gateway.codecs.v2 import feature_datatype, outputs_of
from gateway.http.admin import require_admin
from gateway.http.context import gateway_of
from gateway.registry import LoadedModel

__all__ = ["ROUTES"]

_encode = msgspec.json.Encoder().encode
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=_encode(body), status_code=status, media_type="application/json")


def _model(request: Request[Any, Any, Any], name: str, version: str | None) -> LoadedModel:
    return gateway_of(request).dispatcher.choose(name, version)


# --- metadata ---------------------------------------------------------------------------


def model_metadata(model: LoadedModel, versions: list[int]) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": f.name, "datatype": feature_datatype(f), "shape": [-1, 1]} for f in model.spec.features],
        "outputs": [
            {"name": n, "datatype": d, "shape": [-1] if s == [1] else [-1, *s]} for n, d, s in outputs_of(model)
        ],
        "parameters": {"spec_digest": model.spec.digest, "task": model.spec.output.task if model.spec.output else None},
    }


def _versions(request: Request[Any, Any, Any], name: str) -> list[int]:
    return sorted(m.version for m in gateway_of(request).model_registry.models() if m.name == name)


@get("/v2", summary="V2 server metadata")
async def server_metadata() -> Response[bytes]:
    """Server name, version and supported protocol extensions."""
    return _json({"name": "driftgate", "version": __version__, "extensions": EXTENSIONS})


@get(["/v2/models/{name:str}", "/v2/models/{name:str}/versions/{version:str}"], summary="V2 model metadata")
async def metadata(request: Request[Any, Any, Any], name: str, version: str | None = None) -> Response[bytes]:
    """Inputs (the spec's features) and outputs of a model."""
    return _json(model_metadata(_model(request, name, version), _versions(request, name)))


@get(
    ["/v2/models/{name:str}/ready", "/v2/models/{name:str}/versions/{version:str}/ready"], summary="V2 model readiness"
)
async def model_ready(request: Request[Any, Any, Any], name: str, version: str | None = None) -> Response[bytes]:
    """200 when the model (version) is loaded and warmed; 404 otherwise."""
    model = _model(request, name, version)
    return _json({"name": model.name, "version": str(model.version), "ready": True})


@get(
    ["/v2/models/{name:str}/config", "/v2/models/{name:str}/versions/{version:str}/config"],
    summary="Model configuration (Triton)",
)
async def model_config(request: Request[Any, Any, Any], name: str, version: str | None = None) -> Response[bytes]:
    """Triton's model configuration, as perf_analyzer reads it."""
    model = _model(request, name, version)
    triton_type = {
        "BYTES": "TYPE_STRING",
        "BOOL": "TYPE_BOOL",
        "INT64": "TYPE_INT64",
        "FP64": "TYPE_FP64",
        "FP32": "TYPE_FP32",
    }
    return _json(
        {
            "name": model.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": gateway_of(request).settings.max_batch_rows,
            "input": [
                {"name": f.name, "data_type": triton_type[feature_datatype(f)], "dims": [1]}
                for f in model.spec.features
            ],
            # one value per row is answered as [N]: Triton says so with dims [1] reshaped to []
            "output": [
                {"name": n, "data_type": triton_type[d], "dims": s, **({"reshape": {"shape": []}} if s == [1] else {})}
                for n, d, s in outputs_of(model)
            ],
            "version_policy": {"latest": {"num_versions": 1}},
        }
    )


# --- model repository extension ---------------------------------------------------------


@post("/v2/repository/index", status_code=200, summary="Repository index")
async def repository_index(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every version on disk or served, with its state (READY, UNAVAILABLE) and reason."""
    require_admin(request)
    gateway = gateway_of(request)
    registry = gateway.model_registry
    failures = {(f.name, f.version): f.reason for f in registry.failures()}
    entries = {(e.name, e.version) for e in await anyio.to_thread.run_sync(gateway.repository.scan)}
    entries |= {(m.name, m.version) for m in registry.models()}
    index = []
    for name, version in sorted(entries):
        state = registry.state(name, version)
        item = {"name": name, "version": str(version), "state": state}
        reason = failures.get((name, version)) or (
            "unloaded" if state == "UNAVAILABLE" and name in gateway.unloaded else None
        )
        if reason:
            item["reason"] = reason
        index.append(item)
    return _json(index)


@post("/v2/repository/models/{name:str}/load", status_code=200, summary="Load a model")
async def repository_load(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
    """Load (again) every version of a model from the repository."""
    require_admin(request)
    gateway = gateway_of(request)
    loaded = await anyio.to_thread.run_sync(gateway.load, name)
    return _json({"name": name, "versions": [str(v) for v in loaded]})


@post("/v2/repository/models/{name:str}/unload", status_code=200, summary="Unload a model")
async def repository_unload(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
    """Stop serving every version of a model (the files stay in the repository)."""
    require_admin(request)
    removed = await anyio.to_thread.run_sync(gateway_of(request).unload, name)
    return _json({"name": name, "versions": [str(v) for v in removed]})


ROUTES = [
    server_metadata,
    metadata,
    model_ready,
    model_config,
    repository_index,
    repository_load,
    repository_unload,
]
