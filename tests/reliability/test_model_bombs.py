"""Hostile model files against the real server (catalogue E5, E6, E7, E8).

Memory bombs, external-data references, an unknown operator domain and deep subgraph
nesting, sent every way a model reaches the registry: ``PUT`` registration, ``driftgate
register`` into the watched repository, and the start-up scan. Each is refused with 422
``model-invalid`` and a generic message, nothing is written, ``/v2/health/live`` still
answers, the version served before still answers, and the server's own memory (its peak,
``VmHWM`` in ``/proc/<pid>/status``, reset through ``clear_refs`` where allowed) moves
less than 20 MB: the resource-limited trial child pays for the bomb, not the server.

The fixture models are the unit suite's (``tests/unit/test_model_check.py``).
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers.procfs import reset_peak, status_bytes
from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import (
    PENGUINS_MODEL,
    PENGUINS_SPEC,
    admin,
    assert_problem,
    bundle,
    cli,
    copy_models,
    penguin,
    predict,
    tree,
    version_dirs,
)
from tests.unit.test_model_check import (
    BOMBS,
    EXTERNAL_LOCATIONS,
    bomb_model,
    external_data_model,
    foreign_domain_model,
    nested_if_model,
    unknown_op_model,
)

MB = 1024 * 1024
RSS_SLACK = 20 * MB
BUDGET = "the model exceeds the resource budget for loading (memory)"

HOSTILE = {
    **{f"e7-{name}": (make, BUDGET) for name, make in BOMBS.items()},
    **{
        f"e5-external-{location}": (
            lambda location=location: external_data_model(location, "initializer"),
            "external data",
        )
        for location in EXTERNAL_LOCATIONS
    },
    "e5-external-in-a-subgraph": (lambda: external_data_model("../secret.bin", "subgraph"), "external data"),
    "e6-evil-domain": (lambda: foreign_domain_model("evil.domain", "node"), "evil.domain"),
    "e8-nested-if": (lambda: nested_if_model(30), "nested too deeply"),
}
"""case -> (model bytes, words the problem detail must hold)."""


def _register(client: httpx.Client, version: str, model: bytes) -> httpx.Response:
    return client.put(
        f"/v1/models/penguins/versions/{version}", files=bundle(model, PENGUINS_SPEC.read_bytes()), headers=admin()
    )


def _assert_refused(response: httpx.Response, words: str) -> None:
    body = assert_problem(response, 422)
    assert body["code"] == "model-invalid", body
    assert words in body["detail"], body["detail"]
    for leak in ("/", "secret", "passwd", "ONNXRuntimeError", "onnxruntime_src"):
        assert leak not in body["detail"], body["detail"]


def _assert_serving_version_1(server: ServerProcess, client: httpx.Client) -> None:
    assert server.running
    assert client.get("/v2/health/live").status_code == 200
    answer = predict(client, "penguins", [penguin()])
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "1"


@pytest.fixture(scope="module")
def warm(server: ServerProcess) -> ServerProcess:
    """The server after one refused trial: its registration path, multipart parser and
    trial fork server exist, so what the tests measure is the hostile model alone."""
    with server.client() as client:
        _assert_refused(_register(client, "99", unknown_op_model()), "does not load")
    return server


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_models_by_put_are_refused_and_the_server_stays_flat(warm: ServerProcess, case: str) -> None:
    make, words = HOSTILE[case]
    assert warm.process is not None
    pid = warm.process.pid
    before = version_dirs(warm.repository)
    with warm.client() as client:
        rss = status_bytes(pid, "VmRSS")
        exact = reset_peak(pid) is not None
        response = _register(client, "2", make())
        grew = (status_bytes(pid, "VmHWM") if exact else status_bytes(pid, "VmRSS")) - rss
        _assert_refused(response, words)
        _assert_serving_version_1(warm, client)
        assert "2" not in {v["version"] for v in client.get("/v1/models").json()["failed"]}
    assert grew < RSS_SLACK, f"the server grew by {grew / MB:.1f} MB on {case}"
    assert version_dirs(warm.repository) == before


def test_e7_four_bombs_at_once_are_all_refused_and_the_server_stays_flat(warm: ServerProcess) -> None:
    """The research probe: four bombs together took 1.6 GB of an unprotected process."""
    assert warm.process is not None
    pid = warm.process.pid
    before = version_dirs(warm.repository)
    data = bomb_model(10**8)
    rss = status_bytes(pid, "VmRSS")
    exact = reset_peak(pid) is not None
    with warm.client() as client, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda v: _register(client, str(v), data), range(3, 7)))
        grew = (status_bytes(pid, "VmHWM") if exact else status_bytes(pid, "VmRSS")) - rss
        for response in responses:
            _assert_refused(response, BUDGET)
        _assert_serving_version_1(warm, client)
    assert grew < RSS_SLACK, f"the server grew by {grew / MB:.1f} MB"
    assert version_dirs(warm.repository) == before


def test_driftgate_register_into_the_watched_repository_refuses_a_bomb(warm: ServerProcess, tmp_path: Path) -> None:
    model = tmp_path / "bomb.onnx"
    model.write_bytes(bomb_model(10**8))
    before = tree(warm.repository)
    done = cli("register", "penguins", "--model", model, "--spec", PENGUINS_SPEC, "--version", "30",
               "--repository", warm.repository)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip() == f"driftgate: error: {BUDGET}"
    assert tree(warm.repository) == before
    with warm.client() as client:
        _assert_serving_version_1(warm, client)


def test_the_start_up_scan_refuses_a_bomb_on_disk_and_serves_the_rest(
    start_server: StartServer, tmp_path: Path
) -> None:
    repository = copy_models(tmp_path / "models")
    shutil.copytree(repository / "penguins" / "1", repository / "penguins" / "2")
    (repository / "penguins" / "2" / "model.onnx").write_bytes(bomb_model(2 * 10**8, copies=4))
    proc = start_server(repository=repository)
    assert proc.process is not None
    with proc.client() as client:
        listing = client.get("/v1/models").json()
        assert listing["failed"] == [{"name": "penguins", "version": "2", "reason": BUDGET}]
        served = {m["name"]: m for m in listing["models"]}
        assert served["penguins"]["versions"] == ["1"]
        _assert_serving_version_1(proc, client)
    assert status_bytes(proc.process.pid, "VmHWM") < 1024 * MB, "the server itself never held the 1.6 GB"


def test_a_good_model_still_registers_after_the_bombs(warm: ServerProcess) -> None:
    """Last in the module: version 20 becomes the default."""
    with warm.client() as client:
        response = _register(client, "20", PENGUINS_MODEL.read_bytes())
        assert response.status_code == 201, response.text
        assert predict(client, "penguins", [penguin()], version="20").status_code == 200
