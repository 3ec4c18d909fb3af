"""The Grafana dashboard (``deploy/grafana/driftgate.json``) asks only for series that exist.

The reference is what a gateway really exports: an in-process ``Gateway`` on the bundled
models, after predictions (a classifier and a regressor), a rejected batch and feedback,
scraped with ``prometheus_client.generate_latest`` at the default ``--metrics-detail``;
plus the recording rules of ``deploy/prometheus/rules.yml``. Every metric a panel names must
be one of those, every label it matches on must be a label of that metric, and every
literal label value it matches exactly must occur. A panel whose description says it
needs ``--metrics-detail detailed`` is checked against that level's export instead.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_settings
from gateway.errors import InputRejectedError
from gateway.fitting import fit_segments
from gateway.lifecycle import Gateway
from gateway.rollout import Candidate, Rollout
from gateway.service import FeedbackItem, predict, record_feedback
from gateway.spec import load_spec
from gateway.shadow import ShadowJob
from gateway.table import to_columns

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "driftgate.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"

PENGUIN = {"island": "Biscoe", "bill_length_mm": 45.2, "bill_depth_mm": 15.1, "flipper_length_mm": 215.0, "body_mass_g": 5100.0, "sex": "male", "year": 2008}
DIABETES = {"age": 0.02, "sex": 0.05, "bmi": 0.06, "bp": 0.02, "s1": -0.04, "s2": -0.03, "s3": -0.04, "s4": -0.002, "s5": 0.02, "s6": -0.02}

PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile", "histogram_count",
    "histogram_sum", "histogram_fraction", "holt_winters", "hour", "idelta", "increase", "irate", "label_join",
    "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round",
    "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year", "avg_over_time",
    "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time", "label_values", "inf", "nan",
}  # fmt: skip


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [
        (f"panel {p['title']!r} {t.get('refId')}", t["expr"])
        for p in all_panels(dashboard["panels"])
        for t in p.get("targets", [])
    ]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            series, _ = label_values(var)
            found.append((f"variable {var['name']!r}", series))
    return found


def label_values(var: dict[str, Any]) -> tuple[str, str]:
    """(series selector, label) of a ``label_values(selector, label)`` variable."""
    query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert match, f"variable {var['name']!r}: expected label_values(series, label), got {query!r}"
    return match.group(1), match.group(2)


OPT_IN = "Needs --metrics-detail detailed"


def opt_in_panels(dashboard: dict[str, Any]) -> set[str]:
    """The titles of panels that read series only ``--metrics-detail detailed`` exports."""
    return {p["title"] for p in all_panels(dashboard["panels"]) if OPT_IN in p.get("description", "")}


def _samples(text: str) -> dict[str, dict[str, set[str]]]:
    samples: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = samples.setdefault(s.name, {})
            for key, value in s.labels.items():
                labels.setdefault(key, set()).add(value)
    return samples


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict[str, set[str]]]]:
    """Level -> sample name -> label name -> values, as a gateway with some traffic exports them
    (penguins version 2, the default, is version 1 with ``segments: [island]``)."""
    import palmerpenguins

    repository = tmp_path_factory.mktemp("grafana") / "models"
    shutil.copytree(ROOT / "models", repository)
    shutil.copytree(repository / "penguins" / "1", repository / "penguins" / "2")
    fit_segments(load_spec(repository / "penguins" / "1" / "spec.yaml"), palmerpenguins.load_penguins(), ["island"]).save(
        repository / "penguins" / "2" / "spec.yaml"
    )
    gateway = Gateway(load_settings({}, repository=str(repository)))
    gateway.scan()
    gateway.loaded.set()
    penguins = gateway.model_registry.get("penguins")
    diabetes = gateway.model_registry.get("diabetes")
    rows = [{**PENGUIN, "body_mass_g": 3000.0 + 7 * i, "island": ("Biscoe", "Dream", "Torgersen")[i % 3]} for i in range(330)]  # 110 a segment value: its drift is computed
    outcome = predict(penguins, to_columns(rows, penguins.spec.feature_names), gateway.predictions)
    predict(penguins, to_columns([PENGUIN], penguins.spec.feature_names), gateway.predictions)
    with pytest.raises(InputRejectedError):
        predict(penguins, to_columns([{**PENGUIN, "year": 2031, "colour": "x"}], penguins.spec.feature_names), gateway.predictions)
    regression = predict(diabetes, to_columns([DIABETES] * 3, diabetes.spec.feature_names), gateway.predictions)
    record_feedback(gateway.model_registry, gateway.predictions, "penguins", [FeedbackItem(id=i, label="Gentoo") for i in outcome.ids[:10]])
    record_feedback(gateway.model_registry, gateway.predictions, "diabetes", [FeedbackItem(id=i, value=150.0) for i in regression.ids])
    for reason in ("ok", "overloaded", "timeout"):  # counted by the HTTP layer, which this skips
        gateway.requests.add("penguins", reason)
    # a rollout: a shadow candidate whose rows are compared, refused and dropped, and a rollback
    gateway.rollouts.states = {"penguins": Rollout(primary=1, candidate=Candidate(version=1, mode="shadow"), rollbacks={"feedback": 1})}
    gateway.shadow.process([ShadowJob.of(penguins, penguins, to_columns(rows, penguins.spec.feature_names), outcome)])
    gateway.shadow.process([ShadowJob.of(penguins, penguins, to_columns([{**PENGUIN, "year": 2031}], penguins.spec.feature_names), outcome)])
    penguins.metrics.shadow.counts["dropped"] += 1
    out = {"standard": _samples(generate_latest(gateway.metrics_registry).decode())}
    gateway.collector.detail = {"*": "detailed"}
    out["detailed"] = _samples(generate_latest(gateway.metrics_registry).decode())
    return out


@pytest.fixture(scope="module")
def exported(exports: dict[str, dict[str, dict[str, set[str]]]]) -> dict[str, dict[str, set[str]]]:
    """What the default export holds."""
    return exports["standard"]


TARGET_LABELS = frozenset({"namespace", "job", "pod", "instance"})
"""Labels Prometheus adds to every sample of a target (Kubernetes service discovery)."""


def reference(
    where: str, dashboard: dict[str, Any], exports: dict[str, dict[str, dict[str, set[str]]]]
) -> dict[str, dict[str, set[str]]]:
    """The export a query is checked against: the default one, unless its panel opts in."""
    opted = any(where.startswith(f"panel {title!r} ") for title in opt_in_panels(dashboard))
    return exports["detailed" if opted else "standard"]


@pytest.fixture(scope="module")
def recorded() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    return {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (grouping labels, functions, label
    matchers, durations and Grafana variables left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations, including [$__rate_interval]
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    names = set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", text))
    return names - PROMQL_WORDS


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, [(label, operator, value)]) of every ``metric{...}`` selector."""
    out = []
    for name, body in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", expr):
        matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', body)
        out.append((name, matchers))
    return out


def test_metric_name_extraction() -> None:
    expr = 'histogram_quantile(0.99, sum by (stage, le) (rate(driftgate_request_seconds_bucket{model=~"$model", stage!="x"}[$__rate_interval]))) / on (model) group_left () (driftgate:rejection_ratio:rate5m > 0.5)'
    assert metric_names(expr) == {"driftgate_request_seconds_bucket", "driftgate:rejection_ratio:rate5m"}
    assert selectors('a{x="1", y=~"$v"} + b') == [("a", [("x", "=", "1"), ("y", "=~", "$v")])]


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["title"] and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("model", "version"):
        var = variables[name]
        assert var["type"] == "query" and var["datasource"]["uid"] == "${datasource}"
        series, label = label_values(var)
        assert label == name and metric_names(series) == {"driftgate_rows_total"}, (series, label)
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names.index("namespace") < names.index("job") < names.index("pod") < names.index("model")
    for name in ("namespace", "job", "pod"):
        assert label_values(variables[name])[1] == name
    panels = list(all_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert t["expr"].count("(") == t["expr"].count(")") and t["expr"].count("{") == t["expr"].count("}"), t["expr"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_every_query_names_only_exported_metrics_or_recording_rules(
    dashboard: dict[str, Any], exports: dict[str, dict[str, dict[str, set[str]]]], recorded: set[str]
) -> None:
    unknown = {
        where: sorted(metric_names(expr) - set(reference(where, dashboard, exports)) - recorded)
        for where, expr in queries(dashboard)
        if metric_names(expr) - set(reference(where, dashboard, exports)) - recorded
    }
    assert unknown == {}, f"not exported and not a recording rule: {unknown}"
    for where, expr in queries(dashboard):
        assert metric_names(expr), f"{where}: selects no metric: {expr}"


def test_every_label_matcher_fits_its_metric(
    dashboard: dict[str, Any],
    exported: dict[str, dict[str, set[str]]],
    exports: dict[str, dict[str, dict[str, set[str]]]],
) -> None:
    problems = []
    for where, expr in queries(dashboard):
        for metric, matchers in selectors(expr):
            labels = reference(where, dashboard, exports).get(metric)
            if labels is None:  # a recording rule: its labels are its own business
                continue
            for label, op, value in matchers:
                if label in TARGET_LABELS:
                    continue
                if label not in labels:
                    problems.append(f"{where}: {metric} has no label {label!r}")
                elif op == "=" and "$" not in value and value not in labels[label]:
                    problems.append(f"{where}: {metric}{{{label}={value!r}}} matches nothing (values: {sorted(labels[label])})")
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            series, label = label_values(var)
            for metric in metric_names(series):
                if label not in exported.get(metric, {}) and label not in TARGET_LABELS:
                    problems.append(f"variable {var['name']!r}: {metric} has no label {label!r}")
    assert problems == []


def test_the_dashboard_covers_what_operators_watch(dashboard: dict[str, Any], recorded: set[str]) -> None:
    used = set().union(*(metric_names(expr) for _, expr in queries(dashboard)))
    assert "driftgate_requests_total" in used, "request outcomes (503, 504, 500) must be visible"
    for where, expr in queries(dashboard):  # every per-replica query follows the namespace/job/pod choice
        for metric, matchers in selectors(expr):
            chosen = {label for label, _, _ in matchers}
            if ":" not in metric and "model" in chosen:
                assert {"namespace", "job", "pod"} <= chosen, f"{where}: {metric}"
    for metric in (
        "driftgate_rows_total",
        "driftgate_violations_total",
        "driftgate_feature_drift",
        "driftgate:feature_drift:fleet",
        "driftgate_output_drift",
        "driftgate_confidence_bucket",
        "driftgate_estimated_accuracy",
        "driftgate_online_metric",
        "driftgate_request_seconds_bucket",
        "driftgate_ready",
    ):
        assert metric in used, f"no panel shows {metric}"
    assert "driftgate:feature_drift:fleet" in recorded
    exprs = [expr for _, expr in queries(dashboard)]
    for q in ("0.5", "0.99"):
        assert any(f"histogram_quantile({q}," in e and "driftgate_request_seconds_bucket" in e and "stage" in e for e in exprs), q
    assert any(t.get("format") == "heatmap" and "driftgate_confidence_bucket" in t["expr"] for p in all_panels(dashboard["panels"]) for t in p.get("targets", []))


def test_only_the_per_feature_statistics_panels_need_the_detailed_export(
    dashboard: dict[str, Any], exports: dict[str, dict[str, dict[str, set[str]]]]
) -> None:
    """The default export serves every other panel, and the opted-in ones really need more."""
    opted = opt_in_panels(dashboard)
    assert opted == {"Drift distance (KS for numbers, JS for categories)", "Unseen categories and missing values"}
    for where, expr in queries(dashboard):
        if any(where.startswith(f"panel {title!r} ") for title in opted):
            assert metric_names(expr) - set(exports["standard"]), f"{where} opts in but needs nothing more: {expr}"
