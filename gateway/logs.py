"""Log lines: one format for driftgate's loggers and uvicorn's, as text or as JSON lines.

``--log-format text`` (the default) writes ``TIME LEVEL LOGGER: MESSAGE``; ``--log-format
json`` (``DRIFTGATE_LOG_FORMAT=json``) writes one JSON object a line, for log pipelines
(Fluent Bit, Vector, Loki, Cloud Logging), with at least::

    {"time": "2026-01-31T12:00:00.123Z", "level": "INFO", "logger": "driftgate", "message": "..."}

and, on the lines that carry them, the fields of ``FIELDS``: a request's ``model``,
``version``, ``status`` (HTTP), ``reason`` (as counted in ``driftgate_requests_total``),
``rows``, ``duration`` (seconds) and ``trace_id`` (with tracing on); a refused admin call's
``method``, ``path`` and ``client``; a worker's ``worker`` slot. A traceback is one
``exception`` field, never lines of its own. uvicorn's loggers go through the same handler:
uvicorn is started without a logging configuration of its own (``log_config=None``).

``--access-log`` (``DRIFTGATE_ACCESS_LOG``, off by default) adds one line per prediction
request, from the ``driftgate.access`` logger (``gateway.observe``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = ["FIELDS", "FORMATS", "JsonFormatter", "configure_logging"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = (
    "model", "version", "status", "reason", "rows", "duration", "trace_id", "method", "path", "client",
)  # fmt: skip
"""The ``extra`` fields a JSON line carries when a log call passes them (``log.info(..., extra={...})``)."""

_encode = msgspec.json.Encoder(enc_hook=str).encode  # an odd ``extra`` value is written as its str()


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module docstring); ``static``: fields on every line."""

    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
        }
        fields = record.__dict__
        for key in FIELDS:
            value = fields.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = record.stack_info
        return _encode(line).decode()


def configure_logging(settings: Settings, worker: int | None = None) -> None:
    """The root logger's one handler (stderr) in ``settings.log_format``; uvicorn's loggers
    propagate to it. ``worker``: this process's worker slot, a field of every JSON line."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(None if worker is None else {"worker": worker}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
