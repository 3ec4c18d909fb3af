"""``gateway.model_check``: the static inspection of ONNX bytes and the contained trial load.

Fixture models are built here with ``onnx.helper`` (always ``ir_version=9``: onnx writes
IR 14 by default, which this onnxruntime refuses). The memory bombs are the probes of the
reliability research (E7): a 128-byte ``ConstantOfShape(1e8)`` (400 MB once folded), four
``ConstantOfShape(2e8)`` (1.6 GB) and one of 1e9 (4 GB, over the address-space limit). The
server process's memory is read from ``/proc/self/status``: its peak (``VmHWM``, reset
through ``/proc/self/clear_refs`` where the kernel allows) must stay within 20 MB of
where it was while the child pays for the bomb.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, external_data_helper, helper, numpy_helper

from gateway import model_check
from gateway.cli import EXIT_FAILURE, main
from gateway.errors import ModelInvalidError
from gateway.model_check import check_model, check_static, inspect_model, max_ir_version, trial_load
from gateway.registry import ModelRegistry, load_model
from gateway.repository import ModelRepository

IR_VERSION = 9
OPSET = 17
ROOT = Path(__file__).resolve().parents[2]
DIABETES = ROOT / "models" / "diabetes" / "1"
MB = 1024 * 1024
RSS_SLACK = 20 * MB

# --- fixture models ---------------------------------------------------------------------


def _io(name: str, width: int = 3) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", width])


def _serialize(
    nodes: list[onnx.NodeProto],
    *,
    initializers: list[onnx.TensorProto] | None = None,
    sparse: list[onnx.SparseTensorProto] | None = None,
    outputs: list[onnx.ValueInfoProto] | None = None,
    opsets: list[tuple[str, int]] | None = None,
    functions: list[onnx.FunctionProto] | None = None,
    ir_version: int = IR_VERSION,
) -> bytes:
    graph = helper.make_graph(
        nodes, "fixture", [_io("X")], outputs or [_io("Y")], initializer=initializers or [], sparse_initializer=sparse
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in (opsets or [("", OPSET)])],
        functions=functions or [],
    )
    model.ir_version = ir_version
    return model.SerializeToString()


def identity_model(ir_version: int = IR_VERSION) -> bytes:
    """``Y = X``, ``[N, 3]`` float: the smallest model that loads and runs."""
    return _serialize([helper.make_node("Identity", ["X"], ["Y"])], ir_version=ir_version)


def _external(name: str, location: str, *, flag: bool = True) -> onnx.TensorProto:
    """A float tensor whose data lives in the file ``location`` (``flag``: data_location=EXTERNAL)."""
    tensor = numpy_helper.from_array(np.zeros(3, dtype=np.float32), name)
    external_data_helper.set_external_data(tensor, location=location, offset=0, length=12)
    if flag:
        tensor.data_location = TensorProto.EXTERNAL
    else:  # entries only: data_location stays DEFAULT
        tensor.data_location = TensorProto.DEFAULT
    tensor.ClearField("raw_data")
    return tensor


def _branch(name: str, nodes: list[onnx.NodeProto]) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [_io(f"{name}_out")])


def external_data_model(location: str, where: str) -> bytes:
    """``Y = X + W`` with ``W`` read from ``location``, declared ``where`` in the model."""
    add = helper.make_node("Add", ["X", "W"], ["Y"])
    if where == "initializer":
        return _serialize([add], initializers=[_external("W", location)])
    if where == "entries-only":
        return _serialize([add], initializers=[_external("W", location, flag=False)])
    if where == "constant":
        constant = helper.make_node("Constant", [], ["W"], value=_external("w", location))
        return _serialize([constant, add])
    if where == "sparse":
        values = _external("W", location)
        indices = numpy_helper.from_array(np.arange(3, dtype=np.int64), "W_indices")
        return _serialize([add], sparse=[helper.make_sparse_tensor(values, indices, [3])])
    if where == "subgraph":  # a Constant with external data inside an If branch
        then = _branch("then", [helper.make_node("Constant", [], ["then_out"], value=_external("w", location))])
        other = _branch("else", [helper.make_node("Identity", ["X"], ["else_out"])])
        cond = numpy_helper.from_array(np.array(True), "cond")
        node = helper.make_node("If", ["cond"], ["W"], then_branch=then, else_branch=other)
        return _serialize([node, add], initializers=[cond])
    raise AssertionError(where)


def foreign_domain_model(domain: str, where: str) -> bytes:
    """An op of ``domain`` used or imported ``where``."""
    custom = helper.make_node("Evil", ["X"], ["Y"], domain=domain)
    standard = [("", OPSET)]
    if where == "node":
        return _serialize([custom], opsets=[*standard, (domain, 1)])
    if where == "opset-only":
        return _serialize([helper.make_node("Identity", ["X"], ["Y"])], opsets=[*standard, (domain, 1)])
    if where == "subgraph":
        then = _branch("then", [helper.make_node("Evil", ["X"], ["then_out"], domain=domain)])
        other = _branch("else", [helper.make_node("Identity", ["X"], ["else_out"])])
        cond = numpy_helper.from_array(np.array(True), "cond")
        node = helper.make_node("If", ["cond"], ["Y"], then_branch=then, else_branch=other)
        return _serialize([node], initializers=[cond])
    if where == "function":  # a model-local function (standard domain) whose body calls the custom op
        body = [helper.make_node("Evil", ["a"], ["b"], domain=domain)]
        function = helper.make_function("", "Wrap", ["a"], ["b"], body, [helper.make_opsetid("", OPSET)])
        return _serialize([helper.make_node("Wrap", ["X"], ["Y"])], functions=[function])
    raise AssertionError(where)


def nested_if_model(depth: int) -> bytes:
    """``Y = X`` through ``depth`` nested ``If`` nodes (the nesting in the then-branches)."""
    cond = numpy_helper.from_array(np.array(True), "cond")
    inner: list[onnx.NodeProto] = [helper.make_node("Identity", ["X"], ["Y0"])]
    for level in range(1, depth + 1):
        then = helper.make_graph(inner, f"then{level}", [], [_io(f"Y{level - 1}")])
        other = _branch(f"else{level}", [helper.make_node("Identity", ["X"], [f"else{level}_out"])])
        inner = [helper.make_node("If", ["cond"], [f"Y{level}"], then_branch=then, else_branch=other)]
    inner.append(helper.make_node("Identity", [f"Y{depth}"], ["Y"]))
    return _serialize(inner, initializers=[cond])


def bomb_model(elements: int, copies: int = 1) -> bytes:
    """``copies`` ``ConstantOfShape([elements])`` float outputs: tiny files, folded at load."""
    nodes = [helper.make_node("Identity", ["X"], ["Y"])]
    shapes, outputs = [], [_io("Y")]
    for i in range(copies):
        nodes.append(
            helper.make_node(
                "ConstantOfShape",
                [f"shape{i}"],
                [f"big{i}"],
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]),
            )
        )
        shapes.append(numpy_helper.from_array(np.array([elements], dtype=np.int64), f"shape{i}"))
        outputs.append(helper.make_tensor_value_info(f"big{i}", TensorProto.FLOAT, [elements]))
    return _serialize(nodes, initializers=shapes, outputs=outputs)


def unknown_op_model() -> bytes:
    """Well-formed, standard domain, but no such operator: only onnxruntime can tell."""
    return _serialize([helper.make_node("NoSuchOp", ["X"], ["Y"])])


def hollow_initializer_model() -> bytes:
    """An initializer declaring 2^40 floats and carrying no data (E7)."""
    hollow = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2**40], raw_data=b"")
    return _serialize([helper.make_node("Add", ["X", "W"], ["Y"])], initializers=[hollow])


BOMBS = {
    "constant-of-shape-1e8": lambda: bomb_model(10**8),
    "four-constant-of-shape-2e8": lambda: bomb_model(2 * 10**8, copies=4),
    "constant-of-shape-1e9": lambda: bomb_model(10**9),
}
EXTERNAL_LOCATIONS = ["../secret.bin", "/etc/passwd", "sub/../../x"]
EXTERNAL_PLACES = ["initializer", "entries-only", "constant", "sparse", "subgraph"]


# --- helpers ------------------------------------------------------------------------------


def _status(key: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(key)


def _reset_peak(pid: int | str = "self") -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _refusal(data: bytes) -> ModelInvalidError:
    with pytest.raises(ModelInvalidError) as caught:
        check_model(data)
    return caught.value


def _assert_generic(detail: str) -> None:
    """One line, no path, none of onnxruntime's own text."""
    assert "\n" not in detail
    for leak in ("/", "\\", "secret", "onnxruntime_src", "ONNXRuntimeError", ".cc:", "passwd"):
        assert leak not in detail, detail


# --- the static inspection ---------------------------------------------------------------


def test_an_identity_model_passes_and_its_facts_are_read() -> None:
    facts = check_static(identity_model())
    assert facts.ir_version == IR_VERSION
    assert facts.opset_domains == {""}
    assert facts.node_domains == set()  # a node without a domain field uses the default one
    assert facts.nodes == 1
    assert not facts.external_data


def test_the_standard_domains_are_allowed() -> None:
    data = _serialize(
        [helper.make_node("Identity", ["X"], ["Y"])], opsets=[("", OPSET), ("ai.onnx.ml", 3), ("com.microsoft", 1)]
    )
    assert check_static(data).opset_domains == {"", "ai.onnx.ml", "com.microsoft"}


@pytest.mark.parametrize("where", EXTERNAL_PLACES)
@pytest.mark.parametrize("location", EXTERNAL_LOCATIONS)
def test_external_data_is_refused_anywhere_without_naming_the_path(location: str, where: str) -> None:
    data = external_data_model(location, where)
    assert inspect_model(data).external_data
    with pytest.raises(ModelInvalidError, match="external data") as caught:
        check_static(data)
    _assert_generic(caught.value.detail)


@pytest.mark.parametrize("where", ["node", "opset-only", "subgraph", "function"])
def test_an_unknown_operator_domain_is_refused(where: str) -> None:
    with pytest.raises(ModelInvalidError, match="evil.domain") as caught:
        check_static(foreign_domain_model("evil.domain", where))
    assert caught.value.status_hint == 422
    assert caught.value.code == "model-invalid"


def test_max_ir_version_is_what_onnxruntime_loads() -> None:
    supported = max_ir_version()
    assert supported >= IR_VERSION
    ort.InferenceSession(identity_model(supported), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="IR version"):
        ort.InferenceSession(identity_model(supported + 1), providers=["CPUExecutionProvider"])


def test_an_ir_version_newer_than_onnxruntime_is_refused() -> None:
    supported = max_ir_version()
    assert check_static(identity_model(supported)).ir_version == supported
    with pytest.raises(ModelInvalidError, match=f"IR version {supported + 1} .*at most {supported}"):
        check_static(identity_model(supported + 1))
    if supported < 14:  # onnx's own default today
        with pytest.raises(ModelInvalidError, match="IR version 14"):
            check_static(identity_model(14))


def test_every_truncation_of_a_model_is_refused_as_malformed() -> None:
    data = identity_model()
    for end in range(1, len(data)):
        with pytest.raises(ModelInvalidError, match="not a valid ONNX model"):
            check_static(data[:end])


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"\x00\x00\x00\x00ORTM" + bytes(64), "ORT-format"),
        (b"\x08\x09", "no graph"),  # ir_version 9 and nothing else
        (bytes(range(256)) * 4, "not a valid ONNX model"),
        (b"\x0b" + b"\x00" * 8, "not a valid ONNX model"),  # a protobuf group
    ],
)
def test_garbage_is_refused(data: bytes, words: str) -> None:
    with pytest.raises(ModelInvalidError, match=words):
        check_static(data)


def test_the_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _serialize(
        [helper.make_node("Add", ["X", "W"], ["Y"])],
        initializers=[numpy_helper.from_array(np.zeros(1000, dtype=np.float32), "W")],
    )
    check_static(data)
    monkeypatch.setattr(model_check.limits, "MAX_MODEL_BYTES", len(data) - 1)
    with pytest.raises(ModelInvalidError, match="larger than"):
        check_static(data)


def test_moderately_nested_subgraphs_pass_and_load() -> None:
    data = nested_if_model(3)
    facts = check_static(data)
    assert facts.nodes == 1 + 3 * 2 + 1  # the leaf, each level's If and else-Identity, the last Identity
    assert check_model(data).inputs[0]["name"] == "X"


def test_deeply_nested_subgraphs_are_refused() -> None:
    """30 levels (onnx's own protobuf refuses to build much deeper; see the raw test below)."""
    with pytest.raises(ModelInvalidError, match="nested too deeply"):
        check_static(nested_if_model(30))


def test_ten_thousand_levels_of_raw_nesting_are_refused_without_recursion_error() -> None:
    """model.graph.node.attribute.g.node.attribute.g... 10,000 levels, encoded by hand."""

    def field(number: int, payload: bytes) -> bytes:
        return model_check.wire_format.len_field(number, payload)

    graph = b""
    for _ in range(10_000):
        graph = field(1, field(5, field(6, graph)))  # graph.node{attribute{g: graph}}
    with pytest.raises(ModelInvalidError, match="nested too deeply"):
        check_static(b"\x08\x09" + field(7, graph) + field(8, field(1, b"") + b"\x10\x11"))


def test_a_ten_thousand_node_graph_passes() -> None:
    nodes = [helper.make_node("Identity", [f"t{i}"], [f"t{i + 1}"]) for i in range(10_000)]
    nodes[0].input[0], nodes[-1].output[0] = "X", "Y"
    assert check_static(_serialize(nodes)).nodes == 10_000


@given(st.binary(max_size=600))
def test_random_bytes_are_a_model_or_the_one_error(data: bytes) -> None:
    try:
        check_static(data)
    except ModelInvalidError as exc:
        _assert_generic(exc.detail)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(nested_if_model(2))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@given(_mutated())
def test_mutated_models_are_a_model_or_the_one_error(data: bytes) -> None:
    try:
        check_static(data)
    except ModelInvalidError as exc:
        _assert_generic(exc.detail)


@settings(max_examples=6, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_models_through_the_trial_load_are_a_model_or_the_one_error(data: bytes) -> None:
    """The whole check, child process included: a mutation that survives the static scan
    is loaded by onnxruntime in the child, whatever it does there."""
    try:
        check_model(data)
    except ModelInvalidError as exc:
        _assert_generic(exc.detail)


# --- the trial load -----------------------------------------------------------------------


def test_the_trial_describes_the_model_and_runs_it() -> None:
    report = trial_load(identity_model())
    assert report.inputs == [{"name": "X", "type": "tensor(float)", "shape": ["N", 3]}]
    assert report.outputs == [{"name": "Y", "type": "tensor(float)", "shape": ["N", 3]}]
    assert report.ran
    assert 0 <= report.memory_growth_bytes < model_check.LOAD_MEMORY_FLOOR_BYTES


def test_bytes_that_passed_are_not_tried_again_but_still_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    data = nested_if_model(4)
    first = check_model(data)
    assert check_model(data) is first, "the same bytes: no second child"
    assert check_model(data, intra_op_threads=2) is not first
    monkeypatch.setattr(model_check.limits, "MAX_MODEL_BYTES", len(data) - 1)
    with pytest.raises(ModelInvalidError, match="larger than"):
        check_model(data)


def test_a_model_onnxruntime_cannot_load_is_refused_generically() -> None:
    data = unknown_op_model()
    check_static(data)  # well-formed: only onnxruntime knows there is no such op
    error = _refusal(data)
    assert error.detail == "the ONNX model does not load in onnxruntime"
    assert error.extra == {"reason": "load"}


def test_an_initializer_declaring_2_to_the_40_floats_without_data_is_refused() -> None:
    error = _refusal(hollow_initializer_model())
    _assert_generic(error.detail)


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_memory_bombs_are_refused_while_this_process_stays_flat(bomb: str) -> None:
    data = BOMBS[bomb]()
    assert len(data) < 1024
    check_static(data)  # innocent to the eye; also warms the IR-version probe up
    before = _status("VmRSS")
    exact = _reset_peak()
    error = _refusal(data)
    assert error.detail == "the model exceeds the resource budget for loading (memory)"
    assert error.extra == {"reason": "budget"}
    grew = (_status("VmHWM") if exact else _status("VmRSS")) - before
    assert grew < RSS_SLACK, f"this process grew by {grew / MB:.1f} MB while the child loaded {bomb}"


def test_the_wall_clock_timeout_kills_the_child() -> None:
    data = bomb_model(2 * 10**8, copies=4)  # a second or more of loading
    with pytest.raises(ModelInvalidError, match=r"resource budget for loading \(time\)"):
        trial_load(data, timeout=0.2)
    servers = [pid for pid, cmdline in _children(os.getpid()).items() if b"forkserver" in cmdline]
    assert servers and not any(_children(pid) for pid in servers), "the child was killed and reaped"


def _children(pid: int) -> dict[int, bytes]:
    """{pid: command line} of the running children of ``pid``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found[int(proc.name)] = cmdline
    return found


def _trial_child(timeout: float = 10.0) -> int:
    """The pid of the running trial child: a child of this process's fork server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for server, cmdline in _children(os.getpid()).items():
            if b"forkserver" in cmdline:
                trials = _children(server)
                if trials:
                    return min(trials)
        time.sleep(0.01)
    raise AssertionError("no trial child appeared")


def _limits(pid: int) -> dict[str, str]:
    """``/proc/<pid>/limits`` as {limit name: soft value}."""
    lines = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {line[:26].strip(): line[26:].split()[0] for line in lines}


def test_the_child_runs_under_its_limits_and_a_crash_is_reported() -> None:
    """Watch a real trial child: its limits are set; then it dies of SIGSEGV mid-load."""
    data = bomb_model(2 * 10**8, copies=4)  # about two seconds of loading: time to look
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            trial_load(data)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        pid = _trial_child()
        expected = {
            "Max address space": str(model_check.TRIAL_ADDRESS_SPACE_BYTES),
            "Max cpu time": str(model_check.TRIAL_CPU_SECONDS),
            "Max file size": "0",
            "Max core file size": "0",
        }
        deadline = time.monotonic() + 10  # the child sets them one by one as it starts
        while {k: _limits(pid)[k] for k in expected} != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert {k: _limits(pid)[k] for k in expected} == expected
        os.kill(pid, signal.SIGSEGV)
    finally:
        worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], ModelInvalidError), outcome
    assert outcome[0].detail == "the model crashed the loader"


def test_python_m_gateway_model_check_runs_one_trial_by_hand() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.model_check"], input=identity_model(), capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] and answer["ran"] and answer["inputs"][0]["name"] == "X"


def test_a_caller_whose_main_the_fork_server_cannot_import_gets_fresh_interpreters() -> None:
    """A script read from stdin: multiprocessing's children cannot re-import its main."""
    script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from gateway.errors import ModelInvalidError
from gateway.model_check import trial_load
from tests.unit.test_model_check import bomb_model, identity_model
print(trial_load(identity_model()).ran)
try:
    trial_load(bomb_model(10**8))
except ModelInvalidError as exc:
    print(exc.detail)
"""
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True", "the model exceeds the resource budget for loading (memory)"]


# --- every way into the registry goes through the check -------------------------------


def _diabetes_spec() -> bytes:
    return (DIABETES / "spec.yaml").read_bytes()


def test_load_model_checks_before_it_loads() -> None:
    loaded = load_model("diabetes", 1, (DIABETES / "model.onnx").read_bytes(), _diabetes_spec())
    assert loaded.runtime.input_width == 10
    before = _status("VmRSS")
    with pytest.raises(ModelInvalidError, match="resource budget"):
        load_model("diabetes", 2, bomb_model(10**8), _diabetes_spec())
    with pytest.raises(ModelInvalidError, match="external data"):
        load_model("diabetes", 3, external_data_model("../secret.bin", "initializer"), _diabetes_spec())
    assert _status("VmRSS") - before < RSS_SLACK


def test_the_repository_scan_records_a_refused_version_and_serves_the_rest(tmp_path: Path) -> None:
    for version, model in ((1, (DIABETES / "model.onnx").read_bytes()), (2, bomb_model(10**8))):
        folder = tmp_path / "diabetes" / str(version)
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(model)
        (folder / "spec.yaml").write_bytes(_diabetes_spec())
    model_registry = ModelRegistry()
    loaded = [model_registry.load_entry(entry) for entry in ModelRepository(tmp_path).scan()]
    assert loaded[0] is not None and loaded[1] is None
    assert model_registry.get("diabetes").version == 1
    [failure] = model_registry.failures()
    assert (failure.name, failure.version) == ("diabetes", 2)
    assert failure.reason == "the model exceeds the resource budget for loading (memory)"


def test_cli_register_into_a_repository_refuses_a_bomb_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    model = tmp_path / "bomb.onnx"
    model.write_bytes(bomb_model(10**8))
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(_diabetes_spec())
    code = main(["register", "diabetes", "--model", str(model), "--spec", str(spec), "--repository", str(repository)])
    assert code == EXIT_FAILURE
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["driftgate: error: the model exceeds the resource budget for loading (memory)"]
    assert not [p for p in repository.rglob("*") if p.is_file()]


# --- B10: models whose cost depends on input values ---------------------------------------


def _with_ops(*nodes: onnx.NodeProto, subgraph_op: str | None = None) -> bytes:
    """A [N, 1] float model made of ``nodes`` (X -> Y); ``subgraph_op`` hides that op inside
    an If branch, to check that subgraphs are read too."""
    extra = list(nodes)
    if subgraph_op is not None:
        branch = helper.make_graph(
            [helper.make_node(subgraph_op, ["X"], ["b"])],
            "branch",
            [],
            [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
        )
        extra.append(helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=branch))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"]), *extra],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.array(True), "cond")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def test_op_types_are_read_from_graphs_and_subgraphs() -> None:
    facts = inspect_model(_with_ops(helper.make_node("Relu", ["X"], ["r"]), subgraph_op="NonZero"))
    assert {"Identity", "Relu", "If", "NonZero"} <= facts.op_types


@pytest.mark.parametrize(
    ("node", "variable"),
    [
        (helper.make_node("Relu", ["X"], ["r"]), False),
        (helper.make_node("NonZero", ["X"], ["r"]), True),
        (helper.make_node("Shape", ["X"], ["s"]), False),
    ],
    ids=["relu", "nonzero", "shape"],
)
def test_variable_cost_follows_the_ops(node: onnx.NodeProto, variable: bool) -> None:
    assert model_check.variable_cost(inspect_model(_with_ops(node))) is variable


def test_control_flow_anywhere_is_variable_cost() -> None:
    assert model_check.variable_cost(inspect_model(_with_ops(subgraph_op="Relu")))  # the If itself


@pytest.mark.parametrize("name", ["penguins", "diabetes", "digits"])
def test_bundled_models_are_fixed_cost(name: str) -> None:
    data = (Path(__file__).resolve().parents[2] / "models" / name / "1" / "model.onnx").read_bytes()
    t0 = time.perf_counter()
    facts = inspect_model(data)
    assert facts.op_types and not model_check.variable_cost(facts), sorted(facts.op_types)
    assert time.perf_counter() - t0 < 5.0  # a generous bound on the static reader, not a benchmark


def test_the_trial_reports_variable_cost() -> None:
    assert check_model(_with_ops(helper.make_node("NonZero", ["X"], ["r"]))).variable_cost
    assert not check_model(_with_ops(helper.make_node("Relu", ["X"], ["r"]))).variable_cost
