"""Rollouts: which version of a model answers, and which one is being tried beside it.

A model's rollout state names its **primary** version (it answers every request that pins
no version) and at most one **candidate**, in one of two modes:

- ``shadow``: every request the primary answers (or a sampled ``share`` of them) is also
  predicted by the candidate, off the response path (``gateway.shadow``); the client sees
  the primary's answer only;
- ``canary``: a ``share`` of the requests is answered by the candidate. Requests carrying
  the same ``X-Driftgate-Route-Key`` header always get the same version (the key's hash
  picks it); a request without one is routed at random.

A request that pins a version is never rerouted. Without a rollout state, the primary is
the highest version, as it always was.

The state lives in the model repository, ``<repository>/<name>/rollout.yaml``, written to
a temporary file and renamed into place (atomic), so every worker of a server, every
replica sharing the repository and a restarted server read the same state. ``Rollouts``
keeps each model's state in memory (one dict lookup on the request path), re-reads the
files on every repository scan (``gateway.lifecycle``), and writes through.

This module knows the state and the files; the comparison of the two versions is
``gateway.shadow`` and ``gateway.monitoring``'s, the commands are ``gateway.rollout_command``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from gateway.documents import DocumentBudget, decode_document
from gateway.errors import GatewayError, ModelNotFoundError, RolloutError
from gateway.repository import check_name, parse_version

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from gateway.registry import LoadedModel, ModelRegistry
    from gateway.repository import ModelRepository

__all__ = [
    "ROLLOUT_FILE",
    "ROUTE_KEY_HEADER",
    "AutoRollback",
    "Candidate",
    "Rollout",
    "RolloutAction",
    "RolloutChange",
    "Rollouts",
    "apply_change",
    "decide",
    "decode_request",
    "read_rollout",
    "registration",
    "write_rollout",
]

log = logging.getLogger("driftgate.rollout")

ROLLOUT_FILE = "rollout.yaml"
ROUTE_KEY_HEADER = b"x-driftgate-route-key"
BUDGET = DocumentBudget("a rollout state", max_bytes=64 * 1024)
Mode = Literal["shadow", "canary"]


class Candidate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The version tried beside the primary."""

    version: int
    mode: Mode
    share: float = 1.0
    """``shadow``: the share of requests mirrored; ``canary``: the share answered by it."""


class AutoRollback(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Take the candidate out when, after ``min_rows`` of its rows (feedback rows, for
    accuracy), its rejection rate, failure rate or feedback accuracy is worse than the
    primary's by more than ``margin`` (a share: 0.05 is five points; MAE: relative)."""

    min_rows: int = 200
    margin: float = 0.05


class RollbackRecord(msgspec.Struct, kw_only=True):
    """The last time a candidate was taken out, and why (shown by ``status``)."""

    version: int
    reason: str
    detail: str
    at: float


class Rollout(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A model's rollout state, as ``rollout.yaml`` holds it."""

    primary: int
    candidate: Candidate | None = None
    previous: int | None = None
    """The primary before the last change of primary: what ``rollback`` restores."""
    auto_rollback: AutoRollback | None = None
    tolerance: float | None = None
    """Regression: two predictions within this distance agree (default: 1% of the range of
    the primary spec's output baseline)."""
    rollbacks: dict[str, int] = {}
    """Rollbacks so far by reason (``manual``, ``rejection_rate``, ``failure_rate``,
    ``feedback``): ``driftgate_rollbacks_total``."""
    last_rollback: RollbackRecord | None = None


class CandidateChange(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: int | str
    mode: Mode
    share: float = 1.0


class RolloutChange(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of ``PUT /v1/models/{name}/rollout``: the wanted state."""

    primary: int | str
    candidate: CandidateChange | None = None
    auto_rollback: AutoRollback | None = None
    tolerance: float | None = None


class RolloutAction(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The other body of ``PUT /v1/models/{name}/rollout``: a command, as ``driftgate rollout``
    names it, done by the server on the state it holds (``promote``, ``rollback``, ...)."""

    action: Literal["shadow", "canary", "promote", "rollback", "pin"]
    version: int | str | None = None
    share: float = 1.0
    auto_rollback: AutoRollback | None = None
    tolerance: float | None = None


# -- files ------------------------------------------------------------------------------


def rollout_path(root: Path, name: str) -> Path:
    return root / check_name(name) / ROLLOUT_FILE


def read_rollout(root: Path, name: str) -> Rollout | None:
    """The state in ``<root>/<name>/rollout.yaml``, None if there is none. Raises
    ``RolloutError`` for a file that does not decode."""
    path = rollout_path(root, name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode_document(data, Rollout, BUDGET, source=str(path), invalid=RolloutError)


def write_rollout(root: Path, name: str, state: Rollout | None) -> None:
    """Write (None: remove) the state of ``name`` atomically: a temporary file renamed into place."""
    path = rollout_path(root, name)
    if state is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    text = b"# driftgate rollout state: change it with `driftgate rollout` or PUT /v1/models/{name}/rollout\n"
    text += msgspec.yaml.encode(state)
    fd, tmp = tempfile.mkstemp(prefix=f".{ROLLOUT_FILE}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


# -- changes ----------------------------------------------------------------------------


def _version(value: int | str, what: str) -> int:
    number = parse_version(value)
    if number is None:
        raise RolloutError(f"invalid {what} {str(value)[:40]!r}: versions are whole numbers from 1")
    return number


def apply_change(
    name: str, current: Rollout | None, change: RolloutChange, registered: list[int], default: int | None
) -> Rollout:
    """The state after ``change``, checked against the ``registered`` versions of ``name``
    (``default``: the primary without a state). Raises ``RolloutError``, naming what is
    wrong, for a version that is not registered, a share outside (0, 1] or a candidate
    equal to the primary."""
    primary = _version(change.primary, "primary version")
    if primary not in registered:
        raise RolloutError(f"{name} version {primary} is not registered (versions: {_listing(registered)})")
    candidate = None
    if change.candidate is not None:
        version = _version(change.candidate.version, "candidate version")
        share = change.candidate.share
        if version not in registered:
            raise RolloutError(f"{name} version {version} is not registered (versions: {_listing(registered)})")
        if version == primary:
            raise RolloutError(f"the candidate cannot be the primary ({name} version {version})")
        if not 0.0 < share <= 1.0:  # also refuses NaN
            raise RolloutError(f"the share must be in (0, 1], not {share!r} (a percent of 20 is a share of 0.2)")
        candidate = Candidate(version=version, mode=change.candidate.mode, share=share)
    if change.auto_rollback is not None:
        rule = change.auto_rollback
        if rule.min_rows < 1 or not 0.0 <= rule.margin < 1.0:
            raise RolloutError("auto_rollback needs min_rows >= 1 and a margin in [0, 1)")
    if change.tolerance is not None and not change.tolerance >= 0.0:
        raise RolloutError(f"the tolerance must be a number >= 0, not {change.tolerance!r}")
    old_primary = current.primary if current is not None else default
    previous = current.previous if current is not None else None
    if old_primary is not None and old_primary != primary:
        previous = old_primary
    return Rollout(
        primary=primary,
        candidate=candidate,
        previous=previous,
        auto_rollback=change.auto_rollback,
        tolerance=change.tolerance,
        rollbacks=dict(current.rollbacks) if current is not None else {},
        last_rollback=current.last_rollback if current is not None else None,
    )


def _listing(versions: list[int]) -> str:
    return ", ".join(map(str, sorted(versions)))


def change_of(state: Rollout | None, default: int | None) -> RolloutChange:
    """The change that keeps ``state`` as it is (the start of every command's change)."""
    if state is None:
        if default is None:
            raise RolloutError("the model has no version to be the primary")
        return RolloutChange(primary=default)
    candidate = state.candidate
    return RolloutChange(
        primary=state.primary,
        candidate=None if candidate is None else CandidateChange(version=candidate.version, mode=candidate.mode, share=candidate.share),
        auto_rollback=state.auto_rollback,
        tolerance=state.tolerance,
    )


def command_change(state: Rollout | None, default: int | None, command: str, version: int | None = None, share: float = 1.0) -> tuple[RolloutChange, str | None]:
    """The change a ``driftgate rollout`` command asks for: ``shadow`` / ``canary`` (a
    candidate), ``promote``, ``rollback``, ``pin``. Also the reason a rollback is counted
    under, if it is one. Raises ``RolloutError`` for what cannot be done."""
    change = change_of(state, default)
    if command in ("shadow", "canary"):
        assert version is not None
        change.candidate = CandidateChange(version=version, mode=command, share=share)  # type: ignore[arg-type]
        return change, None
    if command == "pin":
        assert version is not None
        change.primary, change.candidate = version, None
        return change, None
    if command == "promote":
        if state is None or state.candidate is None:
            raise RolloutError("there is no candidate to promote: start one with `rollout NAME shadow V` or `canary V`")
        change.primary, change.candidate = state.candidate.version, None
        return change, None
    if command == "rollback":
        if state is not None and state.candidate is not None:
            change.candidate = None
            return change, "manual"
        if state is None or state.previous is None:
            raise RolloutError("there is nothing to roll back: no candidate, and no earlier primary")
        change.primary = state.previous
        return change, "manual"
    raise RolloutError(f"unknown rollout command {command!r}")


def decide(
    name: str,
    current: Rollout | None,
    request: RolloutChange | RolloutAction,
    registered: list[int],
    default: int | None,
) -> Rollout:
    """The new state of ``name`` after ``request`` (a whole state, or a command). Raises
    ``RolloutError`` (``ModelNotFoundError`` for a model with no version) and changes nothing
    when it cannot be done. A rollback is counted (reason ``manual``)."""
    if not registered:
        raise ModelNotFoundError(f"no model named {name[:80]!r} is registered")
    reason = None
    taken_out = None
    if isinstance(request, RolloutAction):
        version = None if request.version is None else _version(request.version, "version")
        if request.action in ("shadow", "canary", "pin") and version is None:
            raise RolloutError(f"'{request.action}' needs a version")
        if request.action == "rollback" and current is not None:
            taken_out = current.candidate.version if current.candidate is not None else current.primary
        change, reason = command_change(current, default, request.action, version, request.share)
        if request.auto_rollback is not None:
            change.auto_rollback = request.auto_rollback
        if request.tolerance is not None:
            change.tolerance = request.tolerance
        request = change
    state = apply_change(name, current, request, registered, default)
    if reason is not None and taken_out is not None:
        state = count_rollback(state, reason, taken_out, "by hand")
    return state


def decode_request(body: bytes) -> RolloutChange | RolloutAction:
    """A ``PUT .../rollout`` body: a state, or ``{"action": ...}``. ``PayloadError`` if it is neither."""
    from gateway.errors import PayloadError

    try:
        raw = msgspec.json.decode(body)
        if isinstance(raw, dict) and "action" in raw:
            return msgspec.convert(raw, RolloutAction)
        return msgspec.convert(raw, RolloutChange)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PayloadError(f"the rollout body is not a rollout state or action: {str(exc).splitlines()[0][:200]}") from None


def count_rollback(state: Rollout, reason: str, version: int, detail: str) -> Rollout:
    """``state`` with one more rollback counted under ``reason``."""
    rollbacks = {**state.rollbacks, reason: state.rollbacks.get(reason, 0) + 1}
    record = RollbackRecord(version=version, reason=reason, detail=detail, at=time.time())
    return msgspec.structs.replace(state, rollbacks=rollbacks, last_rollback=record)


# -- the served state -------------------------------------------------------------------


def route_bucket(key: str) -> float:
    """Where a route key falls in [0, 1): the same for every worker and replica."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class Rollouts:
    """Every model's rollout state as this process serves it (see the module docstring)."""

    def __init__(self, root: Path, registry: ModelRegistry) -> None:
        self.root = root
        self.registry = registry
        self.states: dict[str, Rollout] = {}
        """Copy-on-write: replaced whole, read without a lock."""
        self._stamps: dict[str, tuple[int, int, int] | None] = {}
        self._lock = threading.Lock()

    # -- the request path --

    def choose(self, name: str, headers: Sequence[tuple[bytes, bytes]]) -> LoadedModel:
        """The version that answers an unpinned request for ``name``."""
        state = self.states.get(name)
        if state is None:
            return self.registry.get(name)
        try:
            primary = self.registry.get(name, state.primary)
        except ModelNotFoundError:  # not loaded (yet, or it failed): the highest answers
            return self.registry.get(name)
        candidate = state.candidate
        if candidate is None or candidate.mode != "canary":
            return primary
        key = None
        for field, value in headers:
            if field == ROUTE_KEY_HEADER:
                key = value.decode("latin-1")
                break
        bucket = route_bucket(key) if key is not None else random.random()
        if bucket >= candidate.share:
            return primary
        try:
            return self.registry.get(name, candidate.version)
        except ModelNotFoundError:
            return primary

    def shadow_of(self, model: LoadedModel) -> LoadedModel | None:
        """The shadow candidate that should also predict what ``model`` (the primary) just
        answered, or None (no shadow, not sampled, not loaded)."""
        state = self.states.get(model.name)
        if state is None:
            return None
        candidate = state.candidate
        if candidate is None or candidate.mode != "shadow" or model.version != state.primary:
            return None
        if candidate.share < 1.0 and random.random() >= candidate.share:
            return None
        try:
            return self.registry.get(model.name, candidate.version)
        except ModelNotFoundError:
            return None

    def exported(self) -> tuple[dict[tuple[str, str], int], list[tuple[str, str, str, str]]]:
        """Rollbacks by model and reason, as the rollout files count them
        (``driftgate_rollbacks_total``: in the repository, so one count for the fleet), and
        (model, version, role, mode) of each primary and candidate (``driftgate_rollout_version``)."""
        states = self.states
        rollbacks = {(name, reason): n for name, state in states.items() for reason, n in state.rollbacks.items()}
        roles: list[tuple[str, str, str, str]] = []
        for name, state in states.items():
            c = state.candidate
            roles.append((name, str(state.primary), "primary", "-" if c is None else c.mode))
            if c is not None:
                roles.append((name, str(c.version), "candidate", c.mode))
        return rollbacks, roles

    # -- files --

    def refresh(self, name: str | None = None) -> None:
        """Re-read the rollout files that changed (of ``name``, or of every model folder).
        A file that does not decode is logged and leaves the state as it was."""
        try:
            names = [name] if name is not None else [p.name for p in self.root.iterdir() if (p / ROLLOUT_FILE).exists() or p.name in self.states]
        except OSError as exc:
            log.error("cannot list rollout states in %s: %s", self.root, exc)
            return
        for model in names:
            try:
                path = rollout_path(self.root, model)
            except GatewayError:
                continue
            stamp = _stamp(path)
            if stamp == self._stamps.get(model) and (stamp is None) == (model not in self.states):
                continue
            try:
                state = read_rollout(self.root, model)
            except (GatewayError, OSError) as exc:
                log.error("%s: the rollout state cannot be read, keeping the one in use: %s", model, exc)
                self._stamps[model] = stamp
                continue
            self._install(model, state, stamp)

    def _install(self, name: str, state: Rollout | None, stamp: tuple[int, int, int] | None) -> None:
        with self._lock:
            old = self.states.get(name)
            states = dict(self.states)
            if state is None:
                states.pop(name, None)
            else:
                states[name] = state
            self.states = states
            self._stamps[name] = stamp
        if old != state:
            log.info("%s: rollout %s", name, describe(state))

    def write(self, name: str, state: Rollout | None) -> None:
        """Write ``state`` to the repository and serve it at once."""
        with self._lock:
            write_rollout(self.root, name, state)
        self._install(name, state, _stamp(rollout_path(self.root, name)))


def describe(state: Rollout | None) -> str:
    """A rollout state in words, for logs and the command line."""
    if state is None:
        return "none: the highest version answers"
    text = f"primary version {state.primary}"
    c = state.candidate
    if c is not None:
        share = f"{c.share:.0%} of requests" if c.share < 1 else "every request"
        text += f", candidate version {c.version} in {c.mode} ({share})"
    return text


def registered_versions(repository: ModelRepository, name: str) -> list[int]:
    return repository.versions(check_name(name))


def registration(
    root: Path, name: str, number: int, registered: list[int], mode: Mode | None = None, share: float = 1.0
) -> Callable[[bool], None]:
    """The rollout side of registering version ``number`` of ``name`` (``registered``: the
    versions before it). Call before the version is written; call what it returns after,
    with whether the registration succeeded.

    - ``mode`` None: as always, the new version becomes the primary; a rollout state, if
      there is one, is updated after the version is in place (the old primary until then).
    - ``shadow`` / ``canary``: the new version becomes the candidate and the current primary
      stays. The state is written **before** the version appears, so no watcher (another
      worker, another replica) ever serves the new version as the primary; a failed
      registration puts the old state back.
    """
    current = read_rollout(root, name)
    if mode is None:
        def finish(ok: bool) -> None:
            if ok and current is not None:
                change = RolloutChange(primary=number, auto_rollback=current.auto_rollback, tolerance=current.tolerance)
                write_rollout(root, name, apply_change(name, current, change, [*registered, number], None))
        return finish
    if not registered:
        raise RolloutError(f"{name} has no version yet to be the primary: register the first version without --shadow or --canary")
    if not 0.0 < share <= 1.0:
        raise RolloutError(f"the share must be in (0, 1], not {share!r} (a percent of 20 is a share of 0.2)")
    base = current or Rollout(primary=max(registered))
    write_rollout(root, name, msgspec.structs.replace(base, candidate=Candidate(version=number, mode=mode, share=share)))

    def undo(ok: bool) -> None:
        if not ok:
            write_rollout(root, name, current)
    return undo
