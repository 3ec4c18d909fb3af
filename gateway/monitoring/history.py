"""A short history of each served version: one point a minute for the last four hours.

``/monitor`` is a snapshot; "is it decaying?" is a question about trends. A sampler thread
(``HistorySampler``, one per process, started with the gateway) reads every served
version's ``MetricsView`` each ``interval`` seconds (``DRIFTGATE_HISTORY_SECONDS``, default
60) and keeps a bounded ring of points (``POINTS``): PSI per feature, the mean confidence of
the rows predicted since the last point, the estimated (CBPE) and online accuracy over the
windows, the rejection rate since the last point, and per segment value its estimated and
online accuracy. Nothing grows with traffic or time; the page draws the points as inline
SVG charts (``gateway.monitoring.report``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from gateway.monitoring.segments import slice_report

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.monitoring.metrics import MetricsView, ModelMetrics

__all__ = ["POINTS", "History", "HistorySampler"]

log = logging.getLogger("driftgate.history")

POINTS = 240
"""Points kept per version: four hours at one a minute."""


class History:
    """The points of one model version, oldest first."""

    def __init__(self, points: int = POINTS) -> None:
        self.points: deque[dict[str, Any]] = deque(maxlen=points)
        self._last: tuple[int, int, int, float] | None = None
        """(predicted, rejected, confidence count, confidence sum) at the last point."""
        self.lock = threading.Lock()
        self.interval = 60.0
        """Seconds between points (set by the sampler)."""

    def sample(self, view: MetricsView, now: float | None = None) -> dict[str, Any]:
        """Add the point of ``view`` (taken at ``now``, wall-clock seconds)."""
        predicted, rejected = int(view.rows["predicted"]), int(view.rows["rejected"])
        count, total = int(view.confidence.counts.sum()), float(view.confidence.total)
        last = self._last or (predicted, rejected, count, total)
        new_predicted, new_rejected = predicted - last[0], rejected - last[1]
        new_count, new_total = count - last[2], total - last[3]
        point: dict[str, Any] = {
            "time": time.time() if now is None else now,
            "rows": new_predicted + new_rejected,
            "rejection_rate": new_rejected / (new_predicted + new_rejected) if new_predicted + new_rejected else None,
            "mean_confidence": new_total / new_count if view.classification and new_count else None,
            "estimated_accuracy": view.estimated_accuracy if view.classification else None,
            "online_accuracy": view.feedback.accuracy() if view.classification else None,
            "online_mae": None if view.classification else view.feedback.mae(),
            "drift": {name: s["psi"] for name, s in view.statistics.items() if not name.startswith("_")},
        }
        if view.slicing.count:
            point["segments"] = {
                f"{s['segment']}={s['value']}": {"estimated_accuracy": s["estimated_accuracy"], "online_accuracy": s.get("accuracy")}
                for s in slice_report(view.slicing, view.segment_state, view.classification)
            }
        with self.lock:
            self._last = (predicted, rejected, count, total)
            self.points.append(point)
        return point

    def export(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.points)


class HistorySampler:
    """Samples every served version's history each ``interval`` seconds, on a daemon thread."""

    def __init__(self, served: Callable[[], list[ModelMetrics]], interval: float) -> None:
        self.served = served
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_all(self) -> None:
        for metrics in self.served():
            metrics.history.interval = self.interval
            try:
                metrics.history.sample(metrics.view())
            except Exception:  # a failed point must never stop the sampler
                log.exception("history point of %s version %s failed", metrics.model, metrics.version)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_all()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="driftgate-history", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
