"""``gateway.fitting``: a spec inferred from training data (Palmer penguins, and small tables)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins

from gateway import FeatureSpec, load_spec
from gateway.errors import UsageError
from gateway.fitting import fit_spec
from gateway.spec import (
    BooleanFeature,
    CategoryFeature,
    IntegerFeature,
    Log,
    MinMax,
    NumberFeature,
    NumericBaseline,
    OneHot,
    Ordinal,
    Passthrough,
    Standardize,
)

NUMBERS = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return load_penguins()


@pytest.fixture(scope="module")
def spec(penguins: pd.DataFrame) -> FeatureSpec:
    return FeatureSpec.fit(penguins, name="penguins", target="species")


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as plain Python records, missing values as None."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def feature(spec: FeatureSpec, name: str) -> Any:
    (found,) = [f for f in spec.features if f.name == name]
    return found


# --- penguins -----------------------------------------------------------------------------


def test_infers_the_types(spec: FeatureSpec) -> None:
    assert spec.name == "penguins"
    assert spec.feature_names == ("island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year")
    assert isinstance(feature(spec, "island"), CategoryFeature)
    assert isinstance(feature(spec, "sex"), CategoryFeature)
    for name in NUMBERS:  # float columns (NaN makes pandas store even whole numbers as floats)
        assert type(feature(spec, name)) is NumberFeature, name
    assert isinstance(feature(spec, "year"), IntegerFeature)
    assert feature(spec, "island").categories == ("Biscoe", "Dream", "Torgersen")
    assert feature(spec, "sex").categories == ("female", "male")


def test_default_transforms(spec: FeatureSpec, penguins: pd.DataFrame) -> None:
    assert feature(spec, "island").transform == OneHot()
    for name in (*NUMBERS, "year"):
        t = feature(spec, name).transform
        values = penguins[name].dropna().to_numpy(dtype=np.float64)
        assert t == Standardize(mean=float(values.mean()), std=float(values.std())), name


def test_imputes_where_the_data_had_gaps(spec: FeatureSpec, penguins: pd.DataFrame) -> None:
    for name in (*NUMBERS, "sex"):
        f = feature(spec, name)
        assert f.missing == "impute", name
        assert f.baseline.missing == int(penguins[name].isna().sum()) > 0, name
    for name in NUMBERS:
        assert feature(spec, name).fill == float(penguins[name].median()), name
    assert feature(spec, "sex").fill == penguins["sex"].mode()[0] == "male"
    for name in ("island", "year"):  # no gaps in 344 rows, too few to rule gaps out: imputed too
        f = feature(spec, name)
        assert (f.missing, f.baseline.missing) == ("impute", 0), name
    observed = FeatureSpec.fit(penguins, name="penguins", target="species", missing="observed")
    for name in ("island", "year"):  # 'observed': no gaps in training, so an absent value is refused
        f = feature(observed, name)
        assert (f.missing, f.fill, f.baseline.missing) == ("reject", None, 0), name
    big = pd.concat([penguins] * 20, ignore_index=True)  # 6,880 rows: enough to say 'never missing'
    assert feature(FeatureSpec.fit(big, name="p", target="species"), "island").missing == "reject"


def test_bounds_contain_every_training_value(spec: FeatureSpec, penguins: pd.DataFrame) -> None:
    for name in (*NUMBERS, "year"):
        f = feature(spec, name)
        values = penguins[name].dropna()
        assert f.min <= values.min() and values.max() <= f.max, name
        assert f.min >= 0, name  # a non-negative column never gets a negative lower bound
        assert f.max - f.min > values.max() - values.min(), name  # widened by the margin
    year = feature(spec, "year")
    assert type(year.min) is int and type(year.max) is int
    assert (year.min, year.max) == (2006, 2010)


def test_baseline_counts_sum_to_the_present_values(spec: FeatureSpec, penguins: pd.DataFrame) -> None:
    for name in (*NUMBERS, "year"):
        baseline = feature(spec, name).baseline
        assert isinstance(baseline, NumericBaseline)
        values = penguins[name].dropna().to_numpy(dtype=np.float64)
        assert sum(baseline.counts) == len(values), name
        assert len(baseline.counts) == len(baseline.edges) + 1
        assert len(baseline.edges) <= 9  # deciles: at most 9 interior edges
        # Bins are (-inf, e0), [e0, e1), ..., [e_last, inf), counted by hand.
        bounds = [-np.inf, *baseline.edges, np.inf]
        by_hand = [int(((values >= lo) & (values < hi)).sum()) for lo, hi in zip(bounds, bounds[1:], strict=False)]
        assert list(baseline.counts) == by_hand, name
        assert baseline.counts[0] > 0, name  # no edge at the minimum
    for name in ("island", "sex"):
        f = feature(spec, name)
        counts = penguins[name].value_counts()
        assert list(f.baseline.counts) == [int(counts[c]) for c in f.categories], name
        assert sum(f.baseline.counts) == int(penguins[name].notna().sum()), name


def test_classification_output(spec: FeatureSpec, penguins: pd.DataFrame) -> None:
    out = spec.output
    assert out is not None
    assert out.task == "classification"
    assert out.target == "species"
    assert list(out.labels) == ["Adelie", "Chinstrap", "Gentoo"]
    assert out.baseline is not None
    assert list(out.baseline.class_counts) == [int(penguins["species"].value_counts()[label]) for label in out.labels]
    assert "species" not in spec.feature_names


def test_the_fitted_spec_accepts_its_training_data(spec: FeatureSpec, penguins: pd.DataFrame) -> None:
    assert spec.check(penguins) == []
    X = spec.transform(penguins)
    assert X.shape == (len(penguins), 10)
    assert np.isfinite(X).all()
    records = records_of(penguins)
    assert spec.check(records) == []
    assert spec.transform(records).tobytes() == X.tobytes()


def test_records_columns_and_frame_fit_the_same_spec(spec: FeatureSpec, penguins: pd.DataFrame) -> None:
    records = records_of(penguins)
    columns = {name: [r[name] for r in records] for name in penguins.columns}
    assert fit_spec(records, name="penguins", target="species") == spec
    assert fit_spec(columns, name="penguins", target="species") == spec


def test_the_fitted_spec_round_trips(spec: FeatureSpec, tmp_path: Path) -> None:
    for suffix in (".yaml", ".json"):
        spec.save(tmp_path / f"p{suffix}")
        loaded = load_spec(tmp_path / f"p{suffix}")
        assert loaded == spec
        assert loaded.digest == spec.digest  # fitting writes floats where the schema says float


def test_fitting_is_deterministic(penguins: pd.DataFrame, spec: FeatureSpec) -> None:
    assert FeatureSpec.fit(penguins, name="penguins", target="species").digest == spec.digest
    shuffled = penguins.sample(frac=1.0, random_state=1).reset_index(drop=True)
    again = FeatureSpec.fit(shuffled, name="penguins", target="species")
    # Row order changes nothing but the floating-point sums of the mean and std.
    assert [f.name for f in again.features] == [f.name for f in spec.features]
    assert [getattr(f, "min", None) for f in again.features] == [getattr(f, "min", None) for f in spec.features]
    assert [f.baseline for f in again.features] == [f.baseline for f in spec.features]


# --- options ------------------------------------------------------------------------------


def test_features_exclude_and_order(penguins: pd.DataFrame) -> None:
    spec = fit_spec(penguins, name="p", target="species", features=["year", "island"])
    assert spec.feature_names == ("year", "island")
    spec = fit_spec(penguins, name="p", target="species", exclude=["year", "sex"])
    assert spec.feature_names == ("island", *NUMBERS)
    spec = fit_spec(penguins, name="p")  # no target: every column is a feature
    assert spec.output is None
    assert "species" in spec.feature_names


def test_transform_overrides(penguins: pd.DataFrame) -> None:
    spec = fit_spec(
        penguins,
        name="p",
        target="species",
        transforms={"body_mass_g": "log", "flipper_length_mm": "minmax", "island": "ordinal", "year": "passthrough"},
        numeric_transform="passthrough",
    )
    mass = feature(spec, "body_mass_g")
    assert mass.transform == Log(shift=mass.min)
    flipper = penguins["flipper_length_mm"].dropna()
    assert feature(spec, "flipper_length_mm").transform == MinMax(low=float(flipper.min()), high=float(flipper.max()))
    assert feature(spec, "island").transform == Ordinal()
    assert feature(spec, "year").transform == Passthrough()
    assert feature(spec, "bill_depth_mm").transform == Passthrough()  # the new default
    assert np.isfinite(spec.transform(penguins)).all()


def test_type_overrides(penguins: pd.DataFrame) -> None:
    spec = fit_spec(penguins, name="p", target="species", types={"year": "number"})
    assert type(feature(spec, "year")) is NumberFeature
    assert spec.check(penguins) == []


def test_on_violation_and_missing_policies(penguins: pd.DataFrame) -> None:
    spec = fit_spec(penguins, name="p", target="species", on_violation={"body_mass_g": "clip", "island": "flag"})
    assert feature(spec, "body_mass_g").on_violation == "clip"
    assert feature(spec, "island").on_violation == "flag"
    assert feature(spec, "year").on_violation == "reject"
    everywhere = fit_spec(penguins[list(NUMBERS)], name="p", on_violation="flag")
    assert {f.on_violation for f in everywhere.features} == {"flag"}
    strict = fit_spec(penguins, name="p", target="species", missing="reject")
    assert {f.missing for f in strict.features} == {"reject"}
    assert {v.reason for v in strict.check(penguins)} == {"missing"}
    lenient = fit_spec(penguins, name="p", target="species", missing="impute")
    assert {f.missing for f in lenient.features} == {"impute"}
    assert feature(lenient, "year").fill == 2008.0


def test_margin_zero_gives_the_observed_range(penguins: pd.DataFrame) -> None:
    spec = fit_spec(penguins, name="p", target="species", margin=0.0)
    for name in NUMBERS:
        values = penguins[name].dropna()
        assert (feature(spec, name).min, feature(spec, name).max) == (values.min(), values.max()), name


def test_margin_widens_and_rounds_outwards() -> None:
    spec = fit_spec({"t": [10.0, 20.0, 15.0], "s": [-5.0, 5.0, 0.0]}, name="m", margin=0.1)
    t, s = spec.features
    assert (t.min, t.max) == (9.0, 21.0)  # 10% of the width (10) on each side
    assert (s.min, s.max) == (-6.0, 6.0)
    assert t.observed is None  # a fixed margin fits as driftgate 0.1 did
    non_negative = fit_spec({"c": [0.0, 1.0, 2.0]}, name="m", margin=0.1).features[0]
    assert non_negative.min == 0.0  # not -0.2: a count never gets a negative bound


def test_bins_option() -> None:
    values = [float(i) for i in range(100)]
    spec = fit_spec({"x": values}, name="b", bins=4)
    baseline = spec.features[0].baseline
    assert baseline.edges == (24.75, 49.5, 74.25)
    assert baseline.counts == (25, 25, 25, 25)


def test_a_constant_column() -> None:
    spec = fit_spec({"x": [3.0, 3.0, 3.0]}, name="c", transforms={"x": "standardize"})
    x = spec.features[0]
    assert x.transform == Standardize(mean=3.0, std=1.0)  # never a zero std
    assert x.min <= 3.0 <= x.max
    assert x.baseline.counts == (3,) and x.baseline.edges == ()
    minmax = fit_spec({"x": [3.0, 3.0]}, name="c", transforms={"x": "minmax"}).features[0]
    assert minmax.transform == MinMax(low=3.0, high=4.0)
    assert spec.transform([{"x": 3.0}]).tolist() == [[0.0]]


def test_booleans() -> None:
    spec = fit_spec([{"b": True}, {"b": False}, {"b": True}, {"b": None}], name="b")
    (b,) = spec.features
    assert isinstance(b, BooleanFeature)
    assert (b.missing, b.fill) == ("impute", True)
    assert b.baseline.counts == (1, 2) and b.baseline.missing == 1


def test_regression_and_class_targets() -> None:
    rows = [{"x": float(i), "y": float(i) * 1.5, "k": i % 3, "ok": i % 2 == 0, "many": i} for i in range(30)]
    regression = fit_spec(rows, name="r", target="y", exclude=["k", "ok", "many"])
    assert regression.output.task == "regression" and regression.output.labels == ()
    assert sum(regression.output.baseline.values.counts) == 30
    classes = fit_spec(rows, name="k", target="k", exclude=["y", "ok", "many"])
    assert (classes.output.task, classes.output.labels) == ("classification", ("0", "1", "2"))
    booleans = fit_spec(rows, name="o", target="ok", exclude=["y", "k", "many"])
    assert booleans.output.labels == ("false", "true")
    over_twenty = fit_spec(rows, name="m", target="many", exclude=["y", "k", "ok"])
    assert over_twenty.output.task == "regression"
    review = fit_spec(rows, name="k", target="k", review_threshold=0.6, exclude=["y", "ok", "many"])
    assert review.output.review_threshold == 0.6


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        ([], {}, "the training data has no rows"),
        (pd.DataFrame({"a": []}), {}, "the training data has no rows"),
        ({"a": []}, {}, "the training data has no rows"),
        ([{"a": 1.0}], {"target": "species"}, "target column 'species' is not in the data (columns: a)"),
        ([{"a": 1.0}], {"transforms": {"a": "sqrt"}}, "column 'a': unknown transform 'sqrt'"),
        ([{"a": 1.0}], {"numeric_transform": "sqrt"}, "column 'a': unknown transform 'sqrt'"),
        ([{"a": "x"}], {"transforms": {"a": "standardize"}}, "column 'a': a category takes 'onehot' or 'ordinal'"),
        ([{"a": 1.0}], {"transforms": {"a": "onehot"}}, "column 'a': a number takes standardize, minmax, log or passthrough"),
        ([{"a": 1}, {"a": "x"}], {}, "column 'a' mixes types (int, str)"),
        ([{"a": 1}, {"a": True}], {}, "column 'a' mixes types (bool, int)"),
        ([{"a": "1"}, {"a": 2.5}], {}, "column 'a' mixes types (float, str)"),
        ([{"a": None, "b": 1}, {"a": None, "b": 2}], {}, "column 'a' has no values: all 2 rows are missing"),
        ([{"a": float("nan")}, {"a": 1.0}], {}, "column 'a' holds NaN or infinite values"),
        ([{"a": float("inf")}, {"a": 1.0}], {}, "column 'a' holds NaN or infinite values"),
        ([{"a": "x"}, {"a": "y"}], {"types": {"a": "number"}}, "column 'a' is declared number but holds non-numbers"),
        ([{"a": 1.0}], {"features": ["a", "zz"]}, "feature columns not in the data: zz"),
        ([{"a": 1.0, "t": "x"}], {"target": "t"}, "target column 't' has a single class"),
        ([{"a": 1.0, "t": None}, {"a": 2.0, "t": None}], {"target": "t"}, "target column 't' has no values"),
        ([{"a": str(i)} for i in range(5)], {"max_categories": 3, "features": ["a"]}, "column 'a' has 5 distinct values (over 3"),
        ([{"a": str(i)} for i in range(5)], {"max_categories": 3}, "no feature columns left to fit (left out: a"),
        ([{"t": "x"}, {"t": "y"}], {"target": "t"}, "the data holds only the target column 't'"),
        ([{"t": "x", "a": 1.0}], {"target": "t", "exclude": ["a"]}, "no feature columns left to fit"),
        ([{"a": 1.0}], {"vocabulary": "maybe"}, "vocabulary must be auto, closed or open"),
        ([{"a": 1.0}, {"a": 5.0}], {"bounds": {"a": (2.0, None)}}, "column 'a': training values (1 to 5) lie beyond its declared min 2"),
        ([{"a": "x"}], {"bounds": {"a": (0.0, None)}}, "column 'a': bounds apply to numbers"),
        ([{"a": 1.0}], {"bounds": {"b": (0.0, None)}}, "bounds given for columns that are not features: b"),
        ([{"a": 1.0}], {"margin": -0.1}, "margin must be >= 0"),
        ([{"a": 1.0}], {"bins": 0}, "bins >= 1"),
        (42, {}, "cannot fit a spec from int"),
    ],
)
def test_fit_errors_are_usage_errors_naming_the_column(data: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        fit_spec(data, name="s", **options)


def test_clip_everywhere_clips_numbers_and_rejects_the_rest(penguins: pd.DataFrame) -> None:
    spec = fit_spec(penguins, name="p", target="species", on_violation="clip")
    for f in spec.features:
        expected = "clip" if isinstance(f, NumberFeature | IntegerFeature) else "reject"
        assert f.on_violation == expected, f.name
    assert spec.check(penguins) == []


@pytest.mark.parametrize("policy", ["drop", {"a": "drop"}, {"a": "clip", "b": "ignore"}])
def test_unknown_policy_is_a_usage_error(policy: Any) -> None:
    with pytest.raises(UsageError, match="on_violation must be reject, clip or flag, not '(drop|ignore)'"):
        fit_spec([{"a": 1.0, "b": 2.0}, {"a": 2.0, "b": 3.0}], name="s", on_violation=policy)
