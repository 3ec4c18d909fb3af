"""Shadow execution: the candidate predicts what the primary answered, off the response path.

``Shadow.mirror`` is called by the dispatcher (``gateway.dispatch``) after the primary has
answered an unpinned request, and only puts the request's raw columns on a bounded queue
(``queue.Full``: the rows are dropped and counted, never the primary's answer). One
worker thread drains the queue, several requests at a time:

1. the candidate's **own** spec guards and transforms each request's raw rows (a retrained
   spec may differ from the primary's: other ranges, other categories, other features);
   rows it refuses are counted ``rejected``, with their violations by feature and reason,
   on the candidate's metrics;
2. the accepted requests' matrices are stacked and run through the candidate's model in
   one call;
3. each request's share is completed as any prediction is (``gateway.service.complete``:
   every per-version metric of the candidate counts it), compared with the primary's
   answer (``agreed``: the same label; a regressor's value within the rollout's tolerance),
   and recorded in the shadow ring under the **primary answer's id**, so that feedback sent
   against that id scores both versions on the same row (``score_feedback``).

``on_result`` is the one place where a shadow result is known (the primary's ids and the
candidate's outcome): whatever else wants shadow results (a prediction log) hooks there.

Counts (``gateway.monitoring.metrics.SHADOW_OUTCOMES``): ``driftgate_shadow_rows_total{model,version,outcome}``
(``compared``, with ``agreed`` among them; ``rejected``: its spec refused a row the primary
took; ``dropped``: the queue was full; ``failed``: its model failed or answered NaN) and ``driftgate_shadow_agreement`` come from the candidate's
``ModelMetrics.shadow`` counts; they are published and merged across workers as every
other metric is.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.errors import GatewayError
from gateway.monitoring.feedback import PredictionLog, SharedPredictionLog
from gateway.service import Outcome, complete, prepare
from gateway.table import Columns

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from gateway.registry import LoadedModel
    from gateway.rollout import Rollouts

__all__ = ["QUEUE_REQUESTS", "Shadow", "ShadowLog", "SharedShadowLog", "shadow_log_path"]

log = logging.getLogger("driftgate.shadow")

QUEUE_REQUESTS = 4096
"""Requests waiting for the shadow worker at most; more are dropped (and counted)."""
BATCH_REQUESTS = 64
"""Requests the worker takes from the queue at once (one model call for all of them)."""
_yield = time.sleep
"""``_yield(0)`` between the stages of a batch: the worker lets go of the GIL, so the event
loop answering the primary's requests waits for one stage at most, never for a batch
(a thread that wants the GIL otherwise waits up to the 5 ms switch interval)."""
LINGER_SECONDS = 0.02
"""After the first request of a batch, the worker waits this long for more: a batch costs
about 0.5 ms plus 15 us a row (penguins, one core), so small batches cost the primary's
core more than the rows do (at 2,500 requests/s: 50 requests a batch, about 25 us a row,
against some 400 us a request). The shadow is late by as much; no client waits for it."""


def _counters(ids: Sequence[str]) -> NDArray[np.int64]:
    return np.fromiter((int(i.rpartition("-")[2], 16) for i in ids), dtype=np.int64, count=len(ids))


class _AtCounters:
    """A prediction ring that records at given counters (the primary answer's ids) rather
    than issuing new ones: ``at`` is set by the shadow worker (its only writer) before
    each ``complete``."""

    at: Sequence[str] = ()

    def record(self: Any, model: str, version: int, n: int, labels: Any, values: Any, segments: Any = 0) -> list[str]:
        ids = list(self.at)
        if not ids or not ids[0]:
            return [""] * n  # the primary was not monitored: no ids to key the shadow by
        counters = _counters(ids)
        self.write(counters % self.capacity, counters, model, version, labels, values, segments)
        top = int(counters.max())
        self.issued = max(self.issued, top)
        return ids


class ShadowLog(_AtCounters, PredictionLog):
    """The shadow predictions of one process, keyed by the primary's ids."""


class SharedShadowLog(_AtCounters, SharedPredictionLog):
    """The shadow ring of one worker of several (``shadow-<worker>.bin`` in the state folder)."""

    def path(self, worker: int) -> Path:
        return shadow_log_path(self.folder, worker)


def shadow_log_path(folder: Path, worker: int) -> Path:
    return folder / f"shadow-{worker}.bin"


class ShadowJob:
    """Rows the primary answered, waiting for the shadow candidate: the raw columns (for the
    candidate's spec), and the primary's ids and labels or values."""

    __slots__ = ("candidate", "columns", "ids", "labels", "primary", "values")

    def __init__(
        self,
        primary: LoadedModel,
        candidate: LoadedModel,
        columns: Columns,
        ids: list[str],
        labels: NDArray[np.intp] | None,
        values: NDArray[np.float32] | None,
    ) -> None:
        self.primary = primary
        self.candidate = candidate
        self.columns = columns
        self.ids = ids
        self.labels = labels
        self.values = values

    @classmethod
    def of(cls, primary: LoadedModel, candidate: LoadedModel, columns: Columns, outcome: Outcome) -> ShadowJob:
        return cls(primary, candidate, columns, outcome.ids, outcome.label_index, outcome.values)

    @classmethod
    def merge(cls, jobs: list[ShadowJob]) -> ShadowJob:
        """The rows of ``jobs`` (one primary, one candidate) as one job, in order; each
        request's columns read for the candidate's spec (``candidate_columns``)."""
        first = jobs[0]
        primary, candidate = first.primary, first.candidate
        if candidate.spec.feature_names == primary.spec.feature_names:  # the common case, decided once
            columns = concat_columns([j.columns for j in jobs])
        else:
            columns = concat_columns([candidate_columns(j.columns, primary, candidate) for j in jobs])
        if len(jobs) == 1:
            return cls(primary, candidate, columns, first.ids, first.labels, first.values)
        labels = None if first.labels is None else np.concatenate([j.labels for j in jobs])
        values = None if first.values is None else np.concatenate([j.values for j in jobs])
        return cls(primary, candidate, columns, [i for j in jobs for i in j.ids], labels, values)

    def subset(self, keep: NDArray[np.bool_]) -> ShadowJob:
        """The rows ``keep`` marks."""
        rows = np.flatnonzero(keep)
        return ShadowJob(
            self.primary,
            self.candidate,
            take_rows(self.columns, rows),
            [self.ids[i] for i in rows.tolist()] if self.ids else self.ids,
            None if self.labels is None else self.labels[rows],
            None if self.values is None else self.values[rows],
        )


def _cells(column: Any) -> list[Any]:
    return column.tolist() if isinstance(column, np.ndarray) else list(column)


def concat_columns(parts: list[Columns]) -> Columns:
    """Several requests' raw columns as one batch (the guards judge each row by itself)."""
    if len(parts) == 1:
        return parts[0]
    names = list(dict.fromkeys(name for c in parts for name in c.data))
    data: dict[str, Any] = {}
    same_keys = all(type(c.data) is dict and c.data.keys() == parts[0].data.keys() for c in parts)
    if same_keys and all(type(col) is list for c in parts for col in c.data.values()):  # records: lists of cells
        data = {name: [cell for c in parts for cell in c.data[name]] for name in names}
        names = []
    for name in names:
        cells: list[Any] = []
        for c in parts:
            column = c.data.get(name)
            cells += [None] * c.n_rows if column is None else _cells(column)
        data[name] = cells
    missing: dict[str, Any] = {}
    for name in {k for c in parts for k in c.missing}:
        missing[name] = np.concatenate([c.missing.get(name, np.zeros(c.n_rows, dtype=np.bool_)) for c in parts])
    unknown: list[tuple[int, str, Any]] = []
    offset = 0
    for c in parts:
        unknown += [(row + offset, field, value) for row, field, value in c.unknown]
        offset += c.n_rows
    return Columns(offset, data, missing, unknown)


def take_rows(columns: Columns, rows: NDArray[np.intp]) -> Columns:
    """The rows ``rows`` (ascending) of ``columns``."""
    index = rows.tolist()
    data = {name: [cells[i] for i in index] for name, cells in ((k, _cells(v)) for k, v in columns.data.items())}
    missing = {name: np.asarray(mask)[rows] for name, mask in columns.missing.items()}
    where = {old: new for new, old in enumerate(index)}
    unknown = [(where[row], field, value) for row, field, value in columns.unknown if row in where]
    return Columns(len(index), data, missing, unknown)


def candidate_columns(columns: Columns, primary: LoadedModel, candidate: LoadedModel) -> Columns:
    """The raw rows ``columns`` (decoded for the primary's features) as the candidate's
    spec reads them: the same object when both specs name the same features; else rebuilt,
    a field the primary did not know (``unknown``) becoming a feature if the candidate
    has it, and a primary feature the candidate lacks becoming an unknown field."""
    names = candidate.spec.feature_names
    if tuple(names) == tuple(primary.spec.feature_names):
        return columns
    n = columns.n_rows
    wanted = set(names)
    data: dict[str, Any] = {name: list(columns.data[name]) for name in names if name in columns.data}
    unknown: list[tuple[int, str, Any]] = []
    for row, field, value in columns.unknown:
        if field in wanted:
            data.setdefault(field, [None] * n)[row] = value
        else:
            unknown.append((row, field, value))
    for name in columns.data:
        if name not in wanted:
            cells = columns.data[name]
            unknown += [(i, name, _plain(cells[i])) for i in range(n) if cells[i] is not None]
    missing = {k: v for k, v in columns.missing.items() if k in wanted}
    return Columns(n, data, missing, unknown)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class Shadow:
    """The shadow queue and its worker (see the module docstring)."""

    def __init__(
        self,
        rollouts: Rollouts,
        ring: PredictionLog | Callable[[], PredictionLog],
        capacity: int = QUEUE_REQUESTS,
        *,
        monitored: bool = True,
    ) -> None:
        self.rollouts = rollouts
        self._ring = ring
        """The shadow ring, or what makes it on first use (a server that never runs a shadow
        never allocates one)."""
        self.monitored = monitored
        self.queue: queue.Queue[ShadowJob | None] = queue.Queue(capacity)
        self.on_result: list[Callable[[LoadedModel, Sequence[str], Outcome], None]] = []
        """Called on the shadow worker with (the candidate, the primary's ids, the
        candidate's outcome) for every compared request (see ``on_result``)."""
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def ring(self) -> PredictionLog:
        ring = self._ring
        if not isinstance(ring, PredictionLog):
            with self._lock:
                if not isinstance(self._ring, PredictionLog):
                    self._ring = self._ring()
                ring = self._ring
        return ring

    # -- the response path --

    def mirror(self, model: LoadedModel, columns: Columns, outcome: Outcome) -> None:
        """Queue what the primary ``model`` just answered for its shadow candidate, if it has
        one. Never waits: a full queue drops the rows (counted ``dropped``)."""
        if not self.rollouts.states:
            return
        candidate = self.rollouts.shadow_of(model)
        if candidate is None:
            return
        try:
            self.queue.put_nowait(ShadowJob.of(model, candidate, columns, outcome))
        except queue.Full:
            self._count(candidate, "dropped", columns.n_rows)
            return
        if self._thread is None:
            self.start()

    # -- the worker --

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="driftgate-shadow", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is queued, then stop the worker."""
        thread = self._thread
        if thread is None:
            return
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            if job is not None and self.queue.qsize() < BATCH_REQUESTS:
                time.sleep(LINGER_SECONDS)
            jobs: list[ShadowJob] = []
            while job is not None:
                jobs.append(job)
                if len(jobs) >= BATCH_REQUESTS:
                    break
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
            if jobs:
                try:
                    self.process(jobs)
                except Exception:  # never let the worker die: count the lot as failed
                    log.exception("the shadow worker failed on %d requests", len(jobs))
                    for j in jobs:
                        self._count(j.candidate, "failed", j.columns.n_rows)
            if job is None:
                return

    def process(self, jobs: list[ShadowJob]) -> None:
        """Predict ``jobs`` with their candidates: the rows of all the requests of one
        candidate as one batch (guards, transform, one model call, one count)."""
        groups: dict[tuple[int, int], list[ShadowJob]] = {}
        for job in jobs:
            groups.setdefault((id(job.primary), id(job.candidate)), []).append(job)
        for group in groups.values():
            self._predict(ShadowJob.merge(group))

    def _predict(self, job: ShadowJob) -> None:
        candidate = job.candidate
        _yield(0)
        prepared = prepare(candidate, job.columns)
        if prepared.matrix is None:  # rows its spec refuses: counted, and the others predicted
            checked = prepared.checked
            assert checked.rejected is not None
            refused = checked.rejected
            n_refused = int(refused.sum())
            if self.monitored:
                candidate.metrics.count_rejected(n_refused, [v for v in checked.violations if refused[v.row]])
            self._count(candidate, "rejected", n_refused)
            if n_refused == job.columns.n_rows:
                return
            job = job.subset(~refused)
            prepared = prepare(candidate, job.columns)
            if prepared.matrix is None:  # pragma: no cover - the guards judge rows one by one
                self._count(candidate, "rejected", job.columns.n_rows)
                return
        n = job.columns.n_rows
        _yield(0)
        try:
            inference = candidate.runtime.run(prepared.matrix)
            _yield(0)
            self.ring.at = job.ids  # type: ignore[attr-defined]
            outcome = complete(candidate, prepared, inference, time.perf_counter(), self.ring, monitored=self.monitored)
        except GatewayError:
            self._count(candidate, "failed", n)
            return
        self.on_result_known(candidate, job, outcome)

    def on_result_known(self, candidate: LoadedModel, job: ShadowJob, outcome: Outcome) -> None:
        """The one place a shadow result is known: the primary's answer (``job``: its ids,
        labels or values) and the candidate's ``outcome`` of the same rows. Compares them,
        counts, and hands them to every ``on_result`` hook."""
        agreed = self._agreement(candidate, job, outcome)
        with candidate.metrics.lock:
            counts = candidate.metrics.shadow.counts
            counts["compared"] += len(job.ids)
            counts["agreed"] += agreed
        for hook in self.on_result:
            try:
                hook(candidate, job.ids, outcome)
            except Exception:
                log.exception("a shadow result hook failed")

    def _agreement(self, candidate: LoadedModel, job: ShadowJob, outcome: Outcome) -> int:
        if job.labels is not None and outcome.label_index is not None:
            primary_labels = [job.primary.spec.output.labels[i] for i in job.labels.tolist()] if job.primary.spec.output else []
            labels = candidate.spec.output.labels if candidate.spec.output else ()
            return sum(a == labels[b] for a, b in zip(primary_labels, outcome.label_index.tolist(), strict=True))
        if job.values is not None and outcome.values is not None:
            tolerance = self.tolerance(job.primary)
            return int((np.abs(job.values.astype(np.float64) - outcome.values) <= tolerance).sum())
        return 0

    def tolerance(self, primary: LoadedModel) -> float:
        """Two regression predictions within this distance agree: the rollout's
        ``tolerance``, else 1% of the range of the primary spec's output baseline."""
        state = self.rollouts.states.get(primary.name)
        if state is not None and state.tolerance is not None:
            return state.tolerance
        output = primary.spec.output
        baseline = output.baseline if output is not None else None
        if baseline is not None and baseline.values is not None and len(baseline.values.edges) > 1:
            edges = baseline.values.edges
            return 0.01 * float(edges[-1] - edges[0])
        return 0.0

    def _count(self, candidate: LoadedModel, outcome: str, rows: int) -> None:
        if rows:
            with candidate.metrics.lock:
                candidate.metrics.shadow.counts[outcome] += rows

    # -- feedback --

    def score_feedback(
        self,
        name: str,
        ids: list[str],
        primary_predictions: NDArray[np.float64],
        truths: NDArray[np.float64],
        classification: bool,
    ) -> None:
        """Feedback that matched the primary's predictions ``ids`` (``primary_predictions``:
        the label index or value it answered; ``truths``: the label index or value sent):
        score the shadow's predictions of the same rows, and the primary's on exactly those
        rows, on the candidate's metrics (``paired_primary``, ``paired_candidate``; the
        candidate's own online accuracy counts them too)."""
        if not ids or (not isinstance(self._ring, PredictionLog) and name not in self.rollouts.states):
            return  # no shadow has ever run here for it
        versions, labels, values, status = self.ring.join(name, ids)
        if not len(versions):
            return
        matched = np.asarray([s == "matched" for s in status], dtype=np.bool_)
        truth, primary = truths[matched], primary_predictions[matched]
        found = labels.astype(np.float64) if classification else values
        for version in np.unique(versions).tolist():
            mine = versions == version
            try:
                candidate = self.rollouts.registry.get(name, int(version))
            except GatewayError:
                continue
            m = candidate.metrics
            with m.lock:
                if classification:
                    m.paired_primary.add(correct=primary[mine] == truth[mine])
                    correct = found[mine] == truth[mine]
                    m.paired_candidate.add(correct=correct)
                    m.feedback.add(correct=correct)
                else:
                    m.paired_primary.add(errors=primary[mine] - truth[mine])
                    errors = found[mine] - truth[mine]
                    m.paired_candidate.add(errors=errors)
                    m.feedback.add(errors=errors)
