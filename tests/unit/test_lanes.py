"""Batch lanes (``gateway.lanes``): typed records take the matrix, one-row or table lane,
anything else the general one; whichever lane a batch takes, the guards and the transform
must answer exactly what the general lane answers, violations (and their echoed values)
included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from gateway.codecs.v1 import table_columns
from gateway.lanes import records_lane
from gateway.samples import sample_records
from gateway.spec import FeatureSpec, load_spec
from gateway.table import records_to_columns

SPECS = Path(__file__).resolve().parents[2] / "feature_specs"


@pytest.fixture(scope="module", params=["penguins", "diabetes"])
def spec(request: pytest.FixtureRequest) -> FeatureSpec:
    return load_spec(SPECS / f"{request.param}.yaml")


def _general(spec: FeatureSpec, records: list[dict[str, Any]]) -> Any:
    return spec.guards.check(records_to_columns(records, spec.guards.names, spec.guards.ignored))


@pytest.mark.parametrize("n", [1, 2, 64])
def test_typed_records_take_a_typed_lane_and_transform_alike(spec: FeatureSpec, n: int) -> None:
    records = sample_records(spec, n, seed=n)
    columns = records_lane(records, spec.guards)
    if spec.guards.numeric:
        assert columns.matrix is not None and (columns.row is not None) == (n == 1)
    elif n > 1:
        assert columns.general is not None  # the table lane
    general = _general(spec, records)
    expected = spec.transformer.apply(general.columns, n)
    np.testing.assert_array_equal(spec.transform(records), expected)
    assert spec.check(records) == general.violations == []


def _broken(spec: FeatureSpec, change: str) -> list[dict[str, Any]]:
    records = sample_records(spec, 5, seed=7)
    name = next(name for name, kind in zip(spec.guards.names, spec.guards.kinds, strict=True) if kind == "number")
    if change == "int-out-of-range":
        records[2] = {**records[2], name: 10**6}  # a JSON integer: echoed as the integer it was
    elif change == "null":
        records[2] = {**records[2], name: None}
    elif change == "string":
        records[2] = {**records[2], name: "1.5"}
    else:
        records[2] = {**records[2], "extra": 1}
    return records


@pytest.mark.parametrize("change", ["int-out-of-range", "null", "string", "unknown-field"])
def test_a_violation_is_named_as_the_general_lane_names_it(spec: FeatureSpec, change: str) -> None:
    records = _broken(spec, change)
    general = _general(spec, records)
    assert general.violations or change == "null"  # a null is imputed where the spec says so
    encode = msgspec.json.encode  # as answered: 1000000 and 1000000.0 are equal, not the same answer
    assert encode(spec.check(records)) == encode(general.violations)
    if not spec.guards.numeric:  # the V1 table lane over HTTP
        columns = table_columns(msgspec.json.encode({"instances": records}), spec.guards, 100)
        if change == "int-out-of-range":
            assert columns is not None
        if columns is not None:
            assert encode(spec.guards.check(columns).violations) == encode(general.violations)
