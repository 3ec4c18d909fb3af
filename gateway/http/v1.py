"""V1 endpoints: prediction, and model listing and description.

``POST /v1/models/{name}:predict`` and ``/v1/models/{name}/versions/{v}:predict`` take
``{"instances": [{feature: value, ...}, ...]}``. The ``:predict`` suffix shares a path
segment with the name, so the routes capture the segment and split it here.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import numpy as np
from litestar import Request, Response, get, post

from gateway.batching import runs_long
from gateway.errors import DeadlineExceededError, ModelNotFoundError, PayloadError, PayloadTooLargeError
from gateway.lifecycle import Gateway
from gateway.protocol.duplicate_keys import refuse_duplicate_keys
from gateway.protocol.json_values import OBJECT, refuse_many_values
from gateway.registry import LoadedModel
from gateway.repository import VERSION_PATTERN
from gateway.service import Outcome, Prepared, complete, predict, prepare, reject, v1_predictions
from gateway.table import matrix_to_columns, records_to_columns

if TYPE_CHECKING:
    from gateway.runtime import Inference
    from gateway.table import Columns

__all__ = ["ROUTES"]

T = TypeVar("T")

TOO_DEEP = "the body nests arrays or objects too deeply"
"""msgspec raises RecursionError on pathological nesting (a 1,000-deep array decodes in
microseconds, then overflows the stack): a client error, answered 400 like any bad JSON."""


NOT_UTF8 = "the body is not valid UTF-8 (JSON text must be)"


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A V1 prediction request."""

    instances: list[dict[str, Any]]


_decode_predict = msgspec.json.Decoder(PredictRequest).decode
_decode_predict_wide = msgspec.json.Decoder(PredictRequest, float_hook=float).decode
"""Only for bodies the fast decoder refused with "Number out of range": parses every float
in Python (slower), so 1e400 arrives as inf and the guards answer ``not_finite`` (422)."""
_encode = msgspec.json.Encoder().encode


def gateway_of(request: Request[Any, Any, Any]) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _split(segment: str, action: str) -> str:
    head, sep, tail = segment.rpartition(":")
    if not sep or tail != action:
        raise ModelNotFoundError(f"no such endpoint: expected '<name-or-version>:{action}'")
    return head


def _version(text: str) -> int:
    if not VERSION_PATTERN.match(text):
        raise ModelNotFoundError(f"no version {text[:20]!r}: versions are whole numbers from 1")
    return int(text)


def decode_json(decode: Callable[[bytes], T], body: bytes, what: str) -> T:
    """``decode(body)``, with every way a body can be malformed mapped to ``PayloadError``
    (400): a schema mismatch, broken JSON, or pathological nesting."""
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        raise PayloadError(f"invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PayloadError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError(TOO_DEEP) from None
    except UnicodeDecodeError:
        raise PayloadError(NOT_UTF8) from None


def _decode_predict_request(body: bytes) -> PredictRequest:
    try:
        return _decode_predict(body)
    except msgspec.ValidationError as exc:
        if not str(exc).startswith("Number out of range"):
            raise
        return _decode_predict_wide(body)


def decode_instances(body: bytes, max_rows: int) -> list[dict[str, Any]]:
    instances = decode_json(_decode_predict_request, body, "prediction request").instances
    if not instances:
        raise PayloadError("'instances' holds no rows")
    if len(instances) > max_rows:
        raise PayloadTooLargeError(f"{len(instances)} rows in one request; the limit is {max_rows}", max_rows=max_rows)
    refuse_duplicate_keys(body, 1 + sum(map(len, instances)))
    return instances


def _prepare_and_infer(model: LoadedModel, columns: Columns, guarded: bool) -> tuple[Prepared, Inference | None, float]:
    """The part of a prediction that may run on a worker thread: it changes no shared state."""
    prepared = prepare(model, columns, guarded=guarded)
    if prepared.matrix is None:
        return prepared, None, 0.0
    return prepared, model.runtime.run(prepared.matrix), time.perf_counter()


def inline(gateway: Gateway, model: LoadedModel, rows: int) -> bool:
    """True if a prediction of ``rows`` rows runs inline, on the event loop's thread: the
    model is not batched and the call is not expected to be slow (``runs_long``)."""
    return gateway.batcher(model) is None and not runs_long(model.runtime, rows)


def predict_inline(gateway: Gateway, model: LoadedModel, columns: Columns) -> Outcome:
    """The prediction of a request that ``inline`` allows, with the server's settings."""
    settings = gateway.settings
    return predict(model, columns, gateway.predictions, guarded=settings.guards, monitored=settings.monitoring)


async def run_predict(gateway: Gateway, model: LoadedModel, columns: Columns, deadline: float | None = None) -> Outcome:
    """``service.predict`` with the server's policies around it:

    - a batch expected to be slow is guarded, transformed and inferred on a worker thread,
      so the event loop keeps answering health checks and small requests meanwhile;
    - a model with dynamic batching on (``Gateway.batcher``) joins its queue;
    - past ``deadline`` (``time.monotonic()``) the request fails with
      ``DeadlineExceededError`` (504), and a late result is dropped before anything of it
      is counted or recorded (ids, metrics, drift).

    Everything else (``inline``) takes the shortest path: everything on this thread, now.
    """
    if inline(gateway, model, columns.n_rows):
        return predict_inline(gateway, model, columns)
    settings = gateway.settings
    guarded, monitored = settings.guards, settings.monitoring
    batcher = gateway.batcher(model)
    slow = runs_long(model.runtime, columns.n_rows)
    if deadline is None:
        deadline = time.monotonic() + settings.request_timeout_seconds
    try:
        async with asyncio.timeout(deadline - time.monotonic()):
            if slow:
                run = functools.partial(_prepare_and_infer, model, columns, guarded)
                prepared, inference, t3 = await asyncio.get_running_loop().run_in_executor(None, run)
            else:
                assert batcher is not None
                prepared = prepare(model, columns, guarded=guarded)
                inference = None if prepared.matrix is None else await batcher.run(prepared.matrix)
                t3 = time.perf_counter()
    except TimeoutError:
        raise DeadlineExceededError(
            f"the prediction did not finish within {settings.request_timeout_seconds:g} s; nothing was predicted"
        ) from None
    if inference is None:
        reject(model, prepared, monitored=monitored)
    return complete(model, prepared, inference, t3, gateway.predictions, monitored=monitored)


@functools.lru_cache(maxsize=256)
def _numeric_decoder(names: tuple[str, ...]) -> Callable[[bytes], Any]:
    """A decoder of ``{"instances": [...]}`` whose rows are msgspec Structs with exactly
    ``names`` as float fields: no per-row dict or key string is built, and a row with a
    missing, extra or non-numeric field fails in C (built once per feature list)."""
    fields = [f"f{j}" for j in range(len(names))]
    row = msgspec.defstruct(
        "NumericRow",
        [(f, float) for f in fields],
        rename=dict(zip(fields, names, strict=True)),
        forbid_unknown_fields=True,
        gc=False,
    )
    request = msgspec.defstruct("NumericPredictRequest", [("instances", list[row])], forbid_unknown_fields=True)  # type: ignore[valid-type]
    return msgspec.json.Decoder(request).decode


def numeric_columns(body: bytes, names: Sequence[str], max_rows: int) -> Columns | None:
    """For a spec whose features are all numbers: the body's rows as one float64 matrix,
    decoded and type-checked in C (no per-cell Python), or None when the body is anything
    but rows holding exactly the features as JSON numbers (a missing or extra field, a
    string, a bool, null, a malformed body): those take the general path, which names
    every problem. Numbers outside float64 (1e400) also take it, and become ``not_finite``.
    """
    width = len(names)
    if width < 2:
        return None
    try:
        instances = _numeric_decoder(tuple(names))(body).instances
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    n = len(instances)
    if not 0 < n <= max_rows:
        return None
    refuse_duplicate_keys(body, 1 + n * width)
    if n == 1:  # the common request: its tuple of floats is the row the guards read
        row = _astuple(instances[0])
        return matrix_to_columns(np.array((row,)), names, row)
    flat = np.fromiter(chain.from_iterable(map(_astuple, instances)), dtype=np.float64, count=n * width)
    return matrix_to_columns(flat.reshape(n, width), names)


_astuple = msgspec.structs.astuple


EXTRA_FIELDS = 64
"""Fields a row may carry beyond the features, on average, before the body's values are
too many to decode (V2 reads as many inputs beyond the features)."""


def value_limit(width: int, max_rows: int) -> int:
    """The most JSON values (``gateway.protocol.json_values``) a V1 body is decoded with:
    ``max_rows`` rows, each an object of ``width`` features and ``EXTRA_FIELDS`` more
    values (unknown fields, or fields the spec ignores), in the body's object and list."""
    return max_rows * (width + EXTRA_FIELDS + OBJECT) + OBJECT + 1


def decode_v1(gateway: Gateway, model: LoadedModel, body: bytes) -> Columns:
    """A V1 prediction request body as the guards' columns (raises ``GatewayError``s).

    A body of more values than ``value_limit`` is refused (413) before the general decoder
    builds them: values cost memory, not bytes (``gateway.protocol.json_values``). The
    all-numeric decoder needs no such count: it builds a float per cell and stops at the
    first value that is not a number."""
    names = model.guards.names
    max_rows = gateway.settings.max_batch_rows
    columns = numeric_columns(body, names, max_rows) if model.guards.numeric else None
    if columns is None:
        refuse_many_values(body, value_limit(len(names), max_rows), "rows cap × (features + 68) + 5")
        instances = decode_instances(body, max_rows)
        columns = records_to_columns(instances, names, model.guards.ignored)
    return columns


def encode_v1(model: LoadedModel, outcome: Outcome) -> bytes:
    return _encode({"model_name": model.name, "model_version": str(model.version), "predictions": v1_predictions(outcome)})


async def answer_v1(gateway: Gateway, model: LoadedModel, body: bytes, deadline: float | None = None) -> bytes:
    """The V1 answer to a prediction request body (raises ``GatewayError``s)."""
    columns = decode_v1(gateway, model, body)
    return encode_v1(model, await run_predict(gateway, model, columns, deadline))


def answer_v1_now(gateway: Gateway, model: LoadedModel, body: bytes) -> bytes | None:
    """``answer_v1`` computed now, or None if the prediction cannot run inline (batched or
    slow; the caller then takes ``answer_v1``, which decodes the body again)."""
    if gateway.batcher(model) is not None:
        return None  # known before decoding
    columns = decode_v1(gateway, model, body)
    if not inline(gateway, model, columns.n_rows):
        return None
    return encode_v1(model, predict_inline(gateway, model, columns))


def v1_target(path_rest: str) -> tuple[str, int | None]:
    """``name:predict`` or ``name/versions/v:predict`` (the path after ``/v1/models/``) to
    (name, version or None); ``ModelNotFoundError`` for anything else."""
    target = _split(path_rest, "predict")
    name, sep, version = target.partition("/versions/")
    if "/" in name or (sep and "/" in version):
        raise ModelNotFoundError("no such endpoint")
    return name, (_version(version) if sep else None)


async def _answer(request: Request[Any, Any, Any], model: LoadedModel) -> Response[bytes]:
    body = await answer_v1(gateway_of(request), model, await request.body())
    return Response(content=body, media_type="application/json")


@post("/v1/models/{target:str}", status_code=200, summary="Predict with the default version")
async def predict_default(request: Request[Any, Any, Any], target: str) -> Response[bytes]:
    """Guard, transform and predict ``{"instances": [...]}`` with the model's default version."""
    model = gateway_of(request).model_registry.get(_split(target, "predict"))
    return await _answer(request, model)


@post("/v1/models/{name:str}/versions/{target:str}", status_code=200, summary="Predict with a pinned version")
async def predict_version(request: Request[Any, Any, Any], name: str, target: str) -> Response[bytes]:
    """Guard, transform and predict ``{"instances": [...]}`` with one pinned version."""
    model = gateway_of(request).model_registry.get(name, _version(_split(target, "predict")))
    return await _answer(request, model)


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


ROUTES = [predict_default, predict_version, list_models, get_model]
