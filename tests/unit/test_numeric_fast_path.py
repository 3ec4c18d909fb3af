"""All-numeric specs take a matrix fast path (V1 rows decoded in C, a V2 [N, F] tensor);
it must answer exactly what the general path answers, and never hide a violation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import numpy as np
import pytest

from gateway.codecs.v1 import numeric_columns
from gateway.config import load_settings
from gateway.errors import InputRejectedError, PayloadError
from gateway.lifecycle import Gateway
from gateway.samples import sample_records
from gateway.table import records_to_columns
from tests.dispatching import answer_v1, answer_v2

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def gateway() -> Gateway:
    g = Gateway(load_settings({}, repository=str(MODELS), monitoring=False))
    g.scan()
    return g


def _predictions(body: bytes) -> list[float]:
    return [p["value"] for p in msgspec.json.decode(body)["predictions"]]


def test_numeric_rows_become_one_matrix_and_the_guards_pass_it(gateway: Gateway) -> None:
    model = gateway.model_registry.get("diabetes")
    assert model.guards.numeric
    rows = sample_records(model.spec, 16, seed=4)
    columns = numeric_columns(msgspec.json.encode({"instances": rows}), model.guards.names, 100)
    assert columns is not None and columns.matrix is not None and columns.matrix.shape == (16, 10)
    checked = model.guards.check(columns)
    general = model.guards.check(records_to_columns(rows, model.guards.names))
    assert checked.rejected is None and checked.matrix is not None
    np.testing.assert_array_equal(
        model.transform.apply(checked.columns, 16, checked.matrix), model.transform.apply(general.columns, 16)
    )


@pytest.mark.parametrize(
    "change",
    [{"age": True}, {"age": "0.01"}, {"age": None}, {"bmi": 1e9}, {"extra": 1.0}],
    ids=["bool", "string", "null", "out-of-range", "unknown-field"],
)
def test_any_bad_cell_is_named_exactly_as_on_the_general_path(gateway: Gateway, change: dict) -> None:  # type: ignore[type-arg]
    model = gateway.model_registry.get("diabetes")
    rows = sample_records(model.spec, 5, seed=5)
    rows[3] = {**rows[3], **change}
    with pytest.raises(InputRejectedError) as fast:
        asyncio.run(answer_v1(gateway, model, msgspec.json.encode({"instances": rows})))
    general = model.guards.check(records_to_columns(rows, model.guards.names))
    assert [(v.row, v.feature, v.reason) for v in fast.value.violations] == [
        (v.row, v.feature, v.reason) for v in general.violations if v.action == "reject"
    ]
    assert {v.row for v in fast.value.violations} == {3}


def test_v2_matrix_tensor_answers_what_v1_answers(gateway: Gateway) -> None:
    model = gateway.model_registry.get("diabetes")
    rows = sample_records(model.spec, 32, seed=6)
    names = model.guards.names
    v1 = _predictions(asyncio.run(answer_v1(gateway, model, msgspec.json.encode({"instances": rows}))))
    flat = [row[n] for row in rows for n in names]
    body = msgspec.json.encode({"inputs": [{"name": "input", "shape": [32, len(names)], "datatype": "FP64", "data": flat}]})
    content, _ = asyncio.run(answer_v2(gateway, model, body, None))
    out = {o["name"]: o for o in msgspec.json.decode(content)["outputs"]}
    assert out["prediction"]["data"] == v1


def test_v2_matrix_with_a_bad_cell_is_rejected_with_its_row_and_feature(gateway: Gateway) -> None:
    model = gateway.model_registry.get("diabetes")
    names = model.guards.names
    rows = sample_records(model.spec, 4, seed=7)
    flat = [row[n] for row in rows for n in names]
    flat[2 * len(names) + 1] = None  # row 2, second feature: missing
    body = msgspec.json.encode({"inputs": [{"name": "input", "shape": [4, len(names)], "datatype": "FP64", "data": flat}]})
    with pytest.raises(InputRejectedError) as rejected:
        asyncio.run(answer_v2(gateway, model, body, None))
    assert [(v.row, v.feature, v.reason) for v in rejected.value.violations] == [(2, names[1], "missing")]


def test_v2_matrix_of_the_wrong_width_is_not_taken_for_one(gateway: Gateway) -> None:
    model = gateway.model_registry.get("diabetes")
    body = msgspec.json.encode({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    with pytest.raises(PayloadError, match="shape"):
        asyncio.run(answer_v2(gateway, model, body, None))
