"""``driftgate register`` and ``driftgate models`` against a running server.

The server watches its repository (every 0.2 s here), so a version the command line
writes there is served as the new default without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import ServerProcess
from tests.integration.support import (
    ADMIN_TOKEN,
    DIABETES_MODEL,
    PENGUINS_MODEL,
    PENGUINS_SPEC,
    cli,
    copy_models,
    penguin,
    predict,
    tree,
)

WATCH_INTERVAL = 0.2
SERVED_WITHIN = 5.0


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("watched")
    proc = ServerProcess(
        work / "run",
        copy_models(work / "models"),
        env={"DRIFTGATE_WATCH_INTERVAL": str(WATCH_INTERVAL), "DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN},
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(watched: ServerProcess) -> Iterator[httpx.Client]:
    with watched.client() as c:
        yield c


def _default_version(client: httpx.Client, model: str = "penguins") -> str:
    response = predict(client, model, [penguin()])
    assert response.status_code == 200, response.text
    version: str = response.json()["model_version"]
    return version


def _wait_for_default(client: httpx.Client, version: str, within: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if _default_version(client) == version:
            return time.monotonic() - t0
        time.sleep(0.05)
    pytest.fail(f"the server did not serve version {version} as default within {within}s")


def _table(stdout: str) -> dict[str, list[str]]:
    """``driftgate models`` output: model name -> [versions, default, task, spec]."""
    lines = stdout.strip().splitlines()
    assert lines and lines[0].split()[:3] == ["MODEL", "VERSIONS", "DEFAULT"], stdout
    return {cols[0]: cols[1:] for cols in (line.split() for line in lines[1:])}


def test_registered_into_the_repository_is_served_without_restart(watched: ServerProcess, client: httpx.Client) -> None:
    assert _default_version(client) == "1"

    done = cli(
        "register", "penguins", "--model", PENGUINS_MODEL, "--spec", PENGUINS_SPEC, "--repository", watched.repository
    )

    assert done.returncode == 0, done.stderr
    assert "penguins version 2" in done.stdout
    assert (watched.repository / "penguins" / "2" / "model.onnx").read_bytes() == PENGUINS_MODEL.read_bytes()
    _wait_for_default(client, "2", SERVED_WITHIN)
    assert predict(client, "penguins", [penguin()], version="1").json()["model_version"] == "1"

    remote = cli("models", "--url", watched.url)
    assert remote.returncode == 0, remote.stderr
    assert _table(remote.stdout)["penguins"][:3] == ["1,2", "2", "classification"]
    local = cli("models", "--repository", watched.repository)
    assert local.returncode == 0, local.stderr
    assert _table(local.stdout)["penguins"][:3] == ["1,2", "2", "classification"]
    assert _table(local.stdout)["diabetes"][:3] == ["1", "1", "regression"]


def _refuse_mismatch(repository: Path) -> tuple[int, str, dict[str, int], dict[str, int]]:
    before = tree(repository)
    done = cli("register", "penguins", "--model", DIABETES_MODEL, "--spec", PENGUINS_SPEC, "--repository", repository)
    return done.returncode, done.stderr, before, tree(repository)


def test_cli_refuses_a_mismatching_model_and_writes_nothing(watched: ServerProcess, client: httpx.Client) -> None:
    default = _default_version(client)

    code, stderr, before, after = _refuse_mismatch(watched.repository)

    assert code != 0
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("driftgate: error: ") and "labels" in last, stderr
    assert after == before
    time.sleep(3 * WATCH_INTERVAL)
    assert _default_version(client) == default


def test_cli_refusal_is_one_line(watched: ServerProcess) -> None:
    """The contract: every failure prints one clear line (no progress chatter before it)."""
    code, stderr, _, _ = _refuse_mismatch(watched.repository)
    assert code != 0
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_cli_refuses_an_existing_version(watched: ServerProcess) -> None:
    before = tree(watched.repository)
    done = cli(
        "register",
        "penguins",
        "--version",
        "1",
        "--model",
        PENGUINS_MODEL,
        "--spec",
        PENGUINS_SPEC,
        "--repository",
        watched.repository,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("driftgate: error: ")
    assert tree(watched.repository) == before


def test_cli_registers_on_a_running_server(watched: ServerProcess, client: httpx.Client) -> None:
    refused = cli(
        "register",
        "penguins",
        "--model",
        PENGUINS_MODEL,
        "--spec",
        PENGUINS_SPEC,
        "--url",
        watched.url,
        "--token",
        "wrong",
    )
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("driftgate: error: ") and "401" in refused.stderr

    done = cli(
        "register",
        "penguins",
        "--version",
        "40",
        "--model",
        PENGUINS_MODEL,
        "--spec",
        PENGUINS_SPEC,
        "--url",
        watched.url,
        "--token",
        ADMIN_TOKEN,
    )

    assert done.returncode == 0, done.stderr
    assert "penguins version 40" in done.stdout
    assert _default_version(client) == "40"
    assert (watched.repository / "penguins" / "40" / "model.onnx").is_file()
