"""In-process cost of the guards and the transform (no HTTP, no model).

Measures ``check`` + ``transform`` exactly as the server runs them on a request body:
records (as JSON decodes them) -> columns -> guards -> float32 matrix. Reports one row
(the common request) and batches of 1,024 rows, for every spec given.

    python bench/spec_bench.py [feature_specs/*.yaml] [--repeat 5] [--json out.json]

A benchmark, not a test: it prints numbers and asserts nothing. Aims (issue #2): one row
under 15 us, batches over 2 million rows/s on these 2-core machines.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _timing import per_call

from gateway.samples import sample_records
from gateway.spec import FeatureSpec, load_spec
from gateway.table import records_to_columns


def bench_spec(spec: FeatureSpec, repeat: int) -> dict[str, float]:
    guards, transform, names = spec.guards, spec.transformer, spec.feature_names
    one = sample_records(spec, 1)
    batch = sample_records(spec, 1024, seed=1)

    def run(records: list[dict[str, Any]]) -> np.ndarray:
        checked = guards.enforce(records_to_columns(records, names))
        return transform.apply(checked.columns, checked.n_rows)

    cols = {name: np.array([r[name] for r in batch], dtype=object if isinstance(batch[0][name], str) else None) for name in names}
    one_s = per_call(lambda: run(one), 20_000, repeat)
    batch_s = per_call(lambda: run(batch), 300, repeat)
    columnar_s = per_call(lambda: spec.transform(cols), 300, repeat)
    return {
        "one_row_us": one_s * 1e6,
        "batch1024_us": batch_s * 1e6,
        "batch1024_rows_per_s": 1024 / batch_s,
        "columnar1024_rows_per_s": 1024 / columnar_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="*", help="spec files (default: feature_specs/*.yaml)")
    parser.add_argument("--repeat", type=int, default=5, help="timed loops per measurement (median reported)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    paths = args.specs or sorted(glob.glob("feature_specs/*.yaml"))
    if not paths:
        print("no spec files found", file=sys.stderr)
        return 2
    results = {}
    print("| spec | features -> inputs | 1 row check+transform (us) | 1,024 records (us) | records rows/s | columns rows/s |")
    print("|---|---|---:|---:|---:|---:|")
    for path in paths:
        spec = load_spec(path)
        r = bench_spec(spec, args.repeat)
        results[spec.name] = r
        print(
            f"| {spec.name} | {len(spec.features)} -> {len(spec.output_columns)} | {r['one_row_us']:.1f} | "
            f"{r['batch1024_us']:.0f} | {r['batch1024_rows_per_s']:,.0f} | {r['columnar1024_rows_per_s']:,.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
