"""Input guards: decide, cell by cell, whether rows may reach the model.

Rule 1: every violation is reported, for every bad cell of every row, never just the first.
Rule 2: types are strict. A number is a JSON number (``int`` or ``float``, or a numpy
number), never a bool or a string; a category is a string; a boolean is ``true``/``false``.
Rule 3: ``on_violation`` governs only *domain* violations (``below_min``, ``above_max``,
``unseen_category``): ``clip`` moves a number into ``[min, max]``, ``flag`` lets the row
through marked. A cell that is ``missing`` (with policy ``reject``), ``wrong_type`` or
``not_finite`` has no value the model could use, so its row is always rejected, as is a
row with an ``unknown_feature`` (unless the spec says ``unknown_fields: ignore``).

The guards also parse: besides the verdict they return *clean* columns (numbers as
float64 with missing cells imputed and clipped cells clipped, categories as int codes,
booleans as 0.0/1.0) that ``gateway.transform`` turns into the model's matrix.

Batches are checked column by column with numpy; a one-row batch takes a scalar path of
plain Python, which is several times cheaper than numpy's per-call overhead for one value.
The two paths are tested to agree (``tests/property``).

This module must not know about HTTP, the model or metrics.
"""

from __future__ import annotations

import math
from operator import le
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec
import numpy as np

from gateway.errors import InputRejectedError
from gateway.spec import BooleanFeature, CategoryFeature, Feature, FeatureSpec, IntegerFeature, NumberFeature
from gateway.table import MatrixColumns, column_index
from gateway.violations import Action, Reason, Violation

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from gateway.table import Columns

__all__ = ["Checked", "Guards", "compile_guards"]

_NUMBER_TYPES = frozenset(
    {int, float}
    | {
        t
        for t in np.sctypeDict.values()
        if issubclass(t, np.integer | np.floating) and not issubclass(t, np.bool_ | np.timedelta64)
    }
)
"""Python and numpy numbers (every width numpy has on this platform). Not bool, np.bool_,
datetime64 or timedelta64: those are not quantities a model should read as numbers."""
_BOOL_TYPES = frozenset({bool, np.bool_})
_MAX_ECHO = 200
"""Longest string echoed back in a violation: enough to recognise, too short to amplify."""

Verdict = Literal["reject", "clip", "flag", "impute"]
"""What becomes of a cell: a violation's ``Action``, or ``impute`` (filled in, no violation)."""
Problem = tuple["NDArray[np.bool_]", Reason, Verdict]
"""Rows (a mask over the batch) that break one rule, the reason, and what was done: an
``Action``, or ``impute`` for missing cells the spec fills in (not a violation)."""


def _to_float(value: Any) -> float:
    """A number as float64; an integer too large for float64 becomes inf (``not_finite``)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


_as_floats = msgspec.convert


def _fast_floats(col: list[Any]) -> NDArray[np.float64] | None:
    """The column as float64 if every cell is a number (the common case), else None.

    msgspec's strict conversion checks every cell's type in C (a bool or a string is
    refused, an int is widened), several times faster than testing types in Python;
    anything it refuses (numpy scalars included) takes the per-cell path instead.
    """
    try:
        return np.array(_as_floats(col, list[float]), dtype=np.float64)
    except (msgspec.ValidationError, OverflowError):
        pass
    if not set(map(type, col)) <= _NUMBER_TYPES:
        return None
    try:
        return np.array(col, dtype=np.float64)
    except OverflowError:
        return np.array([_to_float(v) for v in col], dtype=np.float64)


def _cells(raw: Any) -> list[Any]:
    """A column as a list of cells. Arrays of plain kinds become Python values
    (``tolist``); any other array (datetime64, timedelta64, ...) keeps its numpy scalars,
    which no guard accepts, instead of ``tolist`` turning them into ints."""
    if isinstance(raw, np.ndarray):
        return raw.tolist() if raw.dtype.kind in "biufOUS" else list(raw)
    return raw if isinstance(raw, list) else list(raw)


def _echo(value: Any) -> Any:
    """The value as it may be echoed in a violation: scalars as sent, bounded in size."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_ECHO else value[:_MAX_ECHO] + "…"
    return f"<{type(value).__name__}>"


class Checked:
    """The guards' verdict on a batch.

    Attributes:
        n_rows: rows in the batch.
        columns: feature name -> clean column (see the module docstring); one-row
            batches hold a one-element list of a Python value instead of an ndarray.
        violations: every violation, ordered by row then by feature.
        rejected: bool mask of rows that must not reach the model, or ``None`` if none.
        flagged: bool mask of rows predicted with a flagged value, or ``None`` if none.
        clipped: bool mask of rows where a value was clipped, or ``None`` if none.
        imputed: feature name -> bool mask (batch) or True (one row) of imputed cells,
            only for features where a cell was imputed; monitoring counts them as missing.
    """

    __slots__ = ("clipped", "columns", "flagged", "imputed", "matrix", "n_rows", "rejected", "row", "violations")

    def __init__(
        self,
        n_rows: int,
        columns: dict[str, Any],
        violations: list[Violation],
        rejected: NDArray[np.bool_] | None,
        flagged: NDArray[np.bool_] | None,
        clipped: NDArray[np.bool_] | None,
        imputed: dict[str, Any] | None = None,
    ) -> None:
        self.imputed = imputed or {}
        self.matrix: NDArray[np.float64] | None = None
        """All columns as one float64 matrix in feature order, when they came as one."""
        self.row: tuple[float, ...] | None = None
        """A clean one-row ``matrix``'s cells as Python floats, when they came so (``Columns.row``)."""
        self.n_rows = n_rows
        self.columns = columns
        self.violations = violations
        self.rejected = rejected
        self.flagged = flagged
        self.clipped = clipped

    @property
    def ok(self) -> bool:
        """True when no row is rejected."""
        return self.rejected is None


class _FeatureGuard:
    """Checks one feature. Subclasses implement ``one`` and ``batch``."""

    __slots__ = ("action", "feature", "fill", "impute", "name")

    def __init__(self, feature: Feature) -> None:
        self.feature = feature
        self.name = feature.name
        self.action: Action = feature.on_violation
        self.impute = feature.missing == "impute"
        self.fill: Any = None

    def one(self, value: Any) -> tuple[Any, Reason | None, Verdict]:
        """Check one value. Returns (clean value, reason or None, action)."""
        raise NotImplementedError

    def batch(self, raw: Any, missing: NDArray[np.bool_] | None, n: int) -> tuple[NDArray[Any], list[Problem]]:
        """Check a column. Returns (clean column, problems)."""
        raise NotImplementedError

    def _missing(self) -> tuple[Any, Reason | None, Verdict]:
        if self.impute:
            return self.fill, None, "impute"
        return self.fill, "missing", "reject"


class _NumberGuard(_FeatureGuard):
    __slots__ = ("hi", "integral", "lo")

    def __init__(self, feature: NumberFeature | IntegerFeature) -> None:
        super().__init__(feature)
        self.lo = -math.inf if feature.min is None else float(feature.min)
        self.hi = math.inf if feature.max is None else float(feature.max)
        self.integral = isinstance(feature, IntegerFeature)
        self.fill = float(feature.fill) if self.impute else 0.0  # type: ignore[arg-type]

    def one(self, value: Any) -> tuple[Any, Reason | None, Verdict]:
        if value is None:
            return self._missing()
        if type(value) not in _NUMBER_TYPES:
            return 0.0, "wrong_type", "reject"
        x = _to_float(value)
        if not math.isfinite(x):
            return 0.0, "not_finite", "reject"
        if self.integral and not x.is_integer():
            return 0.0, "wrong_type", "reject"
        if x < self.lo:
            return (self.lo if self.action == "clip" else x), "below_min", self.action
        if x > self.hi:
            return (self.hi if self.action == "clip" else x), "above_max", self.action
        return x, None, "reject"

    def batch(self, raw: Any, missing: NDArray[np.bool_] | None, n: int) -> tuple[NDArray[Any], list[Problem]]:
        problems: list[Problem] = []
        unusable: NDArray[np.bool_] | None = None  # cells with no number to range-check
        if isinstance(raw, np.ndarray) and raw.dtype.kind in "fiu":
            with np.errstate(invalid="ignore"):  # a signalling NaN stays NaN (and is refused below)
                values: NDArray[np.float64] = raw.astype(np.float64, copy=True)
            absent = missing
        else:
            col = _cells(raw)
            fast = _fast_floats(col)
            absent = missing
            if fast is not None:
                values = fast
            else:
                absent = np.fromiter((v is None for v in col), dtype=np.bool_, count=n)
                if missing is not None:
                    absent |= missing
                typed = np.fromiter((type(v) in _NUMBER_TYPES for v in col), dtype=np.bool_, count=n)
                wrong = ~typed & ~absent
                if wrong.any():
                    problems.append((wrong, "wrong_type", "reject"))
                    unusable = wrong
                values = np.array(
                    [_to_float(v) if t else 0.0 for v, t in zip(col, typed.tolist(), strict=True)], dtype=np.float64
                )
        if absent is not None and absent.any():
            values[absent] = self.fill
            if not self.impute:
                problems.append((absent, "missing", "reject"))
                unusable = absent if unusable is None else unusable | absent
            else:
                problems.append((absent, "missing", "impute"))
        finite = np.isfinite(values)
        if not finite.all():
            problems.append((~finite, "not_finite", "reject"))
            values[~finite] = 0.0
            unusable = ~finite if unusable is None else unusable | ~finite
        if self.integral:
            fractional = values != np.floor(values)
            if fractional.any():
                problems.append((fractional, "wrong_type", "reject"))
                unusable = fractional if unusable is None else unusable | fractional
        below = values < self.lo
        above = values > self.hi
        if unusable is not None:
            below &= ~unusable
            above &= ~unusable
        if below.any():
            problems.append((below, "below_min", self.action))
        if above.any():
            problems.append((above, "above_max", self.action))
        if self.action == "clip" and (below.any() or above.any()):
            np.clip(values, self.lo, self.hi, out=values)
        return values, problems


class _CategoryGuard(_FeatureGuard):
    __slots__ = ("codes", "lookup", "unseen")

    def __init__(self, feature: CategoryFeature) -> None:
        super().__init__(feature)
        self.codes = {c: i for i, c in enumerate(feature.categories)}
        # The lookup maps missing (None) to -2 so one C-level pass tells missing from unseen.
        self.lookup: dict[Any, int] = {**self.codes, None: -2}
        self.fill = self.codes[feature.fill] if self.impute else 0  # type: ignore[index]
        self.unseen = len(feature.categories) if feature.other else -1
        """The code of an unseen value: the open vocabulary's ``(other)`` bucket, else -1
        (no column: all zeros one-hot)."""

    def one(self, value: Any) -> tuple[Any, Reason | None, Verdict]:
        if value is None:
            return self._missing()
        if not isinstance(value, str):
            return 0, "wrong_type", "reject"
        code = self.codes.get(value)
        if code is None:
            return self.unseen, "unseen_category", self.action
        return code, None, "reject"

    def batch(self, raw: Any, missing: NDArray[np.bool_] | None, n: int) -> tuple[NDArray[Any], list[Problem]]:
        problems: list[Problem] = []
        col = _cells(raw)
        try:
            # Keys are the categories (str) and None: any other type misses (-1) and is told
            # apart from an unseen string below, on the misses only.
            codes = np.fromiter(map(self.lookup.get, col, [-1] * n), dtype=np.int64, count=n)
        except TypeError:  # an unhashable value (a list, an object) in the column
            codes = np.array(
                [self.lookup.get(v, -1) if isinstance(v, str) or v is None else -3 for v in col], dtype=np.int64
            )
        misses = np.flatnonzero(codes < 0).tolist()
        wrong = [i for i in misses if codes[i] != -2 and not isinstance(col[i], str)]
        if wrong:
            mask = np.zeros(n, dtype=np.bool_)
            mask[wrong] = True
            problems.append((mask, "wrong_type", "reject"))
            codes[mask] = 0
        absent = codes == -2
        if missing is not None:
            absent |= missing
        if absent.any():
            codes[absent] = self.fill
            problems.append((absent, "missing", "reject" if not self.impute else "impute"))
        unseen = codes == -1
        if unseen.any():
            problems.append((unseen, "unseen_category", self.action))
            codes[unseen] = self.unseen
        return codes, problems


class _BooleanGuard(_FeatureGuard):
    __slots__ = ()

    def __init__(self, feature: BooleanFeature) -> None:
        super().__init__(feature)
        self.fill = float(feature.fill) if self.impute else 0.0  # type: ignore[arg-type]

    def one(self, value: Any) -> tuple[Any, Reason | None, Verdict]:
        if value is None:
            return self._missing()
        if type(value) not in _BOOL_TYPES:
            return 0.0, "wrong_type", "reject"
        return float(bool(value)), None, "reject"

    def batch(self, raw: Any, missing: NDArray[np.bool_] | None, n: int) -> tuple[NDArray[Any], list[Problem]]:
        problems: list[Problem] = []
        if isinstance(raw, np.ndarray) and raw.dtype.kind == "b":
            values = raw.astype(np.float64)
            absent = missing
        else:
            col = _cells(raw)
            typed = np.fromiter((type(v) in _BOOL_TYPES for v in col), dtype=np.bool_, count=n)
            absent = np.fromiter((v is None for v in col), dtype=np.bool_, count=n)
            if missing is not None:
                absent |= missing
            wrong = ~typed & ~absent
            if wrong.any():
                problems.append((wrong, "wrong_type", "reject"))
            values = np.array(
                [bool(v) if t else False for v, t in zip(col, typed.tolist(), strict=True)], dtype=np.float64
            )
        if absent is not None and absent.any():
            values[absent] = self.fill
            problems.append((absent, "missing", "reject" if not self.impute else "impute"))
        return values, problems


def _guard_for(feature: Feature) -> _FeatureGuard:
    match feature:
        case NumberFeature() | IntegerFeature():
            return _NumberGuard(feature)
        case CategoryFeature():
            return _CategoryGuard(feature)
        case BooleanFeature():
            return _BooleanGuard(feature)
    raise TypeError(f"unknown feature kind {type(feature).__name__}")  # pragma: no cover


class Guards:
    """Compiled guards of one spec. Build with ``compile_guards(spec)``; reuse per request."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.features = tuple(_guard_for(f) for f in spec.features)
        self.names = spec.feature_names
        self.name_set = frozenset(self.names)
        self._index = column_index(tuple(self.names))
        self.reject_unknown = spec.unknown_fields == "reject"
        target = spec.output.target if spec.output else None
        self.ignored = frozenset({target} if target else ()) | frozenset(spec.ignored_fields)
        self.kinds = tuple(
            "number" if isinstance(g, _NumberGuard) else "category" if isinstance(g, _CategoryGuard) else "boolean"
            for g in self.features
        )
        """Each feature's kind, as the typed lanes decode it (``gateway.lanes``)."""
        self.numeric = bool(self.features) and all(isinstance(g, _NumberGuard) for g in self.features)
        """Every feature is a number or an integer: batches may come as one matrix."""
        numbers = cast("tuple[_NumberGuard, ...]", self.features if self.numeric else ())
        # finite stand-ins for open bounds, so that one pair of comparisons also refuses
        # NaN (every comparison is false) and +-inf (beyond the largest float64)
        biggest = float(np.finfo(np.float64).max)
        self._lo = np.maximum(np.array([g.lo for g in numbers], dtype=np.float64), -biggest)
        self._hi = np.minimum(np.array([g.hi for g in numbers], dtype=np.float64), biggest)
        self._integral = np.array([i for i, g in enumerate(numbers) if g.integral], dtype=np.intp)
        self._lo_row, self._hi_row = self._lo.tolist(), self._hi.tolist()
        self._integral_row = self._integral.tolist()
        # the table lane (``gateway.lanes``): the number features of a mixed spec, checked as one block
        table = [g for g in self.features if isinstance(g, _NumberGuard)] if not self.numeric else []
        self._table_numbers = tuple(g.name for g in table)
        self._table_lo = np.maximum(np.array([g.lo for g in table], dtype=np.float64), -biggest)
        self._table_hi = np.minimum(np.array([g.hi for g in table], dtype=np.float64), biggest)
        self._table_integral = np.array([i for i, g in enumerate(table) if g.integral], dtype=np.intp)

    def check(self, columns: Columns) -> Checked:
        """Check every cell; never raises for bad input. See ``Checked``.

        Columns of a typed lane that hold a violation are checked again in the general
        lane when they have it (``Columns.general``), which echoes values as given."""
        checked = self._check(columns)
        if checked.violations and columns.general is not None:
            return self._check(columns.general())
        return checked

    def _check(self, columns: Columns) -> Checked:
        if columns.general is not None and columns.matrix is None and columns.n_rows > 1:
            verdict = self._check_table(columns)
            if verdict is not None:
                return verdict
        if columns.matrix is not None and self.numeric and not columns.unknown:
            if columns.row is not None:
                verdict = self._check_row(columns.row, columns.matrix)
            else:
                verdict = self._check_matrix(columns.matrix)
            if verdict is not None:
                return verdict
        if columns.n_rows == 1 and not columns.missing:
            return self._check_one(columns)
        return self._check_batch(columns)

    def _check_matrix(self, x: NDArray[np.float64]) -> Checked | None:
        """The verdict on a clean all-numeric batch in a few whole-matrix operations, or
        None if some cell breaks the spec: then the columns are checked one by one, which
        names every violation exactly."""
        inside = x >= self._lo
        inside &= x <= self._hi
        if not inside.all():  # a NaN, an infinity or a value out of range somewhere
            return None
        if len(self._integral):
            part = x[:, self._integral]
            if (part != np.floor(part)).any():
                return None
        return self._clean(x)

    def _check_table(self, columns: Columns) -> Checked | None:
        """The verdict on a clean batch of the table lane (every cell of its type, no field
        missing or extra) in a few whole-block operations: the numbers as one matrix against
        their bounds, the categories coded at once; or None if some cell breaks the spec:
        then the columns are checked one by one, which names every violation exactly."""
        data, n = columns.data, columns.n_rows
        numbers: dict[str, NDArray[np.float64]] = {}
        if self._table_numbers:
            x = np.stack([data[name] for name in self._table_numbers], axis=1)
            inside = x >= self._table_lo
            inside &= x <= self._table_hi
            if not inside.all():  # a NaN, an infinity or a value out of range somewhere
                return None
            if len(self._table_integral):
                part = x[:, self._table_integral]
                if (part != np.floor(part)).any():
                    return None
            numbers = {name: x[:, j] for j, name in enumerate(self._table_numbers)}
        clean: dict[str, Any] = {}
        for guard in self.features:
            name = guard.name
            if isinstance(guard, _NumberGuard):
                clean[name] = numbers[name]
            elif isinstance(guard, _CategoryGuard):
                codes = np.fromiter(map(guard.codes.get, data[name], [-1] * n), dtype=np.int64, count=n)
                if codes.min() < 0:  # an unseen category
                    return None
                clean[name] = codes
            else:
                clean[name] = np.asarray(data[name], dtype=np.float64)
        return Checked(n, clean, [], None, None, None)

    def _check_row(self, row: tuple[float, ...], x: NDArray[np.float64]) -> Checked | None:
        """``_check_matrix`` for one row (``x``) given as Python floats (``Columns.row``):
        the same comparisons, a C loop over the cells instead of numpy calls."""
        if not (all(map(le, self._lo_row, row)) and all(map(le, row, self._hi_row))):
            return None  # NaN fails both comparisons, and +-inf lies beyond the stand-ins
        if self._integral_row and not all(row[j].is_integer() for j in self._integral_row):
            return None
        return self._clean(x, row)

    def _clean(self, x: NDArray[np.float64], row: tuple[float, ...] | None = None) -> Checked:
        """The verdict on an all-numeric batch ``x`` that breaks nothing: the matrix itself."""
        checked = Checked(len(x), MatrixColumns(x, self._index), [], None, None, None)  # type: ignore[arg-type]
        checked.matrix, checked.row = x, row
        return checked

    def trust(self, columns: Columns) -> Checked:
        """Parse without checking (the benchmark's ``guards: false`` mode): numbers and
        booleans go straight to float64 and categories to codes (unseen -> all-zero).
        Falls back to ``check`` for anything it cannot parse blindly (a missing cell)."""
        n = columns.n_rows
        clean: dict[str, Any] = {}
        try:
            for guard in self.features:
                raw = columns.data[guard.name]
                if isinstance(guard, _CategoryGuard):
                    codes = (
                        [guard.codes.get(v, guard.unseen) for v in raw]
                        if n == 1
                        else np.fromiter(map(guard.codes.get, raw, [guard.unseen] * n), np.int64, n)
                    )
                    clean[guard.name] = codes
                else:
                    clean[guard.name] = [float(raw[0])] if n == 1 else np.asarray(raw, dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            return self.check(columns)
        return Checked(n, clean, [], None, None, None)

    def enforce(self, columns: Columns) -> Checked:
        """``check``, then raise ``InputRejectedError`` with every violation if a row is rejected."""
        checked = self.check(columns)
        if checked.rejected is not None:
            rows = int(checked.rejected.sum())
            raise InputRejectedError(
                f"{rows} of {checked.n_rows} rows break the feature spec {self.spec.name!r}",
                [v for v in checked.violations if v.action == "reject"],
            )
        return checked

    def _unknown(self, columns: Columns) -> list[Violation]:
        if not self.reject_unknown:
            return []
        return [
            Violation(row=row, feature=_echo(field), reason="unknown_feature", value=_echo(value))
            for row, field, value in columns.unknown
            if field not in self.ignored
        ]

    def _check_one(self, columns: Columns) -> Checked:
        clean: dict[str, Any] = {}
        imputed: dict[str, Any] = {}
        violations: list[Violation] = []
        rejected = flagged = clipped = False
        data = columns.data
        for guard in self.features:
            raw = data.get(guard.name)
            value = raw[0] if raw is not None else None
            cleaned, reason, action = guard.one(value)
            clean[guard.name] = [cleaned]
            if action == "impute":
                imputed[guard.name] = True
            elif reason is not None:
                violations.append(
                    Violation(row=0, feature=guard.name, reason=reason, value=_echo(value), action=action)
                )
                if action == "reject":
                    rejected = True
                elif action == "flag":
                    flagged = True
                else:
                    clipped = True
        if columns.unknown:
            extra = self._unknown(columns)
            violations.extend(extra)
            rejected = rejected or bool(extra)
        one = np.ones(1, dtype=np.bool_)
        return Checked(
            1, clean, violations, one if rejected else None, one if flagged else None, one if clipped else None, imputed
        )

    def _check_batch(self, columns: Columns) -> Checked:
        n = columns.n_rows
        clean: dict[str, Any] = {}
        imputed: dict[str, Any] = {}
        found: list[tuple[int, NDArray[np.bool_], Reason, Action, Any]] = []
        for index, guard in enumerate(self.features):
            raw = columns.data.get(guard.name)
            if raw is None:  # no row sent this feature: every cell is missing
                raw = np.zeros(n, dtype=np.float64) if not isinstance(guard, _CategoryGuard) else [None] * n
                missing: NDArray[np.bool_] | None = np.ones(n, dtype=np.bool_)
            else:
                missing = columns.missing.get(guard.name)
            values, problems = guard.batch(raw, missing, n)
            clean[guard.name] = values
            for mask, reason, action in problems:
                if action == "impute":  # not a violation: the spec says to fill it in
                    imputed[guard.name] = mask
                    continue
                found.append((index, mask, reason, action, raw if reason != "missing" else None))
        rejected = np.zeros(n, dtype=np.bool_)
        flagged = np.zeros(n, dtype=np.bool_)
        clipped = np.zeros(n, dtype=np.bool_)
        keyed: list[tuple[int, int, Violation]] = []
        by_action = {"reject": rejected, "flag": flagged, "clip": clipped}
        for index, mask, reason, action, raw in found:
            np.logical_or(by_action[action], mask, out=by_action[action])
            name = self.names[index]
            for row in np.flatnonzero(mask).tolist():
                value = None if raw is None else _echo(raw[row])
                keyed.append((row, index, Violation(row=row, feature=name, reason=reason, value=value, action=action)))
        unknown = self._unknown(columns)
        for v in unknown:
            rejected[v.row] = True
            keyed.append((v.row, len(self.names), v))
        keyed.sort(key=lambda item: (item[0], item[1]))
        return Checked(
            n,
            clean,
            [v for _, _, v in keyed],
            rejected if rejected.any() else None,
            flagged if flagged.any() else None,
            clipped if clipped.any() else None,
            imputed,
        )


def compile_guards(spec: FeatureSpec) -> Guards:
    """Build the guards of ``spec`` once; ``Guards.check`` is then called per batch."""
    return Guards(spec)
