"""Prediction ids, the bounded store of recent predictions, and online accuracy.

``PredictionLog`` hands out prediction ids and remembers what was predicted, so that
ground truth sent later (``POST /v1/models/{name}/feedback``) can be joined to it.

- An id is ``<process prefix>-<counter in hex>``. The prefix is random per process, so
  ids never collide across restarts or replicas; the counter grows by one per row.
- The store is a ring of fixed-size numpy arrays indexed by ``counter % capacity``:
  recording a batch is one vectorised write, memory is fixed at start
  (``capacity * ENTRY_BYTES``), and an id is *expired* once ``capacity`` newer rows have
  overwritten its slot or it is older than ``ttl_seconds``. Nothing grows with traffic.

``FeedbackWindow`` keeps online accuracy (classifiers) or MAE and RMSE (regressors) over
the most recent feedback, in chunks like the drift window, so old feedback ages out.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

_HEX = re.compile(r"[1-9a-f][0-9a-f]{0,15}")

__all__ = ["DEFAULT_CAPACITY", "ENTRY_BYTES", "FeedbackWindow", "PredictionLog"]

DEFAULT_CAPACITY = 1 << 20
"""About a million recent predictions (36 MiB): a day of traffic at 12 rows/s, or the last
few minutes at full speed. Feedback that arrives later counts as ``expired``."""

ENTRY_BYTES = 8 + 4 + 4 + 8 + 8 + 4
"""counter (int64), model key (int32), label (int32), value (float64), time (float64),
version (int32)."""


class PredictionLog:
    """Ids and the ring of recent predictions (see the module docstring)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, ttl_seconds: float = 7 * 86400, clock: Any = time.time) -> None:
        self.prefix = os.urandom(4).hex()
        self._id_format = (self.prefix + "-%x").__mod__
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._counter = itertools.count(1)
        self.issued = 0
        """The highest counter handed out so far."""
        self._lock = threading.Lock()
        self.counters = np.full(capacity, -1, dtype=np.int64)
        self.models = np.zeros(capacity, dtype=np.int32)
        self.versions = np.zeros(capacity, dtype=np.int32)
        self.labels = np.zeros(capacity, dtype=np.int32)
        self.values = np.zeros(capacity, dtype=np.float64)
        self.times = np.zeros(capacity, dtype=np.float64)
        self._model_keys: dict[str, int] = {}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.counters, self.models, self.versions, self.labels, self.values, self.times))

    def _key(self, model: str) -> int:
        key = self._model_keys.get(model)
        if key is None:
            key = self._model_keys.setdefault(model, len(self._model_keys) + 1)
        return key

    def record(self, model: str, version: int, n: int, labels: NDArray[np.intp] | None, values: NDArray[np.float32] | None) -> list[str]:
        """Remember a predicted batch; returns its ``n`` new ids."""
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
            self.times[slot] = self.clock()
            return [f"{self.prefix}-{first:x}"]
        start = first % self.capacity
        # a contiguous run of slots (the usual case) is written with slices, not fancy indexing
        slots: slice | NDArray[np.int64] = slice(start, start + n) if start + n <= self.capacity else np.arange(first, first + n) % self.capacity
        self.counters[slots] = np.arange(first, first + n, dtype=np.int64)
        self.models[slots] = self._key(model)
        self.versions[slots] = version
        if labels is not None:
            self.labels[slots] = labels
        if values is not None:
            self.values[slots] = values
        self.times[slots] = self.clock()
        return list(map(self._id_format, range(first, first + n)))

    def lookup(self, model: str, ids: list[Any]) -> tuple[NDArray[np.intp], NDArray[np.int32], list[str]]:
        """Find ids of ``model``. Returns (slots of the found ids, their versions, and per
        id its status: ``matched``, ``unknown_id`` or ``expired``)."""
        key = self._model_keys.get(model, -1)
        prefix = self.prefix + "-"
        now = self.clock()
        status: list[str] = []
        slots: list[int] = []
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
            status.append("matched")
            slots.append(slot)
        index = np.asarray(slots, dtype=np.intp)
        return index, self.versions[index], status


class FeedbackWindow:
    """Online accuracy (or MAE/RMSE) over the last ``window`` feedback rows, in chunks."""

    CHUNKS = 10

    def __init__(self, window: int = 10_000) -> None:
        self.chunk_size = max(1, window // self.CHUNKS)
        # per chunk: rows, correct, absolute error sum, squared error sum
        self.chunks = np.zeros((self.CHUNKS, 4), dtype=np.float64)
        self.total = np.zeros(4, dtype=np.float64)
        self.current = 0

    def add(self, correct: NDArray[np.bool_] | None = None, errors: NDArray[np.float64] | None = None) -> None:
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
            part = np.zeros(4)
            part[0] = take
            if correct is not None:
                part[1] = float(correct[done : done + take].sum())
            if errors is not None:
                e = errors[done : done + take]
                part[2] = float(np.abs(e).sum())
                part[3] = float((e * e).sum())
            self.chunks[self.current] += part
            self.total += part
            done += take

    @property
    def rows(self) -> int:
        return int(self.total[0])

    def accuracy(self) -> float | None:
        return float(self.total[1] / self.total[0]) if self.total[0] else None

    def mae(self) -> float | None:
        return float(self.total[2] / self.total[0]) if self.total[0] else None

    def rmse(self) -> float | None:
        return float(np.sqrt(self.total[3] / self.total[0])) if self.total[0] else None
