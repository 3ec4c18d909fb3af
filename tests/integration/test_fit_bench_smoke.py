"""Quick runs of the fitting benchmarks (``bench/fit_defaults.py``, ``bench/fit_spec_files.py``):
they run, and their tables hold a row per case with its numbers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, check=False, cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_fit_defaults_reports_acceptance_and_refusals() -> None:
    out = run(str(BENCH / "fit_defaults.py"), "--draws", "1", "--sizes", "100", "--sets", "wine,penguins")
    rows = [line for line in out.splitlines() if line.startswith(("| wine", "| penguins"))]
    assert len(rows) == 2
    for row in rows:
        accepted = float(re.search(r"\| 100 \| ([\d.]+)%", row).group(1))  # type: ignore[union-attr]
        refused, probes = map(int, re.search(r"\| (\d+)/(\d+)", row).groups())  # type: ignore[union-attr]
        assert accepted >= 99.0 and probes > 0 and refused == probes, row


def test_fit_spec_files_times_each_format() -> None:
    out = run(str(BENCH / "fit_spec_files.py"), "--rows", "2000", "--rounds", "1", "--no-fallback")
    for label in ("CSV, pyarrow", "Parquet, pyarrow", "TSV, pyarrow"):
        assert re.search(rf"\| {label} \| [\d,]+ MB \| [\d.]+ s \| [\d,]+ MB \|", out), out
