"""The running gateway: its models, its repository, readiness and draining.

``Gateway`` owns the long-lived state of a server process. At start it loads every
version in the repository on a background thread (so liveness answers at once, and
readiness only once every model is loaded and warmed), then keeps watching the
repository: a version that ``driftgate register`` writes there is loaded and becomes the
default without a restart.

Readiness means: the initial load has finished, no load is under way at start-up, and
the process is not draining. A version that fails to load is logged and listed with its
reason (``GET /v2/repository/index``) but does not hold readiness back: one bad bundle in
a shared repository must not take the models beside it out of service.

As one worker of several (``driftgate serve --workers N``, given a ``WorkerContext``), the
gateway keeps its prediction ring in the server's state folder (``SharedPredictionLog``)
and publishes its monitoring state there, so that any worker reads the fleet's
(``gateway.monitoring.fleet``). The repository extension's ``unload`` and ``load`` act on
the whole fleet: the worker that takes one records it there (``gateway.unloads``), and
every other follows the record within ``POLL_INTERVAL`` (``_follow``), unloading the model,
or loading it again from the repository.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.batching import Batcher, parse_batching
from gateway.dispatch import Dispatcher
from gateway.errors import GatewayError, ModelNotFoundError, ModelNotReadyError
from gateway.monitoring.comparison import check_rollbacks
from gateway.monitoring.feedback import PredictionLog, SharedPredictionLog
from gateway.monitoring.fleet import Fleet, FleetRequestCounts, WorkerContext
from gateway.monitoring.history import HistorySampler
from gateway.monitoring.metrics import new_metrics_registry
from gateway.monitoring.requests import RequestCounts
from gateway.monitoring.reviews import ReviewQueue
from gateway.predlog import PayloadLog
from gateway.registry import ModelRegistry
from gateway.repository import MODEL_FILE, SPEC_FILE, ModelRepository, VersionEntry
from gateway.rollout import Rollouts
from gateway.runtime import use_providers
from gateway.shadow import Shadow, ShadowLog, SharedShadowLog
from gateway.unloads import POLL_INTERVAL, UnloadedModels

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.monitoring.metrics import ModelMetrics
    from gateway.registry import LoadedModel
    from gateway.tracing import RequestTracer

__all__ = ["Gateway"]

log = logging.getLogger("driftgate")


SETTLE_SECONDS = 1.0
"""The watcher loads a version only once its files are this old: a model copied into the
repository by hand (not staged and renamed, as ``driftgate register`` does) may still be
being written. A version that failed to load is tried again when its files change."""


def _files_of(entry: VersionEntry) -> tuple[int, int, int, int] | None:
    """(model mtime, model size, spec mtime, spec size) of a version folder, None if a file is gone."""
    try:
        model, spec = (entry.path / MODEL_FILE).stat(), (entry.path / SPEC_FILE).stat()
    except OSError:
        return None
    return (model.st_mtime_ns, model.st_size, spec.st_mtime_ns, spec.st_size)


class Gateway:
    """State of one server process (see the module docstring)."""

    def __init__(
        self, settings: Settings, worker: WorkerContext | None = None, tracer: RequestTracer | None = None
    ) -> None:
        self.settings = settings
        self.repository = ModelRepository(settings.repository)
        self.metrics_registry, self.collector = new_metrics_registry()
        self.worker = worker
        self.fleet: Fleet | None = None
        if worker is not None:
            self.fleet = Fleet(worker, self.served_metrics, lambda: self.requests.counts)
        monitor: dict[str, object] = {
            "window_rows": settings.drift_window_rows,
            "window_seconds": settings.drift_window_seconds,
            "feedback_window": settings.feedback_window,
        }
        if self.fleet is not None:
            monitor["fleet"] = self.fleet
        self.reviews = ReviewQueue(
            Path(worker.folder) / "reviews.sqlite" if worker is not None else None, settings.review_queue_size
        )
        """Rows waiting for a person (``gateway.monitoring.reviews``), shared by the workers."""
        monitor["reviews"] = self.reviews
        self.history = HistorySampler(self.served_metrics, settings.history_seconds)
        """Samples every served version's short history (``gateway.monitoring.history``)."""
        self.model_registry = ModelRegistry(self.collector, monitor)
        self.collector.ready = lambda: self.ready
        self.collector.reviews = self.reviews.stats
        self.collector.failures = lambda: [(f.name, f.version) for f in self.model_registry.failures()]
        self.predictions: PredictionLog
        if worker is not None:
            self.predictions = SharedPredictionLog(
                worker.folder, worker.server, worker.index, worker.workers,
                settings.prediction_store_size, settings.prediction_ttl_seconds,
            )  # fmt: skip
        else:
            self.predictions = PredictionLog(settings.prediction_store_size, settings.prediction_ttl_seconds)
        self.rollouts = Rollouts(self.repository.root, self.model_registry)
        """Each model's primary and candidate (``gateway.rollout``), as the repository says."""
        def ring() -> PredictionLog:
            if worker is not None:
                return SharedShadowLog(
                    worker.folder, worker.server, worker.index, worker.workers,
                    settings.prediction_store_size, settings.prediction_ttl_seconds,
                )  # fmt: skip
            return ShadowLog(settings.prediction_store_size, settings.prediction_ttl_seconds, prefix=self.predictions.prefix)

        self.shadow = Shadow(self.rollouts, ring, monitored=settings.monitoring)
        """A shadow candidate's queue and worker (``gateway.shadow``)."""
        self.collector.rollouts = self.rollouts.exported
        self.payloads: PayloadLog | None = None
        """The prediction log (``serve --log-dir``), or None."""
        if settings.log_dir:
            self.payloads = PayloadLog(
                settings.log_dir, self.predictions.prefix, sample=settings.log_sample,
                file_bytes=settings.log_file_bytes, max_bytes=settings.log_max_bytes, queue_rows=settings.log_queue_rows,
            )  # fmt: skip
            self.metrics_registry.register(self.payloads)
            if worker is not None:  # /metrics counts the fleet's log records
                self.payloads.share(worker.folder, worker.index, worker.workers)
            self.shadow.on_result.append(self.payloads.shadow)  # a shadow's predictions, logged beside the primary's
        self.loaded = threading.Event()
        self.draining = False
        self.unloaded: set[str] = set()
        """Models unloaded through the repository API: the watcher leaves them alone."""
        self.fleet_unloads = UnloadedModels(worker.folder) if worker is not None else None
        """The fleet's record of ``unloaded``, as one worker of several."""
        self._unload_lock = threading.Lock()
        """Orders the changes of ``unloaded`` (and of its record) with the removals they
        bring; held only briefly (no model is loaded under it)."""
        self._load_lock = threading.Lock()
        """Serialises loading: the watcher, the ``load`` call and a reload after another
        worker's ``load`` never load one version twice."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._follower: threading.Thread | None = None
        self._failed_files: dict[tuple[str, int], tuple[int, int, int, int] | None] = {}
        """(mtime, size) of the files of versions that failed to load: a change retries them."""
        self.batching = parse_batching(settings.batching)
        self.providers = use_providers(settings.providers)
        """onnxruntime execution providers of every session this process creates."""
        self.requests = RequestCounts()
        self.metrics_registry.register(self.requests)
        if self.fleet is not None:  # /metrics counts the fleet's requests, not this worker's alone
            self.metrics_registry.unregister(self.requests)
            self.metrics_registry.register(FleetRequestCounts(self.fleet))
        self._batchers: dict[tuple[str, int], Batcher] = {}
        self.dispatcher = Dispatcher(self)
        """The one way in of every prediction request (``gateway.dispatch``); with an access
        log or traces, one that notes each request too (``gateway.observe``)."""
        if tracer is not None or settings.access_log:
            from gateway.observe import ObservedDispatcher

            self.dispatcher = ObservedDispatcher(self, tracer, settings.access_log)

    def batcher(self, model: LoadedModel) -> Batcher | None:
        """The dynamic-batching queue of ``model``, or None if batching is off for it."""
        policy = self.batching.get(model.name) or self.batching.get("*")
        if policy is None:
            return None
        key = (model.name, model.version)
        batcher = self._batchers.get(key)
        if batcher is None or batcher.runtime is not model.runtime:
            batcher = self._batchers[key] = Batcher(model.runtime, policy, lambda: self.dispatcher.in_flight)
        return batcher

    def served_metrics(self) -> list[ModelMetrics]:
        """Every served version's metrics (what a worker publishes)."""
        return [m.metrics for m in self.model_registry.models()]

    @property
    def ready(self) -> bool:
        """Loaded, not draining, and serving at least one model: a replica that can answer
        nothing must not be routed to (MLServer#2056)."""
        return self.loaded.is_set() and not self.draining and self.model_registry.serving

    def start(self) -> None:
        """Load the repository in the background, then watch it (once: later calls do nothing)."""
        if self._thread is not None:
            return
        if self.payloads is not None:
            self.payloads.start()
        if self.fleet_unloads is not None:  # before any load: a new worker never serves what the fleet unloaded
            self.unloaded = self.fleet_unloads.names() or set()
            if self.unloaded:
                log.info("unloaded across the workers, not loaded here: %s", ", ".join(sorted(self.unloaded)))
            self._follower = threading.Thread(target=self._follow, name="driftgate-unloads", daemon=True)
            self._follower.start()
        self._thread = threading.Thread(target=self._run, name="driftgate-loader", daemon=True)
        self._thread.start()
        self.history.start()
        if self.fleet is not None:
            self.fleet.start()

    def stop(self) -> None:
        self._stop.set()
        self.history.stop()
        for thread in (self._thread, self._follower):
            if thread is not None:
                thread.join(timeout=5)
        self.shadow.stop()
        if self.payloads is not None:
            self.payloads.stop()  # writes what is queued and finishes the open files
        if self.fleet is not None:
            self.fleet.stop()  # the last publication: everything this worker counted

    def drain(self) -> None:
        """Fail readiness at once; in-flight requests go on to the end."""
        if not self.draining:
            log.info("draining: readiness now fails; finishing in-flight requests")
        self.draining = True

    def scan(self) -> int:
        """Load every repository version not seen before. Returns how many were loaded.
        Staging folders left by registrations killed mid-write are removed first."""
        loaded = 0
        try:
            abandoned = self.repository.clean_staging()
            if abandoned:
                log.warning(
                    "removed %d staging folders abandoned by registrations that never finished: %s",
                    len(abandoned),
                    ", ".join(abandoned),
                )
            entries = self.repository.scan()
            self.rollouts.refresh()
        except OSError as exc:
            log.error("cannot scan the model repository %s: %s", self.repository.root, exc)
            return 0
        for entry in entries:
            if self._stop.is_set():
                break
            with self._load_lock:
                loaded += self._scan_entry(entry)
        return loaded

    def _scan_entry(self, entry: VersionEntry) -> int:
        """Load one version the watcher found, if it is new (or its files changed since it
        failed); 1 if it was loaded."""
        if entry.name in self.unloaded:
            return 0
        if self.model_registry.known(entry.name, entry.version):
            failed = self._failed_files.get(entry.key)
            if failed is None or failed == _files_of(entry):
                return 0
            self.model_registry.forget_failure(entry.name, entry.version)  # its files changed: try again
        files = _files_of(entry)
        if files is None:
            return 0
        if self.loaded.is_set() and time.time() - max(files[0], files[2]) / 1e9 < SETTLE_SECONDS:
            return 0  # written moments ago, perhaps still being copied: look again next scan
        self.rollouts.refresh(entry.name)  # written before the version: it decides who answers once it loads
        if self._load_entry(entry) is not None:
            self._failed_files.pop(entry.key, None)
            return 1
        self._failed_files[entry.key] = files
        return 0

    def _load_entry(self, entry: VersionEntry) -> LoadedModel | None:
        """Load and serve a version (the caller holds ``_load_lock``); None if it failed.
        ``unload`` marks a model before it removes its versions, so a version of it that
        finishes loading after that removal is taken out again here."""
        model = self.model_registry.load_entry(entry, self.settings.intra_op_threads)
        if model is not None and entry.name in self.unloaded:
            self.model_registry.remove(entry.name, entry.version)
        return model

    def load(self, name: str) -> list[int]:
        """Serve every version of ``name`` found in the repository (after an unload, too).

        Raises ``ModelNotFoundError`` if the repository has no version of it, and the load
        error of the highest version if none of them loads.
        """
        entries = [e for e in self.repository.scan() if e.name == name]
        if not entries:
            raise ModelNotFoundError(f"the repository has no model named {name[:80]!r}")
        with self._unload_lock:
            if self.fleet_unloads is not None:
                self.fleet_unloads.lift(name)  # the other workers load it too (``_follow``)
            self.unloaded.discard(name)
        return self._serve(name, entries)

    def _serve(self, name: str, entries: list[VersionEntry]) -> list[int]:
        """Serve every version in ``entries`` (of ``name``); raise as ``load`` does."""
        loaded = []
        with self._load_lock:
            for entry in entries:
                self.model_registry.forget_failure(entry.name, entry.version)
                served = self.model_registry.state(entry.name, entry.version) == "READY"
                if served or self._load_entry(entry) is not None:
                    loaded.append(entry.version)
        if not loaded:
            failure = {f.version: f.reason for f in self.model_registry.failures() if f.name == name}
            raise ModelNotReadyError(
                f"no version of {name!r} loads: {failure.get(entries[-1].version, 'unknown error')}"
            )
        return loaded

    def unload(self, name: str) -> list[int]:
        """Stop serving every version of ``name``; the watcher will not load it again."""
        with self._unload_lock:
            if name not in self.model_registry.defaults():
                raise ModelNotFoundError(f"no model named {name[:80]!r} is served")
            if self.fleet_unloads is not None:
                self.fleet_unloads.mark(name)  # first: should this fail, nothing has changed
            self.unloaded.add(name)  # before the removal (``_load_entry``)
            return self.model_registry.remove(name)

    def _follow(self) -> None:
        """As one worker of several: follow the fleet's record of unloaded models."""
        while not self._stop.wait(POLL_INTERVAL):
            try:
                self.follow_unloads()
            except Exception:  # never let the thread die; the next round retries
                log.exception("cannot follow the unloaded models recorded in the state folder")

    def follow_unloads(self) -> None:
        """Unload what another worker unloaded; load again, on a thread of its own (this
        one keeps following meanwhile), what another worker loaded."""
        assert self.fleet_unloads is not None
        with self._unload_lock:
            marked = self.fleet_unloads.names()
            if marked is None:
                return
            lifted = sorted(self.unloaded - marked)
            self.unloaded -= set(lifted)
            for name in sorted(marked - self.unloaded):
                self.unloaded.add(name)
                removed = self.model_registry.remove(name)
                log.info("%s unloaded by another worker (versions here: %s)", name, removed or "none")
        if lifted:
            threading.Thread(target=self._reload, args=(lifted,), name="driftgate-reload", daemon=True).start()

    def _reload(self, names: list[str]) -> None:
        for name in names:
            if name in self.unloaded:
                continue  # unloaded again meanwhile
            log.info("%s loaded by another worker: loading it here", name)
            try:
                entries = [e for e in self.repository.scan() if e.name == name]
                if entries:
                    self._serve(name, entries)
            except (GatewayError, OSError) as exc:
                log.error("%s: cannot load it again here: %s", name, exc)

    def _run(self) -> None:
        count = self.scan()
        if self._stop.is_set():  # stopped while loading (the listener never bound, SIGTERM):
            return  # neither ready nor empty, whatever the scan got to
        failed = len(self.model_registry.failures())
        log.info("loaded %d model versions from %s (%d failed); ready", count, self.repository.root, failed)
        if count == 0 and failed == 0:
            log.warning("the model repository %s holds no model versions", self.repository.root)
        # Everything alive now (modules, the app, the loaded models) lives as long as the
        # process: move it out of the collector's generations, so a full collection scans
        # only what requests create. Without this, a full collection every few thousand
        # requests walked the whole start-up heap (~10 ms with the event loop stopped: the
        # p99 of one-row requests at 8 connections). Later loads are not frozen: a retired
        # model's cycles must stay collectable.
        gc.freeze()
        self.loaded.set()
        interval = self.settings.watch_interval
        while interval > 0 and not self._stop.wait(interval):
            self.scan()
            if self.worker is None or self.worker.index == 0:  # one judge per fleet
                check_rollbacks(self)
