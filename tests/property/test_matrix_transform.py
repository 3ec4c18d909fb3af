"""The matrix path of all-numeric specs (rows decoded straight into one float64 matrix, the
guards passing it whole, the transform one broadcast, with no overflow handling when every
feature's range maps well inside float32) gives the very bits of the general path."""

from __future__ import annotations

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
    for i, row in enumerate(rows):  # and the one-row path, row by row
        one = transform.apply(guards.check(records_to_columns([row], names_)).columns, 1)
        np.testing.assert_array_equal(one.view(np.uint32), got[i : i + 1].view(np.uint32))
