"""Feature importance at registration, and drift ranked by what it costs.

The bundled penguins classifier is registered into a private repository: each feature's
permutation importance is computed in a child process and stored with the version. Then
two features drift by the same PSI, ``bill_length_mm`` (the model leans on it) and
``year`` (it hardly does): ``/monitor`` ranks the important one first and estimates a
larger accuracy effect for it; ``/metrics`` carries the importance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest

from gateway.config import load_settings
from gateway.lifecycle import Gateway
from gateway.model_check.importance import BASIS_HELD_OUT, BASIS_SAMPLED, compute_importance
from gateway.monitoring.drift import psi
from gateway.monitoring.report import snapshot
from gateway.registry import ModelRegistry
from gateway.repository import IMPORTANCE_FILE, ModelRepository
from gateway.service import predict, register_model
from gateway.spec import NumberFeature, load_spec
from gateway.table import to_columns

MODELS = Path(__file__).resolve().parents[2] / "models"
PENGUINS = MODELS / "penguins" / "1"
IMPORTANT, MINOR = "bill_length_mm", "year"


@pytest.fixture(scope="module")
def records() -> tuple[list[dict[str, Any]], list[str]]:
    import palmerpenguins

    frame = palmerpenguins.load_penguins()
    frame = frame[frame["bill_length_mm"].notna()]
    rows = json.loads(frame.drop(columns="species").to_json(orient="records"))
    return rows, frame["species"].tolist()


def test_importance_from_held_out_rows_or_the_baselines(records: tuple[list[dict[str, Any]], list[str]]) -> None:
    model, spec = (PENGUINS / "model.onnx").read_bytes(), load_spec(PENGUINS / "spec.yaml")
    sampled = compute_importance(model, spec)
    bad = {**records[0][0], "island": "Atlantis"}  # refused by the spec: left out, with its label
    held_out = compute_importance(model, spec, [*records[0], bad], [*records[1], "Adelie"])
    assert sampled is not None and held_out is not None
    assert sampled.basis == BASIS_SAMPLED and held_out.basis == BASIS_HELD_OUT
    assert held_out.rows == len(records[0]) and sampled.rows == 1000 and sampled.repeats >= 1
    for found in (sampled, held_out):
        assert set(found.values) == set(spec.feature_names) and found.metric == "accuracy"
        assert found.values[IMPORTANT] == max(found.values.values()) > 0.2
        assert abs(found.values[MINOR]) < 0.02


def _bins(spec: Any, name: str, values: list[Any]) -> list[int]:
    feature = next(f for f in spec.features if f.name == name)
    edges = np.asarray(feature.baseline.edges)
    counts = np.bincount(np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="right"), minlength=len(edges) + 1)
    return [*counts.tolist(), 0]  # no missing value sent


def _psi(spec: Any, name: str, values: list[Any]) -> float:
    feature = next(f for f in spec.features if f.name == name)
    base = np.asarray([*feature.baseline.counts, feature.baseline.missing], dtype=np.float64)
    live = np.asarray(_bins(spec, name, values), dtype=np.float64)
    return psi(live / live.sum(), base / base.sum())


def test_two_features_drifting_by_the_same_psi_rank_by_importance(
    tmp_path: Path, records: tuple[list[dict[str, Any]], list[str]]
) -> None:
    (tmp_path / "models").mkdir()
    gateway = Gateway(load_settings({}, repository=str(tmp_path / "models")))
    loaded = register_model(
        gateway.model_registry, gateway.repository, "penguins", 1, (PENGUINS / "model.onnx").read_bytes(), (PENGUINS / "spec.yaml").read_bytes()
    )
    importance = loaded.metrics.importance
    assert importance is not None and (tmp_path / "models" / "penguins" / "1" / IMPORTANCE_FILE).is_file()
    # stored with the version: a server that loads the folder reads it back
    reloaded = ModelRegistry().load_entry(ModelRepository(tmp_path / "models").scan()[0])
    assert reloaded is not None and reloaded.metrics.importance == importance

    spec = loaded.spec
    rows = [dict(r) for r in (records[0] * 4)[:1200]]
    for r in rows[:600]:
        r[MINOR] = 2009  # half the rows in year's last bin
    top = next(f for f in spec.features if f.name == IMPORTANT)
    assert isinstance(top, NumberFeature) and top.max is not None
    high = top.max - 1
    target = _psi(spec, MINOR, [r[MINOR] for r in rows])
    natural = [r[IMPORTANT] for r in rows]
    # move just enough bill lengths into their last bin that the two PSIs match
    moved = min(range(len(rows)), key=lambda k: abs(_psi(spec, IMPORTANT, [high] * k + natural[k:]) - target))
    for r in rows[:moved]:
        r[IMPORTANT] = high
    for i in range(0, len(rows), 100):
        predict(loaded, to_columns(rows[i : i + 100], spec.feature_names), gateway.predictions)

    impact = snapshot(loaded)["drift_impact"]
    by_feature = {e["feature"]: e for e in impact["features"]}
    a, b = by_feature[IMPORTANT], by_feature[MINOR]
    assert a["psi"] == pytest.approx(b["psi"], rel=0.05) and a["psi"] > 0.25  # the same drift, by the server's count
    assert a["importance"] > 10 * b["importance"]
    ranked = [e["feature"] for e in impact["features"]]
    assert ranked.index(IMPORTANT) < ranked.index(MINOR) and ranked[0] == IMPORTANT
    assert a["estimated_effect"] > b["estimated_effect"] + 0.05
    assert a["drifting"] and b["drifting"] and impact["importance_basis"] == BASIS_SAMPLED
    text = generate_latest(gateway.metrics_registry).decode()
    line = next(ln for ln in text.splitlines() if ln.startswith("driftgate_feature_importance") and f'feature="{IMPORTANT}"' in ln)
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(importance.values[IMPORTANT])
