"""Offline evaluation: a model version scored on labelled rows, through the serving code.

``evaluate(spec, runtime, data)`` runs rows exactly as the server would: the spec's guards
decide which rows are refused (and why), the accepted rows go through the spec's transform
and the model's ``Runtime`` (``gateway.runtime``: the same probability columns, label
order and output reading as a prediction). The rows' true target (the column the spec's
output names) is then compared with what the model said:

- classification: accuracy, macro F1 (the mean of the per-class F1 over the classes that
  occur in the truth or the predictions, as scikit-learn's ``f1_score(average="macro")``),
  log loss (natural log, probabilities clipped at 1e-15) and, with two classes, ROC AUC
  (the Mann-Whitney statistic of the second label's probability, ties counted half);
- regression: MAE, RMSE and R².

numpy only: scikit-learn is not a runtime dependency (the tests check these figures
against it). ``driftgate evaluate`` (``gateway.cli``) compares a candidate with a served
version on the rows both accept; ``driftgate register --data`` records a version's figures
(``gateway.baseline``). This module must not know about HTTP or the repository.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.baseline import Baseline, fit_calibration, histogram
from gateway.errors import InferenceFailedError, UsageError
from gateway.spec import FeatureSpec, HistogramBaseline, OutputBaseline
from gateway.table import to_columns

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from gateway.runtime import Runtime

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "Evaluation",
    "baseline_of",
    "classification_metrics",
    "evaluate",
    "read_labelled",
    "regression_metrics",
]

METRICS = {
    "classification": ("accuracy", "macro_f1", "log_loss", "roc_auc"),
    "regression": ("mae", "rmse", "r2"),
}
HIGHER_IS_BETTER = frozenset({"accuracy", "macro_f1", "roc_auc", "r2"})
"""The others (log loss, MAE, RMSE) are better lower."""

LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped to [1e-15, 1] before the log: one confident mistake costs
about 34.5, not infinity (scikit-learn's long-standing clip)."""
RUN_ROWS = 4096
"""Rows per model call: the server's default batch limit."""
CONFIDENCE_EDGES = tuple(i / 10 for i in range(11))
"""The confidence histogram's edges: tenths, the live histogram's default buckets
(``gateway.monitoring.metrics.CONFIDENCE_BUCKETS``), so live and held-out bins line up."""
VALUE_BINS = 20
"""Bins of a regressor's value histogram when the spec records none (as ``fit-spec``)."""


def _label_text(value: Any) -> str | None:
    """A target cell as a label, spelt as feedback labels are (``true``/``false``; a
    whole float such as 3.0 read from a file as 3)."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return None
        if float(value).is_integer():
            return str(int(value))
    return str(value)


def read_labelled(path: str | Path, spec: FeatureSpec) -> dict[str, Any]:
    """A labelled data file as columns (``gateway.datafile``). Raises ``UsageError`` when
    the spec names no target, or the file has no column of that name."""
    from gateway.datafile import read_columns

    target = spec.output.target if spec.output is not None else None
    if target is None:
        raise UsageError(f"the spec {spec.name!r} names no target column (its output's 'target'): cannot score labelled rows")
    data = read_columns(path, spec, text=frozenset({target}) if spec.output and spec.output.task == "classification" else frozenset())
    if target not in data:
        raise UsageError(f"{path}: no column {target!r} (the spec's target): offline evaluation needs labelled rows")
    if not any(name in data for name in spec.feature_names):
        raise UsageError(f"{path}: none of the spec's features {list(spec.feature_names)[:5]} is a column")
    return data


def _take(column: Any, index: NDArray[np.intp]) -> Any:
    if isinstance(column, np.ndarray):
        return column[index]
    return [column[i] for i in index.tolist()]


class Evaluation:
    """A model's answers on labelled rows, row for row with the data.

    Attributes:
        task: ``classification`` or ``regression``.
        rows: rows in the data.
        accepted: ``(rows,)`` bool: the spec accepted the row (it was predicted).
        truth: ``(rows,)`` float64: the label's index (classification) or the true value;
            NaN where the target is missing, not finite, or a label the spec does not know.
        probabilities: ``(rows, labels)`` float64 (NaN on refused rows), or None.
        values: ``(rows,)`` float64 predictions (NaN on refused rows), or None.
        refusals: ``{(feature, reason): rows}``: the rows the spec refused and why.
    """

    def __init__(self, spec: FeatureSpec, rows: int) -> None:
        assert spec.output is not None
        self.spec = spec
        self.task = spec.output.task
        self.labels = spec.output.labels
        self.rows = rows
        self.accepted = np.zeros(rows, dtype=np.bool_)
        self.truth = np.full(rows, np.nan)
        self.probabilities: NDArray[np.float64] | None = None
        self.values: NDArray[np.float64] | None = None
        self.refusals: dict[tuple[str, str], int] = {}

    @property
    def labelled(self) -> NDArray[np.bool_]:
        out: NDArray[np.bool_] = ~np.isnan(self.truth)
        return out

    @property
    def scored(self) -> NDArray[np.bool_]:
        """Rows that were predicted and carry a usable target."""
        out: NDArray[np.bool_] = self.accepted & self.labelled
        return out

    def metrics(self, mask: NDArray[np.bool_] | None = None) -> dict[str, float]:
        """The offline figures on the scored rows (of ``mask``, when given)."""
        rows = self.scored if mask is None else self.scored & mask
        if not rows.any():
            return {}
        if self.probabilities is not None:
            return classification_metrics(self.truth[rows].astype(np.intp), self.probabilities[rows], len(self.labels))
        assert self.values is not None
        return regression_metrics(self.truth[rows], self.values[rows])

    def refusal_lines(self) -> list[tuple[str, str, int]]:
        """(feature, reason, rows), most rows first."""
        return sorted(((f, r, n) for (f, r), n in self.refusals.items()), key=lambda x: (-x[2], x[0], x[1]))


def evaluate(spec: FeatureSpec, runtime: Runtime, data: dict[str, Any]) -> Evaluation:
    """Score ``runtime`` on labelled columns (``read_labelled``) through ``spec``.

    Raises:
        InferenceFailedError: the model failed, or answered NaN or infinity.
    """
    assert spec.output is not None and spec.output.target is not None
    target = data[spec.output.target]
    n = len(target)
    result = Evaluation(spec, n)
    result.truth = _truth(spec, target)
    features = {name: data[name] for name in spec.feature_names if name in data}
    checked = spec.guards.check(to_columns(features, spec.feature_names))
    rejected = checked.rejected if checked.rejected is not None else np.zeros(n, dtype=np.bool_)
    refused_rows: dict[tuple[str, str], set[int]] = {}
    for v in checked.violations:
        if v.action == "reject":
            refused_rows.setdefault((v.feature, v.reason), set()).add(v.row)
    result.refusals = {key: len(rows) for key, rows in refused_rows.items()}
    index = np.flatnonzero(~rejected)
    result.accepted[index] = True
    if result.task == "classification":
        result.probabilities = np.full((n, len(result.labels)), np.nan)
    else:
        result.values = np.full(n, np.nan)
    if len(index):
        matrix = spec.transform({name: _take(col, index) for name, col in features.items()})
        for start in range(0, len(index), RUN_ROWS):
            part = index[start : start + RUN_ROWS]
            said = runtime.run(matrix[start : start + RUN_ROWS])
            out = said.probabilities if said.probabilities is not None else said.values
            if out is None or not np.isfinite(out).all():
                raise InferenceFailedError("the model answered NaN or infinity on the data; it cannot be scored")
            if result.probabilities is not None:
                result.probabilities[part] = out
            else:
                assert result.values is not None
                result.values[part] = out
    return result


def _truth(spec: FeatureSpec, target: Sequence[Any] | NDArray[Any]) -> NDArray[np.float64]:
    assert spec.output is not None
    cells = target.tolist() if isinstance(target, np.ndarray) else list(target)
    if spec.output.task == "classification":
        index = {label: float(i) for i, label in enumerate(spec.output.labels)}
        return np.array([index.get(_label_text(c) or "", np.nan) for c in cells], dtype=np.float64)
    out = np.full(len(cells), np.nan)
    for i, c in enumerate(cells):
        if isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c):
            out[i] = float(c)
    return out


def classification_metrics(truth: NDArray[np.intp], probabilities: NDArray[np.floating[Any]], n_labels: int) -> dict[str, float]:
    """Accuracy, macro F1, log loss and (two labels) ROC AUC; see the module docstring."""
    p = np.asarray(probabilities, dtype=np.float64)
    predicted = p.argmax(axis=1)
    n = len(truth)
    out = {"accuracy": float(np.mean(predicted == truth))}
    true_counts = np.bincount(truth, minlength=n_labels)
    predicted_counts = np.bincount(predicted, minlength=n_labels)
    hits = np.bincount(truth[predicted == truth], minlength=n_labels)
    present = (true_counts + predicted_counts) > 0
    f1 = 2 * hits[present] / (true_counts[present] + predicted_counts[present])
    out["macro_f1"] = float(f1.mean())
    picked = np.clip(p[np.arange(n), truth], LOG_LOSS_EPS, 1.0)
    out["log_loss"] = float(-np.mean(np.log(picked)))
    if n_labels == 2:
        auc = roc_auc(truth == 1, p[:, 1])
        if auc is not None:
            out["roc_auc"] = auc
    return out


def roc_auc(positive: NDArray[np.bool_], score: NDArray[np.float64]) -> float | None:
    """Area under the ROC curve: the chance a positive outscores a negative (ties: half).
    None when only one class occurs."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def regression_metrics(truth: NDArray[np.float64], predicted: NDArray[np.float64]) -> dict[str, float]:
    """MAE, RMSE and R² (R² left out when the truth is constant)."""
    error = predicted - truth
    out = {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error * error)))}
    spread = float(np.sum((truth - truth.mean()) ** 2))
    if spread > 0:
        out["r2"] = 1.0 - float(np.sum(error * error)) / spread
    return out


def baseline_of(result: Evaluation, data_name: str = "") -> Baseline:
    """What ``register --data`` stores: the figures, the output and target baselines, and
    the confidence calibration (classifiers), from the scored rows."""
    spec = result.spec
    assert spec.output is not None
    rows = result.scored
    if not rows.any():
        raise UsageError("no held-out row could be scored (every row was refused or had no known target)")
    truth = result.truth[rows]
    calibration = None
    if result.probabilities is not None:
        p = result.probabilities[rows]
        k = len(result.labels)
        confidence = p.max(axis=1)
        predicted = p.argmax(axis=1)
        output = OutputBaseline(
            class_counts=tuple(int(c) for c in np.bincount(predicted, minlength=k)),
            confidence=histogram(confidence, np.asarray(CONFIDENCE_EDGES)),
        )
        target = OutputBaseline(class_counts=tuple(int(c) for c in np.bincount(truth.astype(np.intp), minlength=k)))
        calibration = fit_calibration(confidence, predicted == truth.astype(np.intp))
    else:
        assert result.values is not None
        values = result.values[rows]
        edges = _value_edges(spec.output.baseline.values if spec.output.baseline else None, values, truth)
        output = OutputBaseline(values=histogram(values, edges))
        target = OutputBaseline(values=histogram(truth, edges))
    refused = {f"{feature}: {reason}": n for (feature, reason), n in sorted(result.refusals.items())}
    return Baseline(
        task=result.task,
        rows=result.rows,
        scored_rows=int(rows.sum()),
        metrics=result.metrics(),
        output=output,
        target=target,
        calibration=calibration,
        refused=refused,
        data=data_name,
        spec_digest=spec.digest,
    )


def _value_edges(
    recorded: HistogramBaseline | None, values: NDArray[np.float64], truth: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The spec's value histogram edges (so live and held-out bins line up), else
    ``VALUE_BINS`` equal bins over the predictions and truths."""
    if recorded is not None:
        return np.asarray(recorded.edges, dtype=np.float64)
    low = float(min(values.min(), truth.min()))
    high = float(max(values.max(), truth.max()))
    if not high > low:
        high = low + 1.0
    return np.linspace(low, high, VALUE_BINS + 1)
