"""Drift of live inputs and outputs against the training baselines in the spec.

Every feature (and every model output: predicted class, confidence, predicted value) is a
*segment* of one flat vector of bin counts. Numeric segments use the spec's quantile bin
edges, plus a bin for missing values; category segments one bin per known category, one
for unseen categories and one for missing; booleans false, true, missing.

The live window slides by size (rows) or by time: it is a ring of ``CHUNKS`` chunks of
bin counts plus a running total, so a batch costs one ``bincount`` over its cells and one
add of O(bins) into the current chunk and the total, and retiring the oldest chunk costs
one O(bins) subtraction. Nothing ever walks the window's rows.

Statistics (computed at scrape or ``/monitor`` time, from the totals):

- PSI (population stability index), the contract's ``driftgate_feature_drift``:
  ``sum((p - q) * ln(p / q))`` over the segment's bins, with ``p`` and ``q`` floored at
  ``PSI_FLOOR`` so that an empty bin stays finite. Rules of thumb: < 0.1 stable,
  0.1-0.25 moderate shift, > 0.25 major shift.
- KS (Kolmogorov-Smirnov distance on the binned CDF) for numbers, JS (Jensen-Shannon
  distance, base 2) for categories and booleans; both in [0, 1].
- unseen-category share and missing share.

The same formula, fed with the exported raw bin counts and baseline shares, is what the
fleet-wide Prometheus recording rule computes (``deploy/prometheus/rules.yml``).

With several workers each keeps its own window; ``DriftState`` is a window as numbers,
which a worker publishes (``gateway.monitoring.fleet``), and ``window_statistics`` computes
the statistics of the sum of several workers' windows: the fleet's window is every
worker's last ``window_rows`` rows (or every worker's last ``window_seconds``).
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from gateway.monitoring.instruments import check_shape
from gateway.spec import BooleanFeature, CategoryFeature, FeatureSpec, HistogramBaseline, NumericBaseline
from gateway.table import MatrixColumns

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "CHUNKS",
    "MIN_ROWS",
    "PSI_FLOOR",
    "BatchBinner",
    "DriftState",
    "DriftWindow",
    "Segment",
    "SegmentTable",
    "estimate_accuracy",
    "psi",
    "window_statistics",
]

PSI_FLOOR = 1e-4
"""Shares are floored at 1e-4 before PSI: an empty bin then adds a bounded term (about
0.0009 per empty bin of 1% baseline share) instead of infinity."""

CHUNKS = 10
"""The window retires a tenth of itself at a time: the window's span is exact to 10%."""

MIN_ROWS = 100
"""Drift statistics are published once the window holds this many rows: PSI over ten bins
from fewer rows is mostly sampling noise (its expected value under no drift is about
(bins - 1) / rows, 0.09 at 100 rows)."""


def psi(live: NDArray[np.floating[Any]], base: NDArray[np.floating[Any]]) -> float:
    """PSI of two share vectors (each summing to 1), floored at ``PSI_FLOOR``."""
    p = np.maximum(live, PSI_FLOOR)
    q = np.maximum(base, PSI_FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


def _js_distance(live: NDArray[np.floating[Any]], base: NDArray[np.floating[Any]]) -> float:
    m = (live + base) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(live > 0, live * np.log2(live / m), 0.0).sum()
        kl_q = np.where(base > 0, base * np.log2(base / m), 0.0).sum()
    return float(math.sqrt(max((kl_p + kl_q) / 2, 0.0)))


def _ks(live: NDArray[np.floating[Any]], base: NDArray[np.floating[Any]]) -> float:
    lt, bt = live.sum(), base.sum()
    if lt == 0 or bt == 0:
        return 0.0
    return float(np.max(np.abs(np.cumsum(live) / lt - np.cumsum(base) / bt)))


class Segment:
    """One feature's (or output's) bins within the flat count vector.

    Attributes:
        name: feature name, or ``_class`` / ``_confidence`` / ``_prediction``.
        kind: ``numeric``, ``category`` or ``boolean``.
        offset, size: the segment's slice of the flat vector.
        labels: a printable name per bin (bounded: derived from the spec alone).
        baseline: training shares per bin (sums to 1).
        missing_bin / unseen_bin: index within the segment, or -1.
    """

    __slots__ = (
        "baseline",
        "edges",
        "edges_list",
        "kind",
        "labels",
        "missing_bin",
        "name",
        "offset",
        "size",
        "unseen_bin",
        "value_bins",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        offset: int,
        labels: list[str],
        counts: Sequence[float],
        *,
        edges: Sequence[float] = (),
        missing_bin: int = -1,
        unseen_bin: int = -1,
    ) -> None:
        self.name = name
        self.kind = kind
        self.offset = offset
        self.labels = labels
        self.size = len(labels)
        base = np.asarray(counts, dtype=np.float64)
        total = base.sum()
        self.baseline = base / total if total > 0 else np.full(self.size, 1.0 / self.size)
        self.edges = np.asarray(edges, dtype=np.float64)
        self.edges_list = list(map(float, edges))
        self.missing_bin = missing_bin
        self.unseen_bin = unseen_bin
        self.value_bins = self.size - (missing_bin >= 0) - (unseen_bin >= 0)

    def bin_batch(self, values: NDArray[Any]) -> NDArray[np.intp]:
        """Segment-local bin of each value of an output segment in a batch (feature
        segments are binned all at once by ``BatchBinner``)."""
        if self.kind == "histogram":  # clamp into the recorded range
            return np.clip(np.searchsorted(self.edges, values, side="right") - 1, 0, self.size - 1)
        return values.astype(np.intp, copy=False)  # class indices

    def bin_one(self, value: Any, missing: bool) -> int:
        """Segment-local bin of one value (the one-row path: no numpy)."""
        if missing and self.missing_bin >= 0:
            return self.missing_bin
        if self.kind == "numeric":
            return bisect.bisect_right(self.edges_list, value)
        if self.kind == "histogram":
            return min(max(bisect.bisect_right(self.edges_list, value) - 1, 0), self.size - 1)
        if self.kind == "category":
            return self.unseen_bin if value < 0 else int(value)
        return int(value)

    def stats(self, live_counts: NDArray[np.int64]) -> dict[str, float]:
        total = float(live_counts.sum())
        live = live_counts / total
        out = {"psi": psi(live, self.baseline)}
        if self.kind in ("numeric", "histogram"):
            out["ks"] = _ks(live_counts[: self.value_bins].astype(np.float64), self.baseline[: self.value_bins])
        else:
            out["js"] = _js_distance(live, self.baseline)
        if self.unseen_bin >= 0:
            out["unseen_share"] = float(live[self.unseen_bin])
        if self.missing_bin >= 0:
            out["missing_share"] = float(live[self.missing_bin])
        return out


def _histogram_segment(name: str, offset: int, hist: HistogramBaseline) -> Segment:
    edges = list(hist.edges)
    labels = [f"[{a:g},{b:g})" for a, b in itertools.pairwise(edges)]
    return Segment(name, "histogram", offset, labels, hist.counts, edges=edges)


def build_segments(spec: FeatureSpec) -> list[Segment]:
    """The segments of a spec: every feature with a baseline, then the outputs."""
    segments: list[Segment] = []
    offset = 0

    def add(segment: Segment) -> None:
        nonlocal offset
        segments.append(segment)
        offset += segment.size

    for f in spec.features:
        b = f.baseline
        if b is None:
            continue
        if isinstance(f, CategoryFeature):
            labels = [*f.categories, "_unseen", "_missing"]
            add(
                Segment(
                    f.name,
                    "category",
                    offset,
                    labels,
                    [*b.counts, 0, b.missing],
                    unseen_bin=len(f.categories),
                    missing_bin=len(f.categories) + 1,
                )
            )
        elif isinstance(f, BooleanFeature):
            add(
                Segment(f.name, "boolean", offset, ["false", "true", "_missing"], [*b.counts, b.missing], missing_bin=2)
            )
        else:
            assert isinstance(b, NumericBaseline)  # numbers, integers: quantile edges
            edges = list(b.edges)
            bounds = ["-inf", *(f"{e:g}" for e in edges)]
            labels = [f"[{lo},{hi})" for lo, hi in zip(bounds, [*(f"{e:g}" for e in edges), "inf"], strict=True)]
            add(
                Segment(
                    f.name,
                    "numeric",
                    offset,
                    [*labels, "_missing"],
                    [*b.counts, b.missing],
                    edges=edges,
                    missing_bin=len(edges) + 1,
                )
            )
    out = spec.output
    if out is not None and out.baseline is not None:
        if out.task == "classification" and out.baseline.class_counts is not None:
            add(Segment("_class", "class", offset, list(out.labels), out.baseline.class_counts))
        if out.baseline.confidence is not None:
            add(_histogram_segment("_confidence", offset, out.baseline.confidence))
        if out.baseline.values is not None:
            add(_histogram_segment("_prediction", offset, out.baseline.values))
    return segments


class BatchBinner:
    """Bins every feature segment of a batch at once: the numeric ones with a single
    broadcast comparison against a matrix of their edges (padded with +inf), the
    categorical and boolean ones with a single remap, so the work per batch is a handful
    of numpy calls whatever the number of features."""

    def __init__(self, segments: list[Segment]) -> None:
        numeric = [s for s in segments if s.kind == "numeric"]
        coded = [s for s in segments if s.kind in ("category", "boolean")]
        self.numeric = [s.name for s in numeric]
        width = max((len(s.edges) for s in numeric), default=0)
        self.edges = np.full((len(numeric), max(width, 1)), np.inf)
        for j, s in enumerate(numeric):
            self.edges[j, : len(s.edges)] = s.edges
        self.numeric_offsets = np.array([s.offset for s in numeric], dtype=np.intp)
        self.numeric_missing = {s.name: (j, s.missing_bin) for j, s in enumerate(numeric)}
        self.coded = [s.name for s in coded]
        self.coded_offsets = np.array([s.offset for s in coded], dtype=np.intp)
        self.coded_unseen = np.array([max(s.unseen_bin, 0) for s in coded], dtype=np.intp)
        self.coded_missing = {s.name: (j, s.missing_bin) for j, s in enumerate(coded)}
        self._matrix_index: Mapping[str, int] | None = None
        self._bin_type = np.uint8 if width < 256 else np.intp
        self._edge_columns = [np.ascontiguousarray(self.edges[:, k]) for k in range(self.edges.shape[1])]

    def _numeric_values(self, columns: Mapping[str, Any]) -> NDArray[np.float64]:
        """The numeric features' cells as one (rows, features) float64 block: the batch's
        own matrix when it came as one in this order, else the columns stacked."""
        if type(columns) is MatrixColumns and (
            columns.index is self._matrix_index or list(columns.index) == self.numeric
        ):
            self._matrix_index = columns.index
            return columns.matrix
        return np.stack([np.asarray(columns[name], dtype=np.float64) for name in self.numeric], axis=1)

    def flat_bins(self, columns: Mapping[str, Any], imputed: Mapping[str, Any]) -> list[NDArray[np.intp]]:
        """Flat bin indices (segment offset + bin) of every feature cell of the batch."""
        return [grid.ravel() for grid in self.grids(columns, imputed)]

    def grids(self, columns: Mapping[str, Any], imputed: Mapping[str, Any]) -> list[NDArray[Any]]:
        """The flat bin index of every cell, as ``(rows, features)`` blocks: the numeric
        features' (in ``numeric`` order), then the categories' and booleans' (``coded``)."""
        parts: list[NDArray[Any]] = []
        if self.numeric:
            values = self._numeric_values(columns)
            # one comparison per edge over the whole (rows, features) block, counted in
            # uint8 when there are under 256 edges: ~4x faster than one broadcast (rows, features,
            # edges) comparison summed over its last axis (512 x 30 x 11: 110 vs 500 us)
            bins = np.zeros(values.shape, dtype=self._bin_type)
            above = np.empty(values.shape, dtype=np.bool_)
            for edge in self._edge_columns:
                np.greater_equal(values, edge, out=above)
                np.add(bins, above, out=bins, casting="unsafe")
            for name, mask in imputed.items():
                where = self.numeric_missing.get(name)
                if where is not None:
                    bins[np.asarray(mask, dtype=np.bool_), where[0]] = where[1]
            parts.append(bins + self.numeric_offsets)
        if self.coded:
            codes = np.stack([np.asarray(columns[name]).astype(np.intp, copy=False) for name in self.coded], axis=1)
            bins = np.where(codes < 0, self.coded_unseen, codes)
            for name, mask in imputed.items():
                where = self.coded_missing.get(name)
                if where is not None:
                    bins[np.asarray(mask, dtype=np.bool_), where[0]] = where[1]
            parts.append(bins + self.coded_offsets)
        return parts


def _take(columns: Mapping[str, Any], part: slice) -> Mapping[str, Any]:
    if type(columns) is MatrixColumns:
        return MatrixColumns(columns.matrix[part], columns.index)
    return {name: col[part] if not isinstance(col, bool) else col for name, col in columns.items()}


def _outs(part: slice, *arrays: Any) -> tuple[Any, ...]:
    return tuple(None if a is None else a[part] for a in arrays)


class DriftState(msgspec.Struct, kw_only=True):
    """A ``DriftWindow`` as numbers: what a worker publishes, and what a restarted worker
    continues from. The arrays are int64 (counts) and float64 (confidence sums)."""

    counts: Any
    """``(CHUNKS, bins)`` live bin counts per chunk."""
    rows: Any
    """``(CHUNKS,)`` rows per chunk."""
    confidence_sum: Any
    """``(CHUNKS,)`` top-class probability sum per chunk."""
    current: int
    total: Any
    """``(bins,)`` the chunks' sum: the window."""
    total_rows: int
    total_confidence: float
    slice_elapsed: float = 0.0
    """Time mode: seconds since the current chunk's slice began, when exported."""


class SegmentTable:
    """The statistics of every segment of a window at once: one numpy call per statistic
    over the flat count vector (``np.add.reduceat`` over the segments' slices), whatever
    the number of features, instead of a handful of calls per segment. Built once per
    window layout; ``compute`` costs about 20 us for a 30-feature model (``/metrics`` reads
    it for every served model version at every scrape)."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = list(segments)
        self.names = [s.name for s in self.segments]
        self.starts = np.asarray([s.offset for s in self.segments], dtype=np.intp)
        sizes = [s.size for s in self.segments]
        self.owner = np.repeat(np.arange(len(sizes)), sizes)
        """Segment index of every bin."""
        base = np.concatenate([s.baseline for s in self.segments]) if self.segments else np.zeros(0)
        self.base = base
        self.base_floored = np.maximum(base, PSI_FLOOR)
        numeric = np.asarray([s.kind in ("numeric", "histogram") for s in self.segments], dtype=np.bool_)
        self.numeric = numeric
        value_bin = (
            np.concatenate([np.arange(s.size) < s.value_bins for s in self.segments])
            if self.segments
            else np.zeros(0, dtype=np.bool_)
        )
        self.ks_mask = value_bin & numeric[self.owner] if self.segments else value_bin
        """Bins KS runs over: the value bins (not missing or unseen) of numeric segments."""
        self.base_values = np.where(self.ks_mask, base, 0.0)
        self.base_value_sums = self._sums(self.base_values)
        self.base_cdf = self._cumsum(self.base_values)
        self.unseen = np.asarray([s.offset + s.unseen_bin if s.unseen_bin >= 0 else -1 for s in self.segments])
        self.missing = np.asarray([s.offset + s.missing_bin if s.missing_bin >= 0 else -1 for s in self.segments])
        with np.errstate(divide="ignore", invalid="ignore"):
            self.base_log2 = np.where(base > 0, np.log2(base), 0.0)

    def _sums(self, flat: NDArray[Any]) -> NDArray[np.float64]:
        if not len(self.starts):
            return np.zeros(0)
        sums: NDArray[np.float64] = np.add.reduceat(flat, self.starts)
        return sums

    def _cumsum(self, flat: NDArray[Any]) -> NDArray[np.float64]:
        """The running sum within each segment."""
        running = np.cumsum(flat, dtype=np.float64)
        before = running[self.starts] - flat[self.starts]  # the running sum where each segment starts
        within: NDArray[np.float64] = running - before[self.owner]
        return within

    def psi(self, total: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """PSI of every segment, and which segments hold any row (the others have none)."""
        counts = self._sums(total)
        held = counts > 0
        live = total / np.where(held, counts, 1.0)[self.owner]
        p = np.maximum(live, PSI_FLOOR)
        q = self.base_floored
        return self._sums((p - q) * np.log(p / q)), held

    def compute(self, total: NDArray[np.int64], total_rows: int) -> dict[str, dict[str, float]]:
        """Segment name -> its statistics (``Segment.stats``); empty below ``MIN_ROWS``."""
        if total_rows < MIN_ROWS or not self.segments:
            return {}
        psi_values, held = self.psi(total)
        counts = self._sums(total)
        live = total / np.where(held, counts, 1.0)[self.owner]
        # KS on the binned CDF of the value bins (numeric and output histograms)
        live_values = np.where(self.ks_mask, total, 0).astype(np.float64)
        live_sums = self._sums(live_values)
        gap = np.abs(
            self._cumsum(live_values) / np.where(live_sums > 0, live_sums, 1.0)[self.owner]
            - self.base_cdf / np.where(self.base_value_sums > 0, self.base_value_sums, 1.0)[self.owner]
        )
        ks = np.maximum.reduceat(np.where(self.ks_mask, gap, 0.0), self.starts)
        ks = np.where((live_sums > 0) & (self.base_value_sums > 0), ks, 0.0)
        # JS distance (base 2) for categories, booleans and classes
        m = (live + self.base) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            log_m = np.log2(m)
            kl_p = self._sums(np.where(live > 0, live * (np.log2(live) - log_m), 0.0))
            kl_q = self._sums(np.where(self.base > 0, self.base * (self.base_log2 - log_m), 0.0))
        js = np.sqrt(np.maximum((kl_p + kl_q) / 2, 0.0))
        out: dict[str, dict[str, float]] = {}
        psi_list, ks_list, js_list = psi_values.tolist(), ks.tolist(), js.tolist()
        for i, name in enumerate(self.names):
            if not held[i]:
                continue  # no row in this segment (an output the model does not give)
            entry = {"psi": psi_list[i]}
            if self.numeric[i]:
                entry["ks"] = ks_list[i]
            else:
                entry["js"] = js_list[i]
            if self.unseen[i] >= 0:
                entry["unseen_share"] = float(live[self.unseen[i]])
            if self.missing[i] >= 0:
                entry["missing_share"] = float(live[self.missing[i]])
            out[name] = entry
        return out


def window_statistics(
    segments: Sequence[Segment], total: NDArray[np.int64], total_rows: int
) -> dict[str, dict[str, float]]:
    """Segment name -> its statistics of a window's ``total`` bin counts; empty below ``MIN_ROWS``."""
    if total_rows < MIN_ROWS:
        return {}
    return SegmentTable(segments).compute(total, total_rows)


def estimate_accuracy(total_rows: int, total_confidence: float, has_confidence: bool) -> float | None:
    """Confidence-based performance estimate (as NannyML's CBPE): for a calibrated
    classifier, the expected accuracy of a window is its mean top-class probability. With
    a version's held-out calibration, the window sums the calibrated chances instead
    (``DriftWindow.observe``'s ``expected``), so the mean is calibrated too."""
    if total_rows < MIN_ROWS or not has_confidence and total_confidence == 0:
        return None
    return total_confidence / total_rows if total_rows else None


class DriftWindow:
    """The sliding window of one model version (see the module docstring).

    Args:
        spec: the served spec (its baselines define the bins).
        window_rows: rows in the window (size mode), or None.
        window_seconds: seconds the window spans (time mode), or None. One of the two.
        clock: seconds, monotonic (injected for tests).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        window_rows: int | None = 10_000,
        window_seconds: float | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        if (window_rows is None) == (window_seconds is None):
            raise ValueError("give exactly one of window_rows and window_seconds")
        self.segments = build_segments(spec)
        self.by_name = {s.name: s for s in self.segments}
        self.size = sum(s.size for s in self.segments)
        self.window_rows = window_rows
        self.window_seconds = window_seconds
        self.clock = clock
        self.counts = np.zeros((CHUNKS, self.size), dtype=np.int64)
        self.rows = np.zeros(CHUNKS, dtype=np.int64)
        self.confidence_sum = np.zeros(CHUNKS, dtype=np.float64)
        self.total = np.zeros(self.size, dtype=np.int64)
        self.total_rows = 0
        self.total_confidence = 0.0
        self.current = 0
        self.rotations = 0
        """Chunks retired so far (the segment window follows them: ``gateway.monitoring.segments``)."""
        self.started = clock()
        self._chunk_rows = max(1, (window_rows or 0) // CHUNKS)
        self._chunk_seconds = (window_seconds or 0.0) / CHUNKS
        self._features = [s for s in self.segments if not s.name.startswith("_")]
        self._outputs = [s for s in self.segments if s.name.startswith("_")]
        self._batch = BatchBinner(self._features)
        self.table = SegmentTable(self.segments)

    # -- updates --

    def _advance(self) -> None:
        """Retire chunks that are full (size mode) or whose time slice is over (time mode)."""
        if self.window_seconds is None:
            if self.rows[self.current] >= self._chunk_rows:
                self._rotate()
            return
        now = self.clock()
        elapsed = int((now - self.started) // self._chunk_seconds) if self._chunk_seconds > 0 else 0
        for _ in range(min(elapsed, CHUNKS)):
            self._rotate()
        if elapsed:
            # the current slice began at a multiple of the slice length, not "now"
            self.started += elapsed * self._chunk_seconds

    def catch_up(self) -> None:
        """Retire the time slices that are over (time mode; size mode retires as it fills)."""
        if self.window_seconds is not None:
            self._advance()

    def due(self) -> bool:
        """True when the current chunk's time slice is over (time mode)."""
        return self.window_seconds is not None and self.clock() - self.started >= self._chunk_seconds

    def _rotate(self) -> None:
        self.rotations += 1
        self.current = (self.current + 1) % CHUNKS
        c = self.current
        self.total -= self.counts[c]
        self.total_rows -= int(self.rows[c])
        self.total_confidence -= float(self.confidence_sum[c])
        self.counts[c] = 0
        self.rows[c] = 0
        self.confidence_sum[c] = 0.0

    def observe(
        self,
        columns: Mapping[str, Any],
        imputed: Mapping[str, Any],
        n: int,
        classes: NDArray[np.intp] | None = None,
        confidence: NDArray[np.float32] | None = None,
        values: NDArray[np.float32] | None = None,
        *,
        advance: bool = True,
        expected: NDArray[np.float64] | None = None,
    ) -> None:
        """Count a predicted batch: its clean feature columns (``gateway.guards.Checked``),
        which cells were imputed, and the model's outputs. ``expected`` is each row's
        calibrated chance of being right (``gateway.baseline.Calibration``): the accuracy
        estimate then sums it instead of the raw ``confidence``.

        In size mode a batch larger than the room left in the current chunk is split
        across chunks, so the window never holds more than its size (to a chunk). With
        ``advance=False`` a time-mode window counts into the current slice without first
        retiring old ones: for rows buffered while that slice was current.
        """
        if self.window_seconds is None:
            room = self._chunk_rows - int(self.rows[self.current])
            if room <= 0:
                self._rotate()
                room = self._chunk_rows
            if n > room:
                cut = slice(0, room)
                self._count(
                    _take(columns, cut), _take(imputed, cut), room, *_outs(cut, classes, confidence, values, expected)
                )
                rest = slice(room, n)
                more = _outs(rest, classes, confidence, values, expected)
                self.observe(_take(columns, rest), _take(imputed, rest), n - room, *more[:3], expected=more[3])
                return
        elif advance:
            self._advance()
        self._count(columns, imputed, n, classes, confidence, values, expected)

    def _count(
        self,
        columns: Mapping[str, Any],
        imputed: Mapping[str, Any],
        n: int,
        classes: NDArray[np.intp] | None,
        confidence: NDArray[np.float32] | None,
        values: NDArray[np.float32] | None,
        expected: NDArray[np.float64] | None = None,
    ) -> None:
        outputs = {"_class": classes, "_confidence": confidence, "_prediction": values}
        if n == 1 and type(next(iter(columns.values()), None)) is list:
            index = []
            for s in self.segments:
                if s.name.startswith("_"):
                    out = outputs.get(s.name)
                    if out is None:
                        continue
                    index.append(s.offset + s.bin_one(float(out[0]), False))
                else:
                    missing = s.name in imputed
                    index.append(s.offset + s.bin_one(columns[s.name][0], missing))
            idx = np.asarray(index, dtype=np.intp)
            self.counts[self.current, idx] += 1
            self.total[idx] += 1
        else:
            parts = self._batch.flat_bins(columns, imputed)
            for s in self._outputs:
                out = outputs.get(s.name)
                if out is not None:
                    parts.append(s.offset + s.bin_batch(np.asarray(out)))
            counts = (
                np.bincount(np.concatenate(parts), minlength=self.size)
                if parts
                else np.zeros(self.size, dtype=np.int64)
            )
            self.counts[self.current] += counts
            self.total += counts
        self.rows[self.current] += n
        self.total_rows += n
        if confidence is not None:
            added = float((confidence if expected is None else expected).sum())
            self.confidence_sum[self.current] += added
            self.total_confidence += added

    # -- reads --

    def live_counts(self, segment: Segment) -> NDArray[np.int64]:
        return self.total[segment.offset : segment.offset + segment.size]

    def statistics(self) -> dict[str, dict[str, float]]:
        """Segment name -> its statistics; empty until the window holds ``MIN_ROWS`` rows."""
        self.catch_up()
        return self.table.compute(self.total, self.total_rows)

    def estimated_accuracy(self) -> float | None:
        """Confidence-based performance estimate (see ``estimate_accuracy``)."""
        return estimate_accuracy(self.total_rows, self.total_confidence, "_confidence" in self.by_name)

    # -- state: publishing, merging, taking over --

    def export(self) -> DriftState:
        """The window as numbers (copies; the caller holds the metrics lock)."""
        elapsed = self.clock() - self.started if self.window_seconds is not None else 0.0
        return DriftState(
            counts=self.counts.copy(),
            rows=self.rows.copy(),
            confidence_sum=self.confidence_sum.copy(),
            current=self.current,
            total=self.total.copy(),
            total_rows=self.total_rows,
            total_confidence=self.total_confidence,
            slice_elapsed=elapsed,
        )

    def check(self, state: DriftState) -> None:
        """Raise ``StateMismatchError`` unless ``state`` is a window of this layout."""
        for name in ("counts", "rows", "confidence_sum", "total"):
            check_shape(f"drift window {name}", getattr(state, name), getattr(self, name))

    def restore(self, state: DriftState) -> None:
        """Continue from ``state`` (a restarted worker takes over its predecessor's window;
        ``age`` it by the seconds since it was exported). Raises ``StateMismatchError``,
        changing nothing, if ``state`` is another layout's."""
        self.check(state)
        self.counts[:] = state.counts
        self.rows[:] = state.rows
        self.confidence_sum[:] = state.confidence_sum
        self.current = int(state.current) % CHUNKS
        self.total[:] = state.total
        self.total_rows = int(state.total_rows)
        self.total_confidence = float(state.total_confidence)
        if self.window_seconds is not None:
            self.started = self.clock() - float(state.slice_elapsed)
            self.catch_up()

    def age(self, seconds: float) -> None:
        """Move a restored time window ``seconds`` on: it retires what has aged out since."""
        if self.window_seconds is not None and seconds > 0:
            self.started -= seconds
            self.catch_up()

    @staticmethod
    def merge(states: Sequence[DriftState]) -> DriftState:
        """Several workers' windows as one: the sums. Only the totals mean anything (the
        workers' chunks do not line up); a merged state is read, never slid."""
        return DriftState(
            counts=sum(s.counts for s in states),
            rows=sum(s.rows for s in states),
            confidence_sum=sum(s.confidence_sum for s in states),
            current=0,
            total=sum(s.total for s in states),
            total_rows=sum(int(s.total_rows) for s in states),
            total_confidence=sum(float(s.total_confidence) for s in states),
        )
