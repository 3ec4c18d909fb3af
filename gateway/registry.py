"""``ModelRegistry``: which model versions are served, and which is each model's default.

A ``LoadedModel`` bundles everything a request needs (spec, compiled guards and
transform, runtime, metrics), built once at load. The registry maps names to their
loaded versions; the default version is the highest. Updates are copy-on-write: a new
mapping is built and swapped in with one assignment, so a request that has looked up a
model keeps that exact version to the end, and no request ever sees a half-updated table.

Loading reads a version folder of the repository, decodes its spec, builds the runtime
(which checks the model against the spec and warms it up), and only then swaps it in.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from gateway.baseline import decode_baseline
from gateway.errors import GatewayError, ModelNotFoundError, SpecError
from gateway.model_check import check_model
from gateway.model_check.importance import read_importance
from gateway.monitoring.metrics import ModelMetrics
from gateway.repository import BASELINE_FILE, IMPORTANCE_FILE
from gateway.runtime import OnnxRuntime
from gateway.spec import decode_spec

if TYPE_CHECKING:
    from gateway.baseline import Baseline
    from gateway.monitoring.metrics import GatewayCollector
    from gateway.repository import VersionEntry
    from gateway.runtime import Runtime
    from gateway.spec import FeatureSpec

__all__ = ["LoadFailure", "LoadedModel", "ModelRegistry", "load_model", "load_runtime"]

log = logging.getLogger("driftgate.registry")

State = Literal["READY", "LOADING", "UNAVAILABLE"]


class LoadedModel:
    """One served model version, ready to predict."""

    __slots__ = ("baseline", "guards", "loaded_at", "metrics", "name", "runtime", "spec", "transform", "version")

    def __init__(
        self,
        name: str,
        version: int,
        spec: FeatureSpec,
        runtime: Runtime,
        monitor: dict[str, Any] | None = None,
        baseline: Baseline | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.spec = spec
        self.guards = spec.guards
        self.transform = spec.transformer
        self.runtime = runtime
        self.baseline = baseline
        """What the version did on held-out rows at registration (``gateway.baseline``), or None."""
        self.metrics = ModelMetrics(spec, name, version, **(monitor or {}), baseline=baseline)
        self.loaded_at = time.time()


class LoadFailure:
    """A version that could not be loaded, and why (shown in the repository index)."""

    __slots__ = ("name", "reason", "version")

    def __init__(self, name: str, version: int, reason: str) -> None:
        self.name = name
        self.version = version
        self.reason = reason


def load_model(
    name: str,
    version: int,
    model: bytes,
    spec_text: bytes,
    intra_op_threads: int = 1,
    monitor: dict[str, Any] | None = None,
    baseline: Baseline | None = None,
) -> LoadedModel:
    """Decode, check, load and warm a model version. Raises a ``GatewayError`` on refusal.

    The ONNX file is inspected and loaded once in a resource-limited child process
    (``gateway.model_check``) before this process builds its own session, so a hostile
    or broken file costs the child, never the server (``ModelInvalidError``, 422).
    """
    spec, runtime = load_runtime(name, version, model, spec_text, intra_op_threads)
    return LoadedModel(name, version, spec, runtime, monitor, baseline)


def load_runtime(
    name: str, version: int, model: bytes, spec_text: bytes, intra_op_threads: int = 1
) -> tuple[FeatureSpec, OnnxRuntime]:
    """``load_model`` without the monitoring: the decoded spec and the checked, warmed runtime."""
    spec = decode_spec(spec_text, "yaml", source=f"{name} version {version} spec")
    if spec.output is None:
        raise SpecError(f"{name} version {version}: the spec has no output (task and labels); fit it with a target")
    trial = check_model(model, intra_op_threads)
    growth_mib = trial.memory_growth_bytes >> 20
    log.debug("%s version %d: trial load in %.0f ms, +%d MiB", name, version, trial.seconds * 1000, growth_mib)
    runtime = OnnxRuntime(model, spec, intra_op_threads=intra_op_threads)
    runtime.variable_cost = trial.variable_cost
    if trial.variable_cost:
        log.info("%s version %d: its cost depends on input values; every call runs off the event loop", name, version)
    return spec, runtime


class ModelRegistry:
    """Served models by name and version (see the module docstring)."""

    def __init__(self, collector: GatewayCollector | None = None, monitor: dict[str, Any] | None = None) -> None:
        self.monitor = monitor or {}
        """Keyword arguments of every loaded model's ``ModelMetrics`` (window sizes)."""
        self._models: dict[str, dict[int, LoadedModel]] = {}
        self._defaults: dict[str, LoadedModel] = {}
        self._failures: dict[tuple[str, int], LoadFailure] = {}
        self._loading: set[tuple[str, int]] = set()
        self._lock = threading.Lock()  # serialises writers; readers never take it
        self._collector = collector

    # -- reads (lock-free: they see one consistent snapshot) --

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The default (highest) version of ``name``, or the pinned ``version``."""
        if version is None:
            model = self._defaults.get(name)
            if model is None:
                raise ModelNotFoundError(f"no model named {name[:80]!r} is served", model=name[:80])
            return model
        versions = self._models.get(name)
        if versions is None or version not in versions:
            what = f"{name[:80]!r} version {version}" if versions is not None else f"named {name[:80]!r}"
            raise ModelNotFoundError(f"no model {what} is served")
        return versions[version]

    @property
    def serving(self) -> bool:
        """At least one model version is served."""
        return bool(self._defaults)

    def models(self) -> list[LoadedModel]:
        return [m for versions in self._models.values() for m in versions.values()]

    def defaults(self) -> dict[str, LoadedModel]:
        return dict(self._defaults)

    def failures(self) -> list[LoadFailure]:
        return list(self._failures.values())

    def state(self, name: str, version: int) -> State:
        if version in self._models.get(name, {}):
            return "READY"
        if (name, version) in self._loading:
            return "LOADING"
        return "UNAVAILABLE"

    @property
    def busy(self) -> bool:
        """True while any load is under way."""
        return bool(self._loading)

    def known(self, name: str, version: int) -> bool:
        return (
            version in self._models.get(name, {})
            or (name, version) in self._failures
            or (name, version) in self._loading
        )

    # -- writes --

    def forget_failure(self, name: str, version: int) -> None:
        with self._lock:
            self._failures.pop((name, version), None)

    def add(self, model: LoadedModel) -> None:
        """Serve ``model``; it becomes the default if its version is the highest."""
        with self._lock:
            versions = {**self._models.get(model.name, {}), model.version: model}
            self._models = {**self._models, model.name: versions}
            self._defaults = {**self._defaults, model.name: versions[max(versions)]}
            self._failures.pop((model.name, model.version), None)
            if self._collector is not None:
                self._collector.attach(model.metrics)
        log.info(
            "serving %s version %d (default: version %d)", model.name, model.version, self._defaults[model.name].version
        )

    def remove(self, name: str, version: int | None = None) -> list[int]:
        """Stop serving one version, or every version of ``name``. Returns what was removed."""
        with self._lock:
            versions = dict(self._models.get(name, {}))
            removed = (
                [version]
                if version is not None and version in versions
                else (list(versions) if version is None else [])
            )
            for v in removed:
                del versions[v]
                if self._collector is not None:
                    self._collector.detach(name, v)
            models = dict(self._models)
            defaults = dict(self._defaults)
            if versions:
                models[name] = versions
                defaults[name] = versions[max(versions)]
            else:
                models.pop(name, None)
                defaults.pop(name, None)
            self._models, self._defaults = models, defaults
        return removed

    def load_entry(self, entry: VersionEntry, intra_op_threads: int = 1) -> LoadedModel | None:
        """Load a repository version and serve it. A failure is logged and recorded, never raised."""
        key = entry.key
        with self._lock:
            self._loading = self._loading | {key}
        try:
            raw = entry.read_baseline()
            baseline = None if raw is None else decode_baseline(raw, f"{entry.name} version {entry.version} {BASELINE_FILE}")
            model = load_model(
                entry.name, entry.version, entry.read_model(), entry.read_spec(), intra_op_threads, self.monitor, baseline
            )
            model.metrics.importance = read_importance(entry.path / IMPORTANCE_FILE)
            self.add(model)
            return model
        except (GatewayError, OSError) as exc:
            reason = str(exc)
            log.error("cannot load %s version %d from %s: %s", entry.name, entry.version, entry.path, reason)
            with self._lock:
                self._failures[key] = LoadFailure(entry.name, entry.version, reason)
            return None
        finally:
            with self._lock:
                self._loading = self._loading - {key}
