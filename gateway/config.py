"""Server settings: one frozen Struct, loaded once and passed down.

Precedence, lowest first: defaults, then ``DRIFTGATE_*`` environment variables, then
command-line flags. ``environ`` is a parameter so tests pass a dict; nothing here reads
the environment at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "load_settings"]

ENV_PREFIX = "DRIFTGATE_"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Everything the server needs to start. Each field has a ``DRIFTGATE_<NAME>`` twin."""

    repository: str = "models"
    """Model repository folder: ``<name>/<version>/model.onnx`` and ``spec.yaml``."""
    host: str = "127.0.0.1"
    """Address to listen on. Loopback by default: a sidecar talks to its neighbour only."""
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    workers: Annotated[int, Meta(ge=1, le=255)] = 1
    """Server processes sharing the listening socket (``gateway.workers``); metrics and drift
    are the fleet's at every worker, and feedback joins predictions of any worker. 1: one
    process, no supervisor."""
    admin_token: str | None = None
    """Bearer token of the admin endpoints (registration, load, unload). Unset: they are off."""
    admin_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    """Port of a separate admin listener (``gateway.listeners``): the admin endpoints are then
    answered only there, and the data-plane port answers them 404. Unset: one listener."""
    admin_host: str | None = None
    """Address of the admin listener (default: the same as ``host``)."""
    max_batch_rows: Annotated[int, Meta(ge=1)] = 4096
    """Rows per request above which the request is refused with 413."""
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 16 * 1024 * 1024
    """Request bodies above this are refused with 413 before they are read whole."""
    max_body_bytes_in_flight: Annotated[int, Meta(ge=1024)] | None = None
    """Bytes of request bodies (``POST``, by their ``Content-Length``) received at once per
    process; a body that does not fit is answered 503 with ``Retry-After`` before it is read.
    Default: 4 x ``max_body_bytes`` (64 MiB)."""
    watch_interval: Annotated[float, Meta(ge=0)] = 2.0
    """Seconds between scans of the repository for new versions (0 turns watching off)."""
    intra_op_threads: Annotated[int, Meta(ge=1)] = 1
    """onnxruntime threads per inference. 1: request concurrency, not intra-op threading,
    uses the cores; a second thread on a 2-core sidecar only contends with the server."""
    drift_window_rows: Annotated[int, Meta(ge=10)] = 10_000
    """Rows in each model's sliding drift window (ignored when drift_window_seconds is set)."""
    drift_window_seconds: Annotated[float, Meta(gt=0)] | None = None
    """Span of a time-based drift window instead of a row-based one."""
    feedback_window: Annotated[int, Meta(ge=10)] = 10_000
    """Feedback rows over which online accuracy (or MAE/RMSE) is computed."""
    prediction_store_size: Annotated[int, Meta(ge=1024)] = 1 << 20
    """Recent predictions kept for feedback joins (36 bytes each; fixed at start)."""
    prediction_ttl_seconds: Annotated[float, Meta(gt=0)] = 7 * 86400
    """Feedback for a prediction older than this counts as expired."""
    guards: bool = True
    """Benchmarking only: ``false`` trusts every input (no checks, no violations); bad input
    then fails inside the model or is silently mis-encoded. Measures what the guards cost."""
    monitoring: bool = True
    """Benchmarking only: ``false`` skips metrics, drift and the prediction store."""
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    """Log lines as text, or as JSON lines for log pipelines (``gateway.logs``)."""
    access_log: bool = False
    """One log line per prediction request (``driftgate.access``: model, version, status,
    duration; ``gateway.observe``)."""
    drain_seconds: Annotated[float, Meta(ge=0)] = 30.0
    """On SIGTERM, how long in-flight requests may take before the process exits anyway."""
    max_concurrency: Annotated[int, Meta(ge=1)] = 32
    """Prediction requests (V1 predict, V2 infer) in progress at once, per process. One more
    is answered 503 with ``Retry-After`` at once instead of queueing without bound; health,
    metadata and metrics are never refused."""
    request_timeout_seconds: Annotated[float, Meta(gt=0)] = 30.0
    """Deadline of one prediction request from its arrival: an inference still running then
    is answered 504 and its late result discarded."""
    header_timeout_seconds: Annotated[float, Meta(gt=0)] = 10.0
    """A connection that has not sent a complete request head this long after it opened (or
    after its request began) is answered 408 and closed: slow-header clients cannot hold
    connections."""
    body_timeout_seconds: Annotated[float, Meta(gt=0)] = 30.0
    """A request body not received in full this long after its head is answered 408 and the
    connection closed."""
    batching: str = ""
    """Dynamic batching, per model: ``NAME=MAX_ROWS:MAX_WAIT_MS`` entries separated by commas
    (``*`` for every model), e.g. ``digits=32:2``. Concurrent requests to that model are run
    as one onnxruntime call of up to MAX_ROWS rows, the first waiting at most MAX_WAIT_MS, and
    not at all once every prediction request in progress has joined (``gateway.batching``).
    Pays for models whose one-row call is mostly fixed cost (``bench/batch_cost.py``).
    Empty: off for every model."""
    metrics_detail: str = "standard"
    """Series ``/metrics`` exports per model: ``standard`` (what the alert rules and the
    dashboard read; at most 100 samples for a 30-feature classifier), ``detailed`` (plus
    per-feature distances and shares, margin and entropy, fine latency buckets) or ``full``
    (plus the raw drift bins for the exact fleet-wide PSI rule); per model as
    ``NAME=LEVEL`` entries separated by commas (``*`` for every other model), e.g.
    ``fraud=full,*=standard`` (``gateway.monitoring.exposition``)."""

    @property
    def body_budget(self) -> int:
        """``max_body_bytes_in_flight``, or its default: 4 x ``max_body_bytes``."""
        return self.max_body_bytes_in_flight or 4 * self.max_body_bytes


_FIELDS = {name: ENV_PREFIX + name.upper() for name in Settings.__struct_fields__}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, then ``environ`` (``DRIFTGATE_*``), then ``overrides``.

    ``overrides`` whose value is ``None`` are ignored, so unset CLI flags fall through.
    Raises ``ConfigError`` naming the variable or flag at fault.
    """
    values: dict[str, Any] = {}
    for field, var in _FIELDS.items():
        if environ and var in environ and environ[var] != "":
            values[field] = environ[var]
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {key!r}")
        if value is not None:
            values[key] = value
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        field = str(exc).rsplit("$.", 1)[-1].strip("`") if "$." in str(exc) else ""
        where = f" ({_FIELDS.get(field, field)})" if field else ""
        raise ConfigError(f"invalid setting{where}: {exc}") from None
    if settings.admin_port is not None:
        if not settings.admin_token:
            raise ConfigError(
                f"invalid setting ({_FIELDS['admin_port']} / --admin-port): an admin listener needs an admin token "
                f"({_FIELDS['admin_token']} / --admin-token); without one the admin endpoints are off"
            )
        if settings.admin_port != 0 and settings.admin_port == settings.port:
            raise ConfigError(
                f"invalid setting ({_FIELDS['admin_port']} / --admin-port): the admin listener needs a port of its own, "
                f"not the data plane's {settings.port}"
            )
    from gateway.batching import parse_batching  # onnxruntime is imported only by commands that serve

    try:
        parse_batching(settings.batching)
    except ConfigError as exc:
        raise ConfigError(f"invalid setting ({_FIELDS['batching']} / --batch): {exc}") from None
    from gateway.monitoring.exposition import parse_metrics_detail

    try:
        parse_metrics_detail(settings.metrics_detail)
    except ConfigError as exc:
        raise ConfigError(f"invalid setting ({_FIELDS['metrics_detail']} / --metrics-detail): {exc}") from None
    return settings
