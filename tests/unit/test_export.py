"""``gateway.export``: a trained scikit-learn model to a model.onnx the gateway registers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from palmerpenguins import load_penguins
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gateway import FeatureSpec
from gateway.errors import SpecMismatchError, UsageError
from gateway.estimator import SpecTransformer
from gateway.export import INPUT_NAME, export_model, save_model
from gateway.model_check import max_ir_version
from gateway.registry import ModelRegistry
from gateway.repository import ModelRepository
from gateway.service import register_model


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return load_penguins()


def session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def test_a_spec_transformer_pipeline_exports_what_comes_after_the_spec(penguins: pd.DataFrame, tmp_path: Path) -> None:
    pipeline = make_pipeline(SpecTransformer(name="penguins", target="species"), StandardScaler(), LogisticRegression(max_iter=500))
    pipeline.fit(penguins, penguins["species"])
    spec: FeatureSpec = pipeline[0].spec_
    model_path, spec_path = save_model(pipeline, tmp_path / "out")
    data = model_path.read_bytes()
    model = onnx.load_from_string(data)
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == len(spec.output_columns)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not any(node.op_type == "ZipMap" for node in model.graph.node)
    assert model.ir_version <= max_ir_version()
    assert model.graph.name == "penguins"
    (probabilities,) = session(data).run(["probabilities"], {INPUT_NAME: spec.transform(penguins)})
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(penguins), atol=1e-5)
    assert FeatureSpec.load(spec_path) == spec
    # registration takes the two files as they are
    loaded = register_model(ModelRegistry(), ModelRepository(tmp_path / "models", create=True), "penguins", None, data, spec_path.read_bytes())
    assert loaded.spec.digest == spec.digest


def test_exports_are_reproducible(penguins: pd.DataFrame) -> None:
    pipeline = make_pipeline(SpecTransformer(name="penguins", target="species"), LogisticRegression(max_iter=500))
    pipeline.fit(penguins, penguins["species"])
    assert export_model(pipeline) == export_model(pipeline)


def test_probabilities_come_in_the_spec_label_order() -> None:
    # Integer classes 0..11 sort as numbers in scikit-learn and as text in the spec ("10" before "2").
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    y = (np.abs(x[:, 0] * 4).astype(int) % 12).astype(np.int64)
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(k=y)
    spec = FeatureSpec.fit(frame, name="k", target="k")
    assert spec.output is not None and spec.output.labels[:4] == ("0", "1", "10", "11")
    model = LogisticRegression(max_iter=2000).fit(spec.transform(frame), y)
    data = export_model(model, spec)
    (probabilities,) = session(data).run(["probabilities"], {INPUT_NAME: spec.transform(frame)})
    expected = model.predict_proba(spec.transform(frame))
    for j, label in enumerate(spec.output.labels):
        np.testing.assert_allclose(probabilities[:, j], expected[:, list(model.classes_).index(int(label))], atol=1e-5)


def test_a_regressor_exports_with_its_spec() -> None:
    frame = load_diabetes(as_frame=True).frame
    spec = FeatureSpec.fit(frame, name="diabetes", target="target")
    model = LinearRegression().fit(spec.transform(frame), frame["target"])
    (values,) = session(export_model(model, spec)).run(None, {INPUT_NAME: spec.transform(frame)})
    np.testing.assert_allclose(values[:, 0], model.predict(spec.transform(frame)), rtol=1e-4)


def test_a_model_that_does_not_fit_its_spec_is_refused(penguins: pd.DataFrame) -> None:
    spec = FeatureSpec.fit(penguins, name="p", target="species")
    narrow = LogisticRegression().fit(np.zeros((4, 3)), ["Adelie", "Gentoo", "Adelie", "Gentoo"])
    with pytest.raises(SpecMismatchError, match="trained on 3 columns"):
        export_model(narrow, spec)
    wrong = LogisticRegression(max_iter=500).fit(spec.transform(penguins), penguins["island"])
    with pytest.raises(SpecMismatchError, match="classes .* are not the spec's labels"):
        export_model(wrong, spec)
    with pytest.raises(UsageError, match="give the spec"):
        export_model(wrong)
