"""Every Kubernetes manifest under ``deploy/`` passes schema validation, offline.

Built-in kinds (Deployment, Service, PodDisruptionBudget, ...) are validated by
``kubernetes-validate`` against the Kubernetes API's own OpenAPI schemas (bundled in the
package), strictly: an unknown field is an error, as with ``kubectl apply --validate=strict``.
Custom resources (the Prometheus Operator's ServiceMonitor, KServe's ClusterServingRuntime
and InferenceService) are validated with ``jsonschema`` against their projects' published
CRD schemas, vendored in ``tests/schemas`` (see its README) and made strict the same way.

Beyond the schemas: the objects of ``fleet.yaml`` refer to each other correctly (the
Service, PDB, HPA and ServiceMonitor select the Deployment's pods; the replicas share one
ReadWriteMany claim), and KServe's runtime serves both layouts of ``/mnt/models``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helpers.ports import free_port
from tests.integration.conftest import StartServer
from tests.integration.support import MODELS, PENGUINS_MODEL, copy_models, penguin, predict

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
KUBERNETES_VERSION = "1.30"
"""The oldest Kubernetes the manifests are for: native sidecars (sidecar.yaml) need 1.29."""
CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "clusterservingruntime-v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-v1beta1.json",
}


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    found = [
        (f"{path.relative_to(DEPLOY)}#{i}", doc)
        for path in sorted([*DEPLOY.glob("kubernetes/*.yaml"), *DEPLOY.glob("kserve/*.yaml")])
        for i, doc in enumerate(yaml.safe_load_all(path.read_text()))
        if doc
    ]
    assert len(found) >= 9, found
    return found


@cache
def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return schema


def validate(doc: dict[str, Any]) -> None:
    """Raise if ``doc`` does not pass its kind's schema."""
    custom = CUSTOM.get((doc["apiVersion"], doc["kind"]))
    if custom is None:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    else:
        jsonschema.validate(doc, _schema(custom), cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize(("where", "doc"), _manifests(), ids=[w for w, _ in _manifests()])
def test_manifest_passes_its_schema(where: str, doc: dict[str, Any]) -> None:
    try:
        validate(doc)
    except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
        pytest.fail(f"{where} ({doc['kind']}): {error}")


@pytest.mark.parametrize("kind", ["Deployment", "ServiceMonitor", "ClusterServingRuntime", "InferenceService"])
def test_validation_refuses_a_misspelt_field(kind: str) -> None:
    """The validators are strict: a typo under spec fails, built-in kinds and custom alike."""
    doc = copy.deepcopy(next(d for _, d in _manifests() if d["kind"] == kind))
    doc["spec"]["replicaz" if kind == "Deployment" else "selektor"] = 2
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(doc)


def _fleet() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "fleet.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_fleet_objects_select_the_deployments_pods() -> None:
    fleet = _fleet()
    deployment = fleet["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    assert fleet["Service"]["spec"]["selector"].items() <= labels.items()
    assert fleet["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = fleet["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert fleet["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2, "a PDB with one replica blocks drains"
    monitor = fleet["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= fleet["Service"]["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["endpoints"]} <= {p["name"] for p in fleet["Service"]["spec"]["ports"]}
    assert all(e["path"] == "/metrics" for e in monitor["endpoints"])


def test_fleet_replicas_share_one_read_write_many_repository() -> None:
    fleet = _fleet()
    assert fleet["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = fleet["Deployment"]["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    (container,) = [c for c in pod["containers"] if c["name"] == "driftgate"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert claims[mounts[env["DRIFTGATE_REPOSITORY"]]] == fleet["PersistentVolumeClaim"]["metadata"]["name"]
    assert float(env["DRIFTGATE_WATCH_INTERVAL"]) > 0, "the watcher carries a registration to the other replicas"


def _runtime_script(mnt_models: Path, tmp: Path, name: str) -> str:
    """The ClusterServingRuntime's container script, with KServe's paths and name filled in."""
    runtime = next(d for _, d in _manifests() if d["kind"] == "ClusterServingRuntime")
    (container,) = runtime["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    script: str = container["args"][0]
    return script.replace("{{.Name}}", name).replace("/tmp/", f"{tmp}/").replace("/mnt/models", str(mnt_models))


@pytest.mark.parametrize("layout", ["single model", "repository"])
def test_kserve_runtime_serves_mnt_models(start_server: StartServer, tmp_path: Path, layout: str) -> None:
    """The runtime's script, run as KServe would run it (driftgate from this virtualenv)."""
    if shutil.which("sh") is None:
        pytest.skip("no /bin/sh")
    mnt = tmp_path / "mnt-models"
    if layout == "single model":
        shutil.copytree(PENGUINS_MODEL.parent, mnt)
        name = "penguin-isvc"
    else:
        copy_models(mnt)
        name = "penguins"
    (tmp_path / "tmp").mkdir()
    port = free_port()
    env = {"DRIFTGATE_HOST": "127.0.0.1", "DRIFTGATE_PORT": str(port), "DRIFTGATE_WATCH_INTERVAL": "0"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    server = start_server(
        repository=mnt, command=["/bin/sh", "-c", _runtime_script(mnt, tmp_path / "tmp", name)], env=env, port=port
    )
    with server.client() as client:
        response = predict(client, name, [penguin()])
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == "1"
        assert client.get(f"/v2/models/{name}/ready").status_code == 200
        served = {m["name"] for m in client.get("/v1/models").json()["models"]}
    expected = {name} if layout == "single model" else {p.name for p in MODELS.iterdir() if p.is_dir()}
    assert served == expected
    assert " ERROR " not in server.stderr
