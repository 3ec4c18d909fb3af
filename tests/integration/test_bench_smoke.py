"""The benchmarks run (CI smoke-runs them; the numbers are read from a real run, not here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.system import require_binary

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_spec_bench_runs_and_reports_every_example_spec() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "spec_bench.py"), "--repeat", "1"], capture_output=True, text=True, timeout=300, check=False, cwd=BENCH.parent
    )
    assert result.returncode == 0, result.stderr
    assert "| penguins |" in result.stdout and "| diabetes |" in result.stdout


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
