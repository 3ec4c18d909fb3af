"""V1 prediction through the real server, checked against the model run in-process.

The reference is the training side's own path: ``spec.transform`` on the same records and
onnxruntime on the bundled ``model.onnx``, with no server code in between. Rows are the
real data sets the examples were trained on (penguins with their missing measurements and
sexes, which the spec imputes), sent as one batch and as single rows (the server has a
separate fast path for one row).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from gateway.spec import load_spec
from tests.helpers.metrics import sample, scrape, series
from tests.integration.conftest import ServerProcess
from tests.integration.support import (
    DIABETES_MODEL,
    DIABETES_SPEC,
    PENGUINS_MODEL,
    PENGUINS_SPEC,
    REASONS,
    assert_problem,
    penguin,
    predict,
)

PROB_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _records(frame: Any) -> list[dict[str, Any]]:
    """DataFrame rows as JSON records; pandas' NaN (a missing cell) becomes an absent value."""
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


@pytest.fixture(scope="module")
def penguin_rows() -> list[dict[str, Any]]:
    from palmerpenguins import load_penguins

    rows = _records(load_penguins().drop(columns="species"))
    assert any(r["sex"] is None for r in rows) and any(
        r["bill_length_mm"] is None for r in rows
    )  # imputation is exercised
    return rows


@pytest.fixture(scope="module")
def diabetes_rows() -> list[dict[str, Any]]:
    from sklearn.datasets import load_diabetes

    return _records(load_diabetes(as_frame=True).frame.drop(columns="target"))


def _session(path: Any) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _all_predictions(client: httpx.Client, model: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as one batch, then the first five again one by one."""
    answers = [predict(client, model, rows)] + [predict(client, model, [row]) for row in rows[:5]]
    predictions: list[dict[str, Any]] = []
    for response in answers:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["model_name"] == model
        assert body["model_version"] == "1"
        predictions.extend(body["predictions"])
    assert len(predictions) == len(rows) + 5
    return predictions


def test_penguins_predictions_match_the_model_run_in_process(
    client: httpx.Client, penguin_rows: list[dict[str, Any]]
) -> None:
    spec = load_spec(PENGUINS_SPEC)
    labels = list(spec.output.labels)
    session = _session(PENGUINS_MODEL)
    outputs = {o.name: o for o in session.get_outputs()}
    prob_name = next(n for n, o in outputs.items() if o.type == "tensor(float)")
    label_name = next(n for n, o in outputs.items() if o.type == "tensor(string)")
    matrix = spec.transform(penguin_rows)
    said, probabilities = session.run([label_name, prob_name], {session.get_inputs()[0].name: matrix})
    expected_rows = list(range(len(penguin_rows))) + list(range(5))

    predictions = _all_predictions(client, "penguins", penguin_rows)

    threshold = spec.output.review_threshold
    for i, p in zip(expected_rows, predictions, strict=True):
        assert list(p["probabilities"]) == labels, "probabilities are keyed by label, in the spec's order"
        got = np.array([p["probabilities"][label] for label in labels])
        np.testing.assert_allclose(got, probabilities[i], rtol=0, atol=PROB_TOLERANCE, err_msg=f"row {i}")
        assert p["label"] == labels[int(np.argmax(probabilities[i]))] == str(said[i]), f"row {i}"
        assert p["confidence"] == max(p["probabilities"].values()), f"row {i}: confidence is the top probability"
        assert p["confidence"] == pytest.approx(float(probabilities[i].max()), abs=PROB_TOLERANCE)
        assert p.get("review", False) == (p["confidence"] < threshold), f"row {i}: review mark"
        assert isinstance(p["id"], str) and p["id"]
    ids = [p["id"] for p in predictions]
    assert len(set(ids)) == len(ids), "every prediction has its own id"


def test_diabetes_predictions_match_the_model_run_in_process(
    client: httpx.Client, diabetes_rows: list[dict[str, Any]]
) -> None:
    spec = load_spec(DIABETES_SPEC)
    session = _session(DIABETES_MODEL)
    (values,) = session.run(None, {session.get_inputs()[0].name: spec.transform(diabetes_rows)})
    values = values.reshape(-1)
    expected_rows = list(range(len(diabetes_rows))) + list(range(5))

    predictions = _all_predictions(client, "diabetes", diabetes_rows)

    for i, p in zip(expected_rows, predictions, strict=True):
        assert isinstance(p["value"], float), p
        assert p["value"] == pytest.approx(float(values[i]), rel=1e-6, abs=1e-6), f"row {i}"
        assert "label" not in p and "probabilities" not in p
    ids = [p["id"] for p in predictions]
    assert len(set(ids)) == len(ids)


def test_ids_are_unique_across_requests(client: httpx.Client) -> None:
    ids = [p["id"] for _ in range(3) for p in predict(client, "penguins", [penguin(), penguin()]).json()["predictions"]]
    assert len(set(ids)) == 6


# --- a batch with bad rows --------------------------------------------------------------

BAD_ROWS = {
    3: penguin(island="Atlantis", body_mass_g=99999.0),  # unseen category; above max
    7: penguin(flipper_length_mm="210", year=...),  # a string for a number; a non-imputed feature left out
}
EXPECTED_VIOLATIONS = {
    (3, "island", "unseen_category", "Atlantis"),
    (3, "body_mass_g", "above_max", 99999.0),
    (7, "flipper_length_mm", "wrong_type", "210"),
    (7, "year", "missing", None),
}


def test_mixed_batch_is_rejected_naming_exactly_the_bad_cells(client: httpx.Client) -> None:
    rows = [BAD_ROWS.get(i, penguin(bill_length_mm=40.0 + i)) for i in range(10)]
    before = scrape(client)

    response = predict(client, "penguins", rows)

    body = assert_problem(response, 422)
    violations = body["violations"]
    assert all(v["reason"] in REASONS for v in violations)
    assert {v["row"] for v in violations} == {3, 7}
    assert {(v["row"], v["feature"], v["reason"], v.get("value")) for v in violations} == EXPECTED_VIOLATIONS
    assert len(violations) == len(EXPECTED_VIOLATIONS)
    assert "predictions" not in body

    after = scrape(client)
    key = {"model": "penguins", "version": "1"}
    # The batch is refused whole (no row was predicted), so each of its rows counts as
    # rejected: predicted + rejected always adds up to the rows received.
    assert (
        sample(after, "driftgate_rows_total", **key, outcome="rejected")
        - sample(before, "driftgate_rows_total", **key, outcome="rejected")
        == 10
    )
    assert sample(after, "driftgate_rows_total", **key, outcome="predicted") == sample(
        before, "driftgate_rows_total", **key, outcome="predicted"
    )
    for _, feature, reason, _ in EXPECTED_VIOLATIONS:
        labels = {**key, "feature": feature, "reason": reason}
        delta = sample(after, "driftgate_violations_total", **labels) - sample(
            before, "driftgate_violations_total", **labels
        )
        assert delta == 1, (feature, reason)
    total = sum(series(after, "driftgate_violations_total", **key).values()) - sum(
        series(before, "driftgate_violations_total", **key).values()
    )
    assert total == len(EXPECTED_VIOLATIONS)


@pytest.mark.parametrize(
    ("change", "feature", "reason"),
    [
        ({"bill_depth_mm": 5.0}, "bill_depth_mm", "below_min"),
        ({"year": 2008.5}, "year", "wrong_type"),
        ({"year": True}, "year", "wrong_type"),
        ({"sex": 1}, "sex", "wrong_type"),
        ({"colour": "blue"}, "colour", "unknown_feature"),
        ({"island": None}, "island", "missing"),
    ],
)
def test_each_reason_names_its_row_and_feature(
    client: httpx.Client, change: dict[str, Any], feature: str, reason: str
) -> None:
    rows = [penguin(), penguin(**change)]
    body = assert_problem(predict(client, "penguins", rows), 422)
    assert [(v["row"], v["feature"], v["reason"]) for v in body["violations"]] == [(1, feature, reason)]


def test_imputed_features_may_be_left_out(client: httpx.Client) -> None:
    response = predict(client, "penguins", [penguin(sex=..., bill_length_mm=None)])
    assert response.status_code == 200, response.text


def test_overflowing_number_is_not_finite_for_that_cell(client: httpx.Client) -> None:
    """JSON has no infinity, but ``1e400`` overflows a double. It is refused by the guards
    as ``not_finite`` for exactly that cell (never a 500, never the whole body as malformed)."""
    good = json.dumps(penguin(body_mass_g=5100.5))
    bad = good.replace("5100.5", "1e400")
    assert "1e400" in bad
    body_text = '{"instances":[' + f"{good},{good},{good},{bad}" + "]}"
    response = client.post(
        "/v1/models/penguins:predict", content=body_text, headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422)
    assert [(v["row"], v["feature"], v["reason"]) for v in problem["violations"]] == [(3, "body_mass_g", "not_finite")]


def test_every_violation_has_the_contract_members(client: httpx.Client) -> None:
    """``{row, feature, reason, value}`` each time: a missing value is ``"value": null``, not absent."""
    rows = [BAD_ROWS.get(i, penguin()) for i in range(10)]
    body = assert_problem(predict(client, "penguins", rows), 422)
    missing = [v for v in body["violations"] if v["reason"] == "missing"]
    assert missing, "the batch has a missing value"
    for v in body["violations"]:
        assert {"row", "feature", "reason", "value"} <= set(v), v
