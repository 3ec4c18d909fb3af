"""End to end with a real Prometheus server and the shipped rules.

Two driftgate replicas serve the penguins model; Prometheus (the Debian package, started
here on loopback) scrapes both every second and evaluates ``deploy/prometheus/rules.yml``
every second, with the alerts' ``for:`` durations cut to zero so the test takes seconds,
not minutes (the expressions are the shipped ones, untouched).

- In-distribution traffic fires no drift alert.
- Shifting one feature inside its valid domain fires ``DriftgateFeatureDrift`` for that
  feature only.
- The fleet-wide recording rule, computed by Prometheus from what the replicas export by
  default (their own PSI and window rows; no raw bin counts), agrees with driftgate's own
  PSI gauge within 0.02.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.spec import load_spec
from tests.helpers.metrics import scrape, series
from tests.helpers.ports import free_port
from tests.integration.support import PENGUINS_SPEC, REPO_ROOT
from tests.system import require_binary

RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"
SHIFTED = "flipper_length_mm"
WINDOW_ROWS = 1000


def _penguin_rows(n: int, seed: int) -> list[dict[str, Any]]:
    import palmerpenguins

    frame = palmerpenguins.load_penguins().drop(columns="species")
    records = json.loads(frame.to_json(orient="records"))  # NaN -> null, as a JSON client sends
    rng = np.random.default_rng(seed)
    return [records[i] for i in rng.integers(0, len(records), n).tolist()]


def _shift(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Move SHIFTED into the top 15% of its valid domain: still valid, but unlike training."""
    feature = next(f for f in load_spec(PENGUINS_SPEC).features if f.name == SHIFTED)
    lo, hi = float(feature.min), float(feature.max)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    values = rng.uniform(hi - 0.15 * (hi - lo), hi, len(rows))
    return [dict(row, **{SHIFTED: round(float(v), 1)}) for row, v in zip(rows, values, strict=True)]


def _own_psi(url: str) -> float | None:
    """driftgate's own PSI gauge for the shifted feature, scraped from one replica."""
    with httpx.Client(base_url=url) as client:
        found = series(scrape(client), "driftgate_feature_drift", model="penguins", feature=SHIFTED)
    return next(iter(found.values()), None)


def _send(url: str, rows: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(0, len(rows), 50):
            r = client.post("/v1/models/penguins:predict", json={"instances": rows[i : i + 50]})
            assert r.status_code == 200, r.text


class Prometheus:
    """A Prometheus server on loopback scraping the given targets."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = RULES.read_text()
        rules = re.sub(r"for: \d+[smh]", "for: 0s", rules)
        rules = re.sub(r"interval: \d+s", "interval: 1s", rules)
        (workdir / "rules.yml").write_text(rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yml")],
            "scrape_configs": [{"job_name": "driftgate", "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.workdir = workdir
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("Prometheus did not start:\n" + (self.workdir / "prometheus.log").read_text()[-3000:])

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        assert r.status_code == 200, r.text
        result: list[dict[str, Any]] = r.json()["data"]["result"]
        return result

    def firing(self, alertname: str) -> list[dict[str, str]]:
        r = httpx.get(f"{self.url}/api/v1/alerts", timeout=5)
        return [a["labels"] for a in r.json()["data"]["alerts"] if a["labels"]["alertname"] == alertname and a["state"] == "firing"]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        return predicate()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture
def fleet(start_server: Any, tmp_path: Path) -> Any:
    require_binary("prometheus", "prometheus")
    env = {"DRIFTGATE_DRIFT_WINDOW_ROWS": str(WINDOW_ROWS)}
    replicas = [start_server(env=env), start_server(env=env)]
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    prometheus = Prometheus(workdir, [r.url.removeprefix("http://") for r in replicas])
    yield replicas, prometheus
    prometheus.stop()


@pytest.mark.slow
def test_drift_alert_fires_for_the_shifted_feature_only(fleet: Any) -> None:
    replicas, prometheus = fleet
    features = [f.name for f in load_spec(PENGUINS_SPEC).features]

    # 1. In-distribution traffic: the fleet drift is computed, and stays below the alert line.
    calm = _penguin_rows(600, seed=1)
    for replica in replicas:
        _send(replica.url, calm)
    def fleet_features() -> set[str]:
        return {s["metric"]["feature"] for s in prometheus.query('driftgate:feature_drift:fleet{model="penguins"}')}

    computed = prometheus.wait_for(lambda: set(features) <= fleet_features() and fleet_features())
    assert set(features) <= computed, computed
    assert prometheus.query("driftgate_drift_bin_count") == []  # the default export: no raw bins
    time.sleep(3)  # several evaluation rounds on the calm window
    assert prometheus.firing("DriftgateFeatureDrift") == []
    calm_psi = {s["metric"]["feature"]: float(s["value"][1]) for s in prometheus.query('driftgate:feature_drift:fleet{model="penguins"}')}
    assert all(calm_psi[f] < 0.1 for f in features), calm_psi

    # 2. One feature shifted inside its domain, enough rows to fill each replica's window.
    shifted = _shift(_penguin_rows(WINDOW_ROWS, seed=2), seed=3)
    for replica in replicas:
        _send(replica.url, shifted)
    firing = prometheus.wait_for(lambda: prometheus.firing("DriftgateFeatureDrift"))
    assert {a["feature"] for a in firing} == {SHIFTED}, firing
    assert {a["model"] for a in firing} == {"penguins"}

    # 3. The fleet-wide rule agrees with driftgate's own gauge (each replica saw the same rows).
    def fleet_value() -> float | None:
        result = prometheus.query(f'driftgate:feature_drift:fleet{{model="penguins",feature="{SHIFTED}"}}')
        return float(result[0]["value"][1]) if result else None

    def settled() -> bool:  # Prometheus has scraped the replicas' final windows
        value = fleet_value()
        own = _own_psi(replicas[0].url)
        return value is not None and own is not None and abs(value - own) < 0.02

    prometheus.wait_for(settled, timeout=15)
    fleet_psi = fleet_value()
    assert fleet_psi is not None and fleet_psi > 0.25
    for replica in replicas:
        own = _own_psi(replica.url)
        assert own is not None and math.isfinite(own)
        assert abs(fleet_psi - own) < 0.02, (fleet_psi, own)
