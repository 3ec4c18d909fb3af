"""The live state of one model version, as a JSON-ready dict and as a small HTML page.

Everything here reads a ``MetricsView`` (``ModelMetrics.view``: with several workers, the
sum of every worker's state, as ``/metrics`` reads it) and computes nothing that the
metrics do not also export, so ``/monitor`` and ``/metrics`` always agree.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gateway.monitoring.drift import MIN_ROWS
from gateway.monitoring.segments import slice_report
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
    feedback["label_drift"] = _label_drift(m)
    confidence_mean = m.confidence.total / max(int(m.confidence.counts.sum()), 1) if m.classification else None
    out: dict[str, Any] = {
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
        "offline": _offline(model),
    }
    history = model.metrics.history
    out["history"] = {"interval_seconds": history.interval, "points": history.export()}
    impact = drift_impact(features, model.metrics.importance)
    if impact is not None:
        out["drift_impact"] = impact
    queue = model.metrics.reviews
    if queue is not None:
        counts = queue.stats().get(model.name, {})
        flags = any(f.on_violation == "flag" for f in spec.features)
        if counts or flags or (spec.output is not None and spec.output.review_threshold is not None):
            answered = counts.get("answered", 0)
            out["reviews"] = {
                "length": counts.get("length", 0),
                "capacity": queue.capacity,
                **{k: counts.get(k, 0) for k in ("queued", "dropped", "answered", "agreed")},
                "agreement": counts.get("agreed", 0) / answered if answered and m.classification else None,
                "labels": list(spec.output.labels) if spec.output is not None else [],
                "rows": queue.list(model.name, REVIEWS_SHOWN),
            }
    if m.slicing.count:
        out["segments"] = segment_findings(
            slice_report(m.slicing, m.segment_state, m.classification),
            overall_accuracy=feedback.get("accuracy"),
            overall_estimated=out["output"]["estimated_accuracy"],
            overall_drift={f["name"]: f["psi"] for f in features},
        )
    return out


def _offline(model: LoadedModel) -> dict[str, Any] | None:
    """The version's figures on held-out rows at registration (``register --data``)."""
    b = model.baseline
    if b is None:
        return None
    return {"rows": b.rows, "scored_rows": b.scored_rows, "data": b.data, "metrics": b.metrics, "calibrated": b.calibration is not None}


def _label_drift(m: Any) -> dict[str, Any] | None:
    """The feedback's truths against the training target's distribution, bin by bin."""
    reference = m.label_reference
    if reference is None:
        return None
    counts = m.feedback.truth_counts()
    total = float(counts.sum())
    return {
        "psi": m.label_drift,
        "status": _status(m.label_drift),
        "reference": reference.source,
        "bins": [
            {"bin": label, "live": (float(c) / total if total else 0.0), "baseline": float(b)}
            for label, c, b in zip(reference.labels, counts.tolist(), reference.shares.tolist(), strict=True)
        ],
    }


def drift_impact(features: list[dict[str, Any]], importance: Any) -> dict[str, Any] | None:
    """The features ranked by importance x PSI, each with an estimate of what its drift costs.

    The estimate: a feature's importance is what the model loses when the feature carries
    no information (its values shuffled); a drift moves a share of the rows' values, the
    total variation distance between live and training bin shares (half the sum of the
    share differences, 0 to 1), away from what the model was trained on. Their product is
    a first-order estimate of the accuracy lost (classifiers) or mean absolute error added
    (regressors), assuming a moved value is worth as little as a shuffled one.
    """
    if importance is None:
        return None
    ranked = []
    for f in features:
        weight = importance.values.get(f["name"])
        if f["psi"] is None or weight is None:
            continue
        weight = max(float(weight), 0.0)  # a shuffle that happened to help is noise, not importance
        moved = 0.5 * sum(abs(b["live"] - b["baseline"]) for b in f["bins"])
        ranked.append(
            {
                "feature": f["name"],
                "psi": f["psi"],
                "importance": weight,
                "score": weight * f["psi"],
                "moved_share": moved,
                "estimated_effect": weight * moved,
                "drifting": f["psi"] > DRIFT_MODERATE,
            }
        )
    ranked.sort(key=lambda e: (-e["score"], e["feature"]))
    return {
        "metric": "accuracy drop" if importance.metric == "accuracy" else "MAE rise",
        "importance_basis": importance.basis,
        "importance_rows": importance.rows,
        "features": ranked,
    }


def _impact_html(impact: dict[str, Any] | None) -> str:
    if impact is None:
        return ""
    rows = "".join(
        f"<tr class='{'major' if e['drifting'] else 'stable'}'><td>{html.escape(e['feature'])}</td><td>{_fmt(e['psi'])}</td>"
        f"<td>{_fmt(e['importance'])}</td><td>{_fmt(e['score'])}</td><td>{_fmt(e['estimated_effect'])}</td></tr>"
        for e in impact["features"]
    )
    return (
        f"<h2>Drift by impact</h2><p><small>Importance: permutation importance on {impact['importance_rows']} "
        f"{html.escape(impact['importance_basis'])}. Estimated effect: {html.escape(impact['metric'])}.</small></p>"
        "<table id='impact'><tr><th>feature</th><th>PSI</th><th>importance</th><th>importance × PSI</th>"
        f"<th>estimated effect</th></tr>{rows}</table>"
    )


_COLOURS = ("#4a7bd0", "#d0624a", "#3c9a5f", "#a05ac8", "#c89a2a", "#2aa0b0", "#777777")


def _chart(title: str, lines: dict[str, list[float | None]], floor: float | None = 0.0, ceiling: float | None = None) -> str:
    """A small inline SVG line chart (no script, no external asset): one polyline per series,
    broken where a point has no value, with the series' last values in the legend."""
    width, height, pad = 320, 90, 4
    values = [v for series in lines.values() for v in series if v is not None]
    if not values:
        return ""
    lo = min(values) if floor is None else min(floor, *values)
    hi = max(values) if ceiling is None else max(ceiling, *values)
    span = hi - lo or 1.0
    count = max(len(series) for series in lines.values())
    step = (width - 2 * pad) / max(count - 1, 1)
    parts, legend = [], []
    for k, (name, series) in enumerate(lines.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        run: list[str] = []
        for i, v in enumerate([*series, None]):
            if v is None:
                if run:
                    points = " ".join(run) if len(run) > 1 else f"{run[0]} {run[0]}"
                    parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{points}'/>")
                run = []
                continue
            y = height - pad - (v - lo) / span * (height - 2 * pad)
            run.append(f"{pad + i * step:.1f},{y:.1f}")
        last = next((v for v in reversed(series) if v is not None), None)
        legend.append(f"<span style='color:{colour}'>■</span> {html.escape(name)} {_fmt(last)}")
    return (
        f"<figure class='trend'><figcaption>{html.escape(title)} <small>({_fmt(lo)} to {_fmt(hi)})</small></figcaption>"
        f"<svg role='img' aria-label='{html.escape(title)}' viewBox='0 0 {width} {height}' width='{width}' height='{height}'>"
        f"<rect width='{width}' height='{height}' fill='#fafafa' stroke='#ddd'/>{''.join(parts)}</svg>"
        f"<br><small>{' · '.join(legend)}</small></figure>"
    )


def _trends_html(points: list[dict[str, Any]], interval: float) -> str:
    if not points:
        return f"<h2>Trends</h2><p>No history yet: a point comes every {interval:g} s.</p>"
    charts = [_chart("Rejection rate", {"rejected": [p["rejection_rate"] for p in points]})]
    if any(p["online_mae"] is not None for p in points):
        charts.append(_chart("Online MAE", {"MAE": [p["online_mae"] for p in points]}))
    else:
        charts.append(
            _chart(
                "Confidence and accuracy",
                {
                    "mean confidence": [p["mean_confidence"] for p in points],
                    "estimated accuracy": [p["estimated_accuracy"] for p in points],
                    "online accuracy": [p["online_accuracy"] for p in points],
                },
                floor=None,
                ceiling=1.0,
            )
        )
    latest = points[-1]["drift"]
    top = sorted(latest, key=lambda name: -(latest[name] or 0.0))[:6]
    charts.append(_chart("Drift (PSI), most drifted features", {f: [p["drift"].get(f) for p in points] for f in top}, ceiling=DRIFT_MAJOR))
    if "segments" in points[-1]:
        keys = list(points[-1]["segments"])
        charts.append(
            _chart(
                "Estimated accuracy per segment value",
                {k: [p.get("segments", {}).get(k, {}).get("estimated_accuracy") for p in points] for k in keys},
                floor=None,
                ceiling=1.0,
            )
        )
        charts.append(
            _chart(
                "Online accuracy per segment value",
                {k: [p.get("segments", {}).get(k, {}).get("online_accuracy") for p in points] for k in keys},
                floor=None,
                ceiling=1.0,
            )
        )
    return f"<h2>Trends</h2><div id='trends'>{''.join(charts)}</div><p><small>{len(points)} points, one every {interval:g} s.</small></p>"


REVIEWS_SHOWN = 20
"""The oldest rows of the review queue that ``/monitor`` and the page show."""

SEGMENT_GAP = 0.15
"""A segment value is named when its online or estimated accuracy is this far below the
model's overall (the shipped alert rules use the same gap)."""
SEGMENT_MIN_FEEDBACK = 50
"""Feedback rows a segment value needs before its online accuracy is compared."""


def segment_findings(
    slices: list[dict[str, Any]],
    overall_accuracy: float | None,
    overall_estimated: float | None,
    overall_drift: dict[str, float | None],
) -> list[dict[str, Any]]:
    """Each slice with ``findings``: why it stands out against the whole model (accuracy or
    confidence well below it, or a feature that drifts within it while the whole does not)."""
    for entry in slices:
        findings: list[str] = []
        accuracy = entry.get("accuracy")
        if (
            accuracy is not None
            and overall_accuracy is not None
            and entry["feedback_rows"] >= SEGMENT_MIN_FEEDBACK
            and accuracy < overall_accuracy - SEGMENT_GAP
        ):
            findings.append(f"online accuracy {accuracy:.3f} against {overall_accuracy:.3f} overall")
        estimated = entry.get("estimated_accuracy")
        if estimated is not None and overall_estimated is not None and estimated < overall_estimated - SEGMENT_GAP:
            findings.append(f"estimated accuracy {estimated:.3f} against {overall_estimated:.3f} overall")
        for feature, value in entry["drift"].items():
            whole = overall_drift.get(feature)
            if value > DRIFT_MAJOR and (whole is None or whole <= DRIFT_MAJOR):
                findings.append(f"{feature} drifted (PSI {value:.2f}) while the whole did not")
        entry["findings"] = findings
    return slices


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.8rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.stable{background:#e6f4ea}.moderate{background:#fff4d6}.major{background:#fde2e1;font-weight:bold}
.bar{display:inline-block;height:.7rem;background:#4a7bd0}.base{background:#aaa}
small{color:#666}
.trend{display:inline-block;margin:.3rem 1rem .6rem 0;vertical-align:top}
figcaption{font-size:.9rem}
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


def _segments_html(slices: list[dict[str, Any]] | None) -> str:
    if not slices:
        return ""
    rows = "".join(
        f"<tr class='{'major' if s['findings'] else 'stable'}'><td>{html.escape(s['segment'])}</td><td>{html.escape(s['value'])}</td>"
        f"<td>{s['predicted']}</td><td>{s['rejected']}</td><td>{_fmt(s['mean_confidence'])}</td><td>{_fmt(s['estimated_accuracy'])}</td>"
        f"<td>{_fmt(s.get('accuracy', s.get('mae')))}</td><td>{s['feedback_rows']}</td>"
        f"<td>{_fmt(max(s['drift'].values(), default=None))}</td>"
        f"<td style='text-align:left'>{html.escape('; '.join(s['findings']) or 'as the whole')}</td></tr>"
        for s in slices
    )
    return (
        "<h2>Segments</h2><table id='segments'><tr><th>segment</th><th>value</th><th>predicted</th><th>rejected</th>"
        "<th>mean confidence</th><th>estimated accuracy</th><th>online accuracy / MAE</th><th>feedback rows</th>"
        f"<th>largest PSI</th><th>finding</th></tr>{rows}</table>"
    )


def _reviews_html(model: str, reviews: dict[str, Any] | None) -> str:
    """The review queue, each row with a form a person answers it with (no script: the
    form posts to ``/v1/models/{name}/reviews/{id}``, which redirects back here)."""
    if reviews is None:
        return ""
    rows = []
    for r in reviews["rows"]:
        action = f"/v1/models/{quote(model)}/reviews/{quote(r['id'])}"
        if reviews["labels"]:
            said = r["prediction"].get("label")  # preselected: agreeing with the model is one click
            options = "".join(
                f"<option{' selected' if label == said else ''}>{html.escape(label)}</option>" for label in reviews["labels"]
            )
            field = f"<select name='label' aria-label='label'>{options}</select>"
        else:
            field = "<input name='value' type='number' step='any' aria-label='value' required>"
        inputs = ", ".join(f"{html.escape(str(k))}={html.escape(str(v))}" for k, v in r["inputs"].items())
        prediction = ", ".join(f"{k} {_fmt(v)}" for k, v in r["prediction"].items())
        rows.append(
            f"<tr data-id='{html.escape(r['id'])}'><td>{html.escape(r['id'])}</td><td style='text-align:left'><small>{inputs}</small></td>"
            f"<td>{prediction}</td><td style='text-align:left'>{html.escape('; '.join(r['why']))}</td>"
            f"<td><form method='post' action='{html.escape(action)}'>{field} <button type='submit'>Record</button></form></td></tr>"
        )
    table = (
        "<table id='reviews'><tr><th>id</th><th>inputs</th><th>prediction</th><th>why</th><th>answer</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>No row waits for review.</p>"
    )
    return (
        f"<h2>Review queue</h2><p>{reviews['length']} rows waiting (at most {reviews['capacity']}; {reviews['dropped']} dropped when full); "
        f"{reviews['answered']} answered, person and model agreed on {_fmt(reviews['agreement'])}.</p>{table}"
    )


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
{_trends_html(snap["history"]["points"], snap["history"]["interval_seconds"])}
<h2>Input drift</h2>
<table id="drift"><tr><th>feature</th><th>type</th><th>PSI</th><th>KS / JS</th><th>unseen</th><th>missing</th><th>status</th></tr>{drift_rows}</table>
<h2>Output against baseline</h2>
<p>Mean confidence {_fmt(snap["output"].get("mean_confidence"))}; estimated accuracy (CBPE) {_fmt(snap["output"].get("estimated_accuracy"))}.</p>
{outputs}
<h2>Rejections</h2>
<table><tr><th>reason</th><th>violations</th></tr>{reasons or "<tr><td>none</td><td>0</td></tr>"}</table>
<table><tr><th>feature</th><th>violations</th></tr>{by_feature or "<tr><td>none</td><td>0</td></tr>"}</table>
{_impact_html(snap.get("drift_impact"))}
{_segments_html(snap.get("segments"))}
{_reviews_html(snap["model"], snap.get("reviews"))}
<h2>Online accuracy from feedback</h2>
<p>{online} over {fb["window_rows"]} rows; matched {fb["matched"]}, unknown ids {fb["unknown_id"]}, expired {fb["expired"]}, invalid {fb["invalid"]}.</p>
{_label_drift_html(fb.get("label_drift"))}
{_offline_html(snap.get("offline"))}
{_rollout(snap.get("rollout"))}
</body></html>
"""


def _label_drift_html(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return ""
    return (
        f"<h3 id='label-drift'>Label drift <small>PSI {_fmt(entry['psi'])} ({html.escape(entry['status'])}) "
        f"against the {html.escape(entry['reference'])} target</small></h3>{_dist_table(entry)}"
    )


def _offline_html(offline: dict[str, Any] | None) -> str:
    if offline is None:
        return "<h2>Offline evaluation</h2><p>No held-out figures: registered without <code>--data</code>.</p>"
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v, 4)}</td></tr>" for k, v in offline["metrics"].items())
    return (
        f"<h2>Offline evaluation</h2><p>At registration, on {offline['scored_rows']} of {offline['rows']} held-out rows"
        f" of {html.escape(offline['data'] or 'the held-out file')}"
        f"{'; the accuracy estimate is calibrated on them' if offline['calibrated'] else ''}.</p>"
        f"<table id='offline'><tr><th>metric</th><th>offline</th></tr>{rows}</table>"
    )
