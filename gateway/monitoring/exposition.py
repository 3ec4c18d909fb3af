"""``GET /metrics``: the Prometheus text of every served model version, built off the event loop.

A server holds hundreds of model versions, so a scrape must neither stall predictions nor
cost what prometheus_client's generic path costs (a ``Metric`` object, a label dict and a
``floatToGoString`` call per sample: about 4 us a sample, 1.2 s for 100 models, all of it
on the event loop). Here:

- **The layout is built once per model version and level**: the text of every line up to
  its value (``name{model="m",version="1",feature="x"} ``), labels escaped, is cached on the
  ``ModelMetrics``. A scrape formats only the numbers, straight from the numpy arrays
  (``tolist`` then ``str``/``repr``), and the drift statistics of a version are a handful
  of numpy calls over its flat bin vector (``SegmentTable``), whatever its features.
- **Never on the event loop**: ``render_metrics`` builds on a thread of its own, and
  scrapes that arrive while a build is pending or runs share that build. While it runs the
  interpreter hands the lock between threads every ``BUILD_SWITCH_SECONDS`` (0.5 ms)
  instead of the default 5 ms, and the builder yields after each model version, so a
  prediction that arrives meanwhile waits a fraction of a millisecond, not a whole switch
  interval. Builds are spaced (``BUILD_SPACING``): scrapes in a tight loop take at most a
  fifth of the process's time. A scraper that sends ``Accept-Encoding: gzip`` (Prometheus
  does) gets the body compressed on the build's thread, once per build; any body is sent in
  ``SEND_CHUNK_BYTES`` pieces, so the event loop never copies a large one at once.
- **A version whose counts did not move is not written again**: its text is kept with a
  fingerprint of its counters (rows, feedback, non-finite outputs, pending work) and reused
  while that is unchanged; only versions with traffic since the last scrape cost numpy and
  formatting. (Time windows and several workers always write afresh.)
- **Series scale with intent** (``--metrics-detail``, ``DRIFTGATE_METRICS_DETAIL``): the
  ``standard`` level, the default, exports what the alert rules and the dashboard read,
  at most 100 samples for a 30-feature classifier; ``detailed`` adds the per-feature
  distances and shares, the margin and entropy histograms, the ``monitor`` stage and the
  fine latency buckets; ``full`` adds the raw drift bin counts and baseline shares that
  the exact fleet-wide PSI rule sums across replicas. Per model: ``full`` for every model,
  or ``fraud=full,*=standard``. See the README's trade-off table.
- **Then the processes**: ``process_*`` and ``python_*`` (``gateway.monitoring.process``),
  in the same build.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import os
import re
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.errors import ConfigError
from gateway.monitoring.drift import MIN_ROWS, PSI_FLOOR, estimate_accuracy
from gateway.monitoring.metrics import (
    LATENCY_BUCKETS,
    STAGES,
    UNKNOWN_FEATURE_LABEL,
    MetricsState,
    label_drift,
    merge_states,
)
from gateway.monitoring.process import ProcessMetrics
from gateway.monitoring.segments import slice_report
from gateway.violations import REASONS

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from gateway.monitoring.fleet import Publication
    from gateway.monitoring.metrics import GatewayCollector, ModelMetrics

__all__ = [
    "BUILD_SPACING",
    "BUILD_SWITCH_SECONDS",
    "CONTENT_TYPE",
    "LEVELS",
    "STANDARD_LATENCY_BUCKETS",
    "level_of",
    "parse_metrics_detail",
    "render_metrics",
    "render_text",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
LEVELS = ("standard", "detailed", "full")
_RANK = {level: i for i, level in enumerate(LEVELS)}
STANDARD, DETAILED, FULL = 0, 1, 2

STANDARD_STAGES = ("validate", "transform", "infer")
"""The stages the contract names; ``monitor`` (the bookkeeping after inference) is ``detailed``."""
STANDARD_LATENCY_BUCKETS = (0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.05)
"""The latency bounds ``standard`` exports: a subset of ``LATENCY_BUCKETS``, so the coarse
histogram is exact (its cumulative counts are the fine one's at these bounds)."""
_STANDARD_LATENCY_INDEX = [LATENCY_BUCKETS.index(b) for b in STANDARD_LATENCY_BUCKETS]

BUILD_SWITCH_SECONDS = 0.0005
"""The interpreter's thread switch interval while a scrape is being built (default 5 ms)."""
BUILD_SPACING = 4.0
"""A build starts at the earliest this many times the last build's duration after it ended:
scrapes in a tight loop build at most a fifth of the time (``SharedBuild``)."""
BUILD_NICE = 10
"""Nice value of the build thread (relative weight about a tenth of the event loop's)."""
GZIP_LEVEL = 1
"""Compression of a gzip scrape: the fastest level (the text is repetitive)."""
SEND_CHUNK_BYTES = 256 * 1024
"""A scrape's body goes to the transport in pieces of this size, each after the previous one
has drained: one write of a 26 MB body copied it whole on the event loop (4.5 ms)."""

_ENTRY = re.compile(r"^\s*(?:([A-Za-z0-9_.*-]+)\s*=\s*)?([a-z]+)\s*$")


def parse_metrics_detail(text: str) -> dict[str, str]:
    """``"full"`` or ``"fraud=full,*=standard"`` to levels by model name (``*``: every other
    model). Raises ``ConfigError`` naming the bad entry."""
    levels: dict[str, str] = {}
    for entry in filter(str.strip, text.split(",")):
        match = _ENTRY.match(entry)
        if match is None or match.group(2) not in _RANK:
            raise ConfigError(
                f"invalid metrics detail {entry.strip()[:60]!r}: expected LEVEL or NAME=LEVEL, LEVEL one of {', '.join(LEVELS)}"
            )
        levels[match.group(1) or "*"] = match.group(2)
    return levels


def level_of(levels: dict[str, str], model: str) -> int:
    """The level of ``model`` (0 standard, 1 detailed, 2 full)."""
    return _RANK[levels.get(model) or levels.get("*") or "standard"]


# --- the families, in the order they are written -------------------------------------------

_FAMILIES: list[tuple[str, str, str]] = [
    ("driftgate_rows_total", "counter", "Rows received, by outcome."),
    ("driftgate_marked_rows_total", "counter", "Predicted rows that were flagged, clipped or sent for review."),
    ("driftgate_violations_total", "counter", "Violations of the feature spec."),
    ("driftgate_confidence", "histogram", "Top-class probability of predicted rows."),
    ("driftgate_predicted_class_total", "counter", "Predicted rows by class."),
    ("driftgate_prediction_value", "histogram", "Predicted values of regressors."),
    ("driftgate_request_seconds", "histogram", "Seconds per request, by stage."),
    ("driftgate_nonfinite_observations_total", "counter", "NaN or infinite values kept out of histograms."),
    ("driftgate_confidence_margin", "histogram", "Top-class minus runner-up probability of predicted rows."),
    (
        "driftgate_prediction_entropy",
        "histogram",
        "Entropy of the predicted class distribution, normalised to [0, 1].",
    ),
    (
        "driftgate_feature_drift",
        "gauge",
        "Population stability index of the live window against the training baseline.",
    ),
    (
        "driftgate_feature_drift_distance",
        "gauge",
        "Kolmogorov-Smirnov (numbers) or Jensen-Shannon (categories) distance of the live window to the baseline.",
    ),
    ("driftgate_unseen_category_share", "gauge", "Share of unseen categories in the live window."),
    ("driftgate_missing_share", "gauge", "Share of missing (imputed) values in the live window."),
    (
        "driftgate_output_drift",
        "gauge",
        "Population stability index of the model's outputs against the output baseline.",
    ),
    ("driftgate_estimated_accuracy", "gauge", "Accuracy estimated from confidence (CBPE) over the live window."),
    ("driftgate_drift_window_rows", "gauge", "Rows in the live drift window."),
    (
        "driftgate_drift_bin_count",
        "gauge",
        "Live window count per drift bin (sum across replicas for fleet-wide drift).",
    ),
    (
        "driftgate_drift_baseline_share",
        "gauge",
        "Training baseline share per drift bin, floored as the PSI formula floors it.",
    ),
    ("driftgate_feedback_total", "counter", "Ground-truth feedback items, by outcome."),
    (
        "driftgate_online_metric",
        "gauge",
        "Online accuracy (classifiers) or MAE and RMSE (regressors) over the feedback window.",
    ),
    ("driftgate_feedback_window_rows", "gauge", "Feedback rows in the online-metric window."),
    (
        "driftgate_baseline_mean_confidence",
        "gauge",
        "Mean top-class probability on the reference data recorded in the spec (from the histogram's bin midpoints).",
    ),
    (
        "driftgate_offline_metric",
        "gauge",
        "The version's figures on labelled held-out rows at registration (register --data).",
    ),
    (
        "driftgate_label_drift",
        "gauge",
        "Population stability index of the feedback's true labels (or values) against the training target's.",
    ),
    ("driftgate_segment_rows_total", "counter", "Rows received per segment value, by outcome."),
    ("driftgate_segment_violations_total", "counter", "Violations of the feature spec per segment value, by reason."),
    (
        "driftgate_segment_estimated_accuracy",
        "gauge",
        "Accuracy estimated from confidence (CBPE) over the segment value's rows in the live window.",
    ),
    ("driftgate_segment_window_rows", "gauge", "Rows of the segment value in the live drift window."),
    (
        "driftgate_segment_feature_drift",
        "gauge",
        "Population stability index of a feature among the segment value's live rows against its training rows.",
    ),
    (
        "driftgate_segment_online_metric",
        "gauge",
        "Online accuracy (classifiers) or MAE and RMSE (regressors) of the segment value's feedback.",
    ),
    ("driftgate_segment_feedback_window_rows", "gauge", "Feedback rows of the segment value in the online-metric window."),
    (
        "driftgate_feature_importance",
        "gauge",
        "Permutation importance of the feature for this model version: the accuracy lost (classifiers) or mean absolute error added (regressors) when its values are shuffled.",
    ),
    ("driftgate_review_queue_rows", "gauge", "Rows waiting in the model's review queue."),
    (
        "driftgate_reviews_total",
        "counter",
        "Review queue rows by what became of them: queued, dropped (the queue was full), answered, agreed (answered with the model's own label).",
    ),
    ("driftgate_ready", "gauge", "1 when every model is loaded and warmed and the server is not draining."),
    ("driftgate_model_loaded", "gauge", "1 for a served model version, 0 for one that failed to load."),
    ("driftgate_requests_total", "counter", "Prediction requests (V1 predict, V2 infer), by how they ended."),
    ("driftgate_shadow_rows_total", "counter", "Rows mirrored to a shadow candidate, by outcome."),
    ("driftgate_shadow_agreement", "gauge", "Share of a shadow candidate's compared rows that agree with the primary."),
    ("driftgate_rollbacks_total", "counter", "Rollout candidates taken out, by reason."),
    ("driftgate_rollout_version", "gauge", "1 for a model's rollout primary and candidate, by role and mode."),
]


def _header(name: str, kind: str, text: str) -> bytes:
    help_text = text.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n".encode()


_HEADERS = {name: _header(name, kind, text) for name, kind, text in _FAMILIES}
_FAMILY_LEVEL = {
    **dict.fromkeys(_HEADERS, STANDARD),
    **dict.fromkeys(
        (
            "driftgate_confidence_margin",
            "driftgate_prediction_entropy",
            "driftgate_feature_drift_distance",
            "driftgate_unseen_category_share",
            "driftgate_missing_share",
        ),
        DETAILED,
    ),
    **dict.fromkeys(("driftgate_drift_bin_count", "driftgate_drift_baseline_share"), FULL),
    **dict.fromkeys(
        (name for name in _HEADERS if name.startswith(("driftgate_segment_", "driftgate_review", "driftgate_feature_imp"))),
        FULL + 1,
    ),
}
"""The level from which a family is declared (written even while it has no sample); the
per-segment families are written only where a spec names segments."""


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


def _bound(value: float) -> str:
    """A bucket bound as prometheus_client (and Go) write it."""
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))


def _number(value: float) -> str:
    """A float sample value; the non-finite ones as Prometheus spells them."""
    if math.isfinite(value):
        return repr(value)
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def _floats(values: Sequence[float]) -> list[str]:
    return list(map(_number, values))


def _lines(prefixes: Sequence[str], values: Iterable[str]) -> str:
    return "".join([f"{p}{v}\n" for p, v in zip(prefixes, values, strict=True)])


def _histogram_prefixes(name: str, labels: list[tuple[str, str]], bounds: Sequence[float]) -> list[str]:
    out = [f"{name}_bucket{_labels([*labels, ('le', _bound(b))])} " for b in [*bounds, float("inf")]]
    return [*out, f"{name}_sum{_labels(labels)} ", f"{name}_count{_labels(labels)} "]


def _histogram_values(counts: Any, total: float, index: Sequence[int] | None = None) -> list[str]:
    cumulative = np.cumsum(counts)
    picked = (cumulative[index] if index is not None else cumulative[:-1]).tolist()
    count = int(cumulative[-1])
    return [*map(str, picked), str(count), _number(float(total)), str(count)]


class _Layout:
    """Every line prefix one model version writes at one level (built once, cached)."""

    def __init__(self, m: ModelMetrics, level: int) -> None:
        key = [("model", m.model), ("version", m.version)]
        base = _labels(key)[1:-1]  # model="m",version="1"

        def labelled(name: str, *pairs: tuple[str, str]) -> str:
            extra = "".join(f',{k}="{_escape(v)}"' for k, v in pairs)
            return f"{name}{{{base}{extra}}} "

        self.level = level
        lab = f"{{{base}}}"
        self.rows = [labelled("driftgate_rows_total", ("outcome", o)) for o in ("predicted", "rejected")]
        self.marks = [labelled("driftgate_marked_rows_total", ("mark", k)) for k in ("flagged", "clipped", "review")]
        self.feature_names = [*m.features, UNKNOWN_FEATURE_LABEL]
        self.key = key
        self.classification = m.classification
        if m.classification:
            self.confidence = _histogram_prefixes("driftgate_confidence", key, m.confidence.bounds.tolist())
            self.classes = [labelled("driftgate_predicted_class_total", ("class", c)) for c in m.labels]
            self.margin = _histogram_prefixes("driftgate_confidence_margin", key, m.margin.bounds.tolist())
            self.entropy = _histogram_prefixes("driftgate_prediction_entropy", key, m.entropy.bounds.tolist())
        else:
            self.values = _histogram_prefixes("driftgate_prediction_value", key, m.values.bounds.tolist())
        self.nonfinite = f"driftgate_nonfinite_observations_total{lab} "
        segments = m.drift.segments
        self.inputs = [i for i, s in enumerate(segments) if not s.name.startswith("_")]
        self.outputs = [i for i, s in enumerate(segments) if s.name.startswith("_")]
        self.drift = {i: labelled("driftgate_feature_drift", ("feature", segments[i].name)) for i in self.inputs}
        self.output_drift = {
            i: labelled("driftgate_output_drift", ("output", segments[i].name[1:])) for i in self.outputs
        }
        self.drift_list = [self.drift[i] for i in self.inputs]
        self.output_list = [self.output_drift[i] for i in self.outputs]
        self.estimated = f"driftgate_estimated_accuracy{lab} "
        self.window_rows = f"driftgate_drift_window_rows{lab} "
        self.feedback_outcomes = list(m.feedback_counts.counts)
        self.feedback = [labelled("driftgate_feedback_total", ("outcome", o)) for o in self.feedback_outcomes]
        self.online = {k: labelled("driftgate_online_metric", ("metric", k)) for k in ("accuracy", "mae", "rmse")}
        self.feedback_rows = f"driftgate_feedback_window_rows{lab} "
        self.baseline_confidence = (
            f"driftgate_baseline_mean_confidence{lab} {_number(m.baseline_mean_confidence)}\n"
            if m.baseline_mean_confidence is not None
            else ""
        )
        self.offline = "".join(
            f"{labelled('driftgate_offline_metric', ('metric', k))}{_number(v)}\n" for k, v in m.offline.items()
        )
        self.label_drift = f"driftgate_label_drift{lab} "
        self.loaded = f"driftgate_model_loaded{lab} 1.0\n"
        importance = m.importance.values if m.importance is not None else {}
        self.importance = "".join(
            f"{labelled('driftgate_feature_importance', ('feature', name))}{_number(importance[name])}\n"
            for name in m.features
            if name in importance
        )
        if level >= DETAILED:
            self.distance = {
                (i, stat): labelled("driftgate_feature_drift_distance", ("feature", s.name), ("statistic", stat))
                for i, s in enumerate(segments)
                for stat in ("ks", "js")
            }
            self.unseen = {
                i: labelled("driftgate_unseen_category_share", ("feature", segments[i].name)) for i in self.inputs
            }
            self.missing = {i: labelled("driftgate_missing_share", ("feature", segments[i].name)) for i in self.inputs}
        if level >= FULL:
            where = [f'{{{base},feature="{_escape(s.name)}",bin="{b}"}} ' for s in segments for b in range(s.size)]
            self.bins = ["driftgate_drift_bin_count" + w for w in where]
            shares = ["driftgate_drift_baseline_share" + w for w in where]
            floored = [float(x) for s in segments for x in np.maximum(s.baseline, PSI_FLOOR).tolist()]
            self.baseline_shares = _lines(shares, _floats(floored))


def _stage_prefixes(model: str, level: int) -> list[str]:
    stages = STAGES if level >= DETAILED else STANDARD_STAGES
    bounds = LATENCY_BUCKETS if level >= DETAILED else STANDARD_LATENCY_BUCKETS
    return [
        p
        for stage in stages
        for p in _histogram_prefixes("driftgate_request_seconds", [("model", model), ("stage", stage)], bounds)
    ]


def _layout(m: ModelMetrics, level: int) -> _Layout:
    cached: _Layout | None = m.exposition
    if cached is None or cached.level != level:
        cached = m.exposition = _Layout(m, level)
    return cached


def _model_text(m: ModelMetrics, state: MetricsState, level: int, out: dict[str, list[str]]) -> None:
    """Append the lines of one model version, by family, to ``out``."""
    lay = _layout(m, level)
    rows = state.rows
    out["driftgate_rows_total"].append(_lines(lay.rows, (str(rows["predicted"]), str(rows["rejected"]))))
    marks = state.marks
    out["driftgate_marked_rows_total"].append(
        _lines(lay.marks, (str(marks["flagged"]), str(marks["clipped"]), str(marks["review"])))
    )
    violations = np.asarray(state.violations)
    if violations.any():
        key = lay.key
        out["driftgate_violations_total"].append(
            "".join(
                f"driftgate_violations_total{_labels([*key, ('feature', lay.feature_names[fi]), ('reason', REASONS[ri])])} "
                f"{int(violations[fi, ri])}\n"
                for fi, ri in zip(*np.nonzero(violations), strict=True)
            )
        )
    if lay.classification:
        c = state.confidence
        out["driftgate_confidence"].append(_lines(lay.confidence, _histogram_values(c.counts, c.total)))
        out["driftgate_predicted_class_total"].append(
            _lines(lay.classes, map(str, np.asarray(state.class_counts).tolist()))
        )
        if level >= DETAILED:
            for family, hist, prefixes in (
                ("driftgate_confidence_margin", state.margin, lay.margin),
                ("driftgate_prediction_entropy", state.entropy, lay.entropy),
            ):
                out[family].append(_lines(prefixes, _histogram_values(hist.counts, hist.total)))
    else:
        v = state.values
        out["driftgate_prediction_value"].append(_lines(lay.values, _histogram_values(v.counts, v.total)))
    nonfinite = int(state.confidence.nonfinite) + int(state.values.nonfinite)
    out["driftgate_nonfinite_observations_total"].append(f"{lay.nonfinite}{nonfinite}\n")
    drift = state.drift
    total = np.asarray(drift.total)
    rows_in_window = int(drift.total_rows)
    if rows_in_window >= MIN_ROWS:
        _drift_text(m, lay, total, rows_in_window, level, out)
    if lay.classification:
        accuracy = estimate_accuracy(rows_in_window, float(drift.total_confidence), "_confidence" in m.drift.by_name)
        if accuracy is not None:
            out["driftgate_estimated_accuracy"].append(f"{lay.estimated}{_number(accuracy)}\n")
    out["driftgate_drift_window_rows"].append(f"{lay.window_rows}{rows_in_window}\n")
    if level >= FULL:
        out["driftgate_drift_bin_count"].append(_lines(lay.bins, map(str, total.tolist())))
        out["driftgate_drift_baseline_share"].append(lay.baseline_shares)
    feedback = state.feedback_counts
    out["driftgate_feedback_total"].append(_lines(lay.feedback, [str(feedback[o]) for o in lay.feedback_outcomes]))
    fb = np.asarray(state.feedback.total, dtype=np.float64).tolist()
    if fb[0]:
        online = (
            (("accuracy", fb[1] / fb[0]),)
            if lay.classification
            else (("mae", fb[2] / fb[0]), ("rmse", float(np.sqrt(fb[3] / fb[0]))))
        )
        out["driftgate_online_metric"].append("".join(f"{lay.online[k]}{_number(v)}\n" for k, v in online))
    out["driftgate_feedback_window_rows"].append(f"{lay.feedback_rows}{int(fb[0])}\n")
    if lay.baseline_confidence:
        out["driftgate_baseline_mean_confidence"].append(lay.baseline_confidence)
    if lay.offline:
        out["driftgate_offline_metric"].append(lay.offline)
    shift = label_drift(m, state)
    if shift is not None:
        out["driftgate_label_drift"].append(f"{lay.label_drift}{_number(shift)}\n")
    shadow = state.shadow
    if any(shadow.values()):
        key = [("model", m.model), ("version", m.version)]
        out["driftgate_shadow_rows_total"].append(
            "".join(
                f"driftgate_shadow_rows_total{_labels([*key, ('outcome', o)])} {int(shadow[o])}\n"
                for o in ("compared", "rejected", "dropped", "failed")
            )
        )
        if shadow["compared"]:
            agreement = shadow["agreed"] / shadow["compared"]
            out["driftgate_shadow_agreement"].append(f"driftgate_shadow_agreement{_labels(key)} {_number(agreement)}\n")
    out["driftgate_model_loaded"].append(lay.loaded)
    if lay.importance:
        out["driftgate_feature_importance"].append(lay.importance)
    if m.slicing.count:
        _segment_text(m, lay, state, out)


def _segment_text(m: ModelMetrics, lay: _Layout, state: MetricsState, out: dict[str, list[str]]) -> None:
    """The per-segment families (``gateway.monitoring.segments``)."""
    key = lay.key
    rows, violations, estimated, window, drift, online, feedback = [], [], [], [], [], [], []
    for entry in slice_report(m.slicing, state.segments, lay.classification):
        where = [*key, ("segment", entry["segment"]), ("value", entry["value"])]
        for outcome in ("predicted", "rejected"):
            rows.append(f"driftgate_segment_rows_total{_labels([*where, ('outcome', outcome)])} {entry[outcome]}\n")
        for reason, count in entry["violations"].items():
            violations.append(f"driftgate_segment_violations_total{_labels([*where, ('reason', reason)])} {count}\n")
        labels = _labels(where)
        window.append(f"driftgate_segment_window_rows{labels} {entry['window_rows']}\n")
        if entry["estimated_accuracy"] is not None:
            estimated.append(f"driftgate_segment_estimated_accuracy{labels} {_number(entry['estimated_accuracy'])}\n")
        for feature, value in entry["drift"].items():
            drift.append(f"driftgate_segment_feature_drift{_labels([*where, ('feature', feature)])} {_number(value)}\n")
        for metric in ("accuracy", "mae", "rmse"):
            if metric in entry:
                online.append(f"driftgate_segment_online_metric{_labels([*where, ('metric', metric)])} {_number(entry[metric])}\n")
        feedback.append(f"driftgate_segment_feedback_window_rows{labels} {entry['feedback_rows']}\n")
    for family, lines in (
        ("driftgate_segment_rows_total", rows),
        ("driftgate_segment_violations_total", violations),
        ("driftgate_segment_estimated_accuracy", estimated),
        ("driftgate_segment_window_rows", window),
        ("driftgate_segment_feature_drift", drift),
        ("driftgate_segment_online_metric", online),
        ("driftgate_segment_feedback_window_rows", feedback),
    ):
        out[family].append("".join(lines))


def _drift_text(
    m: ModelMetrics, lay: _Layout, total: NDArray[np.int64], rows: int, level: int, out: dict[str, list[str]]
) -> None:
    table = m.drift.table
    if level < DETAILED:
        psi, held = table.psi(total)
        values = list(map(repr, psi.tolist()))  # finite: both shares are floored above zero
        if held.all():
            out["driftgate_feature_drift"].append(_lines(lay.drift_list, [values[i] for i in lay.inputs]))
            out["driftgate_output_drift"].append(_lines(lay.output_list, [values[i] for i in lay.outputs]))
            return
        held_list = held.tolist()
        out["driftgate_feature_drift"].append(
            "".join(f"{lay.drift[i]}{values[i]}\n" for i in lay.inputs if held_list[i])
        )
        out["driftgate_output_drift"].append(
            "".join(f"{lay.output_drift[i]}{values[i]}\n" for i in lay.outputs if held_list[i])
        )
        return
    stats = table.compute(total, rows)
    drift, output, distance, unseen, missing = [], [], [], [], []
    for i, name in enumerate(table.names):
        seg = stats.get(name)
        if seg is None:
            continue
        if i in lay.output_drift:
            output.append(f"{lay.output_drift[i]}{_number(seg['psi'])}\n")
            continue
        drift.append(f"{lay.drift[i]}{_number(seg['psi'])}\n")
        for stat in ("ks", "js"):
            if stat in seg:
                distance.append(f"{lay.distance[(i, stat)]}{_number(seg[stat])}\n")
        if "unseen_share" in seg:
            unseen.append(f"{lay.unseen[i]}{_number(seg['unseen_share'])}\n")
        if "missing_share" in seg:
            missing.append(f"{lay.missing[i]}{_number(seg['missing_share'])}\n")
    out["driftgate_feature_drift"].append("".join(drift))
    out["driftgate_output_drift"].append("".join(output))
    out["driftgate_feature_drift_distance"].append("".join(distance))
    out["driftgate_unseen_category_share"].append("".join(unseen))
    out["driftgate_missing_share"].append("".join(missing))


class _Rendered:
    """One model version's text by family, and its latency histograms, as last written."""

    __slots__ = ("chunks", "key", "stage_text", "stages")

    def __init__(self, key: tuple[Any, ...] | None, state: MetricsState, m: ModelMetrics, level: int) -> None:
        self.key = key
        out: dict[str, list[str]] = defaultdict(list)
        _model_text(m, state, level, out)
        self.chunks = [(family, "".join(parts).encode()) for family, parts in out.items()]
        self.stages = {stage: (np.asarray(h.counts), float(h.total)) for stage, h in state.stages.items()}
        self.stage_text = b""
        """The latency lines, when this is its model's only version (written on first use)."""


def _fingerprint(m: ModelMetrics, level: int) -> tuple[Any, ...] | None:
    """The version's fingerprint (``ModelMetrics.fingerprint``) and level; None when its text
    cannot be reused: a time window slides by itself, and with several workers the others'
    counts move."""
    if m.fleet is not None:
        return None
    own = m.fingerprint()
    return None if own is None else (level, *own)


def _render_models(
    models: list[ModelMetrics], levels: dict[str, str], pause: Callable[[], None]
) -> tuple[list[_Rendered], Publication | None, list[Publication]]:
    """Every model version's text: reused when nothing it exports has changed since the last
    scrape, else written from its state (with several workers, the sum of this worker's,
    published now once for all versions, and every other's last publication). Also this
    worker's publication and the others', if any (their request counts)."""
    snapshots: dict[int, tuple[Publication, list[Publication]]] = {}
    own: Publication | None = None
    others: list[Publication] = []
    rendered = []
    for m in models:
        level = level_of(levels, m.model)
        key = _fingerprint(m, level)
        last: _Rendered | None = m.rendered
        if key is not None and last is not None and last.key == key:
            rendered.append(last)
            continue
        fleet = m.fleet
        if fleet is None:
            state, mark = m.snapshot()
            key = None if mark is None else (level, *mark)  # of exactly the state written
        else:
            snapshot = snapshots.get(id(fleet))
            if snapshot is None:
                snapshot = snapshots[id(fleet)] = (fleet.publish(), fleet.others())
            own, others = snapshot
            name = (m.model, m.version)
            mine = own.models.get(name)
            parts = [mine[0] if mine is not None else m.export()]  # else: unloaded meanwhile
            parts += [p.models[name][0] for p in others if name in p.models]
            state = merge_states(parts)
        m.rendered = _Rendered(key, state, m, level)
        rendered.append(m.rendered)
        pause()
    return rendered, own, others


def render_text(
    collector: GatewayCollector,
    requests: Callable[[], dict[tuple[str, str], int]] | None,
    pause: Callable[[], None] = lambda: None,
) -> bytes:
    """The exposition text of ``collector``'s model versions, and of ``requests`` (request
    counts by model and reason; None: left out). ``pause`` is called after each version."""
    levels = collector.detail
    models = collector.models()
    rendered, own, others = _render_models(models, levels, pause)
    out: dict[str, list[bytes]] = {name: [] for name in _HEADERS}
    by_model: dict[str, list[_Rendered]] = {}
    for m, text in zip(models, rendered, strict=True):
        for family, chunk in text.chunks:
            out[family].append(chunk)
        by_model.setdefault(m.model, []).append(text)
    for model, versions in by_model.items():  # the contract labels stages by model, not version
        level = level_of(levels, model)
        prefixes = collector.stage_layouts.get((model, level))
        if prefixes is None:
            prefixes = collector.stage_layouts[(model, level)] = _stage_prefixes(model, level)
        if len(versions) == 1 and versions[0].stage_text:
            out["driftgate_request_seconds"].append(versions[0].stage_text)
            continue
        stages = STAGES if level >= DETAILED else STANDARD_STAGES
        index = None if level >= DETAILED else _STANDARD_LATENCY_INDEX
        values: list[str] = []
        for stage in stages:
            if len(versions) == 1:
                counts, total = versions[0].stages[stage]
            else:
                counts = np.sum([v.stages[stage][0] for v in versions], axis=0)
                total = sum(v.stages[stage][1] for v in versions)
            values += _histogram_values(counts, total, index)
        lines = _lines(prefixes, values).encode()
        if len(versions) == 1:
            versions[0].stage_text = lines
        out["driftgate_request_seconds"].append(lines)
    if collector.reviews is not None:
        for model, review_counts in sorted(collector.reviews().items()):
            label = _labels([("model", model)])
            out["driftgate_review_queue_rows"].append(
                f"driftgate_review_queue_rows{label} {review_counts['length']}\n".encode()
            )
            out["driftgate_reviews_total"].append(
                "".join(
                    f"driftgate_reviews_total{_labels([('model', model), ('outcome', k)])} {review_counts[k]}\n"
                    for k in ("queued", "dropped", "answered", "agreed")
                ).encode()
            )
    ready = collector.ready is not None and collector.ready()
    out["driftgate_ready"].append(b"driftgate_ready 1.0\n" if ready else b"driftgate_ready 0.0\n")
    for name, version in collector.failed():
        out["driftgate_model_loaded"].append(
            f"driftgate_model_loaded{_labels([('model', name), ('version', version)])} 0.0\n".encode()
        )
    if collector.rollouts is not None:
        rollbacks, roles = collector.rollouts()
        out["driftgate_rollbacks_total"].append(
            "".join(
                f"driftgate_rollbacks_total{_labels([('model', model), ('reason', reason)])} {count}\n"
                for (model, reason), count in sorted(rollbacks.items())
            ).encode()
        )
        out["driftgate_rollout_version"].append(
            "".join(
                f"driftgate_rollout_version{_labels([('model', m), ('version', v), ('role', r), ('mode', mode)])} 1\n"
                for m, v, r, mode in sorted(roles)
            ).encode()
        )
    if requests is not None:
        request_counts = _request_counts(requests, own, others)
        out["driftgate_requests_total"].append(
            "".join(
                f"driftgate_requests_total{_labels([('model', model), ('reason', reason)])} {count}\n"
                for (model, reason), count in sorted(request_counts.items())
            ).encode()
        )
    else:
        del out["driftgate_requests_total"]
    declared = max((_RANK[level] for level in levels.values()), default=STANDARD)
    body = []
    for name, parts in out.items():
        if parts or _FAMILY_LEVEL[name] <= declared:
            body.append(_HEADERS[name])
            body += parts
    return b"".join(body)


def _request_counts(
    requests: Callable[[], dict[tuple[str, str], int]] | None, own: Publication | None, others: list[Publication]
) -> dict[tuple[str, str], int]:
    """This process's request counts, or with several workers the fleet's (as published)."""
    if own is None:
        return dict(requests()) if requests is not None else {}
    # several workers: the fleet's, as published (this worker's published just now)
    total = dict(own.requests)
    for publication in others:
        for key, count in publication.requests.items():
            total[key] = total.get(key, 0) + count
    return total


# --- off the event loop, one build at a time --------------------------------------------------

_switch_lock = threading.Lock()
_building = 0
_switch_default = sys.getswitchinterval()


def _short_switches(on: bool) -> None:
    """Shorten the interpreter's switch interval while any build runs (see the module docstring)."""
    global _building, _switch_default
    with _switch_lock:
        if on:
            if _building == 0:
                _switch_default = sys.getswitchinterval()
                sys.setswitchinterval(min(_switch_default, BUILD_SWITCH_SECONDS))
            _building += 1
        else:
            _building -= 1
            if _building == 0:
                sys.setswitchinterval(_switch_default)


def _yield() -> None:
    time.sleep(0)  # let a waiting thread (the event loop) take the interpreter now


class SharedBuild:
    """One build at a time on a thread of its own; callers that arrive while one is pending
    or running share it. A build starts at the earliest ``spacing`` times the last build's
    duration after that build ended (the caller waits, without using the processor), so
    scrapes in a tight loop spend at most ``1 / (1 + spacing)`` of the process's time
    building, whatever the number of models; a scrape every few seconds never waits."""

    def __init__(self, build: Callable[[], bytes], spacing: float = BUILD_SPACING) -> None:
        self._build = build
        self._spacing = spacing
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="driftgate-metrics", initializer=_lower_priority)
        self._running: asyncio.Future[bytes] | None = None
        self._next_start = 0.0
        self.builds = 0
        self._gzipped: tuple[bytes, asyncio.Future[bytes]] | None = None
        """The last build's body and its gzip compression, shared by the scrapes that ask for it."""

    def _run(self) -> bytes:
        _short_switches(True)
        t0 = time.perf_counter()
        try:
            return self._build()
        finally:
            _short_switches(False)
            self.builds += 1
            took = time.perf_counter() - t0
            self._next_start = time.monotonic() + self._spacing * took

    async def _later(self) -> bytes:
        delay = self._next_start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run)

    async def get(self) -> bytes:
        running = self._running
        if running is None:
            running = self._running = asyncio.ensure_future(self._later())
            running.add_done_callback(self._done)
        return await asyncio.shield(running)

    def _done(self, future: asyncio.Future[bytes]) -> None:
        if self._running is future:
            self._running = None

    async def get_gzip(self) -> bytes:
        """The body gzip-compressed, for a scraper that accepts it (Prometheus does): far fewer
        bytes for the event loop to write. Compressed on the build's thread
        (zlib lets go of the interpreter while it works), once per build."""
        plain = await self.get()
        done = self._gzipped
        if done is None or done[0] is not plain:
            packing = asyncio.get_running_loop().run_in_executor(self._executor, _gzip, plain)
            done = self._gzipped = (plain, asyncio.ensure_future(packing))
        return await asyncio.shield(done[1])


def _lower_priority() -> None:
    """The build thread yields the processor to the event loop (Linux: a thread has a nice
    value of its own): compressing without the interpreter lock, it would otherwise share a
    core with the loop by the scheduler's time slices, several milliseconds each."""
    try:
        me = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, me, max(BUILD_NICE, os.getpriority(os.PRIO_PROCESS, me)))
    except (AttributeError, OSError):  # not Linux, or not allowed: the default priority
        pass


def _gzip(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def configure(collector: GatewayCollector, gateway: Any) -> SharedBuild:
    """The shared build of ``gateway``'s metrics, set up on its first scrape."""
    shared: SharedBuild | None = collector.shared
    if shared is None:
        collector.detail = parse_metrics_detail(gateway.settings.metrics_detail)
        # with several workers, the fleet's request counts (from the same publications as the
        # models' states when any model is served); else this process's, copied at once
        requests = gateway.fleet.request_counts if gateway.fleet is not None else gateway.requests.counts.copy
        extra = getattr(gateway, "payloads", None)  # driftgate_log_records_total (gateway.predlog)
        processes = ProcessMetrics(gateway.fleet)  # process_* and python_* (gateway.monitoring.process)
        shared = collector.shared = SharedBuild(
            lambda: render_text(collector, requests, _yield)
            + (extra.exposition() if extra is not None else b"")
            + processes.text()
        )
    return shared


async def render_metrics(gateway: Any, compressed: bool = False) -> bytes:
    """The ``/metrics`` body of ``gateway`` (a ``gateway.lifecycle.Gateway``), built on a thread
    of its own; concurrent calls share one build. Content type: ``CONTENT_TYPE``; gzip
    (``Content-Encoding: gzip``) when ``compressed``."""
    shared = configure(gateway.collector, gateway)
    return await (shared.get_gzip() if compressed else shared.get())
