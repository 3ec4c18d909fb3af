"""The matrix path of all-numeric specs (rows decoded straight into one float64 matrix, the
guards passing it whole, the transform one broadcast, with no overflow handling when every
feature's range maps well inside float32) gives the very bits of the general path; and so
does its one-row lane (the row's cells as Python floats, checked and scaled in Python)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

from gateway.guards import compile_guards
from gateway.spec import FeatureSpec
from gateway.table import matrix_to_columns, records_to_columns
from gateway.transform import compile_transform
from tests.property.strategies import names, number_features, valid_rows


@st.composite
def numeric_specs_and_rows(draw: st.DrawFn) -> tuple[FeatureSpec, list[dict[str, Any]]]:
    feature_names = draw(st.lists(names, min_size=2, max_size=6, unique=True))
    # bounded features (both min and max) half the time, so both transform branches run
    bounded = draw(st.booleans())
    chosen = [draw(number_features(n, policy="clip" if bounded else None)) for n in feature_names]
    spec = FeatureSpec(name="m", features=tuple(chosen))
    return spec, draw(valid_rows(spec, min_size=1, max_size=6))


@given(numeric_specs_and_rows())
def test_the_matrix_path_gives_the_bits_of_the_general_path(case: tuple[FeatureSpec, list[dict[str, Any]]]) -> None:
    spec, rows = case
    guards, transform = compile_guards(spec), compile_transform(spec)
    names_ = spec.feature_names
    matrix = np.array([[float(row[name]) for name in names_] for row in rows], dtype=np.float64)
    fast = guards.check(matrix_to_columns(matrix, names_))
    general = guards.check(records_to_columns(rows, names_))
    assert fast.rejected is None and general.rejected is None
    assert fast.matrix is not None, "a clean all-numeric batch passes the guards whole"
    event(f"no overflow handling: {transform._bounded}")
    got = transform.apply(fast.columns, len(rows), fast.matrix)
    want = transform.apply(general.columns, len(rows))
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    for i, row in enumerate(rows):  # and the one-row paths, row by row
        one = transform.apply(guards.check(records_to_columns([row], names_)).columns, 1)
        np.testing.assert_array_equal(one.view(np.uint32), got[i : i + 1].view(np.uint32))
        cells = tuple(matrix[i].tolist())
        lane = guards.check(matrix_to_columns(matrix[i : i + 1], names_, cells))
        assert lane.rejected is None and lane.row == cells
        scaled = transform.apply(lane.columns, 1, lane.matrix, lane.row)
        assert scaled.dtype == np.float32 and scaled.shape == (1, transform.width) and scaled.flags.c_contiguous
        np.testing.assert_array_equal(scaled.view(np.uint32), got[i : i + 1].view(np.uint32))


special = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.5, 1e308, -1e308])


@given(
    numeric_specs_and_rows(),
    st.lists(st.tuples(st.integers(0, 5), st.floats(allow_nan=True, allow_infinity=True) | special), max_size=3),
)
def test_the_one_row_lane_names_exactly_what_the_matrix_path_names(
    case: tuple[FeatureSpec, list[dict[str, Any]]], changes: list[tuple[int, float]]
) -> None:
    """Any cells (out of range, not whole, NaN, infinite): the lane passes a row exactly when
    the whole-matrix check does, and a row it does not pass gets the same violations."""
    spec, rows = case
    guards = compile_guards(spec)
    names_ = spec.feature_names
    cells = [float(rows[0][name]) for name in names_]
    for column, value in changes:
        cells[column % len(cells)] = value
    matrix = np.array([cells], dtype=np.float64)
    lane = guards.check(matrix_to_columns(matrix, names_, tuple(cells)))
    whole = guards.check(matrix_to_columns(matrix, names_))
    event(f"clean: {whole.matrix is not None}")
    assert (lane.matrix is None) == (whole.matrix is None)
    assert repr(lane.violations) == repr(whole.violations)  # repr: NaN values are equal there
    for mask in ("rejected", "flagged", "clipped"):
        np.testing.assert_array_equal(getattr(lane, mask), getattr(whole, mask))
