"""The trial load, parent side: the model's bytes go to a resource-limited child process
(forked from multiprocessing's fork server, or a fresh interpreter where that cannot run),
and its answer, or its death, becomes a ``TrialReport`` or a ``ModelInvalidError``."""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError, ModelInvalidError
from gateway.model_check import limits, trial_child

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import BaseContext

__all__ = ["TrialReport", "check_scratch_folder", "trial_load"]

log = logging.getLogger("driftgate.model_check")

_TRIAL_SLOTS = threading.BoundedSemaphore(limits.MAX_CONCURRENT_TRIALS)
_MAX_ANSWER_BYTES = 1 << 20
_BUDGET_SIGNALS = {signal.SIGXCPU, signal.SIGKILL}
"""A child killed by these ran out of CPU time (soft, then hard limit) or was OOM-killed."""



@dataclass(frozen=True)
class TrialReport:
    """What the trial child said about a model it loaded."""

    inputs: list[dict[str, Any]]
    """``{"name", "type", "shape"}`` of each input, as onnxruntime describes it."""
    outputs: list[dict[str, Any]]
    memory_growth_bytes: int
    """Peak resident memory of the child minus its memory before the session (bytes)."""
    ran: bool
    """True if the child also ran a zero batch (one ``[N, k]`` float input)."""
    seconds: float
    """Wall-clock time of the whole trial, child start to answer."""
    variable_cost: bool = False
    """The model uses an operator whose work depends on input values (``variable_cost``)."""



def _budget_error(what: str) -> ModelInvalidError:
    return ModelInvalidError(f"the model exceeds the resource budget for loading ({what})", reason="budget")


def _crash_error() -> ModelInvalidError:
    return ModelInvalidError("the model crashed the loader", reason="crashed")


def check_scratch_folder() -> str:
    """The temporary folder trial loads need, checked once at start-up; its path.

    Each trial runs in a fresh empty folder made there, and multiprocessing's fork server
    puts its socket there: without one, every model fails to load. ``TMPDIR`` when set (it
    must then be writable: falling back elsewhere would hide the mistake), else the first
    writable of ``/tmp``, ``/var/tmp``, ``/usr/tmp`` and the working folder (``tempfile``).

    Raises:
        ConfigError: no writable folder, in one line saying what to mount.
    """
    wanted = os.environ.get("TMPDIR") or None
    try:
        probe = tempfile.mkdtemp(prefix="driftgate-probe-", dir=wanted)
        os.rmdir(probe)
    except OSError as exc:
        where = f"TMPDIR={wanted} is not a writable folder" if wanted else "no writable temporary folder (/tmp, /var/tmp, /usr/tmp or the working folder)"
        cause = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"{where} ({cause}): model trial loads need one; with a read-only root filesystem mount a writable /tmp "
            "(docker run --tmpfs /tmp, a Kubernetes emptyDir)"
        ) from None
    return str(Path(probe).parent)


@functools.cache
def _fork_server() -> BaseContext | None:
    """multiprocessing's fork server, with onnxruntime imported once: about 20 ms a trial,
    against 300 ms for a fresh interpreter. None where there is none (Windows)."""
    try:
        context = multiprocessing.get_context("forkserver")
    except ValueError:
        return None
    context.set_forkserver_preload(["__main__", "gateway.runtime"])  # the caller's main runs once, not per trial
    return context


_fork_server_failed = False
"""Set when the fork server could not run a trial that a fresh interpreter could (its
children re-import the caller's main module, which fails, e.g., for a script on stdin)."""


class _TrialTimeout(Exception):
    """Internal: the child did not answer in time."""


def _exchange(conn: Connection, data: bytes, deadline: float) -> bytes | None:
    """Send the model, wait for the answer. None: the child died first (EOF, broken pipe)."""
    try:
        conn.send_bytes(data)
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise _TrialTimeout
        return conn.recv_bytes(_MAX_ANSWER_BYTES)
    except (EOFError, OSError):  # OSError: a broken pipe, or an answer over the size limit
        return None


def _forked_trial(
    context: BaseContext, data: bytes, threads: int, budget: int, deadline: float
) -> tuple[bytes | None, int]:
    """(answer or None, exit code) of a trial child forked from the fork server."""
    with tempfile.TemporaryDirectory(prefix="driftgate-trial-") as cwd:
        ours, theirs = context.Pipe()
        child = context.Process(  # type: ignore[attr-defined]
            target=trial_child.run_in_fork, args=(theirs, threads, budget, cwd), name="driftgate-model-trial", daemon=True
        )
        try:
            child.start()
            theirs.close()
            raw = _exchange(ours, data, deadline)
        finally:
            ours.close()
            child.join(max(0.0, deadline - time.monotonic()))
            if child.exitcode is None:
                child.kill()
                child.join()
            exitcode = int(child.exitcode)
            child.close()
    return raw, exitcode


def _fresh_trial(data: bytes, threads: int, budget: int, deadline: float) -> tuple[bytes | None, int]:
    """(answer or None, exit code) of ``python -m gateway.model_check`` (see ``trial_child.main``)."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "gateway.model_check", "--threads", str(threads), "--budget", str(budget)]
    with tempfile.TemporaryDirectory(prefix="driftgate-trial-") as cwd:
        try:
            done = subprocess.run(
                command, input=data, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                cwd=cwd, env=env, timeout=max(0.0, deadline - time.monotonic()), check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise _TrialTimeout from None
    return done.stdout.strip() or None, done.returncode


def trial_load(data: bytes, intra_op_threads: int = 1, timeout: float = limits.TRIAL_WALL_SECONDS) -> TrialReport:
    """Load ``data`` in a resource-limited child process (see the module docstring).

    At most ``MAX_CONCURRENT_TRIALS`` run at once; a caller waits for a slot.

    Raises:
        ModelInvalidError: over budget, crashed, timed out, or onnxruntime refused the model.
    """
    global _fork_server_failed
    budget = limits.load_memory_budget(len(data))
    context = None if _fork_server_failed else _fork_server()
    with _TRIAL_SLOTS:
        t0 = time.monotonic()
        try:
            if context is not None:
                raw, exitcode = _forked_trial(context, data, intra_op_threads, budget, t0 + timeout)
                if raw is None and exitcode > 0:  # the machinery failed, not the model (that is a signal)
                    raw, exitcode = _fresh_trial(data, intra_op_threads, budget, t0 + timeout)
                    if raw is not None:
                        log.info("model trials run in fresh interpreters: the fork server cannot start them here")
                        _fork_server_failed = True
            else:
                raw, exitcode = _fresh_trial(data, intra_op_threads, budget, t0 + timeout)
        except _TrialTimeout:
            log.info("model trial load killed after %.0f s", timeout)
            raise _budget_error("time") from None
    return _verdict(raw, exitcode, budget, time.monotonic() - t0)


def _verdict(raw: bytes | None, exitcode: int, budget: int, seconds: float) -> TrialReport:
    """The child's answer (or its death) as a report or a refusal."""
    if raw is None:
        if exitcode < 0 and -exitcode in _BUDGET_SIGNALS:
            log.info("model trial load killed by signal %d", -exitcode)
            raise _budget_error("CPU time" if -exitcode == signal.SIGXCPU else "memory")
        log.info("model trial load died (exit code %s) without an answer", exitcode)
        raise _crash_error()
    try:
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise TypeError
        if not answer.get("ok"):
            log.info("model trial load refused the model: %s", str(answer.get("log", ""))[:2000])
            if answer.get("reason") == "memory":
                raise _budget_error("memory")
            raise ModelInvalidError("the ONNX model does not load in onnxruntime", reason="load")
        growth = int(answer["memory_growth_bytes"])
        report = TrialReport(list(answer["inputs"]), list(answer["outputs"]), growth, bool(answer["ran"]), seconds)
    except (ValueError, TypeError, KeyError):
        log.info("model trial load answered something unreadable")
        raise _crash_error() from None
    if growth > budget:
        log.info("model trial load grew by %d MiB, over its budget of %d MiB", growth >> 20, budget >> 20)
        raise _budget_error("memory")
    return report

