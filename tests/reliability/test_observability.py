"""Reliability catalogue F (observability under failure), against the real server process.

Each test names its catalogue ID (``tests/reliability/CATALOGUE.md``).
Metrics are read with prometheus_client's own parser. The contract's counters:
``driftgate_rows_total{model,version,outcome}``, ``driftgate_requests_total{model,reason}``
(every V1 predict / V2 infer request once, reason from a closed set, ``model`` a served
name or ``_unknown``), ``driftgate_nonfinite_observations_total{model,version}``.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from onnx import TensorProto, helper

from gateway.spec import FeatureSpec, encode_spec
from tests.helpers.metrics import scrape
from tests.integration.support import (
    ADMIN_TOKEN,
    DIABETES_ROW,
    PENGUINS_MODEL,
    PENGUINS_SPEC,
    V2_ROW,
    admin,
    assert_problem,
    bundle,
    copy_models,
    penguin,
)
from tests.reliability.conftest import ServerProcess, StartServer, server_pid
from tests.reliability.fixture_models import IR_VERSION, OPSET, knob_spec_bytes, nan_model

PREDICT = "/v1/models/penguins:predict"
INFER = "/v2/models/penguins/infer"
REQUEST_REASONS = {
    "ok",
    "rejected",
    "malformed",
    "too_large",
    "not_found",
    "not_ready",
    "overloaded",
    "timeout",
    "canceled",
    "failed",
}
Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def family(metrics: Metrics, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in metrics.items() if n == name}


# --- F1: counters reconcile with what was sent ---------------------------------------------

MAX_ROWS = 10


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("f1")
    env = {"DRIFTGATE_MAX_BATCH_ROWS": str(MAX_ROWS), "DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    proc = ServerProcess(work / "run", copy_models(work / "models"), env=env).start()
    yield proc
    proc.stop()


def _mixed_run(c: httpx.Client) -> tuple[dict[tuple[str, str], int], dict[str, tuple[int, int]]]:
    """Send a known mix; return the expected request counts by (model, reason) and the
    expected (predicted, rejected) rows by model."""
    requests: dict[tuple[str, str], int] = {}
    rows = {"penguins": [0, 0], "diabetes": [0, 0]}

    def sent(model: str, reason: str, response: httpx.Response, status: int) -> None:
        assert response.status_code == status, response.text[:300]
        requests[(model, reason)] = requests.get((model, reason), 0) + 1

    for n in (1, 2, 3):
        sent("penguins", "ok", c.post(PREDICT, json={"instances": [penguin()] * n}), 200)
        rows["penguins"][0] += n
    for _ in range(2):
        sent("penguins", "ok", c.post(INFER, json={"inputs": V2_ROW}), 200)
        rows["penguins"][0] += 1
    for bad in ([penguin(island="Mars")], [penguin(), penguin(year=1900), penguin()]):
        sent("penguins", "rejected", c.post(PREDICT, json={"instances": bad}), 422)
        rows["penguins"][1] += len(bad)  # a refused request refuses every row it holds
    sent("penguins", "rejected", c.post(INFER, json={"inputs": [t for t in V2_ROW if t["name"] != "island"]}), 422)
    rows["penguins"][1] += 1
    for body in (b"{not json", b'{"instances": []}', b'{"instances": [{"year": 2008}], "instances": []}'):
        sent("penguins", "malformed", c.post(PREDICT, content=body, headers={"content-type": "application/json"}), 400)
    sent(
        "penguins",
        "malformed",
        c.post(INFER, json={"inputs": [{"name": "year", "datatype": "FP8", "shape": [1], "data": [1]}]}),
        400,
    )
    sent("penguins", "too_large", c.post(PREDICT, json={"instances": [penguin()] * (MAX_ROWS + 1)}), 413)
    for _ in range(2):
        sent("diabetes", "ok", c.post("/v1/models/diabetes:predict", json={"instances": [DIABETES_ROW]}), 200)
        rows["diabetes"][0] += 1
    sent(
        "diabetes",
        "rejected",
        c.post("/v1/models/diabetes:predict", json={"instances": [{**DIABETES_ROW, "bmi": 9.0}]}),
        422,
    )
    rows["diabetes"][1] += 1
    sent("_unknown", "not_found", c.post("/v1/models/no-such-model:predict", json={"instances": [penguin()]}), 404)
    sent("_unknown", "not_found", c.post("/v2/models/no-such-model/infer", json={"inputs": V2_ROW}), 404)
    return requests, {m: (p, r) for m, (p, r) in rows.items()}


def test_f1_row_counters_reconcile_per_model(small: ServerProcess) -> None:
    with small.client() as c:
        before = scrape(c)
        _, rows = _mixed_run(c)
        after = scrape(c)
    for model, (predicted, rejected) in rows.items():
        labels = {"model": model, "version": "1"}
        got = tuple(
            value(after, "driftgate_rows_total", **labels, outcome=o)
            - value(before, "driftgate_rows_total", **labels, outcome=o)
            for o in ("predicted", "rejected")
        )
        assert got == (predicted, rejected), model


def test_f1_requests_total_reconciles_per_model_and_reason(small: ServerProcess) -> None:
    with small.client() as c:
        before = family(scrape(c), "driftgate_requests_total")
        expected, _ = _mixed_run(c)
        after = family(scrape(c), "driftgate_requests_total")
    deltas = {}
    for labels, v in after.items():
        d = v - before.get(labels, 0.0)
        if d:
            key = dict(labels)
            deltas[(key["model"], key["reason"])] = d
    assert deltas == expected
    assert {dict(labels)["reason"] for labels in after} <= REQUEST_REASONS
    assert {dict(labels)["model"] for labels in after} <= {"penguins", "diabetes", "_unknown"}


# --- F4: counters across a swap and a restart ------------------------------------------------


@pytest.mark.slow
def test_f4_counters_survive_a_swap_and_restart_from_zero(start_server: StartServer, tmp_path: Path) -> None:
    repository = copy_models(tmp_path / "repo")
    proc = start_server(repository=repository, env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    v1 = {"model": "penguins", "version": "1", "outcome": "predicted"}
    v2 = {**v1, "version": "2"}
    with proc.client() as c:
        for _ in range(3):
            assert c.post(PREDICT, json={"instances": [penguin()]}).status_code == 200
        assert value(scrape(c), "driftgate_rows_total", **v1) == 3
        registered = c.put(
            "/v1/models/penguins/versions/2",
            files=bundle(PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes()),
            headers=admin(),
        )
        assert registered.status_code == 201, registered.text
        for _ in range(2):
            assert c.post(PREDICT, json={"instances": [penguin()]}).json()["model_version"] == "2"
        metrics = scrape(c)
    assert value(metrics, "driftgate_rows_total", **v1) == 3, "the swap reset version 1's counter"
    assert value(metrics, "driftgate_rows_total", **v2) == 2
    assert value(metrics, "driftgate_model_loaded", model="penguins", version="1") == 1
    assert value(metrics, "driftgate_model_loaded", model="penguins", version="2") == 1
    assert proc.stop().exit_code == 0

    again = start_server(repository=repository)
    with again.client() as c:
        metrics = scrape(c)
        assert value(metrics, "driftgate_rows_total", **v1) == 0 and value(metrics, "driftgate_rows_total", **v2) == 0
        assert value(metrics, "driftgate_model_loaded", model="penguins", version="2") == 1, (
            "the registered version persists"
        )
        assert c.post(PREDICT, json={"instances": [penguin()]}).json()["model_version"] == "2"
        assert value(scrape(c), "driftgate_rows_total", **v2) == 1


# --- F6: NaN never reaches a histogram -----------------------------------------------------


def nan_classifier() -> bytes:
    """Two classes, probabilities ``X / X * 0.5`` each: NaN at ``x = 0``."""
    nodes = [
        helper.make_node("Div", ["X", "X"], ["D"]),
        helper.make_node("Mul", ["D", "half"], ["H"]),
        helper.make_node("Concat", ["H", "H"], ["P"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "nan-classifier",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("P", TensorProto.FLOAT, ["N", 2])],
        initializer=[helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def nan_classifier_spec() -> bytes:
    xs = [i / 40 for i in range(1, 41)]
    spec = FeatureSpec.fit(
        {"x": xs, "y": ["a" if i % 2 else "b" for i in range(40)]},
        name="nancls",
        target="y",
        transforms={"x": "passthrough"},
    )
    return encode_spec(spec)


def test_f6_nan_outputs_never_reach_a_histogram_sum(server: ServerProcess) -> None:
    with server.client() as c:
        for name, model, spec in (
            ("nanreg", nan_model(), knob_spec_bytes("nanreg")),
            ("nancls", nan_classifier(), nan_classifier_spec()),
        ):
            response = c.put(f"/v1/models/{name}/versions/1", files=bundle(model, spec), headers=admin())
            assert response.status_code == 201, response.text
            assert c.post(f"/v1/models/{name}:predict", json={"instances": [{"x": 0.5}]}).status_code == 200
        before = scrape(c)
        for name in ("nanreg", "nancls"):
            assert_problem(c.post(f"/v1/models/{name}:predict", json={"instances": [{"x": 0.0}] * 3}), 500)
            assert_problem(
                c.post(
                    f"/v2/models/{name}/infer",
                    json={"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [0.0]}]},
                ),
                500,
            )
        after = scrape(c)
    sums = {k: v for k, v in after.items() if k[0].endswith("_sum")}
    assert sums and all(math.isfinite(v) for v in sums.values()), [k for k, v in sums.items() if not math.isfinite(v)]
    for name in ("nanreg", "nancls"):
        labels = {"model": name, "version": "1"}
        nonfinite = value(after, "driftgate_nonfinite_observations_total", **labels) - value(
            before, "driftgate_nonfinite_observations_total", **labels
        )
        assert nonfinite == 4, f"{name}: {nonfinite} non-finite outputs counted for 4 NaN rows (3 + 1)"
        for hist in ("driftgate_confidence_count", "driftgate_prediction_value_count"):
            assert value(after, hist, **labels) == value(before, hist, **labels), (
                f"{name}: a NaN answer was observed in {hist}"
            )
        rows = {**labels, "outcome": "predicted"}
        assert value(after, "driftgate_rows_total", **rows) == value(before, "driftgate_rows_total", **rows)
        assert (
            value(after, "driftgate_requests_total", model=name, reason="failed")
            - value(before, "driftgate_requests_total", model=name, reason="failed")
            == 2
        )


# --- F7: bounded windows under many predictions --------------------------------------------

STORE = 1024
WINDOW = 100
BATCH = 4096


@pytest.mark.slow
def test_f7_windows_stay_bounded_and_late_feedback_is_expired(start_server: StartServer) -> None:
    """About 100 times the prediction store's capacity (100k rows) with a 100-row drift
    window: the window stays at its cap, RSS stays flat, and feedback for the oldest ids is
    counted ``expired`` while the newest still join."""
    proc = start_server(env={"DRIFTGATE_PREDICTION_STORE_SIZE": str(STORE), "DRIFTGATE_DRIFT_WINDOW_ROWS": str(WINDOW)})
    rows = [dict(t, shape=[BATCH], data=t["data"] * BATCH) for t in V2_ROW]
    with proc.client() as c:

        def batch(ids: bool) -> list[str]:
            outputs = [{"name": "id"}] if ids else [{"name": "confidence", "parameters": {"binary_data": True}}]
            response = c.post(INFER, json={"inputs": rows, "outputs": outputs})
            assert response.status_code == 200, response.text[:300]
            return next(o["data"] for o in response.json()["outputs"]) if ids else []

        oldest = batch(ids=True)[:10]
        rss = psutil.Process(server_pid(proc)).memory_info().rss
        for _ in range(23):
            batch(ids=False)
        newest = batch(ids=True)[-10:]
        grown = psutil.Process(server_pid(proc)).memory_info().rss - rss
        feedback = [{"id": i, "label": "Gentoo"} for i in oldest + newest]
        result = c.post("/v1/models/penguins/feedback", json={"feedback": feedback}).json()
        metrics = scrape(c)
    assert (result["expired"], result["matched"], result["unknown_id"]) == (10, 10, 0), result
    assert value(metrics, "driftgate_rows_total", model="penguins", version="1", outcome="predicted") == 25 * BATCH
    assert value(metrics, "driftgate_drift_window_rows", model="penguins", version="1") <= WINDOW
    assert value(metrics, "driftgate_feedback_total", model="penguins", version="1", outcome="expired") == 10
    assert grown < 20 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB over 96k predictions"


# --- F8: the readiness state walk ------------------------------------------------------------


def _probe(url: str) -> tuple[int, int]:
    with httpx.Client(base_url=url, timeout=2) as c:
        return c.get("/v2/health/live").status_code, c.get("/v2/health/ready").status_code


@pytest.mark.slow
def test_f8_live_at_once_ready_only_after_the_initial_load(start_server: StartServer, tmp_path: Path) -> None:
    repository = copy_models(tmp_path / "repo")
    for v in range(2, 41):  # forty versions to load and warm: long enough to be seen loading
        shutil.copytree(repository / "penguins" / "1", repository / "penguins" / str(v))
    proc = start_server(repository=repository, wait=False)
    proc.wait_listening()
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen.append(_probe(proc.url))
        if seen[-1][1] == 200:
            break
        time.sleep(0.01)
    assert all(live == 200 for live, _ in seen), seen
    assert seen[0][1] == 503, "ready before the initial load finished"
    assert seen[-1][1] == 200, "never ready"
    assert {ready for _, ready in seen} <= {200, 503}
    with proc.client() as c:
        assert c.get("/v2/models/penguins/versions/40/ready").status_code == 200


def test_f8_ready_is_503_with_zero_models(start_server: StartServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = start_server(repository=empty, wait=False)
    proc.wait_listening()
    time.sleep(1.0)
    live, ready = _probe(proc.url)
    assert live == 200
    assert ready == 503


def test_f8_ready_stays_up_through_reload_failure_and_unload(server: ServerProcess) -> None:
    """A ready model being swapped keeps readiness 200 throughout; a refused bundle changes
    nothing; an unloaded model's own readiness is 404 while the server stays ready."""
    statuses: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as c:
            while not stop.is_set():
                statuses.append(c.get("/v2/health/ready").status_code)
                time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        with server.client() as c:
            ok = c.put(
                "/v1/models/penguins/versions/7",
                files=bundle(PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes()),
                headers=admin(),
            )
            assert ok.status_code == 201, ok.text
            refused = c.put(
                "/v1/models/penguins/versions/8", files=bundle(b"garbage", PENGUINS_SPEC.read_bytes()), headers=admin()
            )
            assert refused.status_code == 422
            assert c.get("/v2/models/penguins/versions/7/ready").status_code == 200
            assert c.get("/v2/models/penguins/versions/8/ready").status_code == 404
            assert c.post("/v2/repository/models/diabetes/unload", headers=admin()).status_code == 200
            assert c.get("/v2/models/diabetes/ready").status_code == 404
            assert c.post("/v1/models/diabetes:predict", json={"instances": [DIABETES_ROW]}).status_code == 404
            assert c.post("/v2/repository/models/diabetes/load", headers=admin()).status_code == 200
            assert c.get("/v2/models/diabetes/ready").status_code == 200
            metrics = scrape(c)
    finally:
        stop.set()
        poller.join()
    assert statuses and set(statuses) == {200}, f"readiness flapped: {sorted(set(statuses))}"
    assert value(metrics, "driftgate_ready") == 1


def test_f8_a_version_that_fails_to_load_does_not_hold_readiness(start_server: StartServer, tmp_path: Path) -> None:
    repository = copy_models(tmp_path / "repo")
    broken = repository / "penguins" / "2"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    (broken / "spec.yaml").write_bytes(PENGUINS_SPEC.read_bytes())
    proc = start_server(repository=repository)
    with proc.client() as c:
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get("/v2/models/penguins/versions/2/ready").status_code == 404
        assert c.post(PREDICT, json={"instances": [penguin()]}).json()["model_version"] == "1"
        metrics = scrape(c)
    assert value(metrics, "driftgate_model_loaded", model="penguins", version="2") == 0
    assert value(metrics, "driftgate_model_loaded", model="penguins", version="1") == 1


# --- F9: the start-up line with the effective limits -----------------------------------------


def test_f9_startup_logs_the_effective_limits(start_server: StartServer) -> None:
    proc = start_server(env={"DRIFTGATE_MAX_BODY_BYTES": "123456", "DRIFTGATE_MAX_BATCH_ROWS": "77"})
    lines = [line for line in proc.stderr.splitlines() if "123456" in line and "77" in line]
    assert lines, "no line names max_body_bytes=123456 and max_batch_rows=77"
    line = lines[0]
    for word in ("concurrency", "timeout", "onnxruntime", "litestar"):
        assert word in line, word
