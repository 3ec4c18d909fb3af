"""Batch lanes: a batch's shape is chosen once, where it is decoded, not sniffed per stage.

Every batch enters the guards as ``Columns`` in one of four lanes:

- **one row** (``Columns.row``): an all-numeric spec's single row as Python floats; the
  guards compare and the transform scales it with no numpy call;
- **matrix** (``Columns.matrix``): an all-numeric spec's rows as one float64 matrix; the
  guards check it in a few whole-matrix operations, the transform is one broadcast, and
  monitoring stacks the matrices of many requests;
- **table**: a spec of numbers, categories and booleans whose rows came typed (every cell
  of the right JSON type, no field missing, none extra): numbers as float64 arrays,
  booleans as bool arrays, categories as lists of strings; each guard checks its column in
  numpy;
- **general** (``gateway.table.records_to_columns``): anything else (a missing cell, a
  wrong type, an unknown field), where every cell is looked at and every problem named.

The typed lanes decode records with a msgspec Struct per spec (``row_type``): type
checking is done in C and no dict or key string is built per row. A body or a list of
records the Struct refuses takes the general lane, so nothing the guards would say
changes. Public API batches (``FeatureSpec.check`` / ``transform``) keep a way back to the
general lane (``Columns.general``): if the guards find anything wrong, they say it from
the general columns, with each value echoed exactly as it was given.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from gateway.table import Columns, matrix_to_columns, records_to_columns, to_columns

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.guards import Guards

__all__ = ["columns_of", "records_lane", "row_type", "typed_columns"]

_KIND_TYPES: dict[str, type] = {"number": float, "category": str, "boolean": bool}

_astuple = msgspec.structs.astuple
_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError, OverflowError)
"""What a typed decoder raises for anything but well-typed rows (the general lane then
names the problem)."""


@functools.lru_cache(maxsize=256)
def row_type(names: tuple[str, ...], kinds: tuple[str, ...]) -> type[msgspec.Struct] | None:
    """A Struct of one record of a spec whose features are ``names`` of ``kinds``
    (``Guards.kinds``): exactly those fields, each of its JSON type (numbers as float,
    categories as str, booleans as bool), no other field. Built once per feature list;
    None if msgspec cannot name a field so (a quote, a backslash or a control character
    in a feature's name): such specs take the general lane."""
    fields = [f"f{j}" for j in range(len(names))]
    try:
        return msgspec.defstruct(
            "Row",
            [(f, _KIND_TYPES[k]) for f, k in zip(fields, kinds, strict=True)],
            rename=dict(zip(fields, names, strict=True)),
            forbid_unknown_fields=True,
            gc=False,
        )
    except ValueError:
        return None


@functools.lru_cache(maxsize=256)
def _rows_converter(names: tuple[str, ...], kinds: tuple[str, ...]) -> Callable[[Any], list[Any]] | None:
    row = row_type(names, kinds)
    return None if row is None else functools.partial(msgspec.convert, type=list[row])  # type: ignore[valid-type]


def typed_columns(rows: Sequence[msgspec.Struct], guards: Guards) -> Columns:
    """Columns of rows decoded by ``row_type`` (every cell of its type): the matrix or the
    one-row lane for an all-numeric spec, else the table lane."""
    n = len(rows)
    names = guards.names
    if guards.numeric:
        if n == 1:
            row = _astuple(rows[0])
            return matrix_to_columns(np.array((row,)), names, row)
        width = len(names)
        flat = np.fromiter(chain.from_iterable(map(_astuple, rows)), dtype=np.float64, count=n * width)
        return matrix_to_columns(flat.reshape(n, width), names)
    if n == 1:  # the one-row lane of a mixed spec: Python scalars, checked without numpy
        return Columns(1, {name: [value] for name, value in zip(names, _astuple(rows[0]), strict=True)})
    data: dict[str, Any] = {}
    for name, kind, cells in zip(names, guards.kinds, zip(*map(_astuple, rows), strict=True), strict=True):
        if kind == "number":
            data[name] = np.fromiter(cells, dtype=np.float64, count=n)
        elif kind == "boolean":
            data[name] = np.fromiter(cells, dtype=np.bool_, count=n)
        else:
            data[name] = list(cells)
    return Columns(n, data)


def records_lane(records: Sequence[Any], guards: Guards) -> Columns:
    """Records (``[{feature: value}, ...]``) in the typed lane when every record is well
    typed, else in the general one. The typed columns keep the way back to the general
    ones (``Columns.general``), so a violation is named from the values as given."""
    ignored = guards.ignored

    def general() -> Columns:
        return records_to_columns(records, guards.names, ignored)

    if not guards.numeric and len(records) == 1:
        return general()  # a mixed spec's one-row lane is the general one's: Python scalars in lists
    convert = _rows_converter(guards.names, guards.kinds) if records and guards.features else None
    if convert is None:
        return general()
    try:
        rows = convert(records)
    except _ERRORS:
        return general()
    columns = typed_columns(rows, guards)
    columns.general = general
    return columns


def columns_of(data: Any, guards: Guards) -> Columns:
    """Any input the public API takes (records, a mapping of columns, a DataFrame; see
    ``gateway.table``) as columns, records through the typed lanes."""
    if type(data) is list:
        return records_lane(data, guards)
    return to_columns(data, guards.names, guards.ignored)
