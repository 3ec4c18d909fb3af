"""The soak target runs (CI smoke-runs it with a tiny --requests; the real run is nightly)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system import require_binary

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def soak(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SOAK), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=SOAK.parents[1],
    )


def test_soak_help() -> None:
    result = soak("--help")
    assert result.returncode == 0, result.stderr
    for option in ("--requests", "--duration", "--max-rss-growth-mb"):
        assert option in result.stdout


@pytest.mark.slow
def test_soak_smoke_run_is_clean_and_reports_its_table() -> None:
    require_binary("wrk", "wrk")
    result = soak("--requests", "2000", "--connections", "8")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "soak: OK" in out and "soak: server exited with 0" in out, out
    for row in ("| RSS (MiB) |", "| open fds |", "| threads |", "| requests |", "| socket errors | 0 |"):
        assert row in out, out
    statuses = {
        int(s): int(n.replace(",", "")) for s, n in re.findall(r"^\| (\d{3}) \| ([\d,]+) \|", out, re.MULTILINE)
    }
    assert set(statuses) == {200, 400, 422}, out  # the mix: valid, malformed, rejected; nothing else
    total = int(re.search(r"driftgate soak: ([\d,]+) requests", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert total >= 2000 and sum(statuses.values()) == total, out
    assert 0.6 < statuses[200] / total < 0.8 and 0.15 < statuses[422] / total < 0.25, statuses


@pytest.mark.slow
def test_soak_fails_when_a_limit_is_broken() -> None:
    """The verdict can fail: no RSS growth at all is allowed here, so any growth fails
    the run (and even none: the limit is below zero)."""
    require_binary("wrk", "wrk")
    result = soak("--requests", "1000", "--max-rss-growth-mb", "-1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "soak: FAIL: RSS grew" in result.stdout, result.stdout
