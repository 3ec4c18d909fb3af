"""Asking the installed onnxruntime which ONNX IR version it supports: it has no API for
it, so it is shown tiny hand-encoded models of rising IR versions."""

from __future__ import annotations

import functools

from gateway.model_check.wire_format import VARINT, encode_varint, field_key, len_field

__all__ = ["identity_model", "max_ir_version"]


def identity_model(ir_version: int) -> bytes:
    """A hand-encoded one-node model (Identity, float ``[1]``) with ``ir_version``."""
    tensor_type = len_field(1, field_key(1, VARINT) + encode_varint(1))  # TypeProto.tensor_type{elem_type: FLOAT}
    value_info = {name: len_field(1, name.encode()) + len_field(2, tensor_type) for name in ("x", "y")}
    node = len_field(1, b"x") + len_field(2, b"y") + len_field(4, b"Identity")
    graph = (
        len_field(1, node)
        + len_field(2, b"probe")
        + len_field(11, value_info["x"])
        + len_field(12, value_info["y"])
    )
    opset = len_field(1, b"") + field_key(2, VARINT) + encode_varint(17)
    return field_key(1, VARINT) + encode_varint(ir_version) + len_field(8, opset) + len_field(7, graph)


@functools.cache
def max_ir_version() -> int:
    """The highest ONNX IR version the installed onnxruntime loads.

    onnxruntime has no API for it (it refuses a newer model at load: "Unsupported model IR
    version"), so this asks it: a binary search over tiny hand-encoded identity models,
    loaded in this process once (a few milliseconds), then cached.
    """
    import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

    options = ort.SessionOptions()
    options.log_severity_level = 4

    def loads(ir: int) -> bool:
        try:
            ort.InferenceSession(identity_model(ir), options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - onnxruntime raises several unrelated types
            return False
        return True

    low, high = 3, 128  # IR 3 is the oldest onnxruntime reads; 128 is far beyond any release
    if not loads(low):
        return low
    while low < high:  # invariant: loads(low); every IR above high is refused
        mid = (low + high + 1) // 2
        if loads(mid):
            low = mid
        else:
            high = mid - 1
    return low
