"""``gateway.guards``: the verdict on every cell, the actions, and the clean columns."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gateway import FeatureSpec, InputRejectedError, Violation
from gateway.errors import GatewayError
from gateway.guards import compile_guards
from gateway.spec import BooleanFeature, CategoryFeature, IntegerFeature, NumberFeature, Ordinal, Output
from gateway.table import to_columns

SPEC = FeatureSpec(
    name="g",
    features=(
        NumberFeature(name="x", min=0.0, max=10.0),
        IntegerFeature(name="n", min=0, max=5),
        CategoryFeature(name="c", categories=("a", "b")),
        BooleanFeature(name="b"),
    ),
    output=Output(task="regression", target="y"),
)
GOOD: dict[str, Any] = {"x": 1.5, "n": 2, "c": "a", "b": True}


def row(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def one_and_batch(spec: FeatureSpec, cell_row: dict[str, Any]) -> tuple[list[Violation], list[Violation]]:
    """The violations of ``cell_row`` alone (row 0) and as row 1 of a batch after a good row."""
    alone = spec.check([cell_row])
    batch = spec.check([dict(GOOD), cell_row])
    assert all(v.row == 1 for v in batch)
    return alone, [Violation(row=0, feature=v.feature, reason=v.reason, value=v.value, action=v.action) for v in batch]


def test_a_good_row_has_no_violation() -> None:
    assert SPEC.check([GOOD]) == []
    assert SPEC.check([GOOD] * 5) == []
    assert SPEC.transform([GOOD]).shape == (1, 5)


@pytest.mark.parametrize(
    ("feature", "value", "reason"),
    [
        # numbers: JSON numbers only, finite, in [min, max]
        ("x", "1.5", "wrong_type"),
        ("x", True, "wrong_type"),
        ("x", False, "wrong_type"),
        ("x", [1.0], "wrong_type"),
        ("x", {"v": 1}, "wrong_type"),
        ("x", math.nan, "not_finite"),
        ("x", math.inf, "not_finite"),
        ("x", -math.inf, "not_finite"),
        ("x", 10**400, "not_finite"),
        ("x", -(10**400), "not_finite"),
        ("x", -0.001, "below_min"),
        ("x", -1, "below_min"),
        ("x", 10.000001, "above_max"),
        ("x", 10**300, "above_max"),
        ("x", None, "missing"),
        # integers: a fractional part is a wrong type
        ("n", 2.5, "wrong_type"),
        ("n", 1e-9, "wrong_type"),
        ("n", True, "wrong_type"),
        ("n", "2", "wrong_type"),
        ("n", math.nan, "not_finite"),
        ("n", math.inf, "not_finite"),
        ("n", 6, "above_max"),
        ("n", 6.0, "above_max"),
        ("n", -1, "below_min"),
        ("n", None, "missing"),
        # categories: strings only, from the known set
        ("c", "z", "unseen_category"),
        ("c", "A", "unseen_category"),
        ("c", "", "unseen_category"),
        ("c", 1, "wrong_type"),
        ("c", True, "wrong_type"),
        ("c", ["a"], "wrong_type"),
        ("c", math.nan, "wrong_type"),
        ("c", None, "missing"),
        # booleans: true/false only
        ("b", 1, "wrong_type"),
        ("b", 0, "wrong_type"),
        ("b", 1.0, "wrong_type"),
        ("b", "true", "wrong_type"),
        ("b", None, "missing"),
    ],
)
def test_each_bad_cell_gets_its_reason(feature: str, value: Any, reason: str) -> None:
    alone, in_batch = one_and_batch(SPEC, row(**{feature: value}))
    assert [(v.row, v.feature, v.reason, v.action) for v in alone] == [(0, feature, reason, "reject")]
    assert [(v.row, v.feature, v.reason, v.action) for v in in_batch] == [(0, feature, reason, "reject")]


@pytest.mark.parametrize(
    ("feature", "value"),
    [
        ("x", 0),
        ("x", 0.0),
        ("x", -0.0),
        ("x", 10),
        ("x", 10.0),
        ("x", 5e-324),
        ("n", 0),
        ("n", 5),
        ("n", 3.0),  # a float without fractional part is a whole number
        ("c", "b"),
        ("b", False),
    ],
)
def test_boundary_values_are_valid(feature: str, value: Any) -> None:
    alone, in_batch = one_and_batch(SPEC, row(**{feature: value}))
    assert alone == in_batch == []


@pytest.mark.parametrize(
    "value",
    [np.float64(1.5), np.float32(1.5), np.float16(1.5), np.int64(2), np.int32(2), np.int8(2), np.uint8(2), np.uint64(2)],
)
def test_numpy_numbers_are_numbers(value: Any) -> None:
    assert SPEC.check([row(x=value)]) == []
    assert SPEC.check([row(x=value), GOOD]) == []
    assert SPEC.check({"x": [value, 1.0], "n": [1, 2], "c": ["a", "b"], "b": [True, False]}) == []


def test_numpy_bools_and_nan_keep_their_meaning() -> None:
    assert SPEC.check([row(b=np.bool_(True))]) == []
    assert SPEC.check([row(b=np.bool_(False)), GOOD]) == []
    assert [v.reason for v in SPEC.check([row(x=np.bool_(True))])] == ["wrong_type"]
    assert [v.reason for v in SPEC.check([row(x=np.float64("nan")), GOOD])] == ["not_finite"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (np.longlong(1), None),  # every numpy integer and float width is a number
        (np.ulonglong(1), None),
        (np.intc(1), None),
        (np.datetime64(1, "ns"), "wrong_type"),  # .item() would make an int of it
        (np.datetime64(1, "us"), "wrong_type"),
        (np.timedelta64(5, "ns"), "wrong_type"),
        (np.complex128(1), "wrong_type"),
        (np.bool_(True), "wrong_type"),
        (np.str_("1"), "wrong_type"),
        ("1", "wrong_type"),
    ],
    ids=repr,
)
def test_numpy_scalars_get_one_verdict_in_both_paths(value: Any, reason: str | None) -> None:
    spec = FeatureSpec(name="s", features=(NumberFeature(name="x"),))
    alone = [v.reason for v in spec.check([{"x": value}])]
    in_batch = [v.reason for v in spec.check([{"x": 1.0}, {"x": value}])]
    in_column = [v.reason for v in spec.check({"x": [1.0, value]})]
    expected = [] if reason is None else [reason]
    assert (alone, in_batch, in_column) == (expected, expected, expected)


def test_numpy_strings_are_strings_in_both_paths() -> None:
    assert SPEC.check([row(c=np.str_("a"))]) == SPEC.check([row(c=np.str_("a")), GOOD]) == []
    alone, in_batch = one_and_batch(SPEC, row(c=np.str_("z")))
    assert [v.reason for v in alone] == [v.reason for v in in_batch] == ["unseen_category"]
    assert SPEC.check({"x": [1.0, 2.0], "n": [1, 2], "c": np.array(["a", "b"]), "b": [True, True]}) == []


def test_a_datetime_column_is_not_a_number_column() -> None:
    spec = FeatureSpec(name="s", features=(NumberFeature(name="x"),))
    stamps = pd.to_datetime(["2020-01-01", "2021-01-01"])
    for unit in ("s", "us", "ns"):
        frame = pd.DataFrame({"x": stamps.as_unit(unit)})
        assert [v.reason for v in spec.check(frame)] == ["wrong_type", "wrong_type"], unit
        assert [v.reason for v in spec.check({"x": frame["x"].to_numpy()})] == ["wrong_type", "wrong_type"], unit
        assert [v.reason for v in spec.check(frame.iloc[:1])] == ["wrong_type"], unit


def test_an_absent_field_is_missing_with_value_none() -> None:
    without = {k: v for k, v in GOOD.items() if k != "c"}
    expected = [Violation(row=0, feature="c", reason="missing", value=None)]
    assert SPEC.check([without]) == expected
    assert SPEC.check([GOOD, without])[0].row == 1
    assert SPEC.check([row(c=None)]) == expected


def test_a_feature_no_row_sent_is_missing_in_every_row() -> None:
    rows = [{"x": 1.0, "n": 1, "b": True}, {"x": 2.0, "n": 2, "b": False}, {"x": 3.0, "n": 3, "b": True}]
    assert [(v.row, v.feature, v.reason) for v in SPEC.check(rows)] == [(i, "c", "missing") for i in range(3)]
    columns = {"x": [1.0, 2.0], "n": [1, 2], "c": ["a", "b"]}
    assert [(v.row, v.feature, v.reason) for v in SPEC.check(columns)] == [(0, "b", "missing"), (1, "b", "missing")]


def test_every_violation_is_reported_not_just_the_first() -> None:
    bad = {"x": "1", "n": 2.5, "c": "z", "b": 1, "extra": 7}
    expected = [
        ("x", "wrong_type", "1"),
        ("n", "wrong_type", 2.5),
        ("c", "unseen_category", "z"),
        ("b", "wrong_type", 1),
        ("extra", "unknown_feature", 7),
    ]
    assert [(v.feature, v.reason, v.value) for v in SPEC.check([bad])] == expected
    batch = SPEC.check([bad, GOOD, bad])
    assert [(v.row, v.feature) for v in batch] == [(0, f) for f, _, _ in expected] + [(2, f) for f, _, _ in expected]


def test_violations_are_ordered_by_row_then_spec_feature_order() -> None:
    # Spec order is x, n, c, b: not alphabetical, not the order of the fields in the record.
    rows = [
        {"b": 1, "c": "z", "x": 1.0, "n": 1},
        GOOD,
        {"zzz": 1, "b": None, "aaa": 2, "x": -1.0, "n": 9, "c": "a"},
    ]
    found = [(v.row, v.feature) for v in SPEC.check(rows)]
    assert found == [(0, "c"), (0, "b"), (2, "x"), (2, "n"), (2, "b"), (2, "zzz"), (2, "aaa")]
    # Column input reports in the same order.
    columns = {name: [r.get(name) for r in rows] for name in SPEC.feature_names}
    assert [(v.row, v.feature) for v in SPEC.check(columns)] == [p for p in found if p[1] in SPEC.feature_names]


def test_unknown_fields_are_rejected_or_ignored_as_the_spec_says() -> None:
    assert SPEC.check([row(colour="red")]) == [Violation(row=0, feature="colour", reason="unknown_feature", value="red")]
    assert [(v.row, v.feature) for v in SPEC.check([GOOD, row(colour="red", size=[1])])] == [(1, "colour"), (1, "size")]
    assert SPEC.check([row(size=[1])])[0].value == "<list>"
    lenient = FeatureSpec(name="g", features=SPEC.features, unknown_fields="ignore")
    assert lenient.check([row(colour="red")]) == []
    assert lenient.check([GOOD, row(colour="red")]) == []
    assert lenient.transform([row(colour="red")]).tobytes() == lenient.transform([GOOD]).tobytes()


def test_the_target_column_is_ignored_by_check() -> None:
    assert SPEC.check([row(y=3.0)]) == []
    assert SPEC.check([row(y=3.0), row(y="anything")]) == []
    assert SPEC.check({**{k: [v, v] for k, v in GOOD.items()}, "y": [1.0, 2.0]}) == []
    frame = pd.DataFrame([row(y=1.0), row(y=2.0)])
    assert SPEC.check(frame) == []
    assert SPEC.transform(frame).tobytes() == SPEC.transform([GOOD, GOOD]).tobytes()
    # ... but only the target: another extra column is still unknown.
    assert [v.feature for v in SPEC.check(pd.DataFrame([row(y=1.0, z=2.0)]))] == ["z"]
    without_output = FeatureSpec(name="g", features=SPEC.features)
    assert [v.reason for v in without_output.check([row(y=3.0)])] == ["unknown_feature"]


def test_the_guards_themselves_ignore_the_target() -> None:
    """Not only ``FeatureSpec.check``: guards fed raw columns (as the server feeds them) too."""
    guards = compile_guards(SPEC)
    for rows in ([row(y=1.0)], [row(y=1.0), row(y="x")]):
        checked = guards.check(to_columns(rows, SPEC.feature_names))
        assert checked.ok and checked.violations == []
    checked = guards.check(to_columns([row(y=1.0, z=2)], SPEC.feature_names))
    assert [(v.feature, v.reason) for v in checked.violations] == [("z", "unknown_feature")]


def test_long_strings_are_echoed_truncated() -> None:
    long = "q" * 10_000
    for found in (SPEC.check([row(c=long)]), SPEC.check([GOOD, row(c=long)]), SPEC.check([row(x=long), GOOD])):
        (v,) = found
        assert isinstance(v.value, str)
        assert v.value == "q" * 200 + "…"
    (v,) = SPEC.check([row(note=long)])
    assert v.reason == "unknown_feature" and v.value == "q" * 200 + "…"
    (v,) = SPEC.check([row(c="q" * 200)])
    assert v.value == "q" * 200  # at the limit: echoed whole


def test_containers_are_echoed_as_their_type() -> None:
    found = SPEC.check([row(x=[1] * 10_000, c={"a": "b"})])
    assert [v.value for v in found] == ["<list>", "<dict>"]
    found = SPEC.check([GOOD, row(x=[1] * 10_000, c={"a": "b"})])
    assert [v.value for v in found] == ["<list>", "<dict>"]


def test_imputed_cells_are_not_violations() -> None:
    spec = FeatureSpec(
        name="i",
        features=(
            NumberFeature(name="x", min=0.0, max=10.0, missing="impute", fill=4.0),
            CategoryFeature(name="c", categories=("a", "b"), missing="impute", fill="b", transform=Ordinal()),
            BooleanFeature(name="b", missing="impute", fill=True),
        ),
    )
    assert spec.check([{}]) == []
    assert spec.check([{"x": None, "c": None, "b": None}, {}]) == []
    expected = np.array([[4.0, 1.0, 1.0]], dtype=np.float32)
    assert spec.transform([{}]).tobytes() == expected.tobytes()
    assert spec.transform([{}, {"x": 1.0, "c": "a", "b": False}]).tolist() == [[4.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    # Imputing is for absent values only: a bad value is still reported.
    assert [v.reason for v in spec.check([{"x": "4", "c": 1, "b": 0}])] == ["wrong_type"] * 3


CLIP = FeatureSpec(
    name="clip",
    features=(NumberFeature(name="x", min=0.0, max=10.0, on_violation="clip"), IntegerFeature(name="n", min=1, max=3, on_violation="clip")),
)


def test_clip_moves_numbers_into_the_domain() -> None:
    rows = [{"x": -5.0, "n": 0}, {"x": 99.0, "n": 7}, {"x": 5.0, "n": 2}]
    found = CLIP.check(rows)
    assert [(v.row, v.feature, v.reason, v.value, v.action) for v in found] == [
        (0, "x", "below_min", -5.0, "clip"),
        (0, "n", "below_min", 0, "clip"),
        (1, "x", "above_max", 99.0, "clip"),
        (1, "n", "above_max", 7, "clip"),
    ]
    assert CLIP.transform(rows).tolist() == [[0.0, 1.0], [10.0, 3.0], [5.0, 2.0]]
    assert CLIP.transform([rows[1]]).tolist() == [[10.0, 3.0]]
    checked = CLIP.guards.check(to_columns(rows, CLIP.feature_names))
    assert checked.ok and checked.rejected is None and checked.flagged is None
    assert checked.clipped is not None and checked.clipped.tolist() == [True, True, False]


@pytest.mark.parametrize(("value", "reason"), [(math.nan, "not_finite"), ("5", "wrong_type"), (None, "missing"), (2.5, "wrong_type")])
def test_clip_and_flag_never_let_an_unusable_cell_through(value: Any, reason: str) -> None:
    feature = "n" if reason == "wrong_type" and value == 2.5 else "x"
    for policy in ("clip", "flag"):
        spec = FeatureSpec(
            name="p",
            features=(NumberFeature(name="x", min=0.0, max=10.0, on_violation=policy), IntegerFeature(name="n", min=1, max=3, on_violation=policy)),
        )
        cells = {"x": 1.0, "n": 1, feature: value}
        for rows in ([cells], [{"x": 1.0, "n": 1}, cells]):
            found = spec.check(rows)
            assert [(v.feature, v.reason, v.action) for v in found] == [(feature, reason, "reject")]
            with pytest.raises(InputRejectedError):
                spec.transform(rows)


FLAG = FeatureSpec(
    name="flag",
    features=(
        NumberFeature(name="x", min=0.0, max=10.0, on_violation="flag"),
        CategoryFeature(name="c", categories=("a", "b"), on_violation="flag"),
        CategoryFeature(name="o", categories=("a", "b"), on_violation="flag", transform=Ordinal()),
        BooleanFeature(name="b"),
    ),
)


def test_flag_predicts_as_sent_and_marks_the_row() -> None:
    rows = [{"x": 50.0, "c": "z", "o": "z", "b": True}, {"x": 5.0, "c": "a", "o": "b", "b": False}]
    found = FLAG.check(rows)
    assert [(v.row, v.feature, v.reason, v.action) for v in found] == [
        (0, "x", "above_max", "flag"),
        (0, "c", "unseen_category", "flag"),
        (0, "o", "unseen_category", "flag"),
    ]
    X = FLAG.transform(rows)
    # x as sent; an unseen one-hot category is all zeros; an unseen ordinal is -1.
    assert X.tolist() == [[50.0, 0.0, 0.0, -1.0, 1.0], [5.0, 1.0, 0.0, 1.0, 0.0]]
    assert FLAG.transform(rows[:1]).tobytes() == X[:1].tobytes()
    checked = FLAG.guards.check(to_columns(rows, FLAG.feature_names))
    assert checked.ok
    assert checked.flagged is not None and checked.flagged.tolist() == [True, False]
    assert checked.clipped is None


def test_transform_raises_with_only_the_reject_violations() -> None:
    rows = [{"x": 50.0, "c": "a", "o": "a", "b": True}, {"x": 5.0, "c": "z", "o": "a", "b": 1}, GOOD_FLAG]
    everything = FLAG.check(rows)
    assert [(v.row, v.feature, v.action) for v in everything] == [(0, "x", "flag"), (1, "c", "flag"), (1, "b", "reject")]
    with pytest.raises(InputRejectedError) as caught:
        FLAG.transform(rows)
    error = caught.value
    assert error.violations == [Violation(row=1, feature="b", reason="wrong_type", value=1)]
    assert all(v.action == "reject" for v in error.violations)
    assert str(error) == "1 of 3 rows break the feature spec 'flag'"
    assert isinstance(error, GatewayError) and error.status_hint == 422 and error.code == "input-rejected"


GOOD_FLAG: dict[str, Any] = {"x": 1.0, "c": "a", "o": "a", "b": True}


def test_unseen_category_respects_the_policy() -> None:
    assert SPEC.check([row(c="zebra")]) == [Violation(row=0, feature="c", reason="unseen_category", value="zebra")]
    with pytest.raises(InputRejectedError):
        SPEC.transform([row(c="zebra")])
    assert FLAG.check([{**GOOD_FLAG, "c": "zebra"}])[0].action == "flag"
    FLAG.transform([{**GOOD_FLAG, "c": "zebra"}])  # does not raise


def test_checked_reports_the_clean_columns() -> None:
    rows = [GOOD, row(x=3, n=4.0, c="b", b=False)]
    checked = SPEC.guards.check(to_columns(rows, SPEC.feature_names))
    assert checked.n_rows == 2 and checked.ok and checked.violations == []
    assert np.asarray(checked.columns["x"]).tolist() == [1.5, 3.0]
    assert np.asarray(checked.columns["n"]).tolist() == [2.0, 4.0]
    assert np.asarray(checked.columns["c"]).tolist() == [0, 1]  # category codes
    assert np.asarray(checked.columns["b"]).tolist() == [1.0, 0.0]


def test_check_never_raises_and_enforce_does() -> None:
    bad = [{"x": object(), "n": b"1", "c": ("a",), "b": {1, 2}}]
    guards = compile_guards(SPEC)
    checked = guards.check(to_columns(bad, SPEC.feature_names))
    assert not checked.ok and checked.rejected is not None and checked.rejected.tolist() == [True]
    assert [v.reason for v in checked.violations] == ["wrong_type"] * 4
    with pytest.raises(InputRejectedError) as caught:
        guards.enforce(to_columns(bad, SPEC.feature_names))
    assert len(caught.value.violations) == 4


def test_guards_are_compiled_once_per_spec() -> None:
    spec = FeatureSpec(name="s", features=(NumberFeature(name="x"),))
    assert spec.guards is spec.guards
    assert spec.transformer is spec.transformer


def test_empty_batch_has_no_violation() -> None:
    assert SPEC.check([]) == []
    assert SPEC.transform([]).shape == (0, 5)


def test_dataframe_missing_values_follow_the_imputation_policy() -> None:
    spec = FeatureSpec(
        name="d",
        features=(NumberFeature(name="x", missing="impute", fill=7.0), NumberFeature(name="y"), CategoryFeature(name="c", categories=("a",))),
    )
    frame = pd.DataFrame({"x": [1.0, np.nan], "y": [np.nan, 2.0], "c": ["a", None]})
    assert [(v.row, v.feature, v.reason, v.value) for v in spec.check(frame)] == [(0, "y", "missing", None), (1, "c", "missing", None)]
    ok = pd.DataFrame({"x": [np.nan, 1.0], "y": [2.0, 3.0], "c": ["a", "a"]})
    assert spec.transform(ok).tolist() == [[7.0, 2.0, 1.0], [1.0, 3.0, 1.0]]
    assert spec.transform(ok.iloc[:1]).tolist() == [[7.0, 2.0, 1.0]]  # one row, through the batch path


def test_checked_marks_the_imputed_cells() -> None:
    spec = FeatureSpec(
        name="i",
        features=(NumberFeature(name="x", missing="impute", fill=4.0), CategoryFeature(name="c", categories=("a",), missing="impute", fill="a")),
    )
    batch = spec.guards.check(to_columns([{"x": None, "c": "a"}, {"x": 1.0}, {"x": 2.0, "c": "a"}], spec.feature_names))
    assert batch.violations == [] and batch.ok
    assert {k: np.asarray(v).tolist() for k, v in batch.imputed.items()} == {"x": [True, False, False], "c": [False, True, False]}
    one = spec.guards.check(to_columns([{"c": "a"}], spec.feature_names))
    assert one.violations == [] and set(one.imputed) == {"x"}
    assert spec.guards.check(to_columns([{"x": 1.0, "c": "a"}], spec.feature_names)).imputed == {}
