"""Contained model loading: an ONNX file is inspected, then loaded once in a child process
under resource limits, before the server process builds its own session from it.

Two steps, both raising the one ``ModelInvalidError`` (422, ``model_invalid``):

1. ``check_static(data)`` reads the protobuf wire format of the ``ModelProto`` itself (the
   ``onnx`` package is not a runtime dependency), with a bound on message nesting and on
   the number of fields, and refuses: files over ``MAX_MODEL_BYTES``; bytes that are not a
   model; ORT-format (flatbuffer) files; tensors with external data anywhere (initializers,
   sparse initializers, attribute tensors, in subgraphs and functions: a bundle is exactly
   one model file, so a ``location`` such as ``../secret.bin`` is never followed); operator
   domains outside ``ALLOWED_DOMAINS`` (no custom-op libraries); an IR version above what
   the installed onnxruntime supports (``max_ir_version``).
2. ``trial_load(data)`` loads the model in a child process forked from multiprocessing's
   fork server, which has imported onnxruntime once (about 20 ms a trial, against 300 ms
   for a fresh interpreter; ``python -m gateway.model_check`` runs the same trial by hand,
   bytes on stdin). The child sets ``resource`` limits on itself first (address space
   ``TRIAL_ADDRESS_SPACE_BYTES``, CPU ``TRIAL_CPU_SECONDS``, file size 0, no core files),
   works in an empty folder, reads the bytes from a pipe, creates the session with the
   options of ``gateway.runtime.session_options``, runs one zero batch of ``TRIAL_ROWS``
   rows where the signature allows, and answers JSON: inputs, outputs and how much its
   memory grew. The parent waits ``TRIAL_WALL_SECONDS`` at most. Over budget (memory
   growth over ``load_memory_budget``, address space, CPU, time), a crash (death by a
   signal, or no answer) or a load error: refused. Only the child pays for a bomb; the
   server's memory stays flat. ``check_model`` runs both, and skips the trial for exact
   bytes that passed it before in this process.

Messages are short and generic: never a filesystem path, never onnxruntime's own text
(which names files); that text goes to the server log only.

This module must not know about HTTP, the repository layout or the registry.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
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
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ModelInvalidError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import BaseContext

__all__ = [
    "ALLOWED_DOMAINS",
    "MAX_MODEL_BYTES",
    "ModelFacts",
    "TrialReport",
    "check_model",
    "check_static",
    "inspect_model",
    "max_ir_version",
    "trial_load",
]

log = logging.getLogger("driftgate.model_check")

MAX_MODEL_BYTES = 512 * 1024 * 1024
"""Largest model file accepted (512 MiB): the registration body limit of the admin
endpoint (``gateway.http.admin.MAX_MODEL_BYTES``). There is no setting for it yet."""
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
"""Operator domains a model may import and use: the ONNX standard (``""`` and its alias
``ai.onnx``), ONNX-ML, and onnxruntime's built-in contrib ops. Anything else would need a
custom-op library, which the server never loads."""
MAX_DEPTH = 64
"""Deepest protobuf message nesting accepted (model = 0; each subgraph adds 3: attribute,
graph, node), so about 20 levels of nested ``If``/``Loop``. Below protobuf's own default
recursion limit of 100, which onnxruntime's parser applies too."""
MAX_FIELDS = 5_000_000
"""Most protobuf fields read before giving up: bounds the pure-Python scan (tensor data is
one length-delimited field, skipped without reading, so real models stay far below)."""

TRIAL_ADDRESS_SPACE_BYTES = 2 * 1024**3
"""``RLIMIT_AS`` of the trial child (2 GiB): the interpreter, onnxruntime, the model bytes
and the session must fit. onnxruntime caps constant folding at 1 GiB per node but not in
total, so a few hundred bytes of ``ConstantOfShape`` can ask for gigabytes."""
TRIAL_CPU_SECONDS = 20
"""``RLIMIT_CPU`` of the trial child: session creation with every graph optimisation."""
TRIAL_WALL_SECONDS = 60.0
"""The parent kills a trial child that has not answered within this many seconds."""
TRIAL_ROWS = 64
"""Rows of the zero batch the child runs: the largest warm-up batch of ``gateway.runtime``,
so an allocation that only happens at run time is paid in the child too."""
LOAD_MEMORY_FLOOR_BYTES = 256 * 1024**2
LOAD_MEMORY_PER_FILE_BYTE = 8
"""How much the trial child's memory may grow while it loads and runs the model:
``LOAD_MEMORY_FLOOR_BYTES + LOAD_MEMORY_PER_FILE_BYTE * file size``. Weights take about
their file size once loaded (twice with pre-packing); a 128-byte ``ConstantOfShape(1e8)``
takes 400 MB, and the server would pay that again in its own process."""

MAX_CONCURRENT_TRIALS = 2
"""Trial children alive at once (more registrations wait): bounds what bombs sent in
parallel can take together to this many address-space budgets."""

PASSED_TRIALS_KEPT = 1024
"""SHA-256 digests of files that passed the trial, kept to skip a second trial (LRU)."""

_TRIAL_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_TRIALS)
_PASSED: OrderedDict[tuple[bytes, int], TrialReport] = OrderedDict()
_PASSED_LOCK = threading.Lock()
_MAX_ANSWER_BYTES = 1 << 20
_BUDGET_SIGNALS = {signal.SIGXCPU, signal.SIGKILL}
"""A child killed by these ran out of CPU time (soft, then hard limit) or was OOM-killed."""


# --- the protobuf wire format -------------------------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_IR, _DOMAIN, _OPSET_DOMAIN, _EXTERNAL, _LOCATION = "ir", "domain", "opset-domain", "external", "location"
_OP_TYPE = "op-type"

_SCHEMA: dict[str, dict[int, str]] = {
    # message -> {field number: nested message, or what the field means}; from onnx.proto
    "model": {1: _IR, 7: "graph", 8: "opset", 20: "training", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {4: _OP_TYPE, 5: "attribute", 7: _DOMAIN},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "tensor": {13: _EXTERNAL, 14: _LOCATION},
    "sparse": {1: "tensor", 2: "tensor"},
    "function": {7: "node", 9: "opset", 11: "attribute"},
    "opset": {1: _OPSET_DOMAIN},
    "training": {1: "graph", 2: "graph"},
}
_VARINT_FIELDS = {_IR, _LOCATION}


@dataclass
class ModelFacts:
    """What the static inspection found in a ``ModelProto``."""

    ir_version: int = 0
    opset_domains: set[str] = field(default_factory=set)
    """Domains of ``opset_import`` (the model's and its functions')."""
    node_domains: set[str] = field(default_factory=set)
    """Domains named by nodes (in the main graph, subgraphs, functions and training graphs);
    a node without a domain field uses the default domain and adds nothing here."""
    external_data: bool = False
    """A tensor somewhere has ``data_location = EXTERNAL`` or ``external_data`` entries."""
    has_graph: bool = False
    model_opsets: int = 0
    """``opset_import`` entries of the model itself (onnxruntime needs at least one)."""
    op_types: set[str] = field(default_factory=set)
    """Operator types of every node, subgraphs included."""
    nodes: int = 0
    depth: int = 0
    """Deepest message nesting seen."""
    fields: int = 0


class _Malformed(Exception):
    """Internal: the bytes are not a well-formed protobuf message."""


class _Scanner:
    __slots__ = ("data", "facts")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.facts = ModelFacts()

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        data = self.data
        result = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise _Malformed
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7

    def message(self, kind: str, pos: int, end: int, depth: int) -> None:
        facts = self.facts
        if depth > MAX_DEPTH:
            raise ModelInvalidError(f"the model's subgraphs are nested too deeply (over {MAX_DEPTH} protobuf levels)")
        facts.depth = max(facts.depth, depth)
        if kind == "node":
            facts.nodes += 1
        elif kind == "opset" and depth == 1:
            facts.model_opsets += 1
        schema = _SCHEMA[kind]
        varint = self.varint
        while pos < end:
            key, pos = varint(pos, end)
            number, wire = key >> 3, key & 7
            facts.fields += 1
            if facts.fields > MAX_FIELDS:
                raise ModelInvalidError(f"the model has more than {MAX_FIELDS} protobuf fields")
            meaning = schema.get(number)
            if number == 0:
                raise _Malformed
            if wire == _VARINT:
                value, pos = varint(pos, end)
                if meaning == _IR:
                    facts.ir_version = value
                elif meaning == _LOCATION:
                    facts.external_data = facts.external_data or value != 0
                elif meaning is not None:
                    raise _Malformed
            elif wire == _LEN:
                size, pos = varint(pos, end)
                stop = pos + size
                if stop > end:
                    raise _Malformed
                if meaning in _SCHEMA:
                    if kind == "model" and meaning == "graph":
                        facts.has_graph = True
                    self.message(meaning, pos, stop, depth + 1)  # type: ignore[arg-type]
                elif meaning == _OP_TYPE:
                    facts.op_types.add(self.text(pos, stop))
                elif meaning == _DOMAIN:
                    facts.node_domains.add(self.text(pos, stop))
                elif meaning == _OPSET_DOMAIN:
                    facts.opset_domains.add(self.text(pos, stop))
                elif meaning == _EXTERNAL:
                    facts.external_data = True
                elif meaning in _VARINT_FIELDS:
                    raise _Malformed  # a scalar sent as a packed or garbled field
                pos = stop
            elif wire == _I64 or wire == _I32:
                if meaning is not None:
                    raise _Malformed
                pos += 8 if wire == _I64 else 4
                if pos > end:
                    raise _Malformed
            else:  # groups (3, 4) are not in onnx.proto; 6 and 7 do not exist
                raise _Malformed
        if pos != end:
            raise _Malformed

    def text(self, start: int, stop: int) -> str:
        try:
            return self.data[start:stop].decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed from None


VARIABLE_COST_OPS = frozenset(
    {
        # control flow: how often a body runs is decided by tensor values
        "Loop", "If", "Scan",
        # output sizes set by tensor values, not by the batch's shape
        "ConstantOfShape", "Range", "Tile", "Expand", "NonZero", "Compress", "Unique", "TopK",
        "Resize", "Upsample", "OneHot", "NonMaxSuppression", "StringSplit",
        "SplitToSequence", "SequenceConstruct", "SequenceInsert", "ConcatFromSequence",
    }
)  # fmt: skip
"""Operators that can make one row cost far more than the warm-up measured: a value of
the input (not the batch size) decides how much work a call does. A model using any of them
is never run on the event loop, whatever its warm-up timing (catalogue B10). Ops whose size
inputs are usually constants (Reshape, Slice, Pad) are left out: flagging every model that
has them would send ordinary networks to a thread for nothing."""


def variable_cost(facts: ModelFacts) -> bool:
    """True if the model's cost per call may depend on its input values (``VARIABLE_COST_OPS``)."""
    return not facts.op_types.isdisjoint(VARIABLE_COST_OPS)


def inspect_model(data: bytes) -> ModelFacts:
    """Read the facts the checks need from an ONNX file's bytes.

    Raises:
        ModelInvalidError: the bytes are not a well-formed ``ModelProto``, or nest or
            repeat beyond ``MAX_DEPTH`` / ``MAX_FIELDS``.
    """
    if not data:
        raise ModelInvalidError("the model file is empty")
    if len(data) > MAX_MODEL_BYTES:
        raise ModelInvalidError(f"the model file is larger than the {MAX_MODEL_BYTES >> 20} MiB limit")
    if data[4:8] == b"ORTM":
        raise ModelInvalidError("ORT-format models are not accepted; register the .onnx file")
    scanner = _Scanner(bytes(data))
    try:
        scanner.message("model", 0, len(data), 0)
    except _Malformed:
        raise ModelInvalidError("the file is not a valid ONNX model (malformed protobuf)") from None
    facts = scanner.facts
    if not facts.has_graph or facts.ir_version < 1 or not facts.model_opsets:
        raise ModelInvalidError("the file is not a valid ONNX model (no graph, IR version or opset import)")
    return facts


def check_static(data: bytes) -> ModelFacts:
    """``inspect_model``, then refuse external data, foreign domains and a too-new IR.

    Raises:
        ModelInvalidError: with a short reason (see the module docstring).
    """
    facts = inspect_model(data)
    if facts.external_data:
        raise ModelInvalidError(
            "the model references external data files; a bundle is one self-contained model file "
            "(save it with every tensor inside)"
        )
    foreign = sorted((facts.opset_domains | facts.node_domains) - ALLOWED_DOMAINS)
    if foreign:
        allowed = ", ".join(sorted(d for d in ALLOWED_DOMAINS if d))
        raise ModelInvalidError(
            f"the model uses operator domain {foreign[0][:60]!r}; only the standard domains are served ({allowed})"
        )
    supported = max_ir_version()
    if facts.ir_version > supported:
        raise ModelInvalidError(
            f"the model's IR version {facts.ir_version} is newer than this onnxruntime supports "
            f"(at most {supported}); save it with ir_version={supported} or lower"
        )
    return facts


# --- asking onnxruntime which IR version it supports ----------------------------------------


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, _LEN) + _encode_varint(len(payload)) + payload


def _identity_model(ir_version: int) -> bytes:
    """A hand-encoded one-node model (Identity, float ``[1]``) with ``ir_version``."""
    tensor_type = _len_field(1, _key(1, _VARINT) + _encode_varint(1))  # TypeProto.tensor_type{elem_type: FLOAT}
    value_info = {name: _len_field(1, name.encode()) + _len_field(2, tensor_type) for name in ("x", "y")}
    node = _len_field(1, b"x") + _len_field(2, b"y") + _len_field(4, b"Identity")
    graph = (
        _len_field(1, node)
        + _len_field(2, b"probe")
        + _len_field(11, value_info["x"])
        + _len_field(12, value_info["y"])
    )
    opset = _len_field(1, b"") + _key(2, _VARINT) + _encode_varint(17)
    return _key(1, _VARINT) + _encode_varint(ir_version) + _len_field(8, opset) + _len_field(7, graph)


@functools.cache
def max_ir_version() -> int:
    """The highest ONNX IR version the installed onnxruntime loads.

    onnxruntime has no API for it (it refuses a newer model at load: "Unsupported model IR
    version"), so this asks it: a binary search over tiny hand-encoded identity models,
    loaded in this process once (a few milliseconds), then cached.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4

    def loads(ir: int) -> bool:
        try:
            ort.InferenceSession(_identity_model(ir), options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - onnxruntime raises several unrelated types
            return False
        return True

    low, high = 3, 128  # IR 3 is the oldest onnxruntime reads; 128 is far beyond any release
    if not loads(low):
        return low
    while low < high:  # invariant: loads(low); every IR above high is refused
        mid = (low + high + 1) // 2
        if loads(mid):
            low = mid
        else:
            high = mid - 1
    return low


# --- the trial load in a child process ------------------------------------------------------


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


def load_memory_budget(model_bytes: int) -> int:
    """How much the trial child's memory may grow for a model file of ``model_bytes``."""
    return LOAD_MEMORY_FLOOR_BYTES + LOAD_MEMORY_PER_FILE_BYTE * model_bytes


def _budget_error(what: str) -> ModelInvalidError:
    return ModelInvalidError(f"the model exceeds the resource budget for loading ({what})", reason="budget")


def _crash_error() -> ModelInvalidError:
    return ModelInvalidError("the model crashed the loader", reason="crashed")


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
            target=_trial_child, args=(theirs, threads, budget, cwd), name="driftgate-model-trial", daemon=True
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
    """(answer or None, exit code) of ``python -m gateway.model_check`` (see ``main``)."""
    package_root = str(Path(__file__).resolve().parent.parent)
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


def trial_load(data: bytes, intra_op_threads: int = 1, timeout: float = TRIAL_WALL_SECONDS) -> TrialReport:
    """Load ``data`` in a resource-limited child process (see the module docstring).

    At most ``MAX_CONCURRENT_TRIALS`` run at once; a caller waits for a slot.

    Raises:
        ModelInvalidError: over budget, crashed, timed out, or onnxruntime refused the model.
    """
    global _fork_server_failed
    budget = load_memory_budget(len(data))
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


def check_model(data: bytes, intra_op_threads: int = 1) -> TrialReport:
    """``check_static``, then ``trial_load``: everything before the server's own session.

    A file whose exact bytes passed the trial before in this process is not tried again
    (the same bytes load the same way): a repository of copies, a model registered again
    with a new spec, or a ``load`` after an ``unload`` costs no new child. Refusals are
    never remembered, as a timeout may have been the machine's fault.
    """
    facts = check_static(data)
    key = (hashlib.sha256(data).digest(), intra_op_threads)
    with _PASSED_LOCK:
        if key in _PASSED:
            _PASSED.move_to_end(key)
            return _PASSED[key]
    report = dataclasses.replace(trial_load(data, intra_op_threads), variable_cost=variable_cost(facts))
    with _PASSED_LOCK:
        _PASSED[key] = report
        while len(_PASSED) > PASSED_TRIALS_KEPT:
            _PASSED.popitem(last=False)
    return report


# --- the child ------------------------------------------------------------------------------


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

    limits = {
        "RLIMIT_AS": (TRIAL_ADDRESS_SPACE_BYTES, TRIAL_ADDRESS_SPACE_BYTES),
        "RLIMIT_CPU": (TRIAL_CPU_SECONDS, TRIAL_CPU_SECONDS + 1),
        "RLIMIT_FSIZE": (0, 0),
        "RLIMIT_CORE": (0, 0),
    }
    for name, (soft, hard) in limits.items():
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
    import onnxruntime as ort

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
                session.run(None, {inputs[0].name: np.zeros((TRIAL_ROWS, width), dtype=np.float32)})
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


def _trial_child(conn: Connection, threads: int, budget: int, cwd: str) -> None:
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
    budget = int(args[args.index("--budget") + 1]) if "--budget" in args else load_memory_budget(len(data))
    sys.stdout.write(_answer(data, threads, budget).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
