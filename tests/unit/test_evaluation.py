"""Offline evaluation (gateway.evaluation) and the held-out record (gateway.baseline):
figures equal scikit-learn's, refusals are counted as the guards decide them, and the
isotonic calibration is scikit-learn's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import palmerpenguins
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_absolute_error, r2_score, roc_auc_score

from gateway.baseline import (
    decode_baseline,
    encode_baseline,
    fit_calibration,
    label_reference,
    missing_output_baseline,
    monitored_spec,
)
from gateway.datafile import read_columns
from gateway.errors import SpecError, UsageError
from gateway.evaluation import baseline_of, classification_metrics, evaluate, read_labelled, regression_metrics
from gateway.monitoring.metrics import ModelMetrics
from gateway.registry import load_runtime
from gateway.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
PENGUINS = ROOT / "models" / "penguins" / "1"
PENGUINS_CSV = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"


@pytest.mark.parametrize("labels", [2, 4])
def test_classification_figures_are_scikit_learns(labels: int) -> None:
    rng = np.random.default_rng(labels)
    truth = rng.integers(0, labels, 500)
    raw = rng.random((500, labels)) + np.eye(labels)[truth] * rng.random((500, 1))  # informative, not perfect
    p = raw / raw.sum(axis=1, keepdims=True)
    got = classification_metrics(truth, p, labels)
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, p.argmax(axis=1)))
    assert got["macro_f1"] == pytest.approx(f1_score(truth, p.argmax(axis=1), average="macro"))
    assert got["log_loss"] == pytest.approx(log_loss(truth, p, labels=list(range(labels))))
    if labels == 2:
        tied = np.round(p[:, 1], 1)  # ties count half, as scikit-learn counts them
        assert classification_metrics(truth, np.stack([1 - tied, tied], axis=1), 2)["roc_auc"] == pytest.approx(roc_auc_score(truth, tied))
    else:
        assert "roc_auc" not in got


def test_regression_figures_are_scikit_learns() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(10, 3, 400)
    predicted = truth + rng.normal(0, 1, 400)
    got = regression_metrics(truth, predicted)
    assert got["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert got["rmse"] == pytest.approx(float(np.sqrt(np.mean((truth - predicted) ** 2))))
    assert got["r2"] == pytest.approx(r2_score(truth, predicted))
    assert "r2" not in regression_metrics(np.ones(5), np.arange(5.0))  # undefined for a constant truth


def test_calibration_is_scikit_learns_isotonic_fit() -> None:
    rng = np.random.default_rng(5)
    confidence = rng.uniform(0.3, 1.0, 3000)
    correct = rng.random(3000) < confidence**3  # overconfident: right less often than it says
    calibration = fit_calibration(confidence, correct)
    assert calibration is not None
    reference = IsotonicRegression(out_of_bounds="clip").fit(confidence, correct)
    probe = rng.uniform(0.2, 1.0, 2000)
    # the same curve but for confidences pooled to the 1e-4 grid (a step may move by a cell)
    assert np.abs(calibration.apply(probe) - reference.predict(probe)).mean() < 0.005
    assert calibration.apply(probe).mean() == pytest.approx(reference.predict(probe).mean(), abs=0.002)
    assert calibration.apply(confidence).mean() == pytest.approx(correct.mean(), abs=1e-3)  # isotonic keeps the mean
    assert np.all(np.diff(calibration.apply(np.linspace(0, 1, 101))) >= 0)
    assert fit_calibration(np.zeros(0), np.zeros(0, dtype=bool)) is None


@pytest.fixture(scope="module")
def penguins_runtime() -> tuple[object, object]:
    return load_runtime("penguins", 1, (PENGUINS / "model.onnx").read_bytes(), (PENGUINS / "spec.yaml").read_bytes())


def test_evaluate_counts_refused_rows_by_feature_and_reason_and_scores_the_rest(penguins_runtime: tuple[object, object]) -> None:
    spec, runtime = penguins_runtime
    data = read_labelled(PENGUINS_CSV, spec)  # type: ignore[arg-type]
    data["bill_length_mm"] = [9999.0 if i < 5 else v for i, v in enumerate(data["bill_length_mm"])]
    data["island"] = ["Atlantis" if 3 <= i < 10 else v for i, v in enumerate(data["island"])]
    data["species"] = [None if i == 20 else v for i, v in enumerate(data["species"])]
    result = evaluate(spec, runtime, data)  # type: ignore[arg-type]
    assert result.rows == 344
    assert result.refusals == {("bill_length_mm", "above_max"): 5, ("island", "unseen_category"): 7}
    assert int((~result.accepted).sum()) == 10  # rows 0-9: rows 3 and 4 break both
    assert int(result.scored.sum()) == 344 - 10 - 1
    figures = result.metrics()
    assert 0.95 < figures["accuracy"] <= 1.0 and set(figures) == {"accuracy", "macro_f1", "log_loss"}
    # the same rows through the spec and the model outside the evaluation
    rows = np.flatnonzero(result.scored)
    truth = np.array(data["species"], dtype=object)[rows]
    said = runtime.run(spec.transform({k: [data[k][i] for i in rows] for k in spec.feature_names})).probabilities  # type: ignore[attr-defined]
    assert figures["accuracy"] == pytest.approx(np.mean(np.asarray(spec.output.labels)[said.argmax(axis=1)] == truth))  # type: ignore[attr-defined]


def test_baseline_of_records_figures_output_target_and_calibration(penguins_runtime: tuple[object, object]) -> None:
    spec, runtime = penguins_runtime
    result = evaluate(spec, runtime, read_labelled(PENGUINS_CSV, spec))  # type: ignore[arg-type]
    baseline = baseline_of(result, "penguins.csv")
    assert baseline.scored_rows == 344 and baseline.data == "penguins.csv"
    assert baseline.metrics == result.metrics()
    assert sum(baseline.output.class_counts or ()) == 344 and sum(baseline.output.confidence.counts) == 344  # type: ignore[union-attr]
    species = read_columns(PENGUINS_CSV)["species"]
    assert baseline.target.class_counts == tuple(species.count(label) for label in spec.output.labels)  # type: ignore[attr-defined]
    assert baseline.calibration is not None and baseline.calibration.rows == 344
    assert decode_baseline(encode_baseline(baseline)) == baseline
    with pytest.raises(SpecError, match="not a valid baseline"):
        decode_baseline(b'{"task": "classification"}')


def test_the_held_out_output_baseline_fills_in_for_a_fitted_spec(tmp_path: Path, penguins_runtime: tuple[object, object]) -> None:
    spec, runtime = penguins_runtime
    from msgspec.structs import replace

    bare = replace(spec, output=replace(spec.output, baseline=replace(spec.output.baseline, confidence=None)))  # type: ignore[attr-defined]
    assert "no output baseline" in (missing_output_baseline(bare, None) or "")
    baseline = baseline_of(evaluate(bare, runtime, read_labelled(PENGUINS_CSV, bare)))  # type: ignore[arg-type]
    assert missing_output_baseline(bare, baseline) is None
    assert monitored_spec(bare, baseline).output.baseline.confidence == baseline.output.confidence  # type: ignore[union-attr]
    # so the confidence-drop alert has its reference (driftgate_baseline_mean_confidence)
    assert ModelMetrics(bare, "penguins", 1).baseline_mean_confidence is None
    assert ModelMetrics(bare, "penguins", 1, baseline=baseline).baseline_mean_confidence is not None
    reference = label_reference(bare, baseline)
    assert reference is not None and reference.source == "training"  # fit-spec's target counts come first
    assert label_reference(replace(bare, output=replace(bare.output, baseline=None)), baseline).source == "holdout"  # type: ignore[union-attr, arg-type]


def test_data_without_the_target_is_one_clear_error(tmp_path: Path) -> None:
    spec = load_spec(PENGUINS / "spec.yaml")
    unlabelled = tmp_path / "rows.csv"
    unlabelled.write_text("island,bill_length_mm\nBiscoe,40\n")
    with pytest.raises(UsageError, match="no column 'species'"):
        read_labelled(unlabelled, spec)


def test_a_regressor_is_scored_and_its_value_baseline_uses_the_specs_bins() -> None:
    from sklearn.datasets import load_diabetes

    folder = ROOT / "models" / "diabetes" / "1"
    spec, runtime = load_runtime("diabetes", 1, (folder / "model.onnx").read_bytes(), (folder / "spec.yaml").read_bytes())
    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    data = {c: frame[c].to_numpy() for c in frame.columns}
    result = evaluate(spec, runtime, data)
    assert result.values is not None and result.probabilities is None
    rows = result.scored
    predicted = runtime.run(spec.transform({k: data[k][rows] for k in spec.feature_names})).values
    figures = result.metrics()
    assert figures["r2"] == pytest.approx(r2_score(data["progression"][rows], predicted), rel=1e-6)
    assert figures["mae"] == pytest.approx(mean_absolute_error(data["progression"][rows], predicted), rel=1e-6)
    baseline = baseline_of(result)
    assert baseline.output.values.edges == spec.output.baseline.values.edges  # type: ignore[union-attr]
    assert sum(baseline.target.values.counts) == baseline.scored_rows == int(rows.sum())  # type: ignore[union-attr]
    assert baseline.calibration is None
    reference = label_reference(spec, baseline)
    assert reference is not None and reference.edges is not None
    assert reference.bin_values(np.array([-1e9, 1e9])).tolist() == [0, reference.bins - 1]  # beyond the ends: the end bins
