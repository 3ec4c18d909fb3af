"""Open Inference Protocol (V2) endpoints, as KServe and Triton serve them.

Inputs are the spec's features, one tensor each, batched on the first dimension (shape
``[N]`` or ``[N, 1]``); the guards, transform and monitoring are exactly V1's
(``gateway.service.predict``). Outputs: ``label`` (BYTES), ``probabilities`` (FP32
``[N, k]`` in the spec's label order) and ``confidence`` (FP32) for classifiers,
``prediction`` (FP32) for regressors, and ``id`` (BYTES) for feedback.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import msgspec
import numpy as np
from litestar import Request, Response, get, post

from gateway import __version__
from gateway.errors import ModelNotFoundError, PayloadError, PayloadTooLargeError
from gateway.http.admin import require_admin
from gateway.http.v1 import _version, gateway_of, inline, predict_inline, run_predict
from gateway.lifecycle import Gateway
from gateway.protocol.v2 import (
    InferenceResponse,
    ResponseOutput,
    decode_request,
    decode_tensor,
    encode_bytes_tensor,
    encode_response,
    quoted,
    shape_text,
)
from gateway.registry import LoadedModel
from gateway.spec import BooleanFeature, CategoryFeature, IntegerFeature
from gateway.table import Columns, matrix_to_columns

__all__ = ["ROUTES"]

_encode = msgspec.json.Encoder().encode
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=_encode(body), status_code=status, media_type="application/json")


def _model(request: Request[Any, Any, Any], name: str, version: str | None) -> LoadedModel:
    return gateway_of(request).model_registry.get(name, None if version is None else _version(version))


# --- metadata ---------------------------------------------------------------------------


def _feature_datatype(feature: Any) -> str:
    if isinstance(feature, CategoryFeature):
        return "BYTES"
    if isinstance(feature, BooleanFeature):
        return "BOOL"
    if isinstance(feature, IntegerFeature):
        return "INT64"
    return "FP64"  # float64 end to end: V2 answers equal V1's to the bit


def _outputs_of(model: LoadedModel) -> list[tuple[str, str, list[int]]]:
    """(name, datatype, shape without the batch dimension) of every output."""
    spec = model.spec
    if spec.output is not None and spec.output.task == "classification":
        return [
            ("label", "BYTES", [1]),
            ("probabilities", "FP32", [len(spec.output.labels)]),
            ("confidence", "FP32", [1]),
            ("id", "BYTES", [1]),
        ]
    return [("prediction", "FP32", [1]), ("id", "BYTES", [1])]


def model_metadata(model: LoadedModel, versions: list[int]) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": f.name, "datatype": _feature_datatype(f), "shape": [-1, 1]} for f in model.spec.features],
        "outputs": [
            {"name": n, "datatype": d, "shape": [-1] if s == [1] else [-1, *s]} for n, d, s in _outputs_of(model)
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
                {"name": f.name, "data_type": triton_type[_feature_datatype(f)], "dims": [1]}
                for f in model.spec.features
            ],
            # one value per row is answered as [N]: Triton says so with dims [1] reshaped to []
            "output": [
                {"name": n, "data_type": triton_type[d], "dims": s, **({"reshape": {"shape": []}} if s == [1] else {})}
                for n, d, s in _outputs_of(model)
            ],
            "version_policy": {"latest": {"num_versions": 1}},
        }
    )


# --- inference --------------------------------------------------------------------------


EXTRA_INPUTS = 64
"""Inputs beyond the spec's features that are still read (and reported as unknown, or
ignored with ``unknown_fields: ignore``); more make the request malformed (400) before any
tensor is decoded, so 10,000 inputs cost a count, not 10,000 violations."""


def columns_from_tensors(
    model: LoadedModel, body: bytes, header_length: str | None, max_rows: int
) -> tuple[Columns, Any]:
    """Decode a V2 request into the guards' columns. Returns (columns, request)."""
    limit = len(model.guards.names) + EXTRA_INPUTS
    request, binary = decode_request(body, header_length, max_inputs=limit, max_rows=max_rows)
    if not request.inputs:
        raise PayloadError("the request has no inputs")
    if len(request.inputs) > limit:
        raise PayloadError(
            f"the request has {len(request.inputs)} inputs; {model.name!r} takes one per feature "
            f"({len(model.guards.names)}), and at most {limit} are read"
        )
    names = model.guards.name_set
    data: dict[str, Any] = {}
    unknown_names: list[str] = []
    rows: int | None = None
    offset = 0
    width = len(model.guards.names)
    if (
        len(request.inputs) == 1
        and model.guards.numeric
        and request.inputs[0].name not in names
        and request.inputs[0].shape[1:] == [width]
        and width > 1
    ):
        return _matrix_columns(model, request.inputs[0], binary, max_rows), request
    for tensor in request.inputs:
        if tensor.name in data or tensor.name in unknown_names:
            raise PayloadError(f"input {quoted(tensor.name)} is given twice")
        column, offset = decode_tensor(tensor, binary, offset)
        shape = tensor.shape
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise PayloadError(
                f"input {quoted(tensor.name)}: shape {shape_text(shape)}; a feature is a [N] or [N, 1] tensor"
            )
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise PayloadError(f"input {quoted(tensor.name)} has {shape[0]} rows where the others have {rows}")
        if tensor.name in names:
            data[tensor.name] = column
        else:
            unknown_names.append(tensor.name)
    if offset != len(binary):
        raise PayloadError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    n = rows or 0
    if n == 0:
        raise PayloadError("the inputs hold no rows")
    if n > max_rows:
        raise PayloadTooLargeError(f"{n} rows in one request; the limit is {max_rows}", max_rows=max_rows)
    unknown = [(i, name, None) for name in unknown_names for i in range(n)]
    return Columns(n, data, unknown=unknown), request


def _matrix_columns(model: LoadedModel, tensor: Any, binary: Any, max_rows: int) -> Columns:
    """One ``[N, F]`` tensor holding every feature of an all-numeric spec, in spec order
    (how a model's own input is usually sent). The guards check it as a matrix."""
    if tensor.datatype == "BYTES":
        raise PayloadError(f"input {quoted(tensor.name)}: a matrix of every feature must be numeric, not BYTES")
    column, offset = decode_tensor(tensor, binary, 0)
    if offset != len(binary):
        raise PayloadError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    n, width = tensor.shape
    if n == 0:
        raise PayloadError("the inputs hold no rows")
    if n > max_rows:
        raise PayloadTooLargeError(f"{n} rows in one request; the limit is {max_rows}", max_rows=max_rows)
    names = model.guards.names
    if isinstance(column, np.ndarray) and column.dtype.kind in "fiu":
        if n == 1:  # the guards' and the transform's one-row lane (``Columns.row``)
            x = np.asarray(column.reshape(1, width), dtype=np.float64)
            return matrix_to_columns(x, names, tuple(x[0].tolist()))
        return matrix_to_columns(column.reshape(n, width), names)
    cells = list(column)  # JSON data with nulls (missing cells) or booleans: one column per feature
    return Columns(n, {name: cells[j::width] for j, name in enumerate(names)})


def _flag(parameters: dict[str, Any] | None, key: str, default: bool) -> bool:
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise PayloadError(f"parameter {key!r} must be true or false, not {quoted(value)}")
    return value


def _wanted(request: Any, available: list[str]) -> list[tuple[str, bool]]:
    """(output name, send binary) for every output to answer."""
    default_binary = _flag(request.parameters, "binary_data_output", False)
    if not request.outputs:
        return [(name, default_binary) for name in available]
    wanted: list[tuple[str, bool]] = []
    for out in request.outputs:
        if out.name not in available:
            raise PayloadError(f"unknown output {quoted(out.name)}; this model answers {', '.join(available)}")
        if any(name == out.name for name, _ in wanted):
            raise PayloadError(f"output {quoted(out.name)} is requested twice")
        wanted.append((out.name, _flag(out.parameters, "binary_data", default_binary)))
    return wanted


def _output_arrays(outcome: Any) -> dict[str, tuple[str, Any]]:
    """Output name -> (datatype, values) from a prediction outcome."""
    arrays: dict[str, tuple[str, Any]] = {"id": ("BYTES", outcome.ids)}
    if outcome.probabilities is not None:
        labels = outcome.model.spec.output.labels
        arrays["label"] = ("BYTES", [labels[i] for i in outcome.label_index.tolist()])
        arrays["probabilities"] = ("FP32", outcome.probabilities)
        arrays["confidence"] = ("FP32", outcome.confidence)
    else:
        arrays["prediction"] = ("FP32", outcome.values)
    return arrays


def _encode_outputs(
    model: LoadedModel, v2_request: Any, wanted: list[tuple[str, bool]], outcome: Any
) -> tuple[bytes, int | None]:
    """The V2 response: the ``wanted`` outputs, JSON or binary, of ``outcome``."""
    arrays = _output_arrays(outcome)
    outputs: list[ResponseOutput] = []
    binaries: list[bytes] = []
    n = len(outcome.ids)
    for name, binary in wanted:
        datatype, values = arrays[name]
        shape = [n, values.shape[1]] if isinstance(values, np.ndarray) and values.ndim == 2 else [n]
        if binary:
            raw = (
                encode_bytes_tensor(values)
                if datatype == "BYTES"
                else np.ascontiguousarray(values, dtype="<f4").tobytes()
            )
            binaries.append(raw)
            outputs.append(
                ResponseOutput(name=name, datatype=datatype, shape=shape, parameters={"binary_data_size": len(raw)})
            )
        else:
            data = values if isinstance(values, list) else values.reshape(-1).tolist()
            outputs.append(ResponseOutput(name=name, datatype=datatype, shape=shape, data=data))
    response = InferenceResponse(
        model_name=model.name, model_version=str(model.version), id=v2_request.id, outputs=outputs
    )
    return encode_response(response, binaries)


async def answer_v2(
    gateway: Gateway, model: LoadedModel, body: bytes, header_length: str | None, deadline: float | None = None
) -> tuple[bytes, int | None]:
    """The V2 answer to an inference body: (content, JSON header length when binary
    outputs follow it). Raises ``GatewayError``s."""
    columns, v2_request = columns_from_tensors(model, body, header_length, gateway.settings.max_batch_rows)
    wanted = _wanted(v2_request, [name for name, _, _ in _outputs_of(model)])
    outcome = await run_predict(gateway, model, columns, deadline)
    return _encode_outputs(model, v2_request, wanted, outcome)


def answer_v2_now(
    gateway: Gateway, model: LoadedModel, body: bytes, header_length: str | None
) -> tuple[bytes, int | None] | None:
    """``answer_v2`` computed now, or None if the prediction cannot run inline (batched or
    slow; the caller then takes ``answer_v2``, which decodes the body again)."""
    if gateway.batcher(model) is not None:
        return None  # known before decoding
    columns, v2_request = columns_from_tensors(model, body, header_length, gateway.settings.max_batch_rows)
    wanted = _wanted(v2_request, [name for name, _, _ in _outputs_of(model)])
    if not inline(gateway, model, columns.n_rows):
        return None
    return _encode_outputs(model, v2_request, wanted, predict_inline(gateway, model, columns))


def v2_target(path_middle: str) -> tuple[str, int | None]:
    """``name`` or ``name/versions/v`` (between ``/v2/models/`` and ``/infer``)."""
    name, sep, version = path_middle.partition("/versions/")
    if "/" in name or (sep and "/" in version):
        raise ModelNotFoundError("no such endpoint")
    return name, (_version(version) if sep else None)


async def _infer(request: Request[Any, Any, Any], model: LoadedModel) -> Response[bytes]:
    gateway = gateway_of(request)
    content, header_length = await answer_v2(
        gateway, model, await request.body(), request.headers.get("inference-header-content-length")
    )
    if header_length is None:
        return Response(content=content, media_type="application/json")
    return Response(
        content=content,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )


@post(
    ["/v2/models/{name:str}/infer", "/v2/models/{name:str}/versions/{version:str}/infer"],
    status_code=200,
    summary="V2 inference",
)
async def infer(request: Request[Any, Any, Any], name: str, version: str | None = None) -> Response[bytes]:
    """Guard, transform and predict V2 input tensors (JSON or binary tensor data)."""
    return await _infer(request, _model(request, name, version))


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
    infer,
    repository_index,
    repository_load,
    repository_unload,
]
