"""From a trained scikit-learn model to a registration-ready ``model.onnx``.

``export_model(model, spec)`` takes a fitted estimator trained on ``spec.transform(X)``, or
a fitted ``Pipeline`` whose first step is ``SpecTransformer`` (whose spec it then uses), and
returns ONNX bytes the gateway registers as they are:

- one input, ``input``, float32 ``[N, len(spec.output_columns)]``: the spec's transform runs
  in the gateway, so the ONNX graph holds only what comes after ``SpecTransformer``;
- a classifier without skl2onnx's ZipMap: a ``label`` tensor and a ``probabilities`` float32
  ``[N, len(labels)]`` tensor whose columns are in the spec's label order (reordered when the
  model's ``classes_`` sort differently, as integers 0..10 do against their text);
- pinned opsets stamped with the lowest IR version that carries them, so the installed
  onnxruntime (and older ones) load it; a reproducible file (sorted opset imports, a fixed
  graph name, no unread initializers).

Before returning, the ONNX model is run by onnxruntime on rows drawn from the spec and must
agree with scikit-learn. ``save_model`` writes the model and its spec side by side.

Needs the ``train`` extra (scikit-learn, skl2onnx, onnx), imported on call: serving never
imports this module. It must not know about the registry or HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gateway.errors import SpecMismatchError, UsageError
from gateway.files import write_atomic
from gateway.spec import FeatureSpec

__all__ = ["INPUT_NAME", "OPSET", "export_model", "save_model", "to_onnx"]

INPUT_NAME = "input"
"""Name of the exported model's single input, a float32 matrix ``[N, len(spec.output_columns)]``."""

OPSET = {"": 17, "ai.onnx.ml": 3}
"""Pinned ONNX opsets. Without a pin skl2onnx targets the newest opset it knows, which a
slightly older onnxruntime on the serving side may not implement."""

CHECK_ROWS = 64
"""Rows drawn from the spec on which the ONNX model must agree with scikit-learn."""

TOLERANCE = 1e-4
"""Largest difference allowed between onnxruntime's float32 and scikit-learn's float64
answers on the check rows (probabilities; regression values relative to their scale)."""


def export_model(model: Any, spec: FeatureSpec | None = None, *, name: str | None = None) -> bytes:
    """A fitted scikit-learn model as registration-ready ONNX bytes (see the module docstring).

    Args:
        model: a fitted estimator trained on ``spec.transform(X)``, or a fitted ``Pipeline``
            whose first step is a ``SpecTransformer``.
        spec: the spec the model was trained with; optional for a ``SpecTransformer``
            pipeline (its fitted spec is used; if given, it must be the same).
        name: the ONNX graph's name (default: the spec's name).

    Raises:
        UsageError: the train extra is missing, the model is not fitted, or no spec is known.
        SpecMismatchError: the model's input width or classes do not fit the spec.
    """
    try:
        from sklearn.base import is_classifier
    except ImportError:
        raise UsageError("exporting a model needs scikit-learn, skl2onnx and onnx: pip install 'driftgate[train]'") from None
    estimator, spec = _after_spec(model, spec)
    width = len(spec.output_columns)
    expected = getattr(estimator, "n_features_in_", width)
    if expected != width:
        raise SpecMismatchError(f"the model was trained on {expected} columns, but the spec's transform gives {width}")
    classifier = is_classifier(estimator)
    if classifier != (spec.output is not None and spec.output.task == "classification"):
        task = spec.output.task if spec.output is not None else "no output"
        raise SpecMismatchError(f"the model is {'a' if classifier else 'not a'} classifier, but the spec says {task}")
    order = _label_order(estimator, spec) if classifier else None
    onx = to_onnx(estimator, width, name or spec.name, probability_order=order)
    _agree(onx, estimator, spec, classifier)
    return onx


def save_model(model: Any, folder: str | Path, spec: FeatureSpec | None = None) -> tuple[Path, Path]:
    """``export_model`` written as ``folder/model.onnx`` beside its spec, ``folder/spec.yaml``:
    the two files ``driftgate register`` takes. Returns their paths."""
    spec = _after_spec(model, spec)[1]
    data = export_model(model, spec)
    out = Path(folder)
    paths = (out / "model.onnx", out / "spec.yaml")
    write_atomic(paths[0], data)
    spec.save(paths[1])
    return paths


def _after_spec(model: Any, spec: FeatureSpec | None) -> tuple[Any, FeatureSpec]:
    """The part of ``model`` the ONNX file holds, and the spec in front of it."""
    from gateway.estimator import SpecTransformer

    steps = getattr(model, "steps", None)
    if steps and isinstance(steps[0][1], SpecTransformer):
        fitted = getattr(steps[0][1], "spec_", None)
        if fitted is None:
            raise UsageError("the pipeline is not fitted yet: call fit first")
        if spec is not None and spec.digest != fitted.digest:
            raise SpecMismatchError("the spec given is not the one the pipeline's SpecTransformer fitted")
        rest = [step for _, step in steps[1:] if step != "passthrough" and step is not None]
        if not rest:
            raise UsageError("the pipeline holds no model after its SpecTransformer")
        if len(rest) == 1:
            return rest[0], fitted
        from sklearn.pipeline import make_pipeline

        return make_pipeline(*rest), fitted
    if spec is None:
        raise UsageError("give the spec the model was trained with (or a pipeline that starts with SpecTransformer)")
    return model, spec


def _label_order(estimator: Any, spec: FeatureSpec) -> list[int] | None:
    """Where each spec label's probability column is in the model's output, or None if the
    model's ``classes_`` are already in the spec's order."""
    labels = spec.output.labels if spec.output is not None else ()
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise UsageError("the model is not fitted yet: call fit first")
    names = [str(c).lower() if isinstance(c, bool | np.bool_) else str(c) for c in np.asarray(classes).tolist()]
    if names == list(labels):
        return None
    if sorted(names) != sorted(labels):
        raise SpecMismatchError(f"the model's classes {names} are not the spec's labels {list(labels)}")
    return [names.index(label) for label in labels]


def to_onnx(model: Any, width: int, name: str, probability_order: list[int] | None = None) -> bytes:
    """A fitted scikit-learn model as ONNX bytes: input ``input`` float32 ``[N, width]``,
    graph ``name``, no ZipMap, reproducible. ``probability_order``: the model's probability
    columns to take, in order (a ``Gather`` after the converter's output)."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier

    final = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    onx = convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, width]))],
        target_opset=OPSET,
        options=options,
    )
    if probability_order is not None:
        _reorder_probabilities(onx, probability_order)
    # onnx 1.23's default IR version is 14, which onnxruntime 1.31 refuses to load; which
    # version a converter stamps depends on its release. Stamp the lowest IR version that
    # can carry the pinned opsets (8 for opset 17), so any runtime implementing them loads it.
    onx.ir_version = onnx.helper.find_min_ir_version_for(list(onx.opset_import))
    # skl2onnx lists the opset imports in set order, which hash randomisation changes from
    # one run to the next (and a pipeline may list one twice): sorted and unique, the file
    # is the same bytes every time.
    imports = sorted({(o.domain, o.version) for o in onx.opset_import})
    del onx.opset_import[:]
    for domain, version in imports:
        onx.opset_import.add(domain=domain, version=version)
    # skl2onnx names the graph with a random UUID; a fixed name makes the file reproducible.
    onx.graph.name = name
    # skl2onnx's VotingClassifier converter leaves an initializer no node reads
    # (``classes_ind``), and onnxruntime warns about it on every load: drop such leftovers.
    read = _names_read(onx.graph)
    unread = [init for init in onx.graph.initializer if init.name not in read]
    for init in unread:
        onx.graph.initializer.remove(init)
    onnx.checker.check_model(onx, full_check=True)
    data: bytes = onx.SerializeToString()
    return data


def _reorder_probabilities(onx: Any, order: list[int]) -> None:
    """Route the graph's ``probabilities`` output through a ``Gather`` of ``order`` on axis 1."""
    import onnx

    output = next((o for o in onx.graph.output if o.name == "probabilities"), None)
    if output is None:
        raise SpecMismatchError("the exported classifier has no 'probabilities' output to put in the spec's label order")
    raw = "probabilities_in_model_order"
    for node in onx.graph.node:
        node.output[:] = [raw if o == "probabilities" else o for o in node.output]
        node.input[:] = [raw if i == "probabilities" else i for i in node.input]
    onx.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(order, dtype=np.int64), "probability_order"))
    onx.graph.node.append(onnx.helper.make_node("Gather", [raw, "probability_order"], ["probabilities"], axis=1))


def _names_read(graph: Any) -> set[str]:
    """Every name a node of ``graph`` reads, or a graph output is, subgraphs included (a
    subgraph may read a name of its outer graph)."""
    names = {output.name for output in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            single = [attribute.g] if attribute.HasField("g") else []
            for sub in [*single, *attribute.graphs]:
                names |= _names_read(sub)
    return names


def _agree(onx: bytes, estimator: Any, spec: FeatureSpec, classifier: bool) -> None:
    """onnxruntime loads the model and answers as scikit-learn does on rows from the spec."""
    import onnxruntime as ort

    from gateway.samples import sample_records

    x = spec.transform(sample_records(spec, CHECK_ROWS))
    session = ort.InferenceSession(onx, providers=["CPUExecutionProvider"])
    if classifier:
        (probabilities,) = session.run(["probabilities"], {INPUT_NAME: x})
        expected = estimator.predict_proba(x)
        order = _label_order(estimator, spec)
        if order is not None:
            expected = expected[:, order]
        worst = float(np.max(np.abs(probabilities - expected)))
    else:
        (values,) = session.run(None, {INPUT_NAME: x})[:1]
        expected = np.asarray(estimator.predict(x), dtype=np.float64).reshape(len(x), -1)
        scale = max(float(np.max(np.abs(expected))), 1.0)
        worst = float(np.max(np.abs(np.asarray(values, dtype=np.float64).reshape(len(x), -1) - expected))) / scale
    if not worst <= TOLERANCE:
        raise SpecMismatchError(f"the ONNX model differs from scikit-learn by {worst:.2g} on rows from the spec (over {TOLERANCE})")
