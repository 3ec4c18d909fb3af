"""The model runtime: one onnxruntime session per model version.

``OnnxRuntime`` loads an ONNX model, checks its signature against the spec (input width
and dtype; for a classifier, one probability column per label, and the model's own label
output agreeing with the spec's label order), warms it up, and then runs batches.

Session settings are deliberate (see ``session_options``). Classifier probabilities are
read whichever way the exporter wrote them: a plain ``[N, k]`` float tensor, or
skl2onnx's ZipMap, a sequence of ``{label: probability}`` maps (slower: export with
``zipmap=False`` where you can).

This module must not know about HTTP, metrics or the repository layout.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import onnxruntime as ort

from gateway.errors import ConfigError, InferenceFailedError, SpecMismatchError
from gateway.samples import sample_records

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from gateway.spec import FeatureSpec

__all__ = ["Inference", "OnnxRuntime", "Runtime", "parse_providers", "session_options", "use_providers"]

log = logging.getLogger("driftgate.runtime")

WARMUP_BATCHES = (1, 8, 64)
"""Batch sizes run at warm-up: onnxruntime allocates and specialises per shape on first
use, so the first real request of each common size must not pay for it."""
WARMUP_ROUNDS = 3


class Inference:
    """What the model said about a batch.

    Attributes:
        probabilities: ``(n, len(labels))`` float32 in the spec's label order, or None.
        values: ``(n,)`` float32 predictions of a regressor, or None.
    """

    __slots__ = ("probabilities", "values")

    def __init__(
        self, probabilities: NDArray[np.float32] | None = None, values: NDArray[np.float32] | None = None
    ) -> None:
        self.probabilities = probabilities
        self.values = values


class Runtime(Protocol):
    """A loaded, warmed model. ``run`` may be called from several threads at once."""

    input_width: int
    seconds_per_call: float
    seconds_per_row: float
    """A call of ``n`` rows is expected to take ``seconds_per_call + n * seconds_per_row``
    (fitted at warm-up, where ``variable_cost`` is false)."""
    variable_cost: bool
    """Its work may depend on input values (``gateway.model_check.variable_cost``)."""

    def run(self, matrix: NDArray[np.float32]) -> Inference: ...


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """onnxruntime settings for a sidecar on a small machine.

    - ``intra_op_threads`` (default 1): parallelism comes from concurrent requests; more
      threads per call only contend with the HTTP loop on 2 cores, and spinning worker
      threads burn a core while idle (so spinning is off).
    - ``ORT_ENABLE_ALL``: every graph optimisation, paid once at load.
    - sequential execution: the exported models are chains of small operators.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
    return opts


PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "azure": "AzureExecutionProvider",
}
"""Short names of ``--providers`` and the onnxruntime provider each stands for."""

_providers: list[str] = ["CPUExecutionProvider"]


def parse_providers(text: str) -> list[str]:
    """onnxruntime provider names from ``--providers`` text (``cuda,cpu``), in its order.

    Raises:
        ConfigError: an empty list, an unknown name, or one this onnxruntime build lacks
            (``onnxruntime.get_available_providers()``), with what is available.
    """
    known = {**PROVIDER_NAMES, **{full.lower(): full for full in PROVIDER_NAMES.values()}}
    available = ort.get_available_providers()
    short = {full: name for name, full in PROVIDER_NAMES.items()}
    offered = ", ".join(short.get(full, full) for full in available)
    chosen: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        full = known.get(item.lower()) or next((a for a in available if a.lower() == item.lower()), None)
        if full is None:
            raise ConfigError(f"unknown execution provider {item!r}: this onnxruntime offers {offered}")
        if full not in available:
            hint = " (onnxruntime-gpu has it)" if full in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else ""
            raise ConfigError(f"execution provider {item!r} ({full}) is not available in onnxruntime {ort.__version__}{hint}: it offers {offered}")
        if full not in chosen:
            chosen.append(full)
    return chosen


def use_providers(text: str) -> list[str]:
    """Make ``text``'s providers (``parse_providers``) those of every session created from now
    on in this process (the server calls it once at start-up); returns them."""
    global _providers
    _providers = parse_providers(text)
    return list(_providers)


def _is_float_tensor(arg: Any) -> bool:
    return bool(arg.type == "tensor(float)")


def _timed(run: Any, matrix: NDArray[np.float32]) -> float:
    t0 = time.perf_counter()
    run(matrix)
    return time.perf_counter() - t0


class OnnxRuntime:
    """One onnxruntime session, checked against ``spec`` and warmed up.

    Args:
        model: the ONNX file's bytes.
        spec: the feature spec registered with the model.
        intra_op_threads: see ``session_options``.

    Raises:
        SpecMismatchError: the model does not load, or its signature does not fit the spec.
    """

    def __init__(self, model: bytes, spec: FeatureSpec, intra_op_threads: int = 1) -> None:
        try:
            self.session = ort.InferenceSession(model, session_options(intra_op_threads), providers=_providers)
        except Exception as exc:  # onnxruntime raises several unrelated types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SpecMismatchError(f"the ONNX model does not load: {first[:300]}") from exc
        self.spec = spec
        self.input_width = len(spec.output_columns)
        self._check_input()
        self._label_output: str | None = None
        self._zipmap = False
        if spec.output is not None and spec.output.task == "classification":
            self._output = self._find_probabilities()
        else:
            self._output = self._find_values()
        self._labels = spec.output.labels if spec.output is not None else ()
        self._outputs = [self._output]
        self._run_options = ort.RunOptions()
        """One for every call: without it, each ``run`` builds a default one (about 1.5 us of a
        10 us one-row call). onnxruntime only reads it during a run, so threads may share it."""
        self.seconds_per_call = self.seconds_per_row = 0.0
        self.variable_cost = False
        self._warm_up()

    # -- signature checks --

    def _check_input(self) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise SpecMismatchError(
                f"the model has {len(inputs)} inputs ({names}); driftgate feeds one [N, {self.input_width}] float32 matrix"
            )
        arg = inputs[0]
        if not _is_float_tensor(arg):
            raise SpecMismatchError(
                f"the model's input {arg.name!r} is {arg.type}; the spec's transform produces tensor(float)"
            )
        shape = arg.shape
        if len(shape) != 2:
            raise SpecMismatchError(
                f"the model's input {arg.name!r} has shape {shape}; expected [N, {self.input_width}]"
            )
        width = shape[1]
        if isinstance(width, int) and width != self.input_width:
            raise SpecMismatchError(
                f"the model takes {width} input columns but the spec's transform produces {self.input_width}"
            )
        self._input = arg.name

    def _find_probabilities(self) -> str:
        outputs = self.session.get_outputs()
        n_labels = len(self.spec.output.labels)  # type: ignore[union-attr]
        for arg in outputs:
            if arg.type.startswith("seq(map("):
                self._zipmap = True
                found = arg.name
                break
            if _is_float_tensor(arg) and len(arg.shape) == 2:
                width = arg.shape[1]
                if isinstance(width, int) and width != n_labels:
                    raise SpecMismatchError(
                        f"the model's output {arg.name!r} has {width} probability columns but the spec has {n_labels} labels"
                    )
                found = arg.name
                break
        else:
            raise SpecMismatchError(
                "the model has no probability output (a [N, k] float tensor or a ZipMap); is it a classifier?"
            )
        labels = [a.name for a in outputs if a.name != found and a.type in ("tensor(int64)", "tensor(string)")]
        self._label_output = labels[0] if labels else None
        return str(found)

    def _find_values(self) -> str:
        for arg in self.session.get_outputs():
            if _is_float_tensor(arg) and (
                len(arg.shape) == 1
                or (len(arg.shape) == 2 and arg.shape[1] in (1, None) or isinstance(arg.shape[1], str))
            ):
                return str(arg.name)
        raise SpecMismatchError("the model has no [N] or [N, 1] float output for a regression")

    # -- running --

    def run(self, matrix: NDArray[np.float32]) -> Inference:
        """Run a ``(n, input_width)`` float32 batch. Safe to call from several threads."""
        try:
            out = self.session.run(self._outputs, {self._input: matrix}, self._run_options)[0]
        except Exception as exc:
            # onnxruntime's text names files and internals: it goes to the log, not the client
            log.error("onnxruntime failed on a batch of %d rows: %s", len(matrix), exc)
            raise InferenceFailedError("the model failed on this input; the cause is in the server log") from exc
        if self._labels:
            if self._zipmap:
                out = self._from_zipmap(out)
            elif out.dtype != np.float32:
                out = out.astype(np.float32)
            return Inference(probabilities=out)
        return Inference(values=out.reshape(-1).astype(np.float32, copy=False))

    def _from_zipmap(self, maps: list[dict[Any, float]]) -> NDArray[np.float32]:
        if not maps:
            return np.zeros((0, len(self._labels)), dtype=np.float32)
        keys = {str(k): k for k in maps[0]}
        missing = [label for label in self._labels if label not in keys]
        if missing:
            raise SpecMismatchError(f"the model's classes {sorted(keys)} do not include the spec's labels {missing}")
        order = [keys[label] for label in self._labels]
        return np.array([[m[k] for k in order] for m in maps], dtype=np.float32)

    def _warm_up(self) -> None:
        """Run every warm-up batch size, check classifier labels, and fit the cost of a
        call to its rows (``Runtime.seconds_per_call``, ``seconds_per_row``) from the
        fastest of several calls of one row and of the largest warm-up batch: a model of
        many small operators costs nearly as much for one row as for 64 (the bundled
        digits ensemble: 0.35 ms and 0.9 ms), a wide one nearly 64 times as much."""
        largest = max(WARMUP_BATCHES)
        records = sample_records(self.spec, largest, seed=7)
        matrix = self.spec.transform(records)
        for _ in range(WARMUP_ROUNDS):
            for n in WARMUP_BATCHES:
                self.run(matrix[:n])
        if self._labels:
            self._check_labels(matrix)
        one = min(_timed(self.run, matrix[:1]) for _ in range(10))
        many = min(_timed(self.run, matrix) for _ in range(5))
        self.seconds_per_row = max(0.0, (many - one) / (largest - 1))
        self.seconds_per_call = max(0.0, one - self.seconds_per_row)

    def _check_labels(self, matrix: NDArray[np.float32]) -> None:
        probabilities = self.run(matrix).probabilities
        assert probabilities is not None
        if probabilities.shape[1] != len(self._labels):
            raise SpecMismatchError(
                f"the model answers {probabilities.shape[1]} probability columns but the spec has {len(self._labels)} labels"
            )
        if self._label_output is None:
            return
        said = self.session.run([self._label_output], {self._input: matrix})[0]
        expected = np.asarray(self._labels, dtype=object)[probabilities.argmax(axis=1)]
        said_text = np.array([str(v) for v in said.tolist()], dtype=object)
        unknown = sorted(set(said_text.tolist()) - set(self._labels))
        if unknown:
            raise SpecMismatchError(
                f"the model predicts labels {unknown} that are not among the spec's labels {list(self._labels)}"
            )
        if not (said_text == expected).all():
            raise SpecMismatchError(
                f"the model's labels do not follow the spec's label order {list(self._labels)}: "
                "its probability columns are in another order"
            )
