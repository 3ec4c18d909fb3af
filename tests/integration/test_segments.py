"""Segments end to end: a real server, a real Prometheus and the shipped rules.

The bundled penguins model is served with a spec naming ``island`` as a segment (its other
features' baselines fitted per island from the palmerpenguins package's data). Traffic is
resampled from that data; on Torgersen (about 15% of rows) the body mass moves to the top
of its valid domain and the labels sent back as feedback turn wrong for most rows, while
Biscoe and Dream stay as trained. The segment alerts fire for Torgersen alone; the model's
own drift and accuracy alerts stay quiet, and ``/monitor`` names the segment.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from gateway.fitting import fit_segments
from gateway.spec import MAX_SEGMENT_VALUES, CategoryFeature, NumberFeature, encode_spec, load_spec
from tests.integration.support import ADMIN_TOKEN, PENGUINS_MODEL, PENGUINS_SPEC, admin, assert_problem, bundle
from tests.integration.test_prometheus import Prometheus
from tests.system import require_binary

WINDOW_ROWS = 2000
SHIFTED = "body_mass_g"


def segmented_repository(root: Path) -> Path:
    """A repository serving the bundled penguins model with ``segments: [island]``."""
    import palmerpenguins

    spec = fit_segments(load_spec(PENGUINS_SPEC), palmerpenguins.load_penguins(), ["island"])
    folder = root / "penguins" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(PENGUINS_MODEL.read_bytes())
    spec.save(folder / "spec.yaml")
    return root


def penguin_traffic(n: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """``n`` rows resampled from the package's data (NaN as null), and their species."""
    import palmerpenguins

    frame = palmerpenguins.load_penguins()
    records = json.loads(frame.drop(columns="species").to_json(orient="records"))
    species = frame["species"].tolist()
    picks = np.random.default_rng(seed).integers(0, len(records), n).tolist()
    return [dict(records[i]) for i in picks], [species[i] for i in picks]


@pytest.mark.slow
def test_a_segment_that_goes_wrong_alone_is_named(start_server: Any, tmp_path: Path) -> None:
    require_binary("prometheus", "prometheus")
    repo = segmented_repository(tmp_path / "models")
    server = start_server(repository=repo, env={"DRIFTGATE_DRIFT_WINDOW_ROWS": str(WINDOW_ROWS)})
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    prometheus = Prometheus(workdir, [server.url.removeprefix("http://")])
    try:
        rows, species = penguin_traffic(WINDOW_ROWS, seed=7)
        feature = next(f for f in load_spec(PENGUINS_SPEC).features if f.name == SHIFTED)
        assert isinstance(feature, NumberFeature) and feature.max is not None
        top = float(feature.max)
        rng = np.random.default_rng(8)
        for row in rows:
            if row["island"] == "Torgersen":
                row[SHIFTED] = round(float(rng.uniform(top - 600, top)), 1)
        labels = ("Adelie", "Chinstrap", "Gentoo")
        feedback = []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(0, len(rows), 50):
                r = client.post("/v1/models/penguins:predict", json={"instances": rows[i : i + 50]})
                assert r.status_code == 200, r.text
                for k, p in enumerate(r.json()["predictions"]):
                    row = rows[i + k]
                    truth = species[i + k]
                    if row["island"] == "Torgersen" and rng.random() < 0.7:
                        truth = next(x for x in labels if x != p["label"])  # the model got it wrong
                    feedback.append({"id": p["id"], "label": truth})
            r = client.post("/v1/models/penguins/feedback", json={"feedback": feedback})
            assert r.status_code == 200, r.text
            assert r.json()["matched"] == len(rows)

            firing = prometheus.wait_for(lambda: prometheus.firing("DriftgateSegmentAccuracyDrop"))
            assert [(a["segment"], a["value"]) for a in firing] == [("island", "Torgersen")], firing
            drifting = prometheus.wait_for(lambda: prometheus.firing("DriftgateSegmentDrift"))
            assert {(a["value"], a["feature"]) for a in drifting} == {("Torgersen", SHIFTED)}, drifting
            # the whole: neither its drift nor its accuracy alert
            assert prometheus.firing("DriftgateFeatureDrift") == []
            assert prometheus.firing("DriftgateAccuracyDrop") == []
            overall = prometheus.query('driftgate_online_metric{model="penguins",metric="accuracy"}')
            assert float(overall[0]["value"][1]) > 0.8

            snap = client.get("/v1/models/penguins/monitor").json()
        named = {s["value"]: s["findings"] for s in snap["segments"]}
        assert named["Torgersen"] and all("accuracy" in f or "drifted" in f for f in named["Torgersen"]), named
        assert any(SHIFTED in f for f in named["Torgersen"])
        assert named["Biscoe"] == named["Dream"] == [], named
        torgersen = next(s for s in snap["segments"] if s["value"] == "Torgersen")
        assert torgersen["drift"][SHIFTED] > 0.25 > next(f["psi"] for f in snap["features"] if f["name"] == SHIFTED)
    finally:
        prometheus.stop()


@pytest.mark.slow
def test_the_page_draws_the_trend_of_each_segment(start_server: Any, tmp_path: Path) -> None:
    server = start_server(
        repository=segmented_repository(tmp_path / "models"),
        env={"DRIFTGATE_HISTORY_SECONDS": "0.3", "DRIFTGATE_DRIFT_WINDOW_ROWS": "400"},
    )
    rows, _ = penguin_traffic(400, seed=11)
    feature = next(f for f in load_spec(PENGUINS_SPEC).features if f.name == SHIFTED)
    assert isinstance(feature, NumberFeature) and feature.max is not None
    with httpx.Client(base_url=server.url, timeout=30) as client:

        def points() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = client.get("/v1/models/penguins/monitor").json()["history"]["points"]
            return found

        def send(batch: list[dict[str, Any]]) -> None:
            for i in range(0, len(batch), 100):
                assert client.post("/v1/models/penguins:predict", json={"instances": batch[i : i + 100]}).status_code == 200
            start = len(points())
            deadline = time.monotonic() + 10
            while len(points()) < start + 2 and time.monotonic() < deadline:  # a point after the traffic
                time.sleep(0.1)

        send(rows)
        calm = points()[-1]
        send([dict(r, **{SHIFTED: feature.max - 1}) for r in rows])  # the whole window moves
        r = client.post("/v1/models/penguins:predict", json={"instances": [dict(rows[0], island="Atlantis")]})
        assert r.status_code == 422
        send([])
        history = points()
        page = client.get("/v1/models/penguins/monitor", headers={"Accept": "text/html"}).text
    shifted = history[-1]
    assert calm["drift"][SHIFTED] < 0.25 < shifted["drift"][SHIFTED]
    assert any(p["rejection_rate"] == 1.0 for p in history[-3:])  # the only row of that minute was refused
    assert set(shifted["segments"]) == {"island=Biscoe", "island=Dream", "island=Torgersen", "island=_other"}
    assert all(0 < p["mean_confidence"] <= 1 for p in history if p["mean_confidence"] is not None)
    trends = page[page.index("<div id='trends'>") :]
    assert trends.count("<svg") >= 4 and "polyline" in trends and "Estimated accuracy per segment value" in trends
    assert 'http-equiv="refresh"' in page  # the page refreshes itself


def test_registration_refuses_bad_segments_and_stores_the_importance(start_server: Any, tmp_path: Path) -> None:
    server = start_server(env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    base = PENGUINS_SPEC.read_text()
    spec = load_spec(PENGUINS_SPEC)
    many = encode_spec(
        msgspec.structs.replace(
            spec,
            features=tuple(
                CategoryFeature(name=f.name, categories=tuple(f"i{k}" for k in range(MAX_SEGMENT_VALUES + 1)))
                if f.name == "island"
                else f
                for f in spec.features
            ),
        )
    ).decode()
    with httpx.Client(base_url=server.url, timeout=60, headers=admin()) as client:
        for text, message in (
            (base + "segments:\n- feature: year\n", "segment feature 'year' is an integer, not a category"),
            (base + "segments:\n- feature: colour\n", "segment 'colour' is not a feature of the spec"),
            (many + "segments:\n- feature: island\n", f"has {MAX_SEGMENT_VALUES + 1} values; at most {MAX_SEGMENT_VALUES}"),
        ):
            r = client.put("/v1/models/penguins/versions/2", files=bundle(PENGUINS_MODEL.read_bytes(), text.encode()))
            problem = assert_problem(r, 422)
            assert message in problem["detail"] and "\n" not in problem["detail"], problem["detail"]
        assert not (server.repository / "penguins" / "2").exists()
        good = segmented_repository(tmp_path / "good") / "penguins" / "1" / "spec.yaml"
        r = client.put("/v1/models/penguins/versions/2", files=bundle(PENGUINS_MODEL.read_bytes(), good.read_bytes()))
        assert r.status_code in (200, 201), r.text
        stored = json.loads((server.repository / "penguins" / "2" / "importance.json").read_text())
        assert max(stored["values"], key=stored["values"].get) == "bill_length_mm"
        rows, _ = penguin_traffic(200, seed=3)
        assert client.post("/v1/models/penguins/versions/2:predict", json={"instances": rows}).status_code == 200
        snap = client.get("/v1/models/penguins/monitor", params={"version": "2"}).json()
        assert {e["feature"] for e in snap["drift_impact"]["features"]} <= set(stored["values"])
        assert snap["drift_impact"]["importance_rows"] == 1000
        assert [s["value"] for s in snap["segments"]] == ["Biscoe", "Dream", "Torgersen", "_other"]
