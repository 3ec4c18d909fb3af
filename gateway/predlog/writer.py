"""``PayloadLog``: the prediction log's bounded queue and its one writer thread.

The hot path (``batch``, ``feedback``, ``shadow``) only decides which rows are sampled and
appends one tuple of references to a queue: no record, no JSON, no I/O. When the queue
holds ``queue_rows`` rows, more are dropped and counted, never waited for; so a slow, full
or read-only disk costs predictions nothing but their log records
(``driftgate_log_records_total{model,outcome}``, outcome ``written`` or ``dropped``).

The writer thread wakes every ``flush_interval`` seconds, builds the records of what
queued (``gateway.predlog.rows``), and appends them to the model's open file as one gzip
member (files and names: ``gateway.predlog.records``). A file is finished (fsynced and
renamed from ``.partial``) at ``file_bytes``, at midnight UTC and at shutdown; then the
oldest finished files beyond ``max_bytes`` in the whole log folder are deleted.

Crash safety: a finished file is never written again, and each record is written once, to
one file. A writer holds an exclusive ``flock`` on its open ``.partial`` files; a process
starting on the folder finishes the unlocked ``.partial`` files of writers that died (cut
to their whole gzip members, then renamed), so a SIGKILL loses at most the records still
queued and the member being written.

Sampling: a predicted row is logged when a hash of its prediction id's counter falls
below ``sample``, so its feedback and its shadow prediction, sampled by the same id, are
logged with it; a rejected row (it has no prediction id) is drawn at random.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from gateway.files import write_atomic
from gateway.predlog.folder import LogFolder
from gateway.predlog.records import (
    FEEDBACK,
    PREDICTIONS,
    FeedbackRecord,
    PredictionRecord,
    ShadowRecord,
    Stream,
    iso_time,
    spec_path,
)
from gateway.predlog.rows import input_rows, logged_features, predictions, violations_by_row
from gateway.predlog.shapes import Shape
from gateway.spec import encode_spec

if TYPE_CHECKING:
    from gateway.registry import LoadedModel
    from gateway.service import Outcome
    from gateway.table import Columns
    from gateway.violations import Violation

__all__ = ["PayloadLog"]

log = logging.getLogger("driftgate.predlog")

FLUSH_INTERVAL = 0.2
"""Seconds between the writer's rounds: at most this much of queued traffic is lost to a
SIGKILL, and each round's records of a model become one gzip member (a few hundred rows at
load compress ~10x; one row alone barely pays its 18-byte member header)."""
RETRY_SECONDS = 1.0
"""After a failed write, records are dropped unbuilt for this long before the disk is tried again."""
WARN_SECONDS = 60.0
"""At most one warning per this many seconds about a failing disk (the counter has the rest)."""
SLICE = 64
"""Items the writer builds records of (about 0.5 ms of work) before it lets go of the
interpreter lock for ``YIELD_SECONDS``: otherwise a round of a few thousand rows holds it
for a switch interval (5 ms) at a time, which a request waiting for it pays in latency."""
YIELD_SECONDS = 0.0001
"""Long enough for a thread waiting for the interpreter lock to take it on the same core
(``time.sleep(0)`` lets go and takes it back before the other is scheduled)."""
LEVEL = 1
"""zlib level: logged rows compressed 9.6x at 1 (1.4 us a row here) and 12.8x at 6 (4.1 us),
CPU taken from the cores that answer requests."""

_GOLDEN = 0x9E3779B97F4A7C15
"""Fibonacci hashing: consecutive counters times 2^64/phi spread evenly over 64 bits."""
_MASK = (1 << 64) - 1

_BATCH, _SHADOW, _FEEDBACK = 0, 1, 2


def _counter(prediction_id: str) -> int | None:
    """The counter of an id ``<prefix>-<counter in hex>``, None if it has none."""
    try:
        return int(prediction_id[prediction_id.rindex("-") + 1 :], 16)
    except ValueError:
        return None


class PayloadLog(Collector):
    """The prediction log of one process (see the module docstring).

    Args:
        folder: the log folder (``serve --log-dir``).
        writer: this process's name in file names and rejected rows' ids (each worker its own).
        sample: share of rows logged, in (0, 1].
        file_bytes: compressed size at which a file is finished.
        max_bytes: bound on the folder's total size (the oldest finished files go first).
        queue_rows: rows waiting at most; more are dropped.
        flush_interval: seconds between the writer's rounds.
        clock: the time records are stamped with (seconds since the epoch).
    """

    def __init__(
        self,
        folder: str | Path,
        writer: str,
        *,
        sample: float = 1.0,
        file_bytes: int = 32 << 20,
        max_bytes: int = 1 << 30,
        queue_rows: int = 50_000,
        flush_interval: float = FLUSH_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(folder)
        self.writer = writer
        self.sample = sample
        self._threshold = min(int(sample * 2.0**64), _MASK + 1)
        self.file_bytes = file_bytes
        self.max_bytes = max_bytes
        self.queue_rows = queue_rows
        self.flush_interval = flush_interval
        self._clock = clock
        self.counts: dict[tuple[str, str], int] = {}
        """``(model, outcome) -> records``, outcome ``written`` or ``dropped``."""
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._pending = 0
        self._lock = threading.Lock()
        self._rng = np.random.default_rng()
        self._rejected_ids = itertools.count(1)
        self.files = LogFolder(self.folder, writer, file_bytes, max_bytes, self._failed)
        self._specs: set[tuple[str, int]] = set()
        self._names: dict[tuple[str, int], tuple[str, ...]] = {}
        self._names_of: dict[tuple[str, int], object] = {}
        self._shapes: dict[tuple[str, int], Shape] = {}
        self._second = -1
        self._second_text = ""
        self._retry_at = 0.0
        self._warned_at = -WARN_SECONDS
        self._encoder = msgspec.json.Encoder(enc_hook=_plain)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fleet: tuple[Path, int, int] | None = None
        self._base: dict[tuple[str, str], int] = {}
        self._published: dict[tuple[str, str], int] = {}

    # -- the hot path: sample and enqueue ----------------------------------------------

    def batch(self, model: LoadedModel, columns: Columns, violations: list[Violation], outcome: Outcome | None) -> None:
        """Log a batch the guards rejected (``outcome`` None) or the model predicted."""
        n = columns.n_rows
        rows = None
        if self._threshold <= _MASK:
            rows = self._sampled(n, outcome.ids if outcome is not None else None)
            if rows is None:
                return
        self._put(model.name, n if rows is None else len(rows), (_BATCH, self._clock(), model, columns, violations, outcome, rows))

    def shadow(
        self, candidate: LoadedModel, ids: Sequence[str], outcome: Outcome | None, violations: Sequence[Violation] = ()
    ) -> None:
        """Log a rollout candidate's predictions of rows the primary answered.

        Call it once the shadow has run (off the response path), with the primary's ids
        (``Outcome.ids``, one per row, in the batch's order), the candidate's ``Outcome``
        (None: its spec rejected the batch) and the candidate's violations (``Violation.row``
        indexes the batch). Each row's record is logged when its primary's record is.
        """
        rows = self._rows_of(ids)
        if rows:
            self._put(candidate.name, len(rows), (_SHADOW, self._clock(), candidate, list(ids), outcome, list(violations), rows))

    def feedback(self, model: str, items: Sequence[tuple[str, str | float]]) -> None:
        """Log ground truth: ``(prediction id, label or value)`` pairs that joined."""
        keep = [items[i] for i in self._rows_of([i for i, _ in items])] if self._threshold <= _MASK else list(items)
        if keep:
            self._put(model, len(keep), (_FEEDBACK, self._clock(), model, keep))

    def _sampled(self, n: int, ids: list[str] | None) -> list[int] | None:
        """The rows of a batch to log, None for none (only called when sampling)."""
        first = _counter(ids[0]) if ids else None
        if first is None:  # rejected: no prediction id to hash
            if n == 1:
                return [0] if random.random() < self.sample else None
            picked = np.flatnonzero(self._rng.random(n) < self.sample)
        elif n == 1:
            return [0] if (first * _GOLDEN) & _MASK < self._threshold else None
        else:
            hashed = np.arange(first, first + n, dtype=np.uint64) * np.uint64(_GOLDEN)
            picked = np.flatnonzero(hashed < np.uint64(self._threshold))
        return picked.tolist() if len(picked) else None

    def _rows_of(self, ids: Sequence[str]) -> list[int]:
        """The positions of the ids whose rows are logged."""
        if self._threshold > _MASK:
            return list(range(len(ids)))
        out = []
        for i, prediction_id in enumerate(ids):
            c = _counter(prediction_id)
            if c is not None and (c * _GOLDEN) & _MASK < self._threshold:
                out.append(i)
        return out

    def _put(self, model: str, rows: int, item: tuple[Any, ...]) -> None:
        with self._lock:
            if self._pending + rows > self.queue_rows:
                key = (model, "dropped")
                self.counts[key] = self.counts.get(key, 0) + rows
                return
            self._pending += rows
        self._queue.append((rows, item))

    # -- metrics -------------------------------------------------------------------------

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "driftgate_log_records",
            "Prediction log records (rows, shadow rows, feedback) by outcome: written, or dropped "
            "(queue full, disk failing).",
            labels=["model", "outcome"],
        )
        for (model, outcome), count in sorted(self.fleet_counts().items()):
            family.add_metric([model, outcome], count)
        yield family

    # -- several workers: the fleet's counts -------------------------------------------

    def share(self, folder: str | Path, index: int, workers: int) -> None:
        """As worker ``index`` of ``workers`` (``serve --workers N``): publish this worker's
        counts in the server's state folder ``folder`` (``predlog-<index>.json``, each writer
        round in which they changed) and report the fleet's. A worker restarted in a slot
        continues from its predecessor's counts, so the fleet's never go back."""
        self._fleet = (Path(folder), index, workers)
        self._base = _read_counts(self._share_path(index))

    def _share_path(self, index: int) -> Path:
        assert self._fleet is not None
        return self._fleet[0] / f"predlog-{index}.json"

    def own_counts(self) -> dict[tuple[str, str], int]:
        """This process's counts (with a predecessor's in its slot)."""
        with self._lock:
            own = dict(self.counts)
        for key, count in self._base.items():
            own[key] = own.get(key, 0) + count
        return own

    def fleet_counts(self) -> dict[tuple[str, str], int]:
        """The counts ``/metrics`` reports: this process's, plus every other worker's as published."""
        total = self.own_counts()
        if self._fleet is not None:
            _, index, workers = self._fleet
            for other in range(workers):
                if other != index:
                    for key, count in _read_counts(self._share_path(other)).items():
                        total[key] = total.get(key, 0) + count
        return total

    def _publish(self) -> None:
        if self._fleet is None:
            return
        own = self.own_counts()
        if own != self._published:
            write_atomic(self._share_path(self._fleet[1]), msgspec.json.encode([[m, o, c] for (m, o), c in own.items()]))
            self._published = own

    def exposition(self) -> bytes:
        """``driftgate_log_records_total`` in the Prometheus text format (for ``/metrics``)."""
        return generate_latest(self)

    def _count(self, model: str, outcome: str, n: int) -> None:
        with self._lock:
            key = (model, outcome)
            self.counts[key] = self.counts.get(key, 0) + n

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Finish what dead writers left, apply the size bound, start the writer thread.
        A folder that cannot be written is logged, not fatal: records are then dropped."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.files.recover()
            self.files.enforce_retention()
        except OSError as exc:
            log.warning("prediction log %s: %s; records will be dropped until it can be written", self.folder, exc)
        self._thread = threading.Thread(target=self._run, name="driftgate-predlog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, finish the open files, stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        else:  # never started (tests drive ``flush`` themselves): the same end, here
            self.flush()
            self._close()
            self._publish()

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.flush_interval)
            try:
                self.flush()
                self._publish()
            except Exception:  # never let the writer die: the next round goes on
                log.exception("prediction log: a round of writes failed")
            if stopping:
                break
        self._close()
        try:
            self._publish()
        except OSError as exc:
            log.warning("prediction log: cannot publish the log's counts: %s", exc)

    def _close(self) -> None:
        self.files.close()

    # -- the writer thread ---------------------------------------------------------------

    def flush(self) -> None:
        """Build and write every queued record (the writer thread's round)."""
        items = []
        queue = self._queue
        while queue:
            items.append(queue.popleft())
        if not items:
            return
        rows = sum(r for r, _ in items)
        try:
            if time.monotonic() < self._retry_at:
                for r, item in items:
                    self._count(_model_of(item), "dropped", r)
                return
            groups: dict[tuple[str, Stream], list[Any]] = {}
            ones: dict[LoadedModel, tuple[Shape, list[Any]]] = {}  # this round's one-row records, by model
            last = 0.0
            for n, (_, item) in enumerate(items, 1):
                last = t = item[1]
                if item[0] == _BATCH and item[5] is not None and item[3].n_rows == 1:  # the common request
                    _, _, model, columns, violations, outcome, _ = item
                    found = ones.get(model)
                    if found is None:
                        found = ones[model] = (self._shape(model), groups.setdefault((model.name, PREDICTIONS), []))
                    whole = int(t)
                    if whole != self._second:
                        self._second, self._second_text = whole, iso_time(whole)[:-5]
                    stamp = f"{self._second_text}.{int((t - whole) * 1000):03d}Z"
                    found[1].append(found[0].record(outcome.ids[0], stamp, columns, violations, outcome))
                else:
                    stream: Stream = FEEDBACK if item[0] == _FEEDBACK else PREDICTIONS
                    groups.setdefault((_model_of(item), stream), []).extend(self._records(item))
                if n % SLICE == 0:
                    time.sleep(YIELD_SECONDS)  # let the thread that answers requests run, if it waits
            for (name, stream), records in groups.items():
                self._write(name, stream, records, last)
        finally:
            with self._lock:
                self._pending -= rows

    def _stamp(self, t: float) -> str:
        """``iso_time(t)``, with the text of the whole second made once per second."""
        whole = int(t)
        if whole != self._second:
            self._second, self._second_text = whole, iso_time(whole)[:-5]
        return f"{self._second_text}.{int((t - whole) * 1000):03d}Z"

    def _shape(self, model: LoadedModel) -> Shape:
        """The one-row record builder of ``model`` (made once per loaded version)."""
        key = (model.name, model.version)
        shape = self._shapes.get(key)
        if shape is None or shape.model is not model:  # (a version unloaded and loaded again)
            self._logged(model)  # writes its spec beside its records
            shape = self._shapes[key] = Shape(model)
        return shape

    def _logged(self, model: LoadedModel) -> tuple[str, ...]:
        """The logged features of ``model`` (cached per version; first use writes its spec)."""
        key = (model.name, model.version)
        names = self._names.get(key)
        if names is None or self._names_of.get(key) is not model.spec:
            names = self._names[key] = logged_features(model.spec)
            self._names_of[key] = model.spec
            self._keep_spec(model)
        return names

    def _records(self, item: tuple[Any, ...]) -> list[Any]:
        kind, t = item[0], item[1]
        stamp = self._stamp(t)
        if kind == _FEEDBACK:
            _, _, name, pairs = item
            return [
                FeedbackRecord(i, stamp, name, value=truth) if isinstance(truth, float) else FeedbackRecord(i, stamp, name, label=truth)
                for i, truth in pairs
            ]
        if kind == _SHADOW:
            _, _, candidate, ids, outcome, violations, rows = item
            found = violations_by_row(violations)
            said = predictions(candidate, outcome, rows) if outcome is not None else [None] * len(rows)
            return [
                ShadowRecord(ids[r], stamp, candidate.name, candidate.version, p, found.get(r, []))
                for r, p in zip(rows, said, strict=True)
            ]
        _, _, model, columns, violations, outcome, rows = item
        inputs = input_rows(columns, self._logged(model), rows)
        positions = range(columns.n_rows) if rows is None else rows
        found = violations_by_row(violations)
        if outcome is not None:
            ids = outcome.ids if rows is None else [outcome.ids[r] for r in rows]
            said = predictions(model, outcome, rows)
        else:
            ids = [f"{self.writer}-r{next(self._rejected_ids):x}" for _ in positions]
            said = [None] * len(ids)
        return [
            PredictionRecord(i, stamp, model.name, model.version, x, p, found.get(r, []))
            for i, x, p, r in zip(ids, inputs, said, positions, strict=True)
        ]

    def _keep_spec(self, model: LoadedModel) -> None:
        """Write the spec of a logged version beside its records, once."""
        key = (model.name, model.version)
        if key in self._specs:
            return
        self._specs.add(key)
        path = spec_path(self.folder / model.name, model.version)
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, encode_spec(model.spec, "json"))
        except OSError as exc:
            self._specs.discard(key)
            self._failed(exc)

    def _write(self, name: str, stream: Stream, records: list[Any], now: float) -> None:
        compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)
        member = compressor.compress(self._encoder.encode_lines(records)) + compressor.flush()
        try:
            self.files.append(name, stream, member, now)
        except OSError as exc:
            self._count(name, "dropped", len(records))
            self._failed(exc)
            return
        self._count(name, "written", len(records))

    def recover(self) -> list[Path]:
        """Finish the files of dead writers (``LogFolder.recover``)."""
        return self.files.recover()

    def _failed(self, exc: OSError) -> None:
        self._retry_at = time.monotonic() + RETRY_SECONDS
        now = time.monotonic()
        if now - self._warned_at >= WARN_SECONDS:
            self._warned_at = now
            reason = errno.errorcode.get(exc.errno or 0, "error")
            log.warning("prediction log %s: cannot write (%s: %s); dropping records, counted", self.folder, reason, exc)



def _plain(value: Any) -> Any:
    """What the encoder does not know: a numpy scalar (a cell of a V2 tensor) as Python's."""
    if isinstance(value, np.generic):
        return value.item()
    raise NotImplementedError(f"cannot log a {type(value).__name__}")


def _model_of(item: tuple[Any, ...]) -> str:
    return item[2] if item[0] == _FEEDBACK else item[2].name  # type: ignore[no-any-return]


def _read_counts(path: Path) -> dict[tuple[str, str], int]:
    """A worker's published counts (none yet: empty)."""
    try:
        return {(m, o): int(c) for m, o, c in msgspec.json.decode(path.read_bytes())}
    except (OSError, ValueError, msgspec.DecodeError):
        return {}
