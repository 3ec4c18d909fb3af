"""The README's "Bring your own model" steps, run as written: its Python blocks in a fresh
interpreter, its ``driftgate`` commands as commands, and its ``curl`` body sent to the
server the README's ``serve`` line starts. Only the port differs (a free one, not 8080)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ServerProcess
from tests.integration.support import REPO_ROOT


def section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("## Bring your own model")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.slow
def test_the_readme_steps_serve_a_guarded_prediction(tmp_path: Path) -> None:
    text = section()
    python = "\n".join(blocks(text, "python"))
    commands = [line[2:] for block in blocks(text, "console") for line in block.splitlines() if line.startswith("$ ")]
    register, serve, curl = commands

    # steps 1 and 2: the Python blocks, one after the other, in one interpreter
    run = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "penguins-model" / "model.onnx").is_file() and (tmp_path / "penguins-model" / "spec.yaml").is_file()

    # step 3: register, then serve, as the README writes them
    driftgate = [sys.executable, "-m", "gateway.cli"]
    words = shlex.split(register)
    assert words[0] == "driftgate"
    done = subprocess.run([*driftgate, *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("registered penguins version 1 in my-models")

    words = shlex.split(serve)
    assert words[:2] == ["driftgate", "serve"]
    server = ServerProcess(tmp_path, tmp_path / "my-models", command=[*driftgate, *words[1:], "--port", "0"])
    server.start()
    try:
        words = shlex.split(curl)
        url, body = words[words.index("-s") + 1], json.loads(words[words.index("-d") + 1])
        path = "/" + url.split("/", 1)[1]
        with server.client() as client:
            answer = client.post(path, json=body)
            assert answer.status_code == 200, answer.text
            (prediction,) = answer.json()["predictions"]
            assert prediction["label"] == "Gentoo"
            assert set(prediction["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
            # guarded: a body mass in tonnes (a unit error) never reaches the model
            row = body["instances"][0]
            refused = client.post(path, json={"instances": [{**row, "body_mass_g": row["body_mass_g"] * 1000}]})
            assert refused.status_code == 422
            assert [(v["feature"], v["reason"]) for v in refused.json()["violations"]] == [("body_mass_g", "above_max")]
    finally:
        server.stop()
