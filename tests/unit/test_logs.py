"""The JSON log line (``gateway.logs``) and the log settings."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.logs import JsonFormatter


def _record(message: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    info = sys.exc_info() if exc else None
    record = logging.LogRecord("driftgate.test", logging.WARNING, __file__, 1, message, args, info)
    record.__dict__.update(extra)
    return record


def test_a_line_is_one_json_object_with_the_fields_and_the_request_extras() -> None:
    line = JsonFormatter({"worker": 3}).format(
        _record("%s answered", "m", model="m", version="2", status=200, duration=0.0012, ignored="not a field")
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "m answered" and parsed["level"] == "WARNING" and parsed["logger"] == "driftgate.test"
    assert (parsed["model"], parsed["version"], parsed["status"], parsed["duration"], parsed["worker"]) == (
        "m", "2", 200, 0.0012, 3,
    )  # fmt: skip
    assert "ignored" not in parsed
    assert parsed["time"].endswith("Z") and "T" in parsed["time"]


def test_a_traceback_stays_on_the_line_and_odd_values_are_written_as_text() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = _record("failed", exc=True, client=object())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert "ValueError: boom\nsecond line" in parsed["exception"]
    assert parsed["client"].startswith("<object object")


def test_log_settings_and_their_environment_twins() -> None:
    settings = load_settings({"DRIFTGATE_LOG_FORMAT": "json", "DRIFTGATE_ACCESS_LOG": "true"})
    assert (settings.log_format, settings.access_log) == ("json", True)
    assert load_settings({}).log_format == "text" and not load_settings({}).access_log
    with pytest.raises(ConfigError, match="DRIFTGATE_LOG_FORMAT"):
        load_settings({"DRIFTGATE_LOG_FORMAT": "xml"})
