"""The monitoring state of every served model version, updated in O(1) calls per batch.

Every per-model count lives in an instrument (``gateway.monitoring.instruments``, and the
drift and feedback windows) owned by a ``ModelMetrics`` (one per served model version); a
batch of 64 rows updates a histogram with one ``searchsorted`` and one ``bincount``, not
64 ``observe`` calls. ``GatewayCollector`` holds the served versions' metrics;
``gateway.monitoring.exposition`` writes them as ``/metrics`` text at scrape time, off the
event loop.

Labels come only from bounded sets: model and version names that are registered, the
spec's feature names, the closed set of reasons, outcomes and stages. Anything a client
can make up (an unknown field, an unknown model) is folded into one fixed label value.

Rule: a NaN or infinite observation is counted in ``driftgate_nonfinite_observations_total``
and never enters a histogram's sum, so one bad value cannot poison the series.

Several workers (``driftgate serve --workers N``): every reader (``/metrics``, ``/monitor``)
reads a ``MetricsView``, the sum of this worker's live state and the state every other
worker last published (``MetricsState``, see ``gateway.monitoring.fleet``). Sums of
cumulative counts are what Prometheus expects of one target; each count comes from
exactly one worker, so no row is counted twice, and a published state only ever grows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.baseline import label_reference, monitored_spec
from gateway.monitoring.drift import MIN_ROWS, DriftState, DriftWindow, estimate_accuracy, psi
from gateway.monitoring.feedback import FeedbackState, FeedbackWindow
from gateway.monitoring.history import History
from gateway.monitoring.instruments import (
    BatchHistogram,
    CountArray,
    HistogramSet,
    HistogramState,
    LabelledCounts,
    StateMismatchError,
)
from gateway.monitoring.segments import SegmentState, SegmentWindow, Slicing
from gateway.table import MatrixColumns
from gateway.violations import REASONS

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from prometheus_client.metrics_core import Metric

    from gateway.baseline import Baseline
    from gateway.spec import FeatureSpec
    from gateway.violations import Violation

__all__ = [
    "CONFIDENCE_BUCKETS",
    "LATENCY_BUCKETS",
    "STAGES",
    "UNKNOWN_FEATURE_LABEL",
    "BatchHistogram",
    "GatewayCollector",
    "HistogramState",
    "MetricsState",
    "MetricsView",
    "ModelMetrics",
    "PredictedBatch",
    "label_drift",
    "merge_states",
]

log = logging.getLogger("driftgate.metrics")

CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Top-class probability buckets when the spec records no confidence baseline: tenths,
the edges the bundled examples record their training-side confidence with."""

LATENCY_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
"""Seconds per stage: our stages take microseconds, so the buckets start at 10 us rather
than prometheus_client's default 5 ms."""

STAGES = ("validate", "transform", "infer", "monitor")
LATENCY_BOUNDS = np.asarray(LATENCY_BUCKETS, dtype=np.float64)
FEEDBACK_OUTCOMES = ("matched", "unknown_id", "expired", "duplicate", "invalid")
PENDING_REQUESTS = 512
PENDING_ROWS = 512
"""Predicted requests are folded into the histograms and drift windows together, once 512
requests or 512 rows are waiting (or sooner, when anything reads the metrics): a numpy call
costs about the same on 1 row as on 512, so batching the bookkeeping across requests is
what keeps monitoring cheap per row (at 64 requests a fold still cost about 5 us of every
one-row request)."""
OUTCOMES = ("predicted", "rejected")
MARKS = ("flagged", "clipped", "review")
SHADOW_OUTCOMES = ("compared", "agreed", "rejected", "dropped", "failed")
"""A shadow candidate's rows by outcome (see ``gateway.shadow``)."""
UNKNOWN_FEATURE_LABEL = "_unknown"
"""The ``feature`` label of ``unknown_feature`` violations: the field's own name is
chosen by the client, so it must not become a label value."""


class PredictedBatch(msgspec.Struct, kw_only=True, gc=False):
    """What ``ModelMetrics.count_predicted`` counts of one predicted request (built by
    ``gateway.service.complete``)."""

    rows: int
    violations: Any
    """A sequence of ``Violation``: violations of the rows that were predicted anyway (flagged, clipped, imputed)."""
    flagged: int = 0
    clipped: int = 0
    review: int = 0
    """Rows below the spec's review threshold."""
    columns: Any
    """The clean feature columns (``gateway.guards.Checked.columns``)."""
    imputed: Any
    """Which cells were imputed, by feature (``gateway.guards.Checked.imputed``)."""
    probabilities: Any = None
    """A classifier's ``(rows, classes)`` float32 probabilities."""
    values: Any = None
    """A regressor's ``(rows,)`` float32 predictions."""


class MetricsState(msgspec.Struct, kw_only=True):
    """Everything a ``ModelMetrics`` has counted, as numbers, one field per instrument:
    what one worker publishes, what a restarted worker continues from, and
    (``merge_states``) the sum of several."""

    rows: dict[str, int]
    """Rows by outcome (``predicted``, ``rejected``)."""
    marks: dict[str, int]
    """Predicted rows flagged, clipped and sent for review."""
    violations: Any
    """``(features + 1, reasons)`` int64; the last row is ``unknown_feature``."""
    class_counts: Any
    confidence: HistogramState
    margin: HistogramState
    entropy: HistogramState
    values: HistogramState
    stages: dict[str, HistogramState]
    feedback_counts: dict[str, int]
    drift: DriftState
    feedback: FeedbackState
    segments: SegmentState
    shadow: dict[str, int]
    """As a rollout's shadow candidate: its rows by outcome (``SHADOW_OUTCOMES``)."""
    paired_primary: FeedbackState
    """As a shadow candidate: the primary's online metric on the rows both predicted."""
    paired_candidate: FeedbackState
    """As a shadow candidate: its own online metric on those same rows."""


INSTRUMENTS: dict[str, Any] = {
    "rows": LabelledCounts,
    "marks": LabelledCounts,
    "violations": CountArray,
    "class_counts": CountArray,
    "confidence": BatchHistogram,
    "margin": BatchHistogram,
    "entropy": BatchHistogram,
    "values": BatchHistogram,
    "stages": HistogramSet,
    "feedback_counts": LabelledCounts,
    "drift": DriftWindow,
    "feedback": FeedbackWindow,
    "segments": SegmentWindow,
    "shadow": LabelledCounts,
    "paired_primary": FeedbackWindow,
    "paired_candidate": FeedbackWindow,
}
"""The instrument class of every ``MetricsState`` field: ``ModelMetrics`` holds one of each
under the field's name, and exports, restores and merges them all by this table."""
if set(INSTRUMENTS) != set(MetricsState.__struct_fields__):  # pragma: no cover - caught at import
    raise RuntimeError("every MetricsState field needs its instrument in INSTRUMENTS, and only those")


def merge_states(states: Sequence[MetricsState]) -> MetricsState:
    """The sum of several workers' states of one model version (a view for reading: the
    drift and feedback windows are summed totals, see ``DriftWindow.merge``)."""
    if len(states) == 1:
        return states[0]
    return MetricsState(**{name: kind.merge([getattr(s, name) for s in states]) for name, kind in INSTRUMENTS.items()})


class ModelMetrics:
    """Counters of one model version. Updated by ``gateway.service``; read at scrape."""

    def __init__(
        self,
        spec: FeatureSpec,
        model: str,
        version: int,
        window_rows: int | None = 10_000,
        window_seconds: float | None = None,
        feedback_window: int = 10_000,
        fleet: Any = None,
        baseline: Baseline | None = None,
        reviews: Any = None,
    ) -> None:
        self.label_reference = label_reference(spec, baseline)
        """What feedback truths are compared with (label drift), or None."""
        self.offline: dict[str, float] = dict(baseline.metrics) if baseline is not None else {}
        """The version's figures on held-out rows at registration (``register --data``)."""
        self.calibration = baseline.calibration if baseline is not None else None
        spec = monitored_spec(spec, baseline)
        self.model = model
        self.version = str(version)
        self.features = list(spec.feature_names)
        self._feature_index = {name: i for i, name in enumerate(self.features)}
        self._reason_index = {reason: i for i, reason in enumerate(REASONS)}
        self.lock = threading.Lock()
        self.classification = spec.output is not None and spec.output.task == "classification"
        self.labels = list(spec.output.labels) if spec.output is not None else []
        # the instruments (``INSTRUMENTS``)
        self.rows = LabelledCounts("rows", OUTCOMES)
        self.marks = LabelledCounts("marks", MARKS)
        # one extra feature row for unknown_feature violations
        self.violations = CountArray("violations", (len(self.features) + 1, len(REASONS)))
        self.class_counts = CountArray("class counts", (len(self.labels),))
        self.confidence = BatchHistogram(_confidence_bounds(spec))
        self.margin = BatchHistogram(CONFIDENCE_BUCKETS)
        self.entropy = BatchHistogram(CONFIDENCE_BUCKETS)
        self.values = BatchHistogram(_value_bounds(spec))
        self.stages = HistogramSet(STAGES, LATENCY_BUCKETS)
        self.feedback_counts = LabelledCounts("feedback outcomes", FEEDBACK_OUTCOMES)
        self.drift = DriftWindow(
            spec, window_rows=None if window_seconds else window_rows, window_seconds=window_seconds
        )
        self.feedback = FeedbackWindow(feedback_window, self.label_reference.bins if self.label_reference else 0)
        self.reviews = reviews
        """The server's review queue (``gateway.monitoring.reviews.ReviewQueue``), or None."""
        self.history = History()
        """One point a minute of this version's monitoring (``gateway.monitoring.history``)."""
        self.importance: Any = None
        """The version's ``FeatureImportance`` (``gateway.model_check.importance``), if known."""
        self.slicing = Slicing(spec, self.drift.segments)
        """The spec's segments (``gateway.monitoring.segments``): ``count`` 0 when it names none."""
        self.segments = SegmentWindow(self.slicing, feedback_window)
        self.shadow = LabelledCounts("shadow rows", SHADOW_OUTCOMES)
        self.paired_primary = FeedbackWindow(feedback_window)
        self.paired_candidate = FeedbackWindow(feedback_window)
        self.baseline_mean_confidence = _baseline_mean_confidence(spec)
        self._pending: list[PredictedBatch] = []
        self._pending_rows = 0
        self._pending_times: list[tuple[float, float, float, float]] = []
        self.exposition: Any = None
        """The scrape's cached text layout of this version (``gateway.monitoring.exposition``)."""
        self.rendered: Any = None
        """Its text as the last scrape wrote it, reused while nothing it exports changes."""
        self.fleet = fleet
        """With several workers, a ``gateway.monitoring.fleet.Fleet``: where the other workers'
        states are read, and this worker's predecessor's state is taken over from."""
        if fleet is not None:
            inherited = fleet.inherit(model, self.version)
            if inherited is not None:
                state, age = inherited
                try:
                    self.restore(state, age)
                except StateMismatchError as exc:
                    log.error(
                        "%s version %s: the previous worker's monitoring state does not fit this spec (%s); "
                        "its counts start from zero",
                        model,
                        self.version,
                        exc,
                    )

    def count_rejected(self, rejected_rows: int, violations: Sequence[Violation], checked: Any = None) -> None:
        """Count a refused batch (``checked``: its ``gateway.guards.Checked``, for the segments)."""
        with self.lock:
            self.rows.counts["rejected"] += rejected_rows
            self._count_violations(violations)
            if self.slicing.count and checked is not None:
                self.segments.count_violations(checked.columns, checked.imputed, checked.n_rows, violations, rejected=True)

    def count_nonfinite_outputs(self, n_rows: int) -> None:
        """A batch the model answered with NaN or infinity: refused, kept out of the
        histograms, counted in ``driftgate_nonfinite_observations_total``."""
        with self.lock:
            self.confidence.nonfinite += n_rows

    def _count_violations(self, violations: Sequence[Violation]) -> None:
        unknown = len(self.features)
        counts = self.violations.counts
        for v in violations:
            counts[self._feature_index.get(v.feature, unknown), self._reason_index[v.reason]] += 1

    def count_predicted(self, batch: PredictedBatch) -> None:
        """Count a predicted batch. The scalar counts are added at once; the vectorised
        part (histograms, drift) is buffered and folded in for many requests together
        (see ``flush``), so numpy's cost per call is paid per ~512 rows, not per request."""
        with self.lock:
            self.rows.counts["predicted"] += batch.rows
            if batch.violations:
                self._count_violations(batch.violations)
                if self.slicing.count:
                    self.segments.count_violations(batch.columns, batch.imputed, batch.rows, batch.violations, rejected=False)
            if batch.flagged or batch.clipped or batch.review:
                marks = self.marks.counts
                marks["flagged"] += batch.flagged
                marks["clipped"] += batch.clipped
                marks["review"] += batch.review
            if self._pending and self.drift.due():
                self._flush_rows()  # buffered rows belong to the time slice that just ended
            self._pending.append(batch)
            self._pending_rows += batch.rows
            if len(self._pending) >= PENDING_REQUESTS or self._pending_rows >= PENDING_ROWS:
                self._flush_rows()

    def _observe_outputs(
        self,
        n_rows: int,
        columns: dict[str, Any],
        imputed: dict[str, Any],
        probabilities: NDArray[np.float32] | None,
        values: NDArray[np.float32] | None,
    ) -> None:
        """The vectorised part of counting a batch: histograms, class counts, drift (the
        buffered rows belong to the current time slice: the window does not advance)."""
        confidence = classes = None
        if probabilities is not None:
            confidence = probabilities.max(axis=1)
            classes = probabilities.argmax(axis=1)
            self.confidence.observe_many(confidence)
            self.class_counts.counts += np.bincount(classes, minlength=len(self.labels))
            if probabilities.shape[1] > 1:
                top2 = np.partition(probabilities, -2, axis=1)[:, -2:]
                self.margin.observe_many(top2[:, 1] - top2[:, 0])
                p = np.clip(probabilities, 1e-12, 1.0)
                self.entropy.observe_many(-(p * np.log(p)).sum(axis=1) / np.log(probabilities.shape[1]))
        if values is not None:
            self.values.observe_many(values)
        expected = self.calibration.apply(confidence) if self.calibration is not None and confidence is not None else None
        self.drift.observe(columns, imputed, n_rows, classes, confidence, values, advance=False, expected=expected)
        if self.slicing.count:
            self.segments.follow(self.drift.rotations)
            # per segment as for the whole: the calibrated chance of being right when there is one
            sure = confidence if expected is None else expected
            self.segments.observe(columns, {k: _mask(v, n_rows) for k, v in imputed.items()}, n_rows, sure)

    def _flush_rows(self) -> None:
        """Count the buffered predictions as one batch (caller holds the lock)."""
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        n = sum(p.rows for p in pending)
        first = pending[0]
        columns: Any
        if len(pending) == 1 and first.rows == 1 and type(next(iter(first.columns.values()), None)) is list:
            columns, imputed = first.columns, first.imputed  # a lone one-row request: the window's no-numpy lane
        elif all(type(p.columns) is MatrixColumns and p.columns.index is first.columns.index for p in pending):
            # all-numeric batches that came as matrices: one stack, column views on demand
            columns = MatrixColumns(np.concatenate([p.columns.matrix for p in pending]), first.columns.index)
            imputed = {}
        elif all(p.rows == 1 and type(next(iter(p.columns.values()), None)) is list for p in pending):
            # one-row requests: each column's values are Python scalars in one-item lists
            columns = {name: np.array([p.columns[name][0] for p in pending]) for name in first.columns}
            imputed = {
                name: np.array([name in p.imputed for p in pending], dtype=np.bool_)
                for name in {k for p in pending for k in p.imputed}
            }
        else:
            columns = {name: np.concatenate([np.asarray(p.columns[name]) for p in pending]) for name in first.columns}
            imputed = {
                name: np.concatenate([_mask(p.imputed.get(name), p.rows) for p in pending])
                for name in {k for p in pending for k in p.imputed}
            }
        probabilities = np.concatenate([p.probabilities for p in pending]) if first.probabilities is not None else None
        values = np.concatenate([p.values for p in pending]) if first.values is not None else None
        self._observe_outputs(n, columns, imputed, probabilities, values)

    def time_stages(self, validate: float, transform: float, infer: float, monitor: float) -> None:
        """Record one request's stage timings (buffered; flushed with the rows)."""
        with self.lock:
            self._pending_times.append((validate, transform, infer, monitor))
            if len(self._pending_times) >= PENDING_ROWS:
                self._flush_times()

    def time_stage(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.stages[stage].observe(seconds)

    def _flush_times(self) -> None:
        pending, self._pending_times = self._pending_times, []
        if pending:
            self.stages.observe_rows(pending)

    def flush(self) -> None:
        """Fold every buffered observation in. Every reader calls this (under the lock)
        first, so what is read always counts every row predicted so far, in the time
        slice it was predicted in, and a time window has retired what is too old."""
        self._flush_rows()
        self._flush_times()
        self.drift.catch_up()
        if self.slicing.count:
            self.segments.follow(self.drift.rotations)

    def export(self) -> MetricsState:
        """Everything counted so far, as numbers (copies). Takes the lock and flushes."""
        return self.snapshot()[0]

    def snapshot(self) -> tuple[MetricsState, tuple[int, ...] | None]:
        """``export``, and the ``fingerprint`` of exactly that state."""
        with self.lock:
            self.flush()
            state = MetricsState(**{name: getattr(self, name).export() for name in INSTRUMENTS})
            return state, self._fingerprint()

    def fingerprint(self) -> tuple[int, ...] | None:
        """Changes whenever anything this version has counted changes (every count comes
        with a row, a feedback outcome or a non-finite output): a reader may reuse what it
        made of a state with the same fingerprint (``snapshot``). None for a time window,
        which slides by itself."""
        with self.lock:
            return self._fingerprint()

    def _fingerprint(self) -> tuple[int, ...] | None:
        if self.drift.window_seconds is not None:
            return None
        return (
            self.rows.counts["predicted"],
            self.rows.counts["rejected"],
            sum(self.feedback_counts.counts.values()),
            sum(self.shadow.counts.values()),
            self.paired_candidate.rows,
            self.confidence.nonfinite,
            len(self._pending),
            len(self._pending_times),
        )

    def restore(self, state: MetricsState, age: float = 0.0) -> None:
        """Continue from ``state``, exported ``age`` seconds ago: a worker restarted in the
        same slot takes over its predecessor's counts, so the fleet's counters never go back.

        All or nothing: raises ``StateMismatchError``, changing nothing, if any instrument's
        state does not fit (another spec's layout)."""
        with self.lock:
            for name in INSTRUMENTS:
                getattr(self, name).check(getattr(state, name))
            for name in INSTRUMENTS:
                getattr(self, name).restore(getattr(state, name))
            self.drift.age(age)
            self.segments.rotations = self.drift.rotations

    def view(self) -> MetricsView:
        """What every reader reads: this worker's state, plus every other worker's last
        published state when there are several (at most one publication interval old).
        With several, this worker publishes first and reports what it published, so that a
        later reader at any other worker reads at least as much: counters never go back."""
        if self.fleet is None:
            return MetricsView(self, self.export())
        published = self.fleet.publish().models.get((self.model, self.version))
        own = published[0] if published is not None else self.export()  # else: unloaded meanwhile
        return MetricsView(self, merge_states([own, *self.fleet.states(self.model, self.version)]))


class MetricsView:
    """A read-only ``MetricsState`` of one model version with what is needed to read it:
    histograms with their bounds, drift statistics over the (summed) window, online metrics."""

    def __init__(self, metrics: ModelMetrics, state: MetricsState) -> None:
        m = metrics
        self.model, self.version, self.features, self.labels = m.model, m.version, m.features, m.labels
        self.classification = m.classification
        self.baseline_mean_confidence = m.baseline_mean_confidence
        self.state = state
        self.rows = state.rows
        self.flagged_rows, self.clipped_rows, self.review_rows = (
            state.marks["flagged"],
            state.marks["clipped"],
            state.marks["review"],
        )
        self.violations = np.asarray(state.violations)
        self.class_counts = np.asarray(state.class_counts)
        self.confidence = BatchHistogram.of(m.confidence.bounds, state.confidence)
        self.margin = BatchHistogram.of(m.margin.bounds, state.margin)
        self.entropy = BatchHistogram.of(m.entropy.bounds, state.entropy)
        self.values = BatchHistogram.of(m.values.bounds, state.values)
        self.stages = {stage: BatchHistogram.of(LATENCY_BOUNDS, hist) for stage, hist in state.stages.items()}
        self.feedback_counts = state.feedback_counts
        self.feedback = FeedbackWindow.of(state.feedback)
        self.drift = m.drift
        """The local window: its segments, sizes and mode (its counts are not the view's)."""
        self.drift_total = np.asarray(state.drift.total)
        self.drift_rows = int(state.drift.total_rows)
        self.statistics = m.drift.table.compute(self.drift_total, self.drift_rows)
        self.slicing = m.slicing
        self.segment_state = state.segments
        self.estimated_accuracy = estimate_accuracy(
            self.drift_rows, float(state.drift.total_confidence), "_confidence" in m.drift.by_name
        )
        self.offline = m.offline
        self.label_reference = m.label_reference
        self.label_drift = label_drift(m, state)

    def live_counts(self, segment: Any) -> NDArray[np.int64]:
        return self.drift_total[segment.offset : segment.offset + segment.size]


def label_drift(m: ModelMetrics, state: MetricsState) -> float | None:
    """PSI of the feedback window's truths against the label reference (the training
    target's distribution), once the window holds ``MIN_ROWS`` feedback rows; else None."""
    reference = m.label_reference
    counts = np.asarray(state.feedback.total, dtype=np.float64)[4:]
    total = float(counts.sum())
    if reference is None or total < MIN_ROWS:
        return None
    return psi(counts / total, reference.shares)


def _mask(mask: Any, n: int) -> NDArray[np.bool_]:
    """An imputed-cells mask of ``n`` rows (True from the one-row path, None: nothing imputed)."""
    if mask is None:
        return np.zeros(n, dtype=np.bool_)
    if mask is True:
        return np.ones(n, dtype=np.bool_)
    return np.asarray(mask, dtype=np.bool_)


def _baseline_mean_confidence(spec: FeatureSpec) -> float | None:
    baseline = spec.output.baseline if spec.output is not None else None
    if baseline is None or baseline.confidence is None or not sum(baseline.confidence.counts):
        return None
    edges = np.asarray(baseline.confidence.edges)
    mids = (edges[:-1] + edges[1:]) / 2
    counts = np.asarray(baseline.confidence.counts, dtype=np.float64)
    return float((mids * counts).sum() / counts.sum())


def _confidence_bounds(spec: FeatureSpec) -> Sequence[float]:
    """The upper edges of the spec's confidence baseline, so that live and training
    confidence line up bucket for bucket; tenths when the spec has none."""
    baseline = spec.output.baseline if spec.output is not None else None
    if baseline is not None and baseline.confidence is not None:
        return baseline.confidence.edges[1:]
    return CONFIDENCE_BUCKETS


def _value_bounds(spec: FeatureSpec) -> Sequence[float]:
    """Histogram bounds of a regressor's predictions: the training output baseline's edges
    when the spec has them, so live and training distributions line up bin for bin."""
    baseline = spec.output.baseline if spec.output is not None else None
    if baseline is not None and baseline.values is not None:
        return baseline.values.edges
    return (0.0,)


class GatewayCollector(Collector):
    """Yields every model's metrics at scrape time. Register once per ``CollectorRegistry``."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], ModelMetrics] = {}
        self._lock = threading.Lock()
        self.ready: Callable[[], bool] | None = None
        """Set by the gateway: whether the server is ready (exported as ``driftgate_ready``)."""
        self.failures: Callable[[], list[tuple[str, int]]] | None = None
        """Set by the gateway: versions that failed to load."""
        self.detail: dict[str, str] = {}
        """Exposition level by model name (``gateway.monitoring.exposition.parse_metrics_detail``)."""
        self.shared: Any = None
        """The exposition's shared build (``gateway.monitoring.exposition.SharedBuild``)."""
        self.reviews: Callable[[], dict[str, dict[str, int]]] | None = None
        """Set by the gateway: the review queue's counts per model (``ReviewQueue.stats``)."""
        self.stage_layouts: dict[tuple[str, int], list[str]] = {}
        self.rollouts: Callable[[], tuple[dict[tuple[str, str], int], list[tuple[str, str, str, str]]]] | None = None
        """Set by the gateway: rollbacks by model and reason, and (model, version, role,
        mode) of every rollout's primary and candidate (``gateway.rollout``)."""
        """The exposition's cached latency lines by model and level."""

    def attach(self, metrics: ModelMetrics) -> None:
        with self._lock:
            self._models = {**self._models, (metrics.model, metrics.version): metrics}

    def detach(self, model: str, version: int) -> None:
        with self._lock:
            self._models = {k: v for k, v in self._models.items() if k != (model, str(version))}

    def models(self) -> list[ModelMetrics]:
        """The served versions' metrics, in the order they were attached."""
        return list(self._models.values())

    def failed(self) -> list[tuple[str, str]]:
        """(model, version) of versions that failed to load and are not served."""
        served = self._models
        failures = self.failures() if self.failures is not None else []
        return [(name, str(version)) for name, version in failures if (name, str(version)) not in served]

    def collect(self) -> Iterator[Metric]:
        """The same families as ``/metrics`` (less ``driftgate_requests_total``, which has a
        collector of its own), through prometheus_client's generic path: for callers of
        ``generate_latest``. ``/metrics`` itself is ``gateway.monitoring.exposition``."""
        from prometheus_client.parser import text_string_to_metric_families

        from gateway.monitoring.exposition import render_text

        yield from text_string_to_metric_families(render_text(self, requests=None).decode())


def new_metrics_registry() -> tuple[CollectorRegistry, GatewayCollector]:
    """A fresh ``CollectorRegistry`` with driftgate's collector on it."""
    metrics_registry = CollectorRegistry(auto_describe=False)
    collector = GatewayCollector()
    metrics_registry.register(collector)
    return metrics_registry, collector
