"""The review queue: predictions a person should check before anyone acts on them.

A predicted row waits here when its confidence is below the spec's
``output.review_threshold``, or when a feature's ``on_violation: flag`` policy let it through
marked. Each entry holds the row's inputs as the client sent them, what the model answered,
and why it waits. ``GET /v1/models/{name}/reviews`` lists a model's queue, oldest first;
``POST /v1/models/{name}/reviews/{id}`` takes a person's label (or value), records it as
feedback for that prediction (``gateway.service.record_feedback``: online accuracy moves)
and takes the row off the queue.

- **Bounded**: at most ``capacity`` rows per model (``--review-queue-size``, default 10,000);
  when a row arrives at a full queue the oldest leaves, counted as ``dropped``.
- **Shared by the workers** of one server (``serve --workers N``): the queue is one SQLite
  database in the server's state folder, so a row queued by any worker is listed, and can
  be answered, at every worker. One process keeps it in memory.
- **Off the hot path where it can be**: rows that need no review cost one check; rows that
  do cost one insert each (a few tens of microseconds).

Counts, per model, that ``/metrics`` exports: queued, dropped, answered, and of the answered
classifications, how many the person and the model agreed on.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["COUNTS", "DEFAULT_CAPACITY", "ReviewQueue"]

DEFAULT_CAPACITY = 10_000
COUNTS = ("queued", "dropped", "answered", "agreed")
"""The counters kept per model (``agreed``: answers equal to the model's own label)."""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class ReviewQueue:
    """The bounded per-model queues of one server (see the module docstring).

    Args:
        path: the shared database file (several workers), or None: in memory.
        capacity: rows per model.
    """

    def __init__(self, path: str | Path | None = None, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.lock = threading.Lock()
        self.db = sqlite3.connect(
            ":memory:" if path is None else str(path), check_same_thread=False, isolation_level=None, timeout=10
        )
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS reviews (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, id TEXT NOT NULL, entry BLOB NOT NULL);
            CREATE INDEX IF NOT EXISTS reviews_by_model ON reviews (model, seq);
            CREATE UNIQUE INDEX IF NOT EXISTS reviews_by_id ON reviews (model, id);
            CREATE TABLE IF NOT EXISTS review_counts (
                model TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (model, name));
            """
        )

    def _bump(self, model: str, name: str, by: int) -> None:
        self.db.execute(
            "INSERT INTO review_counts VALUES (?, ?, ?) ON CONFLICT (model, name) DO UPDATE SET value = value + ?",
            (model, name, by, by),
        )

    def add(self, model: str, entries: Sequence[dict[str, Any]]) -> None:
        """Queue rows (each a dict with its ``id``), dropping the oldest beyond ``capacity``."""
        rows = [(model, e["id"], _encode(e)) for e in entries]
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("INSERT OR IGNORE INTO reviews (model, id, entry) VALUES (?, ?, ?)", rows)
                self._bump(model, "queued", len(rows))
                cut = self.db.execute(
                    "SELECT seq FROM reviews WHERE model = ? ORDER BY seq DESC LIMIT 1 OFFSET ?", (model, self.capacity)
                ).fetchone()
                if cut is not None:
                    dropped = self.db.execute("DELETE FROM reviews WHERE model = ? AND seq <= ?", (model, cut[0])).rowcount
                    self._bump(model, "dropped", dropped)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def list(self, model: str, limit: int) -> list[dict[str, Any]]:
        """The oldest ``limit`` rows of ``model``'s queue."""
        with self.lock:
            found = self.db.execute(
                "SELECT entry FROM reviews WHERE model = ? ORDER BY seq LIMIT ?", (model, limit)
            ).fetchall()
        return [_decode(row[0]) for row in found]

    def get(self, model: str, review_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT entry FROM reviews WHERE model = ? AND id = ?", (model, review_id)).fetchone()
        return None if row is None else _decode(row[0])

    def take(self, model: str, review_id: str, agreed: bool | None) -> bool:
        """Take a row off the queue as answered (``agreed``: the person gave the model's own
        label; None for a regression). False if another answer took it first."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                gone = self.db.execute("DELETE FROM reviews WHERE model = ? AND id = ?", (model, review_id)).rowcount
                if gone:
                    self._bump(model, "answered", 1)
                    if agreed:
                        self._bump(model, "agreed", 1)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return bool(gone)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per model: ``length`` (rows waiting) and every count of ``COUNTS``."""
        with self.lock:
            lengths = self.db.execute("SELECT model, COUNT(*) FROM reviews GROUP BY model").fetchall()
            counts = self.db.execute("SELECT model, name, value FROM review_counts").fetchall()
        out: dict[str, dict[str, int]] = {}
        for model, name, value in counts:
            out.setdefault(model, {"length": 0, **dict.fromkeys(COUNTS, 0)})[name] = int(value)
        for model, length in lengths:
            out.setdefault(model, {"length": 0, **dict.fromkeys(COUNTS, 0)})["length"] = int(length)
        return out

    def length(self, model: str) -> int:
        return self.stats().get(model, {}).get("length", 0)


def review_entries(model: Any, prepared: Any, outcome: Any, review: Any) -> list[dict[str, Any]]:
    """The queue entries of the rows of a predicted batch that wait for a person: ``review``
    (rows below the threshold, or None) or flagged. ``model`` is a ``LoadedModel``,
    ``prepared`` a ``gateway.service.Prepared``, ``outcome`` its ``Outcome``."""
    checked = prepared.checked
    n = checked.n_rows
    low = review.tolist() if review is not None else [False] * n
    flagged = checked.flagged.tolist() if checked.flagged is not None else [False] * n
    rows = [i for i in range(n) if low[i] or flagged[i]]
    if not rows:
        return []
    spec = model.spec
    raw = prepared.raw
    threshold = spec.output.review_threshold if spec.output is not None else None
    labels = spec.output.labels if spec.output is not None else ()
    now = time.time()
    entries = []
    for i in rows:
        inputs: dict[str, Any] = {}
        for name in spec.feature_names:
            column = raw.data.get(name) if raw is not None else None
            value: Any = None if column is None else column[i]
            inputs[name] = value.item() if hasattr(value, "item") else value
        why = []
        if low[i] and outcome.confidence is not None:
            why.append(f"confidence {float(outcome.confidence[i]):.3f} is below the review threshold {threshold}")
        if flagged[i]:
            why += [f"{v.feature}: {v.reason} (flagged)" for v in outcome.marks.get(i, []) if v.action == "flag"]
        prediction: dict[str, Any]
        if outcome.label_index is not None:
            prediction = {"label": labels[int(outcome.label_index[i])], "confidence": float(outcome.confidence[i])}
        else:
            prediction = {"value": float(outcome.values[i])}
        entries.append(
            {"id": outcome.ids[i], "version": str(model.version), "inputs": inputs, "prediction": prediction, "why": why, "time": now}
        )
    return entries
