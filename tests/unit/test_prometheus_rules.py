"""The shipped Prometheus rules parse, and their own unit tests pass, under promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.system import require_binary

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool", "prometheus")
    return subprocess.run([promtool, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False)


def test_rules_are_valid() -> None:
    result = _promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "tests.yml")
    assert result.returncode == 0, result.stdout + result.stderr
