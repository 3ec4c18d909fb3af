"""Monitoring across the worker processes of one server (``driftgate serve --workers N``).

Each worker keeps its own ``ModelMetrics`` (the hot path stays per process and lock-light)
and *publishes* them: every ``PUBLISH_INTERVAL`` seconds, and a last time when it stops
after draining, it writes one file to the server's state folder,
``state-<worker>.msgpack``, holding a ``MetricsState`` per model version (msgpack; numpy
arrays as an extension type), written whole to a temporary name and renamed into place, so
a reader never sees half a file.

A reader (``/metrics``, ``/monitor``) at any worker sums its own live state with every other
worker's last published one (``ModelMetrics.view``). So:

- every row is counted exactly once, by the worker that served it;
- another worker's contribution is at most ``PUBLISH_INTERVAL`` (plus one write) old; the
  reading worker's own is exact;
- counters never go back, whichever worker each scrape reaches: a reader publishes its own
  state first and reports exactly what it published (``ModelMetrics.view``), so every
  later reader elsewhere reads at least that; a worker's publications only grow (one lock
  orders export and write); a dead worker's last file stays counted; and a worker
  restarted in the same slot takes over its predecessor's last publication (``inherit``)
  before counting anything. Only what a killed worker counted after its last publication
  and never reported (at most one interval's worth) is lost;
- readiness is not published: each worker answers for itself.

The state folder is created, and removed at exit, by the supervisor (``gateway.workers``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from prometheus_client.registry import Collector

from gateway.monitoring.metrics import MetricsState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from gateway.monitoring.metrics import ModelMetrics

__all__ = [
    "PUBLISH_INTERVAL",
    "Fleet",
    "FleetRequestCounts",
    "Publication",
    "WorkerContext",
    "decode_states",
    "encode_states",
]

log = logging.getLogger("driftgate.fleet")

PUBLISH_INTERVAL = 0.5
"""Seconds between a worker's publications: the most another worker's view of it lags."""

_NDARRAY = 1


class WorkerContext(msgspec.Struct, frozen=True):
    """Who a worker is, handed to it by the supervisor."""

    folder: str
    """The server's state folder (published states and the shared prediction rings)."""
    server: str
    """Random hex of this server run: the first part of every prediction id's prefix."""
    index: int
    """This worker's slot, 0 to ``workers - 1``; a restarted worker keeps its slot."""
    workers: int


class _Entry(msgspec.Struct, array_like=True):
    model: str
    version: str
    exported: float
    """Wall-clock time of the export (a time-window's age when it is taken over)."""
    state: MetricsState


class _Published(msgspec.Struct):
    worker: int
    pid: int
    models: list[_Entry]
    requests: list[tuple[str, str, int]] = []
    """``driftgate_requests_total`` of this worker: (model, reason, count)."""


class Publication:
    """What one worker published: its model versions' states and its request counts."""

    __slots__ = ("models", "pid", "requests")

    def __init__(
        self,
        models: dict[tuple[str, str], tuple[MetricsState, float]],
        requests: dict[tuple[str, str], int],
        pid: int = 0,
    ) -> None:
        self.models = models
        """``(model, version) -> (state, exported at)``."""
        self.requests = requests
        """``(model, reason) -> count``."""
        self.pid = pid
        """The process id of the worker that published it (0: not known)."""


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        header = msgspec.msgpack.encode([obj.dtype.str, list(obj.shape)])
        data = len(header).to_bytes(2, "little") + header + np.ascontiguousarray(obj).tobytes()
        return msgspec.msgpack.Ext(_NDARRAY, data)
    if isinstance(obj, np.generic):
        return obj.item()
    raise NotImplementedError(f"cannot publish a {type(obj).__name__}")


def _ext_hook(code: int, data: memoryview) -> Any:
    if code != _NDARRAY:
        raise msgspec.DecodeError(f"unknown extension type {code}")
    size = int.from_bytes(data[:2], "little")
    dtype, shape = msgspec.msgpack.decode(data[2 : 2 + size])
    return np.frombuffer(data, dtype=np.dtype(dtype), offset=2 + size).reshape(shape).copy()


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.msgpack.Decoder(_Published, ext_hook=_ext_hook)


class _PublishedRaw(msgspec.Struct):
    """``_Published`` with its entries encoded already (the same bytes)."""

    worker: int
    pid: int
    models: list[msgspec.Raw]
    requests: list[tuple[str, str, int]] = []


def encode_states(worker: int, publication: Publication, entries: dict[Any, msgspec.Raw] | None = None) -> bytes:
    """One worker's publication, as written to its state file. ``entries``: model versions'
    entries encoded already (by ``encode_entry``), used in place of encoding their states."""
    cached = entries or {}
    raw = [
        cached.get(key) or encode_entry(key, state, exported) for key, (state, exported) in publication.models.items()
    ]
    requests = [(m, r, c) for (m, r), c in publication.requests.items()]
    return _encoder.encode(_PublishedRaw(worker, os.getpid(), raw, requests))


def encode_entry(key: tuple[str, str], state: MetricsState, exported: float) -> msgspec.Raw:
    """One model version's entry of a publication, encoded."""
    return msgspec.Raw(_encoder.encode(_Entry(key[0], key[1], exported, state)))


def decode_states(data: bytes) -> Publication:
    """A state file's publication."""
    published = _decoder.decode(data)
    return Publication(
        {(e.model, e.version): (e.state, e.exported) for e in published.models},
        {(m, r): c for m, r, c in published.requests},
        published.pid,
    )


_EMPTY = Publication({}, {})


class Fleet:
    """One worker's side of the state folder: publish its own states, read the others'.

    Args:
        context: the worker's slot and the state folder.
        metrics: this worker's served model versions' metrics (called at each publication).
        requests: this worker's request counts, ``(model, reason) -> count``.
        interval: seconds between publications.
    """

    def __init__(
        self,
        context: WorkerContext,
        metrics: Callable[[], Iterable[ModelMetrics]] = tuple,
        requests: Callable[[], dict[tuple[str, str], int]] = dict,
        interval: float = PUBLISH_INTERVAL,
    ) -> None:
        self.context = context
        self.folder = Path(context.folder)
        self.path = self.state_path(context.index)
        self.interval = interval
        self._metrics = metrics
        self._requests = requests
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[Any, tuple[MetricsState, float], msgspec.Raw]] = {}
        """Each version's last published fingerprint, state and encoded entry."""
        self._inherited: dict[tuple[str, str], tuple[MetricsState, float]] = {}
        self._base_requests: dict[tuple[str, str], int] = {}
        """The predecessor's request counts: this worker's own start from zero on top."""
        if self.path.exists():  # a predecessor in this slot published: continue from it
            previous = self._read(self.path)
            self._inherited, self._base_requests = dict(previous.models), dict(previous.requests)
            log.info(
                "worker %d takes over the monitoring state of %d model versions", context.index, len(self._inherited)
            )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._parent = os.getppid()
        self.pids = {context.index: os.getpid()}
        """Worker slot -> process id: this worker's, and those of the others as last read
        (``others``) from their publications (``gateway.monitoring.process``)."""

    def state_path(self, worker: int) -> Path:
        return self.folder / f"state-{worker}.msgpack"

    # -- taking over a predecessor's state --

    def inherit(self, model: str, version: str) -> tuple[MetricsState, float] | None:
        """The predecessor's state of a model version and its age in seconds, once (the
        first ``ModelMetrics`` of that version in this worker continues from it)."""
        with self._lock:
            found = self._inherited.pop((model, version), None)
        if found is None:
            return None
        state, exported = found
        return state, max(time.time() - exported, 0.0)

    # -- reading the others --

    def states(self, model: str, version: str) -> list[MetricsState]:
        """Every other worker's last published state of a model version."""
        out = []
        for publication in self.others():
            found = publication.models.get((model, version))
            if found is not None:
                out.append(found[0])
        return out

    def request_counts(self) -> dict[tuple[str, str], int]:
        """The fleet's request counts: this worker's (published now) plus every other's."""
        total = dict(self.publish().requests)
        for publication in self.others():
            for key, count in publication.requests.items():
                total[key] = total.get(key, 0) + count
        return total

    def others(self) -> list[Publication]:
        """Every other worker's last publication."""
        found = []
        for w in range(self.context.workers):
            if w != self.context.index:
                publication = self._read(self.state_path(w))
                if publication.pid:
                    self.pids[w] = publication.pid
                found.append(publication)
        return found

    def _read(self, path: Path) -> Publication:
        """A worker's last publication (read whole each time: a file's time stamp is too
        coarse to tell two writes apart, and decoding one takes tens of microseconds)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return _EMPTY  # not published yet
        try:
            return decode_states(data)
        except (OSError, msgspec.DecodeError, ValueError) as exc:
            log.warning("cannot read the monitoring state %s: %s", path, exc)
            return _EMPTY

    # -- publishing --

    def publish(self) -> Publication:
        """Write this worker's states (and any inherited one not yet taken over) and request
        counts atomically; returns what was written. A version whose counters have not moved
        since the last publication (``ModelMetrics.fingerprint``) is neither exported nor
        encoded again: a worker serving a thousand mostly idle models publishes in
        milliseconds, not in a second."""
        with self._publish_lock:  # exports and writes in one order: the file only grows
            now = time.time()
            models: dict[tuple[str, str], tuple[MetricsState, float]] = {}
            entries: dict[Any, msgspec.Raw] = {}
            last = self._last
            self._last = {}
            for m in self._metrics():
                key = (m.model, m.version)
                fingerprint = m.fingerprint()
                previous = last.get(key)
                if fingerprint is not None and previous is not None and previous[0] == fingerprint:
                    _, found, raw = previous
                else:
                    state, fingerprint = m.snapshot()
                    found = (state, now)
                    raw = encode_entry(key, *found)
                models[key] = found
                entries[key] = raw
                self._last[key] = (fingerprint, found, raw)
            requests = dict(self._base_requests)
            for key, count in list(self._requests().items()):
                requests[key] = requests.get(key, 0) + count
            with self._lock:
                for key, found in self._inherited.items():
                    models.setdefault(key, found)
            publication = Publication(models, requests)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_bytes(encode_states(self.context.index, publication, entries))
            os.replace(tmp, self.path)
        return publication

    def start(self) -> None:
        """Publish every ``interval`` seconds on a background thread."""
        self._thread = threading.Thread(target=self._run, name="driftgate-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop publishing, after a last publication (in-flight requests have finished)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._safe_publish()

    def _safe_publish(self) -> None:
        try:
            self.publish()
        except Exception:  # never let the publisher thread die; the next round retries
            log.exception("cannot publish the monitoring state to %s", self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._safe_publish()
            if os.getppid() != self._parent:  # the supervisor is gone: drain and end
                log.error("worker %d: the supervisor process is gone; draining", self.context.index)
                os.kill(os.getpid(), signal.SIGTERM)
                self._parent = os.getppid()


class FleetRequestCounts(Collector):
    """``driftgate_requests_total`` of the whole fleet, in place of one worker's own."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        from gateway.monitoring.requests import RequestCounts

        merged = RequestCounts()
        merged.counts = self.fleet.request_counts()
        yield from merged.collect()
