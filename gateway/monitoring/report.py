"""The live state of one model version, as a JSON-ready dict and as a small HTML page.

Everything here reads a ``MetricsView`` (``ModelMetrics.view``: with several workers, the
sum of every worker's state, as ``/metrics`` reads it) and computes nothing that the
metrics do not also export, so ``/monitor`` and ``/metrics`` always agree.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from gateway.monitoring.drift import MIN_ROWS
from gateway.violations import REASONS

if TYPE_CHECKING:
    from gateway.registry import LoadedModel

__all__ = ["DRIFT_MAJOR", "DRIFT_MODERATE", "render_html", "snapshot"]

DRIFT_MODERATE = 0.1
DRIFT_MAJOR = 0.25
"""PSI rules of thumb (Siddiqi, *Credit Risk Scorecards*, 2006): below 0.1 no significant
shift, 0.1 to 0.25 moderate, above 0.25 major. The shipped alert fires above 0.25."""


def _status(psi: float | None) -> str:
    if psi is None:
        return "warming up"
    return "major" if psi > DRIFT_MAJOR else "moderate" if psi > DRIFT_MODERATE else "stable"


def snapshot(model: LoadedModel) -> dict[str, Any]:
    """Drift per feature, output against baseline, rejections and online accuracy."""
    m = model.metrics.view()
    spec = model.spec
    window = m.drift
    stats = m.statistics
    predicted, rejected = m.rows["predicted"], m.rows["rejected"]
    by_reason = {reason: int(m.violations[:, i].sum()) for i, reason in enumerate(REASONS) if m.violations[:, i].any()}
    by_feature = {
        (m.features[i] if i < len(m.features) else "_unknown"): int(m.violations[i].sum())
        for i in range(m.violations.shape[0])
        if m.violations[i].any()
    }
    features = []
    outputs: dict[str, Any] = {}
    for segment in window.segments:
        live = m.live_counts(segment)
        total = int(live.sum())
        seg = stats.get(segment.name, {})
        entry: dict[str, Any] = {
            "name": segment.name.lstrip("_") if segment.name.startswith("_") else segment.name,
            "psi": seg.get("psi"),
            "status": _status(seg.get("psi")),
            "bins": [
                {"bin": label, "live": (int(c) / total if total else 0.0), "baseline": float(b)}
                for label, c, b in zip(segment.labels, live.tolist(), segment.baseline.tolist(), strict=True)
            ],
        }
        for key in ("ks", "js", "unseen_share", "missing_share"):
            if key in seg:
                entry[key] = seg[key]
        if segment.name.startswith("_"):
            outputs[segment.name[1:]] = entry
        else:
            entry["type"] = segment.kind
            features.append(entry)
    feedback: dict[str, Any] = {"window_rows": m.feedback.rows, **m.feedback_counts}
    if m.classification:
        feedback["accuracy"] = m.feedback.accuracy()
    else:
        feedback["mae"] = m.feedback.mae()
        feedback["rmse"] = m.feedback.rmse()
    confidence_mean = m.confidence.total / max(int(m.confidence.counts.sum()), 1) if m.classification else None
    out = {
        "model": model.name,
        "version": str(model.version),
        "spec_digest": spec.digest,
        "task": spec.output.task if spec.output else None,
        "window": {
            "rows": m.drift_rows,
            "size_rows": window.window_rows,
            "size_seconds": window.window_seconds,
            "min_rows": MIN_ROWS,
        },
        "rows": {
            "predicted": predicted,
            "rejected": rejected,
            "flagged": m.flagged_rows,
            "clipped": m.clipped_rows,
            "review": m.review_rows,
            "rejection_rate": rejected / (predicted + rejected) if predicted + rejected else 0.0,
        },
        "rejections": {"by_reason": by_reason, "by_feature": by_feature},
        "features": features,
        "output": {
            **outputs,
            "mean_confidence": confidence_mean,
            "estimated_accuracy": m.estimated_accuracy if m.classification else None,
        },
        "feedback": feedback,
    }
    return out


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.8rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.stable{background:#e6f4ea}.moderate{background:#fff4d6}.major{background:#fde2e1;font-weight:bold}
.bar{display:inline-block;height:.7rem;background:#4a7bd0}.base{background:#aaa}
small{color:#666}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _dist_table(entry: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(b['bin'])}</td><td>{b['live']:.3f}</td><td>{b['baseline']:.3f}</td>"
        f"<td style='text-align:left'><span class='bar' style='width:{b['live'] * 12:.2f}rem'></span><br>"
        f"<span class='bar base' style='width:{b['baseline'] * 12:.2f}rem'></span></td></tr>"
        for b in entry["bins"]
    )
    return f"<table><tr><th>bin</th><th>live</th><th>baseline</th><th>live / baseline</th></tr>{rows}</table>"


def _rollout(comparison: dict[str, Any] | None) -> str:
    """The rollout section: the primary and the candidate side by side, as ``rollout status``."""
    if comparison is None:
        return ""
    from gateway.monitoring.comparison import status_table

    return f"<h2>Rollout</h2>\n<pre id='rollout'>{html.escape(status_table(comparison))}</pre>"


def render_html(snap: dict[str, Any]) -> str:
    """A self-contained page (no scripts, no external assets) of a ``snapshot``."""
    name = html.escape(snap["model"])
    rows = snap["rows"]
    drift_rows = "".join(
        f"<tr class='{f['status'].replace(' ', '-')}'><td>{html.escape(f['name'])}</td><td>{html.escape(f['type'])}</td>"
        f"<td>{_fmt(f['psi'])}</td><td>{_fmt(f.get('ks', f.get('js')))}</td>"
        f"<td>{_fmt(f.get('unseen_share'))}</td><td>{_fmt(f.get('missing_share'))}</td><td>{html.escape(f['status'])}</td></tr>"
        for f in snap["features"]
    )
    outputs = "".join(
        f"<h3>{html.escape(key)} <small>PSI {_fmt(entry['psi'])} ({html.escape(entry['status'])})</small></h3>{_dist_table(entry)}"
        for key, entry in snap["output"].items()
        if isinstance(entry, dict)
    )
    reasons = "".join(
        f"<tr><td>{html.escape(r)}</td><td>{c}</td></tr>" for r, c in snap["rejections"]["by_reason"].items()
    )
    by_feature = "".join(
        f"<tr><td>{html.escape(f)}</td><td>{c}</td></tr>" for f, c in snap["rejections"]["by_feature"].items()
    )
    fb = snap["feedback"]
    online = (
        f"accuracy {_fmt(fb.get('accuracy'))}"
        if "accuracy" in fb
        else f"MAE {_fmt(fb.get('mae'))}, RMSE {_fmt(fb.get('rmse'))}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>driftgate: {name}</title><style>{_CSS}</style></head><body>
<h1>{name} <small>version {html.escape(snap["version"])} · {html.escape(snap["task"] or "")} · {html.escape(snap["spec_digest"][:19])}</small></h1>
<p>Live window: {snap["window"]["rows"]} rows (statistics from {snap["window"]["min_rows"]} rows).
Predicted {rows["predicted"]} rows, rejected {rows["rejected"]} (rate {rows["rejection_rate"]:.3f}),
flagged {rows["flagged"]}, clipped {rows["clipped"]}, sent for review {rows["review"]}.</p>
<h2>Input drift</h2>
<table id="drift"><tr><th>feature</th><th>type</th><th>PSI</th><th>KS / JS</th><th>unseen</th><th>missing</th><th>status</th></tr>{drift_rows}</table>
<h2>Output against baseline</h2>
<p>Mean confidence {_fmt(snap["output"].get("mean_confidence"))}; estimated accuracy (CBPE) {_fmt(snap["output"].get("estimated_accuracy"))}.</p>
{outputs}
<h2>Rejections</h2>
<table><tr><th>reason</th><th>violations</th></tr>{reasons or "<tr><td>none</td><td>0</td></tr>"}</table>
<table><tr><th>feature</th><th>violations</th></tr>{by_feature or "<tr><td>none</td><td>0</td></tr>"}</table>
<h2>Online accuracy from feedback</h2>
<p>{online} over {fb["window_rows"]} rows; matched {fb["matched"]}, unknown ids {fb["unknown_id"]}, expired {fb["expired"]}, invalid {fb["invalid"]}.</p>
{_rollout(snap.get("rollout"))}
</body></html>
"""
