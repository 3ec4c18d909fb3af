"""What the prediction log holds, and how its files are named and read back.

A log folder holds one folder per model, ``<log_dir>/<model>/``, with:

- ``predictions-<start>-<writer>-<seq>.jsonl.gz``: prediction records (one per logged row,
  predicted or rejected) and shadow records (a candidate's prediction of a logged row);
- ``feedback-<start>-<writer>-<seq>.jsonl.gz``: feedback records (ground truth sent later);
- ``spec-<version>.json``: the spec of each version logged, so an export needs nothing but
  the log folder.

``<start>`` is the UTC time the file was begun (``20261208T015420``), ``<writer>`` the
writing process's random prefix (each worker of ``serve --workers N`` writes its own
files) and ``<seq>`` counts that writer's files. A file being written ends in
``.partial``; it is renamed once finished (rotated by size or day, or at shutdown), so a
finished file never changes again. Each file is a series of gzip members, one per write:
a reader of a ``.partial`` file reads every whole member and stops at a torn last one
(``read_members``). This module must not know about queues, threads or HTTP.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from gateway.violations import Violation

__all__ = [
    "FEEDBACK",
    "FINISHED",
    "PARTIAL",
    "PREDICTIONS",
    "FeedbackRecord",
    "PredictionRecord",
    "Record",
    "ShadowRecord",
    "Stream",
    "decode_lines",
    "file_name",
    "iso_time",
    "log_files",
    "read_members",
    "spec_path",
    "whole_members",
]

Stream = Literal["predictions", "feedback"]
PREDICTIONS: Final = "predictions"
FEEDBACK: Final = "feedback"

FINISHED = ".jsonl.gz"
PARTIAL = ".jsonl.gz.partial"

_NAME = re.compile(r"^(predictions|feedback)-(\d{8}T\d{6})-([0-9a-z-]+)-(\d+)\.jsonl\.gz(\.partial)?$")


class PredictionRecord(msgspec.Struct, tag_field="kind", tag="prediction"):
    """One logged row: what came in and what the gateway answered."""

    id: str
    """The prediction id (feedback joins on it); a rejected row's is the log's own."""
    time: str
    """When the row was answered, UTC, ISO 8601 with milliseconds (``...T01:54:20.123Z``)."""
    model: str
    version: int
    inputs: dict[str, Any]
    """The row as received (fields the spec marks ``log: false`` left out; an absent field
    and ``null`` both read as ``null``)."""
    prediction: dict[str, Any] | None
    """``{"label", "confidence", "probabilities"}`` or ``{"value"}``; None: rejected."""
    violations: list[Violation]
    """The guards' findings on this row: the reasons it was rejected, or its flags and clips."""


class ShadowRecord(msgspec.Struct, tag_field="kind", tag="shadow"):
    """A rollout candidate's prediction of a logged row (``id`` is the primary's)."""

    id: str
    time: str
    model: str
    version: int
    """The candidate's version."""
    prediction: dict[str, Any] | None
    """None: the candidate's spec rejected the row (``violations`` say why)."""
    violations: list[Violation]


class FeedbackRecord(msgspec.Struct, tag_field="kind", tag="feedback", omit_defaults=True):
    """Ground truth for a logged prediction, as sent to ``/v1/models/{name}/feedback``."""

    id: str
    time: str
    model: str
    label: str | None = None
    value: float | None = None


Record = PredictionRecord | ShadowRecord | FeedbackRecord

_decoder = msgspec.json.Decoder(Record)


def decode_lines(data: bytes) -> list[Record]:
    """The records of a JSON Lines chunk."""
    return _decoder.decode_lines(data)


def iso_time(t: float) -> str:
    """``t`` (seconds since the epoch) as the records write it: fixed width, so that two
    times compare as text as they compare as times."""
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1000):03d}Z"


def file_name(stream: Stream, started: float, writer: str, seq: int) -> str:
    """The finished name of a log file (``.partial`` is added while it is written)."""
    return f"{stream}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(started))}-{writer}-{seq:05d}{FINISHED}"


def spec_path(folder: Path, version: int) -> Path:
    """Where the spec of a logged version is kept in a model's log folder."""
    return folder / f"spec-{version}.json"


def log_files(folder: Path, stream: Stream) -> list[Path]:
    """A model's log files of ``stream``, finished and partial, oldest first (by start
    time, then writer and sequence)."""
    found = []
    for path in folder.iterdir():
        m = _NAME.match(path.name)
        if m and m.group(1) == stream:
            found.append((m.group(2), m.group(3), int(m.group(4)), path))
    return [p for *_, p in sorted(found)]


def file_start(path: Path) -> str | None:
    """The UTC start stamp in a log file's name, as an ISO prefix (``2026-12-08T01:54:20``)."""
    m = _NAME.match(path.name)
    if m is None:
        return None
    s = m.group(2)
    return f"{s[:4]}-{s[4:6]}-{s[6:8]}T{s[9:11]}:{s[11:13]}:{s[13:15]}"


def read_members(data: bytes) -> Iterator[bytes]:
    """The decompressed contents of each whole gzip member of ``data``, in order; stops at a
    torn (incomplete or corrupt) last member. See ``whole_members`` for where it ended."""
    for chunk, _ in _members(data):
        yield chunk


def whole_members(data: bytes) -> int:
    """The byte length of ``data``'s whole gzip members: what is left of a file cut short."""
    end = 0
    for _, end in _members(data):
        pass
    return end


_CHUNK = 1 << 20
"""Bytes fed to the decompressor at a time: what is left over past a member's end is
copied once per member (``unused_data``), so a file of many members is read in linear time."""


def _members(data: bytes) -> Iterator[tuple[bytes, int]]:
    """(contents, end offset) of each whole gzip member of ``data``."""
    view = memoryview(data)
    offset, n = 0, len(data)
    while offset < n:
        d = zlib.decompressobj(wbits=31)
        parts = []
        pos = offset
        while not d.eof:
            if pos >= n:
                return  # cut short: the writer was killed in the middle of this member
            piece = view[pos : pos + _CHUNK]
            try:
                parts.append(d.decompress(piece))
            except zlib.error:
                return
            pos += len(piece)
        offset = pos - len(d.unused_data)
        yield b"".join(parts), offset
