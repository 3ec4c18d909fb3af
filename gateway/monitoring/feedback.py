"""Prediction ids, the bounded store of recent predictions, and online accuracy.

``PredictionLog`` hands out prediction ids and remembers what was predicted, so that
ground truth sent later (``POST /v1/models/{name}/feedback``) can be joined to it.

- An id is ``<process prefix>-<counter in hex>``. The prefix is random per process, so
  ids never collide across restarts or replicas; the counter grows by one per row. With
  several workers (``driftgate serve --workers N``) the prefix is a random server part and
  the worker's index, and each worker's ring lives in a shared memory-mapped file
  (``SharedPredictionLog``), so feedback sent to any worker finds a prediction made by any
  other: the prefix names the ring to look in.
- The store is a ring of fixed-size numpy arrays indexed by ``counter % capacity``:
  recording a batch is one vectorised write, memory is fixed at start
  (``capacity * ENTRY_BYTES``), and an id is *expired* once ``capacity`` newer rows have
  overwritten its slot or it is older than ``ttl_seconds``. Nothing grows with traffic.
  Ages are measured on ``time.monotonic`` (CLOCK_MONOTONIC: system-wide, so comparable
  between the workers' rings on one host, and immune to wall-clock jumps).

``FeedbackWindow`` keeps online accuracy (classifiers) or MAE and RMSE (regressors) over
the most recent feedback, in chunks like the drift window, so old feedback ages out.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from gateway.monitoring.instruments import check_shape

if TYPE_CHECKING:
    from numpy.typing import NDArray

_HEX = re.compile(r"[1-9a-f][0-9a-f]{0,15}")

__all__ = ["DEFAULT_CAPACITY", "ENTRY_BYTES", "FeedbackState", "FeedbackWindow", "PredictionLog", "SharedPredictionLog"]

DEFAULT_CAPACITY = 1 << 20
"""About a million recent predictions (40 MiB): a day of traffic at 12 rows/s, or the last
few minutes at full speed. Feedback that arrives later counts as ``expired``."""

ENTRY_BYTES = 8 + 4 + 4 + 8 + 8 + 4 + 4
"""counter (int64), model key (int32), label (int32), value (float64), time (float64),
version (int32), segment slices (int32, packed: ``gateway.monitoring.segments``)."""


HEADER_BYTES = 64
"""A shared ring file starts with a header: the highest counter issued (int64), then padding."""


def model_key(model: str) -> int:
    """The model's key in the ring: the same in every process (a CRC-32 of the name, never 0)."""
    return (zlib.crc32(model.encode()) & 0x7FFFFFFF) or 1


def ring_file_bytes(capacity: int) -> int:
    """Size of a shared ring file of ``capacity`` predictions."""
    return HEADER_BYTES + capacity * ENTRY_BYTES


def _ring_views(buffer: Any, capacity: int) -> dict[str, Any]:
    """The six arrays of a ring laid out in one buffer after the header (8-byte fields first)."""
    views: dict[str, Any] = {}
    offset = HEADER_BYTES
    for name, dtype in (("counters", np.int64), ("values", np.float64), ("times", np.float64),
                        ("models", np.int32), ("versions", np.int32), ("labels", np.int32),
                        ("segments", np.int32)):  # fmt: skip
        views[name] = np.ndarray(capacity, dtype=dtype, buffer=buffer, offset=offset)
        offset += capacity * np.dtype(dtype).itemsize
    views["header"] = np.ndarray(1, dtype=np.int64, buffer=buffer, offset=0)
    return views


class PredictionLog:
    """Ids and the ring of recent predictions (see the module docstring)."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        ttl_seconds: float = 7 * 86400,
        clock: Any = time.monotonic,
        *,
        prefix: str | None = None,
    ) -> None:
        self.prefix = prefix if prefix is not None else os.urandom(4).hex()
        self._id_format = (self.prefix + "-%x").__mod__
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._counter = itertools.count(1)
        self.issued = 0
        """The highest counter handed out so far."""
        self._lock = threading.Lock()
        self._allocate(capacity)
        self._model_keys: dict[str, int] = {}

    def _allocate(self, capacity: int) -> None:
        self.counters = np.full(capacity, -1, dtype=np.int64)
        self.models = np.zeros(capacity, dtype=np.int32)
        self.versions = np.zeros(capacity, dtype=np.int32)
        self.labels = np.zeros(capacity, dtype=np.int32)
        self.values = np.zeros(capacity, dtype=np.float64)
        self.times = np.zeros(capacity, dtype=np.float64)
        self.segments = np.zeros(capacity, dtype=np.int32)

    @property
    def nbytes(self) -> int:
        arrays = (self.counters, self.models, self.versions, self.labels, self.values, self.times, self.segments)
        return sum(a.nbytes for a in arrays)

    def _key(self, model: str) -> int:
        key = self._model_keys.get(model)
        if key is None:
            key = self._model_keys.setdefault(model, model_key(model))
        return key

    def record(
        self,
        model: str,
        version: int,
        n: int,
        labels: NDArray[np.intp] | None,
        values: NDArray[np.float32] | None,
        segments: Any = 0,
    ) -> list[str]:
        """Remember a predicted batch; returns its ``n`` new ids. ``segments``: the rows'
        packed segment slices (an int for one row, else an array), 0 when the spec has none."""
        with self._lock:
            first = next(self._counter)
            if n > 1:
                self._counter = itertools.count(first + n)
            self.issued = first + n - 1
        if n == 1:  # the common request: item writes, no temporary arrays
            slot = first % self.capacity
            self.counters[slot] = first
            self.models[slot] = self._key(model)
            self.versions[slot] = version
            if labels is not None:
                self.labels[slot] = labels[0]
            if values is not None:
                self.values[slot] = values[0]
            self.segments[slot] = segments
            self.times[slot] = self.clock()
            return [f"{self.prefix}-{first:x}"]
        start = first % self.capacity
        # a contiguous run of slots (the usual case) is written with slices, not fancy indexing
        slots: slice | NDArray[np.int64] = (
            slice(start, start + n) if start + n <= self.capacity else np.arange(first, first + n) % self.capacity
        )
        self.write(slots, np.arange(first, first + n, dtype=np.int64), model, version, labels, values, segments)
        return list(map(self._id_format, range(first, first + n)))

    def write(
        self,
        slots: slice | NDArray[np.int64],
        counters: NDArray[np.int64],
        model: str,
        version: int,
        labels: NDArray[np.intp] | None,
        values: NDArray[np.float32] | None,
        segments: Any = 0,
    ) -> None:
        """Write predictions with ``counters`` into ``slots`` of the ring."""
        self.counters[slots] = counters
        self.models[slots] = self._key(model)
        self.versions[slots] = version
        if labels is not None:
            self.labels[slots] = labels
        if values is not None:
            self.values[slots] = values
        self.segments[slots] = segments
        self.times[slots] = self.clock()

    def lookup(self, model: str, ids: list[Any]) -> tuple[NDArray[np.intp], NDArray[np.int32], list[str]]:
        """Find ids of ``model``. Returns (slots of the found ids, their versions, and per id
        its status: ``matched``, ``unknown_id``, ``expired``, or ``duplicate`` for an id
        already joined (``join`` marks them) or repeated earlier in ``ids``: the first
        feedback for a prediction is the one that counts, so resending it (to any worker)
        cannot weigh one prediction twice in online accuracy."""
        key = model_key(model)
        prefix = self.prefix + "-"
        now = self.clock()
        status: list[str] = []
        slots: list[int] = []
        versions: list[int] = []
        taken: set[int] = set()
        for pid in ids:
            counter = -1
            if isinstance(pid, str) and pid.startswith(prefix):
                text = pid[len(prefix) :]
                if _HEX.fullmatch(text):  # exactly as issued: lowercase hex, no sign, no leading 0
                    counter = int(text, 16)
            if counter <= 0:
                status.append("unknown_id")
                continue
            slot = counter % self.capacity
            if self.counters[slot] != counter:  # overwritten by a newer row, or never issued
                status.append("expired" if counter <= self.issued else "unknown_id")
                continue
            if self.models[slot] != key:
                status.append("unknown_id")
                continue
            if now - self.times[slot] > self.ttl_seconds:
                status.append("expired")
                continue
            version = int(self.versions[slot])
            if version < 0 or slot in taken:  # joined before: the first feedback for a prediction wins
                status.append("duplicate")
                continue
            taken.add(slot)
            status.append("matched")
            slots.append(slot)
            versions.append(version)
        return np.asarray(slots, dtype=np.intp), np.asarray(versions, dtype=np.int32), status

    def join(
        self, model: str, ids: list[Any]
    ) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.float64], list[str]]:
        """Find ids of ``model``: (versions, labels and values of the matched ids, in order;
        and per id its status, as ``lookup``)."""
        versions, labels, values, _, status = self.join_segments(model, ids)
        return versions, labels, values, status

    def join_segments(
        self, model: str, ids: list[Any]
    ) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.float64], NDArray[np.int32], list[str]]:
        """``join``, with the matched predictions' packed segment slices before the status."""
        slots, versions, status = self.lookup(model, ids)
        self.mark_joined(slots, versions)
        return versions, self.labels[slots], self.values[slots], self.segments[slots], status

    def mark_joined(self, slots: NDArray[np.intp], versions: NDArray[np.int32]) -> None:
        """Mark predictions as joined: the sign of their slot's version (versions start at 1)."""
        self.versions[slots] = -versions


class SharedPredictionLog(PredictionLog):
    """A ``PredictionLog`` whose ring is a memory-mapped file, one per worker of a server.

    ``folder`` holds ``predictions-<worker>.bin`` for every worker (created, zero-filled and
    sized by the supervisor, so a zero counter marks an empty slot). This worker writes its
    own file; ``join`` reads another worker's ring when an id's prefix names that worker,
    mapping its file read-only on first use. A prediction is in the shared page cache before
    its id is answered, so feedback can never outrun it. A worker restarted in the same slot
    maps the same file and continues from the counter in its header: earlier ids stay joinable.

    Ids are ``<server part (6 hex)><worker (2 hex)>-<counter>``.
    """

    def __init__(
        self,
        folder: str | Path,
        server: str,
        worker: int,
        workers: int,
        capacity: int = DEFAULT_CAPACITY,
        ttl_seconds: float = 7 * 86400,
        clock: Any = time.monotonic,
        *,
        writable: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.server = server
        self.worker = worker
        self.workers = workers
        self._writable = False
        # another worker's ring is mapped writable too, but only the joined marks (the sign of
        # a version) are ever written to it
        self._mmap = np.memmap(self.path(worker), dtype=np.uint8, mode="r+", shape=(ring_file_bytes(capacity),))
        self._views = _ring_views(self._mmap, capacity)
        previous = int(self._views["header"][0])
        super().__init__(capacity, ttl_seconds, clock, prefix=f"{server}{worker:02x}")
        self._writable = writable
        self._counter = itertools.count(previous + 1)
        self._peers: dict[str, SharedPredictionLog] = {}

    def path(self, worker: int) -> Path:
        return self.folder / f"predictions-{worker}.bin"

    def _allocate(self, capacity: int) -> None:
        for name in ("counters", "models", "versions", "labels", "values", "times", "segments"):
            setattr(self, name, self._views[name])

    @property
    def issued(self) -> int:
        """The highest counter handed out so far, kept in the file's header for other workers."""
        return int(self._views["header"][0])

    @issued.setter
    def issued(self, value: int) -> None:
        if self._writable:
            self._views["header"][0] = value

    def _peer(self, prefix: str) -> PredictionLog | None:
        """The ring that issued ids with ``prefix``: this one, another worker's, or None."""
        if prefix == self.prefix:
            return self
        peer = self._peers.get(prefix)
        if peer is None and len(prefix) == len(self.prefix) and prefix.startswith(self.server):
            try:
                worker = int(prefix[len(self.server) :], 16)
            except ValueError:
                return None
            if not 0 <= worker < self.workers or not self.path(worker).exists():
                return None
            peer = type(self)(  # a shadow ring's peers are shadow rings
                self.folder,
                self.server,
                worker,
                self.workers,
                self.capacity,
                self.ttl_seconds,
                self.clock,
                writable=False,
            )
            self._peers[prefix] = peer
        return peer

    def join_segments(
        self, model: str, ids: list[Any]
    ) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.float64], NDArray[np.int32], list[str]]:
        """As ``PredictionLog.join_segments``, looking each id up in the ring of the worker that issued it."""
        groups: dict[int, tuple[PredictionLog, list[int]]] = {}
        status = ["unknown_id"] * len(ids)
        for i, pid in enumerate(ids):
            head = pid.partition("-")[0] if isinstance(pid, str) else ""
            log = self._peer(head)
            if log is not None:
                groups.setdefault(id(log), (log, []))[1].append(i)
        found: list[tuple[int, int, int, float, int]] = []  # (position, version, label, value, segments)
        for log, positions in groups.values():
            slots, versions, states = log.lookup(model, [ids[i] for i in positions])
            log.mark_joined(slots, versions)
            labels, values, segments = log.labels[slots], log.values[slots], log.segments[slots]
            k = 0
            for i, state in zip(positions, states, strict=True):
                status[i] = state
                if state == "matched":
                    found.append((i, int(versions[k]), int(labels[k]), float(values[k]), int(segments[k])))
                    k += 1
        found.sort()
        return (
            np.asarray([f[1] for f in found], dtype=np.int32),
            np.asarray([f[2] for f in found], dtype=np.int32),
            np.asarray([f[3] for f in found], dtype=np.float64),
            np.asarray([f[4] for f in found], dtype=np.int32),
            status,
        )


class FeedbackState(msgspec.Struct, kw_only=True):
    """A ``FeedbackWindow`` as numbers (what a worker publishes; see ``gateway.monitoring.fleet``)."""

    chunks: Any
    """``(CHUNKS, 4 + bins)`` float64: rows, correct, absolute error sum, squared error sum
    and the truths' count per label-drift bin, per chunk."""
    total: Any
    """``(4 + bins,)`` float64: the chunks' sum."""
    current: int


class FeedbackWindow:
    """Online accuracy (or MAE/RMSE) over the last ``window`` feedback rows, in chunks, and
    the truths' distribution over ``bins`` label-drift bins (classes, or value bins)."""

    CHUNKS = 10

    def __init__(self, window: int = 10_000, bins: int = 0) -> None:
        self.chunk_size = max(1, window // self.CHUNKS)
        # per chunk: rows, correct, absolute error sum, squared error sum, truths per bin
        self.chunks = np.zeros((self.CHUNKS, 4 + bins), dtype=np.float64)
        self.total = np.zeros(4 + bins, dtype=np.float64)
        self.current = 0

    def add(
        self,
        correct: NDArray[np.bool_] | None = None,
        errors: NDArray[np.float64] | None = None,
        truth_bins: NDArray[np.intp] | None = None,
    ) -> None:
        n = len(correct) if correct is not None else len(errors) if errors is not None else 0
        done = 0
        while done < n:  # split across chunk boundaries so the window stays exact to a chunk
            room = self.chunk_size - int(self.chunks[self.current, 0])
            if room <= 0:
                self.current = (self.current + 1) % self.CHUNKS
                self.total -= self.chunks[self.current]
                self.chunks[self.current] = 0
                continue
            take = min(room, n - done)
            part = np.zeros(len(self.total))
            part[0] = take
            if correct is not None:
                part[1] = float(correct[done : done + take].sum())
            if errors is not None:
                e = errors[done : done + take]
                part[2] = float(np.abs(e).sum())
                part[3] = float((e * e).sum())
            if truth_bins is not None and len(part) > 4:
                part[4:] = np.bincount(truth_bins[done : done + take], minlength=len(part) - 4)
            self.chunks[self.current] += part
            self.total += part
            done += take

    def export(self) -> FeedbackState:
        return FeedbackState(chunks=self.chunks.copy(), total=self.total.copy(), current=self.current)

    def check(self, state: FeedbackState) -> None:
        """Raise ``StateMismatchError`` unless ``state`` is a window of this layout."""
        check_shape("feedback window chunks", state.chunks, self.chunks)
        check_shape("feedback window total", state.total, self.total)

    def restore(self, state: FeedbackState) -> None:
        """Continue from ``state`` (a restarted worker takes over its predecessor's window).
        Raises ``StateMismatchError``, changing nothing, if it is another layout's."""
        self.check(state)
        self.chunks[:] = state.chunks
        self.total[:] = state.total
        self.current = int(state.current) % self.CHUNKS

    @classmethod
    def merge(cls, states: Sequence[FeedbackState]) -> FeedbackState:
        """Several workers' windows as one: their sums (only the totals are meaningful)."""
        return FeedbackState(chunks=sum(s.chunks for s in states), total=sum(s.total for s in states), current=0)

    @classmethod
    def of(cls, state: FeedbackState) -> FeedbackWindow:
        """A read-only window over ``state`` (for accuracy, MAE and RMSE of merged states)."""
        window = cls.__new__(cls)
        window.chunk_size = 0
        window.chunks = state.chunks
        window.total = state.total
        window.current = state.current
        return window

    @property
    def rows(self) -> int:
        return int(self.total[0])

    def accuracy(self) -> float | None:
        return float(self.total[1] / self.total[0]) if self.total[0] else None

    def mae(self) -> float | None:
        return float(self.total[2] / self.total[0]) if self.total[0] else None

    def rmse(self) -> float | None:
        return float(np.sqrt(self.total[3] / self.total[0])) if self.total[0] else None

    def truth_counts(self) -> NDArray[np.float64]:
        """The window's truths per label-drift bin."""
        counts: NDArray[np.float64] = self.total[4:]
        return counts
