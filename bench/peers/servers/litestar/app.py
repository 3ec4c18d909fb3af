"""A bare litestar app on driftgate's own stack (litestar, msgspec, onnxruntime) that checks
nothing but msgspec's typed decode: the V2 JSON endpoint with no guards, no monitoring.

    POST /v2/models/{lr|gbt}/infer   one FP32 tensor "input" [N, 30] -> "label", "probabilities"
    GET  /v2/health/ready
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec
import numpy as np
from litestar import Litestar, get, post
from onnx_sessions import sessions


class Tensor(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class Request(msgspec.Struct):
    inputs: list[Tensor]
    id: str | None = None


class Output(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[float] | list[int]


class Response(msgspec.Struct, omit_defaults=True):
    model_name: str
    outputs: list[Output]
    id: str | None = None


SESSIONS = sessions()


@post("/v2/models/{model_name:str}/infer", status_code=200)
async def infer(model_name: str, data: Request) -> Response:
    tensor = data.inputs[0]
    x = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    labels, probabilities = SESSIONS[model_name].run(None, {"input": x})
    return Response(
        model_name=model_name,
        id=data.id,
        outputs=[
            Output("label", list(labels.shape), "INT64", labels.tolist()),
            Output("probabilities", list(probabilities.shape), "FP32", probabilities.ravel().tolist()),
        ],
    )


@get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


app = Litestar([infer, ready], openapi_config=None)
