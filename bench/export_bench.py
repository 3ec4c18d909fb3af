"""Benchmark of ``driftgate export``: how long a million logged rows take to export.

Writes a prediction log as the server does (the bundled model's real predictions, through
``gateway.predlog.PayloadLog``, in batches of ``--batch`` rows; feedback for every third
prediction), then times ``driftgate export`` on it, as a user runs it (a fresh process):
to CSV, to CSV with ``--labelled``, and to JSON Lines. Prints a Markdown table with the
seconds, rows/s and the log's size.

    python bench/export_bench.py                    # a million rows (~1 min to write the log)
    python bench/export_bench.py --rows 20000       # seconds; a smoke run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.monitoring.feedback import PredictionLog
from gateway.predlog import PayloadLog
from gateway.registry import load_model
from gateway.samples import sample_records
from gateway.service import complete, prepare
from gateway.table import records_to_columns


def write_log(folder: Path, model_name: str, rows: int, batch: int) -> tuple[int, int]:
    """A log of ``rows`` predictions of ``model_name`` (and feedback for every third);
    returns (rows logged, feedback logged)."""
    source = ROOT / "models" / model_name / "1"
    model = load_model(model_name, 1, (source / "model.onnx").read_bytes(), (source / "spec.yaml").read_bytes())
    ring = PredictionLog(1 << 20)
    log = PayloadLog(folder, "bench", queue_rows=1 << 30)
    labels = model.spec.output.labels if model.spec.output is not None else ()
    batches = [sample_records(model.spec, batch, seed=seed) for seed in range(8)]
    done = feedback = 0
    while done < rows:
        records = batches[(done // batch) % len(batches)][: rows - done]
        columns = records_to_columns(records, model.spec.feature_names, model.guards.ignored)
        prepared = prepare(model, columns)
        assert prepared.matrix is not None
        outcome = complete(model, prepared, model.runtime.run(prepared.matrix), time.perf_counter(), ring)
        log.batch(model, columns, prepared.checked.violations, outcome)
        truths = [(i, labels[n % len(labels)] if labels else float(n)) for n, i in enumerate(outcome.ids[::3])]
        log.feedback(model_name, truths)
        feedback += len(truths)
        done += len(records)
        if (done // batch) % 20 == 0:
            log.flush()
    log.stop()
    assert not any(outcome == "dropped" for _, outcome in log.counts), log.counts
    return done, feedback


def main() -> int:
    parser = argparse.ArgumentParser(description="driftgate export benchmark")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="rows per logged batch")
    parser.add_argument("--model", default="penguins")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "log"
        t0 = time.perf_counter()
        rows, feedback = write_log(folder, args.model, args.rows, args.batch)
        size = sum(p.stat().st_size for p in folder.rglob("*.jsonl.gz"))
        print(f"wrote {rows:,} rows and {feedback:,} feedback records ({size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        lines = [
            f"model `{args.model}`, {rows:,} logged rows ({size / 1e6:.1f} MB of gzip JSON Lines), feedback for {feedback:,}",
            "",
            "| export | rows out | seconds | rows/s |",
            "|---|---:|---:|---:|",
        ]
        for label, extra, out in (
            ("CSV", [], "out.csv"),
            ("CSV --labelled", ["--labelled"], "labelled.csv"),
            ("JSON Lines", [], "out.jsonl"),
        ):
            target = Path(tmp) / out
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "gateway.cli", "export", args.model, "--log-dir", str(folder), *extra, "-o", str(target)],
                check=True,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
            seconds = time.perf_counter() - t0
            with open(target, "rb") as f:
                written = sum(1 for _ in f) - (1 if out.endswith(".csv") else 0)
            lines.append(f"| {label} | {written:,} | {seconds:.1f} | {rows / seconds:,.0f} |")
            print(lines[-1], file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
