"""The few pieces of protobuf's wire format the checks need: wire types, and encoding a
field key, a varint and a length-delimited field (``ir_probe`` builds a model with them)."""

from __future__ import annotations

VARINT, I64, LEN, I32 = 0, 1, 2, 5
"""Wire types (3 and 4, groups, are not in onnx.proto; 6 and 7 do not exist)."""


def field_key(number: int, wire: int) -> bytes:
    """The key that starts field ``number`` of wire type ``wire``."""
    return encode_varint(number << 3 | wire)


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def len_field(number: int, payload: bytes) -> bytes:
    """Field ``number`` holding ``payload`` (a nested message, a string or bytes)."""
    return field_key(number, LEN) + encode_varint(len(payload)) + payload
