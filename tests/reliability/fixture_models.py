"""Fixture models for the reliability suite, built with ``onnx.helper`` at test time.

Every model here is a *regressor* over one feature, ``x``, fed as it is (``passthrough``
transform): the model sees exactly the number the client sent. The spec (``knob_spec``)
declares ``x`` in ``[0, 1]`` with ``on_violation: flag``, so the server warms the model up
with harmless values from that range, and a client may still send ``x = 900``: the row
is flagged and predicted. That lets one fixture behave normally at load and warm-up and
misbehave on demand:

- ``slow_model``: for ``x`` above 1, multiplies ``k x k`` matrices (``k = x``) a few
  times, so the run time grows with ``x`` (``x = 1``: microseconds; ``x = SLOW_X``: about
  a second on one core);
- ``reshape_error_model``: for ``x >= 2`` a ``Reshape`` to a width that does not fit, so
  onnxruntime fails at run time (B11);
- ``nan_model``: ``x / x``, NaN at ``x = 0``;
- ``linear_model``: ``y = x * scale + bias`` (distinct versions answer distinct values);
- broken bundles for refusal tests (B5): truncated bytes, garbage, IR version 14, an
  unsupported opset, two inputs, a wrong input width, an integer input.

Always ``ir_version=9``: onnx writes IR 14 by default, which onnxruntime 1.31 refuses.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gateway.model_check import max_ir_version
from gateway.spec import FeatureSpec, encode_spec

__all__ = [
    "BROKEN_MODELS",
    "IR_VERSION",
    "MEDIUM_X",
    "OPSET",
    "SLOW_X",
    "assert_alive",
    "knob_predict",
    "knob_repository",
    "knob_spec",
    "knob_spec_bytes",
    "linear_model",
    "nan_model",
    "reshape_error_model",
    "slow_model",
    "write_version",
]

IR_VERSION = 9
OPSET = 17
SLOW_X = 2048.0
"""An ``x`` for which ``slow_model()`` takes about 1-1.5 s on one core of this machine
(eight 2048 x 2048 float32 matrix products, about 137 GFLOP)."""
MEDIUM_X = 1024.0
"""An ``x`` for which ``slow_model()`` takes about 0.1-0.2 s (an eighth of ``SLOW_X``'s work)."""


def knob_spec(name: str = "knob") -> FeatureSpec:
    """One number feature ``x`` in ``[0, 1]``, flagged (not rejected) outside it; a regression."""
    xs = np.linspace(0.0, 1.0, 101)
    data = {"x": xs.tolist(), "y": (xs * 2.0).tolist()}
    return FeatureSpec.fit(
        data, name=name, target="y", transforms={"x": "passthrough"}, on_violation="flag", margin=0.0
    )


def knob_spec_bytes(name: str = "knob") -> bytes:
    return encode_spec(knob_spec(name))


def _model(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], *, ir_version: int = IR_VERSION, opset: int = OPSET
) -> bytes:
    graph = helper.make_graph(
        nodes,
        "fixture",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="driftgate-tests")
    model.ir_version = ir_version
    return model.SerializeToString()


def _const(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def linear_model(scale: float = 2.0, bias: float = 0.0, *, ir_version: int = IR_VERSION, opset: int = OPSET) -> bytes:
    """``Y = X * scale + bias``."""
    return _model(
        [helper.make_node("Mul", ["X", "scale"], ["m"]), helper.make_node("Add", ["m", "bias"], ["Y"])],
        [_const("scale", scale), _const("bias", bias)],
        ir_version=ir_version,
        opset=opset,
    )


def padded_model(scale: float, megabytes: int) -> bytes:
    """``linear_model(scale)`` plus an unused initializer: a file of ``megabytes`` MiB,
    big enough to take a while to write."""
    model = onnx.load_from_string(linear_model(scale))
    model.graph.initializer.append(numpy_helper.from_array(np.ones(megabytes * 262144, dtype=np.float32), "padding"))
    return model.SerializeToString()


def slow_model(rounds: int = 8) -> bytes:
    """``Y = X + 0 * sum(M^rounds)`` with ``M`` a ``k x k`` zero matrix, ``k = clip(max(X), 1, 2048)``.

    The size of ``M`` comes from the input, so nothing can be folded at load time, and
    the warm-up (``x`` in ``[0, 1]``, ``k = 1``) is instant. A row with ``x = SLOW_X`` is slow.
    """
    nodes = [
        helper.make_node("ReduceMax", ["X"], ["mx"], keepdims=0),
        helper.make_node("Clip", ["mx", "one", "cap"], ["mxc"]),
        helper.make_node("Cast", ["mxc"], ["k"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["k", "shape1"], ["k1"]),
        helper.make_node("Concat", ["k1", "k1"], ["kk"], axis=0),
        helper.make_node(
            "ConstantOfShape", ["kk"], ["m0"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
        ),
    ]
    prev = "m0"
    for i in range(rounds):
        nodes.append(helper.make_node("MatMul", [prev, "m0"], [f"p{i}"]))
        prev = f"p{i}"
    nodes += [
        helper.make_node("ReduceSum", [prev], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["s0"]),
        helper.make_node("Add", ["X", "s0"], ["Y"]),
    ]
    inits = [
        _const("one", 1.0),
        _const("cap", 2048.0),
        _const("zero", 0.0),
        _const("shape1", [1], np.int64),
    ]
    return _model(nodes, inits)


def reshape_error_model() -> bytes:
    """``Y = Reshape(Reshape(X, [-1, w]), [-1, 1])`` with ``w = max(1, floor(max(X)))``.

    For ``x`` in ``[0, 2)`` ``w`` is 1 and the model is the identity; a one-row batch with
    ``x >= 2`` asks for ``[-1, 2]`` from one element, and onnxruntime fails at run time.
    """
    nodes = [
        helper.make_node("ReduceMax", ["X"], ["mx"], keepdims=0),
        helper.make_node("Max", ["mx", "one"], ["mx1"]),
        helper.make_node("Floor", ["mx1"], ["fl"]),
        helper.make_node("Cast", ["fl"], ["w"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["w", "shape1"], ["w1"]),
        helper.make_node("Concat", ["minus1", "w1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["X", "shape"], ["r"]),
        helper.make_node("Reshape", ["r", "col"], ["Y"]),
    ]
    inits = [
        _const("one", 1.0),
        _const("shape1", [1], np.int64),
        _const("minus1", [-1], np.int64),
        _const("col", [-1, 1], np.int64),
    ]
    return _model(nodes, inits)


def nan_model() -> bytes:
    """``Y = X / X``: NaN for ``x = 0``, 1 elsewhere."""
    return _model([helper.make_node("Div", ["X", "X"], ["Y"])], [])


def _two_inputs() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "Z"], ["Y"])],
        "two-inputs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1]) for n in ("X", "Z")],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def _typed_io(width: int, elem: int) -> bytes:
    """An identity-like model whose input is ``[N, width]`` of ``elem`` (the spec wants ``[N, 1]`` float)."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["X"], ["s"], keepdims=1),
            helper.make_node("Cast", ["s"], ["Y"], to=TensorProto.FLOAT),
        ],
        "typed-io",
        [helper.make_tensor_value_info("X", elem, ["N", width])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1])],
    )
    # ReduceSum over the last axis keeps [N, 1]; opset 13+ takes axes as an input
    graph.node[0].input.append("axes")
    graph.initializer.append(_const("axes", [1], np.int64))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def _broken() -> dict[str, bytes]:
    good = linear_model()
    return {
        "truncated": good[: len(good) // 2],
        "garbage": bytes(range(256)) * 4,
        # one past the newest IR this onnxruntime reads (14 was too new for 1.31, not for 1.32)
        "ir_version_too_new": linear_model(ir_version=max_ir_version() + 1),
        "opset_unsupported": linear_model(opset=99),
        "two_inputs": _two_inputs(),
        "wrong_width": _typed_io(3, TensorProto.FLOAT),
        "integer_input": _typed_io(1, TensorProto.INT64),
    }


BROKEN_MODELS: dict[str, bytes] = _broken()
"""Bundles that registration must refuse with the knob spec: name -> model bytes."""


# --- small helpers shared by the reliability tests ---------------------------------------


def write_version(repository: Path, name: str, version: str, model: bytes, spec: bytes) -> Path:
    """Write ``<repository>/<name>/<version>/`` directly (not through registration)."""
    folder = repository / name / version
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model)
    (folder / "spec.yaml").write_bytes(spec)
    return folder


def knob_repository(root: Path, models: dict[str, bytes] | None = None) -> Path:
    """A repository of knob-spec models, version 1 each (default: ``knob`` = ``linear_model()``)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, model in (models or {"knob": linear_model()}).items():
        write_version(root, name, "1", model, knob_spec_bytes(name))
    return root


def knob_predict(
    client: httpx.Client, x: float, name: str = "knob", version: str | None = None, **kwargs: Any
) -> httpx.Response:
    path = f"/v1/models/{name}:predict" if version is None else f"/v1/models/{name}/versions/{version}:predict"
    return client.post(path, json={"instances": [{"x": x}]}, **kwargs)


def assert_alive(
    url: str, process: subprocess.Popen[bytes] | None, pid: int | None = None, budget: float = 0.1
) -> None:
    """ "Alive": ``GET /v2/health/live`` answers 200 within ``budget`` seconds (best of three,
    so one scheduling hiccup on a shared machine is not a verdict) and the PID is unchanged."""
    assert process is not None and process.poll() is None, "the server process has exited"
    if pid is not None:
        assert process.pid == pid, f"the server's PID changed: {pid} -> {process.pid}"
    best = float("inf")
    with httpx.Client(timeout=5) as client:
        for _ in range(3):
            t0 = time.perf_counter()
            response = client.get(f"{url}/v2/health/live")
            best = min(best, time.perf_counter() - t0)
            assert response.status_code == 200, response.text
            if best < budget:
                break
    assert best < budget, f"liveness took {best * 1000:.0f} ms (budget {budget * 1000:.0f} ms)"
