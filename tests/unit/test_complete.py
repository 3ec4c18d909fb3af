"""``service.complete`` reads one-row answers in Python and batches with numpy: both must
give the same label, confidence and review mark, and both must refuse any non-finite
probability."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gateway.config import load_settings
from gateway.errors import InferenceFailedError
from gateway.lifecycle import Gateway
from gateway.registry import LoadedModel
from gateway.runtime import Inference
from gateway.samples import sample_records
from gateway.service import Outcome, complete, prepare
from gateway.table import records_to_columns

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def gateway() -> Gateway:
    g = Gateway(load_settings({}, repository=str(MODELS)))
    g.scan()
    return g


def _complete(gateway: Gateway, model: LoadedModel, probabilities: list[list[float]]) -> Outcome:
    rows = sample_records(model.spec, len(probabilities), seed=3)
    prepared = prepare(model, records_to_columns(rows, model.guards.names))
    assert prepared.matrix is not None
    inference = Inference(probabilities=np.array(probabilities, dtype=np.float32))
    return complete(model, prepared, inference, 0.0, gateway.predictions)


@pytest.mark.parametrize(
    "row",
    [[0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, 0.3, 0.3], [0.59, 0.21, 0.2], [0.6, 0.2, 0.2], [1.0, 0.0, 0.0]],
    ids=["clear", "tie-first", "tie-later", "below-review", "at-review", "certain"],
)
def test_one_row_and_batch_agree_on_label_confidence_and_review(gateway: Gateway, row: list[float]) -> None:
    model = gateway.model_registry.get("penguins")  # review threshold 0.6
    one = _complete(gateway, model, [row])
    batch = _complete(gateway, model, [[1.0, 0.0, 0.0], row])
    assert one.label_index is not None and batch.label_index is not None
    assert one.confidence is not None and batch.confidence is not None
    assert one.label_index.tolist() == batch.label_index[1:].tolist() == [int(np.argmax(row))]
    assert one.confidence.dtype == batch.confidence.dtype == np.float32
    assert one.confidence.tolist() == batch.confidence[1:].tolist()
    one_review = one.review.tolist() if one.review is not None else [False]
    batch_review = batch.review[1:].tolist() if batch.review is not None else [False]
    assert one_review == batch_review == [float(np.float32(max(row))) < 0.6]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("column", [0, 1, 2])
@pytest.mark.parametrize("rows", [1, 3])
def test_any_non_finite_probability_is_refused(gateway: Gateway, bad: float, column: int, rows: int) -> None:
    """Wherever it is, not only when it would be the top class (NaN compares false with
    everything, so a maximum can step over it)."""
    model = gateway.model_registry.get("penguins")
    probabilities = [[0.5, 0.25, 0.25] for _ in range(rows)]
    probabilities[-1][column] = bad
    with pytest.raises(InferenceFailedError, match="non-finite"):
        _complete(gateway, model, probabilities)


def test_large_finite_probabilities_are_not_mistaken_for_infinite(gateway: Gateway) -> None:
    """Each value is checked, not their float32 sum (which overflows for these)."""
    model = gateway.model_registry.get("penguins")
    for rows in ([[3e38, 3e38, 0.0]], [[3e38, 3e38, 0.0], [0.2, 0.5, 0.3]]):
        outcome = _complete(gateway, model, rows)
        assert outcome.label_index is not None and outcome.label_index[0] == 0
