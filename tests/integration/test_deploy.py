"""``deploy/kubernetes``: the manifests parse, and agree with the contract and the image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ENV_PREFIX, Settings
from tests.integration.support import REPO_ROOT

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
CONTRACT_ENV = {
    "DRIFTGATE_REPOSITORY",
    "DRIFTGATE_HOST",
    "DRIFTGATE_PORT",
    "DRIFTGATE_ADMIN_TOKEN",
    "DRIFTGATE_MAX_BATCH_ROWS",
    "DRIFTGATE_MAX_BODY_BYTES",
}
KNOWN_ENV = {ENV_PREFIX + name.upper() for name in Settings.__struct_fields__}


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = [
        (path, doc) for path in sorted(KUBERNETES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc
    ]
    assert docs, f"no manifests in {KUBERNETES}"
    return docs


def test_every_manifest_parses_as_kubernetes_objects() -> None:
    for path, doc in _documents():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), path


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    """The sidecar variant's pod (fleet.yaml's is checked in test_manifests.py)."""
    deployments = [doc for path, doc in _documents() if doc["kind"] == "Deployment" and path.name == "sidecar.yaml"]
    assert len(deployments) == 1
    deployment = deployments[0]
    assert deployment["apiVersion"] == "apps/v1"
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


def _containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _port(container: dict[str, Any], ref: int | str) -> int:
    if isinstance(ref, int):
        return ref
    return next(int(p["containerPort"]) for p in container["ports"] if p.get("name") == ref)


def test_driftgate_runs_beside_an_app(pod: dict[str, Any]) -> None:
    containers = _containers(pod)
    sidecar = containers["driftgate"]
    apps = pod["spec"]["containers"]
    assert apps and all(c["name"] != "driftgate" for c in apps), "an application container beside the sidecar"
    if sidecar in pod["spec"].get("initContainers", []):
        assert sidecar.get("restartPolicy") == "Always", (
            "an init container is a sidecar only with restartPolicy: Always"
        )
    port = int(_env(sidecar)["DRIFTGATE_PORT"])
    assert any(f"127.0.0.1:{port}" in str(_env(app).values()) for app in apps), "the app calls the sidecar on loopback"


def test_probes_use_the_contract_health_endpoints(pod: dict[str, Any]) -> None:
    sidecar = _containers(pod)["driftgate"]
    port = int(_env(sidecar)["DRIFTGATE_PORT"])
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    if "startupProbe" in sidecar:
        assert sidecar["startupProbe"]["httpGet"]["path"] in ("/v2/health/ready", "/v2/health/live")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in sidecar:
            assert _port(sidecar, sidecar[probe]["httpGet"]["port"]) == port, probe
    assert _env(sidecar)["DRIFTGATE_HOST"] == "0.0.0.0", "kubelet probes come in on the pod IP, not loopback"


def test_grace_period_exceeds_the_drain_bound(pod: dict[str, Any]) -> None:
    sidecar = _containers(pod)["driftgate"]
    drain = float(_env(sidecar).get("DRIFTGATE_DRAIN_SECONDS", Settings().drain_seconds))
    assert pod["spec"]["terminationGracePeriodSeconds"] > drain


def test_environment_uses_only_known_settings(pod: dict[str, Any]) -> None:
    env = _env(_containers(pod)["driftgate"])
    names = {n for n in env if n.startswith(ENV_PREFIX)}
    assert names <= KNOWN_ENV, names - KNOWN_ENV
    assert CONTRACT_ENV - {"DRIFTGATE_ADMIN_TOKEN"} <= names
    token = env["DRIFTGATE_ADMIN_TOKEN"]
    assert isinstance(token, dict) and "secretKeyRef" in token, "the admin token comes from a Secret"


def test_models_come_from_a_volume(pod: dict[str, Any]) -> None:
    sidecar = _containers(pod)["driftgate"]
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    repository = _env(sidecar)["DRIFTGATE_REPOSITORY"]
    assert repository in mounts
    assert mounts[repository] in {v["name"] for v in pod["spec"]["volumes"]}


def test_security_context(pod: dict[str, Any]) -> None:
    pod_context = pod["spec"].get("securityContext", {})
    for container in _containers(pod).values():
        context = {**pod_context, **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True, container["name"]
        assert context.get("readOnlyRootFilesystem") is True, container["name"]
        assert context.get("allowPrivilegeEscalation") is False, container["name"]
        assert "resources" in container and "requests" in container["resources"], container["name"]


def test_prometheus_scrapes_the_sidecar_metrics(pod: dict[str, Any]) -> None:
    annotations = pod["metadata"]["annotations"]
    sidecar = _containers(pod)["driftgate"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == int(_env(sidecar)["DRIFTGATE_PORT"])
