"""Valid rows made from a spec alone, for warming a model up and for benchmarks.

Numbers are drawn uniformly inside the spec's domain (the baseline's edge range when the
domain is unbounded), categories uniformly from the vocabulary. The rows are plain JSON
values, exactly what a client would send.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway.spec import BooleanFeature, CategoryFeature, FeatureSpec, IntegerFeature

__all__ = ["sample_records"]


def _range(feature: Any) -> tuple[float, float]:
    lo, hi = feature.min, feature.max
    edges = feature.baseline.edges if feature.baseline is not None else ()
    if lo is None:
        lo = edges[0] if edges else -1.0
    if hi is None:
        hi = edges[-1] if edges else 1.0
    return float(lo), float(max(hi, lo))


def sample_records(spec: FeatureSpec, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` rows that pass ``spec.check``, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for f in spec.features:
        if isinstance(f, CategoryFeature):
            columns[f.name] = [f.categories[i] for i in rng.integers(0, len(f.categories), n).tolist()]
        elif isinstance(f, BooleanFeature):
            columns[f.name] = (rng.random(n) < 0.5).tolist()
        else:
            lo, hi = _range(f)
            values = rng.uniform(lo, hi, n)
            if isinstance(f, IntegerFeature):
                columns[f.name] = np.clip(np.round(values), np.ceil(lo), np.floor(hi)).astype(int).tolist()
            else:
                columns[f.name] = values.tolist()
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
