"""``driftgate export``: a model's logged predictions joined with their feedback, as a table.

One row per logged prediction (rejected rows had none, so they are left out), in the log's
order: the spec's features (those it logs), the target named as the spec's output names it
(from feedback; empty without), then ``id``, ``version`` and ``prediction`` (the label or
the value). CSV (read by ``driftgate fit-spec`` and pandas) or JSON Lines, by the output's
extension. The output is written to a temporary name and renamed when complete, so a
failure leaves nothing behind.

Feedback files are read first (they are small: one short record per label), then the
prediction files are streamed once, a gzip member at a time; memory holds the feedback
and one member, not the export.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from gateway.errors import UsageError
from gateway.predlog.records import (
    FEEDBACK,
    PREDICTIONS,
    FeedbackRecord,
    decode_lines,
    file_start,
    log_files,
    read_members,
    spec_path,
)
from gateway.predlog.rows import logged_features
from gateway.spec import FeatureSpec, decode_spec

__all__ = ["ExportSummary", "export_log", "parse_time"]

FORMATS = (".csv", ".jsonl")
_SPEC = re.compile(r"^spec-(\d+)\.json$")


class ExportSummary(msgspec.Struct, frozen=True):
    rows: int
    labelled: int
    files: int
    columns: list[str]


def parse_time(text: str, flag: str) -> str:
    """An ISO 8601 date or time (UTC unless it says otherwise) as the records write times,
    so that it compares with them as text."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{flag} takes an ISO 8601 date or time such as 2026-12-08 or 2026-12-08T14:00Z, not {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def model_folder(log_dir: Path, name: str) -> Path:
    """The log folder of model ``name``; ``UsageError`` in one line if there is none."""
    if not log_dir.exists():
        raise UsageError(f"{log_dir}: no such log folder")
    if not log_dir.is_dir():
        raise UsageError(f"{log_dir}: not a log folder (a file)")
    logged = sorted(p.name for p in log_dir.iterdir() if p.is_dir() and any(_SPEC.match(f.name) for f in p.iterdir()))
    folder = log_dir / name
    if name not in logged:
        found = f"models logged there: {', '.join(logged)}" if logged else "it holds no prediction log"
        raise UsageError(f"{log_dir}: no prediction log of model {name[:80]!r} ({found})")
    return folder


def load_logged_spec(folder: Path, version: int | None) -> FeatureSpec:
    """The spec of ``version`` as logged (default: the highest version logged)."""
    versions = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _SPEC.match(p.name)))
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise UsageError(f"{folder}: version {version} was never logged (logged: {', '.join(map(str, versions))})")
    path = spec_path(folder, version)
    return decode_spec(path.read_bytes(), "json", source=str(path))


def read_feedback(folder: Path) -> dict[str, Any]:
    """Prediction id -> the truth sent for it (label or value; the server logs only the
    first, as it joins only the first)."""
    truths: dict[str, Any] = {}
    for path in log_files(folder, FEEDBACK):
        for chunk in read_members(_read(path)):
            for record in decode_lines(chunk):
                if isinstance(record, FeedbackRecord):
                    truths[record.id] = record.label if record.label is not None else record.value
    return truths


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # finished (renamed) or deleted by retention since listed
        finished = path.with_name(path.name.removesuffix(".partial"))
        return finished.read_bytes() if finished != path and finished.exists() else b""


class _Said(msgspec.Struct):
    """What an export reads of a prediction (its probabilities are skipped unparsed)."""

    label: str | None = None
    value: float | None = None


class _Logged(msgspec.Struct):
    """What an export reads of a record of a predictions file (violations skipped unparsed)."""

    kind: str
    id: str
    time: str
    version: int = 0
    inputs: dict[str, Any] = {}
    prediction: _Said | None = None


_decode_logged = msgspec.json.Decoder(_Logged).decode_lines


def _inside(r: _Logged, version: int | None, begin: str | None, end: str | None) -> bool:
    return (version is None or r.version == version) and (begin is None or r.time >= begin) and (end is None or r.time < end)


def _said(prediction: _Said) -> str | float | None:
    return prediction.label if prediction.label is not None else prediction.value


def _chunks(folder: Path, until: str | None, progress: Callable[[str], None] | None) -> Iterator[list[_Logged]]:
    """The records of every predictions file, a gzip member at a time."""
    files = log_files(folder, PREDICTIONS)
    last_report = time.monotonic()
    for n, path in enumerate(files, 1):
        start = file_start(path)
        if until is not None and start is not None and start >= until[:19]:
            continue  # begun after the window: nothing in it can be inside
        for chunk in read_members(_read(path)):
            yield _decode_logged(chunk)
        if progress is not None and time.monotonic() - last_report > 1.0:
            last_report = time.monotonic()
            progress(f"read {n} of {len(files)} log files")


def export_log(
    log_dir: str | Path,
    name: str,
    output: str | Path,
    *,
    since: str | None = None,
    until: str | None = None,
    version: int | None = None,
    labelled: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ExportSummary:
    """Write model ``name``'s logged predictions, joined with their feedback, to ``output``.

    Args:
        since / until: keep predictions made at or after ``since`` and before ``until``
            (ISO 8601; see ``parse_time``).
        version: keep only this version's predictions (and use its spec).
        labelled: keep only predictions that got feedback.
        progress: called with a line now and then on long exports.

    Raises ``UsageError`` (one line, nothing written) for a missing or foreign log folder,
    a model never logged, a version never logged, or an output that is not .csv or .jsonl.
    """
    out = Path(output)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"{out}: the output ends in .csv or .jsonl, not {suffix or 'nothing'!r}")
    if not out.parent.is_dir():
        raise UsageError(f"{out}: no such folder {out.parent}")
    begin = parse_time(since, "--since") if since else None
    end = parse_time(until, "--until") if until else None
    folder = model_folder(Path(log_dir), name)
    spec = load_logged_spec(folder, version)
    features = list(logged_features(spec))
    target = (spec.output.target if spec.output is not None else None) or "target"
    columns = [*features, target, "id", "version", "prediction"]
    truths = read_feedback(folder)
    if progress is not None:
        progress(f"{len(truths):,} feedback records read")
    rows = joined = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            write = _csv_writer(handle, columns) if suffix == ".csv" else _jsonl_writer(handle, columns)
            blank = BLANK if suffix == ".csv" else None
            for chunk in _chunks(folder, end, progress):
                # a rejected row (nothing was predicted) and a shadow's prediction are not exported
                kept = [r for r in chunk if r.prediction is not None and r.kind == "prediction"]
                if version is not None or begin is not None or end is not None:
                    kept = [r for r in kept if _inside(r, version, begin, end)]
                if labelled:
                    kept = [r for r in kept if r.id in truths]
                table = [
                    [*map(r.inputs.get, features), truths.get(r.id, blank), r.id, r.version, _said(r.prediction)]  # type: ignore[arg-type]
                    for r in kept
                ]
                joined += len(kept) if labelled else sum(1 for r in kept if r.id in truths)
                rows += len(table)
                write(table)
        os.replace(tmp, out)
    except BaseException:
        _remove(tmp)
        raise
    return ExportSummary(rows, joined, len(log_files(folder, PREDICTIONS)), columns)


BLANK = msgspec.Raw(b"")
"""The target of a row without feedback, in a CSV export: encoded as nothing, an empty cell."""
_NULL = re.compile(rb"(?<=[\[,])null(?=[,\]])")
"""A JSON ``null`` cell of an encoded row (an empty CSV cell)."""


def _csv_writer(handle: Any, columns: list[str]) -> Callable[[list[list[Any]]], None]:
    """Rows as CSV (an empty cell for a missing value, true/false for booleans, strings
    quoted), as pandas and ``gateway.datafile`` read them.

    Fast path: a member's rows encoded as JSON arrays by msgspec are CSV lines already once
    the brackets and ``null`` go, when no string holds an escape (JSON writes ``\\"`` where
    CSV writes ``""``) and every ``null`` replaced is a missing value (not text inside a
    string); otherwise the ``csv`` module writes the member.
    """
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    encode_lines = msgspec.json.Encoder().encode_lines

    def write(table: list[list[Any]]) -> None:
        if not table:
            return
        data = encode_lines(table)
        if b"\\" not in data:
            replaced = 0
            if b"null" in data:
                data, replaced = _NULL.subn(b"", data)
            if replaced == sum(row.count(None) for row in table):
                handle.flush()
                handle.buffer.write(data[1:-2].replace(b"]\n[", b"\n") + b"\n")
                return
        writer.writerows([[None if c is BLANK else c for c in row] for row in table])

    return write


def _jsonl_writer(handle: Any, columns: list[str]) -> Callable[[list[list[Any]]], None]:
    encode_lines = msgspec.json.Encoder().encode_lines

    def write(table: list[list[Any]]) -> None:
        if table:
            handle.flush()
            handle.buffer.write(encode_lines([dict(zip(columns, row, strict=True)) for row in table]))

    return write


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
