"""Cost of one onnxruntime call by batch size, for every model in a model repository.

Dynamic batching folds concurrent requests into one call; it pays when one call of N rows
costs much less than N calls of one row. This runs each model's highest version with the
gateway's own session options (``gateway.runtime.session_options``: 1 intra-op thread,
every graph optimisation, no spinning) on rows drawn from its spec, and prints the median
microseconds per call for each batch size, and that cost over the one-row cost.

    python bench/batch_cost.py [--repository models] [--models digits] [--batches 1,2,4,8,16,32,64]

A benchmark, not a test: it asserts nothing. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import per_call

from gateway import FeatureSpec
from gateway.runtime import session_options
from gateway.samples import sample_records

BATCHES = (1, 2, 4, 8, 16, 32, 64)
TARGET_SECONDS = 0.05
"""Each timed loop runs about this long, so a quick model is called often enough."""


def latest_versions(repository: Path, names: list[str] | None) -> list[tuple[str, Path]]:
    """``(name, version folder)`` of each model's highest numbered version, by name."""
    found = []
    for folder in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [v for v in folder.iterdir() if v.name.isdigit() and (v / "model.onnx").is_file()]
        if versions and (names is None or folder.name in names):
            found.append((folder.name, max(versions, key=lambda v: int(v.name))))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "models", help="model repository (default: models/)")
    parser.add_argument("--models", help="comma-separated model names (default: every model)")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=15, help="timed loops per size; the median is printed")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    models = latest_versions(args.repository, args.models.split(",") if args.models else None)
    if not models:
        parser.error(f"no model found in {args.repository}")

    print("| model | " + " | ".join(f"{b} row{'s' * (b > 1)} (us)" for b in batches) + " | 32 rows ÷ 1 row |")
    print("|---|" + "---:|" * (len(batches) + 1))
    for name, version in models:
        spec = FeatureSpec.load(version / "spec.yaml")
        session = ort.InferenceSession(
            str(version / "model.onnx"), session_options(), providers=["CPUExecutionProvider"]
        )
        input_name = session.get_inputs()[0].name
        rows = spec.transform(sample_records(spec, max(batches), seed=0))
        micros = {}
        for batch in batches:
            feed = {input_name: np.ascontiguousarray(rows[:batch])}

            def call(session: ort.InferenceSession = session, feed: dict[str, np.ndarray] = feed) -> object:
                return session.run(None, feed)

            once = per_call(call, 3, 1)
            micros[batch] = per_call(call, max(1, int(TARGET_SECONDS / once)), args.repeat) * 1e6
        ratio = f"{micros[32] / micros[1]:.2f}" if 1 in micros and 32 in micros else "-"
        print(f"| {name} | " + " | ".join(f"{micros[b]:.1f}" for b in batches) + f" | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
