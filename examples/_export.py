"""Steps shared by the example training scripts (``train_penguins.py``, ``train_diabetes.py``, ``train_digits.py``).

Every example ends the same way: convert the fitted scikit-learn model to an ONNX file
that onnxruntime loads (``gateway.export``, which users call too), turn model outputs
into the histograms a spec's output baseline holds, and write a model version (the spec in ``feature_specs/`` plus the model repository
entry ``models/<name>/<version>/``). Those steps live here once, so the scripts differ only
in their data and model.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from gateway import FeatureSpec
from gateway.export import INPUT_NAME, OPSET
from gateway.export import to_onnx as export_onnx
from gateway.spec import HistogramBaseline

__all__ = ["INPUT_NAME", "OPSET", "export_onnx"]  # the scripts' export step is the package's

REPO_ROOT = Path(__file__).resolve().parent.parent

SEED = 0
"""The one random seed of the examples: re-running a script rewrites the same files."""

TEST_SIZE = 0.25
"""Share of the rows held out to evaluate the model and record its output baseline."""

CONFIDENCE_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Bin edges of a classifier's confidence (top-class probability) histogram. Fixed, not
fitted, so every classifier's baseline is comparable and a live window is binned the
same way whatever the model; written out literally so the spec shows 0.3, not
0.30000000000000004 as ``np.linspace`` would give."""


def parse_args(description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(description or "").strip().splitlines()[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=REPO_ROOT,
        help="where feature_specs/ and models/ are written (default: the repository root)",
    )
    return parser.parse_args()


def session(model_bytes: bytes) -> ort.InferenceSession:
    """An onnxruntime session on the CPU, as the gateway runs models."""
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def histogram(values: Any, bins: int | tuple[float, ...]) -> HistogramBaseline:
    """``np.histogram`` of ``values`` as a spec baseline (bins ``[e_i, e_i+1)``, the last
    one closed). Raises if a value falls outside the edges, as it would go uncounted."""
    data = np.asarray(values, dtype=np.float64)
    counts, edges = np.histogram(data, bins=bins)
    if int(counts.sum()) != len(data):
        raise ValueError(f"{len(data) - int(counts.sum())} values fall outside the histogram edges")
    return HistogramBaseline(edges=tuple(float(e) for e in edges), counts=tuple(int(c) for c in counts))


def write_version(spec: FeatureSpec, model_bytes: bytes, out_dir: Path, version: int = 1) -> dict[str, Path]:
    """Write the spec to ``feature_specs/<name>.yaml`` and the model repository entry
    ``models/<name>/<version>/{model.onnx,spec.yaml}``.

    The version's ``spec.yaml`` is a byte copy of the feature spec: a registered version
    keeps the exact spec it was registered with, even after ``feature_specs/`` moves on.
    """
    spec_path = out_dir / "feature_specs" / f"{spec.name}.yaml"
    version_dir = out_dir / "models" / spec.name / str(version)
    paths = {"spec": spec_path, "model": version_dir / "model.onnx", "version spec": version_dir / "spec.yaml"}
    spec.save(spec_path)
    if FeatureSpec.load(spec_path) != spec:  # the file must read back as the spec we trained with
        raise RuntimeError(f"{spec_path} does not read back as the spec that was written")
    version_dir.mkdir(parents=True, exist_ok=True)
    paths["model"].write_bytes(model_bytes)
    shutil.copyfile(spec_path, paths["version spec"])
    return paths


def summary(spec: FeatureSpec, metric: str, paths: dict[str, Path], out_dir: Path) -> str:
    """The few lines a script prints when it is done."""
    lines = [f"{spec.name}: {metric}", f"  {'spec digest':<12} {spec.digest}"]
    lines += [f"  {label:<12} {path.relative_to(out_dir)}" for label, path in paths.items()]
    return "\n".join(lines)
