"""The feature spec: the single description of a model's inputs and outputs.

This module owns the spec's schema (msgspec Structs), reading and writing spec files
(YAML or JSON, chosen by extension), the published JSON Schema and the content digest.
It must not know how a spec is fitted (``gateway.fitting``), how rows are checked
(``gateway.guards``) or transformed (``gateway.transform``); those compile a spec.

``FeatureSpec`` is also the public entry point: ``FeatureSpec.fit``, ``.check``,
``.transform``, ``.save`` and ``.load`` delegate to the modules that own each job, so
training code and the server run the very same code.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta

from gateway.documents import DocumentBudget, decode_document, read_document
from gateway.errors import SpecError, UsageError
from gateway.files import write_atomic

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from gateway.guards import Guards
    from gateway.transform import Transform
    from gateway.violations import Violation

__all__ = [
    "MAX_SEGMENTS",
    "MAX_SEGMENT_VALUES",
    "OTHER",
    "SPEC_FORMAT",
    "BooleanFeature",
    "CategoryBaseline",
    "CategoryFeature",
    "Feature",
    "FeatureSpec",
    "IntegerFeature",
    "Log",
    "MinMax",
    "NumberFeature",
    "NumericBaseline",
    "NumericTransform",
    "ObservedRange",
    "OneHot",
    "Ordinal",
    "Output",
    "OutputBaseline",
    "Passthrough",
    "SegmentBaseline",
    "Segmentation",
    "Standardize",
    "check_segments",
    "feature_spec_schema",
    "load_spec",
    "output_column_names",
    "save_spec",
]

SPEC_FORMAT = 1
"""Version of the spec file format. Bumped only on an incompatible change."""

Name = Annotated[str, Meta(min_length=1, max_length=128)]
OnViolation = Literal["reject", "clip", "flag"]
MissingMode = Literal["reject", "impute"]
UnknownFields = Literal["reject", "ignore"]


def _check_choice(field: str, value: object, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(map(repr, allowed))}, not {value!r}")


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Base of every spec-file Struct (subclasses repeat ``frozen`` and ``kw_only``: msgspec
    inherits ``frozen`` but type checkers read a subclass without it as mutable, and msgspec
    applies ``kw_only`` per class).

    - ``frozen``: a loaded spec is a value; its digest must not change under a model.
    - ``forbid_unknown_fields``: a misspelt key in a hand-edited spec is an error, not a
      silently ignored setting.
    - ``kw_only``: fields are named at every construction site, so reordering is safe.
    - ``omit_defaults``: written files stay short and show only what was chosen.
    """


# --- transforms -------------------------------------------------------------------------


class Standardize(Base, frozen=True, kw_only=True, tag_field="kind", tag="standardize"):
    """``(x - mean) / std``. ``std`` is never 0 (a constant column gets 1)."""

    mean: float
    std: Annotated[float, Meta(gt=0)]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(
                f"standardize needs a finite mean and a finite std > 0, got mean={self.mean} std={self.std}"
            )


class MinMax(Base, frozen=True, kw_only=True, tag_field="kind", tag="minmax"):
    """``(x - low) / (high - low)``: the training range maps to [0, 1]."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"minmax needs finite low and high, got low={self.low} high={self.high}")
        if not self.high > self.low:
            raise ValueError(f"minmax needs high > low, got low={self.low} high={self.high}")
        if not math.isfinite(self.high - self.low):
            raise ValueError(f"minmax range is too wide for float64: low={self.low} high={self.high}")


class Log(Base, frozen=True, kw_only=True, tag_field="kind", tag="log"):
    """``log1p(max(x - shift, 0))``: for skewed, non-negative quantities.

    ``shift`` is the lower end of the feature's domain, so every valid value maps to a
    finite number; the ``max`` keeps flagged values below the domain finite too.
    """

    shift: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.shift):
            raise ValueError(f"log needs a finite shift, got {self.shift}")


class Passthrough(Base, frozen=True, kw_only=True, tag_field="kind", tag="passthrough"):
    """The value as it is (booleans as 0 and 1)."""


class OneHot(Base, frozen=True, kw_only=True, tag_field="kind", tag="onehot"):
    """One output column per known category; an unseen (flagged) category is all zeros."""


class Ordinal(Base, frozen=True, kw_only=True, tag_field="kind", tag="ordinal"):
    """The category's index in ``categories``; an unseen (flagged) category is -1."""


NumericTransform = Standardize | MinMax | Log | Passthrough
CategoryTransform = OneHot | Ordinal


# --- baselines (the training distributions drift is measured against) --------------------


class NumericBaseline(Base, frozen=True, kw_only=True):
    """Training distribution of a number: counts between quantile-based bin edges.

    With ``k`` interior ``edges`` there are ``k + 1`` bins: ``(-inf, e0)``, ``[e0, e1)``,
    ..., ``[e_{k-1}, inf)``, so every live value falls in exactly one bin.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    missing: int = 0
    """Training rows where the value was absent."""

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError("a numeric baseline needs exactly len(edges) + 1 counts")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("baseline edges must increase strictly")
        if any(not math.isfinite(e) for e in self.edges):
            raise ValueError("baseline edges must be finite")
        if any(c < 0 for c in self.counts) or self.missing < 0:
            raise ValueError("baseline counts must not be negative")


class CategoryBaseline(Base, frozen=True, kw_only=True):
    """Training distribution of a category (or boolean): a count per known value."""

    counts: tuple[int, ...]
    """Counts in the order of the feature's ``categories`` (booleans: false, true)."""
    missing: int = 0


# --- features ---------------------------------------------------------------------------

OTHER = "(other)"
"""The category name of an open vocabulary's bucket for unseen values: its one-hot column
is ``name=(other)``. Parenthesised, so it cannot be mistaken for a value from the data."""


class ObservedRange(Base, frozen=True, kw_only=True):
    """What the training data held, beside the ``min``/``max`` the spec allows: a reviewer
    sees both the evidence and how far the fit extrapolated from it."""

    min: float
    max: float
    rows: Annotated[int, Meta(ge=0)] = 0
    """Training rows that held a value (the sample the widening was estimated from)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min) and math.isfinite(self.max) and self.min <= self.max):
            raise ValueError(f"observed range needs finite min <= max, got min={self.min} max={self.max}")


class _FeatureBase(Base, frozen=True, kw_only=True):
    name: Name
    description: str = ""
    on_violation: OnViolation = "reject"
    """``reject`` the row, ``clip`` a number into its domain, or ``flag`` (predict, mark)."""
    missing: MissingMode = "reject"
    """An absent value (field left out, or ``null``): ``reject`` the row with reason
    ``missing``, or ``impute`` it with ``fill``."""
    fill: float | str | bool | None = None
    """The imputed value: the training median for numbers, the most frequent value for
    categories and booleans. Required when ``missing`` is ``impute``."""
    log: bool = True
    """False: the prediction log (``driftgate serve --log-dir``) leaves this field out of
    the rows it writes (personal data, secrets); the model still reads it."""

    def _check_fill(self) -> None:
        # Decoding checks these from the annotations; a constructor call must refuse the same.
        if not 1 <= len(self.name) <= 128:
            raise ValueError("a feature needs a name of 1 to 128 characters")
        _check_choice("on_violation", self.on_violation, OnViolation)
        _check_choice("missing", self.missing, MissingMode)
        if self.missing == "impute" and self.fill is None:
            raise ValueError(f"feature {self.name!r}: missing 'impute' needs a fill value")


class NumberFeature(_FeatureBase, frozen=True, kw_only=True, tag_field="type", tag="number"):
    """A real number. JSON numbers only: a string or a boolean is ``wrong_type``."""

    min: float | None = None
    max: float | None = None
    transform: NumericTransform = Passthrough()
    baseline: NumericBaseline | None = None
    observed: ObservedRange | None = None
    """The training data's range, when ``min``/``max`` were fitted from it (the allowed
    range is wider: see ``gateway.fitting``)."""

    def __post_init__(self) -> None:
        _check_numeric(self)


class IntegerFeature(_FeatureBase, frozen=True, kw_only=True, tag_field="type", tag="integer"):
    """A whole number. A number with a fractional part is ``wrong_type``."""

    min: int | None = None
    max: int | None = None
    transform: NumericTransform = Passthrough()
    baseline: NumericBaseline | None = None
    observed: ObservedRange | None = None
    """The training data's range, when ``min``/``max`` were fitted from it."""

    def __post_init__(self) -> None:
        _check_numeric(self)


class CategoryFeature(_FeatureBase, frozen=True, kw_only=True, tag_field="type", tag="category"):
    """One of a known set of strings. Anything else is ``unseen_category``."""

    categories: tuple[str, ...]
    transform: CategoryTransform = OneHot()
    baseline: CategoryBaseline | None = None
    other: bool = False
    """An open vocabulary: a value outside ``categories`` is fed to the model as a category
    of its own, ``(other)`` (one more one-hot column, ``name=(other)``; ordinal code
    ``len(categories)``), and the row is flagged (reason ``unseen_category``). Needs
    ``on_violation: flag``. False: an unseen value is a violation like any other."""

    def __post_init__(self) -> None:
        if not self.categories:
            raise ValueError(f"category feature {self.name!r} needs at least one category")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"category feature {self.name!r} lists a category twice")
        if self.on_violation == "clip":
            raise ValueError(f"feature {self.name!r}: 'clip' applies to numbers only")
        if self.other and self.on_violation != "flag":
            raise ValueError(f"feature {self.name!r}: an 'other' bucket flags unseen values: it needs on_violation 'flag'")
        if self.other and OTHER in self.categories:
            raise ValueError(f"feature {self.name!r}: {OTHER!r} names the other bucket and cannot be a category")
        if self.baseline is not None and len(self.baseline.counts) != len(self.categories):
            raise ValueError(f"feature {self.name!r}: baseline needs one count per category")
        self._check_fill()
        if self.missing == "impute" and self.fill not in self.categories:
            raise ValueError(f"feature {self.name!r}: imputed value must be a known category")


class BooleanFeature(_FeatureBase, frozen=True, kw_only=True, tag_field="type", tag="boolean"):
    """``true`` or ``false`` (JSON booleans only; 0 and 1 are ``wrong_type``)."""

    transform: Passthrough = Passthrough()
    baseline: CategoryBaseline | None = None

    def __post_init__(self) -> None:
        if self.on_violation == "clip":
            raise ValueError(f"feature {self.name!r}: 'clip' applies to numbers only")
        if self.baseline is not None and len(self.baseline.counts) != 2:
            raise ValueError(f"feature {self.name!r}: boolean baseline needs 2 counts")
        self._check_fill()
        if self.missing == "impute" and not isinstance(self.fill, bool):
            raise ValueError(f"feature {self.name!r}: imputed value must be true or false")


Feature = NumberFeature | IntegerFeature | CategoryFeature | BooleanFeature


def output_column_names(features: tuple[Feature, ...]) -> list[str]:
    """The transform's output columns, in order: a feature's own name, or ``name=category``
    for each column of a one-hot category (and ``name=(other)`` last for an open vocabulary)."""
    columns: list[str] = []
    for f in features:
        if isinstance(f, CategoryFeature) and isinstance(f.transform, OneHot):
            columns.extend(f"{f.name}={c}" for c in f.categories)
            if f.other:
                columns.append(f"{f.name}={OTHER}")
        else:
            columns.append(f.name)
    return columns


def _check_numeric(f: NumberFeature | IntegerFeature) -> None:
    for bound in (f.min, f.max):
        if bound is not None and not math.isfinite(bound):
            raise ValueError(f"feature {f.name!r}: min and max must be finite")
    if f.min is not None and f.max is not None and f.min > f.max:
        raise ValueError(f"feature {f.name!r}: min {f.min} is above max {f.max}")
    if f.on_violation == "clip" and (f.min is None or f.max is None):
        raise ValueError(f"feature {f.name!r}: 'clip' needs both min and max")
    f._check_fill()
    if f.missing == "impute":
        v = f.fill
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"feature {f.name!r}: imputed value must be a finite number")
        if isinstance(f, IntegerFeature) and not float(v).is_integer():
            raise ValueError(f"feature {f.name!r}: an integer feature's fill must be a whole number, got {v}")
        if (f.min is not None and v < f.min) or (f.max is not None and v > f.max):
            raise ValueError(f"feature {f.name!r}: fill {v} lies outside [{f.min}, {f.max}]")
    if isinstance(f.transform, Log) and f.min is None:
        raise ValueError(f"feature {f.name!r}: the log transform needs a min")


# --- output -----------------------------------------------------------------------------


class HistogramBaseline(Base, frozen=True, kw_only=True):
    """A histogram with explicit edges (``len(counts) == len(edges) - 1``)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.edges) - 1:
            raise ValueError("a histogram needs len(edges) - 1 counts")
        if any(not math.isfinite(e) for e in self.edges):
            raise ValueError("histogram edges must be finite")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("histogram edges must increase strictly")
        if any(c < 0 for c in self.counts):
            raise ValueError("histogram counts must not be negative")


class OutputBaseline(Base, frozen=True, kw_only=True):
    """Training-side distribution of the model's output, recorded when it was trained.

    For classification: ``class_counts`` (in label order) and ``confidence`` (histogram of
    the top-class probability on reference data). For regression: ``values``.
    """

    class_counts: tuple[int, ...] | None = None
    confidence: HistogramBaseline | None = None
    values: HistogramBaseline | None = None


class Output(Base, frozen=True, kw_only=True):
    """What the model answers."""

    task: Literal["classification", "regression"]
    labels: tuple[str, ...] = ()
    """Class labels in the order of the model's probability columns (classification)."""
    target: str | None = None
    """Name of the training column the model predicts."""
    review_threshold: Annotated[float, Meta(ge=0, le=1)] | None = None
    """Classification rows whose confidence is below this are marked for human review."""
    baseline: OutputBaseline | None = None

    def __post_init__(self) -> None:
        if self.review_threshold is not None and not 0.0 <= self.review_threshold <= 1.0:
            raise ValueError(f"review_threshold must lie in [0, 1], got {self.review_threshold}")
        if self.task == "classification":
            if len(self.labels) < 2:
                raise ValueError("a classification output needs at least two labels")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("output labels must be unique")
        elif self.labels:
            raise ValueError("a regression output has no labels")
        b = self.baseline
        if b is not None and b.class_counts is not None and len(b.class_counts) != len(self.labels):
            raise ValueError("output baseline needs one class count per label")


# --- segments (category features that slice monitoring) -----------------------------------

MAX_SEGMENTS = 4
"""Segment features a spec may name: every one multiplies the series of the other features."""
MAX_SEGMENT_VALUES = 50
"""Values a segment feature may have (its categories): each is a slice of every other
feature's drift, so the series stay bounded; values beyond them are counted as ``_other``."""


class SegmentBaseline(Base, frozen=True, kw_only=True):
    """The training rows of one segment value, and the other features' distribution in them."""

    value: str
    rows: Annotated[int, Meta(ge=0)] = 0
    counts: dict[str, tuple[int, ...]] = {}
    """Per feature, its training counts among these rows in the feature's drift bins: the
    baseline's bins (a number's quantile bins; a category's categories, then unseen; a
    boolean's false, true), then missing."""


class Segmentation(Base, frozen=True, kw_only=True):
    """A category feature whose values slice monitoring (rows, rejections, confidence,
    feedback accuracy, and the drift of every other feature against the segment's own
    training baseline)."""

    feature: Name
    baselines: tuple[SegmentBaseline, ...] = ()
    """Per value of the feature (fitted by ``fit-spec --segment``): without them, a segment's
    drift is measured against the whole training baseline."""


def drift_bins(feature: Feature) -> int | None:
    """The number of drift bins of a feature with a baseline (see ``SegmentBaseline.counts``)."""
    b = feature.baseline
    if b is None:
        return None
    if isinstance(feature, CategoryFeature):
        return len(feature.categories) + 2
    if isinstance(feature, BooleanFeature):
        return 3
    assert isinstance(b, NumericBaseline)
    return len(b.edges) + 2


def _article(word: Any) -> str:
    return f"{'an' if str(word)[:1] in 'aeiou' else 'a'} {word}"


def check_segments(features: tuple[Feature, ...], segments: tuple[Segmentation, ...]) -> None:
    """Raise ``ValueError`` naming the first segment that a spec of ``features`` cannot take."""
    by_name = {f.name: f for f in features}
    if len(segments) > MAX_SEGMENTS:
        raise ValueError(f"a spec may name at most {MAX_SEGMENTS} segment features, not {len(segments)}")
    dupes = _repeated([s.feature for s in segments])
    if dupes:
        raise ValueError(f"segment features must be unique; repeated: {', '.join(dupes)}")
    for seg in segments:
        f = by_name.get(seg.feature)
        if f is None:
            raise ValueError(f"segment {seg.feature!r} is not a feature of the spec")
        if not isinstance(f, CategoryFeature):
            raise ValueError(f"segment feature {seg.feature!r} is {_article(f.__struct_config__.tag)}, not a category")  # noqa: TRY004
        if len(f.categories) > MAX_SEGMENT_VALUES:
            raise ValueError(
                f"segment feature {seg.feature!r} has {len(f.categories)} values; at most {MAX_SEGMENT_VALUES} may slice "
                "monitoring (choose a coarser feature)"
            )
        for b in seg.baselines:
            if b.value not in f.categories:
                raise ValueError(f"segment {seg.feature!r}: baseline value {b.value!r} is not one of its categories")
            for name, counts in b.counts.items():
                other = by_name.get(name)
                size = drift_bins(other) if other is not None else None
                if size is None or name == seg.feature:
                    raise ValueError(f"segment {seg.feature!r}={b.value}: {name!r} is not another feature with a baseline")
                if len(counts) != size or any(c < 0 for c in counts):
                    raise ValueError(
                        f"segment {seg.feature!r}={b.value}: {name!r} needs {size} non-negative counts, got {len(counts)}"
                    )


# --- the spec ---------------------------------------------------------------------------


class FeatureSpec(Base, frozen=True, kw_only=True, dict=True):
    """The description of a model's inputs, their transform, and the training baselines.

    Build one with ``FeatureSpec.fit(data, name=..., target=...)`` or load a file with
    ``FeatureSpec.load(path)``. ``dict=True`` lets compiled guards and transform be
    cached on the instance (``cached_property``) while the fields stay frozen.
    """

    name: Name
    features: tuple[Feature, ...]
    output: Output | None = None
    description: str = ""
    unknown_fields: UnknownFields = "reject"
    """A field that is not a feature: ``reject`` (reason ``unknown_feature``) or ``ignore``."""
    ignored_fields: tuple[Name, ...] = ()
    """Fields of the training data the model does not read (identifiers, timestamps, free
    text that fitting left out): a row may carry them, and they are dropped unread, as the
    output's target is."""
    segments: tuple[Segmentation, ...] = ()
    """Category features whose values slice monitoring (at most ``MAX_SEGMENTS``, each with
    at most ``MAX_SEGMENT_VALUES`` categories)."""
    format: int = SPEC_FORMAT

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 128:
            raise ValueError("a spec needs a name of 1 to 128 characters")
        _check_choice("unknown_fields", self.unknown_fields, UnknownFields)
        if not self.features:
            raise ValueError("a spec needs at least one feature")
        names = [f.name for f in self.features]
        dupes = _repeated(names)
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {', '.join(dupes)}")
        both = sorted(set(names) & set(self.ignored_fields))
        if both:
            raise ValueError(f"a field cannot be both a feature and ignored: {', '.join(both)}")
        columns = output_column_names(self.features)
        clashes = _repeated(columns)
        if clashes:
            raise ValueError(f"the transform's output columns must be unique; repeated: {', '.join(clashes)}")
        check_segments(self.features, self.segments)
        if self.format != SPEC_FORMAT:
            raise ValueError(f"unsupported spec format {self.format}; this driftgate reads {SPEC_FORMAT}")

    # -- identity --

    @cached_property
    def digest(self) -> str:
        """``sha256:<hex>`` of the canonical JSON encoding: same content, same digest."""
        # Decode and encode again so that equal specs hash equally whatever Python types
        # built them (min=0 and min=0.0 are the same spec; a float field always says 0.0).
        normal = msgspec.json.decode(msgspec.json.encode(self), type=FeatureSpec)
        canonical = msgspec.json.encode(normal, order="sorted")
        return "sha256:" + hashlib.sha256(canonical).hexdigest()

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    # -- compiled parts (built once per spec instance) --

    @cached_property
    def guards(self) -> Guards:
        from gateway.guards import compile_guards

        return compile_guards(self)

    @cached_property
    def transformer(self) -> Transform:
        from gateway.transform import compile_transform

        return compile_transform(self)

    @property
    def output_columns(self) -> tuple[str, ...]:
        """Names of the columns of ``transform``'s matrix, in order."""
        return self.transformer.columns

    # -- the public API shared by training code and the server --

    @classmethod
    def fit(cls, data: Any, *, name: str, target: str | None = None, **options: Any) -> FeatureSpec:
        """Infer a spec from training data. See ``gateway.fitting.fit_spec`` for options."""
        from gateway.fitting import fit_spec

        return fit_spec(data, name=name, target=target, **options)

    def check(self, data: Any) -> list[Violation]:
        """Every violation in ``data`` (records, columns or a DataFrame), row by row.

        Returns the same violations the server answers with, including those a ``clip``
        or ``flag`` policy let through (their ``action`` says so).
        """
        from gateway.lanes import columns_of

        return self.guards.check(columns_of(data, self.guards)).violations

    def transform(self, data: Any) -> NDArray[np.float32]:
        """Rows to the model's float32 matrix, shape ``(n_rows, len(output_columns))``.

        Raises ``InputRejectedError`` (with every violation) if a row breaks the spec;
        ``clip`` and ``flag`` policies are applied as the server applies them.
        """
        from gateway.lanes import columns_of

        checked = self.guards.enforce(columns_of(data, self.guards))
        return self.transformer.apply(checked.columns, checked.n_rows, checked.matrix, checked.row)

    def save(self, path: str | Path) -> None:
        save_spec(self, path)

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        return load_spec(path)


# --- files ------------------------------------------------------------------------------


def _format_of(path: Path) -> Literal["yaml", "json"]:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    raise UsageError(f"{path}: a spec file ends in .yaml, .yml or .json, not {suffix or 'nothing'!r}")


MAX_SPEC_BYTES = 4 * 1024 * 1024
"""The largest spec file read. A spec with 1,000 features and their baselines is about
0.5 MB; YAML parses at about 0.4 MB/s here, so the cap bounds a registration's parse to
~10 s and refuses a spec of a million categories (8 MB) before parsing it."""

SPEC_BUDGET = DocumentBudget("a spec", MAX_SPEC_BYTES)
"""A spec's bytes, and the nodes and depth of the document its YAML aliases expand to
(``gateway.documents``)."""


def decode_spec(data: bytes | str, fmt: Literal["yaml", "json"] = "yaml", source: str = "spec") -> FeatureSpec:
    """Decode spec text within ``SPEC_BUDGET``. Raises ``SpecError`` naming the field at
    fault, or ``PayloadTooLargeError`` (413, as any body over its limit) over 4 MiB."""
    return decode_document(data, FeatureSpec, SPEC_BUDGET, fmt=fmt, source=source, invalid=SpecError)


def encode_spec(spec: FeatureSpec, fmt: Literal["yaml", "json"] = "yaml") -> bytes:
    if fmt == "json":
        return msgspec.json.format(msgspec.json.encode(spec), indent=2) + b"\n"
    return msgspec.yaml.encode(spec)


def _repeated(items: list[str]) -> list[str]:
    """The items that occur more than once, sorted (one pass: a spec may hold a million)."""
    seen: set[str] = set()
    repeated = {x for x in items if x in seen or seen.add(x)}  # type: ignore[func-returns-value]
    return sorted(repeated)


def load_spec(path: str | Path) -> FeatureSpec:
    """Read a spec file (YAML or JSON by extension)."""
    p = Path(path)
    fmt = _format_of(p)
    raw = read_document(p, SPEC_BUDGET, "spec file")
    if not raw.strip():
        raise SpecError(f"{p}: the spec file is empty")
    return decode_spec(raw, fmt, source=str(p))


def save_spec(spec: FeatureSpec, path: str | Path) -> None:
    """Write a spec file atomically (YAML or JSON by extension)."""
    write_atomic(path, encode_spec(spec, _format_of(Path(path))))


def _clean_descriptions(node: Any) -> Any:
    """Docstrings as ``inspect.cleandoc`` leaves them: msgspec 0.23 dedents the class
    docstrings it puts in ``description``, older releases keep their indentation, and the
    published schema must not depend on which one is installed."""
    if isinstance(node, dict):
        return {k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _clean_descriptions(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node


def feature_spec_schema() -> dict[str, Any]:
    """The JSON Schema of the spec file, as published in ``feature_specs/``."""
    schema: dict[str, Any] = _clean_descriptions(msgspec.json.schema(FeatureSpec))
    schema["$id"] = "https://driftgate.dev/schema/feature-spec-1.json"
    schema["title"] = "driftgate feature spec"
    return schema
