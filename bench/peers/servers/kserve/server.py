"""KServe's Python model server with a ``kserve.Model`` around an onnxruntime session. It
answers V1 (``{"instances": [[30 floats], ...]}`` -> ``predictions``) and V2 REST at once;
one worker, gRPC off, its per-request latency log and uvicorn's access log off (no server in
the comparison logs each request)."""

import logging
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kserve
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import get_predict_input
from onnx_sessions import MODELS, session


class OnnxModel(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self._session = session(self.name)
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()]
        self.ready = True
        return self.ready

    async def predict(self, payload, headers=None, response_headers=None):
        x = np.asarray(get_predict_input(payload), dtype=np.float32)
        labels, probabilities = self._session.run(None, {self._input: x})
        if not isinstance(payload, InferRequest):
            return {"predictions": labels.tolist(), "probabilities": probabilities.tolist()}
        outputs = []
        for name, value in zip(self._outputs, (labels, probabilities)):
            output = InferOutput(
                name=name, shape=list(value.shape), datatype="INT64" if value.dtype == np.int64 else "FP32"
            )
            output.set_data_from_numpy(value, binary_data=False)
            outputs.append(output)
        return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs)


if __name__ == "__main__":  # kserve reads its own flags (--http_port ...) from sys.argv
    server = kserve.ModelServer(workers=1, enable_grpc=False, enable_latency_logging=False)
    logging.getLogger("uvicorn.access").disabled = True
    server.start([OnnxModel(name) for name in MODELS])
