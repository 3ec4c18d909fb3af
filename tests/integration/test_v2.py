"""The Open Inference Protocol (V2) through the stock clients, against the real server.

tritonclient at its defaults (binary input tensors, binary outputs because it sets
``binary_data_output`` when it names no outputs) and KServe's SDK (JSON and binary input
tensors) must get exactly V1's answers for the same rows of the real data sets: the
penguins classifier (BYTES categories, an INT64 year) and the diabetes regressor. Then the
metadata and configuration those clients read, the ``/versions/{v}`` forms, and the model
repository extension (token, index, unload/load, and the watcher leaving an unloaded model
alone).

Error answers of the V2 endpoints are in ``test_v2_errors.py``.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import (
    ADMIN_TOKEN,
    DIABETES_SPEC,
    PENGUINS_SPEC,
    PROBLEM_JSON,
    admin,
    assert_problem,
    predict,
)

V2_DATATYPE = {"number": "FP64", "integer": "INT64", "category": "BYTES", "boolean": "BOOL"}
TRITON_TYPE = {"FP64": "TYPE_FP64", "INT64": "TYPE_INT64", "BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL"}
NUMPY_TYPE = {"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_, "BYTES": object}
CLASSIFIER_OUTPUTS = ["label", "probabilities", "confidence", "id"]
REGRESSOR_OUTPUTS = ["prediction", "id"]
WATCH_INTERVAL = 0.2


def _spec(path: Path) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(path.read_text())
    return spec


SPECS = {"penguins": _spec(PENGUINS_SPEC), "diabetes": _spec(DIABETES_SPEC)}
PENGUIN_LABELS: list[str] = SPECS["penguins"]["output"]["labels"]


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def tc(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    """tritonclient at its default settings."""
    c = triton.InferenceServerClient(url=f"{server.host}:{server.port}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def frames() -> dict[str, Any]:
    """The real rows: complete penguins (V2 binary tensors have no null) and diabetes."""
    from palmerpenguins import load_penguins
    from sklearn.datasets import load_diabetes

    penguins = load_penguins().drop(columns="species").dropna().reset_index(drop=True)
    diabetes = load_diabetes(as_frame=True).frame.drop(columns="target")
    assert len(penguins) > 300 and len(diabetes) == 442
    return {"penguins": penguins, "diabetes": diabetes}


def _arrays(frame: Any, model: str) -> dict[str, np.ndarray]:
    """One ``[N, 1]`` array per feature, typed as the spec's V2 datatype."""
    out = {}
    for feature in SPECS[model]["features"]:
        datatype = V2_DATATYPE[feature["type"]]
        column = frame[feature["name"]].to_numpy()
        if datatype == "BYTES":
            values = np.array([str(v) for v in column], dtype=object)
        else:
            values = column.astype(NUMPY_TYPE[datatype])
        out[feature["name"]] = values.reshape(-1, 1)
    return out


def _triton_inputs(frame: Any, model: str) -> list[triton.InferInput]:
    inputs = []
    for name, array in _arrays(frame, model).items():
        datatype = V2_DATATYPE[next(f["type"] for f in SPECS[model]["features"] if f["name"] == name)]
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)  # the default: binary_data=True
        inputs.append(tensor)
    return inputs


def _v1(client: httpx.Client, model: str, frame: Any) -> list[dict[str, Any]]:
    response = predict(client, model, frame.to_dict("records"))
    assert response.status_code == 200, response.text[:500]
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    assert len(predictions) == len(frame)
    return predictions


def _text(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1).tolist()]


def _assert_classifier_matches_v1(
    labels: list[str], probabilities: np.ndarray, confidence: np.ndarray, ids: list[str], v1: list[dict[str, Any]]
) -> None:
    n = len(v1)
    assert labels == [p["label"] for p in v1]
    assert probabilities.shape == (n, len(PENGUIN_LABELS))
    # float64 inputs end to end: the very same float32 numbers as V1's, not merely close ones
    assert probabilities.tolist() == [[p["probabilities"][label] for label in PENGUIN_LABELS] for p in v1]
    assert confidence.reshape(-1).tolist() == [p["confidence"] for p in v1]
    assert len(set(ids)) == n and not set(ids) & {p["id"] for p in v1}  # every prediction its own id


def _assert_regressor_matches_v1(values: np.ndarray, ids: list[str], v1: list[dict[str, Any]]) -> None:
    assert values.reshape(-1).tolist() == [p["value"] for p in v1]
    assert len(set(ids)) == len(v1) and not set(ids) & {p["id"] for p in v1}


# --- health, metadata, configuration ----------------------------------------------------


def test_health_and_readiness_through_tritonclient(tc: triton.InferenceServerClient) -> None:
    assert tc.is_server_live()
    assert tc.is_server_ready()
    assert tc.is_model_ready("penguins") and tc.is_model_ready("diabetes")
    assert tc.is_model_ready("penguins", "1")
    assert not tc.is_model_ready("penguins", "2")
    assert not tc.is_model_ready("no-such-model")


def test_server_metadata(tc: triton.InferenceServerClient) -> None:
    meta = tc.get_server_metadata()
    assert meta["name"] == "driftgate"
    assert meta["version"]
    assert {"binary_tensor_data", "model_repository", "model_configuration"} <= set(meta["extensions"])


@pytest.mark.parametrize("model", ["penguins", "diabetes"])
def test_model_metadata_is_the_spec(tc: triton.InferenceServerClient, model: str) -> None:
    meta = tc.get_model_metadata(model)
    assert meta["name"] == model
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": f["name"], "datatype": V2_DATATYPE[f["type"]], "shape": [-1, 1]} for f in SPECS[model]["features"]
    ]
    if model == "penguins":
        assert [o["name"] for o in meta["outputs"]] == CLASSIFIER_OUTPUTS
        assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
            "label": ("BYTES", [-1]),
            "probabilities": ("FP32", [-1, len(PENGUIN_LABELS)]),
            "confidence": ("FP32", [-1]),
            "id": ("BYTES", [-1]),
        }
    else:
        assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
            "prediction": ("FP32", [-1]),
            "id": ("BYTES", [-1]),
        }
    # the versioned form answers the same document
    assert tc.get_model_metadata(model, "1") == meta


@pytest.mark.parametrize("model", ["penguins", "diabetes"])
def test_model_config(tc: triton.InferenceServerClient, model: str) -> None:
    config = tc.get_model_config(model)
    assert config["name"] == model
    assert config["max_batch_size"] == 4096  # DRIFTGATE_MAX_BATCH_ROWS' default: batching on dimension 0
    assert config["input"] == [
        {"name": f["name"], "data_type": TRITON_TYPE[V2_DATATYPE[f["type"]]], "dims": [1]}
        for f in SPECS[model]["features"]
    ]
    expected = CLASSIFIER_OUTPUTS if model == "penguins" else REGRESSOR_OUTPUTS
    assert [o["name"] for o in config["output"]] == expected


# --- inference through tritonclient -----------------------------------------------------


def test_tritonclient_defaults_penguins_equal_v1(
    tc: triton.InferenceServerClient, client: httpx.Client, frames: dict[str, Any]
) -> None:
    frame = frames["penguins"]
    inputs = _triton_inputs(frame, "penguins")
    _, json_size = triton.InferenceServerClient.generate_request_body(inputs)
    assert json_size is not None, "tritonclient's default should send binary tensor data"

    result = tc.infer("penguins", inputs)

    response = result.get_response()
    assert response["model_name"] == "penguins" and response["model_version"] == "1"
    outputs = {o["name"]: o for o in response["outputs"]}
    assert list(outputs) == CLASSIFIER_OUTPUTS
    n = len(frame)
    for o in outputs.values():  # no outputs named: all of them, binary (binary_data_output)
        assert "data" not in o and o["parameters"]["binary_data_size"] > 0, o
    assert outputs["probabilities"]["shape"] == [n, 3] and outputs["label"]["shape"] == [n]
    assert outputs["probabilities"]["parameters"]["binary_data_size"] == n * 3 * 4
    assert set(_text(result.as_numpy("label"))) == set(PENGUIN_LABELS)  # every species, not one answer repeated
    _assert_classifier_matches_v1(
        _text(result.as_numpy("label")),
        result.as_numpy("probabilities"),
        result.as_numpy("confidence"),
        _text(result.as_numpy("id")),
        _v1(client, "penguins", frame),
    )


def test_tritonclient_defaults_diabetes_equal_v1(
    tc: triton.InferenceServerClient, client: httpx.Client, frames: dict[str, Any]
) -> None:
    frame = frames["diabetes"]
    result = tc.infer("diabetes", _triton_inputs(frame, "diabetes"))
    outputs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert list(outputs) == REGRESSOR_OUTPUTS
    assert outputs["prediction"]["parameters"]["binary_data_size"] == len(frame) * 4
    prediction = result.as_numpy("prediction")
    assert prediction.dtype == np.float32 and prediction.shape == (len(frame),)
    _assert_regressor_matches_v1(prediction, _text(result.as_numpy("id")), _v1(client, "diabetes", frame))


def test_tritonclient_requested_outputs_in_the_asked_form(
    tc: triton.InferenceServerClient, client: httpx.Client, frames: dict[str, Any]
) -> None:
    frame = frames["penguins"].iloc[::20]
    n = len(frame)
    outputs = [
        triton.InferRequestedOutput("label", binary_data=False),
        triton.InferRequestedOutput("probabilities", binary_data=True),
    ]

    result = tc.infer("penguins", _triton_inputs(frame, "penguins"), outputs=outputs)

    answered = {o["name"]: o for o in result.get_response()["outputs"]}
    assert list(answered) == ["label", "probabilities"]
    assert answered["label"]["data"] == _text(result.as_numpy("label"))  # JSON, in the header
    assert "binary_data_size" not in (answered["label"].get("parameters") or {})
    assert "data" not in answered["probabilities"]
    assert answered["probabilities"]["parameters"] == {"binary_data_size": n * 3 * 4}
    assert result.as_numpy("confidence") is None and result.as_numpy("id") is None
    v1 = _v1(client, "penguins", frame)
    assert _text(result.as_numpy("label")) == [p["label"] for p in v1]
    assert result.as_numpy("probabilities").tolist() == [[p["probabilities"][k] for k in PENGUIN_LABELS] for p in v1]


def test_tritonclient_one_json_output_is_a_json_answer(
    tc: triton.InferenceServerClient, client: httpx.Client, frames: dict[str, Any]
) -> None:
    frame = frames["diabetes"].iloc[:7]
    wanted = [triton.InferRequestedOutput("prediction", binary_data=False)]
    result = tc.infer("diabetes", _triton_inputs(frame, "diabetes"), outputs=wanted)
    (output,) = result.get_response()["outputs"]
    assert output["name"] == "prediction" and output["datatype"] == "FP32" and output["shape"] == [7]
    assert output["data"] == [p["value"] for p in _v1(client, "diabetes", frame)]


def test_v2_json_with_nulls_is_imputed_like_v1(client: httpx.Client) -> None:
    """V2 JSON data may carry ``null``: a missing value, imputed by the spec as on V1."""
    from palmerpenguins import load_penguins

    frame = load_penguins().drop(columns="species")
    frame = frame[frame.isna().any(axis=1) & frame["island"].notna() & frame["year"].notna()]
    assert len(frame) >= 5  # the data set's rows with missing sex or measurements
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    n = len(rows)
    inputs = [
        {"name": f["name"], "datatype": V2_DATATYPE[f["type"]], "shape": [n, 1], "data": [r[f["name"]] for r in rows]}
        for f in SPECS["penguins"]["features"]
    ]
    response = client.post("/v2/models/penguins/infer", json={"id": "with-nulls", "inputs": inputs})
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["id"] == "with-nulls"
    out = {o["name"]: o for o in body["outputs"]}
    v1 = predict(client, "penguins", rows).json()["predictions"]
    _assert_classifier_matches_v1(
        out["label"]["data"],
        np.array(out["probabilities"]["data"], dtype=np.float32).reshape(out["probabilities"]["shape"]),
        np.array(out["confidence"]["data"], dtype=np.float32),
        out["id"]["data"],
        v1,
    )


def test_rejected_row_through_tritonclient(
    tc: triton.InferenceServerClient, client: httpx.Client, frames: dict[str, Any]
) -> None:
    frame = frames["penguins"].iloc[:3].copy()
    frame.loc[1, "island"] = "Atlantis"
    inputs = _triton_inputs(frame, "penguins")

    with pytest.raises(InferenceServerException) as caught:
        tc.infer("penguins", inputs)
    assert caught.value.status() == "422"
    message = caught.value.message()

    # the very same request, raw: what the message stands for
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs)
    assert json_size is not None
    raw = client.post(
        "/v2/models/penguins/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(json_size), "Content-Type": "application/octet-stream"},
    )
    problem = assert_problem(raw, 422)
    assert raw.headers["content-type"].split(";")[0] == PROBLEM_JSON
    assert message == problem["error"]
    assert "1 of 3 rows" in message and "penguins" in message
    assert problem["violations"] == [{"row": 1, "feature": "island", "reason": "unseen_category", "value": "Atlantis"}]


# --- KServe's SDK -----------------------------------------------------------------------


class _Recorder(httpx.AsyncHTTPTransport):
    """Records the requests KServe's client sends, to prove which encoding it used."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await super().handle_async_request(request)


async def _kserve_run(
    url: str, frames: dict[str, Any], binary: bool
) -> tuple[bool, dict[str, Any], list[httpx.Request]]:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    recorder = _Recorder()
    kclient = InferenceRESTClient(config=RESTConfig(protocol="v2", transport=recorder, retries=0))
    try:
        ready = await kclient.is_server_ready(url)
        answers = {}
        for model, frame in frames.items():
            inputs = []
            for name, array in _arrays(frame, model).items():
                datatype = V2_DATATYPE[next(f["type"] for f in SPECS[model]["features"] if f["name"] == name)]
                tensor = InferInput(name, list(array.shape), datatype)
                tensor.set_data_from_numpy(array, binary_data=binary)
                inputs.append(tensor)
            result = await kclient.infer(url, InferRequest(model_name=model, infer_inputs=inputs), model_name=model)
            answers[model] = {o.name: o.as_numpy() for o in result.outputs}
        return ready, answers, recorder.requests
    finally:
        await kclient.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_sdk_equals_v1(
    server: ServerProcess, client: httpx.Client, frames: dict[str, Any], binary: bool
) -> None:
    small = {"penguins": frames["penguins"].iloc[::3], "diabetes": frames["diabetes"].iloc[::2]}

    ready, answers, requests = asyncio.run(_kserve_run(server.url, small, binary))

    assert ready is True
    infers = [r for r in requests if r.url.path.endswith("/infer")]
    assert [r.url.path for r in infers] == ["/v2/models/penguins/infer", "/v2/models/diabetes/infer"]
    for r in infers:  # the SDK really sent the encoding under test
        assert ("inference-header-content-length" in r.headers) is binary
    penguins = answers["penguins"]
    assert list(penguins) == CLASSIFIER_OUTPUTS
    _assert_classifier_matches_v1(
        _text(penguins["label"]), penguins["probabilities"], penguins["confidence"], _text(penguins["id"]),
        _v1(client, "penguins", small["penguins"]),
    )  # fmt: skip
    diabetes = answers["diabetes"]
    assert list(diabetes) == REGRESSOR_OUTPUTS
    v1 = _v1(client, "diabetes", small["diabetes"])
    _assert_regressor_matches_v1(diabetes["prediction"], _text(diabetes["id"]), v1)


# --- the /versions/{v} forms ------------------------------------------------------------


def test_version_forms(client: httpx.Client, tc: triton.InferenceServerClient, frames: dict[str, Any]) -> None:
    ready = client.get("/v2/models/penguins/versions/1/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True

    meta = client.get("/v2/models/penguins/versions/1")
    assert meta.status_code == 200
    assert meta.json() == client.get("/v2/models/penguins").json()

    config = client.get("/v2/models/penguins/versions/1/config")
    assert config.status_code == 200 and config.json()["name"] == "penguins"

    frame = frames["penguins"].iloc[:4]
    inputs = [
        {"name": name, "datatype": V2_DATATYPE[f["type"]], "shape": [4, 1], "data": array.reshape(-1).tolist()}
        for f in SPECS["penguins"]["features"]
        for name, array in [(f["name"], _arrays(frame, "penguins")[f["name"]])]
    ]
    response = client.post("/v2/models/penguins/versions/1/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert body["model_name"] == "penguins" and body["model_version"] == "1"
    labels = next(o["data"] for o in body["outputs"] if o["name"] == "label")
    assert labels == [p["label"] for p in _v1(client, "penguins", frame)]

    # and tritonclient's model_version argument, which builds the same URLs
    result = tc.infer("penguins", _triton_inputs(frame, "penguins"), model_version="1")
    assert _text(result.as_numpy("label")) == labels


# --- the model repository extension -----------------------------------------------------

REPOSITORY_CALLS = [
    "/v2/repository/index",
    "/v2/repository/models/penguins/unload",
    "/v2/repository/models/penguins/load",
]


@pytest.mark.parametrize("path", REPOSITORY_CALLS)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}],
    ids=["none", "wrong", "no-scheme"],
)
def test_repository_needs_the_token(client: httpx.Client, path: str, headers: dict[str, str]) -> None:
    assert_problem(client.post(path, headers=headers), 401)
    assert client.get("/v2/models/penguins/ready").status_code == 200  # an unauthorised unload changed nothing


def test_repository_off_without_a_token(start_server: StartServer) -> None:
    proc = start_server()  # the harness drops every inherited DRIFTGATE_* variable: no admin token
    with proc.client() as c:
        for path in REPOSITORY_CALLS:
            assert_problem(c.post(path, headers=admin()), 403)
        assert c.get("/v2/models/penguins/ready").status_code == 200


def test_repository_index(tc: triton.InferenceServerClient) -> None:
    index = tc.get_model_repository_index(headers=admin())
    assert index == [
        {"name": "diabetes", "version": "1", "state": "READY"},
        {"name": "digits", "version": "1", "state": "READY"},
        {"name": "penguins", "version": "1", "state": "READY"},
    ]


def _stage_version(repository: Path, model: str, version: int, staging: Path) -> None:
    """A copy of version 1 as ``version``, moved in atomically (the watcher never sees half of it)."""
    staged = staging / f"{model}-{version}"
    shutil.copytree(repository / model / "1", staged)
    os.rename(staged, repository / model / str(version))


def _index(tc: triton.InferenceServerClient) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["name"], e["version"]): e for e in tc.get_model_repository_index(headers=admin())}


@pytest.mark.slow
def test_unload_and_load(start_server: StartServer, tmp_path: Path, frames: dict[str, Any]) -> None:
    proc = start_server(env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN, "DRIFTGATE_WATCH_INTERVAL": str(WATCH_INTERVAL)})
    tc = triton.InferenceServerClient(url=f"{proc.host}:{proc.port}")
    frame = frames["penguins"].iloc[:5]
    try:
        with proc.client() as c:
            unloaded = c.post("/v2/repository/models/penguins/unload", headers=admin())
            assert unloaded.status_code == 200 and unloaded.json() == {"name": "penguins", "versions": ["1"]}

            assert not tc.is_model_ready("penguins")
            for method, path in [
                ("GET", "/v2/models/penguins/ready"),
                ("GET", "/v2/models/penguins/versions/1/ready"),
                ("GET", "/v2/models/penguins"),
                ("GET", "/v2/models/penguins/config"),
                ("POST", "/v2/models/penguins/infer"),
                ("POST", "/v2/models/penguins/versions/1/infer"),
            ]:
                assert_problem(c.request(method, path, json={"inputs": []}), 404)
            with pytest.raises(InferenceServerException) as caught:
                tc.infer("penguins", _triton_inputs(frame, "penguins"))
            assert caught.value.status() == "404"
            assert_problem(c.post("/v2/repository/models/penguins/unload", headers=admin()), 404)  # not served now
            assert c.get("/v2/health/ready").status_code == 200  # the server as a whole stays ready
            index = _index(tc)
            assert index[("penguins", "1")]["state"] == "UNAVAILABLE" and index[("penguins", "1")]["reason"]
            assert index[("diabetes", "1")]["state"] == "READY"

            # the watcher is alive (it picks up a new diabetes version) yet leaves penguins alone,
            # even a new version of it
            _stage_version(proc.repository, "penguins", 2, tmp_path)
            _stage_version(proc.repository, "diabetes", 2, tmp_path)
            deadline = time.monotonic() + 10
            while _index(tc).get(("diabetes", "2"), {}).get("state") != "READY":
                assert time.monotonic() < deadline, f"the watcher never loaded diabetes 2: {_index(tc)}"
                time.sleep(0.05)
            time.sleep(2 * WATCH_INTERVAL + 0.1)
            index = _index(tc)
            assert index[("penguins", "1")]["state"] == "UNAVAILABLE"
            assert index[("penguins", "2")]["state"] == "UNAVAILABLE" and index[("penguins", "2")]["reason"]
            assert not tc.is_model_ready("penguins")
            assert_problem(c.get("/v2/models/penguins/ready"), 404)

            tc.load_model("penguins", headers=admin())  # the stock client's load call

            index = _index(tc)
            assert index[("penguins", "1")] == {"name": "penguins", "version": "1", "state": "READY"}
            assert index[("penguins", "2")] == {"name": "penguins", "version": "2", "state": "READY"}
            assert tc.is_model_ready("penguins") and tc.is_model_ready("penguins", "1")
            assert c.get("/v2/models/penguins").json()["versions"] == ["1", "2"]
            result = tc.infer("penguins", _triton_inputs(frame, "penguins"))
            assert result.get_response()["model_version"] == "2"
            assert _text(result.as_numpy("label")) == [p["label"] for p in _v1(c, "penguins", frame)]

            tc.unload_model("penguins", headers=admin())  # and the stock client's unload call
            assert not tc.is_model_ready("penguins")
            again = c.post("/v2/repository/models/penguins/load", headers=admin())
            assert again.status_code == 200 and again.json() == {"name": "penguins", "versions": ["1", "2"]}
            assert tc.is_model_ready("penguins")
    finally:
        tc.close()
