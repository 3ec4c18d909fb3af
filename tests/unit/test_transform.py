"""``gateway.transform``: clean columns to the model's float32 matrix."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gateway import FeatureSpec, InputRejectedError
from gateway.spec import (
    BooleanFeature,
    CategoryFeature,
    IntegerFeature,
    Log,
    MinMax,
    NumberFeature,
    OneHot,
    Ordinal,
    Passthrough,
    Standardize,
)
from gateway.transform import FLOAT32_MAX, compile_transform

VALUES = [0.0, 1.5, 2.25, 39.1, 1e5, 12345.678901234]


def one_feature(feature: NumberFeature | IntegerFeature) -> FeatureSpec:
    return FeatureSpec(name="t", features=(feature,))


def as_column(spec: FeatureSpec, values: list[float]) -> np.ndarray:
    X = spec.transform([{"x": v} for v in values])
    assert X.shape == (len(values), 1)
    return X[:, 0]


def test_standardize_formula() -> None:
    mean, std = 43.92193, 5.4516
    spec = one_feature(NumberFeature(name="x", transform=Standardize(mean=mean, std=std)))
    by_hand = ((np.array(VALUES, dtype=np.float64) - mean) / std).astype(np.float32)
    assert as_column(spec, VALUES).tobytes() == by_hand.tobytes()
    assert spec.transform([{"x": mean}]).tolist() == [[0.0]]
    assert spec.transform([{"x": mean + std}]).tolist() == [[1.0]]


def test_minmax_formula() -> None:
    low, high = -2.5, 40.0
    spec = one_feature(NumberFeature(name="x", transform=MinMax(low=low, high=high)))
    by_hand = ((np.array(VALUES, dtype=np.float64) - low) / (high - low)).astype(np.float32)
    assert as_column(spec, VALUES).tobytes() == by_hand.tobytes()
    assert spec.transform([{"x": low}, {"x": high}]).tolist() == [[0.0], [1.0]]


def test_log_formula() -> None:
    shift = -1.0
    spec = one_feature(NumberFeature(name="x", min=shift, transform=Log(shift=shift)))
    by_hand = np.log1p(np.array(VALUES, dtype=np.float64) - shift).astype(np.float32)
    assert as_column(spec, VALUES).tobytes() == by_hand.tobytes()
    assert spec.transform([{"x": shift}]).tolist() == [[0.0]]
    assert spec.transform([{"x": np.e - 2}]).tolist() == [[np.float32(1.0)]]


def test_log_keeps_flagged_values_below_the_domain_finite() -> None:
    spec = one_feature(NumberFeature(name="x", min=0.0, transform=Log(shift=0.0), on_violation="flag"))
    assert spec.check([{"x": -5.0}])[0].action == "flag"
    assert spec.transform([{"x": -5.0}]).tolist() == [[0.0]]  # log1p(max(-5, 0))
    assert spec.transform([{"x": -5.0}, {"x": -1e9}]).tolist() == [[0.0], [0.0]]


def test_passthrough_and_booleans() -> None:
    spec = FeatureSpec(name="t", features=(NumberFeature(name="x"), IntegerFeature(name="n"), BooleanFeature(name="b")))
    rows = [{"x": 1.25, "n": -3, "b": True}, {"x": -0.5, "n": 7, "b": False}]
    assert spec.transform(rows).tolist() == [[1.25, -3.0, 1.0], [-0.5, 7.0, 0.0]]
    assert spec.output_columns == ("x", "n", "b")


def test_onehot_columns_and_values() -> None:
    spec = FeatureSpec(
        name="t",
        features=(
            NumberFeature(name="bill"),
            CategoryFeature(name="island", categories=("Biscoe", "Dream", "Torgersen")),
            CategoryFeature(name="sex", categories=("female", "male"), transform=OneHot()),
        ),
    )
    assert spec.output_columns == ("bill", "island=Biscoe", "island=Dream", "island=Torgersen", "sex=female", "sex=male")
    rows = [{"bill": 1.0, "island": "Dream", "sex": "male"}, {"bill": 2.0, "island": "Torgersen", "sex": "female"}]
    expected = [[1.0, 0.0, 1.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, 1.0, 1.0, 0.0]]
    assert spec.transform(rows).tolist() == expected
    assert spec.transform(rows[:1]).tolist() == expected[:1]


def test_ordinal_is_the_category_index() -> None:
    spec = FeatureSpec(name="t", features=(CategoryFeature(name="size", categories=("S", "M", "L"), transform=Ordinal()),))
    assert spec.output_columns == ("size",)
    assert spec.transform([{"size": s} for s in ("L", "S", "M")]).tolist() == [[2.0], [0.0], [1.0]]


def test_each_feature_owns_its_slice_in_spec_order() -> None:
    spec = FeatureSpec(
        name="t",
        features=(
            CategoryFeature(name="c", categories=("a", "b")),
            NumberFeature(name="x", transform=Standardize(mean=1.0, std=2.0)),
            CategoryFeature(name="o", categories=("p", "q"), transform=Ordinal()),
            BooleanFeature(name="b"),
        ),
    )
    transform = compile_transform(spec)
    assert transform.columns == spec.output_columns == ("c=a", "c=b", "x", "o", "b")
    assert transform.width == 5
    # Field order in the record does not matter.
    assert spec.transform([{"b": True, "o": "q", "x": 5.0, "c": "b"}]).tolist() == [[0.0, 1.0, 2.0, 1.0, 1.0]]


def test_output_is_c_contiguous_float32() -> None:
    spec = FeatureSpec(name="t", features=(CategoryFeature(name="c", categories=("a", "b")), NumberFeature(name="x")))
    for rows in ([{"c": "a", "x": 1.0}], [{"c": "a", "x": 1.0}] * 3, []):
        X = spec.transform(rows)
        assert X.dtype == np.float32
        assert X.flags.c_contiguous
        assert X.shape == (len(rows), 3)


def test_arithmetic_is_float64_rounded_once() -> None:
    """(x - mean) / std in float64, then one rounding: doing it in float32 would give 0."""
    spec = one_feature(NumberFeature(name="x", transform=Standardize(mean=1e8, std=1.0)))
    assert np.float32(1e8 + 1) - np.float32(1e8) == 0.0  # float32 cannot tell them apart
    assert spec.transform([{"x": 1e8 + 1}]).tolist() == [[1.0]]
    assert spec.transform([{"x": 1e8 + 1}, {"x": 1e8 + 2}]).tolist() == [[1.0], [2.0]]


@pytest.mark.parametrize(
    "transform",
    [Standardize(mean=3.3, std=0.7), MinMax(low=-1.1, high=7.7), Log(shift=-2.0), Passthrough()],
    ids=["standardize", "minmax", "log", "passthrough"],
)
def test_one_row_and_batch_give_the_same_bits(transform: object) -> None:
    spec = one_feature(NumberFeature(name="x", min=-2.0, transform=transform))  # type: ignore[arg-type]
    values = [-2.0, -1.9999999, 0.1, 1 / 3, 2.0 / 7.0, 123456.789, 1e-7]
    batch = spec.transform([{"x": v} for v in values])
    stacked = np.vstack([spec.transform([{"x": v}]) for v in values])
    assert stacked.tobytes() == batch.tobytes()


def test_clipped_values_transform_as_the_bound() -> None:
    spec = one_feature(NumberFeature(name="x", min=0.0, max=10.0, on_violation="clip", transform=Standardize(mean=5.0, std=2.0)))
    assert spec.transform([{"x": -100.0}, {"x": 1e9}]).tolist() == [[-2.5], [2.5]]
    assert spec.transform([{"x": -100.0}]).tolist() == [[-2.5]]


def test_imputed_values_are_transformed() -> None:
    spec = one_feature(NumberFeature(name="x", missing="impute", fill=9.0, transform=Standardize(mean=5.0, std=2.0)))
    assert spec.transform([{}]).tolist() == [[2.0]]
    assert spec.transform([{"x": None}, {"x": 5.0}]).tolist() == [[2.0], [0.0]]


def test_log_negative_zero_same_bits() -> None:
    """-0.0 - 0.0 is -0.0: both paths must still give +0.0 (log1p(max(d, 0)) with np.maximum)."""
    spec = one_feature(NumberFeature(name="x", min=0.0, transform=Log(shift=0.0)))
    alone = spec.transform([{"x": -0.0}])
    batch = spec.transform([{"x": -0.0}, {"x": 1.0}])
    assert alone.tobytes() == batch[:1].tobytes() == np.zeros((1, 1), dtype=np.float32).tobytes()


@pytest.mark.parametrize(
    ("transform", "value", "expected"),
    [
        (Passthrough(), 1e300, FLOAT32_MAX),
        (Passthrough(), -1e300, -FLOAT32_MAX),
        (Passthrough(), 3.5e38, FLOAT32_MAX),
        (Standardize(mean=0.0, std=1e-3), 1e300, FLOAT32_MAX),
        (MinMax(low=0.0, high=1e-3), -1e300, -FLOAT32_MAX),
        (Log(shift=0.0), 1e300, float(np.float32(np.log1p(1e300)))),
    ],
)
def test_values_beyond_float32_saturate(transform: object, value: float, expected: float) -> None:
    """A valid value whose transform is past float32's range reaches the model as the
    largest finite float32 (of its sign), never as inf, in both paths."""
    lower = 0.0 if isinstance(transform, Log) else None  # the log transform needs a min
    spec = one_feature(NumberFeature(name="x", min=lower, transform=transform))  # type: ignore[arg-type]
    assert spec.check([{"x": value}]) == []
    alone = spec.transform([{"x": value}])
    batch = spec.transform([{"x": value}, {"x": 0.0}])
    assert alone.tolist() == [[expected]]
    assert alone.tobytes() == batch[:1].tobytes()
    assert FLOAT32_MAX == float(np.finfo(np.float32).max)


# --- regressions (defects found and fixed) -------------------------------------------


@pytest.mark.parametrize(
    "transform",
    [Standardize(mean=0.0, std=0.5), Standardize(mean=-1e308, std=1.0), MinMax(low=-1e308, high=0.0)],
    ids=["divide", "subtract", "minmax"],
)
def test_float64_overflow_saturates_quietly(transform: object) -> None:
    spec = one_feature(NumberFeature(name="x", transform=transform))  # type: ignore[arg-type]
    rows = [{"x": 1.7e308}, {"x": 0.0}]
    assert spec.check(rows) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = spec.transform(rows)
    assert batch[0, 0] == np.float32(FLOAT32_MAX)
    assert spec.transform(rows[:1]).tobytes() == batch[:1].tobytes()


def test_minmax_with_a_span_beyond_float64() -> None:
    try:
        transform = MinMax(low=-1.5e308, high=1.5e308)
    except ValueError:
        return  # refusing such a transform is a fix too
    spec = one_feature(NumberFeature(name="x", transform=transform))
    rows = [{"x": 1.5e308}, {"x": 0.0}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # quietness is the test above; here: the values
        batch = spec.transform(rows)
        alone = spec.transform(rows[:1])
    assert np.isfinite(batch).all()
    assert alone.tobytes() == batch[:1].tobytes()
