"""The Open Inference Protocol (V2), as KServe and Triton speak it.

Inputs are the spec's features, one tensor each, batched on the first dimension (shape
``[N]`` or ``[N, 1]``), or, for an all-numeric spec, one ``[N, F]`` tensor of every
feature in spec order. Outputs: ``label`` (BYTES), ``probabilities`` (FP32 ``[N, k]`` in
the spec's label order) and ``confidence`` (FP32) for classifiers, ``prediction`` (FP32)
for regressors, and ``id`` (BYTES) for feedback.

JSON tensors and the binary tensor data extension are one codec: a binary request is the
same JSON header followed by raw tensor bytes (``Inference-Header-Content-Length`` says
where the header ends), and each output is answered binary or JSON as the request asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.codecs.base import JSON_HEADERS, Answer, Decoded, Headers, header
from gateway.errors import PayloadError, PayloadTooLargeError
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
from gateway.spec import BooleanFeature, CategoryFeature, IntegerFeature
from gateway.table import Columns, matrix_to_columns

if TYPE_CHECKING:
    from gateway.registry import LoadedModel
    from gateway.service import Outcome

__all__ = ["EXTRA_INPUTS", "V2", "columns_from_tensors", "feature_datatype", "outputs_of"]

EXTRA_INPUTS = 64
"""Inputs beyond the spec's features that are still read (and reported as unknown, or
ignored with ``unknown_fields: ignore``); more make the request malformed (400) before any
tensor is decoded, so 10,000 inputs cost a count, not 10,000 violations."""


def feature_datatype(feature: Any) -> str:
    """The V2 datatype of a spec feature's tensor."""
    if isinstance(feature, CategoryFeature):
        return "BYTES"
    if isinstance(feature, BooleanFeature):
        return "BOOL"
    if isinstance(feature, IntegerFeature):
        return "INT64"
    return "FP64"  # float64 end to end: V2 answers equal V1's to the bit


def outputs_of(model: LoadedModel) -> list[tuple[str, str, list[int]]]:
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


def _output_arrays(outcome: Outcome) -> dict[str, tuple[str, Any]]:
    """Output name -> (datatype, values) from a prediction outcome."""
    arrays: dict[str, tuple[str, Any]] = {"id": ("BYTES", outcome.ids)}
    if outcome.probabilities is not None:
        labels = outcome.model.spec.output.labels  # type: ignore[union-attr]
        arrays["label"] = ("BYTES", [labels[i] for i in outcome.label_index.tolist()])  # type: ignore[union-attr]
        arrays["probabilities"] = ("FP32", outcome.probabilities)
        arrays["confidence"] = ("FP32", outcome.confidence)
    else:
        arrays["prediction"] = ("FP32", outcome.values)
    return arrays


class _Request:
    """What encoding a V2 answer needs of its request: the request id and the outputs wanted."""

    __slots__ = ("id", "wanted")

    def __init__(self, request_id: str | None, wanted: list[tuple[str, bool]]) -> None:
        self.id = request_id
        self.wanted = wanted


_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string"},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}


class V2Codec:
    """The Open Inference Protocol (see the module docstring)."""

    name = "v2"
    media_types: tuple[str, ...] = ("application/json", "application/octet-stream")
    """JSON, or binary tensor data after a JSON header (``Inference-Header-Content-Length``)."""
    request_schema: dict[str, Any] = {  # noqa: RUF012 - read only
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
            "outputs": {
                "type": "array",
                "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
            },
        },
    }

    def decode(self, model: LoadedModel, body: bytes, headers: Headers, max_rows: int) -> Decoded:
        header_length = header(headers, b"inference-header-content-length")
        columns, request = columns_from_tensors(model, body, header_length, max_rows)
        wanted = _wanted(request, [name for name, _, _ in outputs_of(model)])
        return Decoded(columns, _Request(request.id, wanted))

    def encode(self, decoded: Decoded, outcome: Outcome) -> Answer:
        """The V2 response: the wanted outputs of ``outcome``, JSON or binary."""
        request: _Request = decoded.state
        arrays = _output_arrays(outcome)
        outputs: list[ResponseOutput] = []
        binaries: list[bytes] = []
        n = len(outcome.ids)
        for name, binary in request.wanted:
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
        model = outcome.model
        response = InferenceResponse(
            model_name=model.name, model_version=str(model.version), id=request.id, outputs=outputs
        )
        content, header_length = encode_response(response, binaries)
        if header_length is None:
            return content, JSON_HEADERS
        return content, [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(header_length).encode()),
        ]


V2 = V2Codec()
