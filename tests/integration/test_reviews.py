"""The review queue end to end over HTTP, against real server processes.

The bundled penguins model is served with its spec's review threshold raised to 0.99 (so
that a share of ordinary rows is unsure enough) and ``body_mass_g`` set to ``flag`` (a mass
above the spec's maximum is predicted anyway, marked). Such rows wait in the queue with
their inputs, prediction and why; a person's answer becomes feedback (online accuracy
moves) and takes the row off; bad answers change nothing; a flood keeps the queue at its
size with the oldest dropped and counted, shared by the workers of one server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from gateway.spec import NumberFeature, load_spec
from tests.helpers.metrics import scrape, series
from tests.integration.support import PENGUINS_MODEL, PENGUINS_SPEC, assert_problem, penguin

THRESHOLD = 0.99


def review_repository(root: Path) -> Path:
    """The bundled penguins model, its spec with ``review_threshold`` 0.99 and
    ``body_mass_g`` flagged rather than rejected out of its range."""
    spec = load_spec(PENGUINS_SPEC)
    assert spec.output is not None
    features = tuple(
        msgspec.structs.replace(f, on_violation="flag") if f.name == "body_mass_g" else f for f in spec.features
    )
    spec = msgspec.structs.replace(
        spec, features=features, output=msgspec.structs.replace(spec.output, review_threshold=THRESHOLD)
    )
    folder = root / "penguins" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(PENGUINS_MODEL.read_bytes())
    spec.save(folder / "spec.yaml")
    return root


def too_heavy() -> float:
    feature = next(f for f in load_spec(PENGUINS_SPEC).features if f.name == "body_mass_g")
    assert isinstance(feature, NumberFeature) and feature.max is not None
    return float(feature.max) + 500


def ambiguous_rows() -> list[dict[str, Any]]:
    """Rows between species (bill and flipper halfway between Adelie and Gentoo): some
    fall below the threshold."""
    return [penguin(bill_length_mm=40.0 + k, bill_depth_mm=16.0 + k / 10, flipper_length_mm=200.0 + k) for k in range(12)]


def test_a_person_answers_the_queue_over_http(start_server: Any, tmp_path: Path) -> None:
    server = start_server(repository=review_repository(tmp_path / "models"))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/v1/models/penguins:predict", json={"instances": [*ambiguous_rows(), penguin(body_mass_g=too_heavy())]})
        assert r.status_code == 200, r.text
        predictions = r.json()["predictions"]
        unsure = {p["id"] for p in predictions[:-1] if p["confidence"] < THRESHOLD}
        flagged = predictions[-1]["id"]
        assert unsure, [p["confidence"] for p in predictions]

        listed = client.get("/v1/models/penguins/reviews").json()
        assert listed["length"] == len(unsure) + (flagged not in unsure) and listed["capacity"] == 10_000
        by_id = {row["id"]: row for row in listed["reviews"]}
        assert set(by_id) == unsure | {flagged}
        assert any("body_mass_g: above_max (flagged)" in why for why in by_id[flagged]["why"])
        assert by_id[flagged]["inputs"]["body_mass_g"] == too_heavy()
        some = min(unsure)
        assert any(f"below the review threshold {THRESHOLD}" in why for why in by_id[some]["why"])
        assert by_id[some]["prediction"]["confidence"] < THRESHOLD
        assert client.get("/v1/models/penguins/reviews", params={"limit": 1}).json()["reviews"][0]["id"] == listed["reviews"][0]["id"]

        # bad answers: one clear 4xx each, nothing recorded, the row stays
        assert_problem(client.post("/v1/models/penguins/reviews/nope-1", json={"label": "Adelie"}), 404)
        assert_problem(client.post(f"/v1/models/penguins/reviews/{some}", json={"label": "Penguin"}), 422)
        assert_problem(client.post(f"/v1/models/penguins/reviews/{some}", json={"label": [1]}), 422)
        assert_problem(client.post(f"/v1/models/penguins/reviews/{some}", json={"value": 3.5}), 422)
        assert_problem(client.post(f"/v1/models/penguins/reviews/{some}", content=b"{not json"), 400)
        assert_problem(client.post(f"/v1/models/nobody/reviews/{some}", json={"label": "Adelie"}), 404)
        assert_problem(client.get("/v1/models/penguins/reviews", params={"limit": 0}), 400)
        assert client.get("/v1/models/penguins/monitor").json()["feedback"]["matched"] == 0

        # the person disagrees with the model: feedback, online accuracy, the row leaves
        model_said = by_id[some]["prediction"]["label"]
        truth = next(label for label in ("Adelie", "Chinstrap", "Gentoo") if label != model_said)
        r = client.post(f"/v1/models/penguins/reviews/{some}", json={"label": truth})
        assert r.status_code == 200, r.text
        assert r.json() == {"id": some, "label": truth, "agreed": False, "feedback": "matched"}
        monitor = client.get("/v1/models/penguins/monitor").json()
        assert monitor["feedback"]["matched"] == 1 and monitor["feedback"]["accuracy"] == 0.0
        assert some not in {row["id"] for row in client.get("/v1/models/penguins/reviews").json()["reviews"]}
        assert monitor["reviews"]["answered"] == 1 and monitor["reviews"]["agreement"] == 0.0
        assert_problem(client.post(f"/v1/models/penguins/reviews/{some}", json={"label": truth}), 404)  # answered
        # ... and one who agrees
        r = client.post(f"/v1/models/penguins/reviews/{flagged}", json={"label": by_id[flagged]["prediction"]["label"]})
        assert r.json()["agreed"] is True
        metrics = scrape(client)
        assert list(series(metrics, "driftgate_reviews_total", model="penguins", outcome="answered").values()) == [2.0]
        assert list(series(metrics, "driftgate_reviews_total", model="penguins", outcome="agreed").values()) == [1.0]
        waiting = client.get("/v1/models/penguins/reviews").json()["length"]
        assert waiting == listed["length"] - 2
        assert list(series(metrics, "driftgate_review_queue_rows", model="penguins").values()) == [float(waiting)]

@pytest.mark.slow
def test_a_flood_keeps_the_queue_bounded_across_workers(start_server: Any, tmp_path: Path) -> None:
    server = start_server(
        repository=review_repository(tmp_path / "models"),
        args=["--workers", "2"],
        env={"DRIFTGATE_REVIEW_QUEUE_SIZE": "40"},
    )
    heavy = penguin(body_mass_g=too_heavy())
    sent: list[str] = []
    for _ in range(12):  # new connections: both workers take some
        with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as client:
            r = client.post("/v1/models/penguins:predict", json={"instances": [heavy] * 25})
            assert r.status_code == 200, r.text
            sent += [p["id"] for p in r.json()["predictions"]]
    assert len({pid.split("-")[0] for pid in sent}) == 2, "both workers predicted"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        listed = client.get("/v1/models/penguins/reviews", params={"limit": 1000}).json()
        assert listed["length"] == 40 and listed["queued"] == 300 and listed["dropped"] == 260
        assert [row["id"] for row in listed["reviews"]] == sent[-40:]  # the newest stay, oldest first
        # any worker answers a row any worker queued
        for pid in sent[-40:-30]:
            with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as fresh:
                r = fresh.post(f"/v1/models/penguins/reviews/{pid}", json={"label": "Gentoo"})
                assert r.status_code == 200 and r.json()["feedback"] == "matched", r.text
        after = client.get("/v1/models/penguins/reviews", params={"limit": 1000}).json()
        assert after["length"] == 30 and after["answered"] == 10
        assert json.loads(json.dumps(after["reviews"][0]["inputs"]))["body_mass_g"] == too_heavy()
