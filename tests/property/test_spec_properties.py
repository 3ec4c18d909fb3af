"""Properties of the feature-spec core: files, guards and transform, on random specs and rows.

The strategies live in ``tests/property/strategies.py``; the oracle for ``check`` is written
here, from the rules documented in ``gateway.guards`` and ``gateway.spec``, and shares no
code with the guards.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.errors import InputRejectedError
from gateway.spec import (
    BooleanFeature,
    CategoryFeature,
    Feature,
    FeatureSpec,
    IntegerFeature,
    NumberFeature,
    OneHot,
    Passthrough,
    decode_spec,
    encode_spec,
)
from gateway.table import to_columns
from gateway.violations import Violation
from tests.property.strategies import (
    accepted_rows,
    category_features,
    clip,
    messy_rows,
    number_features,
    out_of_domain_value,
    spec_and_rows,
    specs,
    valid_rows,
    valid_value,
)

# --- helpers ------------------------------------------------------------------------------

DOMAIN_REASONS = {"below_min", "above_max", "unseen_category"}
F32_MAX = float(np.finfo(np.float32).max)
ECHO_LIMIT = 200
FLOAT64_OVERFLOW = 2**1024 - 2**970
"""The smallest int that does not round to a finite float64: halfway between DBL_MAX
(2**1024 - 2**971) and 2**1024, where round-half-to-even goes up."""


def same_value(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN and tells 1 from 1.0 from True."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def key(v: Violation) -> tuple[Any, ...]:
    """A hashable, NaN-proof identity for a violation (NaN != NaN would break ``==``)."""
    value = v.value
    if isinstance(value, float) and math.isnan(value):
        value = "<nan>"
    return (v.row, v.feature, v.reason, v.action, type(value).__name__, value)


def keys(violations: list[Violation]) -> list[tuple[Any, ...]]:
    return [key(v) for v in violations]


def first_column(spec: FeatureSpec, index: int) -> int:
    """Where feature ``index`` starts in the output (one-hot takes a column per category)."""
    width = [len(f.categories) if isinstance(f, CategoryFeature) and isinstance(f.transform, OneHot) else 1 for f in spec.features]
    return sum(width[:index])


def target_of(spec: FeatureSpec) -> str | None:
    return spec.output.target if spec.output is not None else None


# --- the oracle -----------------------------------------------------------------------------


def expected_reason(feature: Feature, present: bool, value: Any) -> str | None:
    """The documented verdict on one cell, written independently of ``gateway.guards``.

    - absent or ``None``: ``missing``, unless the feature imputes;
    - wrong Python type: ``wrong_type`` (a number is an int or a float but not a bool; a
      category is a str; a boolean is a bool); an integer feature also calls a float with
      a fractional part ``wrong_type``;
    - NaN, +-inf, or an int beyond float64: ``not_finite``;
    - outside ``[min, max]``: ``below_min``/``above_max``; a string outside the categories:
      ``unseen_category``.
    """
    if not present or value is None:
        return None if feature.missing == "impute" else "missing"
    if isinstance(feature, BooleanFeature):
        return None if type(value) is bool else "wrong_type"
    if isinstance(feature, CategoryFeature):
        if type(value) is not str:
            return "wrong_type"
        return None if value in feature.categories else "unseen_category"
    # number or integer
    if type(value) not in (int, float):
        return "wrong_type"
    if type(value) is float and (math.isnan(value) or math.isinf(value)):
        return "not_finite"
    if type(value) is int and abs(value) >= FLOAT64_OVERFLOW:
        return "not_finite"
    if isinstance(feature, IntegerFeature) and type(value) is float and value != math.floor(value):
        return "wrong_type"
    # Python compares int with float exactly, so this is the mathematical comparison.
    if feature.min is not None and value < feature.min:
        return "below_min"
    if feature.max is not None and value > feature.max:
        return "above_max"
    return None


def expected_echo(value: Any) -> Any:
    if isinstance(value, str) and len(value) > ECHO_LIMIT:
        return value[:ECHO_LIMIT] + "…"
    return value


def expected_violations(spec: FeatureSpec, rows: list[dict[str, Any]]) -> set[tuple[int, str, str, str]]:
    expected: set[tuple[int, str, str, str]] = set()
    names = set(spec.feature_names)
    for i, row in enumerate(rows):
        for feature in spec.features:
            reason = expected_reason(feature, feature.name in row, row.get(feature.name))
            if reason is not None:
                action = feature.on_violation if reason in DOMAIN_REASONS else "reject"
                expected.add((i, feature.name, reason, action))
        if spec.unknown_fields == "reject":
            for field in row:
                if field not in names and field != target_of(spec):
                    expected.add((i, field, "unknown_feature", "reject"))
    return expected


def test_oracle_float64_limit() -> None:
    """The oracle's float64 limit agrees with Python's own int -> float conversion."""
    assert float(FLOAT64_OVERFLOW - 1) == 1.7976931348623157e308
    with pytest.raises(OverflowError):
        float(FLOAT64_OVERFLOW)
    feature = NumberFeature(name="x")
    assert expected_reason(feature, True, FLOAT64_OVERFLOW) == "not_finite"
    assert expected_reason(feature, True, -FLOAT64_OVERFLOW) == "not_finite"
    assert expected_reason(feature, True, FLOAT64_OVERFLOW - 1) is None


# --- files ----------------------------------------------------------------------------------


@given(specs())
def test_file_round_trip_gives_equal_spec_and_digest(spec: FeatureSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".yaml", ".yml", ".json"):
            path = Path(tmp) / f"spec{suffix}"
            spec.save(path)
            loaded = FeatureSpec.load(path)
            assert loaded == spec, suffix
            assert loaded.digest == spec.digest, suffix
            # Saving is stable: a loaded spec saves, and loads, to the very same bytes.
            # (Not necessarily the first file's: min=0 is written "0", loaded as 0.0.)
            again, twice = Path(tmp) / f"again{suffix}", Path(tmp) / f"twice{suffix}"
            loaded.save(again)
            FeatureSpec.load(again).save(twice)
            assert twice.read_bytes() == again.read_bytes(), suffix
            assert FeatureSpec.load(again) == spec


@given(specs())
def test_in_memory_round_trip_gives_equal_spec_and_digest(spec: FeatureSpec) -> None:
    for encode, decode in (
        (msgspec.json.encode, msgspec.json.decode),
        (msgspec.yaml.encode, msgspec.yaml.decode),
    ):
        back = decode(encode(spec), type=FeatureSpec)
        assert back == spec
        assert back.digest == spec.digest
    for fmt in ("yaml", "json"):
        back = decode_spec(encode_spec(spec, fmt), fmt)  # type: ignore[arg-type]
        assert back == spec
        assert back.digest == spec.digest


@given(spec_and_rows(valid_rows))
def test_transform_after_save_and_load_gives_the_same_bytes(case: tuple[FeatureSpec, list[dict[str, Any]]]) -> None:
    spec, rows = case
    expected = spec.transform(rows).tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".yaml", ".json"):
            path = Path(tmp) / f"spec{suffix}"
            spec.save(path)
            loaded = FeatureSpec.load(path)
            assert loaded.transform(rows).tobytes() == expected, suffix
            assert loaded.output_columns == spec.output_columns


# --- check ----------------------------------------------------------------------------------


@given(spec_and_rows(messy_rows))
def test_check_reports_exactly_the_cells_that_break_the_spec(case: tuple[FeatureSpec, list[dict[str, Any]]]) -> None:
    spec, rows = case
    found = spec.check(rows)
    reported = [(v.row, v.feature, v.reason, v.action) for v in found]
    assert len(reported) == len(set(reported)), "a cell was reported twice"
    assert set(reported) == expected_violations(spec, rows)

    order = {name: i for i, name in enumerate(spec.feature_names)}
    positions = [(v.row, order.get(v.feature, len(order))) for v in found]
    assert positions == sorted(positions), "violations are not ordered by row, then feature"

    for v in found:
        sent = rows[v.row].get(v.feature)
        if isinstance(sent, list | dict):
            assert isinstance(v.value, str) and len(v.value) <= ECHO_LIMIT + 1
        else:
            assert same_value(v.value, expected_echo(sent)), (v, sent)


@given(spec_and_rows(messy_rows))
def test_transform_raises_with_exactly_the_reject_violations(case: tuple[FeatureSpec, list[dict[str, Any]]]) -> None:
    spec, rows = case
    rejects = [v for v in spec.check(rows) if v.action == "reject"]
    assume(rejects)  # rows with no reject may hold flagged values beyond float32: not here
    with pytest.raises(InputRejectedError) as caught:
        spec.transform(rows)
    assert keys(caught.value.violations) == keys(rejects)
    rejected_rows = {v.row for v in rejects}
    assert f"{len(rejected_rows)} of {len(rows)} rows" in str(caught.value)


@given(spec_and_rows(messy_rows))
def test_one_row_check_equals_the_batch_check(case: tuple[FeatureSpec, list[dict[str, Any]]]) -> None:
    spec, rows = case
    batch = spec.check(rows)
    for i, row in enumerate(rows):
        alone = spec.check([row])
        mine = [msgspec.structs.replace(v, row=0) for v in batch if v.row == i]
        assert keys(alone) == keys(mine), i


@given(spec_and_rows(messy_rows))
def test_a_mapping_of_columns_is_checked_like_the_records(case: tuple[FeatureSpec, list[dict[str, Any]]]) -> None:
    spec, rows = case
    names = set(spec.feature_names)
    features_only = [{k: v for k, v in row.items() if k in names} for row in rows]
    # A column no row sent is left out (every cell of it is then missing) unless no row sent
    # anything: a mapping without columns would have no rows at all.
    sent = [name for name in spec.feature_names if any(name in row for row in features_only)] or list(spec.feature_names)
    columns = {name: [row.get(name) for row in features_only] for name in sent}
    assert keys(spec.check(columns)) == keys(spec.check(features_only))


# --- transform ------------------------------------------------------------------------------


@given(spec_and_rows(accepted_rows))
def test_transform_of_accepted_rows_is_finite_float32(case: tuple[FeatureSpec, list[dict[str, Any]]]) -> None:
    spec, rows = case
    assert all(v.action != "reject" for v in spec.check(rows))
    X = spec.transform(rows)
    assert X.dtype == np.float32
    assert X.shape == (len(rows), len(spec.output_columns))
    assert X.flags.c_contiguous
    assert np.isfinite(X).all()


@given(spec_and_rows(accepted_rows))
def test_one_row_transform_equals_the_batch_transform(case: tuple[FeatureSpec, list[dict[str, Any]]]) -> None:
    spec, rows = case
    batch = spec.transform(rows)
    stacked = np.vstack([spec.transform([row]) for row in rows])
    assert stacked.dtype == batch.dtype == np.float32
    assert stacked.tobytes() == batch.tobytes()
    checks = spec.check(rows)
    for i, row in enumerate(rows):
        mine = [msgspec.structs.replace(v, row=0) for v in checks if v.row == i]
        assert keys(spec.check([row])) == keys(mine)


@given(spec_and_rows(valid_rows), st.booleans())
def test_records_columns_and_dataframe_give_the_same_matrix(case: tuple[FeatureSpec, list[dict[str, Any]]], arrays: bool) -> None:
    spec, rows = case
    assert spec.check(rows) == []
    records = spec.transform(rows)
    columns = {name: [row[name] for row in rows] for name in spec.feature_names}
    # numpy string arrays drop trailing NUL characters (np.asarray(["a\\x00"]) holds "a"), so
    # category columns go in as object arrays; numbers and booleans as typed arrays.
    as_mapping = {k: np.asarray(v, dtype=object if isinstance(v[0], str) else None) for k, v in columns.items()} if arrays else columns
    frame = pd.DataFrame(columns)
    assert spec.check(as_mapping) == []
    assert spec.check(frame) == []
    assert spec.transform(as_mapping).tobytes() == records.tobytes()
    assert spec.transform(frame).tobytes() == records.tobytes()


@st.composite
def clip_case(draw: st.DrawFn) -> tuple[FeatureSpec, list[dict[str, Any]]]:
    spec = draw(specs(required=st.booleans().flatmap(lambda i: number_features("clipped", integer=i, policy="clip"))))
    rows = draw(accepted_rows(spec, min_size=1))
    clipped = spec.features[-1]
    out = out_of_domain_value(clipped)
    assert out is not None
    # Make sure some cells of the clip feature are out of its domain.
    for row in rows:
        if draw(st.booleans()):
            row[clipped.name] = draw(out)
    return spec, rows


@given(clip_case())
def test_clip_transforms_like_the_clipped_value(case: tuple[FeatureSpec, list[dict[str, Any]]]) -> None:
    spec, rows = case
    feature = spec.features[-1]
    assert isinstance(feature, NumberFeature | IntegerFeature) and feature.on_violation == "clip"
    name = feature.name
    violations = spec.check(rows)
    for i, row in enumerate(rows):
        value = row.get(name)
        mine = [v for v in violations if v.row == i and v.feature == name]
        if value is not None and clip(feature, value) != value:
            reason = "below_min" if value < feature.min else "above_max"  # type: ignore[operator]
            assert [(v.reason, v.action, v.value) for v in mine] == [(reason, "clip", value)]
        else:
            assert mine == []
    by_hand = [
        {**row, name: clip(feature, row[name])} if row.get(name) is not None else row
        for row in rows
    ]
    assert not any(v.feature == name for v in spec.check(by_hand))
    assert spec.transform(rows).tobytes() == spec.transform(by_hand).tobytes()
    for row, again in zip(rows, by_hand, strict=True):
        assert spec.transform([row]).tobytes() == spec.transform([again]).tobytes()


@st.composite
def flag_features(draw: st.DrawFn) -> Feature:
    kind = draw(st.sampled_from(["number", "integer", "category"]))
    if kind == "category":
        return draw(category_features("flagged", policy="flag"))
    return draw(
        number_features("flagged", integer=kind == "integer", policy="flag").filter(
            lambda f: f.min is not None or f.max is not None
        )
    )


@st.composite
def flag_case(draw: st.DrawFn) -> tuple[FeatureSpec, list[dict[str, Any]], list[int]]:
    spec = draw(specs(required=flag_features()))
    rows = draw(valid_rows(spec, min_size=1))
    flagged = spec.features[-1]
    out = out_of_domain_value(flagged)
    assert out is not None
    bad = sorted(set(draw(st.lists(st.integers(0, len(rows) - 1), min_size=1))))
    for i in bad:
        rows[i][flagged.name] = draw(out)
    return spec, rows, bad


@given(flag_case())
def test_flagged_rows_are_predicted_and_marked(case: tuple[FeatureSpec, list[dict[str, Any]], list[int]]) -> None:
    spec, rows, bad = case
    feature = spec.features[-1]
    violations = spec.check(rows)
    assert [(v.row, v.feature, v.action) for v in violations] == [(i, feature.name, "flag") for i in bad]
    assert all(v.reason in DOMAIN_REASONS for v in violations)
    checked = spec.guards.check(to_columns(rows, spec.feature_names))
    assert checked.rejected is None
    assert checked.flagged is not None and np.flatnonzero(checked.flagged).tolist() == bad
    X = spec.transform(rows)  # must not raise
    assert np.isfinite(X).all()
    start = first_column(spec, len(spec.features) - 1)
    for i in bad:
        if isinstance(feature, CategoryFeature):
            if isinstance(feature.transform, OneHot):
                width = len(feature.categories)
                assert (X[i, start : start + width] == 0).all()  # unseen: all zeros
            else:
                assert X[i, start] == -1.0
        elif isinstance(feature.transform, Passthrough):
            # Predicted as sent (saturated at float32's largest finite value).
            assert X[i, start] == np.float32(min(max(rows[i][feature.name], -F32_MAX), F32_MAX))


@given(specs(required=category_features("c")), st.data())
def test_an_unseen_category_is_always_reported(spec: FeatureSpec, data: Any) -> None:
    rows = data.draw(valid_rows(spec))
    feature = spec.features[-1]
    assert isinstance(feature, CategoryFeature)
    i = data.draw(st.integers(0, len(rows) - 1))
    unseen = data.draw(out_of_domain_value(feature))  # type: ignore[arg-type]
    rows[i][feature.name] = unseen
    expected = Violation(row=i, feature=feature.name, reason="unseen_category", value=expected_echo(unseen), action=feature.on_violation)
    assert spec.check(rows) == [expected]
    assert spec.check([rows[i]]) == [msgspec.structs.replace(expected, row=0)]
    if feature.on_violation == "reject":
        with pytest.raises(InputRejectedError) as caught:
            spec.transform(rows)
        assert caught.value.violations == [expected]
    else:
        X = spec.transform(rows)
        assert X.shape == (len(rows), len(spec.output_columns))


@given(spec_and_rows(valid_rows), st.data())
def test_valid_values_are_never_reported(case: tuple[FeatureSpec, list[dict[str, Any]]], data: Any) -> None:
    spec, rows = case
    assert spec.check(rows) == []
    # A valid value is valid on its own too (the one-row path), whichever feature it is for.
    feature = data.draw(st.sampled_from(spec.features))
    row = {**rows[0], feature.name: data.draw(valid_value(feature))}
    assert spec.check([row]) == []
    assert spec.check([row, *rows]) == []
