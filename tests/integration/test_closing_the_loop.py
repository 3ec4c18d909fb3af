"""Build, monitor, adapt, repeat: the loop of issue #17 told end to end against a real server,
on palmerpenguins' data (a package, no download).

v1 (the bundled penguins model) serves with a prediction log. Production-like traffic comes
first; then a caliper on Dream island is recalibrated, and every bill length from Dream
arrives 7 mm shorter, so v1 takes Dream's Chinstraps for Adelies. Half the rows get their
true species back as feedback. ``export --labelled --since`` gives exactly the labelled rows
of the drifted period; a model retrained on them is ``evaluate``d ``--against`` the served
one on the drifted rows that got no feedback, gates on ``--require-better accuracy``, and is
registered with those rows as ``--data``: the monitor page shows its offline figures.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gateway import FeatureSpec
from gateway.export import export_model
from gateway.spec import encode_spec
from tests.integration.conftest import StartServer
from tests.integration.retrained import penguins_frame
from tests.integration.support import ADMIN_TOKEN, cli, predict

SHORTER_MM = 7.0


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as a client sends them: features only, missing values as null."""
    features = [c for c in frame.columns if c != "species"]
    rows = frame[features].to_dict(orient="records")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]


def _send(client: Any, frame: pd.DataFrame) -> list[str]:
    ids: list[str] = []
    rows = _records(frame)
    for start in range(0, len(rows), 25):
        answer = predict(client, "penguins", rows[start : start + 25])
        assert answer.status_code == 200, answer.text
        ids += [p["id"] for p in answer.json()["predictions"]]
    return ids


@pytest.mark.slow
def test_log_export_retrain_evaluate_register(start_server: StartServer, tmp_path: Path) -> None:
    frame = penguins_frame().sample(frac=1.0, random_state=7).reset_index(drop=True)
    production, drifted = frame.iloc[: len(frame) // 2].copy(), frame.iloc[len(frame) // 2 :].copy()
    dream = drifted["island"] == "Dream"
    drifted.loc[dream, "bill_length_mm"] = (drifted.loc[dream, "bill_length_mm"] - SHORTER_MM).clip(lower=30.5)

    log_dir = tmp_path / "log"
    server = start_server(args=["--log-dir", str(log_dir)], env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    with server.client() as client:
        production_ids = _send(client, production)
        time.sleep(1.2)  # records carry their second: the drifted period starts at `since`
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        drifted_ids = _send(client, drifted)
        # ground truth comes back for every other row of both periods
        truth = {i: s for i, s in zip(production_ids + drifted_ids, list(production["species"]) + list(drifted["species"]), strict=True)}
        labelled = dict(list(truth.items())[::2])
        answer = client.post("/v1/models/penguins/feedback", json={"feedback": [{"id": k, "label": v} for k, v in labelled.items()]})
        assert answer.json()["matched"] == len(labelled)
    assert server.stop().exit_code == 0  # the log's files are finished on the way out

    # export: exactly the labelled rows of the drifted period, with their targets
    out = tmp_path / "drifted-labelled.csv"
    done = cli("export", "penguins", "--log-dir", log_dir, "--labelled", "--since", since, "-o", out)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out)
    expected = {k: v for k, v in labelled.items() if k in set(drifted_ids)}
    assert dict(zip(table["id"], table["species"], strict=True)) == expected
    assert set(table["version"]) == {1}

    # retrain on them, and keep the drifted rows without feedback as held-out data
    train = table.drop(columns=["id", "version", "prediction"])
    spec = FeatureSpec.fit(train, name="penguins", target="species")
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000).fit(spec.transform(train), train["species"].to_numpy())
    (tmp_path / "v2.onnx").write_bytes(export_model(model, spec))
    (tmp_path / "v2.yaml").write_bytes(encode_spec(spec))
    unlabelled = drifted.assign(id=drifted_ids)
    holdout = tmp_path / "holdout.csv"
    unlabelled[~unlabelled["id"].isin(labelled)].drop(columns=["id"]).to_csv(holdout, index=False)

    server = start_server(repository=server.repository, args=["--log-dir", str(log_dir)], env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    new = ["--model", tmp_path / "v2.onnx", "--spec", tmp_path / "v2.yaml"]
    evaluated = cli("evaluate", *new, holdout, "--against", "penguins", "--url", server.url, "--token", ADMIN_TOKEN, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    accuracy = json.loads(evaluated.stdout)["comparison"]["accuracy"]
    assert accuracy["candidate"] > accuracy["against"] + 0.05, accuracy  # v1 takes Dream's Chinstraps for Adelies
    gate = cli("evaluate", *new, holdout, "--against", "penguins", "--url", server.url, "--token", ADMIN_TOKEN, "--require-better", "accuracy")
    assert gate.returncode == 0, gate.stdout + gate.stderr

    registered = cli("register", "penguins", *new, "--url", server.url, "--token", ADMIN_TOKEN, "--data", holdout)
    assert registered.returncode == 0, registered.stderr
    assert "registered penguins version 2" in registered.stdout
    with server.client() as client:
        snap = client.get("/v1/models/penguins/monitor").json()
        assert snap["version"] == "2" and snap["offline"]["data"] == "holdout.csv"
        assert snap["offline"]["metrics"]["accuracy"] == pytest.approx(accuracy["candidate"], abs=0.05)
        page = client.get("/v1/models/penguins/monitor", headers={"Accept": "text/html"}).text
        assert "Offline evaluation" in page and "holdout.csv" in page
