"""Registration over HTTP (``PUT /v1/models/{name}/versions/{v}``) and pinned versions.

A registration either serves the new version at once, or is refused with one clear
message and changes nothing: no version folder, no change in ``GET /v1/models``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from msgspec.structs import replace

from gateway.spec import encode_spec, load_spec
from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import (
    ADMIN_TOKEN,
    DIABETES_MODEL,
    DIABETES_SPEC,
    PENGUINS_MODEL,
    PENGUINS_SPEC,
    admin,
    assert_problem,
    bundle,
    penguin,
    predict,
    version_dirs,
)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _listing(client: httpx.Client) -> Any:
    response = client.get("/v1/models")
    assert response.status_code == 200
    return response.json()


def _register(
    client: httpx.Client, name: str, version: str, model: bytes, spec: bytes, **kwargs: Any
) -> httpx.Response:
    headers = kwargs.pop("headers", admin())
    return client.put(f"/v1/models/{name}/versions/{version}", files=bundle(model, spec), headers=headers, **kwargs)


def test_registered_version_becomes_default_while_pinned_versions_stay(
    server: ServerProcess, client: httpx.Client
) -> None:
    model, spec = PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes()
    assert predict(client, "penguins", [penguin()]).json()["model_version"] == "1"

    response = _register(client, "penguins", "2", model, spec)

    assert response.status_code == 201, response.text
    answer = response.json()
    assert (answer["name"], answer["version"], answer["default"]) == ("penguins", "2", True)
    assert answer["spec_digest"].startswith("sha256:")
    assert predict(client, "penguins", [penguin()]).json()["model_version"] == "2"
    assert predict(client, "penguins", [penguin()], version="1").json()["model_version"] == "1"
    assert predict(client, "penguins", [penguin()], version="2").json()["model_version"] == "2"
    listed = {m["name"]: m for m in _listing(client)["models"]}
    assert listed["penguins"]["versions"] == ["1", "2"] and listed["penguins"]["version"] == "2"
    folder = server.repository / "penguins" / "2"
    assert (folder / "model.onnx").read_bytes() == model
    assert (folder / "spec.yaml").read_bytes() == spec

    before = version_dirs(server.repository)
    again = _register(client, "penguins", "2", model, spec)
    assert_problem(again, 409)
    assert version_dirs(server.repository) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        admin("not-the-token"),
        admin(ADMIN_TOKEN + "x"),
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
    ],
    ids=["no-token", "wrong-token", "longer-token", "wrong-scheme", "no-scheme"],
)
def test_registration_needs_the_token(server: ServerProcess, client: httpx.Client, headers: dict[str, str]) -> None:
    before = version_dirs(server.repository)
    response = _register(
        client, "penguins", "50", PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes(), headers=headers
    )
    assert_problem(response, 401)
    assert ADMIN_TOKEN not in response.text
    assert version_dirs(server.repository) == before


def test_admin_endpoints_are_off_without_a_token(start_server: StartServer) -> None:
    proc = start_server()
    before = version_dirs(proc.repository)
    with proc.client() as c:
        response = _register(
            c, "penguins", "2", PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes(), headers=admin("anything")
        )
        assert_problem(response, 403)
        assert predict(c, "penguins", [penguin()]).json()["model_version"] == "1"
    assert version_dirs(proc.repository) == before


# --- refusals ---------------------------------------------------------------------------


def _spec_without_year() -> bytes:
    spec = load_spec(PENGUINS_SPEC)
    assert spec.features[-1].name == "year"
    return encode_spec(replace(spec, features=spec.features[:-1]))


def _spec_with_labels_swapped() -> bytes:
    """Adelie and Chinstrap swapped, with their class counts: a valid spec, the wrong order."""
    spec = load_spec(PENGUINS_SPEC)
    out = spec.output
    order = [1, 0, 2]
    baseline = replace(out.baseline, class_counts=tuple(out.baseline.class_counts[i] for i in order))
    return encode_spec(
        replace(spec, output=replace(out, labels=tuple(out.labels[i] for i in order), baseline=baseline))
    )


REFUSALS = {
    # case: (name, version, model, spec, status, problem code, words the detail must hold)
    "corrupt-onnx": (
        "penguins",
        "7",
        lambda: os.urandom(4096),
        PENGUINS_SPEC.read_bytes,
        422,
        "model-invalid",  # refused by the static check (gateway.model_check) before onnxruntime sees it
        ["ONNX"],
    ),
    "empty-onnx": ("penguins", "7", lambda: b"", PENGUINS_SPEC.read_bytes, None, None, []),
    "width-mismatch": (
        "penguins",
        "7",
        PENGUINS_MODEL.read_bytes,
        _spec_without_year,
        422,
        "spec-mismatch",
        ["10", "9"],
    ),
    "regressor-with-classifier-spec": (
        "penguins",
        "7",
        DIABETES_MODEL.read_bytes,
        PENGUINS_SPEC.read_bytes,
        422,
        "spec-mismatch",
        ["labels"],
    ),
    "classifier-with-regressor-spec": (
        "diabetes",
        "7",
        PENGUINS_MODEL.read_bytes,
        DIABETES_SPEC.read_bytes,
        422,
        "spec-mismatch",
        ["regression"],
    ),
    "labels-in-another-order": (
        "penguins",
        "7",
        PENGUINS_MODEL.read_bytes,
        _spec_with_labels_swapped,
        422,
        "spec-mismatch",
        ["order"],
    ),
    "spec-not-yaml": (
        "penguins",
        "7",
        PENGUINS_MODEL.read_bytes,
        lambda: b"\x00\x01 not a spec",
        422,
        "invalid-spec",
        [],
    ),
    "spec-invalid": (
        "penguins",
        "7",
        PENGUINS_MODEL.read_bytes,
        lambda: b"name: penguins\nfeatures: []\n",
        422,
        "invalid-spec",
        ["feature"],
    ),
    "name-with-space": ("a%20b", "1", PENGUINS_MODEL.read_bytes, PENGUINS_SPEC.read_bytes, None, None, []),
    "name-with-dots": ("..%2Fx", "1", PENGUINS_MODEL.read_bytes, PENGUINS_SPEC.read_bytes, None, None, []),
    "name-dot-dot": ("%2E%2E", "1", PENGUINS_MODEL.read_bytes, PENGUINS_SPEC.read_bytes, None, None, []),
    "name-starting-with-dash": ("-x", "1", PENGUINS_MODEL.read_bytes, PENGUINS_SPEC.read_bytes, None, None, []),
    "version-zero": ("penguins", "0", PENGUINS_MODEL.read_bytes, PENGUINS_SPEC.read_bytes, None, None, []),
    "version-not-a-number": ("penguins", "v3", PENGUINS_MODEL.read_bytes, PENGUINS_SPEC.read_bytes, None, None, []),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_registration_changes_nothing(server: ServerProcess, client: httpx.Client, case: str) -> None:
    name, version, model, spec, status, code, words = REFUSALS[case]
    before_dirs = version_dirs(server.repository)
    before_listing = _listing(client)

    response = _register(client, name, version, model(), spec())

    assert 400 <= response.status_code < 500, response.text
    body = assert_problem(response, status or response.status_code)
    if code is not None:
        assert body["code"] == code, body
    assert "\n" not in body["detail"].strip(), "one clear line"
    for word in words:
        assert word in body["detail"], body["detail"]
    assert version_dirs(server.repository) == before_dirs
    assert _listing(client) == before_listing


BROKEN_YAML = b"name: penguins\nfeatures:\n  - name: x\n   type: [number\n"


def test_yaml_syntax_error_is_one_line(server: ServerProcess, client: httpx.Client) -> None:
    """PyYAML's parse errors span lines ('in "<byte string>", line 3, column 3'); the
    problem detail must still be one line."""
    response = _register(client, "penguins", "7", PENGUINS_MODEL.read_bytes(), BROKEN_YAML)
    body = assert_problem(response, 422)
    assert "\n" not in body["detail"].strip(), body["detail"]


def test_a_refused_version_can_then_be_registered(server: ServerProcess, client: httpx.Client) -> None:
    refused = _register(client, "penguins", "8", PENGUINS_MODEL.read_bytes(), _spec_with_labels_swapped())
    assert_problem(refused, 422)
    accepted = _register(client, "penguins", "8", PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes())
    assert accepted.status_code == 201, accepted.text
    assert predict(client, "penguins", [penguin()], version="8").json()["model_version"] == "8"


def test_registration_needs_both_parts(server: ServerProcess, client: httpx.Client) -> None:
    before = version_dirs(server.repository)
    response = client.put(
        "/v1/models/penguins/versions/9",
        files={"model": ("model.onnx", PENGUINS_MODEL.read_bytes(), "application/octet-stream")},
        headers=admin(),
    )
    body = assert_problem(response, 400)
    assert "spec" in body["detail"]
    assert version_dirs(server.repository) == before


def test_a_new_model_name_is_served_at_once(client: httpx.Client) -> None:
    response = _register(client, "diabetes-canary", "3", DIABETES_MODEL.read_bytes(), DIABETES_SPEC.read_bytes())
    assert response.status_code == 201, response.text
    row = {
        "age": 0.01,
        "sex": 0.05,
        "bmi": 0.06,
        "bp": 0.02,
        "s1": -0.04,
        "s2": -0.03,
        "s3": -0.04,
        "s4": -0.002,
        "s5": 0.02,
        "s6": -0.02,
    }
    answer = predict(client, "diabetes-canary", [row])
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "3"
    assert "diabetes-canary" in {m["name"] for m in _listing(client)["models"]}
