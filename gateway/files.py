"""Reading and writing the files users name on the command line, with one-line errors.

A leaf module: every missing, unreadable or empty input file becomes one ``UsageError``
that names the file and says what is wrong, and every written file appears whole or not
at all (written beside its target, then renamed).
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import UsageError

__all__ = ["read_input", "write_atomic"]


def read_input(path: str | Path, what: str = "file", *, allow_empty: bool = False) -> bytes:
    """The bytes of ``path``; ``UsageError`` if it is missing, unreadable or (unless
    ``allow_empty``) empty."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{p}: no such {what}") from None
    except IsADirectoryError:
        raise UsageError(f"{p}: is a directory, not a {what}") from None
    except OSError as exc:
        raise UsageError(f"{p}: cannot read the {what} ({exc.strerror})") from None
    if not allow_empty and not data.strip():
        raise UsageError(f"{p}: the {what} is empty")
    return data


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, whole."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(p)
