"""Rollouts against a running server: shadow, canary, promote, rollback, pin, automatic
rollback, and the state shared by workers and kept across restarts (``gateway.rollout``).

The versions are real: the bundled penguins model (v1), and penguins classifiers retrained
here on palmerpenguins' rows (``tests.integration.retrained``): v2 on the rows off Torgersen
with a closed vocabulary (its spec refuses that island), v3 on shuffled labels (it answers
badly).
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.metrics import sample, scrape
from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.retrained import penguins_frame, retrained
from tests.integration.support import (
    ADMIN_TOKEN,
    MODELS,
    PENGUIN,
    admin,
    assert_problem,
    cli,
    copy_models,
    v2_body,
    wait_serving,
)

ENV = {"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN, "DRIFTGATE_WATCH_INTERVAL": "0.3"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """v2 (retrained off Torgersen, refitted spec) and v3 (shuffled labels), as files."""
    folder = tmp_path_factory.mktemp("bundles")
    out = {}
    for tag, options in (("v2", {}), ("v3", {"without_island": None, "shuffled": True})):
        model, spec = retrained(**options)  # type: ignore[arg-type]
        (folder / f"{tag}.onnx").write_bytes(model)
        (folder / f"{tag}.yaml").write_bytes(spec)
        out[tag] = (folder / f"{tag}.onnx", folder / f"{tag}.yaml")
    return out


def live_rows() -> list[tuple[dict[str, Any], str]]:
    """Every penguin as a request row (missing cells left out) with its species."""
    frame = penguins_frame()
    rows = []
    for record in frame.to_dict("records"):
        species = record.pop("species")
        rows.append(({k: v for k, v in record.items() if not (isinstance(v, float) and math.isnan(v))}, species))
    return rows


def register(proc: ServerProcess, bundle: tuple[Path, Path], *flags: str) -> None:
    done = cli("register", "penguins", "--model", bundle[0], "--spec", bundle[1], "--url", proc.url, "--token", ADMIN_TOKEN, *flags)
    assert done.returncode == 0, done.stderr


def rollout(proc: ServerProcess, *args: str) -> dict[str, Any]:
    """``driftgate rollout penguins ARGS --json`` against ``proc``: the state and comparison."""
    done = cli("rollout", "penguins", *args, "--url", proc.url, "--token", ADMIN_TOKEN, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def version_of(client: httpx.Client, key: str | None = None, row: dict[str, Any] = PENGUIN) -> str:
    headers = {} if key is None else {"X-Driftgate-Route-Key": key}
    response = client.post("/v1/models/penguins:predict", json={"instances": [row]}, headers=headers)
    assert response.status_code == 200, response.text
    version: str = response.json()["model_version"]
    return version


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_the_rollout_story(start_server: StartServer, bundles: dict[str, tuple[Path, Path]]) -> None:
    proc = start_server(env=ENV)
    with proc.client() as client:
        # v1 serves
        assert version_of(client) == "1"
        # a retrained v2 with a refitted spec goes into shadow
        register(proc, bundles["v2"], "--shadow")
        state = rollout(proc, "status")
        assert state["primary"] == "1" and state["candidate"] == {"version": "2", "mode": "shadow", "share": 1.0}
        # live traffic, part of it drifted (Torgersen's penguins: v2 never saw that island)
        rows = live_rows()
        torgersen = sum(row.get("island") == "Torgersen" for row, _ in rows)
        feedback = []
        for row, species in rows:
            answer = client.post("/v1/models/penguins:predict", json={"instances": [row]}).json()
            assert answer["model_version"] == "1"  # the client sees the primary only
            feedback.append({"id": answer["predictions"][0]["id"], "label": species})

        def compared() -> dict[str, Any] | None:
            body = rollout(proc, "status")
            done = body.get("shadow") and sum(body["shadow"]["rows"].values()) == len(rows)
            return body if done else None

        wait_for(compared)  # the shadow works off the response path: feedback comes later
        assert client.post("/v1/models/penguins/feedback", json={"feedback": feedback}).json()["matched"] == len(rows)
        body = rollout(proc, "status")
        shadow = body["shadow"]
        assert shadow["rows"] == {"compared": len(rows) - torgersen, "rejected": torgersen, "dropped": 0, "failed": 0}
        assert shadow["violations"] == {"island/unseen_category": torgersen}
        assert 0.9 <= shadow["agreement"] <= 1.0
        paired = shadow["paired_feedback"]
        assert paired["rows"] == len(rows) - torgersen  # feedback scored both versions on the same rows
        assert paired["primary"]["rows"] == paired["candidate"]["rows"] == paired["rows"]
        assert paired["primary"]["accuracy"] > 0.9 and paired["candidate"]["accuracy"] > 0.9
        assert body["versions"]["1"]["rows"] == len(rows) + 1 and body["versions"]["2"]["rejected"] == torgersen
        table = cli("rollout", "penguins", "status", "--url", proc.url)
        assert table.returncode == 0, table.stderr
        for text in ("PRIMARY v1", "CANDIDATE v2", "agreement", "feedback (same rows)", f"island/unseen_category {torgersen}"):
            assert text in table.stdout, table.stdout
        monitor = client.get("/v1/models/penguins/monitor").json()  # the monitor page shows the rollout too
        assert monitor["rollout"]["shadow"]["rows"]["rejected"] == torgersen
        assert "CANDIDATE v2" in client.get("/v1/models/penguins/monitor?format=html").text
        metrics = scrape(client)
        assert sample(metrics, "driftgate_shadow_rows_total", model="penguins", version="2", outcome="rejected") == torgersen
        # a 20% canary: sticky keys, the share within 3 points over 5,000 requests
        rollout(proc, "canary", "2", "--percent", "20")
        versions = Counter(version_of(client, f"user-{i}") for i in range(5000))
        assert set(versions) == {"1", "2"}
        assert abs(versions["2"] / 5000 - 0.20) <= 0.03, versions
        first = {f"user-{i}": version_of(client, f"user-{i}") for i in range(100)}
        assert all(version_of(client, key) == version for key, version in first.items())  # one version per key
        assert client.post("/v1/models/penguins/versions/1:predict", json={"instances": [PENGUIN]}).json()["model_version"] == "1"
        for key, version in list(first.items())[:20]:  # V2 goes through the same choice
            infer = client.post("/v2/models/penguins/infer", json=v2_body(PENGUIN), headers={"X-Driftgate-Route-Key": key})
            assert infer.status_code == 200 and infer.json()["model_version"] == version, infer.text
        # v2 is promoted
        assert rollout(proc, "promote")["primary"] == "2"
        assert {version_of(client, f"user-{i}") for i in range(50)} == {"2"}
        # a v3 that answers badly, as a canary with automatic rollback, is taken out
        register(proc, bundles["v3"], "--canary", "50")
        state = rollout(proc, "canary", "3", "--percent", "50", "--auto-rollback", "60:0.1")
        assert state["candidate"]["version"] == "3" and state["auto_rollback"] == {"min_rows": 60, "margin": 0.1}
        feedback = []
        taken = [(row, species) for row, species in rows if row.get("island") != "Torgersen"]  # v2 refuses the rest
        for i, (row, species) in enumerate(taken[:240]):
            answer = client.post("/v1/models/penguins:predict", json={"instances": [row]}, headers={"X-Driftgate-Route-Key": f"k{i}"}).json()
            feedback.append({"id": answer["predictions"][0]["id"], "label": species})
        client.post("/v1/models/penguins/feedback", json={"feedback": feedback})
        body = wait_for(lambda: (b := rollout(proc, "status"))["candidate"] is None and b)
        assert body["primary"] == "2" and body["last_rollback"]["version"] == "3"
        assert body["last_rollback"]["reason"] == "feedback" and "accuracy" in body["last_rollback"]["detail"]
        assert body["rollbacks"] == {"feedback": 1}
        assert "rolled back automatically (feedback)" in proc.stderr
        assert sample(scrape(client), "driftgate_rollbacks_total", model="penguins", reason="feedback") == 1
        assert {version_of(client, f"k{i}") for i in range(50)} == {"2"}


@pytest.mark.slow
def test_promote_rollback_and_pin_under_load(start_server: StartServer, bundles: dict[str, tuple[Path, Path]]) -> None:
    proc = start_server(env=ENV)
    register(proc, bundles["v2"], "--shadow")
    changes: list[tuple[float, float, str]] = [(0.0, 0.0, "1")]  # (start, end, primary) of every change
    answers: list[tuple[float, float, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with proc.client() as client:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post("/v1/models/penguins:predict", json={"instances": [PENGUIN]})
                    body = response.json()
                    assert response.status_code == 200 and len(body["predictions"]) == 1, response.text
                    answers.append((sent, time.monotonic(), body["model_version"]))
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    commands = [("promote",), ("rollback",), ("shadow", "2"), ("promote",), ("pin", "1"), ("pin", "2"), ("rollback",)]
    began = time.monotonic()
    with httpx.Client(base_url=proc.url, timeout=30) as admin_client:
        i = 0
        while time.monotonic() - began < 10.5:
            command = commands[i % len(commands)]
            i += 1
            action: dict[str, Any] = {"action": command[0]}
            if len(command) > 1:
                action["version"] = command[1]
            start = time.monotonic()
            response = admin_client.put("/v1/models/penguins/rollout", json=action, headers=admin())
            end = time.monotonic()
            if response.status_code == 409:  # rollback with nothing to restore
                continue
            assert response.status_code == 200, response.text
            changes.append((start, end, response.json()["primary"]))
            time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    assert len(answers) > 500 and len(changes) > 10
    for sent, received, version in answers:
        # the state in effect at some moment of the request: from its change's start to the next one's end
        allowed = {
            primary
            for k, (start, _, primary) in enumerate(changes)
            if start <= received and (k + 1 == len(changes) or changes[k + 1][1] >= sent)
        }
        assert version in allowed, (sent, received, version, allowed)


@pytest.mark.slow
def test_workers_agree_and_a_restart_keeps_the_state(start_server: StartServer, tmp_path: Path, bundles: dict[str, tuple[Path, Path]]) -> None:
    repository = copy_models(tmp_path / "shared")
    proc = start_server(repository=repository, env=ENV, args=["--workers", "2"])
    wait_serving(proc, 2)
    register(proc, bundles["v2"])
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection each: either worker answers
    with httpx.Client(base_url=proc.url, timeout=30, limits=fresh) as client:
        wait_for(lambda: all(version_of(client) == "2" for _ in range(20)), timeout=10)  # both serve v2
        assert rollout(proc, "pin", "1")["primary"] == "1"
        wait_for(lambda: all(version_of(client) == "1" for _ in range(40)), timeout=3)  # within the watch interval
        assert all(client.get("/v1/models/penguins/rollout").json()["primary"] == "1" for _ in range(20))
    proc.stop()
    again = start_server(repository=repository, env=ENV)
    with again.client() as client:
        assert version_of(client) == "1"  # v2 is the highest, the state says 1
        assert client.get("/v1/models/penguins/rollout").json()["previous"] == "2"


# -- bad input: a clear 4xx / one-line error, and the state unchanged ---------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, bundles: dict[str, tuple[Path, Path]]) -> Any:
    work = tmp_path_factory.mktemp("rollout-bad")
    proc = ServerProcess(work / "run", copy_models(work / "models"), env=ENV)
    proc.start()
    register(proc, bundles["v2"], "--shadow")
    yield proc
    proc.stop()


CASES = {
    "candidate not registered": ({"primary": 1, "candidate": {"version": 9, "mode": "canary", "share": 0.2}}, 409, "not registered"),
    "promote with no candidate": ({"action": "promote"}, None, "no candidate to promote"),
    "share of zero": ({"primary": 1, "candidate": {"version": 2, "mode": "canary", "share": 0}}, 409, "(0, 1]"),
    "share above one": ({"primary": 1, "candidate": {"version": 2, "mode": "canary", "share": 1.5}}, 409, "(0, 1]"),
    "candidate equal to the primary": ({"primary": 2, "candidate": {"version": 2, "mode": "shadow"}}, 409, "cannot be the primary"),
    "bad JSON": (b'{"primary": 1,', 400, "not a rollout state"),
    "unknown mode": ({"primary": 1, "candidate": {"version": 2, "mode": "blue-green"}}, 400, "not a rollout state"),
    "primary not registered": ({"primary": 7}, 409, "not registered"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_change_is_refused_and_changes_nothing(served: ServerProcess, case: str) -> None:
    body, status, words = CASES[case]
    rollout_file = served.repository / "penguins" / "rollout.yaml"
    before = rollout_file.read_bytes()
    with served.client() as client:
        if case == "promote with no candidate":
            response = client.put("/v1/models/penguins/rollout", json={"primary": 1}, headers=admin())
            assert response.status_code == 200
            before = rollout_file.read_bytes()
            status = 409
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = client.put("/v1/models/penguins/rollout", content=content, headers={**admin(), "Content-Type": "application/json"})
        problem = assert_problem(response, status)  # type: ignore[arg-type]
        assert words in problem["detail"] and "\n" not in problem["detail"]
        assert rollout_file.read_bytes() == before
        if case == "promote with no candidate":  # put the shadow back for the other cases
            client.put("/v1/models/penguins/rollout", json={"primary": 1, "candidate": {"version": 2, "mode": "shadow"}}, headers=admin())


def test_unknown_model_and_missing_token_are_refused(served: ServerProcess) -> None:
    with served.client() as client:
        assert_problem(client.put("/v1/models/nosuch/rollout", json={"primary": 1}, headers=admin()), 404)
        assert_problem(client.get("/v1/models/nosuch/rollout"), 404)
        assert_problem(client.put("/v1/models/penguins/rollout", json={"action": "promote"}), 401)
    assert not (served.repository / "nosuch").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("canary", "9", "--percent", "20"), "version 9 is not registered"),
        (("promote",), "no candidate to promote"),
        (("canary", "2", "--percent", "0"), "(0, 1]"),
        (("canary", "2", "--percent", "150"), "(0, 1]"),
        (("shadow", "1"), "cannot be the primary"),
        (("canary", "2"), "needs --percent"),
        (("pin",), "needs a version"),
    ],
)
def test_the_local_command_refuses_in_one_line_and_changes_nothing(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    repository = tmp_path / "models"
    for version in ("1", "2"):
        shutil.copytree(MODELS / "penguins" / "1", repository / "penguins" / version)
    state = repository / "penguins" / "rollout.yaml"
    state.write_bytes(b"primary: 1\n")
    done = cli("rollout", "penguins", *args, "--repository", repository)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("driftgate: error: ")
    assert state.read_bytes() == b"primary: 1\n"


def test_the_local_command_refuses_an_unknown_model(tmp_path: Path) -> None:
    done = cli("rollout", "nosuch", "status", "--repository", copy_models(tmp_path / "models"))
    assert done.returncode != 0 and "no model named 'nosuch'" in done.stderr and done.stderr.count("\n") == 1


def test_the_rollout_change_is_an_admin_endpoint(start_server: StartServer) -> None:
    from tests.integration.test_admin_listener import _start

    proc, admin_url = _start(start_server)
    state = proc.repository / "penguins" / "rollout.yaml"
    with proc.client() as data_plane, httpx.Client(base_url=admin_url, timeout=30) as admin_plane:
        for path in ("/v1/models/penguins/rollout", "//v1/models/penguins/rollout/", "/v1//models/penguins/rollout"):
            assert data_plane.put(path, json={"primary": 1}, headers=admin()).status_code == 404
        assert not state.exists()
        assert data_plane.get("/v1/models/penguins/rollout").json()["primary"] == "1"  # reading is not admin
        assert admin_plane.put("/v1/models/penguins/rollout", json={"primary": 1}, headers=admin()).status_code == 200
    assert state.exists()
