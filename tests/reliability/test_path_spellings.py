"""A12-P: every spelling of a hot or admin path takes the one way in.

Litestar folds a doubled, leading or trailing slash (and uvicorn decodes ``%2F`` and
``%3A``) before it routes; a front that matched the raw path served such spellings
through Litestar with no admission, no count and no drain, and let admin calls through the
data-plane port. Here, against a real server with ``--max-concurrency 1`` and an admin
listener: with one slow request in progress every spelling of a prediction is 503; once
it is done each is 200 and counted; no spelling of an admin path does anything on the data
plane, and the admin listener still answers them."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx

from gateway.listeners import ADMIN_LISTENING
from tests.helpers.metrics import sample, scrape
from tests.helpers.raw_http import raw_exchange
from tests.integration.conftest import StartServer
from tests.integration.support import ADMIN_TOKEN, admin
from tests.reliability.fixture_models import knob_repository, knob_spec_bytes, linear_model, slow_model

V1_BODY = json.dumps({"instances": [{"x": 0.5}]}).encode()
V2_BODY = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.5]}]}).encode()
V1_SPELLINGS = [
    "/v1/models/knob:predict/",
    "//v1/models/knob:predict",
    "/v1//models/knob:predict",
    "/v1/models//knob:predict",
    "/v1/models/knob:predict%2F",
    "/v1/models/knob%3Apredict",
    "/v1/models/knob/versions/1:predict/",
    "/v1/models/knob//versions/1:predict",
]
V2_SPELLINGS = [
    "/v2/models/knob/infer/",
    "//v2/models/knob/infer",
    "/v2/models/knob//infer",
    "/v2/models/knob/versions/1/infer/",
    "/v2/models/knob/versions/1//infer",
]
ADMIN_LINE = re.compile(ADMIN_LISTENING.replace("%s", r"([^:\s]+)").replace("%d", r"(\d+)"))


def _post(port: int, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    status, _, content = raw_exchange(port, head.encode() + b"Connection: close\r\n\r\n" + body)
    return status, json.loads(content)


def _spellings() -> list[tuple[str, bytes]]:
    return [(p, V1_BODY) for p in V1_SPELLINGS] + [(p, V2_BODY) for p in V2_SPELLINGS]


def test_a12p_every_spelling_of_a_prediction_is_admitted_counted_and_answered_once(
    start_server: StartServer, tmp_path: Path
) -> None:
    repository = knob_repository(tmp_path / "repo", {"knob": linear_model(), "slow": slow_model()})
    proc = start_server(
        repository=repository,
        args=["--max-concurrency", "1", "--admin-port", "0"],
        env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    port = int(proc.url.rsplit(":", 1)[1])
    held: list[httpx.Response] = []
    connected = threading.Event()

    def slow() -> None:
        with proc.client() as client:
            assert client.get("/v2/health/live").status_code == 200
            connected.set()
            held.append(client.post("/v1/models/slow:predict", json={"instances": [{"x": 1536.0}] + [{"x": 0.5}] * 1023}))

    with proc.client() as client:
        before = scrape(client)
        worker = threading.Thread(target=slow)
        worker.start()
        assert connected.wait(10)
        time.sleep(0.1)  # the slow request is read and running (0.4 s or more)
        refused = [(path, *_post(port, path, body)) for path, body in _spellings()]
        still_held = not held
        worker.join(60)
        answered = [(path, *_post(port, path, body)) for path, body in _spellings()]
        after = scrape(client)
    assert still_held, "the slow request ended before the spellings were sent: the test proved nothing"
    assert held and held[0].status_code == 200
    for path, status, body in refused:
        assert status == 503 and body["code"] == "overloaded", (path, status, body)
    for path, status, body in answered:
        assert status == 200 and body["model_name"] == "knob", (path, status, body)
        assert body["model_version"] == "1", (path, body)
    n = len(_spellings())

    def delta(reason: str) -> float:
        labels = {"model": "knob", "reason": reason}
        return sample(after, "driftgate_requests_total", **labels) - sample(before, "driftgate_requests_total", **labels)

    assert delta("overloaded") == n
    assert delta("ok") == n


def test_a12p_no_spelling_of_an_admin_path_acts_on_the_data_plane(start_server: StartServer, tmp_path: Path) -> None:
    proc = start_server(
        repository=knob_repository(tmp_path / "repo"),
        args=["--admin-port", "0"],
        env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    found = ADMIN_LINE.search(proc.stderr)
    assert found, proc.stderr[-2000:]
    admin_url = f"http://{found.group(1)}:{found.group(2)}"
    files = {"model": ("model.onnx", linear_model(3.0)), "spec": ("spec.yaml", knob_spec_bytes())}
    port = int(proc.url.rsplit(":", 1)[1])
    registrations = ["/v1//models/knob/versions/2", "//v1/models/knob/versions/2", "/v1/models/knob/versions/2/"]
    unloads = ["/v2//repository/models/knob/unload", "//v2/repository/models/knob/unload", "/v2/repository/models/knob/unload/"]
    with httpx.Client(timeout=30) as client:
        for path in registrations:
            request = client.build_request("PUT", proc.url, files=files, headers=admin())
            request.url = request.url.copy_with(raw_path=path.encode())  # exactly as spelled
            answer = client.send(request)
            assert answer.status_code == 404, (path, answer.status_code, answer.text[:300])
        for path in unloads:
            status, _, _ = raw_exchange(
                port, f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            assert status == 404, (path, status)
        assert not (proc.repository / "knob" / "2").exists()
        assert client.post(f"{proc.url}/v1/models/knob:predict", json={"instances": [{"x": 1.0}]}).status_code == 200
        # the admin listener takes the same spellings as admin calls
        request = client.build_request("PUT", admin_url, files=files, headers=admin())
        request.url = request.url.copy_with(raw_path=registrations[0].encode())
        assert client.send(request).status_code == 201
        assert client.post(admin_url + "/v2/repository/models/knob/unload/", headers=admin()).status_code == 200
