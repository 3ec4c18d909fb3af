"""The V1 answer is written by whole columns (``encode_predictions``: one msgspec call per
output, a bytes template per row); it must be the very bytes of encoding the dict per
prediction (``predictions``), for any labels, ids, probabilities, values and review marks."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs.v1 import encode_predictions, predictions
from gateway.service import Outcome
from gateway.violations import Violation


class _Output:
    def __init__(self, labels: list[str]) -> None:
        self.labels = labels


class _Spec:
    def __init__(self, labels: list[str]) -> None:
        self.output = _Output(labels)


class _Model:
    def __init__(self, labels: list[str]) -> None:
        self.spec = _Spec(labels)


texts = st.text(min_size=1, max_size=8)
"""Labels and ids: quotes, commas, ``%``, backslashes and non-ASCII included."""


@settings(max_examples=150, deadline=None)
@given(
    labels=st.lists(texts, min_size=1, max_size=4, unique=True),
    n=st.integers(min_value=1, max_value=70),
    regression=st.booleans(),
    review=st.booleans(),
    marked=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    ids=st.lists(texts, min_size=70, max_size=70),
)
def test_the_column_encoding_is_the_dict_encoding(
    labels: list[str], n: int, regression: bool, review: bool, marked: bool, seed: int, ids: list[str]
) -> None:
    rng = np.random.default_rng(seed)
    outcome = Outcome(_Model(labels), ids[:n])  # type: ignore[arg-type]
    if regression:
        outcome.values = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(np.float32)
    else:
        p = rng.random((n, len(labels))).astype(np.float32)
        p /= p.sum(axis=1, keepdims=True)
        outcome.probabilities, outcome.label_index, outcome.confidence = p, p.argmax(axis=1), p.max(axis=1)
    if review:
        outcome.review = rng.random(n) < 0.5
    if marked:
        row = int(rng.integers(n))
        outcome.marks = {row: [Violation(row=row, feature="f", reason="above_max", value=1.5, action="flag")]}
    expected: Any = predictions(outcome)
    assert encode_predictions(outcome) == msgspec.json.encode(expected)
