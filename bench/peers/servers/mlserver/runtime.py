"""An MLServer custom runtime serving an onnxruntime session the way MLServer's own
runtimes are written: the request's input decoded with ``NumpyCodec``, every output
encoded with it. MLServer speaks V2 (the Open Inference Protocol)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from onnx_sessions import session


class OnnxModel(MLModel):
    async def load(self) -> bool:
        self._session = session(self.name)
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        results = self._session.run(None, {self._input: x})
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name, value) for name, value in zip(self._outputs, results)],
        )
