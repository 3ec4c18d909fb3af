"""The real server, as a child process, for the integration tests.

``ServerProcess`` starts ``python -m gateway.cli serve`` (or any command, for the
container-entry test) on a free loopback port with its own repository, waits for
``GET /v2/health/ready``, and stops it with a signal, returning the exit code and the
logs. Output goes to files, never to pipes nobody reads (a full pipe would block the
server).

The port is 0 by default: the kernel picks a free one when the server binds, and the
server's own start-up line (``Uvicorn running on http://127.0.0.1:PORT``) says which.
Waiting for that line also proves that the server answering on the port is this process,
not another test run's server that took a port we had been told was free.

Fixtures:

- ``server``: one per test module, default settings plus an admin token, serving a
  private copy of ``models/`` (tests may register into it);
- ``start_server``: a factory for tests that need their own process (other settings,
  a signal); every process it started is stopped at teardown.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.integration.support import ADMIN_TOKEN, copy_models

READY_TIMEOUT = 30.0
LISTENING = re.compile(r"Uvicorn running on http://([^:\s]+):(\d+)")
"""uvicorn's start-up line (logged at the default log level, info)."""


@dataclass(frozen=True)
class Stopped:
    """How a server process ended."""

    exit_code: int
    """The process's exit code (negative: killed by that signal)."""
    seconds: float
    """From the signal to the end of the process."""
    killed: bool
    """True if it did not end within the timeout and was killed."""
    stdout: str
    stderr: str


class ServerProcess:
    """One driftgate server process (see the module docstring).

    Args:
        workdir: folder for the logs (and the working directory of the process).
        repository: the model repository it serves.
        args: extra ``serve`` flags.
        env: environment variables added to the inherited environment (from which every
            ``DRIFTGATE_*`` variable is removed first, so the caller's shell cannot leak in).
        command: run this instead of ``python -m gateway.cli serve ...``; ``repository``
            and the port are then the caller's business (pass them in ``env``).
        inherit_env: False to give the process exactly ``env`` and nothing else.
        port: the port; default 0, a free one that the kernel picks (see the module docstring).
        new_group: start it in a process group (and session) of its own, so ``send_group``
            can signal the whole group as systemd or ``kill -TERM -PGID`` does.
    """

    def __init__(
        self,
        workdir: Path,
        repository: Path,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        inherit_env: bool = True,
        port: int | None = None,
        new_group: bool = False,
    ) -> None:
        self.workdir = workdir
        self.new_group = new_group
        self.repository = repository
        self.host = "127.0.0.1"
        self.port = port if port is not None else 0
        if command is None:
            command = [
                sys.executable, "-m", "gateway.cli", "serve",
                "--repository", str(repository), "--host", self.host, "--port", str(self.port), *args,
            ]  # fmt: skip
        self.command = list(command)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
        base = {**inherited, "PYTHONUNBUFFERED": "1"} if inherit_env else {}
        self.env = {**base, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._err: IO[bytes] | None = None
        self.stopped: Stopped | None = None

    @property
    def url(self) -> str:
        assert self.port, "the port is known once the server has said it is listening (wait_ready)"
        return f"http://{self.host}:{self.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client bound to this server (the caller closes it)."""
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    @property
    def stderr(self) -> str:
        path = self.workdir / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def stdout(self) -> str:
        path = self.workdir / "stdout.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *, wait: bool = True) -> ServerProcess:
        """Start the process; with ``wait``, return only once it is ready."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._out = open(self.workdir / "stdout.log", "wb")  # noqa: SIM115 - closed in stop()
        self._err = open(self.workdir / "stderr.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.workdir,
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            start_new_session=self.new_group,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_listening(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait for this process's own "listening on HOST:PORT" line; learn the port from it."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.search(self.stderr)
            if found:
                announced = int(found.group(2))
                assert self.port in (0, announced), f"asked for port {self.port}, the server listens on {announced}"
                self.port = announced
                return
            self._fail_if_exited()
            time.sleep(0.02)
        stopped = self.stop(signal.SIGKILL)
        pytest.fail(f"server not listening after {timeout}s:\n{stopped.stderr}")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``/v2/health/ready`` until 200; fail with the server's stderr if it dies or hangs."""
        deadline = time.monotonic() + timeout
        self.wait_listening(timeout)
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                self._fail_if_exited()
                try:
                    if client.get(f"{self.url}/v2/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        stopped = self.stop(signal.SIGKILL)
        pytest.fail(f"server not ready after {timeout}s:\n{stopped.stderr}")

    def _fail_if_exited(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            self._close_logs()
            pytest.fail(f"server exited with {self.process.returncode} before it was ready:\n{self.stderr}")

    def send(self, sig: int) -> None:
        """Send ``sig`` without waiting (see ``wait``)."""
        assert self.process is not None
        self.process.send_signal(sig)

    def send_group(self, sig: int) -> None:
        """Send ``sig`` to every process of the server's group (``new_group`` only)."""
        assert self.process is not None and self.new_group, "start it with new_group=True"
        os.killpg(self.process.pid, sig)

    def wait(self, timeout: float) -> Stopped:
        """Wait for the process to end (after a signal); kill it after ``timeout``."""
        assert self.process is not None
        t0 = time.monotonic()
        killed = False
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            killed = True
            self.process.kill()
            self.process.wait()
        seconds = time.monotonic() - t0
        self._close_logs()
        self.stopped = Stopped(self.process.returncode, seconds, killed, self.stdout, self.stderr)
        return self.stopped

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> Stopped:
        """Send ``sig`` and wait for the end (killing after ``timeout``). Idempotent."""
        if self.stopped is not None:
            return self.stopped
        assert self.process is not None, "start() first"
        t0 = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        result = self.wait(timeout)
        self.stopped = Stopped(result.exit_code, time.monotonic() - t0, result.killed, result.stdout, result.stderr)
        return self.stopped

    def _close_logs(self) -> None:
        for fh in (self._out, self._err):
            if fh is not None and not fh.closed:
                fh.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with default settings plus an admin token, on a private copy of ``models/``."""
    work = tmp_path_factory.mktemp("server")
    proc = ServerProcess(work / "run", copy_models(work / "models"), env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    proc.start()
    yield proc
    proc.stop()


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """``start_server(repository=None, args=(), env=None, command=None, inherit_env=True,
    port=None, wait=True, new_group=False)``: a server of the test's own; a copy of
    ``models/`` unless ``repository`` is given."""
    started: list[ServerProcess] = []

    def factory(
        *,
        repository: Path | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        inherit_env: bool = True,
        port: int | None = None,
        wait: bool = True,
        new_group: bool = False,
    ) -> ServerProcess:
        n = len(started)
        repo = repository if repository is not None else copy_models(tmp_path / f"models-{n}")
        proc = ServerProcess(
            tmp_path / f"server-{n}",
            repo,
            args=args,
            env=env,
            command=command,
            inherit_env=inherit_env,
            port=port,
            new_group=new_group,
        )
        started.append(proc)
        return proc.start(wait=wait)

    yield factory
    for proc in started:
        if proc.process is not None:
            proc.stop(timeout=10)
