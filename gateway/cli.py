"""The ``driftgate`` command line: argparse subcommands of the contract.

Every failure prints one line, ``driftgate: error: <what went wrong>``, and exits
non-zero; ``exit_code_for`` is the one place that maps the error tree to exit codes:

    0  success
    1  ``check`` found rows that break the spec; ``evaluate --require-better`` did not hold
    2  unusable input: a missing or empty file, a bad flag, an invalid spec, a file over its size limit,
       a rollout change that cannot be made
    3  the model or the server refused or failed
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import msgspec

from gateway import __version__
from gateway.errors import ConfigError, GatewayError, PayloadTooLargeError, RolloutError, SpecError, UsageError

__all__ = ["build_parser", "exit_code_for", "main"]

EXIT_VIOLATIONS = 1
EXIT_USAGE = 2
EXIT_FAILURE = 3


def exit_code_for(exc: GatewayError) -> int:
    """The exit code of an error of the tree (see the module docstring)."""
    if isinstance(exc, UsageError | ConfigError | SpecError | PayloadTooLargeError | RolloutError):
        return EXIT_USAGE
    return EXIT_FAILURE


def _fail(message: str, code: int) -> int:
    print(f"driftgate: error: {message}", file=sys.stderr)
    return code


# --- fit-spec ---------------------------------------------------------------------------


def _pairs(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or ():
        column, sep, value = item.partition("=")
        if not sep or not column or not value:
            raise UsageError(f"{flag} takes COLUMN=VALUE, got {item!r}")
        out[column] = value
    return out


def _bounds(values: Sequence[str] | None) -> dict[str, tuple[float | None, float | None]]:
    out: dict[str, tuple[float | None, float | None]] = {}
    for column, text in _pairs(values, "--bounds").items():
        low, sep, high = text.partition(":")
        try:
            if not sep or not (low or high):
                raise ValueError
            out[column] = (float(low) if low else None, float(high) if high else None)
        except ValueError:
            raise UsageError(f"--bounds takes COLUMN=LOW:HIGH (either may be empty), got {column}={text!r}") from None
    return out


def _progress(enabled: bool | None) -> Callable[[str], None] | None:
    """Progress lines on stderr: with --progress, or by default when stderr is a terminal."""
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


def cmd_fit_spec(args: argparse.Namespace) -> int:
    import time

    from gateway.datafile import read_columns
    from gateway.spec import FeatureSpec

    types = _pairs(args.type, "--type")
    progress = _progress(args.progress)
    data = read_columns(args.data, text=frozenset(c for c, t in types.items() if t == "category"), progress=progress)
    n_rows = len(next(iter(data.values())))
    started = time.perf_counter()
    if progress:
        progress(f"fitting {len(data)} columns of {n_rows:,} rows...")
    decisions: list[str] = []
    spec = FeatureSpec.fit(
        data,
        name=args.name,
        target=args.target,
        exclude=args.exclude or (),
        keep=args.keep or (),
        types=types,
        transforms=_pairs(args.transform, "--transform"),
        bounds=_bounds(args.bounds),
        on_violation=args.on_violation,
        missing=args.missing,
        vocabulary=args.vocabulary,
        margin=args.margin,
        bins=args.bins,
        review_threshold=args.review_threshold,
        segments=args.segment or (),
        report=decisions.append,
    )
    if progress:
        progress(f"fitted in {time.perf_counter() - started:.1f} s")
    spec.save(args.output)
    for line in decisions:
        print(line)
    task = f", {spec.output.task} of {spec.output.target!r}" if spec.output else ""
    print(
        f"fitted spec {spec.name!r} on {n_rows:,} rows: {len(spec.features)} features -> "
        f"{len(spec.output_columns)} model inputs{task}; wrote {args.output} ({spec.digest[:19]})"
    )
    return 0


# --- check ------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.datafile import read_columns, row_lines
    from gateway.spec import load_spec

    spec = load_spec(args.spec)
    data = read_columns(args.data, spec, progress=_progress(args.progress))
    n_rows = len(next(iter(data.values())))
    violations = spec.check(data)
    lines = row_lines(args.data) if violations else None
    if args.format == "json":
        found = [{**msgspec.structs.asdict(v), **({"line": lines[v.row]} if lines else {})} for v in violations]
        sys.stdout.buffer.write(msgspec.json.encode({"rows": n_rows, "violations": found}) + b"\n")
    else:
        for v in violations[: args.max_report]:
            action = "" if v.action == "reject" else f" ({v.action})"
            where = f"{args.data}:{lines[v.row]}: row {v.row}" if lines else f"row {v.row}"
            print(f"{where}: {v.feature}: {v.reason}{action} (value: {v.value!r})")
        if len(violations) > args.max_report:
            print(f"... and {len(violations) - args.max_report} more (use --max-report or --format json)")
        bad_rows = len({v.row for v in violations})
        verdict = "all rows pass" if not violations else f"{bad_rows} of {n_rows} rows break the spec"
        print(f"{args.data}: {n_rows} rows checked against {spec.name!r}: {verdict}", file=sys.stderr)
    return EXIT_VIOLATIONS if violations else 0


# --- serve, register, models -------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from gateway.config import FLAGS, load_settings
    from gateway.model_check.trial import check_scratch_folder
    from gateway.repository import ModelRepository

    overrides = {field: getattr(args, _dest(flag)) for field, flag in FLAGS.items()}
    for field in ("batching", "metrics_detail"):  # repeatable flags: one comma-separated setting
        overrides[field] = ",".join(overrides[field]) if overrides[field] else None
    settings = load_settings(os.environ, **overrides)
    ModelRepository(settings.repository)  # fail fast, with one line, on a missing repository
    check_scratch_folder()  # and on a read-only root without a writable /tmp: no model would load
    if settings.log_dir and Path(settings.log_dir).exists() and not Path(settings.log_dir).is_dir():
        raise ConfigError(f"--log-dir {settings.log_dir}: not a folder")
    from gateway.tracing import check_environ

    check_environ(os.environ)  # OTEL_* asking for traces this installation cannot export
    if settings.workers > 1:
        from gateway.workers import supervise

        return supervise(settings)
    from gateway.server import serve

    return serve(settings)


def cmd_register(args: argparse.Namespace) -> int:
    import os

    from gateway.files import read_input

    model = read_input(args.model, "model file")
    spec_text = read_input(args.spec, "spec file")
    rollout = ("shadow", 1.0) if args.shadow else ("canary", args.canary / 100.0) if args.canary is not None else None
    if args.url:
        from gateway.client import register_remote

        token = args.token or os.environ.get("DRIFTGATE_ADMIN_TOKEN")
        data = (read_input(args.data, "data file"), args.data.name) if args.data else None
        query = "" if rollout is None else f"?candidate={rollout[0]}&share={rollout[1]!r}"
        answer = register_remote(args.url, token, args.name, args.version, model, spec_text, args.spec.name, data, query)
        print(f"registered {answer['name']} version {answer['version']} on {args.url} ({answer['spec_digest'][:19]})")
        _say_offline(answer.get("offline"), answer.get("notes", []))
        return 0
    from gateway.registry import ModelRegistry
    from gateway.repository import ModelRepository
    from gateway.service import register_model

    repository = ModelRepository(args.repository or os.environ.get("DRIFTGATE_REPOSITORY", "models"), create=True)
    if sys.stderr.isatty():  # progress for a person; a script sees only the result or one error line
        print(f"checking {args.model} against {args.spec} (load and warm-up)...", file=sys.stderr)
    loaded = register_model(
        ModelRegistry(), repository, args.name, args.version, model, spec_text, data=args.data, rollout=rollout  # type: ignore[arg-type]
    )
    print(f"registered {loaded.name} version {loaded.version} in {repository.root} ({loaded.spec.digest[:19]})")
    from gateway.baseline import missing_output_baseline

    offline = {"rows": loaded.baseline.scored_rows, **loaded.baseline.metrics} if loaded.baseline else None
    note = missing_output_baseline(loaded.spec, loaded.baseline)
    _say_offline(offline, [note] if note else [])
    return 0


def _say_offline(offline: dict[str, Any] | None, notes: list[str]) -> None:
    """The held-out figures registration recorded (stdout), and any note (stderr, one line each)."""
    if offline:
        figures = ", ".join(f"{k} {v:.4f}" for k, v in offline.items() if k != "rows")
        print(f"offline on {offline['rows']:,} held-out rows: {figures}")
    for note in notes:
        print(f"driftgate: note: {note}", file=sys.stderr)


# --- evaluate ---------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from gateway.comparison import run_evaluate

    report, text = run_evaluate(args)
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(report) + b"\n")
    else:
        print(text)
    verdict = report.get("require_better")
    return EXIT_VIOLATIONS if verdict is not None and not verdict["passed"] else 0


def cmd_models(args: argparse.Namespace) -> int:
    import os

    if args.url:
        from gateway.client import list_remote

        listing = list_remote(args.url)
        rows = [(m["name"], ",".join(m["versions"]), m["version"], m["task"] or "-", m["spec_digest"][:19]) for m in listing["models"]]
        failed = [(f["name"], f["version"], f["reason"]) for f in listing.get("failed", [])]
    else:
        from gateway.repository import ModelRepository
        from gateway.spec import decode_spec

        repository = ModelRepository(args.repository or os.environ.get("DRIFTGATE_REPOSITORY", "models"))
        by_name: dict[str, list[Any]] = {}
        for entry in repository.scan():
            by_name.setdefault(entry.name, []).append(entry)
        rows, failed = [], []
        for name, entries in by_name.items():
            top = entries[-1]
            try:
                spec = decode_spec(top.read_spec(), source=str(top.path))
            except GatewayError as exc:
                failed.append((name, str(top.version), str(exc)))
                continue
            task = spec.output.task if spec.output else "-"
            rows.append((name, ",".join(str(e.version) for e in entries), str(top.version), task, spec.digest[:19]))
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode({"models": rows, "failed": failed}) + b"\n")
        return 0
    header = ("MODEL", "VERSIONS", "DEFAULT", "TASK", "SPEC")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for name, version, reason in failed:
        print(f"{name} version {version}: FAILED: {reason}", file=sys.stderr)
    if not rows and not failed:
        print("(no models)", file=sys.stderr)
    return 0


# --- export -----------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    import os

    from gateway.predlog.export import export_log

    log_dir = args.log_dir or os.environ.get("DRIFTGATE_LOG_DIR")
    if not log_dir:
        raise UsageError("export needs --log-dir DIR (or DRIFTGATE_LOG_DIR): the folder 'serve --log-dir' wrote")
    progress = _progress(args.progress)
    summary = export_log(
        log_dir, args.name, args.output, since=args.since, until=args.until, version=args.version,
        labelled=args.labelled, progress=progress,
    )  # fmt: skip
    print(
        f"exported {summary.rows:,} predictions of {args.name} ({summary.labelled:,} with feedback) "
        f"from {summary.files} log files to {args.output}"
    )
    return 0


# --- spec-schema ------------------------------------------------------------------------


def cmd_spec_schema(args: argparse.Namespace) -> int:
    from gateway.spec import feature_spec_schema

    text = msgspec.json.format(msgspec.json.encode(feature_spec_schema()), indent=2) + b"\n"
    if args.output is None:
        sys.stdout.buffer.write(text)
    else:
        args.output.write_bytes(text)
    return 0


# --- parser -----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftgate",
        description="Serve ONNX models behind input guards, with drift monitoring.",
    )
    parser.add_argument("--version", action="version", version=f"driftgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_fit_spec, _add_check, _add_serve, _add_register, _add_evaluate, _add_models, _add_export, _add_spec_schema):
        add(sub)
    from gateway.rollout_command import add_rollout

    add_rollout(sub, _add_where)
    return parser


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""The type of ``add_subparsers``' result (private in typeshed, so named as a string)."""


def _add_progress(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress lines on stderr for long reads and fits (default: when stderr is a terminal)",
    )


def _add_fit_spec(sub: Subparsers) -> None:
    fit = sub.add_parser(
        "fit-spec",
        help="infer a feature spec from training data",
        description="Infer a feature spec (types, valid ranges, categories, missing-value policy, "
        "transform, training baselines) from a data file. Prints one line per decision (a column "
        "left out, a category's vocabulary policy).",
    )
    fit.add_argument("data", type=Path, help="training data: .csv, .tsv, .parquet, .json (list of records) or .jsonl")
    fit.add_argument("--name", required=True, help="name of the spec (usually the model's name)")
    fit.add_argument("--target", help="column the model predicts (becomes the spec's output)")
    fit.add_argument("-o", "--output", type=Path, required=True, help="spec file to write (.yaml or .json)")
    fit.add_argument("--exclude", action="append", metavar="COLUMN", help="leave a column out (repeatable)")
    fit.add_argument(
        "--keep", action="append", metavar="COLUMN", help="fit a column that looks like an identifier, timestamp or free text (repeatable)"
    )
    fit.add_argument("--type", action="append", metavar="COLUMN=TYPE", help="force a type: number, integer, category, boolean")
    fit.add_argument("--transform", action="append", metavar="COLUMN=KIND", help="transform: standardize, minmax, log, passthrough, onehot, ordinal")
    fit.add_argument(
        "--bounds", action="append", metavar="COLUMN=LOW:HIGH", help="declared bounds, kept exactly (either may be empty, e.g. age=0:)"
    )
    fit.add_argument("--on-violation", choices=("reject", "clip", "flag"), default="reject", help="policy for out-of-domain values (default: reject)")
    fit.add_argument(
        "--missing",
        choices=("auto", "observed", "reject", "impute"),
        default="auto",
        help="an absent value: impute where the training data had gaps and reject elsewhere (observed), "
        "the same but impute gapless columns of under 6,000 rows too (auto, the default), or always reject or impute",
    )
    fit.add_argument(
        "--vocabulary",
        choices=("auto", "closed", "open"),
        default="auto",
        help="categories: refuse unseen values (closed), feed them as '(other)' and flag the row (open), "
        "or decide per column from the share of values seen once (default: auto)",
    )
    fit.add_argument(
        "--margin",
        type=float,
        help="widen observed numeric ranges by this fixed fraction of their width "
        "(default: by a tail estimate from the sample; 0.1 was driftgate 0.1's rule)",
    )
    fit.add_argument("--bins", type=_positive_int, default=10, help="quantile bins per numeric baseline (default: 10)")
    fit.add_argument("--review-threshold", type=float, help="mark classifications below this confidence for review")
    fit.add_argument(
        "--segment", action="append", metavar="COLUMN", help="a category feature whose values slice monitoring (repeatable)"
    )
    _add_progress(fit)
    fit.set_defaults(handler=cmd_fit_spec)


def _add_check(sub: Subparsers) -> None:
    check = sub.add_parser(
        "check",
        help="check a data file against a spec (exit 1 if any row violates)",
        description="Report every cell of a data file that breaks a feature spec, exactly as the server would, "
        "with its file line and its data row (counted from 0, as the server counts rows).",
    )
    check.add_argument("data", type=Path, help="data to check: .csv, .tsv, .parquet, .json or .jsonl")
    check.add_argument("--spec", type=Path, required=True, help="the feature spec (.yaml or .json)")
    check.add_argument("--format", choices=("text", "json"), default="text", help="report format (default: text)")
    check.add_argument("--max-report", type=_positive_int, default=50, help="violations to print in text format (default: 50)")
    _add_progress(check)
    check.set_defaults(handler=cmd_check)


_SERVE_FLAGS: dict[str, dict[str, Any]] = {
    "repository": {"help": "model repository folder (default: ./models)"},
    "host": {"help": "address to listen on (default: 127.0.0.1)"},
    "port": {"help": "port to listen on, 0 for any free one (default: 8080)"},
    "admin_token": {"help": "bearer token enabling the admin endpoints (default: unset, admin endpoints off)"},
    "admin_port": {"help": "serve the admin endpoints only on a listener of their own, on this port (default: off)"},
    "admin_host": {"help": "address of the admin listener (default: --host)"},
    "max_batch_rows": {"help": "rows per request (default: 4096)"},
    "max_body_bytes": {"help": "request body limit (default: 16 MiB)"},
    "max_concurrency": {"help": "prediction requests in progress before 503 (default: 32)"},
    "request_timeout_seconds": {"metavar": "SECONDS", "help": "prediction deadline before 504 (default: 30)"},
    "header_timeout_seconds": {"metavar": "SECONDS", "help": "request head read deadline before 408 (default: 10)"},
    "body_timeout_seconds": {"metavar": "SECONDS", "help": "request body read deadline before 408 (default: 30)"},
    "batching": {
        "action": "append",
        "metavar": "NAME=MAX_ROWS:MAX_WAIT_MS",
        "help": "dynamic batching for a model ('*' for all), repeatable, e.g. digits=32:2 (default: off)",
    },
    "metrics_detail": {
        "action": "append",
        "metavar": "LEVEL|NAME=LEVEL",
        "help": "series /metrics exports: standard, detailed or full, per model ('*' for all), repeatable (default: standard)",
    },
    "workers": {"help": "server processes sharing the port; metrics are the fleet's (default: 1)"},
    "log_level": {"choices": ("debug", "info", "warning", "error"), "help": "log level (default: info)"},
    "providers": {"metavar": "NAME[,NAME...]", "help": "onnxruntime execution providers in order of preference, e.g. cuda,cpu (default: cpu)"},
}
"""Hand-written help of some ``serve`` flags; every other setting's flag is made from its
field in ``Settings`` (``_setting_flag``)."""


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _setting_flag(srv: argparse.ArgumentParser, field: str, flag: str) -> None:
    """Add the flag of one setting: its help, default and environment twin."""
    from gateway.config import ENV_PREFIX, Settings, setting_help

    kwargs: dict[str, Any] = dict(_SERVE_FLAGS.get(field, {}))
    default = getattr(Settings(), field)
    if "help" not in kwargs:
        text = setting_help().get(field, "")
        first = text.split(". ")[0].rstrip(".").replace("``", "").replace("%", "%%")
        shown = "unset" if default is None else ("on" if default is True else "off" if default is False else default)
        kwargs["help"] = f"{first[:1].lower() + first[1:]} (default: {shown})" if first else f"(default: {shown})"
    kwargs["help"] = kwargs["help"][:-1] + f"; {ENV_PREFIX}{field.upper()})"
    if isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    hint = typing.get_type_hints(Settings)[field]
    if typing.get_origin(hint) is typing.Literal and "choices" not in kwargs:  # e.g. Literal["text", "json"]
        kwargs["choices"] = typing.get_args(hint)
    srv.add_argument(flag, dest=_dest(flag), default=None, **kwargs)


def _add_serve(sub: Subparsers) -> None:
    from gateway.config import FLAGS

    srv = sub.add_parser(
        "serve",
        help="serve the models of a repository over HTTP",
        description="Serve every model of a repository (V1 and V2 REST, metrics). Every setting is a flag and a "
        "DRIFTGATE_* environment variable (flags win); an unknown DRIFTGATE_* variable is an error.",
    )
    for field, flag in FLAGS.items():
        _setting_flag(srv, field, flag)
    srv.set_defaults(handler=cmd_serve)


def _add_where(command: argparse.ArgumentParser) -> None:
    """``--repository`` or ``--url``: a local repository folder, or a running server."""
    where = command.add_mutually_exclusive_group()
    where.add_argument("--repository", help="local repository folder (default: ./models; DRIFTGATE_REPOSITORY)")
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")


def _add_register(sub: Subparsers) -> None:
    reg = sub.add_parser(
        "register",
        help="register a model version (into a repository, or on a running server)",
        description="Check an ONNX model against its feature spec, load and warm it, then add it as a new version. "
        "Refused, changing nothing, if the model does not fit the spec.",
    )
    reg.add_argument("name", help="model name (letters, digits, '_' and '-')")
    reg.add_argument("--model", type=Path, required=True, help="the ONNX file")
    reg.add_argument("--spec", type=Path, required=True, help="its feature spec (.yaml or .json)")
    reg.add_argument("--version", help="version number (default: one above the highest)")
    _add_where(reg)
    reg.add_argument("--token", help="admin token for --url (default: DRIFTGATE_ADMIN_TOKEN)")
    reg.add_argument(
        "--data",
        type=Path,
        metavar="HOLDOUT",
        help="labelled held-out rows (.csv, .tsv, .parquet, .json, .jsonl with the spec's target column): "
        "the model's figures and output baseline on them are stored with the version",
    )
    trial = reg.add_mutually_exclusive_group()
    trial.add_argument("--shadow", action="store_true", help="make it the rollout's shadow candidate, not the primary")
    trial.add_argument("--canary", type=float, metavar="P", help="make it a canary answering P percent of requests, not the primary")
    reg.set_defaults(handler=cmd_register)


def _add_evaluate(sub: Subparsers) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="score a model on labelled data, beside the served version",
        description="Score a candidate model on labelled rows through its spec, as the server would run them: "
        "accuracy, macro F1, log loss, ROC AUC (two classes) or MAE, RMSE, R², and the rows its spec refuses. "
        "With --against, the served version is scored on the same rows. Exit 1 when --require-better does not hold.",
    )
    ev.add_argument("data", type=Path, help="labelled rows (.csv, .tsv, .parquet, .json, .jsonl) holding the spec's target column")
    ev.add_argument("--model", type=Path, required=True, help="the candidate ONNX file")
    ev.add_argument("--spec", type=Path, required=True, help="its feature spec (.yaml or .json)")
    ev.add_argument("--against", metavar="NAME", help="compare with the served version of this model")
    _add_where(ev)
    ev.add_argument("--token", help="admin token for --url, to read the served model (default: DRIFTGATE_ADMIN_TOKEN)")
    ev.add_argument(
        "--require-better",
        metavar="METRIC",
        help="exit 1 unless the candidate beats the served version on METRIC (accuracy, macro_f1, log_loss, roc_auc; mae, rmse, r2)",
    )
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(handler=cmd_evaluate)


def _add_models(sub: Subparsers) -> None:
    mod = sub.add_parser(
        "models",
        help="list registered models (locally or on a running server)",
        description="List the models of a repository, or those a running server serves.",
    )
    _add_where(mod)
    mod.add_argument("--json", action="store_true", help="print JSON")
    mod.set_defaults(handler=cmd_models)


def _add_export(sub: Subparsers) -> None:
    exp = sub.add_parser(
        "export",
        help="write a model's logged predictions, joined with their feedback, as training data",
        description="One row per logged prediction (from 'serve --log-dir'): the spec's features, the target "
        "from feedback (named as the spec's output), then id, version and prediction. CSV or JSON Lines by the "
        "output's extension. To fit a spec or train on it, leave out id, version and prediction "
        "(fit-spec --exclude id --exclude version --exclude prediction).",
    )
    exp.add_argument("name", help="the model")
    exp.add_argument("--log-dir", metavar="DIR", help="the prediction log folder (default: DRIFTGATE_LOG_DIR)")
    exp.add_argument("--since", metavar="T", help="predictions at or after T (ISO 8601, UTC unless it says, e.g. 2026-12-08T14:00)")
    exp.add_argument("--until", metavar="T", help="predictions before T (ISO 8601)")
    exp.add_argument("--version", type=_positive_int, help="only this version's predictions (and its spec's columns)")
    exp.add_argument("--labelled", action="store_true", help="only predictions that got feedback")
    exp.add_argument("-o", "--output", type=Path, required=True, help="file to write: .csv or .jsonl")
    _add_progress(exp)
    exp.set_defaults(handler=cmd_export)


def _add_spec_schema(sub: Subparsers) -> None:
    schema = sub.add_parser(
        "spec-schema",
        help="print the JSON Schema of feature spec files",
        description="Print the JSON Schema that feature spec files follow (for editors and CI).",
    )
    schema.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    schema.set_defaults(handler=cmd_spec_schema)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except GatewayError as exc:
        return _fail(str(exc), exit_code_for(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
