"""V1 endpoints: model listing and description.

Prediction (``POST /v1/models/{name}:predict``) is a hot route: ``gateway.http.routes``,
``gateway.codecs.v1`` and ``gateway.http.predict``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get

from gateway.http.context import gateway_of
from gateway.registry import LoadedModel

__all__ = ["ROUTES"]

_encode = msgspec.json.Encoder().encode


def describe(model: LoadedModel, versions: list[int]) -> dict[str, Any]:
    spec = model.spec
    return {
        "name": model.name,
        "version": str(model.version),
        "versions": [str(v) for v in versions],
        "ready": True,
        "task": spec.output.task if spec.output else None,
        "labels": list(spec.output.labels) if spec.output else [],
        "spec": spec.name,
        "spec_digest": spec.digest,
        "features": [{"name": f.name, "type": type(f).__struct_config__.tag} for f in spec.features],
        "inputs": len(spec.output_columns),
    }


@get("/v1/models", summary="List served models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every served model with its default version, its versions and its spec digest."""
    registry = gateway_of(request).model_registry
    versions: dict[str, list[int]] = {}
    for m in registry.models():
        versions.setdefault(m.name, []).append(m.version)
    models = [describe(m, sorted(versions[name])) for name, m in sorted(registry.defaults().items())]
    failures = [{"name": f.name, "version": str(f.version), "reason": f.reason} for f in registry.failures()]
    return Response(content=_encode({"models": models, "failed": failures}), media_type="application/json")


@get("/v1/models/{name:str}", summary="Describe a model")
async def get_model(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
    """The default version of one model: task, labels, features, spec digest."""
    registry = gateway_of(request).model_registry
    model = registry.get(name)
    versions = sorted(m.version for m in registry.models() if m.name == name)
    return Response(content=_encode(describe(model, versions)), media_type="application/json")


ROUTES = [list_models, get_model]
