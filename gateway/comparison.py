"""``driftgate evaluate``: a candidate model beside the served version, on labelled rows.

The candidate (``--model`` and ``--spec`` files) and the served version (``--against NAME``,
read from a repository folder or from a running server) are each loaded as the server
loads a version (trial load in a contained child, signature check, warm-up:
``gateway.registry.load_runtime``) and scored through their own spec
(``gateway.evaluation``). Each spec may refuse different rows; the figures side by side are
computed on the rows both accept and that carry a known target, so neither looks better
for refusing the hard ones. Each side's refusals are listed on their own.

The served version of a repository is its rollout primary when ``<name>/rollout.yaml``
names one, else its highest version. On a server (``--url``) it is the version that
answers unpinned requests (``GET /v1/models/{name}``); its files come from the admin
endpoint ``GET /v1/models/{name}/versions/{v}`` (admin token), because a model file is its
owner's property.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import msgspec

from gateway.errors import ModelNotFoundError, UsageError
from gateway.evaluation import HIGHER_IS_BETTER, METRICS, Evaluation, evaluate, read_labelled
from gateway.files import read_input
from gateway.registry import load_runtime
from gateway.repository import ModelRepository, check_name
from gateway.spec import decode_spec

__all__ = ["compare", "render_text", "run_evaluate"]


def _side(result: Evaluation) -> dict[str, Any]:
    return {
        "scored_rows": int(result.scored.sum()),
        "refused_rows": int((~result.accepted).sum()),
        "unlabelled_rows": int((~result.labelled).sum()),
        "refusals": [{"feature": f, "reason": r, "rows": n} for f, r, n in result.refusal_lines()],
        "metrics": result.metrics(),
    }


def compare(candidate: Evaluation, against: Evaluation | None, require_better: str | None) -> dict[str, Any]:
    """The report (JSON-ready): each side's own figures and refusals, the figures side by
    side on the rows both score, and the verdict of ``require_better``."""
    report: dict[str, Any] = {"rows": candidate.rows, "task": candidate.task, "candidate": _side(candidate), "against": None}
    metric_names = METRICS[candidate.task]
    if require_better is not None:
        if require_better not in metric_names:
            raise UsageError(f"--require-better takes one of {', '.join(metric_names)} for a {candidate.task}, not {require_better!r}")
        if against is None:
            raise UsageError("--require-better needs --against NAME: the served version to beat")
    if against is None:
        report["require_better"] = None
        return report
    if against.task != candidate.task:
        raise UsageError(f"the candidate is a {candidate.task} and the served version a {against.task}: they cannot be compared")
    report["against"] = _side(against)
    common = candidate.scored & against.scored
    mine, theirs = candidate.metrics(common), against.metrics(common)
    report["common_rows"] = int(common.sum())
    report["comparison"] = {
        name: {"candidate": mine[name], "against": theirs[name], "better": _better(name, mine[name], theirs[name])}
        for name in metric_names
        if name in mine and name in theirs
    }
    verdict = None
    if require_better is not None:
        row = report["comparison"].get(require_better)
        if row is None:
            raise UsageError(f"{require_better} cannot be computed on these rows (e.g. ROC AUC needs both classes), so it cannot gate")
        verdict = {"metric": require_better, "candidate": row["candidate"], "against": row["against"], "passed": row["better"]}
    report["require_better"] = verdict
    return report


def _better(name: str, mine: float, theirs: float) -> bool:
    return mine > theirs if name in HIGHER_IS_BETTER else mine < theirs


def _served_version(repository: ModelRepository, name: str) -> int:
    versions = repository.versions(name)
    if not versions:
        raise ModelNotFoundError(f"no model named {name[:80]!r} in the repository {repository.root}")
    try:  # the rollout primary, when the repository records one
        state = msgspec.yaml.decode((repository.root / name / "rollout.yaml").read_bytes())
        primary = int(state["primary"]) if isinstance(state, dict) else None
    except (OSError, msgspec.DecodeError, KeyError, TypeError, ValueError):
        primary = None
    return primary if primary in versions else versions[-1]


def _load_against(args: Any) -> tuple[str, bytes, bytes]:
    """(label, model bytes, spec text) of the served version ``--against`` names."""
    name = check_name(args.against)
    if args.url:
        from gateway.client import fetch_version

        token = args.token or os.environ.get("DRIFTGATE_ADMIN_TOKEN")
        found = fetch_version(args.url, token, name)
        return f"{name} v{found['version']}", base64.b64decode(found["model"]), str(found["spec"]).encode()
    repository = ModelRepository(args.repository or os.environ.get("DRIFTGATE_REPOSITORY", "models"))
    version = _served_version(repository, name)
    entry = next(e for e in repository.scan() if e.key == (name, version))
    return f"{name} v{version}", entry.read_model(), entry.read_spec()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_text(report: dict[str, Any], candidate_label: str, against_label: str | None) -> str:
    """The report for a person: who refused what, then the figures side by side."""
    lines = [f"{report['rows']:,} labelled rows ({report['task']})"]
    sides = [("candidate", candidate_label), *([("against", against_label)] if report["against"] else [])]
    for key, label in sides:
        side = report[key]
        lines.append(
            f"{label}: scored {side['scored_rows']:,}, refused {side['refused_rows']:,} by its spec"
            + (f", {side['unlabelled_rows']:,} without a known target" if side["unlabelled_rows"] else "")
        )
    if report["against"] is None:
        width = max(len(m) for m in report["candidate"]["metrics"]) if report["candidate"]["metrics"] else 6
        lines += ["", f"{'metric':<{width}}  {candidate_label}"]
        lines += [f"{m:<{width}}  {_fmt(v)}" for m, v in report["candidate"]["metrics"].items()]
    else:
        assert against_label is not None
        lines += ["", f"on the {report['common_rows']:,} rows both accept:"]
        a, b = max(len(candidate_label), 9), max(len(against_label), 9)
        lines.append(f"{'metric':<9}  {candidate_label:>{a}}  {against_label:>{b}}  change")
        for m, row in report["comparison"].items():
            delta = row["candidate"] - row["against"]
            word = "better" if row["better"] else "worse" if delta else "same"
            lines.append(f"{m:<9}  {_fmt(row['candidate']):>{a}}  {_fmt(row['against']):>{b}}  {delta:+.4f} {word}")
    for key, label in sides:
        refusals = report[key]["refusals"]
        if refusals:
            lines += ["", f"rows {label}'s spec refuses:"]
            lines += [f"  {r['feature']}: {r['reason']}: {r['rows']:,} rows" for r in refusals]
    verdict = report.get("require_better")
    if verdict is not None:
        outcome = "holds" if verdict["passed"] else "does NOT hold"
        lines += ["", f"--require-better {verdict['metric']}: {outcome} ({_fmt(verdict['candidate'])} against {_fmt(verdict['against'])})"]
    return "\n".join(lines)


def run_evaluate(args: Any) -> tuple[dict[str, Any], str]:
    """``driftgate evaluate``: the report and its text. Raises ``GatewayError`` (one line)
    on bad input: a data file without the target, a model that does not fit its spec, an
    unknown served model."""
    model = read_input(args.model, "model file")
    spec_text = read_input(args.spec, "spec file")
    spec = decode_spec(spec_text, "json" if Path(args.spec).suffix.lower() == ".json" else "yaml", source=str(args.spec))
    data = read_labelled(args.data, spec)  # bad data fails before any model is loaded
    spec, runtime = load_runtime("candidate", 1, model, spec_text)
    candidate = evaluate(spec, runtime, data)
    against = against_label = None
    if args.against:
        against_label, their_model, their_spec_text = _load_against(args)
        their_spec, their_runtime = load_runtime(args.against, 1, their_model, their_spec_text)
        their_data = data if their_spec.digest == spec.digest else read_labelled(args.data, their_spec)
        against = evaluate(their_spec, their_runtime, their_data)
    if against is not None and against.rows != candidate.rows:  # pragma: no cover - same file, same rows
        raise UsageError("the data file read differently for the two specs")
    report = compare(candidate, against, args.require_better)
    report["candidate"]["model"] = str(args.model)
    report["candidate"]["spec_digest"] = spec.digest
    if against is not None:
        report["against"]["version"] = against_label
    label = Path(args.model).name
    return report, render_text(report, label, against_label)

