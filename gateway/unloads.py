"""The models unloaded across the workers of one server (``driftgate serve --workers N``).

The repository extension's ``unload`` and ``load`` reach the one worker the kernel handed
the connection to; this record carries them to the others. It is a folder ``unloaded/`` in
the server's state folder (``gateway.workers``) holding one empty file per model unloaded
through the API, named after the model (a repository name, ``NAME_PATTERN``: always a safe
file name). The worker that takes an ``unload`` creates the file before it stops serving the
model; the one that takes a ``load`` deletes it before it loads the model. Each is a single
atomic file-system operation, so calls at different workers need neither a lock nor a
read-modify-write: the later call wins, as on one server.

Every worker reads the record once before it loads anything (so a worker started in place
of a killed one never loads a model the fleet has unloaded), then every ``POLL_INTERVAL``
seconds, and follows it (``Gateway``). The record lives as long as the state folder: until
the supervisor exits. A single server (no state folder) has no record.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.repository import NAME_PATTERN, check_name

__all__ = ["POLL_INTERVAL", "UnloadedModels"]

POLL_INTERVAL = 0.25
"""Seconds between a worker's readings of the record: the most it lags another worker's
``unload`` (or the start of its own reload after another worker's ``load``)."""


class UnloadedModels:
    """The fleet's record of unloaded models, in the server's state folder."""

    def __init__(self, state_folder: str | Path) -> None:
        self.folder = Path(state_folder) / "unloaded"
        self.folder.mkdir(exist_ok=True)

    def names(self) -> set[str] | None:
        """The models unloaded now; None if the record is gone (the state folder was
        removed under a running worker: it knows nothing new then)."""
        try:
            return {name for name in os.listdir(self.folder) if NAME_PATTERN.match(name)}
        except FileNotFoundError:
            return None

    def mark(self, name: str) -> None:
        """Record ``name`` as unloaded."""
        (self.folder / check_name(name)).touch()

    def lift(self, name: str) -> None:
        """Record ``name`` as no longer unloaded."""
        if NAME_PATTERN.match(name):
            (self.folder / name).unlink(missing_ok=True)
