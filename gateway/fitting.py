"""Fitting a feature spec from training data.

``fit_spec`` infers, for every column: its type, its valid domain (the observed range
widened by a margin; the category vocabulary), its missing-value policy (impute when the
training data had gaps, reject otherwise), its transform and fitted parameters, and the
training baseline distribution that drift is later measured against.

It must not know about serving: what it returns is a plain ``FeatureSpec``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from gateway.errors import UsageError
from gateway.spec import (
    BooleanFeature,
    CategoryBaseline,
    CategoryFeature,
    Feature,
    FeatureSpec,
    HistogramBaseline,
    IntegerFeature,
    Log,
    MinMax,
    NumberFeature,
    NumericBaseline,
    OneHot,
    Ordinal,
    Output,
    OutputBaseline,
    Passthrough,
    Standardize,
)
from gateway.table import Columns, to_columns

__all__ = ["DEFAULT_BINS", "DEFAULT_MARGIN", "TRANSFORMS", "fit_spec"]

DEFAULT_MARGIN = 0.1
"""Valid range = observed range widened by 10% of its width on each side. Wide enough that
an unremarkable new value is not refused, narrow enough that a unit change (grams sent
as kilograms) is. A non-negative column never gets a negative lower bound."""

DEFAULT_BINS = 10
"""Deciles: the usual binning for population stability index (PSI), whose alert
thresholds (0.1 moderate, 0.25 major shift) were calibrated on ten bins."""

DEFAULT_MAX_CATEGORIES = 200
"""A text column with more distinct values is likely an identifier, not a category."""

MAX_INTEGER_CLASSES = 20
"""An integer target with at most this many distinct values is read as class ids
(classification); with more, as a quantity (regression)."""

TRANSFORMS = ("standardize", "minmax", "log", "passthrough", "onehot", "ordinal")

Kind = Literal["number", "integer", "category", "boolean"]


def fit_spec(
    data: Any,
    *,
    name: str,
    target: str | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    types: Mapping[str, Kind] | None = None,
    transforms: Mapping[str, str] | None = None,
    on_violation: str | Mapping[str, str] = "reject",
    missing: Literal["auto", "reject", "impute"] = "auto",
    margin: float = DEFAULT_MARGIN,
    bins: int = DEFAULT_BINS,
    numeric_transform: str = "standardize",
    category_transform: str = "onehot",
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    review_threshold: float | None = None,
    description: str = "",
) -> FeatureSpec:
    """Infer a ``FeatureSpec`` from training data.

    Args:
        data: records, a mapping of columns, or a pandas/polars DataFrame.
        name: the spec's name (usually the model family).
        target: the column the model predicts; it becomes the spec's ``output``
            (classification for text or boolean targets, regression for numbers).
        features: the feature columns, in model order (default: every other column).
        exclude: columns to leave out (identifiers, timestamps).
        types: per-column type overrides (``number``, ``integer``, ``category``, ``boolean``).
        transforms: per-column transform overrides, one of ``TRANSFORMS``.
        on_violation: ``reject``, ``clip`` or ``flag``, for all features or per column.
        missing: ``auto`` imputes where the training data had gaps and rejects elsewhere.
        margin: how far the valid numeric range extends past the observed one, as a
            fraction of the observed width.
        bins: number of quantile bins in each numeric baseline.
        numeric_transform / category_transform: defaults for features not in ``transforms``.
        max_categories: refuse a text column with more distinct values than this.
        review_threshold: classification rows with lower confidence are marked for review.

    Raises:
        UsageError: empty data, an unknown target or feature column, a column that has no
            values or mixes types, an unknown transform.
    """
    if margin < 0 or bins < 1:
        raise UsageError("margin must be >= 0 and bins >= 1")
    if missing not in ("auto", "reject", "impute"):
        raise UsageError(f"missing must be auto, reject or impute, not {missing!r}")
    policies = [on_violation] if isinstance(on_violation, str) else list(on_violation.values())
    bad = sorted({p for p in policies if p not in ("reject", "clip", "flag")})
    if bad:
        raise UsageError(f"on_violation must be reject, clip or flag, not {', '.join(map(repr, bad))}")
    columns = to_columns(data, _column_names(data))
    if columns.n_rows == 0:
        raise UsageError("the training data has no rows")
    available = list(columns.data)
    if target is not None and target not in columns.data:
        raise UsageError(f"target column {target!r} is not in the data (columns: {', '.join(available)})")
    if features is None:
        chosen = [c for c in available if c != target and c not in exclude]
    else:
        unknown = [c for c in features if c not in columns.data]
        if unknown:
            raise UsageError(f"feature columns not in the data: {', '.join(unknown)}")
        chosen = list(features)
    if not chosen:
        raise UsageError("no feature columns left to fit")
    policy_of = (lambda _c: on_violation) if isinstance(on_violation, str) else (lambda c: on_violation.get(c, "reject"))
    fitted = [
        _fit_feature(
            col,
            columns,
            kind=(types or {}).get(col),
            transform=(transforms or {}).get(col),
            on_violation=policy_of(col),
            missing=missing,
            margin=margin,
            bins=bins,
            numeric_transform=numeric_transform,
            category_transform=category_transform,
            max_categories=max_categories,
        )
        for col in chosen
    ]
    output = _fit_output(target, columns, review_threshold) if target is not None else None
    return FeatureSpec(name=name, features=tuple(fitted), output=output, description=description)


def _column_names(data: Any) -> list[str]:
    if type(data).__name__ == "DataFrame" and hasattr(data, "columns"):
        return [str(c) for c in data.columns]
    if isinstance(data, Mapping):
        return [str(k) for k in data]
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        seen: dict[str, None] = {}
        for record in data:
            if isinstance(record, Mapping):
                seen.update(dict.fromkeys(record))
        return list(seen)
    raise UsageError(f"cannot fit a spec from {type(data).__name__}: pass records, columns or a DataFrame")


def _split(column: str, columns: Columns) -> tuple[list[Any] | np.ndarray, np.ndarray]:
    """A column's present values and its missing mask (None, or the frame's null)."""
    raw = columns.data[column]
    missing = columns.missing.get(column)
    if isinstance(raw, np.ndarray) and raw.dtype != object:
        mask = np.zeros(len(raw), dtype=np.bool_) if missing is None else missing
        return raw[~mask], mask
    values = raw.tolist() if isinstance(raw, np.ndarray) else list(raw)
    mask = np.array([v is None for v in values], dtype=np.bool_)
    if missing is not None:
        mask |= missing
    return [v for v, m in zip(values, mask.tolist(), strict=True) if not m], mask


def _infer_kind(column: str, present: list[Any] | np.ndarray) -> Kind:
    if isinstance(present, np.ndarray):
        kind = present.dtype.kind
        if kind == "b":
            return "boolean"
        if kind in "iu":
            return "integer"
        if kind == "f":
            return "number"
        present = present.tolist()
    kinds = {type(v.item() if isinstance(v, np.generic) else v) for v in present}
    if not kinds:
        raise UsageError(f"column {column!r} has no values to fit")
    if kinds == {bool}:
        return "boolean"
    if kinds == {int}:
        return "integer"
    if kinds <= {int, float}:
        return "number"
    if kinds == {str}:
        return "category"
    names = ", ".join(sorted(k.__name__ for k in kinds))
    raise UsageError(f"column {column!r} mixes types ({names}); give its type with types={{...}}")


def _fit_feature(
    column: str,
    columns: Columns,
    *,
    kind: Kind | None,
    transform: str | None,
    on_violation: str,
    missing: str,
    margin: float,
    bins: int,
    numeric_transform: str,
    category_transform: str,
    max_categories: int,
) -> Feature:
    present, mask = _split(column, columns)
    if len(present) == 0:
        raise UsageError(f"column {column!r} has no values to fit")
    kind = kind or _infer_kind(column, present)
    n_missing = int(mask.sum())
    impute = missing == "impute" or (missing == "auto" and n_missing > 0)
    chosen = transform or (category_transform if kind == "category" else numeric_transform)
    if chosen not in TRANSFORMS:
        raise UsageError(f"column {column!r}: unknown transform {chosen!r} (one of {', '.join(TRANSFORMS)})")
    # 'clip' has no meaning for categories and booleans: they reject instead.
    policy = "reject" if on_violation == "clip" and kind in ("category", "boolean") else on_violation
    common: dict[str, Any] = {"name": column, "on_violation": policy}
    if kind == "category":
        if chosen not in ("onehot", "ordinal"):
            raise UsageError(f"column {column!r}: a category takes 'onehot' or 'ordinal', not {chosen!r}")
        if any(not isinstance(v, str) for v in (present.tolist() if isinstance(present, np.ndarray) else present)):
            raise UsageError(
                f"column {column!r} holds non-text values, but a category takes strings: a request with those "
                "values would be refused as wrong_type (convert the column to text first)"
            )
        text = list(present.tolist() if isinstance(present, np.ndarray) else present)
        cats, counts = np.unique(np.array(text, dtype=object), return_counts=True)
        if len(cats) > max_categories:
            raise UsageError(f"column {column!r} has {len(cats)} distinct values (over {max_categories}); exclude it or raise max_categories")
        categories = tuple(str(c) for c in cats)
        fill = categories[int(np.argmax(counts))]
        return CategoryFeature(
            **common,
            categories=categories,
            transform=OneHot() if chosen == "onehot" else Ordinal(),
            **_missing(impute, fill),
            baseline=CategoryBaseline(counts=tuple(int(c) for c in counts), missing=n_missing),
        )
    if kind == "boolean":
        flags = np.array([bool(v) for v in present], dtype=np.bool_)
        true = int(flags.sum())
        return BooleanFeature(
            **common,
            **_missing(impute, bool(true * 2 >= len(flags))),
            baseline=CategoryBaseline(counts=(len(flags) - true, true), missing=n_missing),
        )
    try:
        values = np.asarray(present, dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"column {column!r} is declared {kind} but holds non-numbers") from None
    if not np.isfinite(values).all():
        raise UsageError(f"column {column!r} holds NaN or infinite values; mark missing values as empty/None")
    lo, hi = float(values.min()), float(values.max())
    low, high = _widen(lo, hi, margin)
    if kind == "integer":
        low, high = math.floor(low), math.ceil(high)
    numeric = _numeric_transform(column, chosen, values, low)
    fill = float(np.median(values))
    if kind == "integer":
        fill = float(round(fill))
    cls = IntegerFeature if kind == "integer" else NumberFeature
    return cls(
        **common,
        min=low,
        max=high,
        transform=numeric,
        **_missing(impute, fill),
        baseline=_numeric_baseline(values, bins, n_missing),
    )


def _missing(impute: bool, fill: Any) -> dict[str, Any]:
    return {"missing": "impute", "fill": fill} if impute else {}


def _widen(lo: float, hi: float, margin: float) -> tuple[float, float]:
    """The observed range widened by ``margin`` of its width, rounded outwards to a
    readable number, and never below zero for a non-negative column."""
    width = hi - lo if hi > lo else max(abs(hi), 1.0)
    pad = margin * width
    if pad == 0:
        return lo, hi
    quantum = 10.0 ** math.floor(math.log10(pad))
    digits = max(0, -int(math.floor(math.log10(quantum))))
    low = round(math.floor((lo - pad) / quantum) * quantum, digits)
    high = round(math.ceil((hi + pad) / quantum) * quantum, digits)
    if lo >= 0 > low:
        low = 0.0
    return min(low, lo), max(high, hi)


def _numeric_transform(column: str, chosen: str, values: np.ndarray, low: float) -> Standardize | MinMax | Log | Passthrough:
    match chosen:
        case "standardize":
            std = float(values.std())
            return Standardize(mean=float(values.mean()), std=std if std > 0 else 1.0)
        case "minmax":
            lo, hi = float(values.min()), float(values.max())
            return MinMax(low=lo, high=hi if hi > lo else lo + 1.0)
        case "log":
            return Log(shift=low)
        case "passthrough":
            return Passthrough()
    raise UsageError(f"column {column!r}: a number takes standardize, minmax, log or passthrough, not {chosen!r}")


def _numeric_baseline(values: np.ndarray, bins: int, n_missing: int) -> NumericBaseline:
    """Quantile bin edges (interior cut points) and the training count in each bin."""
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    edges = edges[edges > values.min()]  # an edge at the minimum would leave its lower bin empty
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return NumericBaseline(edges=tuple(edges.tolist()), counts=tuple(int(c) for c in counts), missing=n_missing)


def _fit_output(target: str, columns: Columns, review_threshold: float | None) -> Output:
    present, _ = _split(target, columns)
    if len(present) == 0:
        raise UsageError(f"target column {target!r} has no values")
    kind = _infer_kind(target, present)
    if kind == "integer" and len(np.unique(np.asarray(present))) > MAX_INTEGER_CLASSES:
        kind = "number"
    if kind == "number":
        values = np.asarray(present, dtype=np.float64)
        counts, edges = np.histogram(values, bins=20)
        hist = HistogramBaseline(edges=tuple(edges.tolist()), counts=tuple(int(c) for c in counts))
        return Output(task="regression", target=target, baseline=OutputBaseline(values=hist))
    labels_raw = present.tolist() if isinstance(present, np.ndarray) else present
    text = np.array([str(v).lower() if isinstance(v, bool | np.bool_) else str(v) for v in labels_raw], dtype=object)
    labels, counts = np.unique(text, return_counts=True)
    if len(labels) < 2:
        raise UsageError(f"target column {target!r} has a single class; a classifier needs two or more")
    return Output(
        task="classification",
        target=target,
        labels=tuple(str(label) for label in labels),
        review_threshold=review_threshold,
        baseline=OutputBaseline(class_counts=tuple(int(c) for c in counts)),
    )
