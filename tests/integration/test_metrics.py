"""``GET /metrics`` (the contract's metric names, types and labels) and the OpenAPI document."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.metrics import sample, scrape, series
from tests.integration.conftest import ServerProcess
from tests.integration.support import assert_problem, penguin, predict

PENGUINS_V1 = {"model": "penguins", "version": "1"}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _families(client: httpx.Client) -> dict[str, str]:
    """Metric family name -> type."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain"), response.headers["content-type"]
    return {f.name: f.type for f in text_string_to_metric_families(response.text)}


def test_contract_metric_names_and_types(client: httpx.Client) -> None:
    predict(client, "penguins", [penguin()])
    families = _families(client)
    assert families.get("driftgate_rows") == "counter"
    assert families.get("driftgate_violations") == "counter"
    assert families.get("driftgate_confidence") == "histogram"
    assert families.get("driftgate_request_seconds") == "histogram"
    assert all(name.startswith(("driftgate_", "process_", "python_")) for name in families), sorted(families)


def test_counts_follow_the_requests(client: httpx.Client) -> None:
    before = scrape(client)
    good = predict(
        client,
        "penguins",
        [penguin(), penguin(island="Dream"), penguin(island="Torgersen"), penguin(sex="female"), penguin(year=2009)],
    )
    assert good.status_code == 200
    confidences = [p["confidence"] for p in good.json()["predictions"]]
    assert predict(client, "penguins", [penguin(island="Atlantis")]).status_code == 422
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("driftgate_rows_total", **PENGUINS_V1, outcome="predicted") == 5
    assert delta("driftgate_rows_total", **PENGUINS_V1, outcome="rejected") == 1
    assert delta("driftgate_violations_total", **PENGUINS_V1, feature="island", reason="unseen_category") == 1
    assert delta("driftgate_confidence_count", **PENGUINS_V1) == 5
    assert delta("driftgate_confidence_sum", **PENGUINS_V1) == pytest.approx(sum(confidences), abs=1e-5)
    assert delta("driftgate_confidence_bucket", **PENGUINS_V1, le="+Inf") == 5
    # Two requests reached validation; one of them went on to transform and infer.
    stage = {"model": "penguins"}
    assert delta("driftgate_request_seconds_count", **stage, stage="validate") == 2
    assert delta("driftgate_request_seconds_count", **stage, stage="transform") == 1
    assert delta("driftgate_request_seconds_count", **stage, stage="infer") == 1


def test_histograms_are_well_formed(client: httpx.Client) -> None:
    predict(client, "penguins", [penguin()])
    metrics = scrape(client)
    for name, labels in (
        ("driftgate_confidence", PENGUINS_V1),
        *(("driftgate_request_seconds", {"model": "penguins", "stage": s}) for s in ("validate", "transform", "infer")),
    ):
        buckets = sorted(
            ((float(dict(lab)["le"]), v) for lab, v in series(metrics, f"{name}_bucket", **labels).items()),
        )
        assert buckets, f"{name}{labels} has no buckets"
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{name}{labels}: buckets must be cumulative"
        assert buckets[-1][0] == float("inf")
        assert buckets[-1][1] == sample(metrics, f"{name}_count", **labels) > 0


def test_labels_come_from_bounded_sets(client: httpx.Client) -> None:
    """Names a client makes up (a field, a model) must never become label values."""
    assert predict(client, "penguins", [penguin(evil_field_x9="1")]).status_code == 422
    assert_problem(predict(client, "evil-model-x9", [penguin()]), 404)
    text = client.get("/metrics").text
    assert "evil_field_x9" not in text and "evil-model-x9" not in text
    metrics = scrape(client)
    assert (
        sample(metrics, "driftgate_violations_total", **PENGUINS_V1, feature="_unknown", reason="unknown_feature") >= 1
    )


def test_feature_drift_gauge_per_feature(client: httpx.Client) -> None:
    """After enough rows for a drift window (``MIN_ROWS``), one PSI gauge per spec feature."""
    from palmerpenguins import load_penguins

    from gateway.monitoring.drift import MIN_ROWS

    frame = load_penguins().drop(columns="species")
    rows = [  # a NaN (missing) cell is left out
        {k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))} for r in frame.to_dict("records")
    ]
    assert len(rows) >= MIN_ROWS
    assert predict(client, "penguins", rows).status_code == 200
    metrics = scrape(client)
    drift = {dict(lab)["feature"]: v for lab, v in series(metrics, "driftgate_feature_drift", **PENGUINS_V1).items()}
    assert set(drift) == {
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
        "year",
    }
    assert all(math.isfinite(v) and v >= 0 for v in drift.values()), drift


def test_openapi_document_lists_the_predict_path(client: httpx.Client) -> None:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    predict_paths = [p for p, ops in paths.items() if p.startswith("/v1/models/") and "post" in ops]
    assert predict_paths, sorted(paths)
    assert any("versions" in p for p in predict_paths), "the pinned-version predict path is listed too"
    assert "/v2/health/ready" in paths and "/v2/health/live" in paths
    assert client.get("/schema").status_code == 200


def test_a_scraper_that_accepts_gzip_gets_the_same_text_compressed(client: httpx.Client) -> None:
    """Prometheus sends ``Accept-Encoding: gzip``: the body is compressed off the event loop."""
    predict(client, "penguins", [penguin()])
    packed = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert packed.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert int(packed.headers["content-length"]) < len(plain.content) / 3  # on the wire, compressed
    assert packed.headers["vary"].lower() == "accept-encoding"

    def names(text: str) -> set[str]:
        return {s.name for f in text_string_to_metric_families(text) for s in f.samples}

    assert names(packed.text) == names(plain.text) and "driftgate_rows_total" in names(plain.text)
    refused = client.get("/metrics", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers
