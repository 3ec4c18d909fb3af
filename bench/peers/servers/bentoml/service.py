"""A BentoML 1.4 service around onnxruntime (the ``@bentoml.service`` style, no runners):
``POST /lr`` and ``POST /gbt`` with ``{"input": [[30 floats], ...]}`` answer ``label`` and
``probabilities``. One worker, async APIs (on the event loop, as every other server here),
access log off."""

import sys
from pathlib import Path
from typing import Annotated

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bentoml
import numpy as np
from bentoml.validators import DType
from onnx_sessions import sessions

Rows = Annotated[np.ndarray, DType("float32")]


@bentoml.service(workers=1, threads=1, logging={"access": {"enabled": False}}, traffic={"timeout": 30})
class Onnx:
    def __init__(self) -> None:
        self.sessions = sessions()

    def _predict(self, name: str, x: np.ndarray) -> dict:
        labels, probabilities = self.sessions[name].run(None, {"input": x})
        return {"label": labels.tolist(), "probabilities": probabilities.tolist()}

    @bentoml.api
    async def lr(self, input: Rows) -> dict:
        return self._predict("lr", input)

    @bentoml.api
    async def gbt(self, input: Rows) -> dict:
        return self._predict("gbt", input)
