"""``/metrics`` text (``gateway.monitoring.exposition``) and the instruments behind it.

A real in-process ``Gateway`` on the bundled models, real predictions; the text is read
back with prometheus_client's own parser, so it is valid exposition format, and its values
are checked against the models' own state (rows, drift window, PSI).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.lifecycle import Gateway
from gateway.monitoring.exposition import (
    STANDARD_LATENCY_BUCKETS,
    SharedBuild,
    parse_metrics_detail,
    render_metrics,
    render_text,
)
from gateway.monitoring.instruments import BatchHistogram, StateMismatchError
from gateway.monitoring.metrics import ModelMetrics
from gateway.registry import LoadedModel
from gateway.samples import sample_records
from gateway.service import predict
from gateway.table import to_columns

ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def gateway() -> Gateway:
    gateway = Gateway(load_settings({}, repository=str(ROOT / "models")))
    gateway.scan()
    gateway.loaded.set()
    for name in ("penguins", "diabetes"):
        send(gateway.model_registry.get(name), gateway, 150)
    return gateway


def send(model: LoadedModel, gateway: Gateway, rows: int, seed: int = 1) -> None:
    records = sample_records(model.spec, rows, seed=seed)
    predict(model, to_columns(records, model.spec.feature_names), gateway.predictions)
    for record in records[:5]:  # and a few one-row requests (the buffered lane)
        predict(model, to_columns([record], model.spec.feature_names), gateway.predictions)


def scrape(gateway: Gateway, detail: str) -> tuple[str, Samples]:
    gateway.collector.detail = parse_metrics_detail(detail)
    text = render_text(gateway.collector, lambda: dict(gateway.requests.counts)).decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def per_model(samples: Samples, model: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, labels in samples:
        if ("model", model) in labels:
            counts[name] = counts.get(name, 0) + 1
    return counts


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_levels_add_series_and_the_default_stays_small(gateway: Gateway) -> None:
    levels = {level: scrape(gateway, level)[1] for level in ("standard", "detailed", "full")}
    penguins = {level: per_model(samples, "penguins") for level, samples in levels.items()}
    standard, detailed, full = penguins["standard"], penguins["detailed"], penguins["full"]
    features = len(gateway.model_registry.get("penguins").spec.features)
    assert standard["driftgate_feature_drift"] == features
    assert sum(standard.values()) <= 100
    for opt_in in ("driftgate_feature_drift_distance", "driftgate_missing_share", "driftgate_confidence_margin_bucket"):
        assert opt_in not in standard and opt_in in detailed
    assert "driftgate_drift_bin_count" not in detailed and "driftgate_drift_baseline_share" not in detailed
    segments = gateway.model_registry.get("penguins").metrics.drift.segments
    assert full["driftgate_drift_bin_count"] == full["driftgate_drift_baseline_share"] == sum(s.size for s in segments)
    stages = {dict(labels)["stage"] for name, labels in levels["standard"] if name == "driftgate_request_seconds_count"}
    assert stages == {"validate", "transform", "infer"}
    stages = {dict(labels)["stage"] for name, labels in levels["detailed"] if name == "driftgate_request_seconds_count"}
    assert stages == {"validate", "transform", "infer", "monitor"}
    assert sum(standard.values()) < sum(detailed.values()) < sum(full.values())


def test_values_are_the_models_own_state(gateway: Gateway) -> None:
    _, samples = scrape(gateway, "full")
    model = gateway.model_registry.get("penguins")
    view = model.metrics.view()
    assert (
        value(samples, "driftgate_rows_total", model="penguins", version="1", outcome="predicted")
        == view.rows["predicted"]
    )
    assert value(samples, "driftgate_drift_window_rows", model="penguins", version="1") == view.drift_rows
    for name, stats in view.statistics.items():
        if name.startswith("_"):
            got = value(samples, "driftgate_output_drift", model="penguins", version="1", output=name[1:])
        else:
            got = value(samples, "driftgate_feature_drift", model="penguins", version="1", feature=name)
        assert got == pytest.approx(stats["psi"], rel=1e-12)
    segment = view.drift.segments[0]
    bins = [
        value(samples, "driftgate_drift_bin_count", model="penguins", version="1", feature=segment.name, bin=str(b))
        for b in range(segment.size)
    ]
    assert bins == view.live_counts(segment).tolist()


def test_the_coarse_latency_buckets_are_the_fine_ones_at_their_bounds(gateway: Gateway) -> None:
    _, coarse = scrape(gateway, "standard")
    _, fine = scrape(gateway, "detailed")
    for bound in STANDARD_LATENCY_BUCKETS:
        labels = {"model": "penguins", "stage": "infer", "le": repr(bound)}
        assert value(coarse, "driftgate_request_seconds_bucket", **labels) == value(
            fine, "driftgate_request_seconds_bucket", **labels
        )
    count = value(fine, "driftgate_request_seconds_count", model="penguins", stage="infer")
    assert count > 0 and value(coarse, "driftgate_request_seconds_count", model="penguins", stage="infer") == count


def test_levels_are_per_model(gateway: Gateway) -> None:
    _, samples = scrape(gateway, "penguins=full,*=standard")
    assert "driftgate_drift_bin_count" in per_model(samples, "penguins")
    assert "driftgate_drift_bin_count" not in per_model(samples, "diabetes")


def test_a_version_whose_counts_did_not_move_is_written_the_same_and_one_that_moved_is_not(gateway: Gateway) -> None:
    first, _ = scrape(gateway, "standard")
    assert scrape(gateway, "standard")[0] == first
    model = gateway.model_registry.get("diabetes")
    before = model.metrics.rows["predicted"]
    send(model, gateway, 3, seed=9)
    _, samples = scrape(gateway, "standard")
    assert (
        value(samples, "driftgate_rows_total", model="diabetes", version="1", outcome="predicted") == before + 6
    )  # 3 rows, then each again alone


@pytest.mark.parametrize(
    ("text", "levels"),
    [("", {}), ("full", {"*": "full"}), ("fraud=full, *=detailed", {"fraud": "full", "*": "detailed"})],
)
def test_metrics_detail_parses(text: str, levels: dict[str, str]) -> None:
    assert parse_metrics_detail(text) == levels


@pytest.mark.parametrize("text", ["everything", "fraud=", "fraud=loud", "a b=full"])
def test_a_bad_metrics_detail_is_a_config_error_naming_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="DRIFTGATE_METRICS_DETAIL"):
        load_settings({"DRIFTGATE_METRICS_DETAIL": text})


def test_the_serve_flag_is_repeatable_and_reaches_the_setting() -> None:
    from gateway.cli import build_parser

    args = build_parser().parse_args(["serve", "--metrics-detail", "detailed", "--metrics-detail", "fraud=full"])
    settings = load_settings({}, metrics_detail=",".join(args.metrics_detail))
    assert parse_metrics_detail(settings.metrics_detail) == {"*": "detailed", "fraud": "full"}
    assert load_settings({}).metrics_detail == "standard"


def test_concurrent_scrapes_share_one_build_off_the_event_loop() -> None:
    builds: list[int] = []
    switch_during: list[float] = []

    def build() -> bytes:
        builds.append(threading.get_ident())
        switch_during.append(sys.getswitchinterval())
        time.sleep(0.05)
        return b"text"

    shared = SharedBuild(build, spacing=0.0)
    before = sys.getswitchinterval()

    async def scrapes() -> tuple[list[bytes], int]:
        loop_thread = threading.get_ident()
        results = await asyncio.gather(*(shared.get() for _ in range(5)))
        later = await shared.get()  # after the first build: a build of its own
        return [*results, later], loop_thread

    results, loop_thread = asyncio.run(scrapes())
    assert results == [b"text"] * 6
    assert len(builds) == 2 and loop_thread not in builds
    assert all(s < before for s in switch_during) and sys.getswitchinterval() == before


def test_scrapes_in_a_tight_loop_are_spaced_by_what_a_build_costs() -> None:
    def build() -> bytes:
        time.sleep(0.02)
        return b"x"

    shared = SharedBuild(build, spacing=4.0)

    async def loop() -> float:
        t0 = time.perf_counter()
        for _ in range(4):
            await shared.get()
        return time.perf_counter() - t0

    took = asyncio.run(loop())
    # four builds of 20 ms, each after the first waiting 4 x 20 ms: building is a fifth of the time
    assert shared.builds == 4 and took >= 4 * 0.02 + 3 * 0.08 * 0.9


def test_render_metrics_serves_a_gateway(gateway: Gateway) -> None:
    text = asyncio.run(render_metrics(gateway)).decode()
    assert "driftgate_ready 1.0" in text and 'driftgate_feature_drift{model="penguins"' in text


# --- instruments: restore is all or nothing ----------------------------------------------


def test_a_state_of_another_layout_is_refused_and_changes_nothing(gateway: Gateway) -> None:
    penguins, diabetes = (gateway.model_registry.get(n) for n in ("penguins", "diabetes"))
    target = ModelMetrics(penguins.spec, "penguins", 1)
    target.rows["predicted"] = 7
    with pytest.raises(StateMismatchError, match="violations"):
        target.restore(diabetes.metrics.export())
    assert target.rows["predicted"] == 7  # the counters that would have fitted were not taken either
    hist = BatchHistogram((0.5, 1.0))
    hist.observe(0.7)
    with pytest.raises(StateMismatchError):
        hist.restore(BatchHistogram((1.0,)).export())
    assert hist.counts.tolist() == [0, 1, 0]


def test_a_state_of_the_same_layout_is_taken_over_whole(gateway: Gateway) -> None:
    penguins = gateway.model_registry.get("penguins")
    state = penguins.metrics.export()
    copy = ModelMetrics(penguins.spec, "penguins", 1)
    copy.restore(state)
    again = copy.export()
    assert again.rows == state.rows and again.marks == state.marks
    np.testing.assert_array_equal(again.drift.total, state.drift.total)
    np.testing.assert_array_equal(again.violations, state.violations)


class _Inheriting:
    def __init__(self, state: Any) -> None:
        self.state = state

    def inherit(self, model: str, version: str) -> tuple[Any, float]:
        return self.state, 0.0


def test_a_predecessor_state_that_does_not_fit_is_logged_as_an_error(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    penguins, diabetes = (gateway.model_registry.get(n) for n in ("penguins", "diabetes"))
    with caplog.at_level(logging.ERROR, logger="driftgate.metrics"):
        metrics = ModelMetrics(penguins.spec, "penguins", 1, fleet=_Inheriting(diabetes.metrics.export()))
    assert metrics.rows["predicted"] == 0
    assert any("does not fit" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_build_thread_gives_way_to_the_event_loop() -> None:
    """It runs at a lower priority (nice) than the loop's thread, which keeps its own."""
    import os
    import threading

    from gateway.monitoring.exposition import BUILD_NICE, SharedBuild

    def build() -> bytes:
        return str(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).encode()

    async def scrape() -> bytes:
        return await SharedBuild(build).get()

    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert int(asyncio.run(scrape())) == max(BUILD_NICE, loop_nice) > 0
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice
