"""Error answers of the real server: the right status, always problem+json, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import assert_problem, penguin

PREDICT = "/v1/models/penguins:predict"
JSON = {"content-type": "application/json"}
MAX_ROWS = 10
MAX_BYTES = 4096


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server with small limits, set through the contract's environment variables."""
    from tests.integration.support import copy_models

    work = tmp_path_factory.mktemp("limited")
    proc = ServerProcess(
        work / "run",
        copy_models(work / "models"),
        env={"DRIFTGATE_MAX_BATCH_ROWS": str(MAX_ROWS), "DRIFTGATE_MAX_BODY_BYTES": str(MAX_BYTES)},
    ).start()
    with proc.client() as c:
        yield c
    proc.stop()


def _instances(n: int) -> bytes:
    return json.dumps({"instances": [penguin()] * n}).encode()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/models/no-such-model:predict", _instances(1), 404),
        ("POST", "/v1/models/penguins/versions/99:predict", _instances(1), 404),
        ("POST", "/v1/models/penguins/versions/latest:predict", _instances(1), 404),
        ("GET", "/v1/models/no-such-model", b"", 404),
        ("POST", PREDICT, b'{"instances": [', 400),  # truncated JSON
        ("POST", PREDICT, b"instances=1", 400),  # not JSON at all
        ("POST", PREDICT, b'{"instances": [{"year": NaN}]}', 400),  # NaN is not JSON
        ("POST", PREDICT, b"", 400),
        ("POST", PREDICT, b"[]", 400),  # wrong top-level shape
        ("POST", PREDICT, b'{"rows": []}', 400),
        ("POST", PREDICT, b'{"instances": {"island": "Biscoe"}}', 400),
        ("POST", PREDICT, b'{"instances": [["Biscoe", 45.2]]}', 400),
        ("POST", PREDICT, b'{"instances": [1, 2]}', 400),
        ("POST", PREDICT, b'{"instances": []}', 400),
        ("DELETE", PREDICT, b"", 405),
        ("PUT", "/v2/health/ready", b"", 405),
        ("POST", "/metrics", b"", 405),
    ],
)
def test_error_status_is_problem_json(client: httpx.Client, method: str, path: str, body: bytes, status: int) -> None:
    response = client.request(method, path, content=body, headers=JSON)
    assert_problem(response, status)


def test_get_on_predict_url_is_a_client_error(client: httpx.Client) -> None:
    response = client.get(PREDICT)
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)


def test_rows_up_to_the_limit_are_served(limited: httpx.Client) -> None:
    rows = [penguin(bill_length_mm=40.0 + i) for i in range(MAX_ROWS)]
    content = json.dumps({"instances": rows}).encode()
    assert len(content) < MAX_BYTES
    response = limited.post(PREDICT, content=content, headers=JSON)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == MAX_ROWS


def test_too_many_rows_is_413(limited: httpx.Client) -> None:
    content = _instances(MAX_ROWS + 1)
    assert len(content) < MAX_BYTES, "the rows limit, not the bytes limit, must be what refuses this"
    body = assert_problem(limited.post(PREDICT, content=content, headers=JSON), 413)
    assert str(MAX_ROWS) in body["detail"]


def test_body_over_the_byte_limit_is_413(limited: httpx.Client) -> None:
    content = json.dumps({"instances": [penguin(island="x" * MAX_BYTES)]}).encode()
    assert_problem(limited.post(PREDICT, content=content, headers=JSON), 413)


def test_chunked_body_over_the_byte_limit_is_413(limited: httpx.Client) -> None:
    """No Content-Length to trust: the limit must hold while the body streams in."""
    content = json.dumps({"instances": [penguin(island="x" * MAX_BYTES)]}).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(content), 512):
            yield content[i : i + 512]

    assert_problem(limited.post(PREDICT, content=chunks(), headers=JSON), 413)


def test_limited_server_still_serves_after_refusals(limited: httpx.Client) -> None:
    limited.post(PREDICT, content=_instances(MAX_ROWS + 1), headers=JSON)
    response = limited.post(PREDICT, content=_instances(1), headers=JSON)
    assert response.status_code == 200, response.text


def test_start_server_with_limit_flag(start_server: StartServer) -> None:
    """The ``--max-batch-rows`` flag is the env variable's twin."""
    proc = start_server(args=["--max-batch-rows", "2"])
    with proc.client() as c:
        assert c.post(PREDICT, content=_instances(2), headers=JSON).status_code == 200
        assert_problem(c.post(PREDICT, content=_instances(3), headers=JSON), 413)


@pytest.mark.parametrize("depth", [1_000, 250_000])
@pytest.mark.parametrize(
    ("path", "template", "says"),
    [
        ("/v1/models/penguins:predict", '{"instances":[{"island":%s}]}', "too deeply"),
        ("/v2/models/penguins/infer", '{"inputs":[{"name":"island","shape":[1],"datatype":"BYTES","data":%s}]}', "too deeply"),
        # a typed field refuses the first array before any nesting is followed
        ("/v1/models/penguins/feedback", '{"feedback":[{"id":"x","label":%s}]}', "label"),
    ],
    ids=["v1", "v2", "feedback"],
)
def test_deep_nesting_is_a_fast_400_and_the_server_stays_live(server: ServerProcess, path: str, template: str, says: str, depth: int) -> None:
    body = template % ("[" * depth + "]" * depth)
    with server.client() as client:
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert_problem(response, 400)
        assert says in response.json()["detail"]
        assert client.get("/v2/health/live").status_code == 200
