"""Fitting a feature spec from training data.

``fit_spec`` infers, for every column: its type, its valid domain (the observed range
widened by an estimate of how far unseen values of the same distribution reach; the
category vocabulary, closed or open), its missing-value policy (impute when the training
data had gaps, reject otherwise), its transform and fitted parameters, and the training
baseline distribution that drift is later measured against. Columns a model should not
read as they are (identifiers, timestamps, free text) are left out, each with a reason.

Rule 1: a spec fitted with the defaults accepts unseen rows from the training data's own
distribution (the guards' promise is that nothing good is lost), and still refuses the
implausible: a value an order of magnitude beyond the range, a negative value in a column
that never was negative, an unseen value of a closed vocabulary.
Rule 2: every decision that is not obvious from the data is said, one line each, through
``report``; the spec records what was observed beside what is allowed.

It must not know about serving: what it returns is a plain ``FeatureSpec``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

import msgspec
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
    ObservedRange,
    OneHot,
    Ordinal,
    Output,
    OutputBaseline,
    Passthrough,
    Segmentation,
    SegmentBaseline,
    Standardize,
    check_segments,
)
from gateway.table import Columns, to_columns

__all__ = ["DEFAULT_BINS", "TAIL_PROBABILITY", "TRANSFORMS", "UNSEEN_TOLERANCE", "fit_segments", "fit_spec"]

TAIL_PROBABILITY = 1e-6
"""How likely an unseen value of the training distribution may fall beyond each end of a
fitted numeric range (per column, per end). The row-level budget: a default spec should
accept 99.9% of unseen rows at 1,000 training rows, and a wide table has 30 or more
numbers, so each end of each column gets well under 0.1% / 60; 1e-6 leaves room for the
estimate's own error at small samples (the benchmark in bench/README.md measures it)."""

MIN_WIDENING = 0.1
"""The widening is at least this fraction of the observed width on each side. A sharp
edge (a lower bound many values pile up against, a discrete grid) gives a tail estimate
near zero, yet a sample of n rows leaves about 1/n of the distribution beyond each of its
extremes; 10% of the width is driftgate 0.1's fixed margin."""

MAX_WIDENING = 3.0
"""The widening is at most this many observed widths on each side, so the allowed range
is at most 7x the observed one: a value an order of magnitude beyond the range (a unit
error, a misplaced decimal point) is still refused, whatever a heavy tail suggests."""

DEFAULT_MARGIN: float | None = None
"""``None``: widen numeric ranges by the tail estimate. A number: widen by that fixed
fraction of the observed width (driftgate 0.1's rule, kept so its specs refit alike)."""

DEFAULT_BINS = 10
"""Deciles: the usual binning for population stability index (PSI), whose alert
thresholds (0.1 moderate, 0.25 major shift) were calibrated on ten bins."""

DEFAULT_MAX_CATEGORIES = 200
"""A text column with more distinct values is likely an identifier or free text, not a category."""

UNSEEN_TOLERANCE = 0.0005
"""A category's vocabulary is open when the chance that a new row holds an unseen value
may exceed this: half the 0.1% of rows a default spec may refuse at 1,000 training rows.
The chance is the Good-Turing estimate (the share of rows whose value occurs once, f1/n)
plus two of its standard errors (Esty 1983: sqrt(f1 + 2 f2)/n, f2 the values seen twice):
values seen once or twice say the vocabulary has a tail of rare values, some not seen
yet; a vocabulary whose every value is common says it has none."""

FREE_TEXT_SINGLETONS = 0.5
"""A text column where over half the rows hold a value seen once is free text (names,
comments), not a category: most values a model would meet are ones it never saw."""

GAPLESS_ROWS = 6000
"""A column without gaps in this many training rows rejects a missing value; with fewer,
it imputes one. By the rule of three, no gap in n rows still allows gaps in up to 3/n
of rows (95% confidence): rejecting them is safe once that is within the 0.05% budget
of ``UNSEEN_TOLERANCE``."""

MIN_ID_ROWS = 20
"""An identifier is told by a value unique in every row; below this many rows a small
category can be unique by chance."""

MAX_INTEGER_CLASSES = 20
"""An integer target with at most this many distinct values is read as class ids
(classification); with more, as a quantity (regression)."""

TRANSFORMS = ("standardize", "minmax", "log", "passthrough", "onehot", "ordinal")

_ID_WORDS = frozenset({"id", "ids", "uuid", "guid", "key", "index", "idx", "rowid", "rownames", "serial"})
"""Words of a column name that say "identifier": ``id``, ``user_id``, ``rowIndex``, ``UUID``."""

_TIMESTAMP = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,4}[/.]\d{1,2}[/.]\d{1,4}( \d{1,2}:\d{2}(:\d{2})?)?"
)
"""ISO 8601 dates and date-times, and day/month/year with slashes or dots."""

_TIMESTAMP_SAMPLE = 1000
"""Values of a text column tested against ``_TIMESTAMP`` (a column is a timestamp only if
all of them match; testing a million would cost a second for nothing)."""

Report = Callable[[str], None]

Kind = Literal["number", "integer", "category", "boolean"]


def fit_spec(
    data: Any,
    *,
    name: str,
    target: str | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    keep: Sequence[str] = (),
    types: Mapping[str, Kind] | None = None,
    transforms: Mapping[str, str] | None = None,
    bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
    on_violation: str | Mapping[str, str] = "reject",
    missing: Literal["auto", "observed", "reject", "impute"] = "auto",
    vocabulary: Literal["auto", "closed", "open"] = "auto",
    margin: float | None = DEFAULT_MARGIN,
    bins: int = DEFAULT_BINS,
    numeric_transform: str = "standardize",
    category_transform: str = "onehot",
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    review_threshold: float | None = None,
    segments: Sequence[str] = (),
    description: str = "",
    report: Report | None = None,
) -> FeatureSpec:
    """Infer a ``FeatureSpec`` from training data.

    Args:
        data: records, a mapping of columns, or a pandas/polars DataFrame.
        name: the spec's name (usually the model family).
        target: the column the model predicts; it becomes the spec's ``output``
            (classification for text or boolean targets, regression for numbers).
        features: the feature columns, in model order (default: every other column
            except those that look like identifiers, timestamps or free text).
        exclude: columns to leave out.
        keep: columns to fit even though they look like identifiers, timestamps or free text.
        types: per-column type overrides (``number``, ``integer``, ``category``, ``boolean``).
        transforms: per-column transform overrides, one of ``TRANSFORMS``.
        bounds: per-column declared ``(min, max)`` (either may be ``None``): kept exactly
            as given, never widened; the training values must lie within them.
        on_violation: ``reject``, ``clip`` or ``flag``, for all features or per column.
        missing: ``observed`` imputes where the training data had gaps and rejects
            elsewhere; ``auto`` does so too, but imputes a gapless column of fewer than
            ``GAPLESS_ROWS`` rows as well (too few rows to show it is never missing).
        vocabulary: ``auto`` decides per category from the Good-Turing estimate of an
            unseen value (see ``UNSEEN_TOLERANCE``): ``closed`` refuses unseen values,
            ``open`` feeds them to the model as ``(other)`` and flags the row.
        margin: ``None`` widens each numeric range by a tail estimate from the sample
            (``_tail_pad``); a number widens it by that fraction of the observed width.
        bins: number of quantile bins in each numeric baseline.
        numeric_transform / category_transform: defaults for features not in ``transforms``.
        max_categories: a text column with more distinct values is left out (or, listed
            in ``features``, refused) unless it is in ``keep``.
        review_threshold: classification rows with lower confidence are marked for review.
        segments: category features whose values slice monitoring, each with the other
            features' baselines fitted on its rows (``fit_segments``).
        report: called with one line per decision (a column left out, a vocabulary's policy).

    Raises:
        UsageError: empty data, an unknown target or feature column, a column that has no
            values or mixes types, a listed feature that looks like an identifier,
            timestamp or free text, an unknown transform.
    """
    if (margin is not None and margin < 0) or bins < 1:
        raise UsageError("margin must be >= 0 and bins >= 1")
    if missing not in ("auto", "observed", "reject", "impute"):
        raise UsageError(f"missing must be auto, observed, reject or impute, not {missing!r}")
    if vocabulary not in ("auto", "closed", "open"):
        raise UsageError(f"vocabulary must be auto, closed or open, not {vocabulary!r}")
    policies = [on_violation] if isinstance(on_violation, str) else list(on_violation.values())
    bad = sorted({p for p in policies if p not in ("reject", "clip", "flag")})
    if bad:
        raise UsageError(f"on_violation must be reject, clip or flag, not {', '.join(map(repr, bad))}")
    say: Report = report or _silent
    columns = to_columns(data, _column_names(data))
    if columns.n_rows == 0:
        raise UsageError("the training data has no rows")
    available = list(columns.data)
    if target is not None and target not in columns.data:
        raise UsageError(f"target column {target!r} is not in the data (columns: {', '.join(available)})")
    listed = features is not None
    if features is None:
        chosen = [c for c in available if c != target and c not in exclude]
    else:
        unknown = [c for c in features if c not in columns.data]
        if unknown:
            raise UsageError(f"feature columns not in the data: {', '.join(unknown)}")
        chosen = list(features)
    if not chosen:
        if target is not None and available == [target]:
            raise UsageError(f"the data holds only the target column {target!r}: there is no feature to fit")
        raise UsageError("no feature columns left to fit")
    fitted: list[Feature] = []
    left_out: list[str] = []
    for col in chosen:
        present, mask = _split(col, columns)
        if len(present) == 0:
            raise UsageError(
                f"column {col!r} has no values: all {columns.n_rows:,} rows are missing (leave it out with --exclude {col})"
            )
        kind = (types or {}).get(col)
        if col not in keep:
            why = _unusable(col, present, kind, max_categories)
            if why is not None and listed:
                raise UsageError(f"column {col!r} {why}: fit it anyway with --keep {col} (keep=[{col!r}])")
            if why is not None:  # a request may still carry it: the spec ignores it
                say(f"left out {col!r}: it {why} (keep it with --keep {col})")
                left_out.append(col)
                continue
        fitted.append(
            _fit_feature(
                col,
                present,
                mask,
                kind=kind or _infer_kind(col, present),
                transform=(transforms or {}).get(col),
                bounds=(bounds or {}).get(col, (None, None)),
                on_violation=on_violation if isinstance(on_violation, str) else on_violation.get(col, "reject"),
                missing=missing,
                vocabulary=vocabulary,
                margin=margin,
                bins=bins,
                numeric_transform=numeric_transform,
                category_transform=category_transform,
                say=say,
            )
        )
    if not fitted:
        raise UsageError(f"no feature columns left to fit (left out: {', '.join(left_out)}; keep one with --keep)")
    unused = sorted(set(bounds or {}) - {f.name for f in fitted})
    if unused:
        raise UsageError(f"bounds given for columns that are not features: {', '.join(unused)}")
    output = _fit_output(target, columns, review_threshold, tidy=margin is None) if target is not None else None
    spec = FeatureSpec(name=name, features=tuple(fitted), output=output, description=description, ignored_fields=tuple(left_out))
    return fit_segments(spec, columns, segments) if segments else spec


def fit_segments(spec: FeatureSpec, data: Any, features: Sequence[str]) -> FeatureSpec:
    """``spec`` with ``segments``: for each named category feature and each of its values,
    the training counts of every other feature among that value's rows, in the very bins
    live drift is counted in (the spec's own guards and drift binning, so the two agree).

    Raises:
        UsageError: a name that is not a feature, not a category, or one with more than
            ``MAX_SEGMENT_VALUES`` values (or more than ``MAX_SEGMENTS`` names).
    """
    from gateway.monitoring.drift import BatchBinner, build_segments

    try:
        check_segments(spec.features, tuple(Segmentation(feature=name) for name in dict.fromkeys(features)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    by_name = {f.name: f for f in spec.features}
    checked = spec.guards.check(to_columns(data, spec.feature_names, spec.guards.ignored))
    segments = [s for s in build_segments(spec) if not s.name.startswith("_")]
    binner = BatchBinner(segments)
    grid = np.concatenate(binner.grids(checked.columns, checked.imputed), axis=1)
    size = sum(s.size for s in segments)
    fitted: list[Segmentation] = []
    for name in dict.fromkeys(features):
        f = by_name[name]
        assert isinstance(f, CategoryFeature)
        k = len(f.categories)
        codes = np.asarray(checked.columns[name], dtype=np.intp)
        imputed = checked.imputed.get(name)
        known = (codes >= 0) & (codes < k)
        if imputed is not None:
            known &= ~np.asarray(imputed, dtype=np.bool_)
        rows = np.flatnonzero(known)
        flat = (codes[rows, None] * size + grid[rows]).ravel()
        counts = np.bincount(flat, minlength=k * size).reshape(k, size)
        per_value = np.bincount(codes[rows], minlength=k)
        baselines = []
        for v, value in enumerate(f.categories):
            own = {
                s.name: tuple(int(c) for c in counts[v, s.offset : s.offset + s.size].tolist())
                for s in segments
                if s.name != name
            }
            baselines.append(SegmentBaseline(value=value, rows=int(per_value[v]), counts=own))
        fitted.append(Segmentation(feature=name, baselines=tuple(baselines)))
    return msgspec.structs.replace(spec, segments=tuple(fitted))


def _silent(_line: str) -> None:
    """The ``report`` of a caller that does not listen."""


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
    kinds = set(map(type, present))  # in C: a million cells in ~20 ms
    if any(issubclass(k, np.generic) for k in kinds):
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


def _unusable(column: str, present: list[Any] | np.ndarray, kind: Kind | None, max_categories: int) -> str | None:
    """Why a column should not be fed to a model as it is, or None: it holds timestamps,
    identifiers (a value unique in every row) or free text (too many distinct values)."""
    n = len(present)
    if isinstance(present, np.ndarray):
        if present.dtype.kind == "M":
            return "holds timestamps (derive numbers from it, such as the hour or the weekday)"
        if present.dtype.kind in "iu" and kind in (None, "integer") and n >= MIN_ID_ROWS:
            if _is_id_name(column) and len(np.unique(present)) == n:
                return f"looks like an identifier (named so, and unique in each of {n:,} rows)"
            if n > 2 and bool(np.all(np.diff(present) == 1)):
                return f"looks like a row number (counts up by one over {n:,} rows)"
        return None
    sample = present[:_TIMESTAMP_SAMPLE]
    if any(isinstance(v, datetime | date | np.datetime64) for v in sample):
        return "holds timestamps (derive numbers from it, such as the hour or the weekday)"
    if kind not in (None, "category") or not sample or not all(isinstance(v, str) for v in sample):
        return None
    if all(_TIMESTAMP.fullmatch(v.strip()) for v in sample):
        return "holds timestamps (derive numbers from it, such as the hour or the weekday)"
    counts = Counter(present)
    if n >= MIN_ID_ROWS and len(counts) == n:
        return f"looks like an identifier (a different value in each of {n:,} rows)"
    if len(counts) > max_categories:
        return f"has {len(counts):,} distinct values (over {max_categories}; raise max_categories or keep it)"
    singletons = sum(1 for c in counts.values() if c == 1)
    if len(counts) >= MIN_ID_ROWS and singletons > FREE_TEXT_SINGLETONS * n:
        return f"looks like free text ({singletons:,} of {n:,} rows hold a value seen only once)"
    return None


def _is_id_name(column: str) -> bool:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", column)  # rowIndex -> row Index
    return any(word in _ID_WORDS for word in re.split(r"[^a-z0-9]+", spaced.lower()))


def _fit_feature(
    column: str,
    present: list[Any] | np.ndarray,
    mask: np.ndarray,
    *,
    kind: Kind,
    transform: str | None,
    bounds: tuple[float | None, float | None],
    on_violation: str,
    missing: str,
    vocabulary: str,
    margin: float | None,
    bins: int,
    numeric_transform: str,
    category_transform: str,
    say: Report,
) -> Feature:
    n_missing = int(mask.sum())
    impute = missing == "impute" or (missing in ("auto", "observed") and n_missing > 0)
    if missing == "auto" and not impute and len(present) < GAPLESS_ROWS:
        impute = True
        say(
            f"{column!r}: no gaps in {len(present):,} rows, too few to rule out gaps of up to "
            f"{3 / len(present):.2%}: a missing value is imputed"
        )
    chosen = transform or (category_transform if kind == "category" else numeric_transform)
    if chosen not in TRANSFORMS:
        raise UsageError(f"column {column!r}: unknown transform {chosen!r} (one of {', '.join(TRANSFORMS)})")
    if bounds != (None, None) and kind not in ("number", "integer"):
        raise UsageError(f"column {column!r}: bounds apply to numbers, but it is a {kind}")
    # 'clip' has no meaning for categories and booleans: they reject instead.
    policy = "reject" if on_violation == "clip" and kind in ("category", "boolean") else on_violation
    common: dict[str, Any] = {"name": column, "on_violation": policy}
    if kind == "category":
        return _fit_category(column, present, n_missing, impute, chosen, common, vocabulary, say)
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
    # (sorted for the tails only: the mean's float sum is taken in the data's own order)
    low, high = _widen(lo, hi, margin) if margin is not None else _widen_by_tails(np.sort(values))
    declared_low, declared_high = bounds
    for side, declared, beyond in (("min", declared_low, declared_low is not None and lo < declared_low),
                                   ("max", declared_high, declared_high is not None and hi > declared_high)):
        if beyond:
            raise UsageError(f"column {column!r}: training values ({lo:g} to {hi:g}) lie beyond its declared {side} {declared:g}")
    low = low if declared_low is None else float(declared_low)
    high = high if declared_high is None else float(declared_high)
    if kind == "integer":  # the log shift is the domain's lower end, as written
        low = math.floor(low)
    numeric = _numeric_transform(column, chosen, values, low)
    fill = float(np.median(values))
    if kind == "integer":
        fill = float(round(fill))
    fitted: dict[str, Any] = {
        **common,
        "transform": numeric,
        **_missing(impute, fill if margin is not None else _tidy(fill)),
        "baseline": _numeric_baseline(values, bins, n_missing, tidy=margin is None),
        "observed": None if margin is not None else ObservedRange(min=lo, max=hi, rows=len(values)),
    }
    if kind == "integer":
        return IntegerFeature(min=math.floor(low), max=math.ceil(high), **fitted)
    return NumberFeature(min=low, max=high, **fitted)


def _fit_category(
    column: str,
    present: list[Any] | np.ndarray,
    n_missing: int,
    impute: bool,
    chosen: str,
    common: dict[str, Any],
    vocabulary: str,
    say: Report,
) -> CategoryFeature:
    if chosen not in ("onehot", "ordinal"):
        raise UsageError(f"column {column!r}: a category takes 'onehot' or 'ordinal', not {chosen!r}")
    text = present.tolist() if isinstance(present, np.ndarray) else present
    if set(map(type, text)) - {str}:
        raise UsageError(
            f"column {column!r} holds non-text values, but a category takes strings: a request with those "
            "values would be refused as wrong_type (convert the column to text first)"
        )
    tally = Counter(text)  # hashing, not sorting: a million strings in ~0.1 s
    categories = tuple(sorted(tally))
    counts = tuple(tally[c] for c in categories)
    fill = max(categories, key=tally.__getitem__)  # the most frequent; ties to the first in order
    n = len(text)
    singletons, doubletons = counts.count(1), counts.count(2)
    unseen = singletons / n  # Good-Turing: the chance the next value is one not seen yet
    bound = unseen + 2 * math.sqrt(singletons + 2 * doubletons) / n
    estimate = (
        f"{singletons} of {len(categories)} values seen once and {doubletons} twice in {n:,} rows, "
        f"Good-Turing P(unseen) = {unseen:.2%}, at most {bound:.2%}"
    )
    other = vocabulary == "open" or (vocabulary == "auto" and bound > UNSEEN_TOLERANCE)
    if other:
        where = f"{column}=(other)" if chosen == "onehot" else f"code {len(categories)}"
        say(f"{column!r}: open vocabulary ({estimate}): an unseen value is fed as {where} and its row flagged")
        common = {**common, "on_violation": "flag"}
    elif vocabulary == "auto":
        say(f"{column!r}: closed vocabulary ({estimate}): an unseen value is refused")
    return CategoryFeature(
        **common,
        categories=categories,
        transform=OneHot() if chosen == "onehot" else Ordinal(),
        **_missing(impute, fill),
        baseline=CategoryBaseline(counts=counts, missing=n_missing),
        other=other,
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
    digits = max(0, -math.floor(math.log10(quantum)))
    low = round(math.floor((lo - pad) / quantum) * quantum, digits)
    high = round(math.ceil((hi + pad) / quantum) * quantum, digits)
    if lo >= 0 > low:
        low = 0.0
    return min(low, lo), max(high, hi)


def _widen_by_tails(values: np.ndarray) -> tuple[float, float]:
    """The range unseen values of the sample's distribution stay within, but for a chance
    of ``TAIL_PROBABILITY`` at each end; ``values`` sorted ascending.

    Each end is extrapolated from the sample's own extremes (``_tail_pad``), kept between
    ``MIN_WIDENING`` and ``MAX_WIDENING`` widths, rounded outwards to two significant
    digits of the widening (a readable bound, no float noise), and a column that was never
    negative never allows a negative value.
    """
    lo, hi = float(values[0]), float(values[-1])
    width = hi - lo
    if width == 0:  # a constant: nothing to extrapolate from, so the minimum widening of its size
        width = max(abs(hi), 1.0)
        pads = (MIN_WIDENING * width, MIN_WIDENING * width)
    else:
        pads = (
            min(max(_tail_pad(lo - values), MIN_WIDENING * width), MAX_WIDENING * width),
            min(max(_tail_pad(values[::-1] - lo), MIN_WIDENING * width), MAX_WIDENING * width),
        )
    low, high = _round_out(lo - pads[0], pads[0], math.floor), _round_out(hi + pads[1], pads[1], math.ceil)
    if lo >= 0 > low:
        low = 0.0
    return min(low, lo), max(high, hi)


def _tail_pad(tail: np.ndarray) -> float:
    """How far beyond the sample's extreme the ``1 - TAIL_PROBABILITY`` quantile lies.

    ``tail``: the sample ordered from its extreme inwards, as distances in the direction
    of that extreme (so ``tail[0]`` is the largest). Above a threshold, the ``k`` largest
    values of most distributions (those in the Gumbel domain: normal, gamma, lognormal at
    moderate samples) exceed it roughly exponentially (Pickands-Balkema-de Haan); the
    mean excess estimates the exponential's scale, and its quantile beyond the threshold
    at tail probability ``p`` is ``scale * ln(k / (n p))``. ``k`` is about sqrt(n), the
    usual trade between the bias of a low threshold and the variance of few excesses.
    """
    n = len(tail)
    if n < 3:
        return 0.0
    k = min(max(5, math.ceil(math.sqrt(n))), n - 1)
    threshold = float(tail[k])
    scale = float(np.mean(tail[:k])) - threshold
    quantile = threshold + scale * math.log(k / (n * TAIL_PROBABILITY))
    return max(quantile - float(tail[0]), 0.0)


def _round_out(value: float, pad: float, direction: Callable[[float], float]) -> float:
    """``value`` rounded away from the range (``direction`` is floor or ceil) to a tenth of
    the pad's order of magnitude, written with no float noise (614.8, not 614.8000000000001)."""
    if pad <= 0:
        return value
    exponent = math.floor(math.log10(pad)) - 1
    quantum = 10.0**exponent
    return round(direction(value / quantum) * quantum, max(0, -exponent))


def _tidy(value: float) -> float:
    """``value`` to 12 significant digits: the float noise of arithmetic on decimal data
    (the median 614.8000000000001) goes, the data's own precision stays."""
    return float(f"{value:.12g}")


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


def _numeric_baseline(values: np.ndarray, bins: int, n_missing: int, tidy: bool = False) -> NumericBaseline:
    """Quantile bin edges (interior cut points) and the training count in each bin
    (``tidy``: edges to 12 significant digits, counted after rounding)."""
    edges = np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    if tidy:
        edges = np.array([_tidy(e) for e in edges.tolist()], dtype=np.float64)
    edges = np.unique(edges)
    edges = edges[edges > values.min()]  # an edge at the minimum would leave its lower bin empty
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return NumericBaseline(edges=tuple(edges.tolist()), counts=tuple(int(c) for c in counts), missing=n_missing)


def _fit_output(target: str, columns: Columns, review_threshold: float | None, tidy: bool = False) -> Output:
    present, _ = _split(target, columns)
    if len(present) == 0:
        raise UsageError(f"target column {target!r} has no values")
    kind = _infer_kind(target, present)
    if kind == "integer" and len(np.unique(np.asarray(present))) > MAX_INTEGER_CLASSES:
        kind = "number"
    if kind == "number":
        values = np.asarray(present, dtype=np.float64)
        counts, edges = np.histogram(values, bins=20)
        if tidy:  # interior edges to 12 digits; the outer ones stay exact, so every value is counted
            edges = np.array([edges[0], *(_tidy(e) for e in edges[1:-1].tolist()), edges[-1]])
            counts, _ = np.histogram(values, bins=edges)
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
