"""The README's two opening commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _indented_commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("    python3 -m venv")]


def test_readme_opens_with_serve_then_test_command() -> None:
    commands = _indented_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 2
    serve, test = commands[:2]
    assert serve.endswith("driftgate serve")
    assert re.search(r"pytest", test)


def test_ci_runs_the_readme_test_command() -> None:
    test = _indented_commands((ROOT / "README.md").read_text())[1]
    ci = (ROOT / ".ci" / "run").read_text()
    # .ci/run adds -q to pip for a shorter log; everything else is the README's command
    assert test.replace("pip install -e", "pip install -q -e") in ci


def test_ci_also_runs_what_the_readme_command_leaves_out() -> None:
    test = _indented_commands((ROOT / "README.md").read_text())[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert '-m "not slow"' in test
    assert re.search(r"^\.venv/bin/python -m pytest -q -m slow$", ci, re.MULTILINE)
