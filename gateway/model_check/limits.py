"""The numbers the model checks enforce: file size, protobuf nesting and fields, operator
domains, and the trial child's resource budget."""

from __future__ import annotations

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


def load_memory_budget(model_bytes: int) -> int:
    """How much the trial child's memory may grow for a model file of ``model_bytes``."""
    return LOAD_MEMORY_FLOOR_BYTES + LOAD_MEMORY_PER_FILE_BYTE * model_bytes
