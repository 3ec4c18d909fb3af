"""Reliability catalogue, section D: reload and registration races (plus B7's "deleted
while serving"). Each test names its catalogue ID.

The models are the knob fixtures (``fixture_models``): ``linear_model(scale)`` answers
``scale * x``, so every answer proves which model bytes produced it, not only which
version number the server claims.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import StartServer
from tests.integration.support import ADMIN_TOKEN, PENGUINS_SPEC, admin, assert_problem, bundle
from tests.reliability.fixture_models import (
    assert_alive,
    knob_predict,
    knob_repository,
    knob_spec_bytes,
    linear_model,
    padded_model,
    slow_model,
    write_version,
)

TOKEN_ENV = {"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN}
SCALES = {"1": 2.0, "2": 3.0, "3": 4.0}
"""Version -> scale of the linear model registered as that version."""


def _register(url: str, name: str, version: str, model: bytes, spec: bytes | None = None) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.put(
            f"/v1/models/{name}/versions/{version}", files=bundle(model, spec or knob_spec_bytes(name)), headers=admin()
        )


def _served_versions(client: httpx.Client, name: str = "knob") -> list[str]:
    response = client.get(f"/v1/models/{name}")
    assert response.status_code == 200, response.text
    return list(response.json()["versions"])


# --- D1: swap under load -------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    thread: int
    started: float
    status: int
    version: str | None
    value: float | None
    error: str | None = None


def test_d1_swap_under_load_fails_no_request_and_each_client_switches_once(
    start_server: StartServer, tmp_path: Path
) -> None:
    """D1: 6 clients predict non-stop while versions 2 and 3 are registered by PUT. Zero
    non-200; every answer's version is 1, 2 or 3 and its value is that version's model's
    (never a new version number with old bytes); each client's versions never go back;
    readiness stays 200 throughout."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env=TOKEN_ENV)
    pid = proc.process.pid  # type: ignore[union-attr]
    threads, warm, deadline = 6, 60, time.monotonic() + 25
    answers: list[Answer] = []
    readiness: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(thread: int) -> None:
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            for i in range(3000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                started = time.monotonic()
                try:
                    r = knob_predict(client, 0.25 + (i % 3) * 0.25)
                    body = r.json() if r.status_code == 200 else {}
                    value = body["predictions"][0]["value"] / ((i % 3) * 0.25 + 0.25) if body else None
                    answer = Answer(thread, started, r.status_code, body.get("model_version"), value)
                except Exception as exc:  # noqa: BLE001 - recorded and asserted on
                    answer = Answer(thread, started, 0, None, None, repr(exc))
                with lock:
                    answers.append(answer)

    def probe() -> None:
        with httpx.Client(base_url=proc.url, timeout=5) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                readiness.append(client.get("/v2/health/ready").status_code)
                time.sleep(0.02)

    workers = [threading.Thread(target=load, args=(i,)) for i in range(threads)] + [threading.Thread(target=probe)]
    for t in workers:
        t.start()
    registered = []
    try:
        for version in ("2", "3"):
            target = len(answers) + warm
            while len(answers) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            registered.append(_register(proc.url, "knob", version, linear_model(SCALES[version])))
        target = len(answers) + warm
        while len(answers) < target and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=15)

    assert [r.status_code for r in registered] == [201, 201], [r.text for r in registered]
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[:3]}"
    assert {a.version for a in answers} == {"1", "2", "3"}
    wrong = [a for a in answers if a.value is None or abs(a.value - SCALES[a.version or ""]) > 1e-4]
    assert not wrong, f"answers whose value is not their version's model: {wrong[:3]}"
    for thread in range(threads):
        own = [int(a.version or 0) for a in sorted(answers, key=lambda a: a.started) if a.thread == thread]
        assert own == sorted(own), f"client {thread} flapped between versions"
        switches = sum(1 for x, y in itertools.pairwise(own) if x != y)
        assert switches <= 2, f"client {thread} switched {switches} times for two swaps"
    assert readiness and set(readiness) == {200}, f"readiness during the swaps: {sorted(set(readiness))}"
    assert_alive(proc.url, proc.process, pid)


# --- D2 (lite): concurrent registration of one version ------------------------------------


def test_d2_concurrent_registration_of_one_version_has_one_winner(start_server: StartServer, tmp_path: Path) -> None:
    """D2 (lite: 8 threads, once): two different bundles PUT as version 2 at the same time.
    Exactly one 201, every other answer 409; the served version 2 is the winner's bytes."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env=TOKEN_ENV)
    scales = [3.0 if i % 2 else 5.0 for i in range(8)]
    results: list[tuple[float, int]] = []
    barrier = threading.Barrier(len(scales))

    def put(scale: float) -> None:
        barrier.wait(timeout=10)
        results.append((scale, _register(proc.url, "knob", "2", linear_model(scale)).status_code))

    workers = [threading.Thread(target=put, args=(s,)) for s in scales]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=30)
    statuses = sorted(status for _, status in results)
    assert statuses == [201] + [409] * (len(scales) - 1), statuses
    winner = next(scale for scale, status in results if status == 201)
    with proc.client() as client:
        answer = knob_predict(client, 1.0, version="2")
        assert answer.status_code == 200 and answer.json()["predictions"][0]["value"] == pytest.approx(winner)
        assert _served_versions(client) == ["1", "2"]
        assert client.get("/v2/health/ready").status_code == 200
    assert sorted(p.name for p in (proc.repository / "knob").iterdir()) == ["1", "2"]
    assert not list((proc.repository / ".staging").glob("*")), "staging left behind"


# --- D3: unload with a request in flight ---------------------------------------------------


def test_d3_unload_lets_the_request_in_flight_finish_then_404(start_server: StartServer, tmp_path: Path) -> None:
    """D3: a ~1 s inference is in flight when the model is unloaded. It completes with
    200; afterwards the model answers 404 problem+json on V1 (default and pinned) and V2."""
    proc = start_server(repository=knob_repository(tmp_path / "repo", {"knob": slow_model()}), env=TOKEN_ENV)
    result: dict[str, httpx.Response] = {}

    def slow() -> None:
        with proc.client() as client:
            result["slow"] = knob_predict(client, 1536.0)

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.15)  # the slow request has been read and is running
    with proc.client() as client:
        unloaded = client.post("/v2/repository/models/knob/unload", headers=admin())
        worker.join(timeout=30)
        assert unloaded.status_code == 200, unloaded.text
        assert result["slow"].status_code == 200, result["slow"].text
        assert result["slow"].json()["predictions"][0]["value"] == pytest.approx(1536.0)
        assert_problem(knob_predict(client, 0.5), 404)
        assert_problem(knob_predict(client, 0.5, version="1"), 404)
        infer = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.5]}]}
        assert_problem(client.post("/v2/models/knob/infer", json=infer), 404)
    assert_alive(proc.url, proc.process)


# --- D4: a slow writer in the watched repository ------------------------------------------


def _slow_write(path: Path, data: bytes, seconds: float, chunks: int = 30) -> None:
    step = len(data) // chunks + 1
    with open(path, "wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i : i + step])
            fh.flush()
            time.sleep(seconds / chunks)


def _watch_during(proc_url: str, seconds: float, answers: list[tuple[int, str | None]]) -> None:
    end = time.monotonic() + seconds
    with httpx.Client(base_url=proc_url, timeout=10) as client:
        while time.monotonic() < end:
            r = knob_predict(client, 0.5)
            answers.append((r.status_code, r.json().get("model_version") if r.status_code == 200 else None))
            time.sleep(0.02)


def _wait_for_version(client: httpx.Client, version: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = knob_predict(client, 0.5)
        if r.status_code == 200 and r.json()["model_version"] == version:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_d4_model_written_slowly_before_its_spec_is_loaded_only_whole(
    start_server: StartServer, tmp_path: Path
) -> None:
    """D4: ``model.onnx`` (3 MiB) is written over ~2 s into a new version folder of the
    watched repository, the spec last. Version 1 answers every request meanwhile; the
    complete version 2 is served afterwards, and no load failure is recorded."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env={"DRIFTGATE_WATCH_INTERVAL": "0.1"})
    folder = proc.repository / "knob" / "2"
    folder.mkdir()
    answers: list[tuple[int, str | None]] = []
    watcher = threading.Thread(target=_watch_during, args=(proc.url, 2.5, answers))
    watcher.start()
    _slow_write(folder / "model.onnx", padded_model(3.0, 3), 2.0)
    (folder / "spec.yaml").write_bytes(knob_spec_bytes())
    watcher.join(timeout=20)
    with proc.client() as client:
        assert _wait_for_version(client, "2", 5.0), "the complete version 2 was never served"
        assert client.get("/v1/models").json()["failed"] == []
        assert knob_predict(client, 1.0).json()["predictions"][0]["value"] == pytest.approx(3.0)
    assert answers and all(status == 200 for status, _ in answers), answers[:5]
    assert {v for _, v in answers} <= {"1", "2"}
    assert_alive(proc.url, proc.process)


@pytest.mark.slow
def test_d4_half_written_model_is_never_loaded_and_loads_once_complete(
    start_server: StartServer, tmp_path: Path
) -> None:
    """D4: the spec is in place first and ``model.onnx`` (3 MiB) is written over ~2 s (as
    ``cp`` or a slow network copy would). The half-written file must never be loaded or
    counted as a failed model; version 1 answers every request meanwhile; once the file is
    complete, version 2 is served."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env={"DRIFTGATE_WATCH_INTERVAL": "0.1"})
    folder = proc.repository / "knob" / "2"
    folder.mkdir()
    (folder / "spec.yaml").write_bytes(knob_spec_bytes())
    answers: list[tuple[int, str | None]] = []
    watcher = threading.Thread(target=_watch_during, args=(proc.url, 2.5, answers))
    watcher.start()
    _slow_write(folder / "model.onnx", padded_model(3.0, 3), 2.0)
    watcher.join(timeout=20)
    assert answers and all(status == 200 for status, _ in answers), answers[:5]
    assert {v for _, v in answers} <= {"1", "2"}
    assert_alive(proc.url, proc.process)
    with proc.client() as client:
        served = _wait_for_version(client, "2", 5.0)
        failed = client.get("/v1/models").json()["failed"]
    assert served, f"the complete version 2 was never served; recorded failures: {failed}"
    assert failed == []


# --- D5: a bundle changes as one, or not at all --------------------------------------------


@pytest.mark.slow
def test_d5_editing_a_served_version_on_disk_never_mixes_model_and_spec(
    start_server: StartServer, tmp_path: Path
) -> None:
    """D5: the model alone, then the spec alone, of served version 1 are replaced on disk.
    Versions are immutable: the server keeps answering with the bundle it loaded (same
    values, same spec digest), never a new model with the old spec or the reverse."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env={"DRIFTGATE_WATCH_INTERVAL": "0.1"})
    folder = proc.repository / "knob" / "1"
    with proc.client() as client:
        digest = client.get("/v1/models/knob").json()["spec_digest"]
        (folder / "model.onnx.tmp").write_bytes(linear_model(7.0))
        (folder / "model.onnx.tmp").replace(folder / "model.onnx")
        time.sleep(0.5)  # five watch intervals
        first = knob_predict(client, 1.0)
        other_spec = knob_spec_bytes().replace(b"max: 1.0", b"max: 50.0")
        assert other_spec != knob_spec_bytes()
        (folder / "spec.yaml").write_bytes(other_spec)
        time.sleep(0.5)
        second = knob_predict(client, 1.0)
        described = client.get("/v1/models/knob").json()
    for answer in (first, second):
        assert answer.status_code == 200 and answer.json()["predictions"][0]["value"] == pytest.approx(2.0)
    assert described["spec_digest"] == digest and described["versions"] == ["1"]


def test_d5_bundle_whose_spec_names_features_the_model_lacks_is_refused_whole(
    start_server: StartServer, tmp_path: Path
) -> None:
    """D5: a knob model registered with the penguins spec (features it does not take) is
    refused 422 as one bundle: nothing written, version 1 still the default."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env=TOKEN_ENV)
    refused = _register(proc.url, "knob", "2", linear_model(3.0), PENGUINS_SPEC.read_bytes())
    assert_problem(refused, 422)
    assert not (proc.repository / "knob" / "2").exists()
    with proc.client() as client:
        assert _served_versions(client) == ["1"]
        assert knob_predict(client, 1.0).json()["predictions"][0]["value"] == pytest.approx(2.0)


# --- D6: version names ---------------------------------------------------------------------


def test_d6_only_canonical_version_folders_are_served(start_server: StartServer, tmp_path: Path) -> None:
    """D6: folders ``1``, ``2``, ``02``, ``1.5``, ``-1``, ``abc``, ``"3 "`` and ``0`` each hold a
    valid bundle. Only 1 and 2 become versions (default 2); the others are not served,
    not even pinned."""
    repository = knob_repository(tmp_path / "repo")
    for version, scale in (("2", 3.0), ("02", 9.0), ("1.5", 9.0), ("-1", 9.0), ("abc", 9.0), ("3 ", 9.0), ("0", 9.0)):
        write_version(repository, "knob", version, linear_model(scale), knob_spec_bytes())
    proc = start_server(repository=repository)
    with proc.client() as client:
        assert _served_versions(client) == ["1", "2"]
        assert client.get("/v1/models").json()["failed"] == []
        default = knob_predict(client, 1.0)
        assert default.json()["model_version"] == "2"
        assert default.json()["predictions"][0]["value"] == pytest.approx(3.0)
        for pinned in ("02", "1.5", "-1", "abc", "3%20", "0"):
            assert_problem(
                client.post(f"/v1/models/knob/versions/{pinned}:predict", json={"instances": [{"x": 1}]}), 404
            )


def test_d6_registration_refuses_noncanonical_and_existing_versions(start_server: StartServer, tmp_path: Path) -> None:
    """D6: PUT of versions ``02``, ``1.5``, ``-1``, ``abc``, ``0`` → 400; PUT of the existing
    version 1 with other bytes → 409. Nothing is written; version 1 is unchanged."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env=TOKEN_ENV)
    before = sorted(p.name for p in (proc.repository / "knob").iterdir())
    for bad in ("02", "1.5", "-1", "abc", "0"):
        assert_problem(_register(proc.url, "knob", bad, linear_model(3.0)), 400)
    assert_problem(_register(proc.url, "knob", "1", linear_model(3.0)), 409)
    assert sorted(p.name for p in (proc.repository / "knob").iterdir()) == before
    with proc.client() as client:
        assert _served_versions(client) == ["1"]
        assert knob_predict(client, 1.0).json()["predictions"][0]["value"] == pytest.approx(2.0)


# --- D7 (+B7): version policy: latest by default, pins, unload, files deleted -------------


def test_d7_latest_is_default_pins_stay_and_deleted_files_do_not_stop_serving(
    start_server: StartServer, tmp_path: Path
) -> None:
    """D7: the default follows the highest version at once; pinned versions keep answering
    with their own bytes. B7: deleting a served version's folder from disk does not stop
    it (the session is in memory). Unload → 404 for default and pinned; load → back."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env=TOKEN_ENV)
    with proc.client() as client:
        assert _register(proc.url, "knob", "2", linear_model(3.0)).status_code == 201
        assert knob_predict(client, 1.0).json()["model_version"] == "2"
        assert knob_predict(client, 1.0, version="1").json()["predictions"][0]["value"] == pytest.approx(2.0)
        shutil.rmtree(proc.repository / "knob" / "1")
        for _ in range(3):
            pinned = knob_predict(client, 1.0, version="1")
            assert pinned.status_code == 200 and pinned.json()["predictions"][0]["value"] == pytest.approx(2.0)
        assert client.post("/v2/repository/models/knob/unload", headers=admin()).status_code == 200
        assert_problem(knob_predict(client, 1.0), 404)
        assert_problem(knob_predict(client, 1.0, version="2"), 404)
        assert client.post("/v2/repository/models/knob/load", headers=admin()).status_code == 200
        assert _served_versions(client) == ["2"], "only the version still on disk comes back"
        assert knob_predict(client, 1.0).json()["predictions"][0]["value"] == pytest.approx(3.0)
        assert client.get("/v2/health/ready").status_code == 200


# --- D11: feedback joins the version that predicted ---------------------------------------


def test_d11_feedback_after_a_swap_joins_the_version_that_predicted(start_server: StartServer, tmp_path: Path) -> None:
    """D11: 20 predictions by version 1, then version 2 is registered and makes 10; then
    feedback for all 30 arrives. Each joins the version that made it (window rows 20 and
    10, both exact: MAE 0), and version 1's drift window is not reset by the swap."""
    proc = start_server(repository=knob_repository(tmp_path / "repo"), env=TOKEN_ENV)
    with proc.client() as client:
        v1 = client.post("/v1/models/knob:predict", json={"instances": [{"x": i / 20} for i in range(20)]}).json()
        assert v1["model_version"] == "1"
        assert _register(proc.url, "knob", "2", linear_model(3.0)).status_code == 201
        v2 = client.post("/v1/models/knob:predict", json={"instances": [{"x": i / 10} for i in range(10)]}).json()
        assert v2["model_version"] == "2"
        items = [{"id": p["id"], "value": p["value"]} for p in v1["predictions"] + v2["predictions"]]
        fed = client.post("/v1/models/knob/feedback", json={"feedback": items})
        assert fed.status_code == 200, fed.text
        assert fed.json()["matched"] == 30, fed.json()
        mon1 = client.get("/v1/models/knob/monitor", params={"version": "1"}).json()
        mon2 = client.get("/v1/models/knob/monitor", params={"version": "2"}).json()
    assert mon1["feedback"]["window_rows"] == 20 and mon1["feedback"]["mae"] == pytest.approx(0.0, abs=1e-6)
    assert mon2["feedback"]["window_rows"] == 10 and mon2["feedback"]["mae"] == pytest.approx(0.0, abs=1e-6)
    assert mon1["window"]["rows"] == 20, "the swap reset version 1's drift window"
