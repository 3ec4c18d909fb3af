"""The container image's entry command, run outside Docker (no daemon on CI machines).

The Dockerfile's final stage is parsed: its ENTRYPOINT and CMD are run exactly, with
exactly its ENV (``PATH`` aside, which points at this virtualenv instead of /opt/venv),
except that the repository is a copy of ``models/``, the port a free one and the host
loopback. The server must become ready, predict, answer the image's HEALTHCHECK command,
and end on SIGTERM within its drain bound.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gateway.config import Settings
from tests.helpers.ports import free_port
from tests.integration.conftest import ServerProcess, Stopped
from tests.integration.support import REPO_ROOT, copy_models, penguin, predict

DOCKERFILE = REPO_ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
DRAIN_SECONDS = Settings().drain_seconds


@dataclass
class Stage:
    """The instructions of one Dockerfile stage that matter at run time."""

    base: str
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] = field(default_factory=list)
    user: str | None = None
    expose: list[str] = field(default_factory=list)
    healthcheck: list[str] | None = None
    stopsignal: str | None = None
    copies: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1].strip() + " "
            continue
        logical += line
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


def _exec_form(rest: str, what: str) -> list[str]:
    assert rest.startswith("["), f"{what} must use the exec (JSON) form, not a shell: {rest!r}"
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def parse_dockerfile(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    args: dict[str, str] = {}  # ARGs before the first FROM, with their defaults: usable in FROM
    for keyword, rest in _instructions(path.read_text()):
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
            continue
        if keyword == "FROM":
            for name, default in args.items():
                rest = rest.replace("${" + name + "}", default).replace("$" + name, default)
            parts = rest.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
            continue
        stage = stages[-1]
        if keyword == "ENV":
            tokens = shlex.split(rest)
            if "=" in tokens[0]:
                stage.env.update(t.split("=", 1) for t in tokens)  # type: ignore[arg-type]
            else:
                stage.env[tokens[0]] = " ".join(tokens[1:])
        elif keyword == "ENTRYPOINT":
            stage.entrypoint = _exec_form(rest, "ENTRYPOINT")
        elif keyword == "CMD":
            stage.cmd = _exec_form(rest, "CMD")
        elif keyword == "USER":
            stage.user = rest
        elif keyword == "EXPOSE":
            stage.expose += rest.split()
        elif keyword == "HEALTHCHECK":
            _, _, command = rest.partition("CMD ")
            stage.healthcheck = _exec_form(command.strip(), "HEALTHCHECK CMD")
        elif keyword == "STOPSIGNAL":
            stage.stopsignal = rest
        elif keyword == "COPY":
            stage.copies.append(rest)
        elif keyword == "RUN":
            stage.runs.append(rest)
    return stages


@pytest.fixture(scope="module")
def final() -> Stage:
    return parse_dockerfile(DOCKERFILE)[-1]


def test_dockerfile_shape(final: Stage) -> None:
    stages = parse_dockerfile(DOCKERFILE)
    assert len(stages) >= 2 and stages[0].base == final.base == "python:3.11-slim", "multi-stage on python:3.11-slim"
    assert any(c.startswith("--from=") and "/opt/venv" in c for c in final.copies), "the final stage copies the venv"
    assert not any(word in run for run in final.runs for word in ("apt-get", "pip ", "gcc", "build-essential")), (
        final.runs
    )
    assert any("models/" in c and "/models" in c for c in final.copies), "models/ baked in at /models"
    assert final.user is not None and final.user.split(":")[0] not in ("0", "root"), final.user
    assert final.user.split(":")[0].isdigit(), "a numeric user, so runAsNonRoot can verify it"
    assert final.env["DRIFTGATE_REPOSITORY"] == "/models"
    assert final.env["DRIFTGATE_HOST"] == "0.0.0.0"
    assert final.expose == [final.env["DRIFTGATE_PORT"]] == ["8080"]
    assert final.stopsignal == "SIGTERM"
    assert final.entrypoint == ["driftgate", "serve"]
    assert final.healthcheck is not None and "/v2/health/live" in " ".join(final.healthcheck)
    assert final.env["PATH"].startswith("/opt/venv/bin:")


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip().rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", "tests", "bench"} <= ignored
    assert not {"gateway", "models", "pyproject.toml"} & ignored


@dataclass(frozen=True)
class EntryRun:
    command: list[str]
    env: dict[str, str]
    prediction: httpx.Response
    health_while_up: subprocess.CompletedProcess[str]
    health_after_stop: subprocess.CompletedProcess[str]
    stopped: Stopped


@pytest.fixture(scope="module")
def entry_run(final: Stage, tmp_path_factory: pytest.TempPathFactory) -> EntryRun:
    """The image's entry command, started, used, SIGTERMed and checked for health, once."""
    assert (VENV_BIN / "driftgate").is_file(), "the driftgate console script is installed"
    work = tmp_path_factory.mktemp("container")
    port = free_port()
    env = {k: v for k, v in final.env.items() if k != "PATH"}
    env.update(
        PATH=os.pathsep.join([str(VENV_BIN), "/usr/local/bin", "/usr/bin", "/bin"]),
        DRIFTGATE_REPOSITORY=str(copy_models(work / "models")),
        DRIFTGATE_HOST="127.0.0.1",
        DRIFTGATE_PORT=str(port),
    )
    command = [*(final.entrypoint or []), *final.cmd]
    proc = ServerProcess(
        work / "run", Path(env["DRIFTGATE_REPOSITORY"]), command=command, env=env, inherit_env=False, port=port
    )
    proc.start()
    try:
        with proc.client() as client:
            prediction = predict(client, "penguins", [penguin()])
        assert final.healthcheck is not None
        health_up = subprocess.run(final.healthcheck, env=env, capture_output=True, text=True, timeout=15, check=False)
        stopped = proc.stop(signal.SIGTERM, timeout=DRAIN_SECONDS + 5)
        health_down = subprocess.run(
            final.healthcheck, env=env, capture_output=True, text=True, timeout=15, check=False
        )
    finally:
        proc.stop(signal.SIGKILL)
    return EntryRun(command, env, prediction, health_up, health_down, stopped)


def test_entry_command_serves_the_bundled_models(entry_run: EntryRun) -> None:
    assert entry_run.command == ["driftgate", "serve"]
    response = entry_run.prediction
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "1"
    assert response.json()["predictions"][0]["label"] == "Gentoo"


def test_healthcheck_command_follows_liveness(entry_run: EntryRun) -> None:
    assert entry_run.health_while_up.returncode == 0, entry_run.health_while_up.stderr
    assert entry_run.health_after_stop.returncode != 0, "the HEALTHCHECK must fail when nothing answers"


def test_entry_command_ends_on_sigterm_within_the_drain_bound(entry_run: EntryRun) -> None:
    stopped = entry_run.stopped
    assert not stopped.killed, stopped.stderr[-2000:]
    assert stopped.seconds < DRAIN_SECONDS
    assert "Application shutdown complete" in stopped.stderr


def test_entry_command_exits_zero_on_sigterm(entry_run: EntryRun) -> None:
    assert entry_run.stopped.exit_code == 0


def test_entry_needs_nothing_beyond_the_dockerfile_env(entry_run: EntryRun) -> None:
    """Nothing leaked in from the test's own environment (other than PATH)."""
    allowed = set(parse_dockerfile(DOCKERFILE)[-1].env)
    assert set(entry_run.env) <= allowed, set(entry_run.env) - allowed
