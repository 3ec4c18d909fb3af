"""The shipped Prometheus rules parse, and their own unit tests pass, under promtool; every
alert has a description and a runbook section, and is tested both firing and quiet."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

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


def _yaml(name: str) -> Any:
    return yaml.safe_load((RULES_DIR / name).read_text())


def test_every_alert_has_a_description_and_a_runbook_section() -> None:
    runbook = (RULES_DIR.parent / "RUNBOOK.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-") for line in runbook.splitlines() if line.startswith("## ")}
    alerts = [rule for group in _yaml("rules.yml")["groups"] for rule in group["rules"] if "alert" in rule]
    assert len(alerts) >= 9
    for rule in alerts:
        notes = rule["annotations"]
        assert notes.get("description") and notes.get("summary"), rule["alert"]
        assert notes["runbook_url"] == f"deploy/RUNBOOK.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"deploy/RUNBOOK.md has no section {rule['alert']}"


def test_the_rule_tests_cover_every_alert_firing_and_not_firing() -> None:
    alerts = {rule["alert"] for group in _yaml("rules.yml")["groups"] for rule in group["rules"] if "alert" in rule}
    fired, quiet = set(), set()
    for case in _yaml("tests.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fired == set(), "no test where these fire"
    assert alerts - quiet == set(), "no test where these stay quiet"
