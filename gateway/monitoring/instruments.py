"""The instruments a ``ModelMetrics`` is made of, each owning its whole life cycle.

Every instrument counts (``observe``/``add``), exports its state as plain numbers
(``export``: what a worker publishes, see ``gateway.monitoring.fleet``), sums several
workers' states (``merge``) and continues from an exported state (``restore``). The
drift and feedback windows (``gateway.monitoring.drift``, ``gateway.monitoring.feedback``)
follow the same four calls.

``restore`` never skips: a state of another shape (another spec's layout, another set of
labels) raises ``StateMismatchError`` and changes nothing, and ``check`` tells beforehand,
so that a ``ModelMetrics`` restores all of its instruments or none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "BatchHistogram",
    "CountArray",
    "HistogramSet",
    "HistogramState",
    "LabelledCounts",
    "StateMismatchError",
    "check_shape",
]


class StateMismatchError(ValueError):
    """An exported state does not fit the instrument it was to be restored into."""


def check_shape(what: str, state: Any, own: NDArray[Any]) -> None:
    """Raise ``StateMismatchError`` unless ``state`` has the shape of ``own``."""
    if np.shape(state) != own.shape:
        raise StateMismatchError(f"{what}: a state of shape {np.shape(state)} does not fit shape {own.shape}")


class LabelledCounts:
    """Counters under a fixed set of labels (rows by outcome, marks, feedback outcomes).
    ``counts[label] += n`` is the hot path: a plain dict."""

    __slots__ = ("counts", "what")

    def __init__(self, what: str, labels: Sequence[str]) -> None:
        self.what = what
        self.counts = dict.fromkeys(labels, 0)

    def __getitem__(self, label: str) -> int:
        return self.counts[label]

    def __setitem__(self, label: str, value: int) -> None:
        self.counts[label] = value

    def export(self) -> dict[str, int]:
        return dict(self.counts)

    def check(self, state: dict[str, int]) -> None:
        if set(state) != set(self.counts):
            raise StateMismatchError(f"{self.what}: labels {sorted(state)} do not fit {sorted(self.counts)}")

    def restore(self, state: dict[str, int]) -> None:
        self.check(state)
        for label, value in state.items():
            self.counts[label] = int(value)

    @staticmethod
    def merge(states: Sequence[dict[str, int]]) -> dict[str, int]:
        out = dict.fromkeys(states[0], 0)
        for state in states:
            for label, value in state.items():
                out[label] = out.get(label, 0) + value
        return out


class CountArray:
    """An int64 array of counts (violations by feature and reason, rows by class)."""

    __slots__ = ("counts", "what")

    def __init__(self, what: str, shape: tuple[int, ...]) -> None:
        self.what = what
        self.counts = np.zeros(shape, dtype=np.int64)

    def export(self) -> NDArray[np.int64]:
        return self.counts.copy()

    def check(self, state: Any) -> None:
        check_shape(self.what, state, self.counts)

    def restore(self, state: Any) -> None:
        self.check(state)
        self.counts[...] = state

    @staticmethod
    def merge(states: Sequence[Any]) -> NDArray[np.int64]:
        total: NDArray[np.int64] = np.sum(np.asarray(states, dtype=np.int64), axis=0)
        return total


class HistogramState(msgspec.Struct, array_like=True):
    counts: Any
    """int64 count per bucket, the last one above every bound."""
    total: float
    nonfinite: int


class BatchHistogram:
    """A Prometheus histogram updated a batch at a time: a batch of 64 values costs one
    ``searchsorted`` and one ``bincount``, not 64 ``observe`` calls.

    A NaN or infinite observation is counted in ``nonfinite`` and never enters the sum, so
    one bad value cannot poison the series."""

    __slots__ = ("bounds", "counts", "nonfinite", "total")

    def __init__(self, bounds: Sequence[float] | NDArray[np.float64]) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last bin: above every bound (+Inf)
        self.total = 0.0
        self.nonfinite = 0

    def observe_many(self, values: NDArray[np.floating[Any]]) -> None:
        if values.size == 0:
            return
        finite = np.isfinite(values)
        if not finite.all():
            self.nonfinite += int((~finite).sum())
            values = values[finite]
        self.counts += np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.counts))
        self.total += float(values.sum())

    def observe(self, value: float) -> None:
        if not math.isfinite(value):
            self.nonfinite += 1
            return
        self.counts[int(np.searchsorted(self.bounds, value, side="left"))] += 1
        self.total += value

    def export(self) -> HistogramState:
        return HistogramState(self.counts.copy(), self.total, self.nonfinite)

    def check(self, state: HistogramState) -> None:
        check_shape(f"histogram of {len(self.bounds)} bounds", state.counts, self.counts)

    def restore(self, state: HistogramState) -> None:
        self.check(state)
        self.counts[:] = state.counts
        self.total = float(state.total)
        self.nonfinite = int(state.nonfinite)

    @staticmethod
    def merge(states: Sequence[HistogramState]) -> HistogramState:
        return HistogramState(
            np.sum(np.asarray([s.counts for s in states], dtype=np.int64), axis=0),
            sum(float(s.total) for s in states),
            sum(int(s.nonfinite) for s in states),
        )

    @classmethod
    def of(cls, bounds: NDArray[np.float64], state: HistogramState) -> BatchHistogram:
        """A histogram with ``bounds`` holding ``state`` (to read a merged state)."""
        hist = cls.__new__(cls)
        hist.bounds = bounds
        hist.counts = np.asarray(state.counts, dtype=np.int64)
        hist.total = float(state.total)
        hist.nonfinite = int(state.nonfinite)
        return hist


class HistogramSet:
    """Histograms of one layout under a fixed set of labels (seconds per stage).
    Observations arrive as rows of one value per label (``observe_rows``)."""

    __slots__ = ("hists", "labels")

    def __init__(self, labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.labels = tuple(labels)
        self.hists = {label: BatchHistogram(bounds) for label in self.labels}

    def __getitem__(self, label: str) -> BatchHistogram:
        return self.hists[label]

    def items(self) -> Any:
        return self.hists.items()

    def observe_rows(self, rows: Sequence[tuple[float, ...]]) -> None:
        """Count ``rows`` of one value per label, in ``labels`` order."""
        values = np.asarray(rows, dtype=np.float64)
        for i, label in enumerate(self.labels):
            self.hists[label].observe_many(values[:, i])

    def export(self) -> dict[str, HistogramState]:
        return {label: hist.export() for label, hist in self.hists.items()}

    def check(self, state: dict[str, HistogramState]) -> None:
        if set(state) != set(self.hists):
            raise StateMismatchError(f"histograms {sorted(state)} do not fit {sorted(self.hists)}")
        for label, hist in self.hists.items():
            hist.check(state[label])

    def restore(self, state: dict[str, HistogramState]) -> None:
        self.check(state)
        for label, hist in self.hists.items():
            hist.restore(state[label])

    @staticmethod
    def merge(states: Sequence[dict[str, HistogramState]]) -> dict[str, HistogramState]:
        return {label: BatchHistogram.merge([s[label] for s in states]) for label in states[0]}
