"""The one piece every peer server shares: its onnxruntime sessions, built alike.

The models are read from ``$PEER_MODELS`` (``compare.py`` sets it; ``setup.sh`` makes the
files). Every session runs on one intra-op thread (``ORT_THREADS`` to change it), one
inter-op thread, sequentially, with every graph optimisation: each server is pinned to
one core, and the load generator has the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

MODELS = ("lr", "gbt")


def models_dir() -> Path:
    return Path(os.environ["PEER_MODELS"])


def session(name: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("ORT_THREADS", "1"))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(models_dir() / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])


def sessions() -> dict[str, ort.InferenceSession]:
    return {name: session(name) for name in MODELS}
