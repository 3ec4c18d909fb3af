"""Records from what the hot path handed over: a batch's columns, violations and outcome.

Runs on the log writer's thread only: the hot path keeps references to the objects it
already built (nothing of them is changed after the answer), and every per-row Python
object of a record is made here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.table import MatrixColumns

if TYPE_CHECKING:
    from gateway.registry import LoadedModel
    from gateway.service import Outcome
    from gateway.spec import FeatureSpec
    from gateway.table import Columns
    from gateway.violations import Violation

__all__ = ["first_row", "input_rows", "logged_features", "predictions", "violations_by_row"]


def logged_features(spec: FeatureSpec) -> tuple[str, ...]:
    """The features whose values are logged (those not marked ``log: false``)."""
    return tuple(f.name for f in spec.features if f.log)


def _cells(column: Any, rows: Sequence[int] | None) -> list[Any]:
    if isinstance(column, np.ndarray):
        return (column if rows is None else column[np.asarray(rows, dtype=np.intp)]).tolist()  # type: ignore[no-any-return]
    cells = list(column) if rows is None else [column[i] for i in rows]
    if cells and type(cells[0]) is bytes:  # never base64 in the log: the text as sent
        cells = [c.decode("utf-8", "replace") if isinstance(c, bytes) else c for c in cells]
    return cells


def input_rows(columns: Columns, names: tuple[str, ...], rows: Sequence[int] | None) -> list[dict[str, Any]]:
    """The rows ``rows`` (None: all) of ``columns`` as sent, restricted to the features
    ``names`` plus every field that is not a feature (``Columns.unknown``)."""
    data = columns.data
    count = columns.n_rows if rows is None else len(rows)
    if columns.matrix is not None and isinstance(data, MatrixColumns) and len(names) == len(data.index):
        matrix = columns.matrix if rows is None else columns.matrix[np.asarray(rows, dtype=np.intp)]
        keys = list(data.index)
        out = [dict(zip(keys, r, strict=True)) for r in matrix.tolist()]
    else:
        keys, cols = [], []
        for name in names:
            if name not in data:
                continue
            cells = _cells(data[name], rows)
            mask = columns.missing.get(name)
            if mask is not None:
                picked = mask if rows is None else mask[np.asarray(rows, dtype=np.intp)]
                for i in np.flatnonzero(picked).tolist():
                    cells[i] = None
            keys.append(name)
            cols.append(cells)
        out = [dict(zip(keys, r, strict=True)) for r in zip(*cols, strict=True)] if cols else [{} for _ in range(count)]
    if columns.unknown:
        position = {r: i for i, r in enumerate(rows)} if rows is not None else None
        for row, field, value in columns.unknown:
            at = row if position is None else position.get(row)
            if at is not None:
                out[at][field] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out


_PLAIN = frozenset({str, int, float, bool, type(None)})


def first_row(columns: Columns, names: tuple[str, ...]) -> dict[str, Any]:
    """``input_rows(columns, names, None)[0]`` for a one-row batch, with no numpy call
    where the decoder left plain Python values (the common one-row request)."""
    data = columns.data
    out: dict[str, Any]
    if columns.row is not None and len(columns.row) == len(names) and isinstance(data, MatrixColumns):
        out = dict(zip(data.index, columns.row, strict=True))
    elif type(data) is dict and not columns.missing:
        out = {k: data[k][0] for k in names if k in data}
        if not _PLAIN.issuperset(map(type, out.values())):  # a numpy scalar of an array column, bytes
            return input_rows(columns, names, None)[0]
    else:
        return input_rows(columns, names, None)[0]
    for _, field, value in columns.unknown:
        out[field] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out


def predictions(model: LoadedModel, outcome: Outcome, rows: Sequence[int] | None) -> list[dict[str, Any] | None]:
    """What the model answered for ``rows`` (None: all): ``{"label", "confidence",
    "probabilities"}`` for a classifier, ``{"value"}`` for a regressor."""
    pick = None if rows is None else np.asarray(rows, dtype=np.intp)
    if outcome.probabilities is not None and outcome.label_index is not None and model.spec.output is not None:
        labels = model.spec.output.labels
        probabilities = outcome.probabilities if pick is None else outcome.probabilities[pick]
        index = outcome.label_index if pick is None else outcome.label_index[pick]
        confidence = probabilities[np.arange(len(index)), index]
        return [
            {"label": labels[k], "confidence": c, "probabilities": dict(zip(labels, p, strict=True))}
            for k, c, p in zip(index.tolist(), confidence.tolist(), probabilities.tolist(), strict=True)
        ]
    if outcome.values is not None:
        values = outcome.values if pick is None else outcome.values[pick]
        return [{"value": v} for v in values.reshape(-1).tolist()]
    return [None] * (len(outcome.ids) if rows is None else len(rows))


def violations_by_row(violations: Sequence[Violation]) -> dict[int, list[Violation]]:
    """A batch's violations by the row they concern."""
    out: dict[int, list[Violation]] = {}
    for v in violations:
        out.setdefault(v.row, []).append(v)
    return out
