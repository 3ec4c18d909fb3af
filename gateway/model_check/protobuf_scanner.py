"""Reading an ONNX ``ModelProto`` from its protobuf wire format, without the ``onnx``
package (not a runtime dependency): a bounded scan that collects the facts the checks need
(IR version, operator domains and types, external data), never the tensors themselves."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.errors import ModelInvalidError
from gateway.model_check import limits
from gateway.model_check.wire_format import I32, I64, LEN, VARINT

__all__ = ["ModelFacts", "inspect_model"]

_IR, _DOMAIN, _OPSET_DOMAIN, _EXTERNAL, _LOCATION = "ir", "domain", "opset-domain", "external", "location"
_OP_TYPE = "op-type"

_SCHEMA: dict[str, dict[int, str]] = {
    # message -> {field number: nested message, or what the field means}; from onnx.proto
    "model": {1: _IR, 7: "graph", 8: "opset", 20: "training", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {4: _OP_TYPE, 5: "attribute", 7: _DOMAIN},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "tensor": {13: _EXTERNAL, 14: _LOCATION},
    "sparse": {1: "tensor", 2: "tensor"},
    "function": {7: "node", 9: "opset", 11: "attribute"},
    "opset": {1: _OPSET_DOMAIN},
    "training": {1: "graph", 2: "graph"},
}
_VARINT_FIELDS = {_IR, _LOCATION}


@dataclass
class ModelFacts:
    """What the static inspection found in a ``ModelProto``."""

    ir_version: int = 0
    opset_domains: set[str] = field(default_factory=set)
    """Domains of ``opset_import`` (the model's and its functions')."""
    node_domains: set[str] = field(default_factory=set)
    """Domains named by nodes (in the main graph, subgraphs, functions and training graphs);
    a node without a domain field uses the default domain and adds nothing here."""
    external_data: bool = False
    """A tensor somewhere has ``data_location = EXTERNAL`` or ``external_data`` entries."""
    has_graph: bool = False
    model_opsets: int = 0
    """``opset_import`` entries of the model itself (onnxruntime needs at least one)."""
    op_types: set[str] = field(default_factory=set)
    """Operator types of every node, subgraphs included."""
    nodes: int = 0
    depth: int = 0
    """Deepest message nesting seen."""
    fields: int = 0


class _Malformed(Exception):
    """Internal: the bytes are not a well-formed protobuf message."""


class _Scanner:
    __slots__ = ("data", "facts")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.facts = ModelFacts()

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        data = self.data
        result = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise _Malformed
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7

    def message(self, kind: str, pos: int, end: int, depth: int) -> None:
        facts = self.facts
        if depth > limits.MAX_DEPTH:
            raise ModelInvalidError(f"the model's subgraphs are nested too deeply (over {limits.MAX_DEPTH} protobuf levels)")
        facts.depth = max(facts.depth, depth)
        if kind == "node":
            facts.nodes += 1
        elif kind == "opset" and depth == 1:
            facts.model_opsets += 1
        schema = _SCHEMA[kind]
        varint = self.varint
        while pos < end:
            key, pos = varint(pos, end)
            number, wire = key >> 3, key & 7
            facts.fields += 1
            if facts.fields > limits.MAX_FIELDS:
                raise ModelInvalidError(f"the model has more than {limits.MAX_FIELDS} protobuf fields")
            meaning = schema.get(number)
            if number == 0:
                raise _Malformed
            if wire == VARINT:
                value, pos = varint(pos, end)
                if meaning == _IR:
                    facts.ir_version = value
                elif meaning == _LOCATION:
                    facts.external_data = facts.external_data or value != 0
                elif meaning is not None:
                    raise _Malformed
            elif wire == LEN:
                size, pos = varint(pos, end)
                stop = pos + size
                if stop > end:
                    raise _Malformed
                if meaning in _SCHEMA:
                    if kind == "model" and meaning == "graph":
                        facts.has_graph = True
                    self.message(meaning, pos, stop, depth + 1)
                elif meaning == _OP_TYPE:
                    facts.op_types.add(self.text(pos, stop))
                elif meaning == _DOMAIN:
                    facts.node_domains.add(self.text(pos, stop))
                elif meaning == _OPSET_DOMAIN:
                    facts.opset_domains.add(self.text(pos, stop))
                elif meaning == _EXTERNAL:
                    facts.external_data = True
                elif meaning in _VARINT_FIELDS:
                    raise _Malformed  # a scalar sent as a packed or garbled field
                pos = stop
            elif wire == I64 or wire == I32:
                if meaning is not None:
                    raise _Malformed
                pos += 8 if wire == I64 else 4
                if pos > end:
                    raise _Malformed
            else:  # groups (3, 4) are not in onnx.proto; 6 and 7 do not exist
                raise _Malformed
        if pos != end:
            raise _Malformed

    def text(self, start: int, stop: int) -> str:
        try:
            return self.data[start:stop].decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed from None



def inspect_model(data: bytes) -> ModelFacts:
    """Read the facts the checks need from an ONNX file's bytes.

    Raises:
        ModelInvalidError: the bytes are not a well-formed ``ModelProto``, or nest or
            repeat beyond ``MAX_DEPTH`` / ``MAX_FIELDS``.
    """
    if not data:
        raise ModelInvalidError("the model file is empty")
    if len(data) > limits.MAX_MODEL_BYTES:
        raise ModelInvalidError(f"the model file is larger than the {limits.MAX_MODEL_BYTES >> 20} MiB limit")
    if data[4:8] == b"ORTM":
        raise ModelInvalidError("ORT-format models are not accepted; register the .onnx file")
    scanner = _Scanner(bytes(data))
    try:
        scanner.message("model", 0, len(data), 0)
    except _Malformed:
        raise ModelInvalidError("the file is not a valid ONNX model (malformed protobuf)") from None
    facts = scanner.facts
    if not facts.has_graph or facts.ir_version < 1 or not facts.model_opsets:
        raise ModelInvalidError("the file is not a valid ONNX model (no graph, IR version or opset import)")
    return facts
