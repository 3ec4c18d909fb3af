"""``gateway.table``: records, mappings of columns and DataFrames to ``Columns``."""

from __future__ import annotations

import math
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gateway import FeatureSpec
from gateway.errors import PayloadError
from gateway.spec import BooleanFeature, CategoryFeature, IntegerFeature, NumberFeature
from gateway.table import Columns, dataframe_to_columns, mapping_to_columns, records_to_columns, to_columns

NAMES = ("x", "c")
SPEC = FeatureSpec(
    name="t",
    features=(NumberFeature(name="x"), CategoryFeature(name="c", categories=("a", "b")), IntegerFeature(name="n"), BooleanFeature(name="b")),
)


def reasons(found: list[Any]) -> list[tuple[int, str, str]]:
    return [(v.row, v.feature, v.reason) for v in found]


# --- records ------------------------------------------------------------------------------


def test_records_fast_path() -> None:
    cols = records_to_columns([{"x": 1.0, "c": "a"}, {"c": "b", "x": 2.0}], NAMES)
    assert cols.n_rows == 2
    assert cols.data == {"x": [1.0, 2.0], "c": ["a", "b"]}
    assert cols.unknown == [] and cols.missing == {}


def test_records_with_absent_and_extra_fields() -> None:
    cols = records_to_columns([{"x": 1.0, "c": "a"}, {"x": 2.0, "zz": 5}, {"c": None, "q": [1]}], NAMES)
    assert cols.data == {"x": [1.0, 2.0, None], "c": ["a", None, None]}
    assert cols.unknown == [(1, "zz", 5), (2, "q", [1])]


def test_records_single_row() -> None:
    cols = records_to_columns([{"x": 1.0, "extra": 2}], NAMES)
    assert cols.n_rows == 1
    assert cols.data == {"x": [1.0], "c": [None]}
    assert cols.unknown == [(0, "extra", 2)]
    assert records_to_columns([{"x": 1.0, "c": "a"}], NAMES).unknown == []


def test_records_ignore_fields() -> None:
    cols = records_to_columns([{"x": 1.0, "c": "a", "y": 3}, {"x": 1.0, "c": "a", "y": 4, "z": 0}], NAMES, frozenset({"y"}))
    assert cols.unknown == [(1, "z", 0)]
    cols = records_to_columns([{"x": 1.0, "c": "a", "y": 3}], NAMES, frozenset({"y"}))
    assert cols.unknown == []


def test_records_that_are_other_mappings() -> None:
    rows = [OrderedDict(x=1.0, c="a"), MappingProxyType({"x": 2.0, "c": "b"})]
    assert records_to_columns(rows, NAMES).data == {"x": [1.0, 2.0], "c": ["a", "b"]}
    assert records_to_columns([MappingProxyType({"x": 2.0, "c": "b"})], NAMES).data == {"x": [2.0], "c": ["b"]}


@pytest.mark.parametrize("rows", [[[1.0, "a"]], [{"x": 1.0, "c": "a"}, [1.0, "a"]], [{"x": 1.0, "c": "a"}, "xc"], [None]])
def test_a_record_that_is_not_an_object_is_a_payload_error(rows: list[Any]) -> None:
    with pytest.raises(PayloadError, match=r"row \d is not an object of feature values") as caught:
        records_to_columns(rows, NAMES)
    assert caught.value.extra["row"] == len(rows) - 1
    with pytest.raises(PayloadError):
        SPEC.check(rows)


def test_no_records() -> None:
    cols = records_to_columns([], NAMES)
    assert cols.n_rows == 0 and cols.unknown == []


# --- mappings of columns ------------------------------------------------------------------


def test_mapping_of_lists_tuples_and_arrays() -> None:
    cols = mapping_to_columns({"x": (1.0, 2.0), "c": np.array(["a", "b"], dtype=object), "zz": np.array([7, 8])}, NAMES)
    assert cols.n_rows == 2
    assert cols.data["x"] == [1.0, 2.0]
    assert cols.data["c"] == ["a", "b"]  # object arrays become lists
    assert cols.unknown == [(0, "zz", 7), (1, "zz", 8)]
    assert all(type(v) is int for _, _, v in cols.unknown)  # numpy scalars unwrapped
    typed = mapping_to_columns({"x": np.array([1.0, 2.0])}, NAMES)
    assert isinstance(typed.data["x"], np.ndarray)
    assert "c" not in typed.data  # absent, so every cell of it is missing


def test_mapping_ignore() -> None:
    assert mapping_to_columns({"x": [1.0], "y": [2.0]}, NAMES, frozenset({"y"})).unknown == []


@pytest.mark.parametrize(
    ("cols", "message"),
    [
        ({"x": [1.0, 2.0], "c": ["a"]}, r"columns have different lengths \(x=2, c=1\)"),
        ({"x": np.zeros((2, 2))}, r"column 'x' must be one-dimensional, got shape \(2, 2\)"),
        ({"x": "12"}, "column 'x' must be a list or a 1-D array"),
        ({"x": 5}, "column 'x' must be a list or a 1-D array"),
        ({"x": {1, 2}}, "column 'x' must be a list or a 1-D array"),
    ],
)
def test_malformed_columns_are_payload_errors(cols: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        mapping_to_columns(cols, NAMES)


# --- DataFrames ---------------------------------------------------------------------------


def test_dataframe_nulls_are_missing() -> None:
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0], "c": ["a", None, "b"], "n": pd.array([1, None, 3], dtype="Int64"), "b": [True, None, False]})
    cols = dataframe_to_columns(frame, SPEC.feature_names)
    assert set(cols.missing) == {"x", "c", "n", "b"}
    for mask in cols.missing.values():
        assert mask.tolist() == [False, True, False]
    assert reasons(SPEC.check(frame)) == [(1, "x", "missing"), (1, "c", "missing"), (1, "n", "missing"), (1, "b", "missing")]


def test_nan_is_missing_in_a_dataframe_but_not_finite_in_records() -> None:
    spec = FeatureSpec(name="t", features=(NumberFeature(name="x"),))
    assert reasons(spec.check(pd.DataFrame({"x": [1.0, math.nan]}))) == [(1, "x", "missing")]
    assert reasons(spec.check(pd.DataFrame({"x": [math.nan]}))) == [(0, "x", "missing")]
    assert reasons(spec.check([{"x": 1.0}, {"x": math.nan}])) == [(1, "x", "not_finite")]
    assert reasons(spec.check([{"x": math.nan}])) == [(0, "x", "not_finite")]
    assert reasons(spec.check({"x": [1.0, math.nan]})) == [(1, "x", "not_finite")]
    assert reasons(spec.check({"x": np.array([1.0, math.nan])})) == [(1, "x", "not_finite")]
    # An infinity is a value in a DataFrame too: not missing.
    assert reasons(spec.check(pd.DataFrame({"x": [1.0, math.inf]}))) == [(1, "x", "not_finite")]


def test_dataframe_imputation_uses_the_fill() -> None:
    spec = FeatureSpec(name="t", features=(NumberFeature(name="x", missing="impute", fill=2.5),))
    assert spec.transform(pd.DataFrame({"x": [1.0, math.nan]})).tolist() == [[1.0], [2.5]]
    assert spec.transform(pd.DataFrame({"x": [math.nan]})).tolist() == [[2.5]]


def test_dataframe_unknown_columns_and_ignore() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"], "extra": [10, 20]})
    cols = dataframe_to_columns(frame, NAMES)
    assert cols.unknown == [(0, "extra", 10), (1, "extra", 20)]
    assert all(type(v) is int for _, _, v in cols.unknown)
    assert dataframe_to_columns(frame, NAMES, frozenset({"extra"})).unknown == []


def test_dataframe_columns_keep_numpy_dtypes() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"]})
    cols = dataframe_to_columns(frame, NAMES)
    assert isinstance(cols.data["x"], np.ndarray) and cols.data["x"].dtype == np.float64
    assert list(cols.data["c"]) == ["a", "b"]


def test_dataframe_column_order_does_not_matter() -> None:
    rows = [{"x": 1.5, "c": "b", "n": 3, "b": True}, {"x": -2.0, "c": "a", "n": 0, "b": False}]
    frame = pd.DataFrame(rows)[["b", "n", "c", "x"]]
    assert SPEC.transform(frame).tobytes() == SPEC.transform(rows).tobytes()


# --- dispatch -----------------------------------------------------------------------------


def test_to_columns_dispatches_on_the_input() -> None:
    rows = [{"x": 1.0, "c": "a"}]
    assert to_columns(rows, NAMES).data == {"x": [1.0], "c": ["a"]}
    assert to_columns(tuple(rows), NAMES).data == {"x": [1.0], "c": ["a"]}
    assert to_columns({"x": [1.0], "c": ["a"]}, NAMES).data == {"x": [1.0], "c": ["a"]}
    frame_cols = to_columns(pd.DataFrame(rows), NAMES)
    assert frame_cols.n_rows == 1 and list(frame_cols.data["c"]) == ["a"]
    already = Columns(1, {"x": [1.0]})
    assert to_columns(already, NAMES) is already
    assert to_columns(rows, NAMES, ignore=["y"]).unknown == []


@pytest.mark.parametrize("data", [42, "x,c\n1,a", b"[]", None, 1.5])
def test_to_columns_refuses_other_inputs(data: Any) -> None:
    with pytest.raises(PayloadError, match="expected records, a mapping of columns or a DataFrame"):
        to_columns(data, NAMES)


def test_all_shapes_agree() -> None:
    rows = [{"x": 1.5, "c": "b", "n": 3, "b": True}, {"x": -2.0, "c": "a", "n": 0, "b": False}, {"x": 7, "c": "a", "n": -4, "b": True}]
    expected = SPEC.transform(rows)
    columns = {name: [r[name] for r in rows] for name in SPEC.feature_names}
    arrays = {"x": np.array([1.5, -2.0, 7.0]), "c": np.array(["b", "a", "a"]), "n": np.array([3, 0, -4]), "b": np.array([True, False, True])}
    for data in (columns, arrays, pd.DataFrame(rows), pd.DataFrame(columns)):
        assert SPEC.check(data) == []
        assert SPEC.transform(data).tobytes() == expected.tobytes()
