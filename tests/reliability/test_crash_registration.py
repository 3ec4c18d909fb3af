"""B2: the server killed (SIGKILL) at a random point of a registration by PUT.

After each kill a new server starts on the same repository: the version is there complete
(the very bytes sent, and served) or not at all, never in part; the old version serves
throughout; the staging folders the killed writers left are removed by the new server
(logged); a later registration of the same version succeeds.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from gateway.repository import STAGING, STAGING_GRACE_SECONDS
from tests.integration.conftest import StartServer
from tests.integration.support import ADMIN_TOKEN, admin, bundle
from tests.reliability.fixture_models import knob_predict, knob_repository, knob_spec_bytes, padded_model

KILLS = 8
ENV = {"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN, "DRIFTGATE_WATCH_INTERVAL": "0.2"}


def _put(url: str, version: str, model: bytes, spec: bytes) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.put(f"/v1/models/knob/versions/{version}", files=bundle(model, spec), headers=admin())


@pytest.mark.slow
def test_b2_sigkill_during_registration_leaves_the_version_whole_or_absent(start_server: StartServer, tmp_path: Path) -> None:
    repository = knob_repository(tmp_path / "repo")
    model, spec = padded_model(5.0, 48), knob_spec_bytes("knob")  # 48 MiB: a write worth killing
    target = repository / "knob" / "2"

    # how long a registration takes here, on a server of its own (a copy of the repository)
    timing = start_server(repository=knob_repository(tmp_path / "timing"), env=ENV)
    t0 = time.monotonic()
    assert _put(timing.url, "2", model, spec).status_code == 201
    duration = time.monotonic() - t0
    timing.stop()

    rng = random.Random(20261206)
    outcomes: list[str] = []
    for _ in range(KILLS):
        proc = start_server(repository=repository, env=ENV)
        with proc.client() as client:
            assert knob_predict(client, 0.5).status_code == 200
        delay = rng.uniform(0, duration * 1.2)
        killer = threading.Timer(delay, proc.send, args=(signal.SIGKILL,))
        killer.start()
        try:
            _put(proc.url, "2", model, spec)
        except httpx.TransportError:
            pass  # killed before it answered
        killer.join()
        proc.wait(10)
        if target.exists():
            # whole, or not there at all: a version folder appears only by an atomic rename
            assert (target / "model.onnx").read_bytes() == model
            assert (target / "spec.yaml").read_bytes() == spec
            outcomes.append("registered")
            break  # versions are immutable: later kills would only meet a 409
        outcomes.append("absent")

    # a new server: serves v1 (and v2 if it was written), removes what the killed writers left
    staging = repository / STAGING
    left = sorted(p.name for p in staging.iterdir()) if staging.exists() else []
    proc = start_server(repository=repository, env=ENV)
    with proc.client() as client:
        answer = knob_predict(client, 0.5)
        assert answer.status_code == 200
        if outcomes[-1] == "absent":
            assert _put(proc.url, "2", model, spec).status_code == 201
        served = client.post("/v1/models/knob/versions/2:predict", json={"instances": [{"x": 0.5}]})
        assert served.status_code == 200 and served.json()["predictions"][0]["value"] == 2.5, served.text
    deadline = time.monotonic() + STAGING_GRACE_SECONDS + 10
    leftovers = list(staging.iterdir()) if staging.exists() else []
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.2)
        leftovers = list(staging.iterdir())
    assert leftovers == [], f"abandoned staging folders not removed: {[p.name for p in leftovers]}"
    stopped = proc.stop()
    assert stopped.exit_code == 0
    for name in left:  # each removal is logged, by name
        assert name in stopped.stderr and "abandoned" in stopped.stderr, stopped.stderr[-2000:]
