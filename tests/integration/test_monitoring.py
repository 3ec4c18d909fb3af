"""Monitoring through the real server: feedback and online metrics, input drift,
``GET /v1/models/{name}/monitor`` as JSON and HTML, and its agreement with ``/metrics``.

Traffic is the real data the examples were trained on (Palmer penguins, sklearn's
diabetes), sent as JSON records with missing measurements as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.spec import load_spec
from tests.helpers.metrics import sample, scrape
from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import PENGUINS_SPEC, penguin, predict

BATCH = 100
PENGUIN_FEATURES = ("island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year")
PENGUINS_V1 = {"model": "penguins", "version": "1"}
DIABETES_V1 = {"model": "diabetes", "version": "1"}


def _records(frame: Any) -> list[dict[str, Any]]:
    """DataFrame rows as JSON records; NaN (a missing cell) becomes null."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]


@pytest.fixture(scope="module")
def penguin_rows() -> list[dict[str, Any]]:
    from palmerpenguins import load_penguins

    rows = _records(load_penguins().drop(columns="species"))
    assert len(rows) == 344
    return rows


@pytest.fixture(scope="module")
def diabetes() -> tuple[list[dict[str, Any]], list[float]]:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    return _records(frame.drop(columns="progression")), [float(v) for v in frame["progression"]]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def predict_all(client: httpx.Client, model: str, rows: list[dict[str, Any]], batch: int = BATCH) -> list[dict[str, Any]]:
    predictions: list[dict[str, Any]] = []
    for i in range(0, len(rows), batch):
        response = predict(client, model, rows[i : i + batch])
        assert response.status_code == 200, response.text[:1000]
        predictions.extend(response.json()["predictions"])
    assert len(predictions) == len(rows)
    return predictions


def monitor(client: httpx.Client, model: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/v1/models/{model}/monitor", params=params)
    assert response.status_code == 200, response.text[:1000]
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def send_feedback(client: httpx.Client, model: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post(f"/v1/models/{model}/feedback", json={"feedback": items})
    assert response.status_code == 200, response.text[:1000]
    body: dict[str, Any] = response.json()
    return body


def features_by_name(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in snap["features"]}


# --- feedback ---------------------------------------------------------------------------------


def test_online_accuracy_follows_the_share_of_wrong_labels(client: httpx.Client, penguin_rows: list[dict[str, Any]]) -> None:
    labels = list(load_spec(PENGUINS_SPEC).output.labels)  # type: ignore[union-attr]
    predictions = predict_all(client, "penguins", penguin_rows)
    (extra,) = predict(client, "penguins", [penguin()]).json()["predictions"]
    n = len(predictions)
    wrong = set(np.random.default_rng(11).choice(n, size=n // 4, replace=False).tolist())
    assert len(wrong) == 86 == n * 0.25

    def truth(i: int, said: str) -> str:
        return labels[(labels.index(said) + 1) % len(labels)] if i in wrong else said

    items = [{"id": p["id"], "label": truth(i, p["label"])} for i, p in enumerate(predictions)]
    prefix = predictions[0]["id"].rsplit("-", 1)[0]
    strays = [
        {"id": "0badc0de-1", "label": "Adelie"},  # another process's id
        {"id": "not an id at all", "label": "Gentoo"},
        {"id": f"{prefix}-{0xFFFFFFFF:x}", "label": "Gentoo"},  # never issued
    ]
    invalid = {"id": extra["id"], "label": "Emperor"}  # a real prediction, a label the model does not know

    first = send_feedback(client, "penguins", items[:200] + strays)
    assert first["received"] == 203
    assert (first["matched"], first["unknown_id"], first["expired"], first["invalid"]) == (200, 3, 0, 0)
    second = send_feedback(client, "penguins", [*items[200:], invalid])
    assert second["received"] == n - 200 + 1
    assert (second["matched"], second["unknown_id"], second["expired"], second["invalid"]) == (n - 200, 0, 0, 1)
    (problem,) = second["problems"]
    assert problem["index"] == n - 200 and problem["id"] == extra["id"] and "Emperor" in problem["reason"]

    feedback = monitor(client, "penguins")["feedback"]
    assert feedback["accuracy"] == pytest.approx(0.75, abs=0.01)
    assert feedback["accuracy"] == pytest.approx((n - len(wrong)) / n, abs=1e-12)
    assert feedback["window_rows"] == n
    assert (feedback["matched"], feedback["unknown_id"], feedback["expired"], feedback["invalid"]) == (n, 3, 0, 1)

    metrics = scrape(client)
    assert sample(metrics, "driftgate_online_metric", **PENGUINS_V1, metric="accuracy") == pytest.approx(feedback["accuracy"], abs=1e-12)
    assert sample(metrics, "driftgate_feedback_window_rows", **PENGUINS_V1) == n
    for outcome, count in (("matched", n), ("unknown_id", 3), ("expired", 0), ("invalid", 1)):
        assert sample(metrics, "driftgate_feedback_total", **PENGUINS_V1, outcome=outcome) == count, outcome


def test_feedback_with_only_bad_items_is_still_answered(client: httpx.Client) -> None:
    result = send_feedback(client, "penguins", [{"id": "nope", "label": "Adelie"}, {"id": "", "label": None}])
    assert (result["received"], result["matched"], result["unknown_id"]) == (2, 0, 2)
    assert result["problems"] == []


def test_online_mae_and_rmse_of_a_regressor(client: httpx.Client, diabetes: tuple[list[dict[str, Any]], list[float]]) -> None:
    rows, truths = diabetes
    predictions = predict_all(client, "diabetes", rows)
    spare = predict(client, "diabetes", rows[:1]).json()["predictions"][0]
    values = np.array([p["value"] for p in predictions], dtype=np.float64)
    errors = values - np.array(truths)
    mae, rmse = float(np.abs(errors).mean()), float(np.sqrt((errors**2).mean()))

    items = [{"id": p["id"], "value": t} for p, t in zip(predictions, truths, strict=True)]
    result = send_feedback(client, "diabetes", [*items, {"id": spare["id"]}, {"id": "unknown-1", "value": 1.0}])
    assert (result["matched"], result["invalid"], result["unknown_id"]) == (len(rows), 1, 1)
    assert result["problems"][0]["index"] == len(rows)

    feedback = monitor(client, "diabetes")["feedback"]
    assert "accuracy" not in feedback
    assert feedback["window_rows"] == len(rows)
    assert feedback["mae"] == pytest.approx(mae, abs=1e-6)
    assert feedback["rmse"] == pytest.approx(rmse, abs=1e-6)
    metrics = scrape(client)
    assert sample(metrics, "driftgate_online_metric", **DIABETES_V1, metric="mae") == pytest.approx(mae, abs=1e-6)
    assert sample(metrics, "driftgate_online_metric", **DIABETES_V1, metric="rmse") == pytest.approx(rmse, abs=1e-6)
    assert ("driftgate_online_metric", frozenset({**DIABETES_V1, "metric": "accuracy"}.items())) not in metrics


# --- drift ------------------------------------------------------------------------------------


def test_drift_is_stable_in_distribution_and_major_for_a_shifted_feature(
    start_server: StartServer, penguin_rows: list[dict[str, Any]]
) -> None:
    window = 1000
    server = start_server(env={"DRIFTGATE_DRIFT_WINDOW_ROWS": str(window)})
    rng = np.random.default_rng(2024)
    with server.client() as client:
        assert monitor(client, "penguins")["features"][0]["status"] == "warming up"

        in_distribution = [penguin_rows[i] for i in rng.integers(0, len(penguin_rows), size=window)]
        predict_all(client, "penguins", in_distribution)
        snap = monitor(client, "penguins")
        assert snap["window"]["size_rows"] == window
        # a full window; reading it may already retire the oldest chunk (a tenth)
        assert window - window // 10 <= snap["window"]["rows"] <= window
        features = features_by_name(snap)
        assert set(features) == set(PENGUIN_FEATURES)
        for name, f in features.items():
            assert f["psi"] < 0.1, (name, f["psi"])
            assert f["status"] == "stable", (name, f)

        # shift flipper_length_mm into the top 15% of its valid domain: every row still passes the guards
        spec = load_spec(PENGUINS_SPEC)
        flipper = next(f for f in spec.features if f.name == "flipper_length_mm")
        low, high = flipper.max - 0.15 * (flipper.max - flipper.min), flipper.max  # type: ignore[attr-defined,operator]
        shifted = [
            {**r, "flipper_length_mm": round(float(v), 1)}
            for r, v in zip(
                (penguin_rows[i] for i in rng.integers(0, len(penguin_rows), size=window)),
                rng.uniform(low, high, size=window),
                strict=True,
            )
        ]
        predict_all(client, "penguins", shifted)
        snap = monitor(client, "penguins")
        assert window - window // 10 <= snap["window"]["rows"] <= window
        assert snap["rows"]["predicted"] == 2 * window and snap["rows"]["rejected"] == 0
        features = features_by_name(snap)
        assert features["flipper_length_mm"]["psi"] > 0.25
        assert features["flipper_length_mm"]["status"] == "major"
        top_bin = features["flipper_length_mm"]["bins"][-2]  # [220.4, inf), before _missing
        assert top_bin["live"] == 1.0  # the window holds shifted rows only
        for name, f in features.items():
            if name != "flipper_length_mm":
                assert f["psi"] < 0.25, (name, f["psi"])

        metrics = scrape(client)
        for name, f in features.items():
            exported = metrics[("driftgate_feature_drift", frozenset({**PENGUINS_V1, "feature": name}.items()))]
            assert exported == pytest.approx(f["psi"], abs=1e-9), name
        assert sample(metrics, "driftgate_drift_window_rows", **PENGUINS_V1) == snap["window"]["rows"]


# --- the /monitor document ------------------------------------------------------------------------


def test_monitor_counts_predicted_and_rejected_rows_by_reason(client: httpx.Client, penguin_rows: list[dict[str, Any]]) -> None:
    before, metrics_before = monitor(client, "penguins"), scrape(client)

    predict_all(client, "penguins", penguin_rows[:30], batch=30)
    assert predict(client, "penguins", [penguin(sex=None)]).status_code == 200  # one row, imputed
    rejected_batches = [
        [penguin(), penguin(bill_length_mm=500.0)],  # 2 rows, one above max
        [penguin(island="Atlantis", year=2012, colour="blue")],  # unseen category, above max, unknown field
        [penguin(body_mass_g="heavy")],  # wrong type
    ]
    for batch in rejected_batches:
        assert predict(client, "penguins", batch).status_code == 422

    after, metrics_after = monitor(client, "penguins"), scrape(client)
    assert after["rows"]["predicted"] - before["rows"]["predicted"] == 31
    assert after["rows"]["rejected"] - before["rows"]["rejected"] == 4  # a rejected batch is rejected whole
    total = after["rows"]["predicted"] + after["rows"]["rejected"]
    assert after["rows"]["rejection_rate"] == pytest.approx(after["rows"]["rejected"] / total)

    def delta(section: str, key: str) -> int:
        return int(after["rejections"][section].get(key, 0) - before["rejections"][section].get(key, 0))

    assert {r: delta("by_reason", r) for r in ("above_max", "unseen_category", "unknown_feature", "wrong_type", "missing")} == {
        "above_max": 2, "unseen_category": 1, "unknown_feature": 1, "wrong_type": 1, "missing": 0,
    }  # fmt: skip
    assert {f: delta("by_feature", f) for f in ("bill_length_mm", "island", "year", "_unknown", "body_mass_g", "sex")} == {
        "bill_length_mm": 1, "island": 1, "year": 1, "_unknown": 1, "body_mass_g": 1, "sex": 0,
    }  # fmt: skip
    assert "colour" not in after["rejections"]["by_feature"]  # a client's field name is not a key

    # /metrics says the same
    def metric_delta(name: str, **labels: str) -> float:
        return sample(metrics_after, name, **PENGUINS_V1, **labels) - sample(metrics_before, name, **PENGUINS_V1, **labels)

    assert metric_delta("driftgate_rows_total", outcome="predicted") == 31
    assert metric_delta("driftgate_rows_total", outcome="rejected") == 4
    assert metric_delta("driftgate_violations_total", feature="year", reason="above_max") == 1
    assert metric_delta("driftgate_violations_total", feature="_unknown", reason="unknown_feature") == 1

    # the document's shape
    assert after["model"] == "penguins" and after["version"] == "1" and after["task"] == "classification"
    assert after["spec_digest"].startswith("sha256:")
    assert set(after["window"]) >= {"rows", "size_rows", "size_seconds", "min_rows"}
    assert after["window"]["rows"] <= after["rows"]["predicted"]
    features = features_by_name(after)
    assert list(features) == list(PENGUIN_FEATURES)  # the spec's order
    assert features["island"]["type"] == "category" and features["flipper_length_mm"]["type"] == "numeric"
    for name, f in features.items():
        assert sum(b["baseline"] for b in f["bins"]) == pytest.approx(1.0), name
        assert sum(b["live"] for b in f["bins"]) == pytest.approx(1.0), name
        assert f["status"] in ("stable", "moderate", "major", "warming up")
        assert ("ks" in f) == (f["type"] == "numeric") and ("js" in f) == (f["type"] == "category")
    assert [b["bin"] for b in features["island"]["bins"]] == ["Biscoe", "Dream", "Torgersen", "_unseen", "_missing"]
    assert set(after["output"]) >= {"class", "confidence", "mean_confidence", "estimated_accuracy"}
    assert [b["bin"] for b in after["output"]["class"]["bins"]] == ["Adelie", "Chinstrap", "Gentoo"]
    assert 0 < after["output"]["mean_confidence"] <= 1


def test_monitor_of_an_unknown_model_or_version_is_a_problem(client: httpx.Client) -> None:
    assert client.get("/v1/models/no-such-model/monitor").status_code == 404
    assert client.get("/v1/models/penguins/monitor", params={"version": "99"}).status_code == 404
    assert client.get("/v1/models/penguins/monitor", params={"version": "latest"}).status_code == 400
    assert monitor(client, "penguins", version="1")["version"] == "1"


# --- HTML -------------------------------------------------------------------------------------------


class DriftTable(HTMLParser):
    """The first cell of every row of ``<table id="drift">``, and the page's title and h1."""

    def __init__(self) -> None:
        super().__init__()
        self.in_drift = False
        self.cells: list[list[str]] = []
        self.where: list[str] = []
        self.text: dict[str, str] = {"title": "", "h1": ""}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.where.append(tag)
        if tag == "table" and dict(attrs).get("id") == "drift":
            self.in_drift = True
        elif self.in_drift and tag == "tr":
            self.cells.append([])
        elif self.in_drift and tag == "td":
            self.cells[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_drift = False
        if self.where and self.where[-1] == tag:
            self.where.pop()

    def handle_data(self, data: str) -> None:
        if self.in_drift and self.where and self.where[-1] == "td":
            self.cells[-1][-1] += data
        for tag in ("title", "h1"):
            if tag in self.where:
                self.text[tag] += data


@pytest.mark.parametrize("how", ["accept", "query"])
def test_monitor_as_html_lists_every_feature_in_the_drift_table(
    client: httpx.Client, penguin_rows: list[dict[str, Any]], how: str
) -> None:
    predict_all(client, "penguins", penguin_rows[:150], batch=75)
    if how == "accept":
        response = client.get("/v1/models/penguins/monitor", headers={"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"})
    else:
        response = client.get("/v1/models/penguins/monitor", params={"format": "html"}, headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = DriftTable()
    page.feed(response.text)
    assert "penguins" in page.text["title"] and page.text["h1"].startswith("penguins")
    rows = [r for r in page.cells if r]  # the header row has th cells only
    assert [r[0] for r in rows] == list(PENGUIN_FEATURES)
    snap = features_by_name(monitor(client, "penguins"))
    for r in rows:
        name, psi, status = r[0], r[2], r[-1]
        assert status == snap[name]["status"] != "warming up"
        assert float(psi) == pytest.approx(snap[name]["psi"], abs=5e-4)
    assert "<script" not in response.text.lower()


def test_monitor_is_json_unless_html_is_asked_for(client: httpx.Client) -> None:
    assert client.get("/v1/models/penguins/monitor").headers["content-type"].startswith("application/json")
    response = client.get("/v1/models/penguins/monitor", headers={"Accept": "application/json"})
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["model"] == "penguins"
