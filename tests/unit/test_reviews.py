"""The review queue in process: a regressor's flagged rows, answered with values.

(The classifier's queue, its bounds across workers and the browser are tested against real
server processes in ``tests/integration/test_reviews*.py``.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest

from gateway.config import load_settings
from gateway.errors import ReviewAnswerError, ReviewNotFoundError
from gateway.lifecycle import Gateway
from gateway.monitoring.drift import build_segments
from gateway.monitoring.reviews import ReviewQueue
from gateway.monitoring.segments import SegmentWindow, Slicing, slice_report
from gateway.service import answer_review, predict
from gateway.spec import Segmentation, load_spec
from gateway.table import to_columns

MODELS = Path(__file__).resolve().parents[2] / "models"
DIABETES = {"age": 0.01, "sex": 0.05, "bmi": 0.06, "bp": 0.02, "s1": -0.04, "s2": -0.03, "s3": -0.04, "s4": -0.002, "s5": 0.02, "s6": -0.01}


def test_a_regressor_s_flagged_rows_are_answered_with_values(tmp_path: Path) -> None:
    shutil.copytree(MODELS / "diabetes", tmp_path / "models" / "diabetes")
    path = tmp_path / "models" / "diabetes" / "1" / "spec.yaml"
    spec = load_spec(path)
    spec = msgspec.structs.replace(
        spec, features=tuple(msgspec.structs.replace(f, on_violation="flag") if f.name == "bmi" else f for f in spec.features)
    )
    spec.save(path)
    gateway = Gateway(load_settings({}, repository=str(tmp_path / "models"), review_queue_size=3))
    gateway.scan()
    model = gateway.model_registry.get("diabetes")
    rows = [DIABETES, {**DIABETES, "bmi": 0.5}, {**DIABETES, "bmi": 0.6}]
    outcome = predict(model, to_columns(rows, spec.feature_names), gateway.predictions)
    queued = gateway.reviews.list("diabetes", 10)
    assert [e["id"] for e in queued] == outcome.ids[1:]  # only the flagged rows
    assert queued[0]["why"] == ["bmi: above_max (flagged)"] and queued[0]["inputs"]["bmi"] == 0.5
    assert queued[0]["prediction"] == {"value": pytest.approx(float(outcome.values[1]))}  # type: ignore[index]
    first = queued[0]["id"]
    for bad in ({"value": "a lot"}, {"value": float("nan")}, {"label": "high"}, {}, {"value": 1.0, "label": "x"}):
        with pytest.raises(ReviewAnswerError):
            answer_review(gateway.model_registry, gateway.predictions, "diabetes", first, bad)
    with pytest.raises(ReviewNotFoundError):
        answer_review(gateway.model_registry, gateway.predictions, "diabetes", outcome.ids[0], {"value": 1.0})
    truth = float(outcome.values[1]) + 20.0  # type: ignore[index]
    answer = answer_review(gateway.model_registry, gateway.predictions, "diabetes", first, {"value": truth})
    assert answer == {"id": first, "value": truth, "agreed": None, "feedback": "matched"}
    assert model.metrics.feedback.mae() == pytest.approx(20.0, abs=1e-3)
    assert [e["id"] for e in gateway.reviews.list("diabetes", 10)] == outcome.ids[2:]
    # a flood: at most 3 rows, the oldest dropped and counted
    predict(model, to_columns([{**DIABETES, "bmi": 0.5}] * 10, spec.feature_names), gateway.predictions)
    stats = gateway.reviews.stats()["diabetes"]
    assert stats == {"length": 3, "queued": 12, "dropped": 8, "answered": 1, "agreed": 0}


def test_a_shared_queue_is_one_queue_for_every_process(tmp_path: Path) -> None:
    a, b = ReviewQueue(tmp_path / "reviews.sqlite", 2), ReviewQueue(tmp_path / "reviews.sqlite", 2)
    a.add("m", [{"id": "x-1"}, {"id": "x-2"}])
    b.add("m", [{"id": "y-1"}])
    assert [e["id"] for e in a.list("m", 10)] == ["x-2", "y-1"] and b.stats()["m"]["dropped"] == 1
    assert b.take("m", "x-2", True) and not a.take("m", "x-2", True)  # one answer wins
    assert a.stats()["m"] == {"length": 1, "queued": 3, "dropped": 1, "answered": 1, "agreed": 1}


def test_a_segment_s_regression_feedback_is_its_mean_absolute_error() -> None:
    spec = load_spec(MODELS / "penguins" / "1" / "spec.yaml")
    spec = msgspec.structs.replace(spec, segments=(Segmentation(feature="island"),))
    slicing = Slicing(spec, build_segments(spec))
    window = SegmentWindow(slicing, feedback_window=100)
    packed = slicing.pack(np.asarray([[0], [0], [2], [3]], dtype=np.intp) + slicing.first[0])
    window.add_feedback(packed, errors=np.asarray([1.0, -3.0, 2.0, 5.0]))
    report = {s["value"]: s for s in slice_report(slicing, window.export(), classification=False)}
    assert report["Biscoe"]["mae"] == 2.0 and report["Biscoe"]["rmse"] == pytest.approx(np.sqrt(5.0))
    assert report["Torgersen"]["mae"] == 2.0 and report["_other"]["mae"] == 5.0 and "mae" not in report["Dream"]
    assert report["Biscoe"]["feedback_rows"] == 2
