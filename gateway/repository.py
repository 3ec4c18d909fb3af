"""The model repository on disk.

Layout (one folder per model version; versions are positive integers)::

    <root>/<name>/<version>/model.onnx
    <root>/<name>/<version>/spec.yaml     # the exact spec the version was registered with
    <root>/<name>/<version>/baseline.json # optional: its held-out figures (register --data)

A version folder is written whole under ``<root>/.staging/`` and then renamed into place,
which is atomic on one file system: a scanner sees a version complete or not at all, and
never a half-written file. Versions are immutable: adding an existing one is refused.
A staging folder's name carries its writer's process id, so one left by a writer that was
killed mid-write is recognised and removed (``clean_staging``, run by the server's watcher).

This module knows files only; loading a model is ``gateway.registry``'s job.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from gateway.errors import ConfigError, ModelConflictError, UsageError

__all__ = ["BASELINE_FILE", "MODEL_FILE", "SPEC_FILE", "ModelRepository", "VersionEntry", "check_name", "check_version", "parse_version"]

MODEL_FILE = "model.onnx"
SPEC_FILE = "spec.yaml"
BASELINE_FILE = "baseline.json"
"""Optional: what the version did on held-out rows at registration (``gateway.baseline``)."""
IMPORTANCE_FILE = "importance.json"
"""The version's permutation importance per feature, computed at registration
(``gateway.model_check.importance``); a version without it is served all the same."""
STAGING = ".staging"

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""Model names: letters, digits, ``_`` and ``-``, 1-64 characters, not starting with a
symbol. No dots or slashes, so a name is always one safe path segment and a URL segment."""
VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,8}$")
_STAGED_BY = re.compile(r"-p([0-9]+)-[a-z0-9_]+$")
"""The writer's process id in a staging folder's name (``<name>-<version>-p<pid>-<random>``)."""
STAGING_GRACE_SECONDS = 10.0
"""A staging folder younger than this is never removed: its writer may be in another PID
namespace (a registration from another container on a shared volume)."""
STAGING_STALE_SECONDS = 3600.0
"""A staging folder older than this is removed whoever wrote it: no registration takes an hour."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise ``UsageError``."""
    if not NAME_PATTERN.match(name):
        raise UsageError(f"invalid model name {name[:80]!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    return name


def parse_version(text: str | int) -> int | None:
    """``text`` as a version number, or None if it is not one (versions are whole numbers
    from 1, written without a sign or leading zeros). The one parser of versions: each
    caller says what a bad one is where it came from (``check_version``: a usage error;
    a path: no such model version, 404; a query parameter: a malformed request, 400)."""
    text = str(text)
    return int(text) if VERSION_PATTERN.match(text) else None


def check_version(version: str | int) -> int:
    """Return ``version`` as an int if it is a valid version, else raise ``UsageError``."""
    number = parse_version(version)
    if number is None:
        raise UsageError(f"invalid version {str(version)[:40]!r}: versions are whole numbers from 1")
    return number


class VersionEntry:
    """A complete version folder found on disk."""

    __slots__ = ("mtime_ns", "name", "path", "version")

    def __init__(self, name: str, version: int, path: Path, mtime_ns: int) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.mtime_ns = mtime_ns

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)

    def read_model(self) -> bytes:
        return (self.path / MODEL_FILE).read_bytes()

    def read_spec(self) -> bytes:
        return (self.path / SPEC_FILE).read_bytes()

    def read_baseline(self) -> bytes | None:
        """The version's ``baseline.json`` (``register --data``), or None when it has none."""
        try:
            return (self.path / BASELINE_FILE).read_bytes()
        except FileNotFoundError:
            return None


class ModelRepository:
    """A model repository folder (see the module docstring)."""

    def __init__(self, root: str | Path, *, create: bool = False) -> None:
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise ConfigError(f"model repository {self.root} does not exist or is not a folder")

    def scan(self) -> list[VersionEntry]:
        """Every complete version on disk, sorted by name and version. Folders that do not
        follow the layout (a bad name, a missing file) are skipped."""
        found: list[VersionEntry] = []
        for model_dir in sorted(self.root.iterdir()):
            if not model_dir.is_dir() or not NAME_PATTERN.match(model_dir.name):
                continue
            for version_dir in model_dir.iterdir():
                if not version_dir.is_dir() or not VERSION_PATTERN.match(version_dir.name):
                    continue
                model, spec = version_dir / MODEL_FILE, version_dir / SPEC_FILE
                if model.is_file() and spec.is_file():
                    found.append(VersionEntry(model_dir.name, int(version_dir.name), version_dir, version_dir.stat().st_mtime_ns))
        found.sort(key=lambda e: (e.name, e.version))
        return found

    def versions(self, name: str) -> list[int]:
        return [e.version for e in self.scan() if e.name == name]

    def next_version(self, name: str) -> int:
        return max(self.versions(name), default=0) + 1

    def add(
        self, name: str, version: int | None, model: bytes, spec: bytes, extra: dict[str, bytes] | None = None
    ) -> VersionEntry:
        """Write a new version atomically and return it (``extra``: more files of the version,
        by name, such as ``BASELINE_FILE`` and ``IMPORTANCE_FILE``).

        Raises:
            UsageError: a bad name or version.
            ModelConflictError: the version exists already.
        """
        check_name(name)
        number = self.next_version(name) if version is None else check_version(version)
        target = self.root / name / str(number)
        if target.exists():
            raise ModelConflictError(f"{name} version {number} exists already; versions are immutable, register a new one")
        staging = self.root / STAGING
        staging.mkdir(exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{name}-{number}-p{os.getpid()}-", dir=staging))
        try:
            for filename, data in ((MODEL_FILE, model), (SPEC_FILE, spec), *(extra or {}).items()):
                with open(folder / filename, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            target.parent.mkdir(exist_ok=True)
            try:
                os.rename(folder, target)  # atomic; fails if another writer got there first
            except OSError:
                raise ModelConflictError(f"{name} version {number} exists already; versions are immutable") from None
            _fsync_folder(target.parent)  # the rename itself survives a power cut
        finally:
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
        return VersionEntry(name, number, target, target.stat().st_mtime_ns)

    def clean_staging(self, now: float | None = None) -> list[str]:
        """Remove staging folders abandoned by a writer that died mid-write (its process is
        gone and the folder is older than ``STAGING_GRACE_SECONDS``, or the folder is older
        than ``STAGING_STALE_SECONDS``). Returns the names removed."""
        now = time.time() if now is None else now
        removed: list[str] = []
        try:
            entries = list((self.root / STAGING).iterdir())
        except OSError:  # no staging folder (yet): nothing to clean
            return removed
        for entry in entries:
            try:
                age = now - entry.lstat().st_mtime
            except OSError:  # renamed into place or removed meanwhile
                continue
            found = _STAGED_BY.search(entry.name)
            abandoned = age > STAGING_GRACE_SECONDS and (found is None or not _alive(int(found.group(1))))
            if abandoned or age > STAGING_STALE_SECONDS:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return removed

    def remove(self, name: str, version: int) -> None:
        """Delete a version folder (used to roll back a registration that failed late)."""
        shutil.rmtree(self.root / check_name(name) / str(check_version(version)), ignore_errors=True)


def _alive(pid: int) -> bool:
    """True if a process ``pid`` exists (in this PID namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OverflowError:
        return False
    return True


def _fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
