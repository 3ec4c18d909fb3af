"""Helpers of the integration tests: repository copies, requests, problems, the CLI, workers.
Ports, metrics, raw HTTP and ``/proc`` readers, which the reliability suite uses too, are in
``tests.helpers``.

Nothing here starts a server (that is ``conftest.ServerProcess``); these are the small
pieces every test module would otherwise write again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.integration.conftest import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = REPO_ROOT / "models"
PENGUINS_MODEL = MODELS / "penguins" / "1" / "model.onnx"
PENGUINS_SPEC = MODELS / "penguins" / "1" / "spec.yaml"
DIABETES_MODEL = MODELS / "diabetes" / "1" / "model.onnx"
DIABETES_SPEC = MODELS / "diabetes" / "1" / "spec.yaml"

ADMIN_TOKEN = "integration-test-admin-token"
PROBLEM_JSON = "application/problem+json"
REASONS = {"missing", "wrong_type", "not_finite", "below_min", "above_max", "unseen_category", "unknown_feature"}

PENGUIN = {
    "island": "Biscoe",
    "bill_length_mm": 45.2,
    "bill_depth_mm": 15.1,
    "flipper_length_mm": 215.0,
    "body_mass_g": 5100.0,
    "sex": "male",
    "year": 2008,
}
"""A valid penguins row (a Gentoo, as it happens)."""
V2_ROW = [
    {"name": "island", "datatype": "BYTES", "shape": [1], "data": ["Biscoe"]},
    {"name": "sex", "datatype": "BYTES", "shape": [1], "data": ["male"]},
    {"name": "year", "datatype": "INT64", "shape": [1], "data": [2008]},
]
"""One valid V2 penguins row (the other features are imputed)."""
DIABETES_ROW = {
    "age": 0.01, "sex": 0.05, "bmi": 0.06, "bp": 0.02, "s1": -0.04,
    "s2": -0.03, "s3": -0.04, "s4": -0.002, "s5": 0.02, "s6": -0.01,
}  # fmt: skip
"""A valid diabetes row."""


def copy_models(dest: Path) -> Path:
    """A private copy of the bundled repository, so a test can register into it."""
    shutil.copytree(MODELS, dest)
    return dest


def version_dirs(repository: Path) -> set[str]:
    """``name/version`` of every version folder, plus anything left in ``.staging``."""
    found = {f"{m.name}/{v.name}" for m in repository.iterdir() if m.is_dir() for v in m.iterdir() if v.is_dir()}
    return {d for d in found if not d.startswith(".staging/")} | {
        f".staging/{p.name}" for p in (repository / ".staging").glob("*")
    }


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size: a snapshot to prove nothing was written."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def penguin(**changes: Any) -> dict[str, Any]:
    """A valid penguins row with ``changes``; a change to ``...`` drops the field."""
    row = {**PENGUIN, **changes}
    return {k: v for k, v in row.items() if v is not ...}


def v2_body(row: dict[str, Any]) -> dict[str, Any]:
    """A V2 JSON inference request of one row: a ``[1]`` tensor per feature."""
    return {
        "inputs": [
            {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
            for k, v in row.items()
        ]
    }


def predict(client: httpx.Client, model: str, instances: list[Any], version: str | None = None) -> httpx.Response:
    path = f"/v1/models/{model}:predict" if version is None else f"/v1/models/{model}/versions/{version}:predict"
    return client.post(path, json={"instances": instances})


def bundle(model: bytes, spec: bytes) -> dict[str, tuple[str, bytes, str]]:
    """The multipart parts of ``PUT /v1/models/{name}/versions/{v}``."""
    return {"model": ("model.onnx", model, "application/octet-stream"), "spec": ("spec.yaml", spec, "application/yaml")}


def admin(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem with ``status``, and ``error`` equal to ``detail``."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON, response.headers["content-type"]
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"].strip(), body
    assert body["error"] == body["detail"], body
    assert body.get("title") and body.get("type"), body
    return body


def cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gateway.cli ARGS`` as a user would, capturing its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )


# --- ``serve --workers N`` ----------------------------------------------------------------


def serving_workers(proc: ServerProcess) -> int:
    """Workers that have started serving so far (a worker takes connections only once its
    models are loaded, and then logs uvicorn's start-up line)."""
    return proc.stderr.count("Application startup complete")


def wait_serving(proc: ServerProcess, count: int, timeout: float = 30) -> None:
    """Wait until ``count`` workers have started serving (replacements count too)."""
    deadline = time.monotonic() + timeout
    while serving_workers(proc) < count:
        assert time.monotonic() < deadline, f"fewer than {count} workers serving:\n{proc.stderr[-2000:]}"
        time.sleep(0.05)


def worker_pids(proc: ServerProcess) -> set[int]:
    """The supervisor's worker processes (multiprocessing's resource tracker is not one)."""
    assert proc.process is not None
    pid = proc.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    out = set()
    for child in children:
        try:
            if "spawn_main" in Path(f"/proc/{child}/cmdline").read_text():
                out.add(int(child))
        except OSError:
            pass
    return out
