"""A version's offline record: what the model did on labelled held-out rows at registration.

``driftgate register ... --data HOLDOUT.csv`` runs the model on held-out rows
(``gateway.evaluation``) and stores the result beside ``model.onnx`` and ``spec.yaml`` as
``baseline.json`` (``Baseline``):

- ``metrics``: the offline figures (accuracy, macro F1, log loss, ROC AUC; or MAE, RMSE,
  R²). Online accuracy from feedback is judged against the version's own accuracy
  (``driftgate_offline_metric``, the ``DriftgateAccuracyDrop`` alert).
- ``output``: the model's output baseline on those rows (predicted class counts and the
  confidence histogram, or the predicted values' histogram). Where the spec records no
  output baseline (``fit-spec`` records none of the confidence), monitoring uses this one
  (``monitored_spec``), so the output-drift and confidence-drop signals work for it.
- ``target``: the true labels' counts (or the true values' histogram): the reference of
  label drift when the spec has no training target distribution.
- ``calibration``: top-class confidence against correctness on those rows, fitted by
  isotonic regression (``fit_calibration``): the label-free estimate of accuracy (CBPE)
  averages the calibrated confidence instead of the raw one, as NannyML calibrates on its
  reference data, so a model whose probabilities are over- or under-confident is still
  estimated right.

This module knows the spec and numpy only; it must not know how the rows were predicted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np
from msgspec import Meta
from msgspec.structs import replace

from gateway.errors import SpecError
from gateway.spec import FeatureSpec, HistogramBaseline, OutputBaseline

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "Baseline",
    "Calibration",
    "LabelReference",
    "decode_baseline",
    "encode_baseline",
    "fit_calibration",
    "histogram",
    "label_reference",
    "missing_output_baseline",
    "monitored_spec",
]

CALIBRATION_GRID = 1e-4
"""Confidences are pooled to this grid before the isotonic fit: at most 10,001 distinct
points whatever the number of held-out rows, and far finer than any reliability curve."""


class Calibration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A non-decreasing map from top-class confidence to the chance the top class is right:
    points ``(x[i], y[i])``, linear between them, flat beyond the ends (as scikit-learn's
    ``IsotonicRegression`` predicts)."""

    x: tuple[float, ...]
    y: tuple[Annotated[float, Meta(ge=0, le=1)], ...]
    rows: int = 0
    """Held-out rows it was fitted on."""

    def __post_init__(self) -> None:
        if not self.x or len(self.x) != len(self.y):
            raise ValueError("a calibration needs as many y as x, at least one")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise ValueError("calibration x must not decrease")

    def apply(self, confidence: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """The calibrated chance of being right of each top-class ``confidence``."""
        out: NDArray[np.float64] = np.interp(np.asarray(confidence, dtype=np.float64), self.x, self.y)
        return out


class Baseline(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """The content of ``baseline.json`` (see the module docstring)."""

    task: str
    rows: int
    """Rows in the held-out file."""
    scored_rows: int
    """Rows the spec accepted and that carried a known target: what ``metrics`` were computed on."""
    metrics: dict[str, float]
    output: OutputBaseline
    target: OutputBaseline
    calibration: Calibration | None = None
    refused: dict[str, int] = {}
    """Rows refused, by ``feature: reason``."""
    data: str = ""
    """The held-out file's name (no folder)."""
    spec_digest: str = ""
    format: int = 1


_decoder = msgspec.json.Decoder(Baseline)


def encode_baseline(baseline: Baseline) -> bytes:
    return msgspec.json.format(msgspec.json.encode(baseline), indent=2) + b"\n"


def decode_baseline(raw: bytes, source: str = "baseline file") -> Baseline:
    """Raises ``SpecError`` if ``raw`` is not a baseline file."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise SpecError(f"{source}: not a valid baseline file ({exc})") from None


def fit_calibration(confidence: NDArray[np.floating[Any]], correct: NDArray[np.bool_]) -> Calibration | None:
    """Isotonic regression of ``correct`` on ``confidence`` (pool-adjacent-violators, on
    confidences pooled to ``CALIBRATION_GRID``). Each block of the fit keeps its lowest and
    highest confidence, so the map is flat across a block and linear only between blocks,
    as scikit-learn's ``IsotonicRegression`` keeps its thresholds. None without rows."""
    if len(confidence) == 0:
        return None
    conf = np.asarray(confidence, dtype=np.float64)
    grid = np.round(conf / CALIBRATION_GRID).astype(np.int64)
    keys, inverse, weights = np.unique(grid, return_inverse=True, return_counts=True)
    hits = np.bincount(inverse, weights=np.asarray(correct, dtype=np.float64), minlength=len(keys))
    means = np.bincount(inverse, weights=conf, minlength=len(keys)) / weights  # one x per grid cell
    # blocks as parallel stacks: weight, correct rows, lowest and highest x
    w: list[float] = []
    s: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    for wi, si, xi in zip(weights.tolist(), hits.tolist(), means.tolist(), strict=True):
        w.append(wi)
        s.append(si)
        lo.append(xi)
        hi.append(xi)
        while len(w) > 1 and s[-2] / w[-2] > s[-1] / w[-1]:  # pool a violation
            w[-2 :] = [w[-2] + w[-1]]
            s[-2 :] = [s[-2] + s[-1]]
            lo.pop()
            hi[-2 :] = [hi[-1]]
    xs: list[float] = []
    ys: list[float] = []
    for wi, si, a, b in zip(w, s, lo, hi, strict=True):
        y = min(1.0, max(0.0, si / wi))
        xs.extend((a, b) if b > a else (a,))
        ys.extend((y, y) if b > a else (y,))
    return Calibration(x=tuple(np.maximum.accumulate(np.asarray(xs)).tolist()), y=tuple(ys), rows=len(conf))


def monitored_spec(spec: FeatureSpec, baseline: Baseline | None) -> FeatureSpec:
    """The spec monitoring reads: the registered one, with the held-out output baseline in
    place of the spec's, part by part where the held-out run recorded it (the held-out run
    is this very model's; a spec file may be shared by a model family's versions)."""
    if baseline is None or spec.output is None:
        return spec
    own = spec.output.baseline or OutputBaseline()
    ran = baseline.output
    merged = OutputBaseline(
        class_counts=ran.class_counts if ran.class_counts is not None else own.class_counts,
        confidence=ran.confidence if ran.confidence is not None else own.confidence,
        values=ran.values if ran.values is not None else own.values,
    )
    return replace(spec, output=replace(spec.output, baseline=merged))


class LabelReference:
    """What feedback truths are compared with for label drift: one bin per class, or the
    bins of a value histogram, and the reference share of each.

    Attributes:
        labels: a printable name per bin.
        shares: ``(bins,)`` float64 reference shares (sum to 1).
        edges: the value histogram's edges (regression), or None (classes).
    """

    __slots__ = ("edges", "labels", "shares", "source")

    def __init__(self, labels: list[str], counts: Any, edges: Any, source: str) -> None:
        total = float(np.sum(counts))
        self.labels = labels
        self.shares = np.asarray(counts, dtype=np.float64) / total
        self.edges = None if edges is None else np.asarray(edges, dtype=np.float64)
        self.source = source
        """``training`` (the spec's target distribution) or ``holdout`` (``baseline.json``)."""

    @property
    def bins(self) -> int:
        return len(self.labels)

    def bin_values(self, values: NDArray[np.float64]) -> NDArray[np.intp]:
        """The bin of each truth: class indices as they are; values clamped into the histogram."""
        if self.edges is None:
            return np.asarray(values, dtype=np.intp)
        found: NDArray[np.intp] = np.clip(np.searchsorted(self.edges, values, side="right") - 1, 0, self.bins - 1)
        return found


def label_reference(spec: FeatureSpec, baseline: Baseline | None) -> LabelReference | None:
    """The training target's distribution recorded in the spec (``fit-spec`` records the
    class counts or a histogram of the target), else the held-out rows' true labels; None
    when neither holds one."""
    out = spec.output
    if out is None:
        return None
    for source, recorded in (("training", out.baseline), ("holdout", baseline.target if baseline else None)):
        if recorded is None:
            continue
        if out.task == "classification" and recorded.class_counts is not None and any(recorded.class_counts):
            return LabelReference(list(out.labels), recorded.class_counts, None, source)
        if out.task == "regression" and recorded.values is not None and any(recorded.values.counts):
            hist = recorded.values
            labels = [f"[{a:g},{b:g})" for a, b in zip(hist.edges, hist.edges[1:], strict=False)]
            return LabelReference(labels, hist.counts, hist.edges, source)
    return None


def histogram(values: NDArray[np.floating[Any]], edges: NDArray[np.float64]) -> HistogramBaseline:
    """Counts of ``values`` between ``edges``, the outer bins taking what lies beyond them
    (as live monitoring bins them)."""
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(bins, minlength=len(edges) - 1)
    return HistogramBaseline(edges=tuple(float(e) for e in edges), counts=tuple(int(c) for c in counts))


def missing_output_baseline(spec: FeatureSpec, baseline: Baseline | None) -> str | None:
    """One line saying the version has no output baseline to monitor its outputs against
    (a spec from ``fit-spec`` records none of the confidence), or None when it has one."""
    out = monitored_spec(spec, baseline).output
    if out is None:
        return None
    recorded = out.baseline or OutputBaseline()
    if out.task == "classification" and recorded.confidence is None:
        what = "confidence histogram: the confidence-drop alert cannot fire"
    elif out.task == "regression" and recorded.values is None:
        what = "value histogram: output drift is not measured"
    else:
        return None
    return f"no output baseline ({what}); register with --data HOLDOUT.csv (labelled held-out rows) to record one"
