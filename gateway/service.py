"""The transport-neutral core: predict, register, describe.

This is the only place that chains guards -> transform -> runtime -> monitoring. The
HTTP layer decodes a request into columns, calls ``predict``, and encodes the
``Outcome``; the V1 and V2 protocols share everything below the wire format.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec
import numpy as np

from gateway.baseline import encode_baseline
from gateway.errors import (
    GatewayError,
    InferenceFailedError,
    InputRejectedError,
    ModelConflictError,
    ReviewAnswerError,
    ReviewNotFoundError,
    UsageError,
)
from gateway.model_check.importance import compute_importance
from gateway.monitoring.metrics import PredictedBatch
from gateway.monitoring.reviews import review_entries
from gateway.registry import LoadedModel, load_runtime
from gateway.repository import BASELINE_FILE, IMPORTANCE_FILE, check_name, check_version
from gateway.rollout import registration

if TYPE_CHECKING:
    from pathlib import Path

    from numpy.typing import NDArray

    from gateway.guards import Checked
    from gateway.monitoring.feedback import PredictionLog
    from gateway.predlog import PayloadLog
    from gateway.registry import ModelRegistry
    from gateway.repository import ModelRepository
    from gateway.rollout import Mode
    from gateway.runtime import Inference
    from gateway.shadow import Shadow
    from gateway.table import Columns
    from gateway.violations import Violation

__all__ = [
    "FeedbackItem",
    "FeedbackRequest",
    "Outcome",
    "Prepared",
    "answer_review",
    "complete",
    "predict",
    "prepare",
    "record_feedback",
    "register_model",
    "reject",
]


class Outcome:
    """The answer for one predicted batch.

    Attributes:
        model: the exact version that answered.
        ids: one prediction id per row (send feedback against it).
        probabilities: ``(n, k)`` float32 in label order (classification), else None.
        label_index: ``(n,)`` index of the top class (classification), else None.
        confidence: ``(n,)`` top-class probability (classification), else None.
        values: ``(n,)`` predictions (regression), else None.
        marks: row -> flag/clip violations of rows predicted despite them.
        review: bool mask of rows below the spec's review threshold, or None.
        stages: ``time.perf_counter()`` as the guards started and as validation, the
            transform, inference and monitoring ended (set by ``complete``): the spans of a
            traced request (``gateway.tracing``).
    """

    __slots__ = ("confidence", "ids", "label_index", "marks", "model", "probabilities", "review", "stages", "values")

    def __init__(self, model: LoadedModel, ids: list[str]) -> None:
        self.model = model
        self.ids = ids
        self.probabilities: NDArray[np.float32] | None = None
        self.label_index: NDArray[np.intp] | None = None
        self.confidence: NDArray[np.float32] | None = None
        self.values: NDArray[np.float32] | None = None
        self.marks: dict[int, list[Violation]] = {}
        self.review: NDArray[np.bool_] | None = None
        self.stages: tuple[float, float, float, float, float]  # by ``complete``: no cost here


class Prepared:
    """A batch that went through the guards and the transform, not yet predicted.

    Holds no lock and has touched no shared state: it may be computed on a worker thread
    and thrown away (a missed deadline) without anything having been counted.
    """

    __slots__ = ("checked", "matrix", "raw", "t0", "t1", "t2")

    def __init__(
        self, checked: Checked, matrix: NDArray[np.float32] | None, t0: float, t1: float, t2: float, raw: Any = None
    ) -> None:
        self.checked = checked
        self.matrix = matrix
        self.t0, self.t1, self.t2 = t0, t1, t2
        self.raw = raw
        """The batch as the client sent it (``Columns``): what a review entry shows."""


def prepare(model: LoadedModel, columns: Columns, *, guarded: bool = True) -> Prepared:
    """Guard and transform one batch. A rejected batch comes back with no matrix; pass it
    to ``reject``. ``guarded=False`` is for benchmarks only (see ``Settings.guards``)."""
    t0 = time.perf_counter()
    checked = model.guards.check(columns) if guarded else model.guards.trust(columns)
    t1 = time.perf_counter()
    if checked.rejected is not None:
        return Prepared(checked, None, t0, t1, t1, columns)
    matrix = model.transform.apply(checked.columns, checked.n_rows, checked.matrix, checked.row)
    return Prepared(checked, matrix, t0, t1, time.perf_counter(), columns)


def reject(model: LoadedModel, prepared: Prepared, *, monitored: bool = True) -> NoReturn:
    """Count a rejected batch and raise its ``InputRejectedError``."""
    checked = prepared.checked
    n = checked.n_rows
    rejecting = [v for v in checked.violations if v.action == "reject"]
    assert checked.rejected is not None
    if monitored:
        model.metrics.time_stage("validate", prepared.t1 - prepared.t0)
        model.metrics.count_rejected(n, checked.violations, checked)
    bad = int(checked.rejected.sum())
    raise InputRejectedError(
        f"{bad} of {n} rows break the feature spec of {model.name!r}; no row was predicted ({summarize(rejecting)})",
        rejecting,
        rows=n,
        rejected_rows=bad,
    )


def complete(
    model: LoadedModel,
    prepared: Prepared,
    inference: Inference,
    t3: float,
    log: PredictionLog,
    *,
    monitored: bool = True,
) -> Outcome:
    """Turn what the model said into an ``Outcome``, give it prediction ids and count it.

    Raises ``InferenceFailedError`` if the model answered NaN or infinity: a prediction
    nobody can trust is never sent as a silent ``null``.
    """
    checked = prepared.checked
    n = checked.n_rows
    outcome = Outcome(model, [])
    if inference.probabilities is not None:
        probabilities = inference.probabilities
        outcome.probabilities = probabilities
        threshold = model.spec.output.review_threshold if model.spec.output is not None else None
        if n == 1:  # the common request: a few Python floats, not four numpy reductions
            top = probabilities[0].tolist()
            finite = all(map(math.isfinite, top))
            confidence = max(top)
            outcome.label_index = np.array([top.index(confidence)])  # the first maximum, as argmax
            outcome.confidence = np.array([confidence], dtype=np.float32)
            if threshold is not None and confidence < threshold:
                outcome.review = np.ones(1, dtype=np.bool_)
        else:
            outcome.label_index = probabilities.argmax(axis=1)
            outcome.confidence = probabilities.max(axis=1)
            finite = bool(np.isfinite(probabilities).all())
            if threshold is not None:
                review = outcome.confidence < threshold
                outcome.review = review if review.any() else None
    else:
        outcome.values = inference.values
        finite = np.isfinite(inference.values.sum())  # type: ignore[union-attr]
    if not finite:
        if monitored:
            model.metrics.count_nonfinite_outputs(n)
        raise InferenceFailedError(
            f"the model {model.name!r} produced a non-finite output (NaN or infinity); nothing was predicted"
        )
    if not monitored:
        outcome.ids = [""] * n
        outcome.stages = (prepared.t0, prepared.t1, prepared.t2, t3, t3)
        return outcome
    slicing = model.metrics.slicing
    segments: Any = 0
    if slicing.count:
        columns = checked.columns
        if n == 1 and type(columns[slicing.segment_names[0]]) is list:
            segments = slicing.pack_one(columns, checked.imputed)
        else:
            imputed = {k: v for k, v in checked.imputed.items() if k in slicing.segment_names}
            segments = slicing.pack(slicing.codes(columns, imputed, n))
    outcome.ids = log.record(model.name, model.version, n, outcome.label_index, outcome.values, segments)
    if checked.violations:
        for v in checked.violations:
            outcome.marks.setdefault(v.row, []).append(v)
    reviews = model.metrics.reviews
    if reviews is not None and (outcome.review is not None or checked.flagged is not None):
        entries = review_entries(model, prepared, outcome, outcome.review)
        if entries:
            reviews.add(model.name, entries)
    model.metrics.count_predicted(
        PredictedBatch(
            rows=n,
            violations=checked.violations,
            flagged=int(checked.flagged.sum()) if checked.flagged is not None else 0,
            clipped=int(checked.clipped.sum()) if checked.clipped is not None else 0,
            review=int(outcome.review.sum()) if outcome.review is not None else 0,
            columns=checked.columns,
            imputed=checked.imputed,
            probabilities=outcome.probabilities,
            values=outcome.values,
        )
    )
    t4 = time.perf_counter()
    model.metrics.time_stages(prepared.t1 - prepared.t0, prepared.t2 - prepared.t1, t3 - prepared.t2, t4 - t3)
    outcome.stages = (prepared.t0, prepared.t1, prepared.t2, t3, t4)
    return outcome


def predict(
    model: LoadedModel, columns: Columns, log: PredictionLog, *, guarded: bool = True, monitored: bool = True
) -> Outcome:
    """Guard, transform, infer and monitor one batch, on the calling thread.

    ``guarded`` and ``monitored`` are for benchmarks only (see ``Settings.guards``).

    Raises:
        InputRejectedError: a row breaks the spec (nothing reached the model).
        InferenceFailedError: onnxruntime failed, or answered NaN or infinity.
    """
    prepared = prepare(model, columns, guarded=guarded)
    if prepared.matrix is None:
        reject(model, prepared, monitored=monitored)
    inference = model.runtime.run(prepared.matrix)
    return complete(model, prepared, inference, time.perf_counter(), log, monitored=monitored)


class FeedbackItem(msgspec.Struct, forbid_unknown_fields=True):
    """Ground truth for one earlier prediction: ``label`` (classifiers) or ``value``."""

    id: str
    label: str | int | bool | None = None
    value: float | None = None


class FeedbackRequest(msgspec.Struct, forbid_unknown_fields=True):
    feedback: list[FeedbackItem]


def record_feedback(
    model_registry: ModelRegistry,
    log: PredictionLog,
    name: str,
    items: list[FeedbackItem],
    shadow: Shadow | None = None,
    payloads: PayloadLog | None = None,
) -> dict[str, Any]:
    """Join ground truth to earlier predictions and update the online metrics; the truths
    that joined are also written to the prediction log ``payloads``, if one is kept.

    Ids that are unknown, expired or whose truth is not a valid label/value are counted
    and reported; they never fail the batch. With several workers, ``log.join`` finds each
    id in the ring of the worker that predicted it. ``shadow``: the matched feedback also
    scores a shadow candidate's predictions of the same rows (``Shadow.score_feedback``).
    """
    default = model_registry.get(name)
    versions, predicted_labels, predicted_values, segments, status = log.join_segments(name, [item.id for item in items])
    output = default.spec.output
    classification = output is not None and output.task == "classification"
    label_index = {label: i for i, label in enumerate(output.labels)} if classification and output else {}
    counts = {"matched": 0, "unknown_id": 0, "expired": 0, "duplicate": 0, "invalid": 0}
    invalid: list[dict[str, Any]] = []
    matched_items: list[tuple[int, int, float]] = []  # (position among the matched, version, truth)
    joined: list[tuple[str, str | float]] = []  # (id, label or value) of each matched item
    position = 0
    for i, (item, state) in enumerate(zip(items, status, strict=True)):
        if state != "matched":
            counts[state] += 1
            continue
        version = int(versions[position])
        slot_pos = position
        position += 1
        if classification:
            truth = _label_text(item.label)
            if truth not in label_index:
                counts["invalid"] += 1
                invalid.append(
                    {"index": i, "id": item.id, "reason": f"label {truth!r} is not one of {list(label_index)}"}
                )
                continue
            matched_items.append((slot_pos, version, float(label_index[truth])))
            joined.append((item.id, truth))
        else:
            if item.value is None or not np.isfinite(item.value):
                counts["invalid"] += 1
                invalid.append({"index": i, "id": item.id, "reason": "a regression's feedback needs a finite 'value'"})
                continue
            matched_items.append((slot_pos, version, float(item.value)))
            joined.append((item.id, float(item.value)))
        counts["matched"] += 1
    by_version: dict[int, list[tuple[int, float]]] = {}
    for slot_pos, version, value in matched_items:
        by_version.setdefault(version, []).append((slot_pos, value))
    for version, pairs in by_version.items():
        try:
            target = model_registry.get(name, version)
        except GatewayError:
            target = default  # that version is no longer served: count it on the default
        index = np.asarray([s for s, _ in pairs], dtype=np.intp)
        truths = np.asarray([t for _, t in pairs], dtype=np.float64)
        metrics = target.metrics
        reference = metrics.label_reference
        truth_bins = reference.bin_values(truths) if reference is not None else None
        with metrics.lock:
            if classification:
                correct = predicted_labels[index] == truths.astype(np.int32)
                metrics.feedback.add(correct=correct, truth_bins=truth_bins)
                if metrics.slicing.count:
                    metrics.segments.add_feedback(segments[index], correct=correct)
            else:
                errors = predicted_values[index] - truths
                metrics.feedback.add(errors=errors, truth_bins=truth_bins)
                if metrics.slicing.count:
                    metrics.segments.add_feedback(segments[index], errors=errors)
            metrics.feedback_counts["matched"] += len(pairs)
    if shadow is not None and matched_items:
        index = np.asarray([s for s, _, _ in matched_items], dtype=np.intp)
        answered = predicted_labels[index].astype(np.float64) if classification else predicted_values[index]
        truths = np.asarray([t for _, _, t in matched_items], dtype=np.float64)
        shadow.score_feedback(name, [i for i, _ in joined], answered, truths, classification)
    with default.metrics.lock:
        for outcome in ("unknown_id", "expired", "duplicate", "invalid"):
            default.metrics.feedback_counts[outcome] += counts[outcome]
    if payloads is not None and joined:
        payloads.feedback(name, joined)
    return {"received": len(items), **counts, "problems": invalid}


def answer_review(
    model_registry: ModelRegistry,
    log: PredictionLog,
    name: str,
    review_id: str,
    answer: Any,
    shadow: Shadow | None = None,
    payloads: PayloadLog | None = None,
) -> dict[str, Any]:
    """A person's answer to a queued row (``gateway.monitoring.reviews``): ``{"label": ...}``
    (classifiers) or ``{"value": ...}`` (regressors). Checked first, then the row is taken off
    the queue and the answer recorded as feedback for that prediction.

    Raises:
        ModelNotFoundError: no such model. ReviewNotFoundError: no such row in its queue.
        ReviewAnswerError: a label the model does not know, a value that is not a finite
            number, or neither (nothing is recorded, the row stays).
    """
    model = model_registry.get(name)
    reviews = model.metrics.reviews
    entry = reviews.get(name, review_id) if reviews is not None else None
    if entry is None:
        raise ReviewNotFoundError(f"no row {review_id[:80]!r} waits in the review queue of {name!r}")
    output = model.spec.output
    if not isinstance(answer, dict) or set(answer) - {"label", "value"} or len(answer) != 1:
        raise ReviewAnswerError('a review answer is {"label": ...} for a classifier or {"value": ...} for a regressor')
    if output is not None and output.task == "classification":
        label = answer.get("label")
        if "label" not in answer or not isinstance(label, str | int | bool) or _label_text(label) not in output.labels:
            raise ReviewAnswerError(f"label {label!r} is not one of the model's labels {list(output.labels)}")
        item = FeedbackItem(review_id, label=label)
        agreed: bool | None = _label_text(label) == entry["prediction"].get("label")
    else:
        value = answer.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ReviewAnswerError(f"a regressor's review answer needs a finite number 'value', not {value!r}")
        item = FeedbackItem(review_id, value=float(value))
        agreed = None
    assert reviews is not None
    if not reviews.take(name, review_id, agreed):
        raise ReviewNotFoundError(f"row {review_id[:80]!r} of {name!r} was answered meanwhile")
    result = record_feedback(model_registry, log, name, [item], shadow=shadow, payloads=payloads)
    outcome = next(k for k in ("matched", "unknown_id", "expired", "duplicate", "invalid") if result[k])
    return {"id": review_id, **answer, "agreed": agreed, "feedback": outcome}


def _label_text(label: Any) -> str:
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


def _printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped (``\\n``,
    ``\\x1b``): a client's field name must not break a line or drive a terminal in logs
    or in whatever shows ``error``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def summarize(violations: list[Violation], limit: int = 3) -> str:
    """The first violations in words, for clients that only show the message (a stock
    V2 client sees ``error`` alone, not the ``violations`` list)."""
    parts = [f"row {v.row} {_printable(v.feature)}: {v.reason}" for v in violations[:limit]]
    more = len(violations) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def register_model(
    model_registry: ModelRegistry,
    repository: ModelRepository,
    name: str,
    version: int | str | None,
    model: bytes,
    spec_text: bytes,
    intra_op_threads: int = 1,
    data: Path | None = None,
    data_name: str = "",
    *,
    rollout: tuple[Mode, float] | None = None,
) -> LoadedModel:
    """Check, load, store and serve a new version. A refusal changes nothing.

    Each feature's permutation importance is computed (on the rows of ``data`` and their
    targets when given; else on rows drawn from the spec's baselines) in a limited child,
    bounded in time, and stored with the version (``IMPORTANCE_FILE``).

    ``rollout``: (``shadow`` or ``canary``, share): the version becomes the rollout's
    candidate, not the primary (``gateway.rollout.registration``).

    The model is loaded and checked against the spec before anything is written, so a
    bad bundle never reaches the repository; the version folder is then written
    atomically, and the loaded model swapped in.

    With ``data`` (a labelled held-out file), the loaded model is run on its rows through
    the spec (``gateway.evaluation``) before anything is written, and what it did is
    stored with the version as ``baseline.json`` (``gateway.baseline``). It runs here,
    after the trial load in the resource-limited child (``gateway.model_check``) has
    proved the file safe to load, because the figures must come from the very code that
    serves: the spec's guards and transform and this process's ``OnnxRuntime``.

    Raises:
        UsageError: a bad name or version; a data file without the target column.
        SpecError / SpecMismatchError: the spec is invalid or does not fit the model.
        ModelConflictError: the version exists.
    """
    check_name(name)
    number = check_version(version) if version is not None else repository.next_version(name)
    if number in repository.versions(name) or model_registry.known(name, number):
        raise ModelConflictError(f"{name} version {number} exists already; versions are immutable, register a new one")
    if not model:
        raise UsageError("the model file is empty")
    spec, runtime = load_runtime(name, number, model, spec_text, intra_op_threads)
    baseline = None
    rows: Any = None
    labels: Any = None
    if data is not None:
        from gateway.evaluation import baseline_of, evaluate, read_labelled

        name_shown = data_name or data.name
        try:
            columns = read_labelled(data, spec)
        except UsageError as exc:  # said of the file as the client named it, never of a server path
            raise UsageError(str(exc).replace(str(data), name_shown)) from None
        baseline = baseline_of(evaluate(spec, runtime, columns), name_shown)
        assert spec.output is not None and spec.output.target is not None  # read_labelled checked
        labels = columns[spec.output.target]
        rows = {k: v for k, v in columns.items() if k in spec.feature_names}
    loaded = LoadedModel(name, number, spec, runtime, model_registry.monitor, baseline)
    importance = compute_importance(model, spec, rows, labels)
    loaded.metrics.importance = importance
    extra = {}
    if baseline is not None:
        extra[BASELINE_FILE] = encode_baseline(baseline)
    if importance is not None:
        extra[IMPORTANCE_FILE] = importance.to_json()
    mode, share = rollout if rollout is not None else (None, 1.0)
    finish = registration(repository.root, name, number, repository.versions(name), mode, share)
    try:
        repository.add(name, number, model, spec_text, extra)
    except BaseException:
        finish(False)
        raise
    model_registry.add(loaded)
    finish(True)
    return loaded
