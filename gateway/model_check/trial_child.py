"""The trial load, child side: set resource limits on itself, create the onnxruntime session
from bytes it is sent, run one zero batch where the signature allows, and answer JSON (never a
pickle: the server must not unpickle what a model's process sends). ``run_in_fork`` is the
fork server's entry point; ``main`` is a fresh interpreter's (``python -m gateway.model_check``)."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from gateway.model_check import limits

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["main", "run_in_fork"]

log = logging.getLogger("driftgate.model_check")


def _status_bytes(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` (0 if unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if key == "VmHWM":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return 0


def _reset_peak() -> None:
    """Start ``VmHWM`` afresh (a forked child inherits its parent's); Linux only."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass


def _limit_self() -> None:
    """Set this process's limits (the trial child only). CPU: ``SIGXCPU`` at the soft
    limit, ``SIGKILL`` a second later if that is ignored."""
    import resource

    wanted = {
        "RLIMIT_AS": (limits.TRIAL_ADDRESS_SPACE_BYTES, limits.TRIAL_ADDRESS_SPACE_BYTES),
        "RLIMIT_CPU": (limits.TRIAL_CPU_SECONDS, limits.TRIAL_CPU_SECONDS + 1),
        "RLIMIT_FSIZE": (0, 0),
        "RLIMIT_CORE": (0, 0),
    }
    for name, (soft, hard) in wanted.items():
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        _, current = resource.getrlimit(limit)
        if current != resource.RLIM_INFINITY:  # a hard limit can only be lowered
            soft, hard = min(soft, current), min(hard, current)
        try:
            resource.setrlimit(limit, (soft, hard))
        except (ValueError, OSError):  # a platform without that limit
            log.debug("cannot set %s", name)


def _describe(args: Any) -> list[dict[str, Any]]:
    return [{"name": a.name, "type": a.type, "shape": list(a.shape) if a.shape is not None else None} for a in args]


def _is_memory_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "bad_alloc" in text or "failed to allocate" in text


def _trial(data: bytes, threads: int, budget: int) -> dict[str, Any]:
    """Create the session and run a zero batch; the answer for the parent."""
    import numpy as np
    import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

    from gateway.runtime import session_options

    options = session_options(threads)
    options.add_session_config_entry("session.load_model_format", "ONNX")  # never an ORT-format file
    _reset_peak()
    before = _status_bytes("VmRSS")
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which refuses the model
        return {"ok": False, "reason": "memory" if _is_memory_error(exc) else "load", "log": str(exc)[:2000]}
    inputs, outputs = session.get_inputs(), session.get_outputs()
    ran = False
    growth = max(0, _status_bytes("VmHWM") - before)
    if growth > budget:  # no need to run it: the parent refuses it anyway
        return {"ok": False, "reason": "memory", "log": f"session creation grew memory by {growth} bytes"}
    if len(inputs) == 1 and inputs[0].type == "tensor(float)" and len(inputs[0].shape) == 2:
        width = inputs[0].shape[1]
        if isinstance(width, int) and 0 < width <= 1 << 16:
            try:
                session.run(None, {inputs[0].name: np.zeros((limits.TRIAL_ROWS, width), dtype=np.float32)})
                ran = True
            except Exception as exc:  # noqa: BLE001 - the server's own warm-up decides about run errors
                if _is_memory_error(exc):
                    return {"ok": False, "reason": "memory", "log": str(exc)[:2000]}
    growth = max(0, _status_bytes("VmHWM") - before)
    return {
        "ok": True, "inputs": _describe(inputs), "outputs": _describe(outputs),
        "memory_growth_bytes": growth, "ran": ran,
    }  # fmt: skip


def _answer(data: bytes, threads: int, budget: int) -> bytes:
    try:
        answer = _trial(data, threads, budget)
    except MemoryError:
        answer = {"ok": False, "reason": "memory", "log": "MemoryError"}
    return json.dumps(answer).encode()


def run_in_fork(conn: Connection, threads: int, budget: int, cwd: str) -> None:
    """The child's entry point: limits first, then the bytes from the pipe, JSON back
    (never a pickle: the server must not unpickle what a model's process sends)."""
    _limit_self()
    os.chdir(cwd)  # an empty folder: nothing relative to it can be read
    quiet = os.open(os.devnull, os.O_WRONLY)  # onnxruntime's own log lines: they come back in the answer
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    try:
        data = conn.recv_bytes()
    except MemoryError:  # the file alone does not fit the address space
        conn.send_bytes(b'{"ok": false, "reason": "memory", "log": "the model bytes do not fit"}')
        return
    conn.send_bytes(_answer(data, threads, budget))
    conn.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.model_check [--threads N] [--budget BYTES]``: one trial in a fresh
    interpreter, under the same limits: model bytes on stdin, the JSON answer on stdout."""
    args = sys.argv[1:] if argv is None else argv
    threads = int(args[args.index("--threads") + 1]) if "--threads" in args else 1
    _limit_self()
    data = sys.stdin.buffer.read()
    budget = int(args[args.index("--budget") + 1]) if "--budget" in args else limits.load_memory_budget(len(data))
    sys.stdout.write(_answer(data, threads, budget).decode() + "\n")
    return 0
