"""``driftgate rollout NAME status|shadow V|canary V|promote|rollback|pin V``.

Locally (``--repository``) the command reads and writes ``<repository>/<name>/rollout.yaml``
itself (a running server over that repository follows it within its watch interval);
remotely (``--url --token``) it asks the server (``GET``/``PUT /v1/models/{name}/rollout``),
which also knows the comparison of the two versions: ``status`` prints it as a table.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import msgspec

from gateway.errors import UsageError
from gateway.monitoring.comparison import status_table

__all__ = ["add_rollout", "cmd_rollout"]

ACTIONS = ("status", "shadow", "canary", "promote", "rollback", "pin")


def _action(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``PUT`` body of the command (None for ``status``)."""
    if args.action == "status":
        return None
    action: dict[str, Any] = {"action": args.action}
    if args.action in ("shadow", "canary", "pin"):
        if args.target is None:
            raise UsageError(f"rollout {args.action} needs a version: driftgate rollout {args.name} {args.action} V")
        action["version"] = args.target
    elif args.target is not None:
        raise UsageError(f"rollout {args.action} takes no version")
    if args.action == "shadow":
        action["share"] = args.sample if args.sample is not None else 1.0
    if args.action == "canary":
        if args.percent is None:
            raise UsageError("rollout canary needs --percent P (the share of requests the candidate answers)")
        action["share"] = args.percent / 100.0
    if args.auto_rollback is not None:
        rows, sep, margin = args.auto_rollback.partition(":")
        try:
            action["auto_rollback"] = {"min_rows": int(rows), "margin": float(margin) if sep else 0.05}
        except ValueError:
            raise UsageError(f"--auto-rollback takes MIN_ROWS[:MARGIN], got {args.auto_rollback!r}") from None
    if args.tolerance is not None:
        action["tolerance"] = args.tolerance
    return action


def _local(args: argparse.Namespace, action: dict[str, Any] | None) -> dict[str, Any]:
    from gateway.repository import ModelRepository, check_name
    from gateway.rollout import RolloutAction, decide, read_rollout, write_rollout

    repository = ModelRepository(args.repository or os.environ.get("DRIFTGATE_REPOSITORY", "models"))
    name = check_name(args.name)
    registered = repository.versions(name)
    current = read_rollout(repository.root, name)
    if action is not None:
        try:
            wanted = msgspec.convert(action, RolloutAction)
        except msgspec.ValidationError as exc:
            raise UsageError(str(exc)) from None
        current = decide(name, current, wanted, registered, max(registered, default=None))
        write_rollout(repository.root, name, current)
    elif not registered:
        from gateway.errors import ModelNotFoundError

        raise ModelNotFoundError(f"no model named {name!r} in {repository.root}")
    primary = str(current.primary if current is not None else max(registered))
    body: dict[str, Any] = {"model": name, "primary": primary, "candidate": None, "versions": {}}
    if current is not None:
        body.update(
            candidate=None if current.candidate is None else {**msgspec.to_builtins(current.candidate), "version": str(current.candidate.version)},
            previous=None if current.previous is None else str(current.previous),
            auto_rollback=None if current.auto_rollback is None else msgspec.to_builtins(current.auto_rollback),
            rollbacks=dict(current.rollbacks),
            last_rollback=None if current.last_rollback is None else {**msgspec.to_builtins(current.last_rollback), "version": str(current.last_rollback.version)},
        )
    return body


def cmd_rollout(args: argparse.Namespace) -> int:
    action = _action(args)
    if args.url:
        from gateway.client import rollout_remote

        body = rollout_remote(args.url, args.token or os.environ.get("DRIFTGATE_ADMIN_TOKEN"), args.name, action)
    else:
        body = _local(args, action)
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(body) + b"\n")
    else:
        print(status_table(body))
        if not args.url:
            print("(the live comparison of the versions is the server's: ask it with --url)", file=sys.stderr)
    return 0


def add_rollout(sub: Any, add_where: Any) -> None:
    """The ``rollout`` subcommand (``sub``: the parser's subparsers; ``add_where``: the
    ``--repository`` / ``--url`` group of ``gateway.cli``)."""
    cmd = sub.add_parser(
        "rollout",
        help="shadow or canary a new version, compare it with the primary, promote or roll back",
        description="Show or change a model's rollout: 'status', 'shadow V [--sample F]', 'canary V --percent P', "
        "'promote', 'rollback' (after a promote: the previous primary again), 'pin V'.",
    )
    cmd.add_argument("name", help="model name")
    cmd.add_argument("action", choices=ACTIONS, help="what to do")
    cmd.add_argument("target", nargs="?", metavar="V", help="the version (shadow, canary, pin)")
    cmd.add_argument("--sample", type=float, help="shadow: the share of requests mirrored (default: 1, every request)")
    cmd.add_argument("--percent", type=float, help="canary: the percent of requests the candidate answers")
    cmd.add_argument(
        "--auto-rollback", metavar="MIN_ROWS[:MARGIN]", help="take the candidate out automatically when it is worse by more than MARGIN (default 0.05) after MIN_ROWS rows"
    )
    cmd.add_argument("--tolerance", type=float, help="regression: predictions this close agree")
    add_where(cmd)
    cmd.add_argument("--token", help="admin token for --url (default: DRIFTGATE_ADMIN_TOKEN)")
    cmd.add_argument("--json", action="store_true", help="print the state and the comparison as JSON")
    cmd.set_defaults(handler=cmd_rollout)
