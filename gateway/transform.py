"""The transform: clean columns to the model's float32 matrix.

Rule 1: this is the only code that turns features into model inputs. Training code calls
it through ``FeatureSpec.transform`` (or ``gateway.sklearn.SpecTransformer``) and the
server calls it on every request, so training-serving skew cannot arise here.
Rule 2: it is pure numpy arithmetic with no I/O, and it trusts its input: the guards
have already parsed, imputed and clipped every cell (see ``gateway.guards``).

Each feature owns a fixed slice of the output columns, named after the feature (one-hot
columns as ``feature=category``). Arithmetic is done in float64, saturated at float32's
largest finite value, and rounded once to float32, both in the batch path and in the
one-row path, so the two give the same bits and never an infinity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.spec import (
    BooleanFeature,
    CategoryFeature,
    Feature,
    FeatureSpec,
    Log,
    MinMax,
    OneHot,
    Standardize,
    output_column_names,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

__all__ = ["FLOAT32_MAX", "Transform", "compile_transform"]

FLOAT32_MAX = float(np.finfo(np.float32).max)
"""Outputs saturate at float32's largest finite value: a valid but extreme input (an
unbounded feature sent 1e300) must reach the model as a large number, never as inf."""


class _Step:
    """Writes one feature's output columns."""

    __slots__ = ("name", "start", "width")

    def __init__(self, name: str, start: int, width: int) -> None:
        self.name = name
        self.start = start
        self.width = width

    def column(self, values: NDArray[Any]) -> NDArray[Any]:
        """Batch: the feature's single output column from its clean values."""
        raise NotImplementedError

    def scalar(self, value: Any) -> float:
        """One row: the feature's single output value."""
        raise NotImplementedError


class _LinearStep(_Step):
    """``(x - shift) / divisor``: standardize (mean, std), min-max (low, high - low) and
    passthrough (0, 1: both exact, so the value itself). Batches compute every linear step
    of a spec in one broadcast (``Transform.apply``) with these same operations."""

    __slots__ = ("divisor", "shift")

    def __init__(self, name: str, start: int, shift: float = 0.0, divisor: float = 1.0) -> None:
        super().__init__(name, start, 1)
        self.shift, self.divisor = shift, divisor

    def scalar(self, value: float) -> float:
        return (value - self.shift) / self.divisor


class _LogStep(_Step):
    __slots__ = ("shift",)

    def __init__(self, name: str, start: int, t: Log) -> None:
        super().__init__(name, start, 1)
        self.shift = t.shift

    def column(self, values: NDArray[Any]) -> NDArray[Any]:
        return np.log1p(np.maximum(values - self.shift, 0.0))

    def scalar(self, value: Any) -> float:
        # numpy's log1p, not math.log1p: the same routine as the batch path, so the same bits;
        # and +0.0 (never -0.0) below the shift, as np.maximum gives.
        d = value - self.shift
        return float(np.log1p(max(0.0, d)))


class _OneHotStep(_Step):
    """Codes to indicator columns; code -1 (an unseen, flagged category) is all zeros, and
    an open vocabulary's unseen values (code ``len(categories)``) set its ``(other)`` column."""

    __slots__ = ()


def _images_fit_float32(features: Sequence[Feature], steps: Sequence[_LinearStep]) -> bool:
    """True if every feature has a finite min and max and ``(x - shift) / divisor`` maps
    both well inside float32 (a factor of 2 to spare), so no value within the range can
    overflow float64 on the way or saturate float32 at the end."""
    for feature, step in zip(features, steps, strict=True):
        lo, hi = getattr(feature, "min", None), getattr(feature, "max", None)
        if isinstance(feature, BooleanFeature):
            lo, hi = 0, 1
        elif isinstance(feature, CategoryFeature):
            lo, hi = -1, len(feature.categories)
        if lo is None or hi is None:
            return False
        with np.errstate(over="ignore", invalid="ignore"):
            images = (np.array([lo, hi], dtype=np.float64) - step.shift) / step.divisor
        if not (np.isfinite(images).all() and np.abs(images).max() < FLOAT32_MAX / 2):
            return False
    return True


def _step_for(feature: Feature, start: int) -> _Step:
    t = feature.transform
    if isinstance(feature, CategoryFeature) and isinstance(t, OneHot):
        return _OneHotStep(feature.name, start, len(feature.categories) + feature.other)
    if isinstance(feature, BooleanFeature | CategoryFeature):  # booleans 0/1; ordinal codes, -1 unseen
        return _LinearStep(feature.name, start)
    if isinstance(t, Standardize):
        return _LinearStep(feature.name, start, t.mean, t.std)
    if isinstance(t, MinMax):
        return _LinearStep(feature.name, start, t.low, t.high - t.low)
    if isinstance(t, Log):
        return _LogStep(feature.name, start, t)
    return _LinearStep(feature.name, start)


class Transform:
    """Compiled transform of one spec. Build with ``compile_transform(spec)``.

    Attributes:
        columns: names of the output columns, in order.
        width: ``len(columns)``, the model's input width.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        steps: list[_Step] = []
        start = 0
        for feature in spec.features:
            step = _step_for(feature, start)
            steps.append(step)
            start += step.width
        self.steps = tuple(steps)
        self.columns = tuple(output_column_names(spec.features))
        self.width = start
        self._onehot = tuple(s for s in steps if isinstance(s, _OneHotStep))
        self._dense = tuple(s for s in steps if not isinstance(s, _OneHotStep))
        # All linear steps in one broadcast: the same IEEE operations on every element as
        # the one-row path (_LinearStep.scalar), so the same bits.
        linear = [s for s in self._dense if isinstance(s, _LinearStep)]
        self._log = tuple(s for s in self._dense if isinstance(s, _LogStep))
        self._linear_names = [s.name for s in linear]
        self._linear_cols = np.array([s.start for s in linear], dtype=np.intp)
        self._shift = np.array([s.shift for s in linear], dtype=np.float64)
        self._divisor = np.array([s.divisor for s in linear], dtype=np.float64)
        self._all_linear = len(linear) == len(steps) and self._linear_cols.tolist() == list(range(len(steps)))
        self._bounded = self._all_linear and _images_fit_float32(spec.features, linear)
        """Every feature has a min and a max whose images lie well inside float32: a matrix
        the guards passed (every value within its range) transforms with no overflow, so
        the broadcast needs neither ``errstate`` nor ``clip`` (about 2 us of a one-row call)."""
        self._scales = tuple(zip(self._shift.tolist(), self._divisor.tolist(), strict=True)) if self._bounded else ()

    def apply(
        self,
        columns: dict[str, Any],
        n_rows: int,
        matrix: NDArray[np.float64] | None = None,
        row: tuple[float, ...] | None = None,
    ) -> NDArray[np.float32]:
        """Clean columns (from ``Guards.check``) to a C-contiguous ``(n_rows, width)`` float32 matrix.

        ``matrix``: the same columns as one float64 matrix in feature order, if the guards
        have it (``Checked.matrix``); an all-linear transform then skips re-stacking them.
        ``row``: a one-row ``matrix`` as Python floats (``Checked.row``), scaled in Python:
        the same float64 operations as the broadcast, so the same bits.
        """
        if row is not None and self._bounded:
            return np.array([[(x - shift) / divisor for x, (shift, divisor) in zip(row, self._scales)]], dtype=np.float32)
        if matrix is not None and self._bounded:
            y = np.subtract(matrix, self._shift)
            return np.divide(y, self._divisor, out=y).astype(np.float32)
        if matrix is not None and self._all_linear:
            # the whole transform is one broadcast over the guards' matrix
            with np.errstate(over="ignore"):  # an overflow to inf is saturated just below
                y = (matrix - self._shift) / self._divisor
                return np.clip(y, -FLOAT32_MAX, FLOAT32_MAX, out=y).astype(np.float32)
        if matrix is None and n_rows == 1 and type(next(iter(columns.values()))) is list:
            return self._apply_one(columns)
        out = np.zeros((n_rows, self.width), dtype=np.float32)
        with np.errstate(over="ignore"):  # an overflow to inf is saturated just below
            if self._linear_names:
                if matrix is not None and self._all_linear:
                    x = matrix
                else:
                    x = np.stack([np.asarray(columns[name], dtype=np.float64) for name in self._linear_names], axis=1)
                y = (x - self._shift) / self._divisor
                out[:, self._linear_cols] = np.clip(y, -FLOAT32_MAX, FLOAT32_MAX, out=y)
            for step in self._log:
                out[:, step.start] = np.clip(step.column(columns[step.name]), -FLOAT32_MAX, FLOAT32_MAX)
        if self._onehot:
            rows = np.arange(n_rows)
            for onehot in self._onehot:
                codes = columns[onehot.name]
                seen = codes >= 0
                if seen.all():
                    out[rows, onehot.start + codes] = 1.0
                else:
                    out[rows[seen], onehot.start + codes[seen]] = 1.0
        return out

    def _apply_one(self, columns: dict[str, Any]) -> NDArray[np.float32]:
        row = [0.0] * self.width
        for step in self._dense:
            x = step.scalar(columns[step.name][0])
            row[step.start] = x if -FLOAT32_MAX <= x <= FLOAT32_MAX else (FLOAT32_MAX if x > 0 else -FLOAT32_MAX)
        for step in self._onehot:
            code = columns[step.name][0]
            if code >= 0:
                row[step.start + code] = 1.0
        return np.array([row], dtype=np.float32)


def compile_transform(spec: FeatureSpec) -> Transform:
    """Build the transform of ``spec`` once; ``Transform.apply`` is then called per batch."""
    return Transform(spec)
