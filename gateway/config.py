"""Server settings: one frozen Struct, loaded once and passed down.

Precedence, lowest first: defaults, then ``DRIFTGATE_*`` environment variables, then
command-line flags. ``environ`` is a parameter so tests pass a dict; nothing here reads
the environment at import time.

``Settings`` is the one source: every field is a ``DRIFTGATE_<NAME>`` variable and a
``driftgate serve`` flag (``FLAGS``; ``gateway.cli`` builds the flags from the fields, and the
help from the text under each field), so a new field needs nothing else. A ``DRIFTGATE_*``
variable that is no setting is a start-up error naming the nearest one: a typo must not
silently leave a default in place.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import itertools
import textwrap
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.errors import ConfigError

__all__ = ["ENV_PREFIX", "FLAGS", "NOT_SETTINGS", "Settings", "load_settings", "setting_help"]

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
    """Recent predictions kept for feedback joins (40 bytes each; fixed at start)."""
    history_seconds: Annotated[float, Meta(gt=0)] = 60.0
    """Seconds between the points of each model's short history, drawn on the monitor page
    (``gateway.monitoring.history``: the last 240 points are kept)."""
    review_queue_size: Annotated[int, Meta(ge=1)] = 10_000
    """Rows per model waiting for a person's review (low confidence or flagged); the oldest
    leave first, counted (``gateway.monitoring.reviews``)."""
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
    providers: str = "cpu"
    """onnxruntime execution providers, in order of preference, separated by commas: ``cpu``,
    ``cuda``, ``tensorrt``, ``rocm``, ``openvino``, ``dml``, ``coreml`` or onnxruntime's own names
    (``CUDAExecutionProvider``), e.g. ``cuda,cpu``. One this onnxruntime build lacks is a
    start-up error (``gateway.runtime.parse_providers``). Model trial loads stay on the CPU."""
    metrics_detail: str = "standard"
    """Series ``/metrics`` exports per model: ``standard`` (what the alert rules and the
    dashboard read; at most 100 samples for a 30-feature classifier), ``detailed`` (plus
    per-feature distances and shares, margin and entropy, fine latency buckets) or ``full``
    (plus the raw drift bins for the exact fleet-wide PSI rule); per model as
    ``NAME=LEVEL`` entries separated by commas (``*`` for every other model), e.g.
    ``fraud=full,*=standard`` (``gateway.monitoring.exposition``)."""

    log_dir: str | None = None
    """Prediction log folder (``gateway.predlog``): sampled rows, their predictions or
    violations, and feedback, as rotated gzip JSON Lines under ``<log_dir>/<model>/``,
    written off the response path. Unset: nothing is logged."""
    log_sample: Annotated[float, Meta(gt=0, le=1)] = 1.0
    """Share of rows logged (by a hash of the prediction id, so a logged row's feedback and
    shadow prediction are logged too)."""
    log_file_bytes: Annotated[int, Meta(ge=4096)] = 32 * 1024 * 1024
    """Compressed size at which a log file is finished and a new one begun (files also
    change at midnight UTC)."""
    log_max_bytes: Annotated[int, Meta(ge=65536)] = 1024 * 1024 * 1024
    """Bound on the log folder's total size: the oldest finished files are deleted beyond it."""
    log_queue_rows: Annotated[int, Meta(ge=1)] = 50_000
    """Rows waiting for the log writer; more are dropped (``driftgate_log_records_total``
    outcome ``dropped``), never waited for."""

    @property
    def body_budget(self) -> int:
        """``max_body_bytes_in_flight``, or its default: 4 x ``max_body_bytes``."""
        return self.max_body_bytes_in_flight or 4 * self.max_body_bytes


_FIELDS = {name: ENV_PREFIX + name.upper() for name in Settings.__struct_fields__}

FLAGS = {
    name: "--" + name.replace("_", "-")
    for name in Settings.__struct_fields__
} | {
    "request_timeout_seconds": "--request-timeout",
    "header_timeout_seconds": "--header-timeout",
    "body_timeout_seconds": "--body-timeout",
    "batching": "--batch",
}
"""The ``driftgate serve`` flag of each setting: its name with dashes, but for these four."""

NOT_SETTINGS = frozenset({"DRIFTGATE_REQUIRE_SYSTEM_TESTS", "DRIFTGATE_TEST_GROUP_SIGTERM_RUNS", "DRIFTGATE_FUZZ_RANDOM"})
"""``DRIFTGATE_*`` variables of driftgate's own test suite and CI (never read by the server):
the one exception to "an unknown ``DRIFTGATE_*`` variable is an error", since CI exports them
to every process it starts."""


def _where(field: str) -> str:
    return f"{_FIELDS[field]} / {FLAGS[field]}"


@functools.cache
def setting_help() -> dict[str, str]:
    """The text under each field of ``Settings`` (its attribute docstring), for ``--help``.
    Empty for a field without one, or where the source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(Settings)))
    except (OSError, TypeError, SyntaxError):  # pragma: no cover - a build without sources
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    found: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            found[node.target.id] = " ".join(after.value.value.split())
    return found


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise ``ConfigError`` for a ``DRIFTGATE_*`` variable that is no setting, naming the
    nearest one that is."""
    known = set(_FIELDS.values())
    for var in sorted(environ):
        if var.startswith(ENV_PREFIX) and var not in known and var not in NOT_SETTINGS:
            # what follows the prefix: with it, every name would look near
            near = difflib.get_close_matches(var.removeprefix(ENV_PREFIX).lower(), list(_FIELDS), n=1, cutoff=0.6)
            hint = f"did you mean {_FIELDS[near[0]]}?" if near else "see driftgate serve --help for every setting"
            raise ConfigError(f"unknown environment variable {var}: {hint}")


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, then ``environ`` (``DRIFTGATE_*``), then ``overrides``.

    ``overrides`` whose value is ``None`` are ignored, so unset CLI flags fall through.
    Raises ``ConfigError`` naming the variable or flag at fault.
    """
    values: dict[str, Any] = {}
    if environ:
        check_environment(environ)
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
        where = f" ({_where(field)})" if field in _FIELDS else ""
        raise ConfigError(f"invalid setting{where}: {exc}") from None
    if settings.admin_port is not None:
        if not settings.admin_token:
            raise ConfigError(
                f"invalid setting ({_where('admin_port')}): an admin listener needs an admin token "
                f"({_where('admin_token')}); without one the admin endpoints are off"
            )
        if settings.admin_port != 0 and settings.admin_port == settings.port:
            raise ConfigError(
                f"invalid setting ({_where('admin_port')}): the admin listener needs a port of its own, "
                f"not the data plane's {settings.port}"
            )
    from gateway.batching import parse_batching  # onnxruntime is imported only by commands that serve

    try:
        parse_batching(settings.batching)
    except ConfigError as exc:
        raise ConfigError(f"invalid setting ({_where('batching')}): {exc}") from None
    from gateway.runtime import parse_providers

    try:
        parse_providers(settings.providers)
    except ConfigError as exc:
        raise ConfigError(f"invalid setting ({_where('providers')}): {exc}") from None
    from gateway.monitoring.exposition import parse_metrics_detail

    try:
        parse_metrics_detail(settings.metrics_detail)
    except ConfigError as exc:
        raise ConfigError(f"invalid setting ({_where('metrics_detail')}): {exc}") from None
    return settings
