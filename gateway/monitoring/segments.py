"""Monitoring per segment: the spec's ``segments`` (category features) slice every count.

For each segment feature ``S`` with categories ``c1..ck`` there are ``k + 1`` *slices*:
one per category and ``_other`` (a value beyond the vocabulary, an imputed one, or, on a
rejected row, a value the guards refused). Series stay bounded by the spec alone
(``MAX_SEGMENTS`` features of at most ``MAX_SEGMENT_VALUES`` values). Per slice:

- rows predicted and rejected, and violations by reason (cumulative counters);
- a sliding window, following the model's drift window chunk for chunk: rows, the sum of
  the top-class probability (its mean is the slice's CBPE accuracy estimate), and the bin
  counts of every feature, whose PSI is measured against the slice's own training baseline
  (``SegmentBaseline``, fitted by ``fit-spec --segment``; with one pseudo-row spread as
  the whole baseline is, so a bin the segment's few training rows left empty keeps a small
  share rather than PSI's floor);
- online accuracy (or MAE and RMSE) of the feedback joined to its predictions, windowed as
  the model's feedback window is.

A batch costs one ``bincount`` over ``slice * bins + bin`` for all its cells and one per
row count; nothing walks rows in Python. A row's slices are also kept, as one mixed-radix
code, in the prediction ring (``gateway.monitoring.feedback``), so feedback sent to any
worker finds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from gateway.monitoring.drift import CHUNKS, MIN_ROWS, BatchBinner, Segment, SegmentTable
from gateway.monitoring.instruments import check_shape
from gateway.spec import CategoryFeature, FeatureSpec
from gateway.violations import REASONS

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from gateway.violations import Violation

__all__ = ["OTHER_VALUE", "SegmentState", "SegmentWindow", "Slicing"]

OTHER_VALUE = "_other"
"""The slice of values beyond a segment feature's vocabulary."""

PRIOR_ROWS = 1.0
"""A slice's baseline is its training counts plus this many pseudo-rows spread as the whole
training baseline is: ``(counts + a * share) / (rows + a)``. One row keeps an empty bin's
share near ``share / rows`` (0.2% for 50 rows), where PSI's 1e-4 floor would make a rare
value look like drift; more blurs a segment that truly differs from the whole (with one pseudo-row per bin,
penguins resampled from Torgersen's own training rows showed PSI above 0.25 on three
features)."""


class Slicing:
    """The layout of a spec's slices (built once per served version)."""

    def __init__(self, spec: FeatureSpec, segments: Sequence[Segment]) -> None:
        by_name = {f.name: f for f in spec.features}
        self.features = [s for s in segments if not s.name.startswith("_")]
        self.size = sum(s.size for s in self.features)
        # the features' bins, compacted: segment.offset is already within the inputs (they come first)
        self.binner = BatchBinner(self.features)
        self.order = [*self.binner.numeric, *self.binner.coded]
        self.segment_names: list[str] = []
        self.values: list[list[str]] = []
        self.first: list[int] = []
        slices: list[tuple[str, str]] = []
        tables: list[Segment] = []
        for segmentation in spec.segments:
            feature = by_name[segmentation.feature]
            assert isinstance(feature, CategoryFeature)
            values = [*feature.categories, OTHER_VALUE]
            fitted = {b.value: b for b in segmentation.baselines}
            self.first.append(len(slices))
            self.segment_names.append(feature.name)
            self.values.append(values)
            for value in values:
                base = fitted.get(value)
                offset = len(slices) * self.size
                for s in self.features:
                    counts = s.baseline
                    own = base.counts.get(s.name) if base is not None else None
                    if own is not None:
                        counts = (np.asarray(own, dtype=np.float64) + PRIOR_ROWS * s.baseline) / (sum(own) + PRIOR_ROWS)
                    tables.append(
                        Segment(
                            s.name,
                            s.kind,
                            offset + s.offset,
                            s.labels,
                            counts.tolist(),
                            edges=s.edges_list,
                            missing_bin=s.missing_bin,
                            unseen_bin=s.unseen_bin,
                        )
                    )
                slices.append((feature.name, value))
        self.slices = slices
        self.count = len(slices)
        self.radix = [len(v) for v in self.values]
        self.table = SegmentTable(tables)
        self.other = [first + len(v) - 1 for first, v in zip(self.first, self.values, strict=True)]
        self._first = np.asarray(self.first, dtype=np.intp)

    # -- which slices rows fall in --

    def codes(self, columns: Mapping[str, Any], imputed: Mapping[str, Any], n: int) -> NDArray[np.intp]:
        """``(rows, segment features)``: the slice of each row in each segmentation."""
        out = np.empty((n, len(self.segment_names)), dtype=np.intp)
        for j, name in enumerate(self.segment_names):
            raw = np.asarray(columns[name]).astype(np.intp, copy=False).reshape(n)
            other = self.radix[j] - 1
            code = np.where((raw < 0) | (raw >= other), other, raw)
            mask = imputed.get(name)
            if mask is not None:
                code = np.where(np.asarray(mask, dtype=np.bool_), other, code)
            out[:, j] = code + self.first[j]
        return out

    def pack(self, codes: NDArray[np.intp]) -> NDArray[np.int64]:
        """One mixed-radix integer per row of ``codes`` (what the prediction ring stores)."""
        packed = np.zeros(len(codes), dtype=np.int64)
        for j in reversed(range(len(self.radix))):
            packed = packed * self.radix[j] + (codes[:, j] - self.first[j])
        return packed

    def unpack(self, packed: NDArray[Any]) -> NDArray[np.intp]:
        rest = np.asarray(packed, dtype=np.int64)
        out = np.empty((len(rest), len(self.radix)), dtype=np.intp)
        for j, radix in enumerate(self.radix):
            out[:, j] = rest % radix + self.first[j]
            rest = rest // radix
        return out

    def pack_one(self, columns: Mapping[str, Any], imputed: Mapping[str, Any]) -> int:
        """``pack`` of a one-row request whose columns are one-item lists (no numpy)."""
        packed = 0
        for j in reversed(range(len(self.radix))):
            name = self.segment_names[j]
            other = self.radix[j] - 1
            raw = columns[name][0]
            code = other if name in imputed or not 0 <= raw < other else int(raw)
            packed = packed * self.radix[j] + code
        return packed


class SegmentState(msgspec.Struct, kw_only=True):
    """A ``SegmentWindow`` as numbers (what a worker publishes; see ``gateway.monitoring.fleet``)."""

    predicted: Any
    rejected: Any
    violations: Any
    """``(slices, reasons)``."""
    counts: Any
    """``(CHUNKS, slices * bins)`` live bin counts per chunk."""
    total: Any
    rows: Any
    """``(CHUNKS, slices)``."""
    total_rows: Any
    confidence: Any
    total_confidence: Any
    feedback: Any
    """``(CHUNKS, slices, 4)``: rows, correct, absolute and squared error sums."""
    feedback_total: Any
    feedback_rows: Any
    """``(CHUNKS,)`` feedback rows per chunk (all slices)."""
    current: int = 0
    feedback_current: int = 0


_ARRAYS = ("predicted", "rejected", "violations", "counts", "total", "rows", "total_rows", "confidence",
           "total_confidence", "feedback", "feedback_total", "feedback_rows")  # fmt: skip


class SegmentWindow:
    """The per-slice counts of one model version (see the module docstring)."""

    def __init__(self, slicing: Slicing, feedback_window: int = 10_000) -> None:
        self.slicing = slicing
        k, size = slicing.count, slicing.size
        self.predicted = np.zeros(k, dtype=np.int64)
        self.rejected = np.zeros(k, dtype=np.int64)
        self.violations = np.zeros((k, len(REASONS)), dtype=np.int64)
        self.counts = np.zeros((CHUNKS, k * size), dtype=np.int64)
        self.total = np.zeros(k * size, dtype=np.int64)
        self.rows = np.zeros((CHUNKS, k), dtype=np.int64)
        self.total_rows = np.zeros(k, dtype=np.int64)
        self.confidence = np.zeros((CHUNKS, k), dtype=np.float64)
        self.total_confidence = np.zeros(k, dtype=np.float64)
        self.feedback = np.zeros((CHUNKS, k, 4), dtype=np.float64)
        self.feedback_total = np.zeros((k, 4), dtype=np.float64)
        self.feedback_rows = np.zeros(CHUNKS, dtype=np.int64)
        self.current = 0
        self.feedback_current = 0
        self.rotations = 0
        """The drift window's ``rotations`` this window has followed."""
        self.chunk_feedback = max(1, feedback_window // CHUNKS)
        self._reason_index = {reason: i for i, reason in enumerate(REASONS)}

    # -- updates (the caller holds the metrics lock) --

    def follow(self, rotations: int) -> None:
        """Retire the chunks the drift window has retired since the last call."""
        steps = min(rotations - self.rotations, CHUNKS)
        self.rotations = rotations
        for _ in range(max(steps, 0)):
            self.current = c = (self.current + 1) % CHUNKS
            self.total -= self.counts[c]
            self.total_rows -= self.rows[c]
            self.total_confidence -= self.confidence[c]
            self.counts[c] = 0
            self.rows[c] = 0
            self.confidence[c] = 0.0

    def observe(
        self, columns: Mapping[str, Any], imputed: Mapping[str, Any], n: int, confidence: NDArray[Any] | None
    ) -> None:
        """Count a predicted batch (clean columns as the guards left them)."""
        s = self.slicing
        codes = s.codes(columns, imputed, n)
        grid = np.concatenate(s.binner.grids(columns, imputed), axis=1) if s.features else np.zeros((n, 0), np.intp)
        flat = (codes[:, :, None] * s.size + grid[:, None, :]).ravel()
        added = np.bincount(flat, minlength=s.count * s.size)
        self.counts[self.current] += added
        self.total += added
        rows = np.bincount(codes.ravel(), minlength=s.count)
        self.rows[self.current] += rows
        self.total_rows += rows
        self.predicted += rows
        if confidence is not None:
            weights = np.repeat(np.asarray(confidence, dtype=np.float64), codes.shape[1])
            sums = np.bincount(codes.ravel(), weights=weights, minlength=s.count)
            self.confidence[self.current] += sums
            self.total_confidence += sums

    def count_violations(
        self, columns: Mapping[str, Any], imputed: Mapping[str, Any], n: int, violations: Sequence[Violation], rejected: bool
    ) -> None:
        """Count a batch's violations (and, ``rejected``, its rows) in the slices of their rows.
        A row whose segment feature was itself at fault counts as ``_other``."""
        s = self.slicing
        codes = s.codes(columns, imputed, n)
        for j, name in enumerate(s.segment_names):
            bad = [v.row for v in violations if v.feature == name]
            if bad:
                codes[bad, j] = s.other[j]
        if rejected:
            self.rejected += np.bincount(codes.ravel(), minlength=s.count)
        if violations:
            rows = np.fromiter((v.row for v in violations), dtype=np.intp, count=len(violations))
            reasons = np.fromiter((self._reason_index[v.reason] for v in violations), dtype=np.intp, count=len(violations))
            for j in range(codes.shape[1]):
                np.add.at(self.violations, (codes[rows, j], reasons), 1)

    def add_feedback(
        self, packed: NDArray[Any], correct: NDArray[np.bool_] | None = None, errors: NDArray[np.float64] | None = None
    ) -> None:
        """Joined feedback: the predictions' packed slices, and per row whether the model was
        right (classifiers) or its error (regressors). Chunks turn over every
        ``feedback_window / CHUNKS`` rows, as the model's feedback window does."""
        s = self.slicing
        codes = s.unpack(packed)
        n = len(codes)
        done = 0
        while done < n:
            room = self.chunk_feedback - int(self.feedback_rows[self.feedback_current])
            if room <= 0:
                self.feedback_current = c = (self.feedback_current + 1) % CHUNKS
                self.feedback_total -= self.feedback[c]
                self.feedback[c] = 0.0
                self.feedback_rows[c] = 0
                continue
            part = slice(done, min(n, done + room))
            flat = codes[part].ravel()
            width = codes.shape[1]
            add = np.zeros((s.count, 4))
            add[:, 0] = np.bincount(flat, minlength=s.count)
            if correct is not None:
                add[:, 1] = np.bincount(flat, weights=np.repeat(correct[part].astype(np.float64), width), minlength=s.count)
            if errors is not None:
                e = errors[part]
                add[:, 2] = np.bincount(flat, weights=np.repeat(np.abs(e), width), minlength=s.count)
                add[:, 3] = np.bincount(flat, weights=np.repeat(e * e, width), minlength=s.count)
            self.feedback[self.feedback_current] += add
            self.feedback_total += add
            self.feedback_rows[self.feedback_current] += part.stop - part.start
            done = part.stop

    # -- state --

    def export(self) -> SegmentState:
        return SegmentState(
            **{name: getattr(self, name).copy() for name in _ARRAYS},
            current=self.current,
            feedback_current=self.feedback_current,
        )

    def check(self, state: SegmentState) -> None:
        for name in _ARRAYS:
            check_shape(f"segment {name}", getattr(state, name), getattr(self, name))

    def restore(self, state: SegmentState) -> None:
        self.check(state)
        for name in _ARRAYS:
            getattr(self, name)[...] = getattr(state, name)
        self.current = int(state.current) % CHUNKS
        self.feedback_current = int(state.feedback_current) % CHUNKS

    @staticmethod
    def merge(states: Sequence[SegmentState]) -> SegmentState:
        """Several workers' windows as one: the sums (only totals and counters mean anything)."""
        return SegmentState(**{name: sum(getattr(s, name) for s in states) for name in _ARRAYS})


def slice_report(slicing: Slicing, state: SegmentState, classification: bool) -> list[dict[str, Any]]:
    """Per slice, what ``/monitor`` shows and ``/metrics`` exports (see the module docstring)."""
    if not slicing.count:
        return []
    total = np.asarray(state.total)
    psi, held = slicing.table.psi(total)
    psi_list, held_list = psi.tolist(), held.tolist()
    window_rows = np.asarray(state.total_rows).tolist()
    confidence = np.asarray(state.total_confidence).tolist()
    fb = np.asarray(state.feedback_total, dtype=np.float64).tolist()
    violations = np.asarray(state.violations)
    predicted = np.asarray(state.predicted).tolist()
    rejected = np.asarray(state.rejected).tolist()
    per_slice = len(slicing.features)
    out: list[dict[str, Any]] = []
    for i, (segment, value) in enumerate(slicing.slices):
        rows = int(window_rows[i])
        entry: dict[str, Any] = {
            "segment": segment,
            "value": value,
            "predicted": int(predicted[i]),
            "rejected": int(rejected[i]),
            "violations": {REASONS[r]: int(c) for r, c in enumerate(violations[i].tolist()) if c},
            "window_rows": rows,
            "mean_confidence": None,
            "estimated_accuracy": None,
            "feedback_rows": int(fb[i][0]),
            "drift": {},
        }
        if classification and rows:
            entry["mean_confidence"] = confidence[i] / rows
            if rows >= MIN_ROWS:
                entry["estimated_accuracy"] = confidence[i] / rows
        if fb[i][0]:
            if classification:
                entry["accuracy"] = fb[i][1] / fb[i][0]
            else:
                entry["mae"] = fb[i][2] / fb[i][0]
                entry["rmse"] = float(np.sqrt(fb[i][3] / fb[i][0]))
        if rows >= MIN_ROWS:
            for j, feature in enumerate(slicing.features):
                k = i * per_slice + j
                if feature.name != segment and held_list[k]:
                    entry["drift"][feature.name] = psi_list[k]
        out.append(entry)
    return out
