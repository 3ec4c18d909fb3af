"""Retrained versions of the bundled penguins model, for the rollout tests: trained here on
palmerpenguins' data (a package, no download), each with a spec refitted on its own rows."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from gateway import FeatureSpec
from gateway.export import export_model
from gateway.spec import encode_spec


@cache
def penguins_frame() -> Any:
    """palmerpenguins' table (a pandas DataFrame), the rows with a species."""
    from palmerpenguins import load_penguins

    frame = load_penguins().dropna(subset=["species"]).reset_index(drop=True)
    return frame


def retrained(*, without_island: str | None = "Torgersen", shuffled: bool = False, seed: int = 0) -> tuple[bytes, bytes]:
    """(model.onnx, spec.yaml) of a penguins classifier retrained on the rows off
    ``without_island`` (its spec, with a closed vocabulary, refuses that island), with its
    labels shuffled if ``shuffled`` (a model that answers badly)."""
    from sklearn.linear_model import LogisticRegression

    frame = penguins_frame()
    if without_island is not None:
        frame = frame[frame["island"] != without_island].reset_index(drop=True)
    spec = FeatureSpec.fit(frame, name="penguins", target="species", vocabulary="closed")
    target = frame["species"].to_numpy()
    if shuffled:
        target = np.random.default_rng(seed).permutation(target)
    model = LogisticRegression(max_iter=2000).fit(spec.transform(frame), target)
    return export_model(model, spec), encode_spec(spec)
