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
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

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
    "ModelMetrics",
]

CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Top-class probability buckets when the spec records no confidence baseline: tenths,
the edges the bundled examples record their training-side confidence with."""

LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""Seconds per stage: our stages take microseconds, so the buckets start at 10 us rather
than prometheus_client's default 5 ms."""

STAGES = ("validate", "transform", "infer", "monitor")
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
        if value != value or value in (float("inf"), float("-inf")):
            self.nonfinite += 1
            return
        self.counts[int(np.searchsorted(self.bounds, value, side="left"))] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = np.cumsum(self.counts).tolist()
        labels = [repr(float(b)) for b in self.bounds.tolist()] + ["+Inf"]
        return list(zip(labels, cumulative, strict=True))


class ModelMetrics:
    """Counters of one model version. Updated by ``gateway.service``; read at scrape."""

    def __init__(self, spec: FeatureSpec, model: str, version: int) -> None:
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
        self.class_counts = np.zeros(len(self.labels), dtype=np.int64)
        self.values = BatchHistogram(_value_bounds(spec))
        self.stages = {stage: BatchHistogram(LATENCY_BUCKETS) for stage in STAGES}

    def count_rejected(self, n_rows: int, rejected_rows: int, violations: Sequence[Violation]) -> None:
        with self.lock:
            self.rows["rejected"] += rejected_rows
            self._count_violations(violations)

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
    ) -> None:
        with self.lock:
            self.rows["predicted"] += n_rows
            if violations:
                self._count_violations(violations)
            self.flagged_rows += flagged
            self.clipped_rows += clipped
            self.review_rows += review
            if confidence is not None:
                self.confidence.observe_many(confidence)
            if classes is not None:
                self.class_counts += np.bincount(classes, minlength=len(self.labels))
            if values is not None:
                self.values.observe_many(values)

    def time_stage(self, stage: str, seconds: float) -> None:
        self.stages[stage].observe(seconds)


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

    def attach(self, metrics: ModelMetrics) -> None:
        with self._lock:
            self._models = {**self._models, (metrics.model, metrics.version): metrics}

    def detach(self, model: str, version: int) -> None:
        with self._lock:
            self._models = {k: v for k, v in self._models.items() if k != (model, str(version))}

    def collect(self) -> Iterator[Metric]:
        models = list(self._models.values())
        rows = CounterMetricFamily("driftgate_rows", "Rows received, by outcome.", labels=["model", "version", "outcome"])
        marked = CounterMetricFamily(
            "driftgate_marked_rows", "Predicted rows that were flagged, clipped or sent for review.", labels=["model", "version", "mark"]
        )
        violations = CounterMetricFamily(
            "driftgate_violations", "Violations of the feature spec.", labels=["model", "version", "feature", "reason"]
        )
        confidence = HistogramMetricFamily("driftgate_confidence", "Top-class probability of predicted rows.", labels=["model", "version"])
        classes = CounterMetricFamily("driftgate_predicted_class", "Predicted rows by class.", labels=["model", "version", "class"])
        values = HistogramMetricFamily("driftgate_prediction_value", "Predicted values of regressors.", labels=["model", "version"])
        stages = HistogramMetricFamily("driftgate_request_seconds", "Seconds per request, by stage.", labels=["model", "stage"])
        nonfinite = CounterMetricFamily(
            "driftgate_nonfinite_observations", "NaN or infinite values kept out of histograms.", labels=["model", "version"]
        )
        by_model: dict[tuple[str, str], list[BatchHistogram]] = {}
        for m in models:
            key = [m.model, m.version]
            with m.lock:
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
                for stage, hist in m.stages.items():
                    by_model.setdefault((m.model, stage), []).append(hist)
        for (model, stage), hists in by_model.items():  # the contract labels stages by model, not version
            merged = BatchHistogram(LATENCY_BUCKETS)
            for hist in hists:
                merged.counts += hist.counts
                merged.total += hist.total
            stages.add_metric([model, stage], merged.buckets(), merged.total)
        yield from (rows, marked, violations, confidence, classes, values, stages, nonfinite)


def new_metrics_registry() -> tuple[CollectorRegistry, GatewayCollector]:
    """A fresh ``CollectorRegistry`` with driftgate's collector on it."""
    metrics_registry = CollectorRegistry(auto_describe=False)
    collector = GatewayCollector()
    metrics_registry.register(collector)
    return metrics_registry, collector
