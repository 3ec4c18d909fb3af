"""Make the two models every server in the peer comparison serves, and the rows it sends.

Both are trained on scikit-learn's bundled breast_cancer data (30 numeric features; read from
inside the package, nothing downloaded) and exported to ONNX with one float32 input ``input``
of shape ``[N, 30]`` and two outputs, ``label`` (int64 ``[N]``) and ``probabilities``
(float32 ``[N, 2]``):

- ``lr.onnx``: standard scaling and a logistic regression, a few operators: what a request
  costs around the model;
- ``gbt.onnx``: gradient boosting, 200 trees of depth 4: a model with real work in it.

``payload.json`` holds 64 held-out rows and each model's labels for them (every server's
answers are checked against these before it is timed); ``features.json`` the 30 feature
names, for the protocols that send named records.

    python bench/peers/make_models.py --out DIR    (run by setup.sh, in the "models" environment)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROWS = 64
OPSETS = {"": 17, "ai.onnx.ml": 3}


def to_onnx_bytes(model: Any, width: int) -> bytes:
    """The fitted classifier as ONNX bytes, probabilities as a tensor (no ZipMap), the same
    bytes on every run (skl2onnx's opset list follows set order: sorted here)."""
    classifier = model.steps[-1][1] if hasattr(model, "steps") else model
    proto = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, width]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=OPSETS,
    )
    outputs = [o.name for o in proto.graph.output]
    if outputs != ["label", "probabilities"]:
        raise SystemExit(f"unexpected output names {outputs}")
    proto.producer_name = "driftgate bench/peers/make_models.py"
    opsets = sorted((o.domain, o.version) for o in proto.opset_import)
    del proto.opset_import[:]
    for domain, version in opsets:
        proto.opset_import.add(domain=domain, version=version)
    return bytes(proto.SerializeToString())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the models and rows")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    models = {
        "lr": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)),
        "gbt": GradientBoostingClassifier(n_estimators=200, max_depth=4, learning_rate=0.05, random_state=0),
    }
    # rows as a client sends them: each float32 value in its shortest decimal form
    rows = [[float(np.format_float_positional(v, unique=True, trim="-")) for v in row] for row in x_test[:ROWS]]
    expected = {}
    for name, model in models.items():
        model.fit(x_train, y_train)
        onnx_bytes = to_onnx_bytes(model, x.shape[1])
        (out / f"{name}.onnx").write_bytes(onnx_bytes)
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        labels, probabilities = session.run(None, {"input": x_test})
        if not np.array_equal(labels, model.predict(x_test)):
            raise SystemExit(f"{name}: onnxruntime's labels differ from scikit-learn's")
        if not np.allclose(probabilities, model.predict_proba(x_test), atol=1e-4):
            raise SystemExit(f"{name}: onnxruntime's probabilities differ from scikit-learn's")
        sent = session.run(None, {"input": np.asarray(rows, dtype=np.float32)})[0]
        expected[name] = [int(v) for v in sent]
        accuracy = float((labels == y_test).mean())
        print(f"{name}.onnx: {len(onnx_bytes) / 1024:.1f} KiB, held-out accuracy {accuracy:.3f}")
    payload = {"n_features": int(x.shape[1]), "rows": rows, "expected": expected}
    (out / "payload.json").write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    (out / "features.json").write_text(json.dumps([str(n) for n in data.feature_names]) + "\n")
    print(f"payload.json: {len(rows)} rows; features.json: {x.shape[1]} names; in {out}")


if __name__ == "__main__":
    main()
