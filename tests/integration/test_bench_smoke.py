"""The benchmarks run (CI smoke-runs them; the numbers are read from a real run, not here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.system import require_binary

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.slow
def test_spec_bench_runs_and_reports_every_example_spec() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "spec_bench.py"), "--repeat", "1"], capture_output=True, text=True, timeout=300, check=False, cwd=BENCH.parent
    )
    assert result.returncode == 0, result.stderr
    assert "| penguins |" in result.stdout and "| diabetes |" in result.stdout


@pytest.mark.slow
def test_http_bench_smoke_run_has_no_errors(tmp_path: Path) -> None:
    require_binary("wrk", "wrk")
    out = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, str(BENCH / "http_bench.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False, cwd=BENCH.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = out.read_text()
    for protocol in ("v1", "v2", "v2-binary"):  # each protocol: 2 batch sizes x 2 concurrencies x 2 modes
        assert sum(1 for line in table.splitlines() if line.startswith(f"| {protocol} |")) == 8, table


@pytest.mark.slow
def test_memory_amplification_quick_run_reports_each_kind_with_its_status() -> None:
    script = str(BENCH / "memory_amplification.py")
    usage = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert usage.returncode == 0 and "--max-body-bytes" in usage.stdout, usage.stderr
    result = subprocess.run(
        [sys.executable, script, "--quick"], capture_output=True, text=True, timeout=120, check=False, cwd=BENCH.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = {}
    for line in result.stdout.splitlines():  # table rows: kind | body | status | ...
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) > 2 and cells[2].isdigit():
            statuses[cells[0]] = cells[2]
    expected = {"v1-penguins-max-rows": "200", "v1-empty-rows": "413", "v2-binary": "413", "2 × v2-binary": "413"}
    assert statuses == expected, result.stdout
