"""The rollout comparison: the primary and the candidate side by side, and the automatic rollback.

Everything is read from the two versions' ``MetricsView`` (with several workers, the
fleet's sums, as ``/metrics`` reads them), so ``GET /v1/models/{name}/rollout``,
``driftgate rollout NAME status``, the monitor page and the alert rules all say the same:

- per version: rows predicted and rejected, the rejection rate, failures (the model failed
  or answered NaN), mean confidence (classifiers), the online accuracy or MAE over the
  feedback each version's own answers got, and the time spent per predicted row (guards, transform, inference, monitoring: the
  shadow predicts in batches, so per row is what compares);
- for a shadow candidate: its rows by outcome (compared, rejected, dropped, failed), the
  agreement with the primary, the violations its spec found by feature and reason, and
  the feedback of the rows both versions predicted, scored for each (``paired``).

``check_rollbacks`` (run by the repository watcher of one worker per fleet) takes a
candidate out when the rollout asks for it (``auto_rollback``) and the candidate is worse
than the primary by more than the margin, after enough rows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.errors import GatewayError
from gateway.violations import REASONS

if TYPE_CHECKING:
    from gateway.lifecycle import Gateway
    from gateway.monitoring.feedback import FeedbackWindow
    from gateway.monitoring.metrics import MetricsView
    from gateway.registry import LoadedModel
    from gateway.rollout import Rollout

__all__ = ["check_rollbacks", "compare", "status_table", "version_figures"]

log = logging.getLogger("driftgate.rollout")


def _rate(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _online(window: FeedbackWindow, classification: bool) -> dict[str, Any]:
    if classification:
        return {"rows": window.rows, "accuracy": window.accuracy()}
    return {"rows": window.rows, "mae": window.mae()}


def version_figures(view: MetricsView) -> dict[str, Any]:
    """What ``status`` shows of one version."""
    predicted, rejected = int(view.rows["predicted"]), int(view.rows["rejected"])
    shadow = view.state.shadow
    failed = int(view.confidence.nonfinite) + int(view.values.nonfinite) + int(shadow["failed"])
    confidence = view.confidence
    n_conf = int(confidence.counts.sum())
    seconds = sum(h.total for h in view.stages.values())  # every stage of every predicted batch
    return {
        "version": view.version,
        "rows": predicted + rejected,
        "predicted": predicted,
        "rejected": rejected,
        "rejection_rate": _rate(rejected, predicted + rejected),
        "failed": failed,
        "failure_rate": _rate(failed, predicted + rejected + failed),
        "mean_confidence": confidence.total / n_conf if view.classification and n_conf else None,
        "feedback": _online(view.feedback, view.classification),
        "latency_ms_per_row": seconds * 1000 / predicted if predicted else None,
    }


def _shadow_figures(view: MetricsView) -> dict[str, Any]:
    shadow = view.state.shadow
    refused = {
        f"{view.features[i] if i < len(view.features) else '_unknown'}/{REASONS[j]}": int(view.violations[i, j])
        for i, j in zip(*np.nonzero(view.violations), strict=True)
    }
    paired_primary = type(view.feedback).of(view.state.paired_primary)
    paired_candidate = type(view.feedback).of(view.state.paired_candidate)
    return {
        "rows": {k: int(shadow[k]) for k in ("compared", "rejected", "dropped", "failed")},
        "agreement": _rate(shadow["agreed"], shadow["compared"]),
        "violations": refused,
        "paired_feedback": {
            "rows": paired_candidate.rows,
            "primary": _online(paired_primary, view.classification),
            "candidate": _online(paired_candidate, view.classification),
        },
    }


def compare(gateway: Gateway, name: str) -> dict[str, Any]:
    """The state of ``name``'s rollout and the comparison (the body of ``GET .../rollout``)."""
    registry = gateway.model_registry
    state = gateway.rollouts.states.get(name)
    default = registry.get(name)  # ModelNotFoundError for an unknown model
    primary = _served(gateway, name, state.primary if state is not None else default.version) or default
    body: dict[str, Any] = {
        "model": name,
        "primary": str(primary.version),
        "candidate": None,
        "previous": None,
        "auto_rollback": None,
        "rollbacks": {},
        "last_rollback": None,
        "versions": {str(primary.version): version_figures(primary.metrics.view())},
    }
    if state is None:
        return body
    body["previous"] = None if state.previous is None else str(state.previous)
    body["rollbacks"] = dict(state.rollbacks)
    if state.auto_rollback is not None:
        body["auto_rollback"] = {"min_rows": state.auto_rollback.min_rows, "margin": state.auto_rollback.margin}
    if state.last_rollback is not None:
        r = state.last_rollback
        body["last_rollback"] = {"version": str(r.version), "reason": r.reason, "detail": r.detail, "at": r.at}
    c = state.candidate
    if c is not None:
        body["candidate"] = {"version": str(c.version), "mode": c.mode, "share": c.share}
        candidate = _served(gateway, name, c.version)
        if candidate is not None:
            view = candidate.metrics.view()
            body["versions"][str(c.version)] = version_figures(view)
            body["shadow"] = _shadow_figures(view)
    return body


def _served(gateway: Gateway, name: str, version: int) -> LoadedModel | None:
    try:
        return gateway.model_registry.get(name, version)
    except GatewayError:
        return None


def worse(state: Rollout, primary: dict[str, Any], candidate: dict[str, Any], classification: bool) -> tuple[str, str] | None:
    """Why the candidate should be taken out (reason, figures in words), or None."""
    rule = state.auto_rollback
    if rule is None:
        return None
    margin = rule.margin
    rows = candidate["rows"] + candidate["failed"]
    if rows >= rule.min_rows:
        p, c = primary["rejection_rate"] or 0.0, candidate["rejection_rate"] or 0.0
        if c > p + margin:
            return "rejection_rate", f"rejection rate {c:.3f} vs the primary's {p:.3f} over {rows} rows (margin {margin})"
        p, c = primary["failure_rate"] or 0.0, candidate["failure_rate"] or 0.0
        if c > p + margin:
            return "failure_rate", f"failure rate {c:.3f} vs the primary's {p:.3f} over {rows} rows (margin {margin})"
    pf, cf = primary["feedback"], candidate["feedback"]
    if cf["rows"] >= rule.min_rows and pf["rows"]:
        if classification and pf["accuracy"] is not None and cf["accuracy"] is not None:
            if cf["accuracy"] < pf["accuracy"] - margin:
                return "feedback", (
                    f"feedback accuracy {cf['accuracy']:.3f} over {cf['rows']} rows vs the primary's "
                    f"{pf['accuracy']:.3f} over {pf['rows']} (margin {margin})"
                )
        elif not classification and pf["mae"] is not None and cf["mae"] is not None and cf["mae"] > pf["mae"] * (1 + margin):
            return "feedback", (
                f"feedback MAE {cf['mae']:.4g} over {cf['rows']} rows vs the primary's "
                f"{pf['mae']:.4g} over {pf['rows']} (margin {margin:.0%})"
            )
    return None


def check_rollbacks(gateway: Gateway) -> None:
    """Take out every candidate its rollout's ``auto_rollback`` rule finds worse than the primary."""
    from gateway.rollout import count_rollback

    for name, state in list(gateway.rollouts.states.items()):
        c = state.candidate
        if c is None or state.auto_rollback is None:
            continue
        primary, candidate = _served(gateway, name, state.primary), _served(gateway, name, c.version)
        if primary is None or candidate is None:
            continue
        try:
            found = worse(
                state,
                version_figures(primary.metrics.view()),
                version_figures(candidate.metrics.view()),
                candidate.metrics.classification,
            )
            if found is None:
                continue
            reason, detail = found
            gateway.rollouts.refresh(name)
            current = gateway.rollouts.states.get(name)
            if current is None or current.candidate != c:
                continue  # changed meanwhile: judge the new state next round
            import msgspec

            gateway.rollouts.write(name, count_rollback(msgspec.structs.replace(current, candidate=None), reason, c.version, detail))
            log.warning("%s: candidate version %d rolled back automatically (%s): %s", name, c.version, reason, detail)
        except Exception:  # never stop the watcher
            log.exception("%s: cannot judge the rollout", name)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _online_text(entry: dict[str, Any] | None) -> str:
    if not entry or not entry.get("rows"):
        return "-"
    if "accuracy" in entry:
        return f"{_number(entry['accuracy'])} ({entry['rows']} rows)"
    return f"MAE {entry['mae']:.4g} ({entry['rows']} rows)"


def status_table(body: dict[str, Any]) -> str:
    """The comparison a person reads at a glance (``GET .../rollout``'s body)."""
    name = body["model"]
    lines = []
    candidate = body.get("candidate")
    head = f"{name}: primary version {body['primary']}"
    if candidate:
        share = "every request" if candidate["share"] >= 1 else f"{candidate['share']:.0%} of requests"
        head += f", candidate version {candidate['version']} in {candidate['mode']} ({share})"
    else:
        head += ", no candidate"
    if body.get("previous"):
        head += f"; rollback restores version {body['previous']}"
    lines.append(head)
    rule = body.get("auto_rollback")
    lines.append(
        f"automatic rollback: after {rule['min_rows']} rows, if worse by more than {rule['margin']}" if rule else "automatic rollback: off"
    )
    versions = body.get("versions", {})
    columns = [("PRIMARY v" + body["primary"], versions.get(body["primary"]))]
    if candidate:
        columns.append(("CANDIDATE v" + candidate["version"], versions.get(candidate["version"])))
    shadow = body.get("shadow") or {}
    paired = shadow.get("paired_feedback") or {}
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, cell: Any) -> None:
        rows.append((label, [cell(figures) if figures else "-" for _, figures in columns]))

    add("rows", lambda f: str(f["rows"]))
    add("rejection rate", lambda f: _percent(f["rejection_rate"]))
    add("failures", lambda f: str(f["failed"]))
    add("mean confidence", lambda f: _number(f["mean_confidence"]))
    add("feedback (own answers)", lambda f: _online_text(f["feedback"]))
    add("latency ms/row", lambda f: _number(f["latency_ms_per_row"], 4))
    if shadow:
        rows.append(("shadow rows compared", ["-", str(shadow["rows"]["compared"])]))
        rows.append(("agreement", ["-", _percent(shadow["agreement"])]))
        rows.append(("refused by its spec", ["-", str(shadow["rows"]["rejected"])]))
        rows.append(("dropped / failed", ["-", f"{shadow['rows']['dropped']} / {shadow['rows']['failed']}"]))
        rows.append(("feedback (same rows)", [_online_text(paired.get("primary")), _online_text(paired.get("candidate"))]))
    header = ("", *(title for title, _ in columns))
    table = [header, *((label, *cells) for label, cells in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    if versions:  # a local status knows the state, not the live figures
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]
    refused = shadow.get("violations") or {}
    if refused:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(refused.items(), key=lambda kv: -kv[1])[:8])
        lines.append(f"violations found by the candidate's spec (feature/reason): {parts}")
    last = body.get("last_rollback")
    if last:
        lines.append(f"last rollback: version {last['version']} ({last['reason']}): {last['detail']}")
    if body.get("rollbacks"):
        lines.append("rollbacks: " + ", ".join(f"{k} {v}" for k, v in sorted(body["rollbacks"].items())))
    return "\n".join(lines)
