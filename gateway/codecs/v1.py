"""The V1 records protocol: ``{"instances": [{feature: value, ...}, ...]}`` in, and
``{"model_name", "model_version", "predictions": [...]}`` out (see the contract)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from gateway.codecs.base import JSON_HEADERS, Answer, Decoded, Headers
from gateway.errors import PayloadError, PayloadTooLargeError
from gateway.lanes import row_type, typed_columns
from gateway.protocol.duplicate_keys import refuse_duplicate_keys
from gateway.protocol.json_body import decode_json
from gateway.protocol.json_values import OBJECT, refuse_many_values
from gateway.table import matrix_to_columns, records_to_columns

if TYPE_CHECKING:
    from gateway.guards import Guards
    from gateway.registry import LoadedModel
    from gateway.service import Outcome
    from gateway.table import Columns

__all__ = [
    "EXTRA_FIELDS",
    "V1",
    "decode_instances",
    "encode_predictions",
    "numeric_columns",
    "predictions",
    "table_columns",
    "value_limit",
]


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A V1 prediction request."""

    instances: list[dict[str, Any]]


_decode_predict = msgspec.json.Decoder(PredictRequest).decode
_decode_predict_wide = msgspec.json.Decoder(PredictRequest, float_hook=float).decode
"""Only for bodies the fast decoder refused with "Number out of range": parses every float
in Python (slower), so 1e400 arrives as inf and the guards answer ``not_finite`` (422)."""
_encode = msgspec.json.Encoder().encode


def _decode_predict_request(body: bytes) -> PredictRequest:
    try:
        return _decode_predict(body)
    except msgspec.ValidationError as exc:
        if not str(exc).startswith("Number out of range"):
            raise
        return _decode_predict_wide(body)


def decode_instances(body: bytes, max_rows: int) -> list[dict[str, Any]]:
    """The rows of a V1 body as dicts (the general decoder: any spec, any value)."""
    instances = decode_json(_decode_predict_request, body, "prediction request").instances
    if not instances:
        raise PayloadError("'instances' holds no rows")
    if len(instances) > max_rows:
        raise PayloadTooLargeError(f"{len(instances)} rows in one request; the limit is {max_rows}", max_rows=max_rows)
    refuse_duplicate_keys(body, 1 + sum(map(len, instances)))
    return instances


@functools.lru_cache(maxsize=256)
def _typed_decoder(names: tuple[str, ...], kinds: tuple[str, ...]) -> Callable[[bytes], Any] | None:
    """A decoder of ``{"instances": [...]}`` whose rows are ``gateway.lanes.row_type``
    Structs: no per-row dict or key string is built, and a row with a missing, extra or
    wrongly typed field fails in C (built once per feature list; None where there is no
    such Struct)."""
    row = row_type(names, kinds)
    if row is None:
        return None
    request = msgspec.defstruct("TypedPredictRequest", [("instances", list[row])], forbid_unknown_fields=True)  # type: ignore[valid-type]
    return msgspec.json.Decoder(request).decode


_astuple = msgspec.structs.astuple
_TYPED_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError)


def _typed_instances(body: bytes, names: tuple[str, ...], kinds: tuple[str, ...], max_rows: int) -> list[Any] | None:
    """The body's rows decoded by the typed decoder of ``names`` and ``kinds`` (one Struct
    per row), or None when it cannot take them: they then take the general path. Raises
    the duplicate-key refusal the general path would."""
    decode = _typed_decoder(names, kinds)
    if decode is None:
        return None
    try:
        instances: list[Any] = decode(body).instances
    except _TYPED_ERRORS:
        return None
    if not 0 < len(instances) <= max_rows:
        return None
    refuse_duplicate_keys(body, 1 + len(instances) * len(names))
    return instances


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
    instances = _typed_instances(body, tuple(names), ("number",) * width, max_rows)
    if instances is None:
        return None
    n = len(instances)
    if n == 1:  # the common request: its tuple of floats is the row the guards read
        row = _astuple(instances[0])
        return matrix_to_columns(np.array((row,)), names, row)
    flat = np.fromiter(chain.from_iterable(map(_astuple, instances)), dtype=np.float64, count=n * width)
    return matrix_to_columns(flat.reshape(n, width), names)


def table_columns(body: bytes, guards: Guards, max_rows: int) -> Columns | None:
    """For a spec of numbers, categories and booleans: the body's rows in the table lane
    (``gateway.lanes``), decoded and type-checked in C, or None when any row is not
    exactly the features, each of its JSON type (the general path names the problem).
    A batch the guards find a violation in is named from the general columns
    (``Columns.general``), so every value is echoed as it was sent."""
    instances = _typed_instances(body, guards.names, guards.kinds, max_rows)
    if instances is None:
        return None
    columns = typed_columns(instances, guards)
    columns.general = functools.partial(_general_columns, body, guards, max_rows)
    return columns


def _general_columns(body: bytes, guards: Guards, max_rows: int) -> Columns:
    return records_to_columns(decode_instances(body, max_rows), guards.names, guards.ignored)


EXTRA_FIELDS = 64
"""Fields a row may carry beyond the features, on average, before the body's values are
too many to decode (V2 reads as many inputs beyond the features)."""


def value_limit(width: int, max_rows: int) -> int:
    """The most JSON values (``gateway.protocol.json_values``) a V1 body is decoded with:
    ``max_rows`` rows, each an object of ``width`` features and ``EXTRA_FIELDS`` more
    values (unknown fields, or fields the spec ignores), in the body's object and list."""
    return max_rows * (width + EXTRA_FIELDS + OBJECT) + OBJECT + 1


def predictions(outcome: Outcome) -> list[dict[str, Any]]:
    """The ``predictions`` list of a V1 answer (see the contract), as dicts: the general
    encoding, for rows that carry violations (``encode_predictions`` is the fast one)."""
    ids = outcome.ids
    if outcome.probabilities is not None:
        labels = outcome.model.spec.output.labels  # type: ignore[union-attr]
        probs = outcome.probabilities.tolist()
        conf = outcome.confidence.tolist()  # type: ignore[union-attr]
        idx = outcome.label_index.tolist()  # type: ignore[union-attr]
        rows = [
            {"label": labels[i], "probabilities": dict(zip(labels, p, strict=True)), "confidence": c, "id": pid}
            for i, p, c, pid in zip(idx, probs, conf, ids, strict=True)
        ]
    else:
        rows = [{"value": v, "id": pid} for v, pid in zip(outcome.values.tolist(), ids, strict=True)]  # type: ignore[union-attr]
    if outcome.review is not None:
        for row in np.flatnonzero(outcome.review).tolist():
            rows[row]["review"] = True
    for row, marks in outcome.marks.items():
        rows[row]["flagged"] = any(v.action == "flag" for v in marks)
        rows[row]["violations"] = marks
    return rows


def _pieces(values: list[Any]) -> list[bytes]:
    """Each number of ``values`` as msgspec writes it in JSON, from one ``encode`` call: a
    number's JSON holds no comma, so the list's text splits into its items exactly."""
    return _encode(values)[1:-1].split(b",")


def _string_pieces(values: list[str]) -> list[bytes]:
    """Each string's JSON text without its quotes, from one ``encode`` call: inside a JSON
    string a quote is always escaped, so ``","`` occurs only between two items."""
    return _encode(values)[2:-2].split(b'","')


@functools.lru_cache(maxsize=256)
def _templates(labels: tuple[str, ...] | None) -> tuple[tuple[bytes, bytes], list[bytes]]:
    """The V1 prediction object as a bytes ``%`` template, without and with ``"review":true``,
    for a classifier of ``labels`` (None: a regression), and each label's JSON text."""
    if labels is None:
        head = b'{"value":%s,"id":"%s"'
        encoded: list[bytes] = []
    else:
        encoded = [_encode(label) for label in labels]
        keys = b",".join(key.replace(b"%", b"%%") + b":%s" for key in encoded)
        head = b'{"label":%s,"probabilities":{' + keys + b'},"confidence":%s,"id":"%s"'
    return (head + b"}", head + b',"review":true}'), encoded


def encode_predictions(outcome: Outcome) -> bytes:
    """The ``predictions`` list of a V1 answer as JSON, the same bytes as encoding
    ``predictions(outcome)``, written by whole columns: every number of the batch is
    formatted by one msgspec call per output, and each row is one ``%`` of a bytes template
    (no dict per prediction). Rows with violations take the general encoding."""
    if outcome.marks:
        return _encode(predictions(outcome))
    ids = _string_pieces(outcome.ids)
    if outcome.probabilities is not None:
        labels = outcome.model.spec.output.labels  # type: ignore[union-attr]
        (plain, review), encoded = _templates(tuple(labels))
        k = len(labels)
        probs = _pieces(outcome.probabilities.ravel().tolist())
        columns = [
            map(encoded.__getitem__, outcome.label_index.tolist()),  # type: ignore[union-attr]
            *(probs[j::k] for j in range(k)),
            _pieces(outcome.confidence.tolist()),  # type: ignore[union-attr]
            ids,
        ]
    else:
        (plain, review), _ = _templates(None)
        columns = [_pieces(outcome.values.tolist()), ids]  # type: ignore[union-attr]
    rows = zip(*columns, strict=True)
    if outcome.review is None:
        return b"[" + b",".join(map(plain.__mod__, rows)) + b"]"
    chosen = map((plain, review).__getitem__, outcome.review.tolist())
    return b"[" + b",".join(map(bytes.__mod__, chosen, rows)) + b"]"


class V1Codec:
    """The V1 records protocol (see the module docstring)."""

    name = "v1"
    media_types: tuple[str, ...] = ("application/json",)
    request_schema: dict[str, Any] = {  # noqa: RUF012 - read only
        "type": "object",
        "required": ["instances"],
        "properties": {"instances": {"type": "array", "minItems": 1, "items": {"type": "object"}}},
    }

    def decode(self, model: LoadedModel, body: bytes, headers: Headers, max_rows: int) -> Decoded:
        """A V1 prediction request body as the guards' columns (raises ``GatewayError``s).

        A body of more values than ``value_limit`` is refused (413) before the general decoder
        builds them: values cost memory, not bytes (``gateway.protocol.json_values``). The
        all-numeric decoder needs no such count: it builds a float per cell and stops at the
        first value that is not a number."""
        guards = model.guards
        names = guards.names
        if guards.numeric:
            columns = numeric_columns(body, names, max_rows)
        else:
            columns = table_columns(body, guards, max_rows) if guards.features else None
        if columns is None:
            refuse_many_values(body, value_limit(len(names), max_rows), "rows cap × (features + 68) + 5")
            columns = records_to_columns(decode_instances(body, max_rows), names, model.guards.ignored)
        return Decoded(columns)

    def encode(self, decoded: Decoded, outcome: Outcome) -> Answer:
        model = outcome.model
        head = _encode({"model_name": model.name, "model_version": str(model.version), "predictions": None})
        return head[:-5] + encode_predictions(outcome) + b"}", JSON_HEADERS


V1 = V1Codec()
