"""Shared Hypothesis strategies for the feature-spec core (in the manner of attrs' tests/strategies.py).

- ``specs()``: random valid ``FeatureSpec`` values (number, integer, category and boolean
  features; bounded, half-bounded and unbounded; every transform of the right kind; every
  ``on_violation`` policy where it is allowed; ``missing`` reject or impute with a valid fill;
  optional baselines, output and ``unknown_fields`` policy).
- ``valid_rows(spec)``: records every guard accepts without a single violation.
- ``accepted_rows(spec)``: records that may carry violations, but only ones the spec lets
  through (``clip``/``flag`` domain violations, absent values of ``impute`` features,
  extra fields under ``unknown_fields: ignore``, the output's target field).
- ``messy_rows(spec)``: records where every cell may be anything (valid, absent, ``None``,
  out of the domain, or an arbitrary JSON-ish value), plus extra fields.
- ``cells``: arbitrary JSON-ish values: None, bools, ints (huge ones too), floats (NaN and
  infinities too), strings (long ones too), lists and dicts.

Magnitudes. Bounds and transform parameters lie within ``MAGNITUDE`` (1e6); values in an
open domain, and domain-violating values that ``clip`` or ``flag`` let through, within
``VALUE_MAGNITUDE`` (1e300). So transformed values go far past float32's range (the
transform saturates them at float32's largest finite value) while the float64 arithmetic
before that rounding stays finite (at most 1e300 / 1e-3). Inputs that overflow float64
inside the transform are the subject of explicit tests in ``tests/unit/test_transform.py``.
``cells`` has no limit at all: it is for the guards, which never transform.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

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

__all__ = [
    "ABSENT",
    "MAGNITUDE",
    "VALUE_MAGNITUDE",
    "accepted_rows",
    "accepted_value",
    "category_features",
    "cells",
    "clip",
    "features",
    "messy_rows",
    "names",
    "number_features",
    "out_of_domain_value",
    "spec_and_rows",
    "specs",
    "valid_rows",
    "valid_value",
]

MAGNITUDE = 1e6
"""Bounds and transform parameters lie within ``[-MAGNITUDE, MAGNITUDE]``."""

VALUE_MAGNITUDE = 1e300
"""Values in an open domain, and domain-violating values, lie within this."""

MIN_SPREAD = 1e-3
"""Smallest ``std`` and ``high - low`` of generated transforms."""


class _Absent:
    """Marks a field that a generated row leaves out (as opposed to sending ``null``)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


# --- building blocks ----------------------------------------------------------------------

names = st.one_of(
    st.text(min_size=1, max_size=16),
    st.tuples(st.text(min_size=1, max_size=4), st.integers(120, 128)).map(lambda p: (p[0] * 128)[: p[1]]),
)
"""Feature (and field) names: any text, now and then up to the 128-character limit."""

texts = st.text(max_size=12)
"""Category values and labels: any text, the empty string included."""

finite = st.floats(min_value=-MAGNITUDE, max_value=MAGNITUDE, allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=-int(MAGNITUDE), max_value=int(MAGNITUDE))
descriptions = st.just("") | st.text(max_size=30)

huge_ints = st.one_of(
    st.sampled_from([2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**308, 2**1024, -(2**1024), 10**400]),
    # Either side of the smallest int that float() cannot convert (2**1024 - 2**970).
    st.sampled_from([2**1024 - 2**970 - 1, 2**1024 - 2**970, -(2**1024 - 2**970 - 1), -(2**1024 - 2**970)]),
    st.integers(min_value=2**1024, max_value=2**1100),
    st.integers(max_value=-(2**1024), min_value=-(2**1100)),
)
"""Integers around and beyond the int64 and float64 ranges."""

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_ints,
    st.floats(),  # NaN and +-inf included
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.5, 1e300, -1e300]),
    st.text(max_size=20),
    # Around the 200-character echo limit (built by repetition: cheap to generate).
    st.tuples(st.text(min_size=1, max_size=4), st.integers(190, 260)).map(lambda p: (p[0] * 260)[: p[1]]),
)

cells = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
"""Arbitrary JSON-ish values, as a client may send any of them in any cell."""


# --- features -----------------------------------------------------------------------------


@st.composite
def numeric_baselines(draw: st.DrawFn) -> NumericBaseline:
    edges = sorted(set(draw(st.lists(finite, max_size=4))))
    counts = draw(st.lists(st.integers(0, 1000), min_size=len(edges) + 1, max_size=len(edges) + 1))
    return NumericBaseline(edges=tuple(edges), counts=tuple(counts), missing=draw(st.integers(0, 50)))


def category_baselines(width: int) -> st.SearchStrategy[CategoryBaseline]:
    return st.builds(
        CategoryBaseline,
        counts=st.tuples(*[st.integers(0, 1000)] * width),
        missing=st.integers(0, 50),
    )


@st.composite
def number_features(draw: st.DrawFn, name: str, *, integer: bool | None = None, policy: str | None = None) -> Feature:
    """A number or integer feature. ``policy`` forces ``on_violation`` (``clip`` forces bounds)."""
    if integer is None:
        integer = draw(st.booleans())
    bounded = policy == "clip"
    if integer:
        lo = draw(ints) if bounded or draw(st.booleans()) else None
        hi = draw(st.integers(min_value=int(MAGNITUDE) * -1 if lo is None else lo, max_value=int(MAGNITUDE))) if bounded or draw(st.booleans()) else None
    else:
        # Float fields get ints now and then, as Python callers write them (min=0): the
        # spec must treat 0 and 0.0 alike (equality, digest, round trip).
        lo = draw(finite | ints) if bounded or draw(st.booleans()) else None
        hi_floor = -MAGNITUDE if lo is None else lo
        hi = draw(st.floats(min_value=hi_floor, max_value=MAGNITUDE)) if bounded or draw(st.booleans()) else None
    kinds = ["standardize", "minmax", "passthrough"] + (["log"] if lo is not None else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "standardize":
        transform: Any = Standardize(mean=draw(finite | ints), std=draw(st.floats(min_value=MIN_SPREAD, max_value=MAGNITUDE)))
    elif kind == "minmax":
        low = draw(finite)
        transform = MinMax(low=low, high=low + draw(st.floats(min_value=MIN_SPREAD, max_value=MAGNITUDE)))
    elif kind == "log":
        below = draw(st.just(0.0) | st.floats(min_value=0.0, max_value=1e3))
        transform = Log(shift=float(lo) - below)  # type: ignore[arg-type]
    else:
        transform = Passthrough()
    policies = ["reject", "flag"] + (["clip"] if lo is not None and hi is not None else [])
    on_violation = policy or draw(st.sampled_from(policies))
    cls = IntegerFeature if integer else NumberFeature
    feature = cls(name=name, min=lo, max=hi, transform=transform, on_violation=on_violation)  # type: ignore[arg-type]
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["missing"] = "impute"
        fill = draw(valid_value(feature))  # an int or a float, for either kind
        # fill is a float field: an int beyond 2**53 cannot come back from a file exactly.
        extra["fill"] = float(fill) if isinstance(fill, int) and abs(fill) > 2**53 else fill
    if draw(st.booleans()):
        extra["baseline"] = draw(numeric_baselines())
    if draw(st.booleans()):
        extra["description"] = draw(descriptions)
    return cls(name=name, min=lo, max=hi, transform=transform, on_violation=on_violation, **extra)  # type: ignore[arg-type]


@st.composite
def category_features(draw: st.DrawFn, name: str, *, policy: str | None = None) -> CategoryFeature:
    categories = tuple(draw(st.lists(texts, min_size=1, max_size=5, unique=True)))
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["missing"] = "impute"
        extra["fill"] = draw(st.sampled_from(categories))
    if draw(st.booleans()):
        extra["baseline"] = draw(category_baselines(len(categories)))
    return CategoryFeature(
        name=name,
        categories=categories,
        transform=draw(st.sampled_from([OneHot(), Ordinal()])),
        on_violation=policy or draw(st.sampled_from(["reject", "flag"])),  # type: ignore[arg-type]
        **extra,
    )


@st.composite
def boolean_features(draw: st.DrawFn, name: str) -> BooleanFeature:
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["missing"] = "impute"
        extra["fill"] = draw(st.booleans())
    if draw(st.booleans()):
        extra["baseline"] = draw(category_baselines(2))
    return BooleanFeature(name=name, on_violation=draw(st.sampled_from(["reject", "flag"])), **extra)  # type: ignore[arg-type]


def features(name: str) -> st.SearchStrategy[Feature]:
    """Any feature named ``name``."""
    return st.one_of(
        number_features(name, integer=False),
        number_features(name, integer=True),
        category_features(name),
        boolean_features(name),
    )


@st.composite
def outputs(draw: st.DrawFn, taken: frozenset[str]) -> Output:
    target = draw(st.none() | names.filter(lambda n: n not in taken))
    if draw(st.booleans()):
        labels = tuple(draw(st.lists(texts, min_size=2, max_size=4, unique=True)))
        baseline = None
        if draw(st.booleans()):
            edges = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=4, unique=True)))
            baseline = OutputBaseline(
                class_counts=tuple(draw(st.lists(st.integers(0, 99), min_size=len(labels), max_size=len(labels)))),
                confidence=HistogramBaseline(edges=tuple(edges), counts=tuple([1] * (len(edges) - 1))),
            )
        return Output(
            task="classification",
            labels=labels,
            target=target,
            review_threshold=draw(st.none() | st.floats(0, 1)),
            baseline=baseline,
        )
    return Output(task="regression", target=target)


@st.composite
def specs(draw: st.DrawFn, *, required: st.SearchStrategy[Feature] | None = None) -> FeatureSpec:
    """A random valid spec. ``required``, a strategy of one feature, is appended to it
    under a fresh name (its own name is replaced)."""
    feature_names = draw(st.lists(names, min_size=0 if required is not None else 1, max_size=6, unique=True))
    chosen = [draw(features(n)) for n in feature_names]
    if required is not None:
        import msgspec

        extra = draw(required)
        fresh = draw(names.filter(lambda n: n not in feature_names))
        chosen.append(msgspec.structs.replace(extra, name=fresh))
    taken = frozenset(f.name for f in chosen)
    output = draw(st.none() | outputs(taken))
    return FeatureSpec(
        name=draw(names),
        features=tuple(chosen),
        output=output,
        description=draw(descriptions),
        unknown_fields=draw(st.sampled_from(["reject", "ignore"])),
    )


# --- values -------------------------------------------------------------------------------


def valid_value(feature: Feature) -> st.SearchStrategy[Any]:
    """A value the feature accepts with no violation (never ``None``)."""
    if isinstance(feature, CategoryFeature):
        return st.sampled_from(feature.categories)
    if isinstance(feature, BooleanFeature):
        return st.booleans()
    lo = -VALUE_MAGNITUDE if feature.min is None else feature.min
    hi = VALUE_MAGNITUDE if feature.max is None else feature.max
    if isinstance(feature, IntegerFeature):
        whole = st.integers(min_value=math.ceil(lo), max_value=math.floor(hi))
        # A float without a fractional part is a valid integer too.
        return whole | whole.map(float)
    floats = st.floats(min_value=lo, max_value=hi)
    if math.ceil(lo) <= math.floor(hi):  # ints are valid numbers too
        return floats | st.integers(min_value=max(math.ceil(lo), -(2**64)), max_value=min(math.floor(hi), 2**64))
    return floats


def out_of_domain_value(feature: Feature) -> st.SearchStrategy[Any] | None:
    """A well-typed value outside the feature's domain (a domain violation), or ``None``
    if the feature has no such values."""
    if isinstance(feature, CategoryFeature):
        return texts.filter(lambda t: t not in feature.categories)
    if isinstance(feature, BooleanFeature):
        return None
    options = []
    integer = isinstance(feature, IntegerFeature)
    big = int(VALUE_MAGNITUDE)
    if feature.min is not None:
        options.append(
            st.integers(min_value=-big, max_value=math.floor(feature.min) - 1)
            if integer
            else st.floats(min_value=-VALUE_MAGNITUDE, max_value=feature.min, exclude_max=True)
        )
    if feature.max is not None:
        options.append(
            st.integers(min_value=math.ceil(feature.max) + 1, max_value=big)
            if integer
            else st.floats(min_value=feature.max, max_value=VALUE_MAGNITUDE, exclude_min=True)
        )
    return st.one_of(*options) if options else None


def accepted_value(feature: Feature) -> st.SearchStrategy[Any]:
    """A cell the spec lets reach the model: valid, or a domain violation under ``clip`` or
    ``flag``, or (for ``impute`` features) absent or ``None``."""
    options = [valid_value(feature)]
    out = out_of_domain_value(feature)
    if out is not None and feature.on_violation != "reject":
        options.append(out)
    if feature.missing == "impute":
        options.append(st.sampled_from([ABSENT, None]))
    return st.one_of(*options)


def clip(feature: NumberFeature | IntegerFeature, value: Any) -> Any:
    """The value a ``clip`` feature moves ``value`` to."""
    if feature.min is not None and value < feature.min:
        return feature.min
    if feature.max is not None and value > feature.max:
        return feature.max
    return value


def _target(spec: FeatureSpec) -> str | None:
    return spec.output.target if spec.output is not None else None


def _extra_names(spec: FeatureSpec) -> st.SearchStrategy[str]:
    taken = set(spec.feature_names) | {_target(spec)}
    return st.text(max_size=10).filter(lambda k: k not in taken)


@st.composite
def _row(draw: st.DrawFn, spec: FeatureSpec, cell_of: Any, *, extras: bool) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for feature in spec.features:
        value = draw(cell_of(feature))
        if value is not ABSENT:
            row[feature.name] = value
    target = _target(spec)
    if target is not None and draw(st.booleans()):
        row[target] = draw(cells)
    if extras:
        row.update(draw(st.dictionaries(_extra_names(spec), cells, max_size=2)))
    # Field order varies, as JSON clients vary it.
    keys = draw(st.permutations(list(row)))
    return {k: row[k] for k in keys}


def valid_rows(spec: FeatureSpec, *, min_size: int = 1, max_size: int = 8) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Records with every feature present and valid, and no other field."""

    @st.composite
    def row(draw: st.DrawFn) -> dict[str, Any]:
        return {f.name: draw(valid_value(f)) for f in spec.features}

    return st.lists(row(), min_size=min_size, max_size=max_size)


def accepted_rows(spec: FeatureSpec, *, min_size: int = 1, max_size: int = 8) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Records the spec lets through (no violation with action ``reject``)."""
    return st.lists(
        _row(spec, accepted_value, extras=spec.unknown_fields == "ignore"), min_size=min_size, max_size=max_size
    )


def messy_value(feature: Feature) -> st.SearchStrategy[Any]:
    options = [valid_value(feature), cells, st.sampled_from([ABSENT, None])]
    out = out_of_domain_value(feature)
    if out is not None:
        options.append(out)
    return st.one_of(*options)


def messy_rows(spec: FeatureSpec, *, min_size: int = 1, max_size: int = 8) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Records where any cell may be anything, with extra fields now and then."""
    return st.lists(_row(spec, messy_value, extras=True), min_size=min_size, max_size=max_size)


def spec_and_rows(rows: Any = valid_rows, spec_strategy: st.SearchStrategy[FeatureSpec] | None = None, **kwargs: Any) -> st.SearchStrategy[tuple[FeatureSpec, list[dict[str, Any]]]]:
    """A spec and rows for it, e.g. ``spec_and_rows(messy_rows)``."""
    return (spec_strategy or specs()).flatmap(lambda spec: st.tuples(st.just(spec), rows(spec, **kwargs)))
