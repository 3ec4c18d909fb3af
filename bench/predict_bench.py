"""In-process cost of one prediction, stage by stage, with and without monitoring.

Runs ``gateway.service.predict`` (guards, transform, onnxruntime, monitoring) on the
bundled models exactly as the server does, minus HTTP, for one-row and 64-row batches,
and reports microseconds per request and the ratios that matter:

- monitoring cost: monitored ÷ unmonitored time (metrics, drift windows, id store);
- guards cost: guarded ÷ unguarded time (with monitoring off in both).

    python bench/predict_bench.py [--models penguins,diabetes] [--repeat 5]

A benchmark, not a test: it asserts nothing. Ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import per_call  # noqa: E402

from gateway.config import load_settings  # noqa: E402
from gateway.lifecycle import Gateway  # noqa: E402
from gateway.samples import sample_records  # noqa: E402
from gateway.service import predict  # noqa: E402
from gateway.table import records_to_columns  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--models", default="penguins,diabetes")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    gateway = Gateway(load_settings({}, repository=str(args.repository)))
    gateway.scan()
    print("| model | rows | full (us) | no monitoring (us) | no guards, no monitoring (us) | monitoring ÷ none | guards ÷ none | us per row (full) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        model = gateway.model_registry.get(name)
        for rows in (1, 64):
            records = sample_records(model.spec, rows, seed=rows)
            names, ignored = model.spec.feature_names, model.guards.ignored

            def run(guarded: bool, monitored: bool, model: Any = model, records: Any = records, names: Any = names, ignored: Any = ignored) -> Any:
                return lambda: predict(model, records_to_columns(records, names, ignored), gateway.predictions, guarded=guarded, monitored=monitored)

            calls = 20_000 if rows == 1 else 2_000
            full = per_call(run(True, True), calls, args.repeat)
            unmonitored = per_call(run(True, False), calls, args.repeat)
            bare = per_call(run(False, False), calls, args.repeat)
            print(
                f"| {name} | {rows} | {full * 1e6:.1f} | {unmonitored * 1e6:.1f} | {bare * 1e6:.1f} | "
                f"{full / unmonitored:.2f} | {unmonitored / bare:.2f} | {full * 1e6 / rows:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
