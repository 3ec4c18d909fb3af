"""The separate admin listener (``--admin-port``): the admin endpoints are answered only
there, and there nothing else but the health probes; one process or several workers.
Real server processes on loopback."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from gateway.http.routes import is_admin_route
from gateway.listeners import ADMIN_LISTENING
from tests.helpers.ports import free_port
from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import (
    ADMIN_TOKEN,
    PENGUIN,
    PENGUINS_MODEL,
    PENGUINS_SPEC,
    admin,
    assert_problem,
    bundle,
    cli,
    predict,
)

ADMIN_LINE = re.compile(ADMIN_LISTENING.replace("%s", r"([^:\s]+)").replace("%d", r"(\d+)"))
V2_ROW = {
    "inputs": [
        {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
        for k, v in PENGUIN.items()
    ]
}


def _admin_url(proc: ServerProcess) -> str:
    found = ADMIN_LINE.search(proc.stderr)
    assert found, f"no admin listener line in the log:\n{proc.stderr[-2000:]}"
    return f"http://{found.group(1)}:{found.group(2)}"


def _start(start_server: StartServer, *extra: str) -> tuple[ServerProcess, str]:
    proc = start_server(args=["--admin-port", "0", *extra], env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    url = _admin_url(proc)
    assert url != proc.url
    return proc, url


def _register(client: httpx.Client, version: str) -> httpx.Response:
    return client.put(
        f"/v1/models/penguins/versions/{version}",
        files=bundle(PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes()),
        headers=admin(),
    )


def test_admin_endpoints_answer_only_on_the_admin_listener(start_server: StartServer) -> None:
    proc, admin_url = _start(start_server)
    with proc.client() as data, httpx.Client(base_url=admin_url, timeout=30) as adm:
        # the data plane: predictions, probes and metrics as always; no admin endpoint, token or not
        assert predict(data, "penguins", [PENGUIN]).status_code == 200
        assert data.post("/v2/models/penguins/infer", json=V2_ROW).status_code == 200
        assert data.get("/metrics").status_code == 200
        for response in (
            _register(data, "2"),
            data.post("/v2/repository/index", headers=admin()),
            data.post("/v2/repository/models/penguins/unload", headers=admin()),
            data.post("/v2/repository/models/penguins/load", headers=admin()),
        ):
            body = assert_problem(response, 404)
            assert ADMIN_TOKEN not in response.text and str(body["detail"]).startswith("no such endpoint")
        assert not (proc.repository / "penguins" / "2").exists()
        assert predict(data, "penguins", [PENGUIN]).status_code == 200  # the unload above did nothing

        # the admin listener: the admin endpoints (token checked as ever) and the probes, nothing else
        assert adm.get("/v2/health/live").status_code == 200
        assert adm.get("/v2/health/ready").status_code == 200
        assert_problem(adm.post("/v2/repository/index"), 401)
        index = adm.post("/v2/repository/index", headers=admin())
        assert index.status_code == 200 and {"name": "penguins", "version": "1", "state": "READY"} in index.json()
        for response in (
            predict(adm, "penguins", [PENGUIN]),  # V1 on the direct path's usual route
            adm.post("/v2/models/penguins/infer", json=V2_ROW),
            adm.get("/metrics"),
            adm.get("/v2/models/penguins"),
            adm.get("/schema"),
        ):
            assert_problem(response, 404)

        # what the admin listener does, the data plane serves
        registered = _register(adm, "2")
        assert registered.status_code == 201, registered.text
        answer = predict(data, "penguins", [PENGUIN])
        assert answer.status_code == 200 and answer.json()["model_version"] == "2"
        assert adm.post("/v2/repository/models/penguins/unload", headers=admin()).status_code == 200
        assert_problem(predict(data, "penguins", [PENGUIN]), 404)
    stopped = proc.stop()
    assert stopped.exit_code == 0 and "Traceback" not in stopped.stderr


@pytest.mark.slow
def test_with_workers_both_listeners_are_shared_by_the_fleet(start_server: StartServer) -> None:
    proc, admin_url = _start(start_server, "--workers", "2")
    with httpx.Client(base_url=admin_url, timeout=30) as adm:
        for _ in range(6):  # fresh connections, so both workers take some
            with proc.client() as data:
                assert predict(data, "penguins", [PENGUIN]).status_code == 200
                assert_problem(data.post("/v2/repository/index", headers=admin()), 404)
            with httpx.Client(base_url=admin_url, timeout=30) as fresh:
                assert fresh.post("/v2/repository/index", headers=admin()).status_code == 200
                assert_problem(predict(fresh, "penguins", [PENGUIN]), 404)
        assert _register(adm, "2").status_code == 201
    deadline = time.monotonic() + 20  # the other worker loads it from the watched repository
    versions: set[str] = set()
    while time.monotonic() < deadline and versions != {"2"}:
        versions = set()
        for _ in range(6):
            with proc.client() as data:
                versions.add(predict(data, "penguins", [PENGUIN]).json()["model_version"])
        time.sleep(0.2)
    assert versions == {"2"}
    stopped = proc.stop()
    assert stopped.exit_code == 0 and "Traceback" not in stopped.stderr


def test_the_data_plane_port_still_answers_while_models_load(start_server: StartServer) -> None:
    """Binding both sockets first must not delay liveness until the models are loaded (a
    single process answers its probes at once, as without an admin listener)."""
    proc = start_server(
        args=["--admin-port", "0"], env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN}, wait=False
    )
    proc.wait_listening()
    with httpx.Client(base_url=proc.url, timeout=10) as data:
        deadline = time.monotonic() + 10
        while True:
            try:
                live = data.get("/v2/health/live")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "liveness never answered"
                time.sleep(0.02)
        assert live.status_code == 200
    proc.wait_ready()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--admin-port", "0"], "needs an admin token"),
        (["--admin-port", "{port}", "--port", "{port}", "--admin-token", "t"], "port of its own"),
        (["--admin-port", "70000", "--admin-token", "t"], "DRIFTGATE_ADMIN_PORT"),
    ],
)
def test_bad_admin_listener_settings_are_one_line_and_exit_2(flags: list[str], message: str, tmp_path: Path) -> None:
    port = str(free_port())
    args = [f.replace("{port}", port) for f in flags]
    result = cli("serve", "--repository", tmp_path, *args, timeout=30)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("driftgate: error:") and message in lines[0], result.stderr


def test_an_admin_port_in_use_is_exit_3_with_one_clear_line(start_server: StartServer, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = cli(
            "serve", "--repository", tmp_path, "--port", "0", "--admin-port", str(busy), "--admin-token", "t", timeout=30
        )
    assert result.returncode == 3, result
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("PUT", "/v1/models/penguins/versions/2", True),
        ("POST", "/v2/repository/index", True),
        ("POST", "/v2/repository/models/penguins/unload", True),
        ("POST", "/v2/repository/models/penguins/load", True),
        ("POST", "/v1/models/penguins/versions/2:predict", False),
        ("GET", "/v1/models/penguins/versions/2", True),  # a version's files (evaluate --against --url)
        ("GET", "/v1/models/penguins/versions/2/x", False),
        ("POST", "/v2/models/penguins/infer", False),
        ("GET", "/v2/repository", False),
        ("GET", "/metrics", False),
    ],
)
def test_admin_routes_are_exactly_registration_and_the_repository_extension(
    method: str, path: str, expected: bool
) -> None:
    assert is_admin_route(method, path) is expected
