"""Log lines (``--log-format``, ``--access-log``, refused admin calls) and the ``process_*`` /
``python_*`` families of ``/metrics``, from real server processes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.helpers.metrics import scrape, series
from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import ADMIN_TOKEN, V2_ROW, admin, penguin, predict, wait_serving

ADMIN_LISTENER = re.compile(r"admin listener on http://[^:\s]+:(\d+)")
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
WRONG_TOKEN = "wrong-token-that-must-not-be-logged"


def _json_lines(proc: ServerProcess) -> list[dict[str, Any]]:
    """Every line of the server's log, each parsed as JSON (fails on one that is not)."""
    return [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]


def _wait_lines(proc: ServerProcess, want: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while not want(lines := _json_lines(proc)):
        assert time.monotonic() < deadline, proc.stderr[-3000:]
        time.sleep(0.05)
    return lines


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from tests.integration.support import copy_models

    work = tmp_path_factory.mktemp("logs")
    proc = ServerProcess(
        work / "run",
        copy_models(work / "models"),
        args=["--log-format", "json", "--access-log", "--admin-port", "0"],
        env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    proc.start()
    yield proc
    proc.stop()


def test_json_lines_and_one_access_line_per_prediction_request(json_server: ServerProcess) -> None:
    with json_server.client() as client:
        answers = [
            predict(client, "penguins", [penguin(), penguin(sex="female")]),
            client.post("/v2/models/penguins/infer", json={"inputs": V2_ROW}),
            predict(client, "penguins", [penguin(island="Atlantis")]),
            predict(client, "no-such-model", [penguin()]),
        ]
    assert [a.status_code for a in answers] == [200, 200, 422, 404]

    lines = _wait_lines(json_server, lambda got: sum(g["logger"] == "driftgate.access" for g in got) >= 4)
    for line in lines:
        assert ISO_TIME.match(line["time"]), line
        assert line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR") and line["logger"] and "message" in line, line
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's lines are JSON too
    access = [line for line in lines if line["logger"] == "driftgate.access"]
    assert [(a["model"], a["version"], a["status"], a["reason"], a["rows"]) for a in access] == [
        ("penguins", "1", 200, "ok", 2),
        ("penguins", "1", 200, "ok", 1),
        ("penguins", "1", 422, "rejected", 1),
        ("_unknown", "", 404, "not_found", 0),
    ]
    assert all(isinstance(a["duration"], float) and 0 < a["duration"] < 5 for a in access)
    assert "penguins version 1: 200 ok, 2 rows in" in access[0]["message"]


def test_every_refused_admin_call_is_logged_without_the_token(json_server: ServerProcess) -> None:
    found = ADMIN_LISTENER.search(json_server.stderr)
    assert found, json_server.stderr
    admin_url = f"http://127.0.0.1:{found.group(1)}"
    with httpx.Client(timeout=10) as client:
        calls = [
            client.put(f"{json_server.url}/v1/models/m/versions/1", headers=admin()),  # the data plane: 404
            client.put(f"{admin_url}/v1/models/m/versions/1", headers=admin(WRONG_TOKEN)),  # 401
            client.post(f"{admin_url}/v2/repository/models/penguins/unload"),  # no token: 401
        ]
    assert [c.status_code for c in calls] == [404, 401, 401]

    lines = _wait_lines(json_server, lambda got: sum(g["logger"] == "driftgate.admin" for g in got) >= 3)
    refused = [line for line in lines if line["logger"] == "driftgate.admin"]
    assert [(r["level"], r["method"], r["path"], r["status"]) for r in refused] == [
        ("WARNING", "PUT", "/v1/models/m/versions/1", 404),
        ("WARNING", "PUT", "/v1/models/m/versions/1", 401),
        ("WARNING", "POST", "/v2/repository/models/penguins/unload", 401),
    ]
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", r["client"]) for r in refused)
    log = json_server.stderr
    assert ADMIN_TOKEN not in log and WRONG_TOKEN not in log


def test_process_and_python_metrics_of_a_single_process(json_server: ServerProcess) -> None:
    with json_server.client() as client:
        metrics = scrape(client)
    assert series(metrics, "process_resident_memory_bytes")[frozenset()] > 10e6
    assert series(metrics, "process_cpu_seconds_total")[frozenset()] > 0
    assert series(metrics, "process_open_fds")[frozenset()] > 0
    assert len(series(metrics, "python_gc_collections_total")) == 3  # one per generation
    assert series(metrics, "python_info")


@pytest.mark.slow
def test_workers_log_in_one_text_format_and_export_every_process(start_server: StartServer) -> None:
    proc = start_server(args=["--workers", "2"])
    wait_serving(proc, 2)
    time.sleep(0.6)  # a publication (gateway.monitoring.fleet), which names each worker's process
    with proc.client() as client:
        metrics = scrape(client)
    cpu = series(metrics, "process_cpu_seconds_total")
    assert {dict(labels)["worker"] for labels in cpu} == {"supervisor", "0", "1"}
    assert all(value > 0 for value in cpu.values())
    assert not series(metrics, "python_gc_collections_total")  # another process's cannot be read
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert any(" uvicorn.error: " in line for line in lines)
    assert all(TEXT_LINE.match(line) for line in lines), [line for line in lines if not TEXT_LINE.match(line)]
