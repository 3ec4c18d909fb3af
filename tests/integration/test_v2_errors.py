"""Error answers of the V2 endpoints: 400 for a malformed tensor or body, 422 for rows the
guards reject (with ``violations``), 404 for an unknown model or version; always
``application/problem+json`` with ``error`` equal to ``detail``, never a 500.

The requests are built by hand (JSON, and the binary tensor data extension byte by byte),
because a stock client refuses to send most of them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.conftest import ServerProcess
from tests.integration.support import REASONS, assert_problem

INFER = "/v2/models/penguins/infer"
COLUMNS: dict[str, tuple[str, list[Any]]] = {
    "island": ("BYTES", ["Biscoe", "Dream", "Torgersen"]),
    "bill_length_mm": ("FP64", [45.2, 39.5, 38.9]),
    "bill_depth_mm": ("FP64", [15.1, 17.8, 17.8]),
    "flipper_length_mm": ("FP64", [215.0, 188.0, 181.0]),
    "body_mass_g": ("FP64", [5100.0, 3300.0, 3625.0]),
    "sex": ("BYTES", ["male", "female", "female"]),
    "year": ("INT64", [2008, 2007, 2009]),
}
"""Three valid penguins rows, column by column, with each feature's V2 datatype."""
N = 3
FP64_BILL = np.array(COLUMNS["bill_length_mm"][1], "<f8").tobytes()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def tensors(**changes: Any) -> list[dict[str, Any]]:
    """The rows as JSON tensors ``[N, 1]``; ``name={...}`` updates a tensor, ``name=None`` drops it."""
    out = []
    for name, (datatype, data) in COLUMNS.items():
        change = changes.get(name, {})
        if change is not None:
            out.append({"name": name, "datatype": datatype, "shape": [N, 1], "data": list(data), **change})
    return out


def binary_body(inputs: list[dict[str, Any]], raw: dict[str, bytes], *, extra: bytes = b"") -> tuple[bytes, int]:
    """A binary-tensor-data body: the tensors named in ``raw`` lose ``data`` and carry those bytes."""
    header_inputs = []
    for tensor in inputs:
        if tensor["name"] in raw:
            tensor = {k: v for k, v in tensor.items() if k != "data"}
            tensor["parameters"] = {"binary_data_size": len(raw[tensor["name"]]), **tensor.get("parameters", {})}
        header_inputs.append(tensor)
    header = json.dumps({"inputs": header_inputs}).encode()
    binary = b"".join(raw[t["name"]] for t in inputs if t["name"] in raw)
    return header + binary + extra, len(header)


def post_binary(client: httpx.Client, body: bytes, header_length: int | str) -> httpx.Response:
    headers = {"Inference-Header-Content-Length": str(header_length), "Content-Type": "application/octet-stream"}
    return client.post(INFER, content=body, headers=headers)


def violations(response: httpx.Response) -> list[tuple[int, str, str]]:
    """(row, feature, reason) of every violation of a 422 answer."""
    body = assert_problem(response, 422)
    found: list[dict[str, Any]] = body["violations"]
    assert found and all(v["reason"] in REASONS and "value" in v for v in found), found
    return [(v["row"], v["feature"], v["reason"]) for v in found]


def _without_ids(response: httpx.Response) -> list[dict[str, Any]]:
    return [o for o in response.json()["outputs"] if o["name"] != "id"]


def test_the_valid_request_is_served(client: httpx.Client) -> None:
    """The baseline every case below breaks in one place."""
    response = client.post(INFER, json={"inputs": tensors()})
    assert response.status_code == 200, response.text[:500]
    labels = next(o for o in response.json()["outputs"] if o["name"] == "label")["data"]
    assert labels == ["Gentoo", "Adelie", "Adelie"]
    # the same rows with one tensor in binary: the same answer (ids aside: one per prediction)
    body, length = binary_body(tensors(), {"bill_length_mm": FP64_BILL})
    binary = post_binary(client, body, length)
    assert binary.status_code == 200, binary.text[:500]
    assert _without_ids(binary) == _without_ids(response)


# --- 400: the tensors themselves are malformed ------------------------------------------

COLOUR = {"name": "colour", "datatype": "BYTES", "shape": [N], "data": ["a"] * N}


@pytest.mark.parametrize(
    ("inputs", "names"),
    [
        pytest.param(tensors(bill_length_mm={"data": ["a", "b", "c"]}), "bill_length_mm", id="fp64-with-strings"),
        pytest.param(tensors(year={"data": [2008.5, 2007, 2009]}), "year", id="int64-with-floats"),
        pytest.param(tensors(year={"data": [True, False, True]}), "year", id="int64-with-booleans"),
        pytest.param(tensors(year={"data": [2**70, 2008, 2008]}), "year", id="int64-overflow"),
        pytest.param(
            tensors(bill_length_mm={"shape": [N, 2], "data": [45.2, 1.0, 39.5, 1.0, 38.9, 1.0]}),
            "bill_length_mm",
            id="shape-n-by-2",
        ),
        pytest.param(tensors(year={"shape": [N, 1, 1]}), "year", id="shape-3d"),
        pytest.param(tensors(year={"shape": []}), "year", id="shape-scalar"),
        pytest.param(tensors(year={"shape": [-1, 1]}), "year", id="shape-negative"),
        pytest.param(tensors(year={"shape": [2, 1], "data": [2008, 2009]}), "year", id="mismatched-rows"),
        pytest.param(tensors(bill_length_mm={"data": [45.2, 39.5]}), "bill_length_mm", id="data-shorter-than-shape"),
        pytest.param([*tensors(), tensors()[1]], "bill_length_mm", id="duplicate-name"),
        pytest.param([*tensors(), COLOUR, COLOUR], "colour", id="duplicate-unknown-name"),
        pytest.param(tensors(year={"datatype": "INT128"}), "year", id="unknown-datatype"),
        pytest.param(tensors(year={"data": None}), "year", id="no-data"),
        pytest.param([], None, id="no-inputs"),
        pytest.param([{**t, "shape": [0, 1], "data": []} for t in tensors()], None, id="zero-rows"),
    ],
)
def test_malformed_tensors_are_400(client: httpx.Client, inputs: list[dict[str, Any]], names: str | None) -> None:
    body = assert_problem(client.post(INFER, json={"inputs": inputs}), 400)
    if names is not None:  # the message names the tensor at fault
        assert names in body["detail"], body["detail"]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"inputs": tensors(), "colour": 1}, id="unknown-member"),
        pytest.param({"inputs": tensors(), "outputs": [{"name": "nope"}]}, id="unknown-output"),
        pytest.param({"inputs": tensors(), "outputs": [{"name": "prediction"}]}, id="regressor-output-of-a-classifier"),
        pytest.param({"inputs": tensors(), "id": 5}, id="id-not-a-string"),
        pytest.param({"inputs": tensors(), "parameters": 5}, id="parameters-not-an-object"),
        pytest.param({"inputs": "island"}, id="inputs-not-a-list"),
        pytest.param({"instances": [{"island": "Biscoe"}]}, id="v1-body"),
        pytest.param([], id="array"),
    ],
)
def test_malformed_requests_are_400(client: httpx.Client, payload: Any) -> None:
    assert_problem(client.post(INFER, json=payload), 400)


@pytest.mark.parametrize("payload", [b'{"inputs": [', b"", b"inputs=1"], ids=["truncated", "empty", "not-json"])
def test_bodies_that_are_not_json_are_400(client: httpx.Client, payload: bytes) -> None:
    assert_problem(client.post(INFER, content=payload, headers={"Content-Type": "application/json"}), 400)


def test_unknown_output_names_the_outputs(client: httpx.Client) -> None:
    body = assert_problem(client.post(INFER, json={"inputs": tensors(), "outputs": [{"name": "nope"}]}), 400)
    assert "nope" in body["detail"] and "probabilities" in body["detail"]


# --- 400: the binary tensor data extension ----------------------------------------------


def _bytes_tensor(values: list[bytes]) -> bytes:
    """BYTES elements in Triton's layout: a 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


@pytest.mark.parametrize(
    "size", [800, 25, -8, "24", 23.0, True], ids=["beyond-body", "beyond-data", "negative", "string", "float", "bool"]
)
def test_binary_data_size_that_is_not_the_size(client: httpx.Client, size: Any) -> None:
    inputs = tensors(bill_length_mm={"parameters": {"binary_data_size": size}})
    body, length = binary_body(inputs, {"bill_length_mm": FP64_BILL})
    assert "bill_length_mm" in assert_problem(post_binary(client, body, length), 400)["detail"]


def test_binary_size_not_matching_the_shape(client: httpx.Client) -> None:
    body, length = binary_body(tensors(), {"bill_length_mm": FP64_BILL[:16]})  # 2 doubles for 3 rows
    assert "bill_length_mm" in assert_problem(post_binary(client, body, length), 400)["detail"]


@pytest.mark.parametrize("header_length", ["abc", "1e3", "12.0", "", "-5", "0"])
def test_header_length_not_a_length(client: httpx.Client, header_length: str) -> None:
    body, _ = binary_body(tensors(), {"bill_length_mm": FP64_BILL})
    assert_problem(post_binary(client, body, header_length), 400)


def test_header_length_larger_than_the_body(client: httpx.Client) -> None:
    body, _ = binary_body(tensors(), {"bill_length_mm": FP64_BILL})
    assert "Inference-Header-Content-Length" in assert_problem(post_binary(client, body, len(body) + 1), 400)["detail"]


def test_header_length_inside_the_json(client: httpx.Client) -> None:
    body, length = binary_body(tensors(), {"bill_length_mm": FP64_BILL})
    assert_problem(post_binary(client, body, length - 10), 400)


def test_leftover_binary_bytes(client: httpx.Client) -> None:
    body, length = binary_body(tensors(), {"bill_length_mm": FP64_BILL}, extra=b"\x00" * 5)
    assert "5 bytes" in assert_problem(post_binary(client, body, length), 400)["detail"]


def test_binary_bytes_without_a_tensor_claiming_them(client: httpx.Client) -> None:
    header = json.dumps({"inputs": tensors()}).encode()
    assert_problem(post_binary(client, header + b"stray", len(header)), 400)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_bytes_tensor([b"Biscoe", b"Dream"]), id="one-element-short"),
        pytest.param(_bytes_tensor([b"Biscoe", b"Dream"]) + struct.pack("<I", 99) + b"Torgersen", id="length-overruns"),
        pytest.param(_bytes_tensor([b"Biscoe", b"Dream", b"Torgersen"]) + b"\x00\x00", id="bytes-left-over"),
    ],
)
def test_malformed_binary_bytes_tensor(client: httpx.Client, raw: bytes) -> None:
    body, length = binary_body(tensors(), {"island": raw})
    assert "island" in assert_problem(post_binary(client, body, length), 400)["detail"]


# --- 422: well-formed tensors, rows the guards reject -----------------------------------


def test_bytes_where_the_spec_says_number(client: httpx.Client) -> None:
    inputs = tensors(bill_length_mm={"datatype": "BYTES", "data": ["45.2", "39.5", "38.9"]})
    response = client.post(INFER, json={"inputs": inputs})
    assert violations(response) == [(i, "bill_length_mm", "wrong_type") for i in range(N)]
    assert [v["value"] for v in response.json()["violations"]] == ["45.2", "39.5", "38.9"]


def test_binary_bytes_where_the_spec_says_number(client: httpx.Client) -> None:
    inputs = tensors(bill_length_mm={"datatype": "BYTES"})
    body, length = binary_body(inputs, {"bill_length_mm": _bytes_tensor([b"45.2", b"39.5", b"38.9"])})
    assert violations(post_binary(client, body, length)) == [(i, "bill_length_mm", "wrong_type") for i in range(N)]


def test_number_where_the_spec_says_category(client: httpx.Client) -> None:
    inputs = tensors(island={"datatype": "FP64", "data": [1.0, 2.0, 3.0]})
    assert violations(client.post(INFER, json={"inputs": inputs})) == [(i, "island", "wrong_type") for i in range(N)]


def test_missing_input_of_a_feature_without_imputation(client: httpx.Client) -> None:
    response = client.post(INFER, json={"inputs": tensors(island=None)})
    assert violations(response) == [(i, "island", "missing") for i in range(N)]
    assert all(v["value"] is None for v in response.json()["violations"])


def test_missing_input_of_the_regressor(client: httpx.Client) -> None:
    features = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    inputs = [{"name": f, "datatype": "FP64", "shape": [2], "data": [0.01, -0.02]} for f in features if f != "bmi"]
    assert violations(client.post("/v2/models/diabetes/infer", json={"inputs": inputs})) == [
        (0, "bmi", "missing"),
        (1, "bmi", "missing"),
    ]


def test_missing_input_of_an_imputed_feature_is_served(client: httpx.Client) -> None:
    response = client.post(INFER, json={"inputs": tensors(sex=None, bill_depth_mm=None)})
    assert response.status_code == 200, response.text[:500]


def test_unknown_input_tensor(client: httpx.Client) -> None:
    inputs = [*tensors(), {"name": "colour", "datatype": "BYTES", "shape": [N, 1], "data": ["red", "green", "blue"]}]
    found = violations(client.post(INFER, json={"inputs": inputs}))
    assert found == [(i, "colour", "unknown_feature") for i in range(N)]


def test_unseen_category_only_in_the_bad_row(client: httpx.Client) -> None:
    inputs = tensors(island={"data": ["Biscoe", "Atlantis", "Dream"]})
    body = assert_problem(client.post(INFER, json={"inputs": inputs}), 422)
    assert body["violations"] == [{"row": 1, "feature": "island", "reason": "unseen_category", "value": "Atlantis"}]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_not_finite_in_binary_fp64(client: httpx.Client, value: float) -> None:
    body, length = binary_body(tensors(), {"bill_length_mm": np.array([45.2, value, 38.9], "<f8").tobytes()})
    assert violations(post_binary(client, body, length)) == [(1, "bill_length_mm", "not_finite")]


def test_bytes_that_are_not_text(client: httpx.Client) -> None:
    body, length = binary_body(tensors(), {"island": _bytes_tensor([b"Biscoe", b"\xff\xfe", b"Dream"])})
    assert violations(post_binary(client, body, length)) == [(1, "island", "wrong_type")]


def test_out_of_domain_year(client: httpx.Client) -> None:
    inputs = tensors(year={"data": [2008, 1999, 2031]})
    found = violations(client.post(INFER, json={"inputs": inputs}))
    assert found == [(1, "year", "below_min"), (2, "year", "above_max")]


@pytest.mark.parametrize(
    ("datatype", "value"), [("UINT8", 2008), ("INT8", 300), ("INT16", 70000), ("INT32", 3_000_000_000)]
)
def test_json_value_out_of_range_for_its_declared_datatype(client: httpx.Client, datatype: str, value: int) -> None:
    inputs = tensors(year={"datatype": datatype, "data": [value, 2008, 2008]})
    assert_problem(client.post(INFER, json={"inputs": inputs}), 400)


@pytest.mark.parametrize(
    "request_extra",
    [
        pytest.param({"outputs": [{"name": "label", "parameters": {"binary_data": "false"}}]}, id="output-binary_data"),
        pytest.param({"parameters": {"binary_data_output": "false"}}, id="request-binary_data_output"),
    ],
)
def test_a_string_false_does_not_switch_binary_output_on(client: httpx.Client, request_extra: dict[str, Any]) -> None:
    response = client.post(INFER, json={"inputs": tensors(), **request_extra})
    if response.status_code == 400:
        assert_problem(response, 400)
    else:  # honoured as false: a plain JSON answer
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert "inference-header-content-length" not in response.headers


# --- 404, 405 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models/no-such-model/infer"),
        ("GET", "/v2/models/no-such-model"),
        ("GET", "/v2/models/no-such-model/ready"),
        ("GET", "/v2/models/no-such-model/config"),
        ("POST", "/v2/models/no-such-model/versions/1/infer"),
        ("POST", "/v2/models/penguins/versions/2/infer"),
        ("GET", "/v2/models/penguins/versions/2"),
        ("GET", "/v2/models/penguins/versions/2/ready"),
        ("GET", "/v2/models/penguins/versions/2/config"),
        ("POST", "/v2/models/penguins/versions/latest/infer"),
        ("POST", "/v2/models/penguins/versions/0/infer"),
        ("GET", "/v2/models/penguins/versions/-1/ready"),
    ],
)
def test_unknown_model_or_version_is_404(client: httpx.Client, method: str, path: str) -> None:
    assert_problem(client.request(method, path, json={"inputs": tensors()}), 404)


def test_wrong_method_is_405(client: httpx.Client) -> None:
    assert_problem(client.get(INFER), 405)
    assert_problem(client.get("/v2/repository/index"), 405)
