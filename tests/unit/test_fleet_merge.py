"""Monitoring across workers (``gateway.monitoring.fleet``): publishing, merging, taking over.

The one property that matters: two workers that each saw part of the rows, merged, read
exactly as one worker that saw them all (histograms, violations, drift bins, class counts,
feedback window); and whatever worker a reader asks, counters never go back.
Real models and specs throughout (the bundled ones); the workers are in-process objects
sharing a real state folder, as worker processes would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.config import load_settings
from gateway.errors import InputRejectedError
from gateway.monitoring.feedback import SharedPredictionLog
from gateway.monitoring.fleet import Fleet, Publication, WorkerContext, decode_states, encode_states
from gateway.monitoring.metrics import GatewayCollector, MetricsState, ModelMetrics, merge_states
from gateway.registry import LoadedModel, ModelRegistry, load_model
from gateway.samples import sample_records
from gateway.service import FeedbackItem, predict, record_feedback
from gateway.table import records_to_columns
from gateway.workers import create_state_folder

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def penguins() -> LoadedModel:
    root = MODELS / "penguins" / "1"
    return load_model("penguins", 1, (root / "model.onnx").read_bytes(), (root / "spec.yaml").read_bytes())


def twin(model: LoadedModel, **monitor: Any) -> LoadedModel:
    """The same loaded model with metrics of its own: what another worker would hold."""
    return LoadedModel(model.name, model.version, model.spec, model.runtime, {"feedback_window": 1000, **monitor})


def batches(model: LoadedModel, n: int, seed: int = 0) -> list[list[dict[str, Any]]]:
    """Requests of 1 to 7 rows, a few of them with a rejected row, some with imputed cells."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rows = sample_records(model.spec, int(rng.integers(1, 8)), seed=seed * 1000 + i)
        if i % 5 == 0:
            rows[0]["bill_depth_mm"] = None  # imputed by the spec
        if i % 7 == 3:
            rows[-1]["island"] = "Atlantis"  # rejected: the whole request is
        out.append(rows)
    return out


def serve(model: LoadedModel, log: Any, requests: list[list[dict[str, Any]]]) -> list[str]:
    ids: list[str] = []
    for rows in requests:
        try:
            ids += predict(model, records_to_columns(rows, model.spec.feature_names), log).ids
        except InputRejectedError:
            pass
    return ids


def assert_same(merged: MetricsState, whole: MetricsState) -> None:
    assert merged.rows == whole.rows
    assert merged.marks == whole.marks
    np.testing.assert_array_equal(merged.violations, whole.violations)
    np.testing.assert_array_equal(merged.class_counts, whole.class_counts)
    for name in ("confidence", "margin", "entropy", "values"):
        a, b = getattr(merged, name), getattr(whole, name)
        np.testing.assert_array_equal(a.counts, b.counts)
        assert a.total == pytest.approx(b.total) and a.nonfinite == b.nonfinite
    for stage in whole.stages:  # timings differ run to run; the number of requests does not
        assert merged.stages[stage].counts.sum() == whole.stages[stage].counts.sum()
    np.testing.assert_array_equal(merged.drift.total, whole.drift.total)
    assert merged.drift.total_rows == whole.drift.total_rows
    assert merged.drift.total_confidence == pytest.approx(whole.drift.total_confidence)
    np.testing.assert_allclose(merged.feedback.total, whole.feedback.total)
    assert merged.feedback_counts == whole.feedback_counts


def test_two_workers_merged_read_as_one_worker_that_saw_every_row(penguins: LoadedModel, tmp_path: Path) -> None:
    a, b, whole = twin(penguins), twin(penguins), twin(penguins)
    folders = [create_state_folder(_settings(2), tmp_path) for _ in range(2)]
    log_a, log_b, log_whole = (
        SharedPredictionLog(folders[f], "abcdef", i, 2, 1024) for f, i in ((0, 0), (0, 1), (1, 0))
    )
    requests = batches(penguins, 60)
    ids_a = serve(a, log_a, requests[0::2])
    ids_b = serve(b, log_b, requests[1::2])
    ids_whole = serve(whole, log_whole, requests[0::2]) + serve(whole, log_whole, requests[1::2])
    truth = ["Adelie", "Gentoo", "Chinstrap"]
    registry_a, registry_b, registry_whole = (_registry(m) for m in (a, b, whole))
    record_feedback(registry_a, log_a, "penguins", [FeedbackItem(i, truth[k % 3]) for k, i in enumerate(ids_a)])
    record_feedback(registry_b, log_b, "penguins", [FeedbackItem(i, truth[k % 3]) for k, i in enumerate(ids_b)])
    feedback = [FeedbackItem(i, truth[k % 3]) for k, i in enumerate(ids_whole[: len(ids_a)])]
    feedback += [FeedbackItem(i, truth[k % 3]) for k, i in enumerate(ids_whole[len(ids_a) :])]
    record_feedback(registry_whole, log_whole, "penguins", [*feedback, FeedbackItem("nope", "Adelie")])
    record_feedback(registry_a, log_a, "penguins", [FeedbackItem("nope", "Adelie")])
    merged = merge_states([a.metrics.export(), b.metrics.export()])
    whole_state = whole.metrics.export()
    assert whole_state.rows["predicted"] == len(ids_whole) > 100 and whole_state.rows["rejected"] > 0
    assert whole_state.violations.sum() > 0 and whole_state.feedback.total[0] == len(ids_whole)
    assert_same(merged, whole_state)


def _settings(workers: int) -> Any:
    return load_settings({}, workers=workers, prediction_store_size=1024)


def _registry(model: LoadedModel) -> ModelRegistry:
    registry = ModelRegistry()
    registry.add(model)
    return registry


def test_a_publication_survives_encoding_exactly(penguins: LoadedModel, tmp_path: Path) -> None:
    m = twin(penguins)
    serve(
        m, SharedPredictionLog(create_state_folder(_settings(1), tmp_path), "abcdef", 0, 1, 1024), batches(penguins, 20)
    )
    state = m.metrics.export()
    decoded = decode_states(encode_states(3, Publication({("penguins", "1"): (state, 12.5)}, {("penguins", "ok"): 7})))
    assert decoded.requests == {("penguins", "ok"): 7}
    back, exported = decoded.models[("penguins", "1")]
    assert exported == 12.5
    assert_same(back, state)
    np.testing.assert_array_equal(back.drift.counts, state.drift.counts)


def fleet_of(
    folder: Path, index: int, metrics: list[ModelMetrics], requests: dict[tuple[str, str], int] | None = None
) -> Fleet:
    return Fleet(WorkerContext(str(folder), "abcdef", index, 2), lambda: metrics, lambda: requests or {})


def collect(metrics: ModelMetrics) -> dict[tuple[str, str], float]:
    collector = GatewayCollector()
    collector.attach(metrics)
    return {
        (s.name, s.labels.get("outcome", "")): s.value
        for family in collector.collect()
        for s in family.samples
        if s.name in ("driftgate_rows_total", "driftgate_drift_window_rows")
    }


def test_a_reader_at_either_worker_reports_the_fleet_and_never_goes_back(penguins: LoadedModel, tmp_path: Path) -> None:
    folder = create_state_folder(_settings(2), tmp_path)
    a, b = twin(penguins), twin(penguins)
    a.metrics.fleet = fleet_of(folder, 0, [a.metrics])
    b.metrics.fleet = fleet_of(folder, 1, [b.metrics])
    logs = [SharedPredictionLog(folder, "abcdef", i, 2, 1024) for i in (0, 1)]
    requests = batches(penguins, 40, seed=3)
    seen = 0.0
    served = 0
    for i, rows in enumerate(requests):
        worker = i % 3 == 0  # uneven: b serves a third
        served += len(serve((b if worker else a), logs[worker], [rows]))
        reader = (a, b)[i % 2]  # scrapes alternate between the workers, publishing nothing else
        value = collect(reader.metrics)[("driftgate_rows_total", "predicted")]
        assert value >= seen, f"request {i}: the fleet's count went back from {seen} to {value}"
        seen = value
    # once both have published, either one reads every row exactly once
    for m in (a, b):
        m.metrics.fleet.publish()
    for m in (a, b):
        scraped = collect(m.metrics)
        assert scraped[("driftgate_rows_total", "predicted")] == served
        assert scraped[("driftgate_drift_window_rows", "")] == served


def test_a_restarted_worker_continues_its_predecessors_counts(penguins: LoadedModel, tmp_path: Path) -> None:
    folder = create_state_folder(_settings(2), tmp_path)
    first = twin(penguins)
    fleet = fleet_of(folder, 0, [first.metrics], {("penguins", "ok"): 5})
    first.metrics.fleet = fleet
    log = SharedPredictionLog(folder, "abcdef", 0, 2, 1024)
    ids = serve(first, log, batches(penguins, 10, seed=5))
    fleet.publish()
    before = first.metrics.export()
    # the worker dies; its replacement in slot 0 starts from the published state
    successor = fleet_of(folder, 0, [], {("penguins", "ok"): 1})
    assert successor.publish().models[("penguins", "1")][0].rows == before.rows  # not loaded yet: republished
    assert successor.publish().requests == {("penguins", "ok"): 6}
    second = twin(penguins, fleet=successor)
    assert_same(second.metrics.export(), before)
    assert successor.inherit("penguins", "1") is None  # taken over once
    # its prediction ring too: earlier ids still join, and new ids do not collide with them
    log2 = SharedPredictionLog(folder, "abcdef", 0, 2, 1024)
    assert log2.issued == log.issued
    new_ids = serve(second, log2, batches(penguins, 2, seed=6))
    assert not set(new_ids) & set(ids)
    _, _, _, status = log2.join("penguins", [ids[0], new_ids[0]])
    assert status == ["matched", "matched"]


def test_feedback_joins_predictions_of_any_worker(tmp_path: Path) -> None:
    folder = create_state_folder(_settings(2), tmp_path)
    logs = [SharedPredictionLog(folder, "abcdef", i, 2, 1024) for i in (0, 1)]
    assert logs[0].prefix != logs[1].prefix
    a = logs[0].record("penguins", 1, 3, np.array([0, 1, 2]), None)
    b = logs[1].record("penguins", 2, 2, np.array([2, 2]), None)
    c = logs[1].record("diabetes", 1, 1, None, np.array([151.5], dtype=np.float32))
    versions, labels, _, status = logs[0].join("penguins", [b[1], a[0], "abcdef05-1", "ffffff01-1", c[0], a[2], 7])
    assert status == ["matched", "matched", "unknown_id", "unknown_id", "unknown_id", "matched", "unknown_id"]
    assert versions.tolist() == [2, 1, 1] and labels.tolist() == [2, 0, 2]
    _, _, values, status = logs[0].join("diabetes", c)
    assert status == ["matched"] and values.tolist() == [151.5]
    # another worker's ring: an id it overwrote is expired, one it never issued unknown
    for _ in range(1030):
        logs[1].record("penguins", 2, 1, np.array([0]), None)
    _, _, _, status = logs[0].join("penguins", [b[0], f"{logs[1].prefix}-{logs[1].issued + 5:x}"])
    assert status == ["expired", "unknown_id"]


def test_a_version_whose_counts_did_not_move_is_published_as_before(penguins: LoadedModel, tmp_path: Path) -> None:
    folder = create_state_folder(_settings(2), tmp_path)
    idle, busy = twin(penguins), twin(penguins)
    busy.metrics.model = busy.metrics.version = "2"  # a second version beside the idle one
    fleet = fleet_of(folder, 0, [idle.metrics, busy.metrics])
    log = SharedPredictionLog(folder, "abcdef", 0, 2, 1024)
    serve(idle, log, batches(penguins, 5, seed=1))
    first = fleet.publish()
    serve(busy, log, batches(penguins, 5, seed=2))
    second = fleet.publish()
    # the idle version was not exported again: the very state (and its encoded entry) is reused
    assert second.models[("penguins", "1")] is first.models[("penguins", "1")]
    assert second.models[("2", "2")][0].rows != first.models[("2", "2")][0].rows
    on_disk = decode_states(fleet.path.read_bytes())
    assert_same(on_disk.models[("penguins", "1")][0], first.models[("penguins", "1")][0])
    assert on_disk.models[("2", "2")][0].rows == second.models[("2", "2")][0].rows
