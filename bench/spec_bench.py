"""In-process cost of the guards and the transform (no HTTP, no model).

Measures the public ``FeatureSpec.transform`` (the guards' check, then the transform, as
the server runs them): one record (the common request), 1,024 records (as JSON decodes
them), 1,024 rows as a mapping of columns and as a pandas DataFrame (as training code holds
them), and a 65,536-row DataFrame, for every spec given.

    python bench/spec_bench.py [feature_specs/*.yaml] [--repeat 5] [--json out.json]

A benchmark, not a test: it prints numbers and asserts nothing. Aims (issue #19): one row
under 15 us; 1,024 records at 2 M rows/s (all-numeric) and 1 M (mixed); DataFrames at 5 M.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
from _timing import per_call

from gateway.samples import sample_records
from gateway.spec import FeatureSpec, load_spec


def bench_spec(spec: FeatureSpec, repeat: int) -> dict[str, float]:
    names = spec.feature_names
    one = sample_records(spec, 1)
    batch = sample_records(spec, 1024, seed=1)
    big = sample_records(spec, 65_536, seed=2)
    cols = {
        name: np.array([r[name] for r in batch], dtype=object if isinstance(batch[0][name], str) else None)
        for name in names
    }
    results = {
        "one_row_us": per_call(lambda: spec.transform(one), 20_000, repeat) * 1e6,
        "batch1024_rows_per_s": 1024 / per_call(lambda: spec.transform(batch), 300, repeat),
        "columnar1024_rows_per_s": 1024 / per_call(lambda: spec.transform(cols), 300, repeat),
    }
    try:
        import pandas as pd
    except ImportError:
        return results
    frame, big_frame = pd.DataFrame(batch), pd.DataFrame(big)
    results["dataframe1024_rows_per_s"] = 1024 / per_call(lambda: spec.transform(frame), 300, repeat)
    results["dataframe65536_rows_per_s"] = 65_536 / per_call(lambda: spec.transform(big_frame), 10, repeat)
    return results


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
    print(
        "| spec | features -> inputs | 1 record (us) | 1,024 records rows/s | 1,024 columns rows/s "
        "| 1,024-row DataFrame rows/s | 65,536-row DataFrame rows/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in paths:
        spec = load_spec(path)
        r = bench_spec(spec, args.repeat)
        results[spec.name] = r
        frames = [f"{r[k]:,.0f}" if k in r else "-" for k in ("dataframe1024_rows_per_s", "dataframe65536_rows_per_s")]
        print(
            f"| {spec.name} | {len(spec.features)} -> {len(spec.output_columns)} | {r['one_row_us']:.1f} | "
            f"{r['batch1024_rows_per_s']:,.0f} | {r['columnar1024_rows_per_s']:,.0f} | {' | '.join(frames)} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
