"""Bodies that repeat a key in one object are refused (gateway.protocol.duplicate_keys)."""

from __future__ import annotations

import pytest

from gateway.errors import PayloadError
from gateway.codecs.v1 import decode_instances
from gateway.protocol.v2 import decode_request


def test_v1_row_with_a_repeated_feature_is_refused() -> None:
    body = b'{"instances": [{"a": 1, "b": 2}, {"a": 9999, "a": 2}]}'
    with pytest.raises(PayloadError, match="repeats the key 'a'"):
        decode_instances(body, 10)


def test_v1_repeated_top_level_key_is_refused() -> None:
    with pytest.raises(PayloadError, match="instances"):
        decode_instances(b'{"instances": [{"a": 1}], "instances": [{"a": 2}]}', 10)


def test_colons_inside_values_are_not_mistaken_for_keys() -> None:
    rows = decode_instances(b'{"instances": [{"t": "12:30:00", "a": 1}]}', 10)
    assert rows == [{"t": "12:30:00", "a": 1}]


def test_v2_repeated_keys_are_refused_and_ordinary_requests_pass() -> None:
    good = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}], "outputs": [{"name": "y"}]}'
    request, _ = decode_request(good, None)
    assert request.inputs[0].name == "x"
    bad = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0], "data": [2.0]}]}'
    with pytest.raises(PayloadError, match="repeats the key 'data'"):
        decode_request(bad, None)
