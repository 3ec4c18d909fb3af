"""The bundled example models (``examples/train_*.py``) as committed under ``models/``.

What a diff cannot show: that each registered version carries the very spec it was trained
with, that its ONNX file loads and fits its spec, that the models are good on their data,
that the spec turns a DataFrame (as training does) and JSON records (as clients send them,
in a batch or one by one) into the same bits, and that training reproduces the spec.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from gateway import FeatureSpec

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("penguins", "diabetes", "digits")


def load_data(name: str) -> pd.DataFrame:
    """The full table the example was trained on (training and held-out rows)."""
    if name == "penguins":
        from palmerpenguins import load_penguins

        return load_penguins()
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        columns = [f"px_{row}_{col}" for row in range(8) for col in range(8)]
        frame = pd.DataFrame(digits.data.astype(np.int64), columns=columns)
        return frame.assign(digit=digits.target.astype(str))
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})


def committed(name: str) -> tuple[FeatureSpec, ort.InferenceSession]:
    spec = FeatureSpec.load(ROOT / "models" / name / "1" / "spec.yaml")
    model = ort.InferenceSession(str(ROOT / "models" / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return spec, model


def json_records(frame: pd.DataFrame, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows as a JSON client sends them: missing values as null, numbers and strings as
    JSON has them (the round trip through JSON text makes sure nothing numpy survives)."""

    def plain(v: Any) -> Any:
        v = v.item() if isinstance(v, np.generic) else v
        return None if isinstance(v, float) and math.isnan(v) else v

    rows = [{k: plain(v) for k, v in row.items()} for row in frame[list(fields)].to_dict(orient="records")]
    return json.loads(json.dumps(rows, allow_nan=False))


@pytest.mark.parametrize("name", MODELS)
def test_version_keeps_the_feature_spec(name: str) -> None:
    version_spec = (ROOT / "models" / name / "1" / "spec.yaml").read_bytes()
    assert version_spec == (ROOT / "feature_specs" / f"{name}.yaml").read_bytes()


@pytest.mark.parametrize("name", MODELS)
def test_onnx_input_fits_the_spec(name: str) -> None:
    spec, model = committed(name)
    (only,) = model.get_inputs()
    assert (only.name, only.type) == ("input", "tensor(float)")
    assert only.shape[1] == len(spec.output_columns)


def test_penguins_model_is_accurate() -> None:
    spec, model = committed("penguins")
    data = load_data("penguins")
    label, probabilities = model.run(["label", "probabilities"], {"input": spec.transform(data)})
    labels = spec.output.labels
    assert probabilities.shape == (len(data), len(labels))
    # Probability column i is spec label i: the gateway names the columns after the spec.
    assert list(label) == [labels[i] for i in probabilities.argmax(axis=1)]
    assert np.mean(label == data["species"].to_numpy(dtype=str)) > 0.9


def test_diabetes_model_explains_progression() -> None:
    spec, model = committed("diabetes")
    data = load_data("diabetes")
    (predicted,) = model.run(["variable"], {"input": spec.transform(data)})
    assert predicted.shape == (len(data), 1)
    truth = data["progression"].to_numpy()
    r2 = 1 - np.sum((truth - predicted[:, 0]) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert r2 > 0.3


def test_digits_model_is_accurate_on_held_out_digits() -> None:
    from sklearn.model_selection import train_test_split

    spec, model = committed("digits")
    data = load_data("digits")
    # The split examples/train_digits.py holds out (seed 0, a quarter, stratified).
    _, test = train_test_split(data, test_size=0.25, random_state=0, stratify=data["digit"])
    label, probabilities = model.run(["label", "probabilities"], {"input": spec.transform(test)})
    labels = spec.output.labels
    assert labels == tuple("0123456789")
    assert probabilities.shape == (len(test), 10)
    assert list(label) == [labels[i] for i in probabilities.argmax(axis=1)]
    # The script reports 0.980 on these 450 rows; the confidence baseline counts them all.
    assert np.mean(label == test["digit"].to_numpy()) >= 0.975
    assert sum(spec.output.baseline.confidence.counts) == len(test)


def test_digits_spec_takes_every_pixel_value_and_nothing_else() -> None:
    spec, _ = committed("digits")
    assert spec.feature_names == tuple(f"px_{row}_{col}" for row in range(8) for col in range(8))
    blank = {name: 0 for name in spec.feature_names}
    full = {name: 16 for name in spec.feature_names}
    assert spec.check([blank, full]) == []
    np.testing.assert_array_equal(spec.transform([blank, full]), np.array([[0.0] * 64, [1.0] * 64], dtype=np.float32))
    bad = spec.check([{**blank, "px_0_0": 17}, {**blank, "px_7_7": -1}, {**blank, "px_3_3": 2.5}])
    assert [(v.row, v.feature, v.reason) for v in bad] == [
        (0, "px_0_0", "above_max"),
        (1, "px_7_7", "below_min"),
        (2, "px_3_3", "wrong_type"),
    ]


@pytest.mark.parametrize("name", MODELS)
def test_training_and_serving_inputs_are_the_same_bits(name: str) -> None:
    spec, _ = committed(name)
    data = load_data(name)
    records = json_records(data, spec.feature_names)
    if name == "penguins":  # the data has gaps: make sure the imputation path is exercised
        assert any(v is None for r in records for v in r.values())

    from_frame = spec.transform(data)
    from_batch = spec.transform(records)
    from_rows = np.vstack([spec.transform([r]) for r in records])

    assert from_frame.shape == (len(data), len(spec.output_columns))
    assert from_frame.tobytes() == from_batch.tobytes()
    assert from_frame.tobytes() == from_rows.tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["penguins", "diabetes"])
def test_training_reproduces_the_committed_spec_and_model(name: str, tmp_path: Path) -> None:
    """Byte for byte, whatever the hash seed (skl2onnx lists opset imports in set order)."""
    script = ROOT / "examples" / f"train_{name}.py"
    command = [sys.executable, str(script), "--out-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    committed_spec = (ROOT / "feature_specs" / f"{name}.yaml").read_bytes()
    assert (tmp_path / "feature_specs" / f"{name}.yaml").read_bytes() == committed_spec
    assert (tmp_path / "models" / name / "1" / "spec.yaml").read_bytes() == committed_spec
    committed_model = (ROOT / "models" / name / "1" / "model.onnx").read_bytes()
    assert (tmp_path / "models" / name / "1" / "model.onnx").read_bytes() == committed_model


@pytest.mark.slow
def test_digits_training_reproduces_the_committed_spec_and_model(tmp_path: Path) -> None:
    script = ROOT / "examples" / "train_digits.py"
    command = [sys.executable, str(script), "--out-dir", str(tmp_path)]
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "test accuracy 0.980 on 450 held-out rows" in run.stdout
    committed_spec = (ROOT / "feature_specs" / "digits.yaml").read_bytes()
    assert (tmp_path / "feature_specs" / "digits.yaml").read_bytes() == committed_spec
    assert (tmp_path / "models" / "digits" / "1" / "spec.yaml").read_bytes() == committed_spec
    committed_model = (ROOT / "models" / "digits" / "1" / "model.onnx").read_bytes()
    assert (tmp_path / "models" / "digits" / "1" / "model.onnx").read_bytes() == committed_model
