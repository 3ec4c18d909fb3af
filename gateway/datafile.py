"""Reading data files (CSV, TSV, Parquet, JSON, JSON Lines) for the command line.

CSV and TSV (``.tsv``, ``.tab``: tab-separated) and Parquet are read by pyarrow when it is
installed (``pip install 'driftgate[data]'``): multi-threaded C++, typed columns, about a
second for a million rows. Without it, CSV and TSV go through the hand-written reader
below (pure Python, several times slower: bench/README.md) and Parquet is refused with
the command that fixes it.

CSV has no types, so a cell is typed here: when checking against a spec, by the spec's
feature type (a cell that does not parse stays a string, and the guards then call it
``wrong_type``); when fitting, by inference over the whole column (all integers ->
integer, all numbers -> number, all true/false -> boolean, dates -> timestamps, else
text). Both readers infer alike.

Missing cells in CSV are the empty string and the markers in ``NA_MARKERS`` (the usual
spellings pandas reads as missing, so a file exported from R or pandas reads the same).
JSON files hold a list of records; JSON Lines one record per line. Their values are
typed already, so they are passed through as they are.

A column comes back as a 1-D numpy array when it has no missing cell and a numeric,
boolean or datetime type, else as a list with ``None`` for each missing cell.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from gateway.errors import UsageError
from gateway.files import read_input

if TYPE_CHECKING:
    from gateway.spec import FeatureSpec

__all__ = ["NA_MARKERS", "read_columns", "read_records", "row_lines"]

Progress = Callable[[str], None]

_DELIMITERS = {".csv": ",", ".txt": ",", ".tsv": "\t", ".tab": "\t"}
"""Delimited text files by suffix."""

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


def _csv_columns(path: Path, raw: bytes) -> dict[str, list[str | None]]:
    """The hand-written reader: every cell as text, or None where missing."""
    text = raw.decode("utf-8-sig", errors="replace")
    reader = csv.reader(text.splitlines(), delimiter=_DELIMITERS[path.suffix.lower()])
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise UsageError(f"{path}: no header row")
    _check_header(path, header)
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


def _check_header(path: Path, header: list[str]) -> None:
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise UsageError(f"{path}: repeated column names: {', '.join(dupes)}")


def _arrow_table(path: Path, raw: bytes, text: frozenset[str]) -> Any:
    """The file as a pyarrow Table (CSV/TSV or Parquet), or None without pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
    except ImportError:
        return None
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(io.BytesIO(raw))
        header = next(csv.reader([raw.decode("utf-8-sig", errors="replace").split("\n", 1)[0]], delimiter=_DELIMITERS[suffix]))
        _check_header(path, header)
        return pa_csv.read_csv(
            io.BytesIO(raw),
            parse_options=pa_csv.ParseOptions(delimiter=_DELIMITERS[suffix]),
            convert_options=pa_csv.ConvertOptions(
                null_values=sorted(NA_MARKERS),
                strings_can_be_null=True,
                true_values=sorted(_TRUE),
                false_values=sorted(_FALSE),
                column_types={name: pa.string() for name in text},
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:  # a malformed row, a file that is not Parquet
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{path}: {detail}") from None


def _arrow_column(col: Any) -> Any:
    """A pyarrow column as this module returns columns (see the module docstring)."""
    import pyarrow as pa

    kind = col.type
    plain = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    if col.null_count == 0 and (plain or pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        return col.to_numpy()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        # Through a dictionary: each distinct string becomes one Python object that every
        # row refers to (to_pylist makes one per row: ~60 MB more per million rows).
        encoded = (col if pa.types.is_dictionary(kind) else col.dictionary_encode()).combine_chunks()
        words = np.array([*encoded.dictionary.to_pylist(), None], dtype=object)
        return words[encoded.indices.fill_null(len(words) - 1).to_numpy()].tolist()
    return col.to_pylist()


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


def read_columns(
    path: str | Path, spec: FeatureSpec | None = None, text: frozenset[str] = frozenset(), progress: Progress | None = None
) -> dict[str, Any]:
    """A data file as a mapping of typed columns (see the module docstring). Columns named
    in ``text`` (and a spec's categories) stay strings: a category the user forced on
    numeric-looking cells. ``progress`` hears what is read, and how long it took."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".json", ".jsonl", ".ndjson"):
        records = read_records(p)
        names: dict[str, None] = {}
        for r in records:
            names.update(dict.fromkeys(r))
        return {name: [r.get(name) for r in records] for name in names}
    if suffix not in (*_DELIMITERS, ".parquet"):
        raise UsageError(f"{p}: unsupported data file type {suffix or '(none)'}; use .csv, .tsv, .parquet, .json or .jsonl")
    started = time.perf_counter()
    raw = read_input(p, "data file")
    say = progress or (lambda _line: None)
    say(f"reading {p} ({len(raw) / 1e6:,.1f} MB)...")
    if spec is not None:
        text = text | {f.name for f in spec.features if type(f).__name__ == "CategoryFeature"}
    table = _arrow_table(p, raw, text)
    if table is None and suffix == ".parquet":
        raise UsageError(f"{p}: reading Parquet needs pyarrow: pip install 'driftgate[data]'")
    if table is not None:
        if table.num_rows == 0:
            raise UsageError(f"{p}: has a header but no rows")
        columns = {name: _arrow_column(table.column(i)) for i, name in enumerate(table.column_names)}
        if spec is not None:
            columns = _retype(columns, spec)
        reader = "pyarrow"
    else:
        cells = _csv_columns(p, raw)
        columns = _typed(cells, spec, text)
        reader = "the built-in reader (pip install 'driftgate[data]' for pyarrow's, several times faster)"
    n_rows = len(next(iter(columns.values())))
    say(f"read {n_rows:,} rows x {len(columns)} columns in {time.perf_counter() - started:.1f} s with {reader}")
    return columns


def _typed(raw: dict[str, list[str | None]], spec: FeatureSpec | None, text: frozenset[str]) -> dict[str, list[Any]]:
    """The hand-written reader's text cells typed by the spec, or by inference."""
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


def _retype(columns: dict[str, Any], spec: FeatureSpec) -> dict[str, Any]:
    """pyarrow's inferred columns, cell by cell as the spec types them where inference
    disagreed: a number column with one bad cell was read as text, and its numbers must
    still be numbers (only the bad cell is ``wrong_type``)."""
    kinds = {f.name: type(f).__name__ for f in spec.features}
    for name, values in columns.items():
        kind = kinds.get(name)
        if not isinstance(values, list) or kind not in ("NumberFeature", "IntegerFeature", "BooleanFeature"):
            continue
        parse = _parse_bool if kind == "BooleanFeature" else _parse_number
        columns[name] = [parse(v) if isinstance(v, str) else v for v in values]
    return columns


def row_lines(path: str | Path) -> list[int] | None:
    """The file line on which each data row starts (CSV, TSV: a quoted cell may span lines;
    JSON Lines), or None for a file without lines (JSON, Parquet)."""
    p = Path(path)
    suffix = p.suffix.lower()
    raw = read_input(p, "data file").decode("utf-8-sig", errors="replace")
    if suffix in (".jsonl", ".ndjson"):
        return [i for i, line in enumerate(raw.splitlines(), start=1) if line.strip()]
    if suffix not in _DELIMITERS:
        return None
    reader = csv.reader(io.StringIO(raw, newline=""), delimiter=_DELIMITERS[suffix])
    starts: list[int] = []
    end = 0
    for row in reader:
        if row and end > 0:  # not the header, not a blank line
            starts.append(end + 1)
        end = reader.line_num
    return starts
