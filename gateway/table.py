"""Rows in any shape users hold them, turned into columns the guards read.

Accepted inputs:

- a list of records (``[{"feature": value, ...}, ...]``), as JSON requests carry them;
- a mapping of columns (``{"feature": [v0, v1, ...] or ndarray, ...}``);
- a pandas or polars DataFrame (imported only if the caller passed one).

Missing values: in records and plain columns a value is missing when the field is absent
or ``None``; ``NaN`` there is a value, and the guards call it ``not_finite``. In a
DataFrame, the library's own null marker (pandas ``NaN``/``NA``/``None``, polars
``null``) means missing, as it does for every other tool that reads that frame.

This module must not know what a valid value is: that is ``gateway.guards``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any

import numpy as np

from gateway.errors import PayloadError

__all__ = ["Columns", "MatrixColumns", "matrix_to_columns", "records_to_columns", "to_columns"]


class Columns:
    """Raw columns of a batch, keyed by feature name.

    Attributes:
        n_rows: number of rows.
        data: feature name -> list of Python values or 1-D ndarray (length ``n_rows``);
            a feature that no row sent is absent from ``data``.
        missing: feature name -> bool ndarray marking missing cells, for sources that mark
            them out of band (DataFrames). Absent means: ``None`` marks missing.
        unknown: ``(row, field, value)`` for every field that is not a feature.
        matrix: for a spec whose features are all numbers, the same cells as one
            ``(n_rows, n_features)`` float64 array in feature order, when the decoder could
            build it (every cell a JSON number, no other field); ``data`` then holds its
            column views. The guards check it in a few whole-matrix operations.
        row: for a one-row batch with ``matrix``, the same cells as a tuple of Python
            floats, when the decoder had them: the guards and the transform then check
            and scale one row with no numpy call (each costs about as much as the work).
        general: for columns a typed lane built (``gateway.lanes``) from values given in
            process, the same batch in the general lane, built on demand: the guards name
            violations from it, each value as it was given.
    """

    __slots__ = ("data", "general", "matrix", "missing", "n_rows", "row", "unknown")

    def __init__(
        self,
        n_rows: int,
        data: dict[str, Any],
        missing: dict[str, np.ndarray] | None = None,
        unknown: list[tuple[int, str, Any]] | None = None,
        matrix: np.ndarray | None = None,
        row: tuple[float, ...] | None = None,
    ) -> None:
        self.n_rows = n_rows
        self.data = data
        self.missing = missing or {}
        self.unknown = unknown or []
        self.matrix = matrix
        self.row = row
        self.general: Callable[[], Columns] | None = None


class MatrixColumns(Mapping[str, np.ndarray]):
    """Feature name -> column of one ``(n, features)`` matrix, as a view made on access.

    A batch that arrives as one matrix (all-numeric specs) stays one: the guards, the
    transform and monitoring work on the matrix, and a column view is only made when
    something asks for a feature by name (a bad cell to name, a drift histogram).
    """

    __slots__ = ("index", "matrix")

    def __init__(self, matrix: np.ndarray, index: Mapping[str, int]) -> None:
        self.matrix = matrix
        self.index = index

    def __getitem__(self, name: str) -> np.ndarray:
        return self.matrix[:, self.index[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, name: object) -> bool:
        return name in self.index


@lru_cache(maxsize=256)
def column_index(names: tuple[str, ...]) -> Mapping[str, int]:
    """Feature name -> its column in a matrix of ``names`` (built once per feature list)."""
    return {name: j for j, name in enumerate(names)}


def matrix_to_columns(matrix: np.ndarray, names: Sequence[str], row: tuple[float, ...] | None = None) -> Columns:
    """An ``(n, len(names))`` numeric matrix, columns in ``names`` order, as ``Columns``;
    ``row``: a one-row matrix's cells as Python floats (``Columns.row``)."""
    x = np.asarray(matrix, dtype=np.float64)
    return Columns(len(x), MatrixColumns(x, column_index(tuple(names))), matrix=x, row=row)  # type: ignore[arg-type]


def records_to_columns(
    records: Sequence[Mapping[str, Any]], names: Sequence[str], ignore: frozenset[str] = frozenset()
) -> Columns:
    """Records to columns. Fields outside ``names`` and ``ignore`` are reported as unknown.

    Fast path: every record has exactly the feature fields, so each column is one
    ``map(itemgetter(name), records)``, a loop that runs in C.
    """
    n = len(records)
    if n == 1:  # the common request: skip the transposition machinery
        rec = records[0]
        if type(rec) is not dict:
            _require_mappings(records)
        data = {name: [rec.get(name)] for name in names}
        unknown = [] if len(rec) == len(names) and all(k in rec for k in names) else _unknown(records, names, ignore)
        return Columns(1, data, unknown=unknown)
    _require_mappings(records)
    if n and set(map(len, records)) == {len(names)}:
        try:  # every record has exactly the features: one C-level pass per column
            return Columns(n, {name: list(map(itemgetter(name), records)) for name in names})
        except KeyError:
            pass  # some record lacks a feature (and so carries another field): slow path
    data = {name: [r.get(name) for r in records] for name in names}
    return Columns(n, data, unknown=_unknown(records, names, ignore))


def _require_mappings(records: Sequence[Any]) -> None:
    if set(map(type, records)) == {dict}:  # the JSON case, checked in C
        return
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise PayloadError(f"row {i} is not an object of feature values", row=i)


def _unknown(
    records: Sequence[Mapping[str, Any]], names: Sequence[str], ignore: frozenset[str]
) -> list[tuple[int, str, Any]]:
    known = set(names) | ignore
    return [(i, k, v) for i, r in enumerate(records) for k, v in r.items() if k not in known]


def mapping_to_columns(cols: Mapping[str, Any], names: Sequence[str], ignore: frozenset[str] = frozenset()) -> Columns:
    """A mapping of equally long columns (lists, tuples or 1-D arrays) to ``Columns``."""
    lengths = {k: _length(k, v) for k, v in cols.items()}
    distinct = set(lengths.values())
    if len(distinct) > 1:
        detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise PayloadError(f"columns have different lengths ({detail})")
    n = distinct.pop() if distinct else 0
    data = {name: _as_column(cols[name]) for name in names if name in cols}
    unknown = [(i, k, _item(v, i)) for k, v in cols.items() if k not in names and k not in ignore for i in range(n)]
    return Columns(n, data, unknown=unknown)


def _length(name: str, col: Any) -> int:
    if isinstance(col, np.ndarray):
        if col.ndim != 1:
            raise PayloadError(f"column {name!r} must be one-dimensional, got shape {col.shape}")
        return int(col.shape[0])
    if isinstance(col, str | bytes) or not isinstance(col, Sequence):
        raise PayloadError(f"column {name!r} must be a list or a 1-D array")
    return len(col)


def _as_column(col: Any) -> Any:
    if isinstance(col, np.ndarray):
        return col if col.dtype != object else col.tolist()
    return col if isinstance(col, list) else list(col)


def _item(col: Any, i: int) -> Any:
    v = col[i]
    return v.item() if isinstance(v, np.generic) else v


def dataframe_to_columns(df: Any, names: Sequence[str], ignore: frozenset[str] = frozenset()) -> Columns:
    """A pandas or polars DataFrame to ``Columns``, with the frame's nulls as missing."""
    module = type(df).__module__.split(".")[0]
    n = int(df.shape[0])
    data: dict[str, Any] = {}
    missing: dict[str, np.ndarray] = {}
    for name in names:
        if name not in df.columns:
            continue
        series = df[name]
        if module == "polars":
            mask = series.is_null().to_numpy()
            values = series.to_numpy() if series.dtype.is_numeric() and not mask.any() else series.to_list()
        else:
            mask = series.isna().to_numpy()
            values = series.to_numpy()
            if values.dtype.kind not in "fiub":
                cells = values.tolist() if values.dtype.kind in "OUS" else list(values)  # keep datetimes as datetimes
                if mask.any():
                    cells = [None if m else v for v, m in zip(cells, mask.tolist(), strict=True)]
                values = cells
            elif values.dtype.kind == "f" and mask.any():
                values = values.astype(np.float64, copy=True)
                values[mask] = 0.0  # a missing cell is never read as a value
        if mask.any():
            missing[name] = mask
        data[name] = values
    unknown = [
        (i, str(col), _item(values, i))
        for col in df.columns
        if col not in names and col not in ignore
        for values in (df[col].to_numpy(),)
        for i in range(n)
    ]
    return Columns(n, data, missing, unknown)


def to_columns(data: Any, names: Sequence[str], ignore: Iterable[str] = ()) -> Columns:
    """Any accepted input (see the module docstring) to ``Columns``.

    Args:
        data: records, a mapping of columns, or a pandas/polars DataFrame.
        names: the spec's feature names, in order.
        ignore: fields to drop silently (the training target, for one).
    """
    skip = frozenset(ignore)
    if isinstance(data, Columns):
        return data
    if type(data).__name__ == "DataFrame" and hasattr(data, "columns"):
        return dataframe_to_columns(data, names, skip)
    if isinstance(data, Mapping):
        return mapping_to_columns(data, names, skip)
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        return records_to_columns(data, names, skip)
    raise PayloadError(f"expected records, a mapping of columns or a DataFrame, not {type(data).__name__}")
