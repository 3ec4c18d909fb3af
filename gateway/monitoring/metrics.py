"""Prometheus instruments of driftgate, updated in O(1) calls per batch.

Every per-model count lives in numpy arrays owned by a ``ModelMetrics`` (one per served
model version); a batch of 64 rows updates a histogram with one ``searchsorted`` and one
``bincount``, not 64 ``observe`` calls. ``GatewayCollector`` turns the arrays into metric
families at scrape time, on the ``CollectorRegistry`` passed in (never the global one).

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

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.monitoring.drift import PSI_FLOOR, DriftState, DriftWindow, estimate_accuracy, window_statistics
from gateway.monitoring.feedback import FeedbackState, FeedbackWindow
from gateway.table import MatrixColumns
from gateway.violations import REASONS

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from prometheus_client.metrics_core import Metric

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
    "merge_states",
]

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
UNKNOWN_FEATURE_LABEL = "_unknown"
"""The ``feature`` label of ``unknown_feature`` violations: the field's own name is
chosen by the client, so it must not become a label value."""


class BatchHistogram:
    """A Prometheus histogram updated a batch at a time (see the module docstring)."""

    __slots__ = ("bounds", "counts", "nonfinite", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # last bin: above every bound (+Inf)
        self.total = 0.0
        self.nonfinite = 0

    def observe_many(self, values: NDArray[np.floating]) -> None:
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

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = np.cumsum(self.counts).tolist()
        labels = [repr(float(b)) for b in self.bounds.tolist()] + ["+Inf"]
        return list(zip(labels, cumulative, strict=True))

    def export(self) -> HistogramState:
        return HistogramState(self.counts.copy(), self.total, self.nonfinite)

    def restore(self, state: HistogramState) -> None:
        if np.shape(state.counts) == self.counts.shape:
            self.counts[:] = state.counts
            self.total = float(state.total)
            self.nonfinite = int(state.nonfinite)

    @classmethod
    def of(cls, bounds: NDArray[np.float64], state: HistogramState) -> BatchHistogram:
        """A histogram with ``bounds`` holding ``state`` (to read a merged state)."""
        hist = cls.__new__(cls)
        hist.bounds = bounds
        hist.counts = np.asarray(state.counts, dtype=np.int64)
        hist.total = float(state.total)
        hist.nonfinite = int(state.nonfinite)
        return hist


class HistogramState(msgspec.Struct, array_like=True):
    counts: Any
    """int64 count per bucket, the last one above every bound."""
    total: float
    nonfinite: int


class MetricsState(msgspec.Struct, kw_only=True):
    """Everything a ``ModelMetrics`` has counted, as numbers: what one worker publishes,
    what a restarted worker continues from, and (``merge_states``) the sum of several."""

    rows: dict[str, int]
    flagged_rows: int
    clipped_rows: int
    review_rows: int
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


def merge_states(states: Sequence[MetricsState]) -> MetricsState:
    """The sum of several workers' states of one model version (a view for reading: the
    drift and feedback windows are summed totals, see ``DriftWindow.merged``)."""
    if len(states) == 1:
        return states[0]

    def hist(pick: Callable[[MetricsState], HistogramState]) -> HistogramState:
        parts = [pick(s) for s in states]
        return HistogramState(
            sum(p.counts for p in parts), sum(p.total for p in parts), sum(p.nonfinite for p in parts)
        )

    def counts(pick: Callable[[MetricsState], dict[str, int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in states:
            for key, value in pick(s).items():
                out[key] = out.get(key, 0) + value
        return out

    return MetricsState(
        rows=counts(lambda s: s.rows),
        flagged_rows=sum(s.flagged_rows for s in states),
        clipped_rows=sum(s.clipped_rows for s in states),
        review_rows=sum(s.review_rows for s in states),
        violations=sum(s.violations for s in states),
        class_counts=sum(s.class_counts for s in states),
        confidence=hist(lambda s: s.confidence),
        margin=hist(lambda s: s.margin),
        entropy=hist(lambda s: s.entropy),
        values=hist(lambda s: s.values),
        stages={stage: hist(lambda s, stage=stage: s.stages[stage]) for stage in states[0].stages},
        feedback_counts=counts(lambda s: s.feedback_counts),
        drift=DriftWindow.merged([s.drift for s in states]),
        feedback=FeedbackWindow.merged([s.feedback for s in states]),
    )


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
    ) -> None:
        self.model = model
        self.version = str(version)
        self.features = list(spec.feature_names)
        self._feature_index = {name: i for i, name in enumerate(self.features)}
        self._reason_index = {reason: i for i, reason in enumerate(REASONS)}
        self.lock = threading.Lock()
        self.rows = {outcome: 0 for outcome in OUTCOMES}
        self.flagged_rows = 0
        self.clipped_rows = 0
        self.review_rows = 0
        # one extra feature row for unknown_feature violations
        self.violations = np.zeros((len(self.features) + 1, len(REASONS)), dtype=np.int64)
        self.classification = spec.output is not None and spec.output.task == "classification"
        self.labels = list(spec.output.labels) if spec.output is not None else []
        self.confidence = BatchHistogram(_confidence_bounds(spec))
        self.margin = BatchHistogram(CONFIDENCE_BUCKETS)
        self.entropy = BatchHistogram(CONFIDENCE_BUCKETS)
        self.drift = DriftWindow(
            spec, window_rows=None if window_seconds else window_rows, window_seconds=window_seconds
        )
        self.class_counts = np.zeros(len(self.labels), dtype=np.int64)
        self.values = BatchHistogram(_value_bounds(spec))
        self.stages = {stage: BatchHistogram(LATENCY_BUCKETS) for stage in STAGES}
        self.feedback = FeedbackWindow(feedback_window)
        self.baseline_mean_confidence = _baseline_mean_confidence(spec)
        self.feedback_counts = {outcome: 0 for outcome in FEEDBACK_OUTCOMES}
        self._pending: list[tuple[int, Any, Any, dict[str, Any], dict[str, Any]]] = []
        self._pending_rows = 0
        self._pending_times: list[tuple[float, float, float, float]] = []
        self.fleet = fleet
        """With several workers, a ``gateway.monitoring.fleet.Fleet``: where the other workers'
        states are read, and this worker's predecessor's state is taken over from."""
        if fleet is not None:
            inherited = fleet.inherit(model, self.version)
            if inherited is not None:
                self.restore(*inherited)

    def count_rejected(self, rejected_rows: int, violations: Sequence[Violation]) -> None:
        with self.lock:
            self.rows["rejected"] += rejected_rows
            self._count_violations(violations)

    def count_nonfinite_outputs(self, n_rows: int) -> None:
        """A batch the model answered with NaN or infinity: refused, kept out of the
        histograms, counted in ``driftgate_nonfinite_observations_total``."""
        with self.lock:
            self.confidence.nonfinite += n_rows

    def _count_violations(self, violations: Sequence[Violation]) -> None:
        unknown = len(self.features)
        for v in violations:
            self.violations[self._feature_index.get(v.feature, unknown), self._reason_index[v.reason]] += 1

    def count_predicted(
        self,
        n_rows: int,
        violations: Sequence[Violation],
        flagged: int,
        clipped: int,
        confidence: NDArray[np.float32] | None,
        classes: NDArray[np.intp] | None,
        values: NDArray[np.float32] | None,
        review: int,
        columns: dict[str, Any],
        imputed: dict[str, Any],
        probabilities: NDArray[np.float32] | None = None,
    ) -> None:
        """Count a predicted batch. The scalar counts are added at once; the vectorised
        part (histograms, drift) is buffered and folded in for many requests together
        (see ``flush``), so numpy's cost per call is paid per ~512 rows, not per request."""
        with self.lock:
            self.rows["predicted"] += n_rows
            if violations:
                self._count_violations(violations)
            self.flagged_rows += flagged
            self.clipped_rows += clipped
            self.review_rows += review
            if self._pending and self.drift.due():
                self._flush_rows()  # buffered rows belong to the time slice that just ended
            self._pending.append((n_rows, probabilities, values, columns, imputed))
            self._pending_rows += n_rows
            if len(self._pending) >= PENDING_REQUESTS or self._pending_rows >= PENDING_ROWS:
                self._flush_rows()

    def _observe_outputs(
        self,
        n_rows: int,
        columns: dict[str, Any],
        imputed: dict[str, Any],
        probabilities: NDArray[np.float32] | None,
        values: NDArray[np.float32] | None,
        advance: bool = True,
    ) -> None:
        """The vectorised part of counting a batch: histograms, class counts, drift.
        ``advance=False`` for buffered rows: they belong to the current time slice."""
        confidence = classes = None
        if probabilities is not None:
            confidence = probabilities.max(axis=1)
            classes = probabilities.argmax(axis=1)
            self.confidence.observe_many(confidence)
            self.class_counts += np.bincount(classes, minlength=len(self.labels))
            if probabilities.shape[1] > 1:
                top2 = np.partition(probabilities, -2, axis=1)[:, -2:]
                self.margin.observe_many(top2[:, 1] - top2[:, 0])
                p = np.clip(probabilities, 1e-12, 1.0)
                self.entropy.observe_many(-(p * np.log(p)).sum(axis=1) / np.log(probabilities.shape[1]))
        if values is not None:
            self.values.observe_many(values)
        self.drift.observe(columns, imputed, n_rows, classes, confidence, values, advance=advance)

    def _flush_rows(self) -> None:
        """Count the buffered predictions as one batch (caller holds the lock)."""
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        n = sum(p[0] for p in pending)
        first = pending[0]
        if all(type(p[3]) is MatrixColumns and p[3].index is first[3].index for p in pending):
            # all-numeric batches that came as matrices: one stack, column views on demand
            columns = MatrixColumns(np.concatenate([p[3].matrix for p in pending]), first[3].index)
            imputed = {}
        elif all(p[0] == 1 and type(next(iter(p[3].values()), None)) is list for p in pending):
            # one-row requests: each column's values are Python scalars in one-item lists
            columns = {name: np.array([p[3][name][0] for p in pending]) for name in first[3]}
            imputed = {
                name: np.array([name in p[4] for p in pending], dtype=np.bool_)
                for name in {k for p in pending for k in p[4]}
            }
        else:
            columns = {name: np.concatenate([np.asarray(p[3][name]) for p in pending]) for name in first[3]}
            imputed = {
                name: np.concatenate([_mask(p[4].get(name), p[0]) for p in pending])
                for name in {k for p in pending for k in p[4]}
            }
        probabilities = np.concatenate([p[1] for p in pending]) if first[1] is not None else None
        values = np.concatenate([p[2] for p in pending]) if first[2] is not None else None
        self._observe_outputs(n, columns, imputed, probabilities, values, advance=False)

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
            times = np.asarray(pending, dtype=np.float64)
            for i, stage in enumerate(STAGES):
                self.stages[stage].observe_many(times[:, i])

    def flush(self) -> None:
        """Fold every buffered observation in. Every reader calls this (under the lock)
        first, so what is read always counts every row predicted so far, in the time
        slice it was predicted in, and a time window has retired what is too old."""
        self._flush_rows()
        self._flush_times()
        self.drift.catch_up()

    def export(self) -> MetricsState:
        """Everything counted so far, as numbers (copies). Takes the lock and flushes."""
        with self.lock:
            self.flush()
            return MetricsState(
                rows=dict(self.rows),
                flagged_rows=self.flagged_rows,
                clipped_rows=self.clipped_rows,
                review_rows=self.review_rows,
                violations=self.violations.copy(),
                class_counts=self.class_counts.copy(),
                confidence=self.confidence.export(),
                margin=self.margin.export(),
                entropy=self.entropy.export(),
                values=self.values.export(),
                stages={stage: hist.export() for stage, hist in self.stages.items()},
                feedback_counts=dict(self.feedback_counts),
                drift=self.drift.export(),
                feedback=self.feedback.export(),
            )

    def restore(self, state: MetricsState, age: float = 0.0) -> None:
        """Continue from ``state``, exported ``age`` seconds ago: a worker restarted in the
        same slot takes over its predecessor's counts, so the fleet's counters never go back."""
        with self.lock:
            for outcome in self.rows:
                self.rows[outcome] = int(state.rows.get(outcome, 0))
            self.flagged_rows = int(state.flagged_rows)
            self.clipped_rows = int(state.clipped_rows)
            self.review_rows = int(state.review_rows)
            if np.shape(state.violations) == self.violations.shape:
                self.violations[:] = state.violations
            if np.shape(state.class_counts) == self.class_counts.shape:
                self.class_counts[:] = state.class_counts
            self.confidence.restore(state.confidence)
            self.margin.restore(state.margin)
            self.entropy.restore(state.entropy)
            self.values.restore(state.values)
            for stage, hist in self.stages.items():
                if stage in state.stages:
                    hist.restore(state.stages[stage])
            for outcome in self.feedback_counts:
                self.feedback_counts[outcome] = int(state.feedback_counts.get(outcome, 0))
            self.drift.restore(state.drift, age)
            self.feedback.restore(state.feedback)

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
            state.flagged_rows,
            state.clipped_rows,
            state.review_rows,
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
        self.statistics = window_statistics(m.drift.segments, self.drift_total, self.drift_rows)
        self.estimated_accuracy = estimate_accuracy(
            self.drift_rows, float(state.drift.total_confidence), "_confidence" in m.drift.by_name
        )

    def live_counts(self, segment: Any) -> NDArray[np.int64]:
        return self.drift_total[segment.offset : segment.offset + segment.size]


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

    def attach(self, metrics: ModelMetrics) -> None:
        with self._lock:
            self._models = {**self._models, (metrics.model, metrics.version): metrics}

    def detach(self, model: str, version: int) -> None:
        with self._lock:
            self._models = {k: v for k, v in self._models.items() if k != (model, str(version))}

    def collect(self) -> Iterator[Metric]:
        models = list(self._models.values())
        rows = CounterMetricFamily(
            "driftgate_rows", "Rows received, by outcome.", labels=["model", "version", "outcome"]
        )
        marked = CounterMetricFamily(
            "driftgate_marked_rows",
            "Predicted rows that were flagged, clipped or sent for review.",
            labels=["model", "version", "mark"],
        )
        violations = CounterMetricFamily(
            "driftgate_violations", "Violations of the feature spec.", labels=["model", "version", "feature", "reason"]
        )
        confidence = HistogramMetricFamily(
            "driftgate_confidence", "Top-class probability of predicted rows.", labels=["model", "version"]
        )
        classes = CounterMetricFamily(
            "driftgate_predicted_class", "Predicted rows by class.", labels=["model", "version", "class"]
        )
        values = HistogramMetricFamily(
            "driftgate_prediction_value", "Predicted values of regressors.", labels=["model", "version"]
        )
        stages = HistogramMetricFamily(
            "driftgate_request_seconds", "Seconds per request, by stage.", labels=["model", "stage"]
        )
        margin = HistogramMetricFamily(
            "driftgate_confidence_margin",
            "Top-class minus runner-up probability of predicted rows.",
            labels=["model", "version"],
        )
        entropy = HistogramMetricFamily(
            "driftgate_prediction_entropy",
            "Entropy of the predicted class distribution, normalised to [0, 1].",
            labels=["model", "version"],
        )
        drift = GaugeMetricFamily(
            "driftgate_feature_drift",
            "Population stability index of the live window against the training baseline.",
            labels=["model", "version", "feature"],
        )
        distance = GaugeMetricFamily(
            "driftgate_feature_drift_distance",
            "Kolmogorov-Smirnov (numbers) or Jensen-Shannon (categories) distance of the live window to the baseline.",
            labels=["model", "version", "feature", "statistic"],
        )
        unseen = GaugeMetricFamily(
            "driftgate_unseen_category_share",
            "Share of unseen categories in the live window.",
            labels=["model", "version", "feature"],
        )
        missing = GaugeMetricFamily(
            "driftgate_missing_share",
            "Share of missing (imputed) values in the live window.",
            labels=["model", "version", "feature"],
        )
        output_drift = GaugeMetricFamily(
            "driftgate_output_drift",
            "Population stability index of the model's outputs against the output baseline.",
            labels=["model", "version", "output"],
        )
        estimated = GaugeMetricFamily(
            "driftgate_estimated_accuracy",
            "Accuracy estimated from confidence (CBPE) over the live window.",
            labels=["model", "version"],
        )
        window_rows = GaugeMetricFamily(
            "driftgate_drift_window_rows", "Rows in the live drift window.", labels=["model", "version"]
        )
        bin_count = GaugeMetricFamily(
            "driftgate_drift_bin_count",
            "Live window count per drift bin (sum across replicas for fleet-wide drift).",
            labels=["model", "version", "feature", "bin"],
        )
        baseline_share = GaugeMetricFamily(
            "driftgate_drift_baseline_share",
            "Training baseline share per drift bin, floored as the PSI formula floors it.",
            labels=["model", "version", "feature", "bin"],
        )
        feedback = CounterMetricFamily(
            "driftgate_feedback", "Ground-truth feedback items, by outcome.", labels=["model", "version", "outcome"]
        )
        online = GaugeMetricFamily(
            "driftgate_online_metric",
            "Online accuracy (classifiers) or MAE and RMSE (regressors) over the feedback window.",
            labels=["model", "version", "metric"],
        )
        feedback_rows = GaugeMetricFamily(
            "driftgate_feedback_window_rows", "Feedback rows in the online-metric window.", labels=["model", "version"]
        )
        baseline_confidence = GaugeMetricFamily(
            "driftgate_baseline_mean_confidence",
            "Mean top-class probability on the reference data recorded in the spec (from the histogram's bin midpoints).",
            labels=["model", "version"],
        )
        nonfinite = CounterMetricFamily(
            "driftgate_nonfinite_observations",
            "NaN or infinite values kept out of histograms.",
            labels=["model", "version"],
        )
        by_model: dict[tuple[str, str], list[BatchHistogram]] = {}
        for metrics in models:
            m = metrics.view()
            key = [m.model, m.version]
            for outcome, count in m.rows.items():
                rows.add_metric([*key, outcome], count)
            marked.add_metric([*key, "flagged"], m.flagged_rows)
            marked.add_metric([*key, "clipped"], m.clipped_rows)
            marked.add_metric([*key, "review"], m.review_rows)
            for fi, ri in zip(*np.nonzero(m.violations), strict=True):
                name = m.features[fi] if fi < len(m.features) else UNKNOWN_FEATURE_LABEL
                violations.add_metric([*key, name, REASONS[ri]], int(m.violations[fi, ri]))
            if m.classification:
                confidence.add_metric(key, m.confidence.buckets(), m.confidence.total)
                for label, count in zip(m.labels, m.class_counts.tolist(), strict=True):
                    classes.add_metric([*key, label], count)
            else:
                values.add_metric(key, m.values.buckets(), m.values.total)
            nonfinite.add_metric(key, m.confidence.nonfinite + m.values.nonfinite)
            if m.classification:
                margin.add_metric(key, m.margin.buckets(), m.margin.total)
                entropy.add_metric(key, m.entropy.buckets(), m.entropy.total)
            stats = m.statistics
            window_rows.add_metric(key, m.drift_rows)
            for segment in m.drift.segments:
                counts = m.live_counts(segment).tolist()
                shares = np.maximum(segment.baseline, PSI_FLOOR).tolist()
                for b, (count, share) in enumerate(zip(counts, shares, strict=True)):
                    bin_count.add_metric([*key, segment.name, str(b)], count)
                    baseline_share.add_metric([*key, segment.name, str(b)], share)
                seg = stats.get(segment.name)
                if seg is None:
                    continue
                if segment.name.startswith("_"):
                    output_drift.add_metric([*key, segment.name[1:]], seg["psi"])
                    continue
                drift.add_metric([*key, segment.name], seg["psi"])
                for statistic in ("ks", "js"):
                    if statistic in seg:
                        distance.add_metric([*key, segment.name, statistic], seg[statistic])
                if "unseen_share" in seg:
                    unseen.add_metric([*key, segment.name], seg["unseen_share"])
                if "missing_share" in seg:
                    missing.add_metric([*key, segment.name], seg["missing_share"])
            for outcome, count in m.feedback_counts.items():
                feedback.add_metric([*key, outcome], count)
            feedback_rows.add_metric(key, m.feedback.rows)
            online_metrics = (
                (("accuracy", m.feedback.accuracy()),)
                if m.classification
                else (("mae", m.feedback.mae()), ("rmse", m.feedback.rmse()))
            )
            for name, value in online_metrics:
                if value is not None:
                    online.add_metric([*key, name], value)
            if m.baseline_mean_confidence is not None:
                baseline_confidence.add_metric(key, m.baseline_mean_confidence)
            accuracy = m.estimated_accuracy if m.classification else None
            if accuracy is not None:
                estimated.add_metric(key, accuracy)
            for stage, hist in m.stages.items():
                by_model.setdefault((m.model, stage), []).append(hist)
        for (model, stage), hists in by_model.items():  # the contract labels stages by model, not version
            merged = BatchHistogram(LATENCY_BUCKETS)
            for hist in hists:
                merged.counts += hist.counts
                merged.total += hist.total
            stages.add_metric([model, stage], merged.buckets(), merged.total)
        yield from (rows, marked, violations, confidence, classes, values, stages, nonfinite, margin, entropy)
        yield from (drift, distance, unseen, missing, output_drift, estimated, window_rows, bin_count, baseline_share)
        yield from (feedback, online, feedback_rows, baseline_confidence)
        ready = GaugeMetricFamily(
            "driftgate_ready", "1 when every model is loaded and warmed and the server is not draining."
        )
        ready.add_metric([], 1.0 if self.ready is not None and self.ready() else 0.0)
        loaded = GaugeMetricFamily(
            "driftgate_model_loaded",
            "1 for a served model version, 0 for one that failed to load.",
            labels=["model", "version"],
        )
        for m in models:
            loaded.add_metric([m.model, m.version], 1.0)
        for name, version in self.failures() if self.failures is not None else []:
            if (name, str(version)) not in self._models:
                loaded.add_metric([name, str(version)], 0.0)
        yield from (ready, loaded)


def new_metrics_registry() -> tuple[CollectorRegistry, GatewayCollector]:
    """A fresh ``CollectorRegistry`` with driftgate's collector on it."""
    metrics_registry = CollectorRegistry(auto_describe=False)
    collector = GatewayCollector()
    metrics_registry.register(collector)
    return metrics_registry, collector
