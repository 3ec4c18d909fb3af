"""Segments: fitting per-value baselines, refusing bad ones, and counting per value.

The per-value counts (vectorised: one ``bincount`` a batch) are checked against a plain
count of the same rows in Python; two workers' states, merged, against one worker that saw
every row; feedback joins through the shared prediction rings of two workers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from gateway.config import load_settings
from gateway.errors import InputRejectedError, SpecError, UsageError
from gateway.fitting import fit_segments
from gateway.monitoring.feedback import SharedPredictionLog
from gateway.monitoring.metrics import merge_states
from gateway.monitoring.report import snapshot
from gateway.monitoring.segments import OTHER_VALUE, slice_report
from gateway.registry import LoadedModel, ModelRegistry, load_model
from gateway.service import FeedbackItem, predict, record_feedback
from gateway.spec import MAX_SEGMENT_VALUES, CategoryFeature, FeatureSpec, decode_spec, encode_spec, load_spec
from gateway.table import records_to_columns
from gateway.workers import create_state_folder

MODELS = Path(__file__).resolve().parents[2] / "models"
SPEC = MODELS / "penguins" / "1" / "spec.yaml"
ISLANDS = ("Biscoe", "Dream", "Torgersen")


@pytest.fixture(scope="module")
def data() -> Any:
    import palmerpenguins

    return palmerpenguins.load_penguins()


@pytest.fixture(scope="module")
def spec(data: Any) -> FeatureSpec:
    return fit_segments(load_spec(SPEC), data, ["island"])


@pytest.fixture(scope="module")
def model(spec: FeatureSpec) -> LoadedModel:
    return load_model("penguins", 1, (MODELS / "penguins" / "1" / "model.onnx").read_bytes(), encode_spec(spec))


def twin(model: LoadedModel) -> LoadedModel:
    return LoadedModel(model.name, model.version, model.spec, model.runtime, {"feedback_window": 1000})


def test_fitted_baselines_count_each_value_s_rows_in_the_drift_bins(spec: FeatureSpec, data: Any) -> None:
    (segmentation,) = spec.segments
    assert segmentation.feature == "island"
    by_value = {b.value: b for b in segmentation.baselines}
    assert set(by_value) == set(ISLANDS)
    sex = next(f for f in spec.features if f.name == "sex")
    assert isinstance(sex, CategoryFeature)
    for island in ISLANDS:
        rows = data[data["island"] == island]
        b = by_value[island]
        assert b.rows == len(rows)
        assert "island" not in b.counts
        expected_sex = [int((rows["sex"] == c).sum()) for c in sex.categories]
        assert list(b.counts["sex"][: len(sex.categories)]) == expected_sex
        assert b.counts["sex"][-1] == int(rows["sex"].isna().sum())  # the missing bin
        assert sum(b.counts["body_mass_g"]) == len(rows)
    # the spec round-trips through its file format, digest and all
    again = decode_spec(encode_spec(spec))
    assert again == spec and again.digest == spec.digest


def test_a_segment_that_is_not_a_category_or_has_too_many_values_is_refused(data: Any, tmp_path: Path) -> None:
    base = load_spec(SPEC)
    with pytest.raises(UsageError, match="segment feature 'year' is an integer, not a category"):
        fit_segments(base, data, ["year"])
    with pytest.raises(UsageError, match="'colour' is not a feature"):
        fit_segments(base, data, ["colour"])
    # a hand-written spec: refused when it is read (registration reads it so too)
    many = msgspec.structs.replace(
        base,
        features=tuple(
            CategoryFeature(name="island", categories=tuple(f"i{k}" for k in range(MAX_SEGMENT_VALUES + 1)))
            if f.name == "island"
            else f
            for f in base.features
        ),
    )
    with pytest.raises(UsageError, match=f"'island' has {MAX_SEGMENT_VALUES + 1} values; at most {MAX_SEGMENT_VALUES}"):
        fit_segments(many, data, ["island"])
    text = encode_spec(many).decode() + "segments:\n- feature: island\n"
    with pytest.raises(SpecError, match=f"has {MAX_SEGMENT_VALUES + 1} values; at most {MAX_SEGMENT_VALUES}"):
        decode_spec(text)
    with pytest.raises(SpecError, match="'year' is an integer, not a category"):
        decode_spec(encode_spec(base).decode() + "segments:\n- feature: year\n")
    # the command line: one line, non-zero
    csv = tmp_path / "penguins.csv"
    data.to_csv(csv, index=False)
    for flag, message in (("year", "is an integer, not a category"), ("species", "not a feature")):
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "fit-spec", str(csv), "--name", "p", "--target", "species",
             "-o", str(tmp_path / "s.yaml"), "--segment", flag],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def _traffic(model: LoadedModel, data: Any, n: int, seed: int) -> list[list[dict[str, Any]]]:
    frame = data.drop(columns="species")
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(n):
        rows = [dict(records[j]) for j in rng.integers(0, len(records), int(rng.integers(1, 6))).tolist()]
        if i % 9 == 4:
            rows[0]["island"] = "Atlantis"  # the whole request is rejected, that row as _other
        requests.append(rows)
    return requests


def test_per_value_counts_agree_with_counting_rows_one_by_one(model: LoadedModel, data: Any, tmp_path: Path) -> None:
    folder = create_state_folder(load_settings({}, workers=2, prediction_store_size=4096), tmp_path)
    logs = [SharedPredictionLog(folder, "abcdef", i, 2, 4096) for i in (0, 1)]
    workers = [twin(model), twin(model)]
    whole = twin(model)
    (tmp_path / "w").mkdir()
    whole_folder = create_state_folder(load_settings({}, workers=1, prediction_store_size=4096), tmp_path / "w")
    whole_log = SharedPredictionLog(whole_folder, "fedcba", 0, 1, 4096)
    expected_rows = dict.fromkeys([*ISLANDS, OTHER_VALUE], 0)
    expected_rejected = dict.fromkeys([*ISLANDS, OTHER_VALUE], 0)
    predicted: list[tuple[str, str, str]] = []  # (worker's id, whole's id, island)
    labels: list[str] = []  # what the model said of each predicted row
    for i, rows in enumerate(_traffic(model, data, 160, seed=3)):
        w = i % 2
        try:
            outcome = predict(workers[w], records_to_columns(rows, model.spec.feature_names), logs[w])
            ids = outcome.ids
            assert outcome.label_index is not None
            labels += [model.spec.output.labels[k] for k in outcome.label_index.tolist()]  # type: ignore[union-attr]
            whole_ids = predict(whole, records_to_columns(rows, model.spec.feature_names), whole_log).ids
        except InputRejectedError:
            with pytest.raises(InputRejectedError):
                predict(whole, records_to_columns(rows, model.spec.feature_names), whole_log)
            for r in rows:
                expected_rejected[r["island"] if r["island"] in ISLANDS else OTHER_VALUE] += 1
            continue
        for r, pid, wid in zip(rows, ids, whole_ids, strict=True):
            expected_rows[r["island"]] += 1
            predicted.append((pid, wid, r["island"]))
    # feedback "Adelie" for every row, sent to worker 0 whichever worker predicted
    truth: dict[str, str] = {}
    for pid, wid, _ in predicted:
        truth[pid] = truth[wid] = "Adelie"
    expected_accuracy = {
        v: np.mean([label == "Adelie" for label, (_, _, island) in zip(labels, predicted, strict=True) if island == v])
        for v in ISLANDS
    }
    record_feedback(_registry(workers[0]), logs[0], "penguins", [FeedbackItem(pid, truth[pid]) for pid, _, _ in predicted])
    record_feedback(_registry(whole), whole_log, "penguins", [FeedbackItem(wid, truth[wid]) for _, wid, _ in predicted])

    merged = merge_states([w.metrics.export() for w in workers])
    report = {s["value"]: s for s in slice_report(model.metrics.slicing, merged.segments, True)}
    assert {v: report[v]["predicted"] for v in expected_rows} == expected_rows
    assert {v: report[v]["rejected"] for v in expected_rejected} == expected_rejected
    assert report[OTHER_VALUE]["violations"] == {"unseen_category": expected_rejected[OTHER_VALUE]}
    assert sum(report[v]["feedback_rows"] for v in ISLANDS) == len(predicted)
    assert {v: report[v]["accuracy"] for v in ISLANDS} == pytest.approx(expected_accuracy)
    assert expected_accuracy["Biscoe"] < 0.5 < expected_accuracy["Torgersen"]  # only Adelies live there
    whole_report = {s["value"]: s for s in slice_report(model.metrics.slicing, whole.metrics.export().segments, True)}
    for value, entry in whole_report.items():
        assert entry["predicted"] == report[value]["predicted"] and entry["feedback_rows"] == report[value]["feedback_rows"]
        assert entry["accuracy" if "accuracy" in entry else "feedback_rows"] == pytest.approx(
            report[value]["accuracy" if "accuracy" in entry else "feedback_rows"]
        )
        assert entry["mean_confidence"] == pytest.approx(report[value]["mean_confidence"])
    np.testing.assert_array_equal(whole.metrics.export().segments.total, merged.segments.total)
    # /monitor of one worker lists every value; /metrics labels by segment and value
    snap = snapshot(whole)
    assert [s["value"] for s in snap["segments"]] == [*ISLANDS, OTHER_VALUE]
    assert any("online accuracy" in f for f in next(s for s in snap["segments"] if s["value"] == "Biscoe")["findings"])
    assert not any("online accuracy" in f for f in next(s for s in snap["segments"] if s["value"] == "Torgersen")["findings"])


def _registry(model: LoadedModel) -> ModelRegistry:
    registry = ModelRegistry()
    registry.add(model)
    return registry
