"""The files of a prediction log folder: open, append a gzip member, finish, recover, bound.

``LogFolder`` is the writer thread's view of ``<log_dir>``: one open ``.partial`` file per
(model, stream), each created under a hidden name, locked (``flock``) and only then renamed
to ``.partial``, so that a recovery never takes a live writer's file; finished by fsync
and rename; and the size bound applied to the whole folder after each finish. It knows
nothing of records, queues or threads (``gateway.predlog.writer``).
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path

from gateway.predlog.records import FINISHED, PARTIAL, Stream, file_name, whole_members

__all__ = ["LogFolder"]

log = logging.getLogger("driftgate.predlog")


class _File:
    """An open ``.partial`` file of one model's stream."""

    __slots__ = ("day", "fd", "final", "partial", "size")

    def __init__(self, fd: int, partial: Path, final: Path, day: int) -> None:
        self.fd, self.partial, self.final, self.day, self.size = fd, partial, final, day, 0


class LogFolder:
    """The files of one writer (this process) in a log folder.

    Args:
        root: the log folder.
        writer: this writer's name in its file names.
        file_bytes: size at which a file is finished.
        max_bytes: bound on the folder's total size.
        failed: told of an error it recovered from (a finish or a deletion that failed).
    """

    def __init__(self, root: Path, writer: str, file_bytes: int, max_bytes: int, failed: Callable[[OSError], None]) -> None:
        self.root = root
        self.writer = writer
        self.file_bytes = file_bytes
        self.max_bytes = max_bytes
        self._failed = failed
        self._files: dict[tuple[str, str], _File] = {}
        self._seq = 0

    def append(self, name: str, stream: Stream, member: bytes, now: float) -> None:
        """Append one gzip member to model ``name``'s open ``stream`` file (a new file at
        ``file_bytes`` or a new UTC day). On ``OSError`` the file is cut back to its whole
        members and finished, and the error raised."""
        key = (name, stream)
        f = self._files.get(key)
        day = int(now // 86400)
        try:
            if f is not None and (f.size >= self.file_bytes or f.day != day):
                del self._files[key]
                self._finish(f)
                f = None
            if f is None:
                f = self._files[key] = self._open(name, stream, now, day)
            _write_all(f, member)
        except OSError:
            self._abandon(key)
            raise

    def close(self) -> None:
        """Finish every open file."""
        for f in list(self._files.values()):
            self._finish(f)
        self._files.clear()

    def open_files(self) -> list[int]:
        """The descriptors of the open files (a test closes them to play a dead writer)."""
        return [f.fd for f in self._files.values()]

    def _open(self, name: str, stream: Stream, now: float, day: int) -> _File:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / file_name(stream, now, self.writer, self._next_seq())
        creating = folder / f".{final.name}.creating"
        fd = os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked before anyone can see it as .partial
            partial = final.with_name(final.name[: -len(FINISHED)] + PARTIAL)
            os.rename(creating, partial)
        except OSError:
            os.close(fd)
            _unlink(creating)
            raise
        return _File(fd, partial, final, day)

    def _finish(self, f: _File) -> None:
        """fsync and rename a file to its finished name, then apply the size bound."""
        try:
            if f.size == 0:
                os.unlink(f.partial)
            else:
                os.fsync(f.fd)
                os.rename(f.partial, f.final)
        except OSError as exc:
            self._failed(exc)
        finally:
            os.close(f.fd)
        try:
            self.enforce_retention()
        except OSError as exc:
            self._failed(exc)

    def _abandon(self, key: tuple[str, str]) -> None:
        """After a failed write: cut the file back to its whole members and finish it."""
        f = self._files.pop(key, None)
        if f is None:
            return
        try:
            os.ftruncate(f.fd, f.size)
        except OSError:
            pass  # the torn member stays at the end; a reader stops before it
        self._finish(f)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def recover(self) -> list[Path]:
        """Finish the ``.partial`` files of writers that died (no lock held on them): cut to
        their whole gzip members and renamed; an empty one is removed. Returns the files."""
        done = []
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.endswith(PARTIAL) or path.name.endswith(".creating"):
                    finished = _recover(path)
                    if finished is not None:
                        done.append(finished)
        if done:
            log.info("prediction log: finished %d files left by writers that stopped", len(done))
        return done

    def enforce_retention(self) -> None:
        """Delete the oldest finished files until the folder holds at most ``max_bytes``."""
        files = []
        total = 0
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.endswith(FINISHED) or path.name.endswith(PARTIAL):
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue
                    total += st.st_size
                    if path.name.endswith(FINISHED):
                        files.append((st.st_mtime, path.name, path, st.st_size))
        if total <= self.max_bytes:
            return
        for _, _, path, size in sorted(files):
            _unlink(path)
            total -= size
            if total <= self.max_bytes:
                break


def _write_all(f: _File, data: bytes) -> None:
    view = memoryview(data)
    written = 0
    try:
        while written < len(view):
            written += os.write(f.fd, view[written:])
    finally:
        if written == len(view):
            f.size += written


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _recover(path: Path) -> Path | None:
    """Finish one file of a dead writer; None if a live writer holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a live writer's
        if not path.exists():
            return None  # finished by its writer (or another recovery) meanwhile
        if path.name.endswith(".creating"):
            os.unlink(path)
            return None
        with open(fd, "rb", closefd=False) as f:
            data = f.read()
        end = whole_members(data)
        if end == 0:
            os.unlink(path)
            return None
        if end < len(data):
            os.ftruncate(fd, end)
        os.fsync(fd)
        final = path.with_name(path.name[: -len(PARTIAL)] + FINISHED)
        os.rename(path, final)
        return final
    finally:
        os.close(fd)
