"""``gateway.spec``: the spec's schema, its validation, files, JSON Schema and digest."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway import FeatureSpec, load_spec, save_spec
from gateway.errors import GatewayError, SpecError, UsageError
from gateway.spec import (
    SPEC_FORMAT,
    BooleanFeature,
    CategoryBaseline,
    CategoryFeature,
    HistogramBaseline,
    IntegerFeature,
    Log,
    MinMax,
    NumberFeature,
    NumericBaseline,
    OneHot,
    Ordinal,
    Output,
    OutputBaseline,
    Standardize,
    decode_spec,
    encode_spec,
    feature_spec_schema,
)

PENGUINS_YAML = """\
name: penguins
description: Palmer penguins species classifier
features:
  - type: category
    name: island
    categories: [Biscoe, Dream, Torgersen]
  - type: number
    name: bill_length_mm
    min: 30.0
    max: 60.0
    missing: impute
    fill: 44.45
    transform: {kind: standardize, mean: 43.9, std: 5.45}
    baseline: {edges: [40.0, 45.0], counts: [100, 120, 122], missing: 2}
  - type: integer
    name: year
    min: 2007
    max: 2009
    on_violation: clip
  - type: boolean
    name: tagged
    missing: impute
    fill: false
    on_violation: flag
output:
  task: classification
  labels: [Adelie, Chinstrap, Gentoo]
  target: species
"""


def penguins() -> FeatureSpec:
    return decode_spec(PENGUINS_YAML)


def spec_of(*features: Any, **kwargs: Any) -> FeatureSpec:
    return FeatureSpec(name="t", features=tuple(features), **kwargs)


# --- validation, in Python --------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: spec_of(NumberFeature(name="a"), BooleanFeature(name="a")), "feature names must be unique; repeated: a"),
        (lambda: spec_of(), "at least one feature"),
        (lambda: NumberFeature(name="x", min=2.0, max=1.0), "feature 'x': min 2.0 is above max 1.0"),
        (lambda: IntegerFeature(name="n", min=5, max=4), "feature 'n': min 5 is above max 4"),
        (lambda: NumberFeature(name="x", min=math.inf), "feature 'x': min and max must be finite"),
        (lambda: NumberFeature(name="x", max=math.nan), "feature 'x': min and max must be finite"),
        (lambda: NumberFeature(name="x", on_violation="clip"), "feature 'x': 'clip' needs both min and max"),
        (lambda: NumberFeature(name="x", min=0.0, on_violation="clip"), "feature 'x': 'clip' needs both min and max"),
        (lambda: IntegerFeature(name="n", max=3, on_violation="clip"), "feature 'n': 'clip' needs both min and max"),
        (lambda: CategoryFeature(name="c", categories=("a",), on_violation="clip"), "feature 'c': 'clip' applies to numbers only"),
        (lambda: BooleanFeature(name="b", on_violation="clip"), "feature 'b': 'clip' applies to numbers only"),
        (lambda: NumberFeature(name="x", missing="impute"), "feature 'x': missing 'impute' needs a fill value"),
        (lambda: CategoryFeature(name="c", categories=("a",), missing="impute"), "feature 'c': missing 'impute' needs a fill value"),
        (lambda: BooleanFeature(name="b", missing="impute"), "feature 'b': missing 'impute' needs a fill value"),
        (lambda: NumberFeature(name="x", missing="impute", fill="3"), "feature 'x': imputed value must be a finite number"),
        (lambda: NumberFeature(name="x", missing="impute", fill=True), "feature 'x': imputed value must be a finite number"),
        (lambda: NumberFeature(name="x", missing="impute", fill=math.nan), "feature 'x': imputed value must be a finite number"),
        (lambda: CategoryFeature(name="c", categories=("a",), missing="impute", fill="b"), "feature 'c': imputed value must be a known category"),
        (lambda: BooleanFeature(name="b", missing="impute", fill=1), "feature 'b': imputed value must be true or false"),
        (lambda: NumberFeature(name="x", transform=Log()), "feature 'x': the log transform needs a min"),
        (lambda: CategoryFeature(name="c", categories=()), "category feature 'c' needs at least one category"),
        (lambda: CategoryFeature(name="c", categories=("a", "a")), "category feature 'c' lists a category twice"),
        (
            lambda: CategoryFeature(name="c", categories=("a", "b"), baseline=CategoryBaseline(counts=(1,))),
            "feature 'c': baseline needs one count per category",
        ),
        (lambda: BooleanFeature(name="b", baseline=CategoryBaseline(counts=(1, 2, 3))), "feature 'b': boolean baseline needs 2 counts"),
        (lambda: MinMax(low=1.0, high=1.0), "minmax needs high > low, got low=1.0 high=1.0"),
        (lambda: NumericBaseline(edges=(1.0,), counts=(1,)), "exactly len(edges) + 1 counts"),
        (lambda: NumericBaseline(edges=(2.0, 1.0), counts=(1, 1, 1)), "edges must increase strictly"),
        (lambda: NumericBaseline(edges=(math.inf,), counts=(1, 1)), "edges must be finite"),
        (lambda: HistogramBaseline(edges=(0.0, 1.0), counts=(1, 2)), "len(edges) - 1 counts"),
        (lambda: Output(task="classification", labels=("a",)), "at least two labels"),
        (lambda: Output(task="classification", labels=("a", "a")), "output labels must be unique"),
        (lambda: Output(task="regression", labels=("a", "b")), "a regression output has no labels"),
        (
            lambda: Output(task="classification", labels=("a", "b"), baseline=OutputBaseline(class_counts=(1,))),
            "one class count per label",
        ),
        (lambda: spec_of(NumberFeature(name="x"), format=2), "unsupported spec format 2; this driftgate reads 1"),
        # What a file could not hold is refused when built in Python too.
        (lambda: Standardize(mean=math.nan, std=1.0), "standardize needs a finite mean and a finite std > 0"),
        (lambda: Standardize(mean=0.0, std=0.0), "standardize needs a finite mean and a finite std > 0"),
        (lambda: Standardize(mean=0.0, std=-1.0), "standardize needs a finite mean and a finite std > 0"),
        (lambda: Standardize(mean=0.0, std=math.inf), "standardize needs a finite mean and a finite std > 0"),
        (lambda: MinMax(low=-math.inf, high=math.inf), "minmax needs finite low and high"),
        (lambda: MinMax(low=-1.5e308, high=1.5e308), "minmax range is too wide for float64"),
        (lambda: Log(shift=math.nan), "log needs a finite shift"),
        (lambda: FeatureSpec(name="", features=(NumberFeature(name="x"),)), "a spec needs a name of 1 to 128 characters"),
        (lambda: FeatureSpec(name="n" * 129, features=(NumberFeature(name="x"),)), "a spec needs a name of 1 to 128 characters"),
        (lambda: NumberFeature(name=""), "a feature needs a name"),
        (lambda: Output(task="classification", labels=("a", "b"), review_threshold=1.5), "review_threshold must lie in [0, 1], got 1.5"),
        (lambda: Output(task="regression", review_threshold=-0.1), "review_threshold must lie in [0, 1]"),
        (lambda: IntegerFeature(name="n", missing="impute", fill=2.5), "feature 'n': an integer feature's fill must be a whole number, got 2.5"),
        (lambda: NumberFeature(name="x", min=0.0, max=1.0, missing="impute", fill=5.0), "feature 'x': fill 5.0 lies outside [0.0, 1.0]"),
        (lambda: IntegerFeature(name="n", min=3, missing="impute", fill=2.0), "feature 'n': fill 2.0 lies outside [3, None]"),
    ],
)
def test_invalid_specs_are_refused_with_a_clear_message(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_specs_are_frozen_values() -> None:
    spec = penguins()
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        spec.features[0].name = "other"  # type: ignore[misc]
    assert spec == penguins()
    assert hash(spec.features[1]) == hash(penguins().features[1])


def test_feature_names_and_output_columns() -> None:
    spec = penguins()
    assert spec.feature_names == ("island", "bill_length_mm", "year", "tagged")
    assert spec.output_columns == ("island=Biscoe", "island=Dream", "island=Torgersen", "bill_length_mm", "year", "tagged")


def test_defaults_fill_in_what_a_file_leaves_out() -> None:
    spec = decode_spec("name: s\nfeatures: [{type: number, name: x}, {type: category, name: c, categories: [a]}]\n")
    x, c = spec.features
    assert isinstance(x, NumberFeature) and isinstance(c, CategoryFeature)
    assert (x.on_violation, x.missing, x.fill, x.min, x.max) == ("reject", "reject", None, None, None)
    assert type(x.transform).__name__ == "Passthrough"
    assert c.transform == OneHot()
    assert (spec.unknown_fields, spec.format, spec.output) == ("reject", SPEC_FORMAT, None)


# --- files --------------------------------------------------------------------------------


def test_yaml_file_decodes_to_the_expected_spec() -> None:
    spec = penguins()
    island, bill, year, tagged = spec.features
    assert island == CategoryFeature(name="island", categories=("Biscoe", "Dream", "Torgersen"))
    assert bill == NumberFeature(
        name="bill_length_mm",
        min=30.0,
        max=60.0,
        missing="impute",
        fill=44.45,
        transform=Standardize(mean=43.9, std=5.45),
        baseline=NumericBaseline(edges=(40.0, 45.0), counts=(100, 120, 122), missing=2),
    )
    assert year == IntegerFeature(name="year", min=2007, max=2009, on_violation="clip")
    assert tagged == BooleanFeature(name="tagged", missing="impute", fill=False, on_violation="flag")
    assert spec.output == Output(task="classification", labels=("Adelie", "Chinstrap", "Gentoo"), target="species")


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".JSON", ".YAML"])
def test_save_and_load_round_trip(tmp_path: Path, suffix: str) -> None:
    spec = penguins()
    path = tmp_path / f"spec{suffix}"
    save_spec(spec, path)
    assert load_spec(path) == spec
    assert FeatureSpec.load(str(path)).digest == spec.digest


def test_save_picks_the_format_by_extension(tmp_path: Path) -> None:
    spec = penguins()
    spec.save(tmp_path / "s.json")
    spec.save(tmp_path / "s.yaml")
    as_json = json.loads((tmp_path / "s.json").read_text())
    assert as_json["name"] == "penguins" and as_json["features"][0]["type"] == "category"
    yaml_text = (tmp_path / "s.yaml").read_text()
    assert yaml_text.startswith("name: penguins\n")
    assert not yaml_text.lstrip().startswith("{")


def test_saved_files_omit_defaults(tmp_path: Path) -> None:
    spec = spec_of(NumberFeature(name="x"))
    spec.save(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == {"name": "t", "features": [{"type": "number", "name": "x"}]}


def test_save_is_atomic_and_creates_directories(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "spec.yaml"
    penguins().save(path)
    penguins().save(path)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["spec.yaml"]  # no temporary left behind
    assert load_spec(path) == penguins()


def test_unknown_key_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(PENGUINS_YAML.replace("    on_violation: clip\n", "    on_violaton: clip\n"))
    with pytest.raises(SpecError, match=r"unknown field `on_violaton`.*\$\.features\[2\]") as caught:
        load_spec(path)
    assert str(path) in str(caught.value)


def test_unknown_top_level_key_is_refused() -> None:
    with pytest.raises(SpecError, match="unknown field `colour`"):
        decode_spec('{"name": "s", "features": [{"type": "boolean", "name": "b"}], "colour": "red"}', "json")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: s\nfeatures: []\n", "at least one feature"),
        ("name: s\nfeatures: [{type: number, name: a}, {type: number, name: a}]\n", "repeated: a"),
        ("name: s\nfeatures: [{type: number, name: x, min: 2, max: 1}]\n", "min 2.0 is above max 1.0"),
        ("name: s\nfeatures: [{type: number, name: x, on_violation: clip, min: 0}]\n", "'clip' needs both min and max"),
        ("name: s\nfeatures: [{type: category, name: c, categories: [a], on_violation: clip}]\n", "'clip' applies to numbers only"),
        ("name: s\nfeatures: [{type: number, name: x, missing: impute}]\n", "needs a fill value"),
        ("name: s\nfeatures: [{type: number, name: x}]\nformat: 2\n", "unsupported spec format 2"),
        ("name: s\nfeatures: [{type: text, name: x}]\n", "Invalid value 'text'"),
        ("name: s\nfeatures: [{type: number, name: x, transform: {kind: onehot}}]\n", "$.features[0].transform"),
        ("name: s\nfeatures: [{type: number, name: x, transform: {kind: standardize, mean: 0, std: 0}}]\n", "$.features[0].transform.std"),
        ("name: s\nfeatures: [{type: number, name: x, on_violation: drop}]\n", "$.features[0].on_violation"),
        ("name: ''\nfeatures: [{type: number, name: x}]\n", "$.name"),
        (f"name: {'n' * 129}\nfeatures: [{{type: number, name: x}}]\n", "$.name"),
        ("name: s\nfeatures: [{type: number, name: x}]\noutput: {task: classification, labels: [a, b], review_threshold: 1.5}\n", "review_threshold"),
        ("name: s\n", "missing required field `features`"),
        ("- just\n- a list\n", "Expected `object`"),
        ("name: [unclosed\n", "line 1"),
    ],
)
def test_invalid_files_raise_spec_error_naming_the_fault(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert where in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")
    assert isinstance(caught.value, GatewayError) and caught.value.status_hint == 422


def test_malformed_json_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="spec: "):
        decode_spec(b'{"name": "s", "features": [', "json")


def test_unsupported_file_extension_is_a_usage_error(tmp_path: Path) -> None:
    for name in ("spec.txt", "spec", "spec.toml"):
        with pytest.raises(UsageError, match="a spec file ends in .yaml, .yml or .json"):
            load_spec(tmp_path / name)
        with pytest.raises(UsageError, match="a spec file ends in .yaml, .yml or .json"):
            save_spec(penguins(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(SpecError, match="the spec file is empty"):
        load_spec(empty)


def test_yaml_and_json_files_of_one_spec_load_equal(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(encode_spec(penguins(), "json"))
    (tmp_path / "a.yaml").write_bytes(encode_spec(penguins(), "yaml"))
    assert load_spec(tmp_path / "a.json") == load_spec(tmp_path / "a.yaml") == penguins()


# --- JSON Schema --------------------------------------------------------------------------


def test_json_schema_describes_the_spec() -> None:
    schema = feature_spec_schema()
    assert isinstance(schema, dict)
    assert schema["$ref"] == "#/$defs/FeatureSpec"
    assert schema["$id"].endswith("feature-spec-1.json")
    assert schema["title"] == "driftgate feature spec"
    defs = schema["$defs"]
    for name in ("FeatureSpec", "NumberFeature", "IntegerFeature", "CategoryFeature", "BooleanFeature", "Output", "Standardize", "Log"):
        assert name in defs, name
    top = defs["FeatureSpec"]
    assert set(top["required"]) == {"name", "features"}
    assert {"name", "features", "output", "unknown_fields", "format"} <= set(top["properties"])
    assert defs["Standardize"]["properties"]["std"]["exclusiveMinimum"] == 0
    json.dumps(schema)  # serialisable as it is published


# --- digest -------------------------------------------------------------------------------


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


def test_digest_format() -> None:
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", penguins().digest)


def test_digest_is_stable_across_key_order(tmp_path: Path) -> None:
    doc = json.loads(encode_spec(penguins(), "json"))
    shuffled = _reverse_keys(doc)
    assert list(shuffled) != list(doc)  # the keys really are in another order
    (tmp_path / "a.json").write_text(json.dumps(doc))
    (tmp_path / "b.json").write_text(json.dumps(shuffled, indent=4))
    a, b = load_spec(tmp_path / "a.json"), load_spec(tmp_path / "b.json")
    assert a.digest == b.digest == penguins().digest


def test_digest_is_stable_across_formatting_and_format(tmp_path: Path) -> None:
    compact = PENGUINS_YAML
    (tmp_path / "a.yaml").write_text(compact)
    (tmp_path / "b.yaml").write_text("# a comment\n" + compact.replace("[Biscoe, Dream, Torgersen]", "\n      - Biscoe\n      - Dream\n      - Torgersen"))
    (tmp_path / "c.json").write_bytes(encode_spec(penguins(), "json"))
    digests = {load_spec(tmp_path / n).digest for n in ("a.yaml", "b.yaml", "c.json")}
    assert digests == {penguins().digest}


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace("max: 60.0", "max: 61.0"),
        lambda t: t.replace("Torgersen", "Torgersen2"),
        lambda t: t.replace("name: penguins", "name: penguins2"),
        lambda t: t.replace("on_violation: flag", "on_violation: reject"),
        lambda t: t.replace("[Biscoe, Dream, Torgersen]", "[Dream, Biscoe, Torgersen]"),  # order matters: it is the one-hot order
    ],
)
def test_digest_changes_with_content(change: Any) -> None:
    assert decode_spec(change(PENGUINS_YAML)).digest != penguins().digest


def test_explicit_defaults_do_not_change_the_digest() -> None:
    explicit = PENGUINS_YAML.replace("    name: island\n", "    name: island\n    on_violation: reject\n    description: ''\n")
    assert decode_spec(explicit) == penguins()
    assert decode_spec(explicit).digest == penguins().digest


def test_equal_specs_have_equal_digests(tmp_path: Path) -> None:
    """min=0 and min=0.0 are one spec: equal, with one digest, before and after a round trip."""
    with_int = spec_of(NumberFeature(name="x", min=0, max=10, missing="impute", fill=5))
    with_float = spec_of(NumberFeature(name="x", min=0.0, max=10.0, missing="impute", fill=5.0))
    assert with_int == with_float
    with_int.save(tmp_path / "s.json")
    assert load_spec(tmp_path / "s.json").digest == with_int.digest
    assert with_int.digest == with_float.digest


# --- what the constructor accepts, a file must hold ------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: spec_of(NumberFeature(name="n" * 129)),
            id="feature-name-129",
        ),
        pytest.param(lambda: spec_of(NumberFeature(name="x", on_violation="drop")), id="on-violation-drop"),  # type: ignore[arg-type]
        pytest.param(lambda: spec_of(NumberFeature(name="x", missing="skip")), id="missing-skip"),  # type: ignore[arg-type]
        pytest.param(lambda: spec_of(NumberFeature(name="x"), unknown_fields="drop"), id="unknown-fields-drop"),  # type: ignore[arg-type]
        pytest.param(lambda: spec_of(NumberFeature(name="x", transform=Standardize(mean=math.nan, std=1.0))), id="standardize-mean-nan"),
        pytest.param(lambda: spec_of(NumberFeature(name="x", transform=Standardize(mean=0.0, std=0.0))), id="standardize-std-0"),
        pytest.param(lambda: spec_of(NumberFeature(name="x", transform=MinMax(low=-math.inf, high=math.inf))), id="minmax-infinite"),
        pytest.param(lambda: FeatureSpec(name="", features=(NumberFeature(name="x"),)), id="empty-name"),
        pytest.param(lambda: spec_of(NumberFeature(name="x"), output=Output(task="classification", labels=("a", "b"), review_threshold=2.0)), id="review-threshold-2"),
        pytest.param(lambda: FeatureSpec(name="s" * 128, features=(NumberFeature(name="n" * 128),)), id="names-at-128"),
        pytest.param(lambda: spec_of(NumberFeature(name="x", transform=Standardize(mean=1.5, std=2.0))), id="plain"),
    ],
)
def test_what_the_constructor_accepts_loads_back(tmp_path: Path, build: Any) -> None:
    """A spec is refused when it is built, or it survives save and load (both formats) unchanged."""
    try:
        spec = build()
    except ValueError:
        return  # refused up front: fine
    for suffix in (".json", ".yaml"):
        spec.save(tmp_path / f"spec{suffix}")
        loaded = load_spec(tmp_path / f"spec{suffix}")
        assert msgspec.yaml.encode(loaded) == msgspec.yaml.encode(spec), suffix


def test_decoding_checks_the_same_rules_as_the_constructor() -> None:
    """``__post_init__`` also runs on decode, so a file cannot hold what Python refuses."""
    with pytest.raises(SpecError, match="imputed value must be a known category"):
        decode_spec("name: s\nfeatures: [{type: category, name: c, categories: [a], missing: impute, fill: b}]\n")
    with pytest.raises(SpecError, match="the log transform needs a min"):
        decode_spec("name: s\nfeatures: [{type: number, name: x, transform: {kind: log}}]\n")


def test_ordinal_and_categories_round_trip_through_json() -> None:
    spec = spec_of(CategoryFeature(name="c", categories=("yes", "no", "null", "1", ""), transform=Ordinal()))
    for fmt in ("json", "yaml"):
        back = decode_spec(encode_spec(spec, fmt), fmt)  # type: ignore[arg-type]
        assert back == spec
        assert back.features[0].categories == ("yes", "no", "null", "1", "")  # type: ignore[union-attr]
