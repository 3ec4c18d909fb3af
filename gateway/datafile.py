"""Reading data files (CSV, JSON, JSON Lines) for the command line.

CSV has no types, so a cell is typed here: when checking against a spec, by the spec's
feature type (a cell that does not parse stays a string, and the guards then call it
``wrong_type``); when fitting, by inference over the whole column (all integers ->
integer, all numbers -> number, all true/false -> boolean, else category).

Missing cells in CSV are the empty string and the markers in ``NA_MARKERS`` (the usual
spellings pandas reads as missing, so a file exported from R or pandas reads the same).
JSON files hold a list of records; JSON Lines one record per line. Their values are
typed already, so they are passed through as they are.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.errors import UsageError
from gateway.files import read_input

if TYPE_CHECKING:
    from gateway.spec import FeatureSpec

__all__ = ["NA_MARKERS", "read_columns", "read_records"]

NA_MARKERS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """A JSON (list of records) or JSON Lines file as records."""
    p = Path(path)
    raw = read_input(p, "data file")
    try:
        if p.suffix.lower() in (".jsonl", ".ndjson"):
            records = [msgspec.json.decode(line) for line in raw.splitlines() if line.strip()]
        else:
            records = msgspec.json.decode(raw)
            if isinstance(records, dict) and isinstance(records.get("instances"), list):
                records = records["instances"]  # a saved prediction request reads as its rows
    except msgspec.DecodeError as exc:
        raise UsageError(f"{p}: not valid JSON ({exc})") from None
    except RecursionError:
        raise UsageError(f"{p}: nests arrays or objects too deeply") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UsageError(f"{p}: expected a list of records (objects)")
    if not records:
        raise UsageError(f"{p}: holds no rows")
    return records


def _csv_columns(path: Path) -> dict[str, list[str | None]]:
    text = read_input(path, "data file").decode("utf-8-sig", errors="replace")
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise UsageError(f"{path}: no header row")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise UsageError(f"{path}: repeated column names: {', '.join(dupes)}")
    columns: dict[str, list[str | None]] = {h: [] for h in header}
    cols = list(columns.values())
    width = len(header)
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != width:
            raise UsageError(f"{path}:{line}: {len(row)} fields where the header has {width}")
        for col, cell in zip(cols, row, strict=True):
            col.append(None if cell.strip() in NA_MARKERS else cell)
    if not cols[0]:
        raise UsageError(f"{path}: has a header but no rows")
    return columns


def _parse_number(cell: str) -> Any:
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        return cell  # the guards will call it wrong_type


def _parse_bool(cell: str) -> Any:
    if cell in _TRUE:
        return True
    if cell in _FALSE:
        return False
    return cell


def _infer(cells: list[str | None]) -> list[Any]:
    present = [c for c in cells if c is not None]
    if present and all(c in _TRUE or c in _FALSE for c in present):
        return [None if c is None else _parse_bool(c) for c in cells]
    parsed = [None if c is None else _parse_number(c) for c in cells]
    if all(not isinstance(v, str) for v in parsed):
        return parsed
    return list(cells)


def read_columns(path: str | Path, spec: FeatureSpec | None = None, text: frozenset[str] = frozenset()) -> dict[str, list[Any]]:
    """A data file as a mapping of typed columns (see the module docstring). CSV columns
    named in ``text`` stay strings (a category the user forced on numeric-looking cells)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".json", ".jsonl", ".ndjson"):
        records = read_records(p)
        names: dict[str, None] = {}
        for r in records:
            names.update(dict.fromkeys(r))
        return {name: [r.get(name) for r in records] for name in names}
    if suffix not in (".csv", ".txt", ".tsv"):
        raise UsageError(f"{p}: unsupported data file type {suffix or '(none)'}; use .csv, .json or .jsonl")
    raw = _csv_columns(p)
    if spec is None:
        return {name: list(cells) if name in text else _infer(cells) for name, cells in raw.items()}
    kinds = {f.name: type(f).__name__ for f in spec.features}
    typed: dict[str, list[Any]] = {}
    for name, cells in raw.items():
        kind = kinds.get(name)
        if kind in ("NumberFeature", "IntegerFeature"):
            typed[name] = [None if c is None else _parse_number(c) for c in cells]
        elif kind == "BooleanFeature":
            typed[name] = [None if c is None else _parse_bool(c) for c in cells]
        elif kind == "CategoryFeature":
            typed[name] = list(cells)
        else:
            typed[name] = _infer(cells)
    return typed
