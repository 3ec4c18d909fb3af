"""Two replicas on one repository, as ``deploy/kubernetes/fleet.yaml`` runs them.

Two ``driftgate serve`` processes share one repository folder (the ReadWriteMany volume).
A registration over HTTP reaches one of them, as a Service would route it; that process
writes the version folder, and the other one's watcher serves it within its interval.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.conftest import StartServer
from tests.integration.support import (
    ADMIN_TOKEN,
    PENGUINS_MODEL,
    PENGUINS_SPEC,
    admin,
    bundle,
    copy_models,
    penguin,
    predict,
)

WATCH_INTERVAL = 0.5


@pytest.mark.slow
def test_a_registration_through_one_replica_is_served_by_both(start_server: StartServer, tmp_path: Path) -> None:
    shared = copy_models(tmp_path / "shared-volume")
    env = {"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN, "DRIFTGATE_WATCH_INTERVAL": str(WATCH_INTERVAL)}
    first, second = (start_server(repository=shared, env=env) for _ in range(2))
    with first.client() as one, second.client() as two:
        for client in (one, two):
            assert predict(client, "penguins", [penguin()]).json()["model_version"] == "1"
        files = bundle(PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes())
        registered = one.put("/v1/models/penguins/versions/2", files=files, headers=admin())
        assert registered.status_code == 201, registered.text
        assert predict(one, "penguins", [penguin()]).json()["model_version"] == "2", "served at once where it landed"
        started = time.monotonic()
        deadline = started + WATCH_INTERVAL * 10  # the interval plus loading and warming the model
        while (version := predict(two, "penguins", [penguin()]).json()["model_version"]) != "2":
            assert time.monotonic() < deadline, f"the other replica still serves version {version}"
            time.sleep(0.05)
        took = time.monotonic() - started
        pinned = two.post("/v1/models/penguins/versions/2:predict", json={"instances": [penguin()]})
        assert pinned.status_code == 200, pinned.text
    assert took < WATCH_INTERVAL * 10
    assert sorted(p.name for p in (shared / "penguins").iterdir() if p.is_dir()) == ["1", "2"]
