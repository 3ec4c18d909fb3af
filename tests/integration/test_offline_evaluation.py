"""Held-out figures over HTTP, against a real server: ``register --url --data`` (the PUT's
``data`` part) stores them with the version; ``/monitor`` (JSON and page) and ``/metrics``
show them; ``evaluate --against NAME --url`` reads the served version through the admin
download endpoint, which needs the token."""

from __future__ import annotations

import json
from pathlib import Path

import palmerpenguins
import pandas as pd
import pytest

from tests.integration.conftest import StartServer
from tests.integration.support import ADMIN_TOKEN, PENGUINS_MODEL, PENGUINS_SPEC, admin, assert_problem, bundle, cli

PENGUINS_CSV = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"


@pytest.mark.slow
def test_registered_held_out_figures_are_served_and_the_served_version_can_be_evaluated(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    holdout = tmp_path / "holdout.jsonl"  # a JSON Lines part: read by its file name, as the command line reads it
    pd.read_csv(PENGUINS_CSV).sample(200, random_state=3).to_json(holdout, orient="records", lines=True)
    done = cli("register", "penguins", "--model", PENGUINS_MODEL, "--spec", PENGUINS_SPEC, "--url", server.url, "--token", ADMIN_TOKEN, "--data", holdout)
    assert done.returncode == 0, done.stderr
    assert "registered penguins version 2" in done.stdout and "offline on" in done.stdout
    stored = json.loads((server.repository / "penguins" / "2" / "baseline.json").read_bytes())
    assert stored["data"] == "holdout.jsonl" and stored["rows"] == 200

    with server.client() as client:
        snap = client.get("/v1/models/penguins/monitor").json()
        assert snap["version"] == "2" and snap["offline"]["metrics"] == stored["metrics"]
        page = client.get("/v1/models/penguins/monitor", headers={"Accept": "text/html"}).text
        assert "Offline evaluation" in page and f"{stored['metrics']['accuracy']:.4f}" in page and "holdout.jsonl" in page
        metrics = client.get("/metrics").text
        assert f'driftgate_offline_metric{{model="penguins",version="2",metric="accuracy"}} {stored["metrics"]["accuracy"]!r}' in metrics
        assert 'driftgate_offline_metric{model="penguins",version="1"' not in metrics  # version 1 has no held-out record
        assert_problem(client.get("/v1/models/penguins/versions/2"), 401)  # the model file is the owner's
        download = client.get("/v1/models/penguins/versions/2", headers=admin()).json()
        assert download["baseline"]["metrics"] == stored["metrics"] and download["model"]
        assert_problem(client.get("/v1/models/penguins/versions/9", headers=admin()), 404)
        # held-out rows without the target: refused in words about the client's file, nothing written
        unlabelled = pd.read_csv(PENGUINS_CSV).drop(columns=["species"]).to_csv(index=False).encode()
        parts = {**bundle(PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes()), "data": ("rows.csv", unlabelled, "text/csv")}
        problem = assert_problem(client.put("/v1/models/penguins/versions/3", files=parts, headers=admin()), 400)
        assert problem["detail"].startswith("rows.csv: no column 'species'"), problem
        assert not (server.repository / "penguins" / "3").exists()

    evaluated = cli(
        "evaluate", "--model", PENGUINS_MODEL, "--spec", PENGUINS_SPEC, PENGUINS_CSV,
        "--against", "penguins", "--url", server.url, "--token", ADMIN_TOKEN, "--json",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["against"]["version"] == "penguins v2"
    assert report["comparison"]["accuracy"]["candidate"] == report["comparison"]["accuracy"]["against"]  # the same model
    refused = cli("evaluate", "--model", PENGUINS_MODEL, "--spec", PENGUINS_SPEC, PENGUINS_CSV, "--against", "penguins", "--url", server.url)
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1 and "admin token" in refused.stderr
