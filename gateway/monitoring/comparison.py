"""The rollout comparison: the primary and the candidate side by side, and the automatic rollback.

Everything is read from the two versions' ``MetricsView`` (with several workers, the
fleet's sums, as ``/metrics`` reads them), so ``GET /v1/models/{name}/rollout``,
``driftgate rollout NAME status``, the monitor page and the alert rules all say the same:

- per version: rows predicted and rejected, the rejection rate, failures (the model failed
  or answered NaN), mean confidence (classifiers), the online accuracy or MAE over the
  feedback each version's own answers got, and the mean seconds per request;
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

__all__ = ["check_rollbacks", "compare", "version_figures"]

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
    requests = [int(h.counts.sum()) for h in view.stages.values()]
    seconds = sum(h.total / n for h, n in zip(view.stages.values(), requests, strict=True) if n)
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
        "latency_ms": seconds * 1000 if any(requests) else None,
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
