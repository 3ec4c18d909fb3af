"""Rollout state, routing and the shadow queue, in process on real models (``gateway.rollout``,
``gateway.shadow``)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from gateway.errors import RolloutError
from gateway.monitoring.feedback import PredictionLog
from gateway.registry import ModelRegistry, load_model
from gateway.rollout import (
    Candidate,
    Rollout,
    RolloutAction,
    Rollouts,
    decide,
    read_rollout,
    route_bucket,
    write_rollout,
)
from gateway.service import predict
from gateway.shadow import Shadow, ShadowJob, ShadowLog, candidate_columns
from gateway.table import to_columns
from tests.integration.retrained import retrained

ROOT = Path(__file__).resolve().parents[2]
PENGUIN = {"island": "Biscoe", "bill_length_mm": 45.2, "bill_depth_mm": 15.1, "flipper_length_mm": 215.0, "body_mass_g": 5100.0, "sex": "male", "year": 2008}
TORGERSEN = {**PENGUIN, "island": "Torgersen"}


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    """penguins v1 (bundled) and v2 (retrained off Torgersen, refitted spec), served."""
    registry = ModelRegistry()
    folder = ROOT / "models" / "penguins" / "1"
    registry.add(load_model("penguins", 1, (folder / "model.onnx").read_bytes(), (folder / "spec.yaml").read_bytes()))
    model, spec = retrained()
    registry.add(load_model("penguins", 2, model, spec))
    return registry


def shadowing(root: Path, registry: ModelRegistry, capacity: int = 4096) -> tuple[PredictionLog, Shadow]:
    """A prediction log, and a shadow of penguins v1 by v2 (every request)."""
    rollouts = Rollouts(root, registry)
    rollouts.write("penguins", Rollout(primary=1, candidate=Candidate(version=2, mode="shadow")))
    log = PredictionLog(4096)
    return log, Shadow(rollouts, ShadowLog(4096, prefix=log.prefix), capacity)


def test_the_state_file_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    state = Rollout(primary=1, candidate=Candidate(version=2, mode="canary", share=0.2), rollbacks={"manual": 1})
    write_rollout(tmp_path, "penguins", state)
    assert read_rollout(tmp_path, "penguins") == state
    assert [p.name for p in (tmp_path / "penguins").iterdir()] == ["rollout.yaml"]  # no temporary file left
    write_rollout(tmp_path, "penguins", None)
    assert read_rollout(tmp_path, "penguins") is None


def test_a_broken_state_file_keeps_the_state_in_use(tmp_path: Path, registry: ModelRegistry) -> None:
    rollouts = Rollouts(tmp_path, registry)
    rollouts.write("penguins", Rollout(primary=1))
    (tmp_path / "penguins" / "rollout.yaml").write_text("primary: [unclosed\n")
    rollouts.refresh()
    assert rollouts.states["penguins"].primary == 1


def test_promote_then_rollback_restores_the_previous_primary() -> None:
    state = decide("m", None, RolloutAction(action="shadow", version=3), [1, 2, 3], 2)
    assert state.primary == 2 and state.candidate == Candidate(version=3, mode="shadow", share=1.0)
    state = decide("m", state, RolloutAction(action="promote"), [1, 2, 3], 2)
    assert (state.primary, state.candidate, state.previous) == (3, None, 2)
    state = decide("m", state, RolloutAction(action="rollback"), [1, 2, 3], 2)
    assert (state.primary, state.previous, state.rollbacks) == (2, 3, {"manual": 1})
    with pytest.raises(RolloutError, match="no candidate to promote"):
        decide("m", state, RolloutAction(action="promote"), [1, 2, 3], 2)


def test_canary_routing_is_sticky_and_pinned_versions_are_not_rerouted(tmp_path: Path, registry: ModelRegistry) -> None:
    rollouts = Rollouts(tmp_path, registry)
    assert rollouts.choose("penguins", []).version == 2  # no state: the highest, as always
    rollouts.write("penguins", Rollout(primary=1, candidate=Candidate(version=2, mode="canary", share=0.2)))
    keys = [f"user-{i}" for i in range(4000)]
    chosen = {key: rollouts.choose("penguins", [(b"x-driftgate-route-key", key.encode())]).version for key in keys}
    assert all(rollouts.choose("penguins", [(b"x-driftgate-route-key", k.encode())]).version == v for k, v in list(chosen.items())[:200])
    share = Counter(chosen.values())[2] / len(keys)
    assert abs(share - 0.2) < 0.03
    assert all((route_bucket(k) < 0.2) == (v == 2) for k, v in chosen.items())
    assert registry.get("penguins", 1).version == 1  # a pinned request goes to the registry, never here


def test_a_full_shadow_queue_drops_and_counts_and_the_primary_answers(tmp_path: Path, registry: ModelRegistry) -> None:
    log, shadow = shadowing(tmp_path, registry, capacity=2)
    shadow._thread = object()  # type: ignore[assignment]  # no worker: the queue fills up
    primary, candidate = registry.get("penguins", 1), registry.get("penguins", 2)
    before = dict(candidate.metrics.shadow.counts)
    for _ in range(5):
        columns = to_columns([PENGUIN], primary.spec.feature_names)
        outcome = predict(primary, columns, log)
        shadow.mirror(primary, columns, outcome)
        assert outcome.model is primary and len(outcome.ids) == 1  # answered whatever the queue holds
    counts = candidate.metrics.shadow.counts
    assert counts["dropped"] - before["dropped"] == 3 and shadow.queue.qsize() == 2


def test_the_shadow_compares_on_the_candidates_own_spec(tmp_path: Path, registry: ModelRegistry) -> None:
    log, shadow = shadowing(tmp_path, registry)
    primary, candidate = registry.get("penguins", 1), registry.get("penguins", 2)
    before = dict(candidate.metrics.shadow.counts)
    results = []
    shadow.on_result.append(lambda model, ids, outcome: results.append((model.version, list(ids), outcome.model.version)))
    for row in (PENGUIN, TORGERSEN, PENGUIN):
        columns = to_columns([row], primary.spec.feature_names)
        shadow.mirror(primary, columns, predict(primary, columns, log))  # v1 takes every row
    shadow.stop()
    counts = {k: v - before[k] for k, v in candidate.metrics.shadow.counts.items()}
    assert counts == {"compared": 2, "agreed": 2, "rejected": 1, "dropped": 0, "failed": 0}
    found = [i for _, ids, _ in results for i in ids]
    assert len(found) == 2 and all(version == 2 for version, _, _ in results)
    assert all(i.startswith(log.prefix + "-") for i in found)  # keyed by the primary's ids


def test_rows_are_rekeyed_for_a_candidate_with_other_features(registry: ModelRegistry) -> None:
    primary = registry.get("penguins", 1)
    other = msgspec.structs.replace(primary.spec, features=primary.spec.features[:-1])  # a spec without 'year'
    candidate = type("Fake", (), {"spec": other})()
    columns = to_columns([{**PENGUIN, "colour": "blue"}], primary.spec.feature_names)
    rekeyed = candidate_columns(columns, primary, candidate)
    assert "year" not in rekeyed.data and (0, "year", 2008) in rekeyed.unknown and (0, "colour", "blue") in rekeyed.unknown
    assert rekeyed.data["island"] == ["Biscoe"]


def test_registering_a_shadow_keeps_the_primary(tmp_path: Path) -> None:
    from gateway.repository import ModelRepository
    from gateway.service import register_model

    repository = tmp_path / "models"
    shutil.copytree(ROOT / "models" / "penguins", repository / "penguins")
    model, spec = retrained()
    register_model(ModelRegistry(), ModelRepository(repository), "penguins", None, model, spec, rollout=("shadow", 0.5))
    assert read_rollout(repository, "penguins") == Rollout(primary=1, candidate=Candidate(version=2, mode="shadow", share=0.5))
    register_model(ModelRegistry(), ModelRepository(repository), "penguins", None, model, spec)  # plain: becomes the primary
    state = read_rollout(repository, "penguins")
    assert state is not None and (state.primary, state.candidate, state.previous) == (3, None, 1)


def test_the_shadow_batches_requests_and_takes_out_only_the_refused_rows(tmp_path: Path, registry: ModelRegistry) -> None:
    log, shadow = shadowing(tmp_path, registry)
    primary, candidate = registry.get("penguins", 1), registry.get("penguins", 2)
    before = dict(candidate.metrics.shadow.counts)
    predicted_before = candidate.metrics.export().rows["predicted"]
    jobs = []
    for rows in ([PENGUIN], [TORGERSEN, PENGUIN, TORGERSEN], [PENGUIN]):
        columns = to_columns(rows, primary.spec.feature_names)
        jobs.append(ShadowJob.of(primary, candidate, columns, predict(primary, columns, log)))
    ids = [i for job in jobs for i in job.ids]
    seen: list[list[str]] = []
    shadow.on_result.append(lambda model, found, outcome: seen.append(list(found)))
    shadow.process(jobs)
    counts = {k: v - before[k] for k, v in candidate.metrics.shadow.counts.items()}
    assert counts == {"compared": 3, "agreed": 3, "rejected": 2, "dropped": 0, "failed": 0}
    assert seen == [[ids[0], ids[2], ids[4]]]  # one batch, the refused rows taken out, in order
    assert candidate.metrics.export().violations.sum() > 0
    assert candidate.metrics.export().rows["predicted"] - predicted_before == 3


def test_regression_agreement_is_within_the_tolerance(tmp_path: Path) -> None:
    registry = ModelRegistry()
    folder = ROOT / "models" / "diabetes" / "1"
    for version in (1, 2):
        registry.add(load_model("diabetes", version, (folder / "model.onnx").read_bytes(), (folder / "spec.yaml").read_bytes()))
    primary, candidate = registry.get("diabetes", 1), registry.get("diabetes", 2)
    rollouts = Rollouts(tmp_path, registry)
    log = PredictionLog(4096)
    shadow = Shadow(rollouts, ShadowLog(4096, prefix=log.prefix))
    row = {"age": 0.01, "sex": 0.05, "bmi": 0.06, "bp": 0.02, "s1": -0.04, "s2": -0.03, "s3": -0.04, "s4": -0.002, "s5": 0.02, "s6": -0.01}
    columns = to_columns([row] * 4, primary.spec.feature_names)
    outcome = predict(primary, columns, log)
    assert outcome.values is not None
    for tolerance, agreed in ((0.5, 4), (0.0, 4)):
        rollouts.write("diabetes", Rollout(primary=1, candidate=Candidate(version=2, mode="shadow"), tolerance=tolerance))
        before = candidate.metrics.shadow.counts["agreed"]
        shadow.process([ShadowJob.of(primary, candidate, columns, outcome)])
        assert candidate.metrics.shadow.counts["agreed"] - before == agreed  # the same model: equal values
    outcome.values = outcome.values + 1.0  # the primary said something else: 1 away
    rollouts.write("diabetes", Rollout(primary=1, candidate=Candidate(version=2, mode="shadow"), tolerance=0.5))
    before = candidate.metrics.shadow.counts["agreed"]
    shadow.process([ShadowJob.of(primary, candidate, columns, outcome)])
    assert candidate.metrics.shadow.counts["agreed"] == before
    assert shadow.tolerance(primary) == 0.5
