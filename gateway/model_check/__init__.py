"""Contained model loading: an ONNX file is inspected, then loaded once in a child process
under resource limits, before the server process builds its own session from it.

Two steps, both raising the one ``ModelInvalidError`` (422, ``model-invalid``):

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

The parts, each its own module:

- ``limits``: the numbers above, and ``load_memory_budget``;
- ``wire_format`` and ``protobuf_scanner``: the bounded protobuf scan (``inspect_model``);
- ``ir_probe``: ``max_ir_version``, asked of onnxruntime with hand-encoded models;
- ``static_checks``: ``check_static`` and ``variable_cost``;
- ``trial`` (parent side) and ``trial_child`` (the child, and ``python -m gateway.model_check``);
- ``check``: ``check_model``, and the memory of bytes that passed.

This package must not know about HTTP, the repository layout or the registry.
"""


from __future__ import annotations

from gateway.model_check.check import check_model
from gateway.model_check.ir_probe import max_ir_version
from gateway.model_check.limits import (
    ALLOWED_DOMAINS,
    LOAD_MEMORY_FLOOR_BYTES,
    LOAD_MEMORY_PER_FILE_BYTE,
    MAX_CONCURRENT_TRIALS,
    MAX_DEPTH,
    MAX_FIELDS,
    MAX_MODEL_BYTES,
    PASSED_TRIALS_KEPT,
    TRIAL_ADDRESS_SPACE_BYTES,
    TRIAL_CPU_SECONDS,
    TRIAL_ROWS,
    TRIAL_WALL_SECONDS,
    load_memory_budget,
)
from gateway.model_check.protobuf_scanner import ModelFacts, inspect_model
from gateway.model_check.static_checks import VARIABLE_COST_OPS, check_static, variable_cost
from gateway.model_check.trial import TrialReport, trial_load

__all__ = [
    "ALLOWED_DOMAINS",
    "LOAD_MEMORY_FLOOR_BYTES",
    "LOAD_MEMORY_PER_FILE_BYTE",
    "MAX_CONCURRENT_TRIALS",
    "MAX_DEPTH",
    "MAX_FIELDS",
    "MAX_MODEL_BYTES",
    "PASSED_TRIALS_KEPT",
    "TRIAL_ADDRESS_SPACE_BYTES",
    "TRIAL_CPU_SECONDS",
    "TRIAL_ROWS",
    "TRIAL_WALL_SECONDS",
    "VARIABLE_COST_OPS",
    "ModelFacts",
    "TrialReport",
    "check_model",
    "check_static",
    "inspect_model",
    "load_memory_budget",
    "max_ir_version",
    "trial_load",
    "variable_cost",
]
