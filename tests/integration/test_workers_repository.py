"""``driftgate serve --workers 2``: the repository extension's ``unload`` and ``load`` act on
every worker, not only on the one the call reached.

Each probe is one fresh connection (so the kernel may hand it to either worker) that first
learns which worker it reached (a diabetes prediction's id prefix names the worker's slot),
then asks that worker everything about penguins: V1 predict (default and pinned), V2 infer
(default and pinned), V2 model readiness, and the repository index; a last diabetes
prediction proves the connection stayed with that worker.

- after an unload returns, the worker that took it answers 404 at once, and every probe begun
  ``FOLLOW_LIMIT`` after it answers 404 everywhere (the other worker follows within
  ``POLL_INTERVAL``, 0.25 s; the limit leaves room for a loaded machine); both workers are
  seen doing so, and their indexes agree;
- after a load returns, every worker serves penguins again (the other one after reloading
  it from the repository);
- a worker killed with SIGKILL after an unload is replaced by one that never serves the
  unloaded model; a load then brings it back on both.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.unloads import POLL_INTERVAL
from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import (
    ADMIN_TOKEN,
    DIABETES_ROW,
    PENGUINS_MODEL,
    PENGUINS_SPEC,
    admin,
    bundle,
    penguin,
    v2_body,
    wait_serving,
    worker_pids,
)

FOLLOW_LIMIT = POLL_INTERVAL + 2.75
"""Seconds after an unload returned from which every probe must answer 404 everywhere."""
CONVERGE_SECONDS = 30.0
"""How long the probes may take to reach both workers (and, after a load, for the other
worker to load the model again)."""

PENGUIN_ASKS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "v1 predict": ("POST", "/v1/models/penguins:predict", {"instances": [penguin()]}),
    "v1 predict pinned": ("POST", "/v1/models/penguins/versions/1:predict", {"instances": [penguin()]}),
    "v2 infer": ("POST", "/v2/models/penguins/infer", v2_body(penguin())),
    "v2 infer pinned": ("POST", "/v2/models/penguins/versions/1/infer", v2_body(penguin())),
    "v2 ready": ("GET", "/v2/models/penguins/ready", None),
}


@dataclass(frozen=True)
class Probe:
    worker: str
    """The id prefix of the worker that answered (its slot: a replacement keeps it)."""
    began: float
    statuses: dict[str, int]
    index: list[dict[str, str]]
    """The penguins entries of that worker's repository index."""

    def all(self, status: int) -> bool:
        return set(self.statuses.values()) == {status}


def _worker_of(client: httpx.Client) -> str:
    answer = client.post("/v1/models/diabetes:predict", json={"instances": [DIABETES_ROW]})
    assert answer.status_code == 200, answer.text[:300]
    return str(answer.json()["predictions"][0]["id"].split("-")[0])


def probe(url: str) -> Probe:
    """Everything one worker answers about penguins, on one fresh connection."""
    began = time.monotonic()
    with httpx.Client(base_url=url, timeout=20, limits=httpx.Limits(max_connections=1)) as client:
        worker = _worker_of(client)
        statuses = {
            ask: client.request(m, path, json=body).status_code for ask, (m, path, body) in PENGUIN_ASKS.items()
        }
        index = client.post("/v2/repository/index", headers=admin())
        assert index.status_code == 200, index.text[:300]
        assert _worker_of(client) == worker, "the probe's requests reached two workers"
    return Probe(worker, began, statuses, [e for e in index.json() if e["name"] == "penguins"])


def probe_until_both(url: str, status: int, workers: int = 2) -> list[Probe]:
    """Probe (8 fresh connections at a time) until every worker has been seen answering
    ``status`` to every penguins request, then one more round; returns every probe."""
    deadline = time.monotonic() + CONVERGE_SECONDS
    probes: list[Probe] = []
    with ThreadPoolExecutor(8) as pool:
        while True:
            probes += pool.map(lambda _: probe(url), range(8))
            done = {p.worker for p in probes if p.all(status)}
            if len(done) == workers:
                return probes + list(pool.map(lambda _: probe(url), range(8)))
            last = [(p.worker, p.statuses) for p in probes[-8:]]
            assert time.monotonic() < deadline, f"not every worker answers {status}: {last}"


def unload(client: httpx.Client) -> float:
    """Unload penguins through ``client``'s connection; the time the answer arrived."""
    answer = client.post("/v2/repository/models/penguins/unload", headers=admin())
    assert answer.status_code == 200 and answer.json() == {"name": "penguins", "versions": ["1"]}, answer.text
    return time.monotonic()


def assert_unloaded_everywhere(url: str, since: float) -> list[Probe]:
    probes = probe_until_both(url, 404)
    late = [p for p in probes if p.began >= since + FOLLOW_LIMIT and not p.all(404)]
    assert not late, f"served {FOLLOW_LIMIT} s after the unload: {late}"
    for p in (p for p in probes if p.all(404)):
        assert p.index == [{"name": "penguins", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}], p
    return probes


def load_everywhere(proc: ServerProcess) -> None:
    """Load penguins through one connection; then every worker serves it, indexes agree."""
    with proc.client(headers={"connection": "close"}) as client:
        answer = client.post("/v2/repository/models/penguins/load", headers=admin())
    assert answer.status_code == 200 and answer.json() == {"name": "penguins", "versions": ["1"]}, answer.text
    probes = probe_until_both(proc.url, 200)
    for p in probes[-8:]:  # once both have been seen serving, nothing answers otherwise
        assert p.all(200), p
        assert p.index == [{"name": "penguins", "version": "1", "state": "READY"}], p


@pytest.fixture
def fleet(start_server: StartServer) -> ServerProcess:
    proc = start_server(args=["--workers", "2"], env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    wait_serving(proc, 2)
    return proc


@pytest.mark.slow
def test_unload_and_load_reach_every_worker(fleet: ServerProcess) -> None:
    before = probe_until_both(fleet.url, 200)
    assert len({p.worker for p in before}) == 2
    with fleet.client() as client:  # one kept-alive connection: the worker that takes the call
        since = unload(client)
        assert client.post("/v1/models/penguins:predict", json={"instances": [penguin()]}).status_code == 404
        assert client.get("/v2/models/penguins/ready").status_code == 404
        assert client.get("/v2/health/ready").status_code == 200, "diabetes is still served"
    probes = assert_unloaded_everywhere(fleet.url, since)
    assert all(p.index == probes[-1].index for p in probes[-8:])
    assert "penguins unloaded by another worker" in fleet.stderr
    load_everywhere(fleet)
    assert "penguins loaded by another worker: loading it here" in fleet.stderr
    # unloaded at one worker and loaded at (perhaps) the other: the later call wins everywhere
    with fleet.client(headers={"connection": "close"}) as client:
        since = unload(client)
    assert_unloaded_everywhere(fleet.url, since)
    load_everywhere(fleet)
    assert fleet.stop().exit_code == 0


@pytest.mark.slow
def test_a_worker_replaced_after_an_unload_does_not_serve_the_model(fleet: ServerProcess) -> None:
    with fleet.client(headers={"connection": "close"}) as client:
        since = unload(client)
    assert_unloaded_everywhere(fleet.url, since)
    pids = worker_pids(fleet)
    assert len(pids) == 2, pids
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    wait_serving(fleet, 3)
    replaced = worker_pids(fleet)
    assert len(replaced) == 2 and victim not in replaced, (pids, replaced)
    assert "unloaded across the workers, not loaded here: penguins" in fleet.stderr
    # the replacement took connections only once loaded: not one probe may see penguins served
    probes = probe_until_both(fleet.url, 404)
    assert all(p.all(404) for p in probes), [p for p in probes if not p.all(404)]
    load_everywhere(fleet)
    assert fleet.stop().exit_code == 0


def test_registering_a_version_of_an_unloaded_model_serves_it_on_every_worker(fleet: ServerProcess) -> None:
    """A registration is a request to serve: a new version of an unloaded model brings the
    model back on every worker (the new version and the old), as a ``load`` would."""
    with fleet.client(headers={"connection": "close"}) as client:
        since = unload(client)
    assert_unloaded_everywhere(fleet.url, since)
    with fleet.client(headers={"connection": "close"}) as client:
        registered = client.put(
            "/v1/models/penguins/versions/2",
            files=bundle(PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes()),
            headers=admin(),
        )
    assert registered.status_code == 201, registered.text
    probes = probe_until_both(fleet.url, 200)
    for p in probes[-8:]:
        assert p.all(200), p
        assert [e["version"] for e in p.index if e["state"] == "READY"] == ["1", "2"], p
    assert fleet.stop().exit_code == 0
