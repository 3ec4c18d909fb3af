"""The sliding drift window (``gateway.monitoring.drift``) on a small hand-made spec.

Rows go through the spec's guards first, exactly as ``gateway.service.predict`` feeds the
window: clean columns (numbers as floats, categories as codes, -1 for a flagged unseen
one), imputed cells marked. A one-row batch takes the guards' (and the window's) scalar
path, a larger one the numpy path. Time is an injected clock, never ``sleep``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from gateway.monitoring.drift import CHUNKS, MIN_ROWS, PSI_FLOOR, DriftWindow, psi
from gateway.monitoring.metrics import ModelMetrics, PredictedBatch
from gateway.spec import (
    BooleanFeature,
    CategoryBaseline,
    CategoryFeature,
    FeatureSpec,
    HistogramBaseline,
    IntegerFeature,
    NumberFeature,
    NumericBaseline,
    Output,
    OutputBaseline,
)
from gateway.table import to_columns

X_EDGES = (2.0, 5.0, 8.0)
X_COUNTS = (20, 30, 30, 10)
X_MISSING = 10
K_EDGES = (1.0, 2.0)
K_COUNTS = (25, 25, 50)
C_CATEGORIES = ("a", "b")
C_COUNTS = (75, 25)
F_COUNTS = (50, 50)
CLASS_COUNTS = (50, 50)
CONF_EDGES = (0.5, 0.75, 1.0)
CONF_COUNTS = (25, 75)

SPEC = FeatureSpec(
    name="toy",
    features=(
        NumberFeature(
            name="x", min=0.0, max=10.0, missing="impute", fill=5.0,
            baseline=NumericBaseline(edges=X_EDGES, counts=X_COUNTS, missing=X_MISSING),
        ),
        IntegerFeature(name="k", min=0, max=3, baseline=NumericBaseline(edges=K_EDGES, counts=K_COUNTS)),
        CategoryFeature(
            name="c", categories=C_CATEGORIES, on_violation="flag", missing="impute", fill="a",
            baseline=CategoryBaseline(counts=C_COUNTS),
        ),
        BooleanFeature(name="f", baseline=CategoryBaseline(counts=F_COUNTS)),
    ),
    output=Output(
        task="classification",
        labels=("no", "yes"),
        baseline=OutputBaseline(class_counts=CLASS_COUNTS, confidence=HistogramBaseline(edges=CONF_EDGES, counts=CONF_COUNTS)),
    ),
)  # fmt: skip

REGRESSION_SPEC = FeatureSpec(
    name="toy-regression",
    features=(NumberFeature(name="x", min=0.0, max=10.0, baseline=NumericBaseline(edges=X_EDGES, counts=X_COUNTS)),),
    output=Output(task="regression", baseline=OutputBaseline(values=HistogramBaseline(edges=(0.0, 10.0, 20.0, 30.0), counts=(1, 2, 1)))),
)

FEATURES = ("x", "k", "c", "f")


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def row(x: float | None = 3.0, k: int = 1, c: str | None = "a", f: bool = True) -> dict[str, Any]:
    return {"x": x, "k": k, "c": c, "f": f}


def observe(
    window: DriftWindow,
    records: Sequence[dict[str, Any]],
    classes: Sequence[int] | None = None,
    confidence: Sequence[float] | None = None,
    values: Sequence[float] | None = None,
) -> None:
    """Guard ``records`` as the server does and count them in ``window`` as one batch.

    A classifier always answers with a class and a confidence per row: unless given,
    class 0 with confidence 0.9 (a regressor: value 5.0).
    """
    spec = SPEC if "k" in window.by_name else REGRESSION_SPEC
    n = len(records)
    if spec is SPEC:
        classes = [0] * n if classes is None else classes
        confidence = [0.9] * n if confidence is None else confidence
    elif values is None:
        values = [5.0] * n
    checked = spec.guards.check(to_columns(list(records), spec.feature_names))
    assert checked.rejected is None, checked.violations
    window.observe(
        checked.columns,
        checked.imputed,
        checked.n_rows,
        None if classes is None else np.asarray(classes, dtype=np.intp),
        None if confidence is None else np.asarray(confidence, dtype=np.float32),
        None if values is None else np.asarray(values, dtype=np.float32),
    )


def random_rows(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """Rows over every bin, with missing, unseen and edge values."""
    xs = rng.choice([0.0, 1.5, 2.0, 3.3, 4.999, 5.0, 7.0, 8.0, 9.5, 10.0, None], size=n)
    ks = rng.integers(0, 4, size=n)
    cs = rng.choice(["a", "b", "unseen-value", None], size=n)
    fs = rng.integers(0, 2, size=n)
    return [row(x=None if x is None else float(x), k=int(k), c=c, f=bool(b)) for x, k, c, b in zip(xs, ks, cs, fs, strict=True)]


def live(window: DriftWindow, name: str) -> list[int]:
    return window.live_counts(window.by_name[name]).tolist()


def baseline_rows() -> tuple[list[dict[str, Any]], list[int], list[float]]:
    """100 rows whose every segment has exactly the baseline's shares."""
    xs: list[float | None] = [1.0] * 20 + [3.0] * 30 + [6.0] * 30 + [9.0] * 10 + [None] * 10
    ks = [0] * 25 + [1] * 25 + [2] * 25 + [3] * 25
    cs = ["a", "a", "a", "b"] * 25
    fs = [False, True] * 50
    rows = [row(x=x, k=k, c=c, f=f) for x, k, c, f in zip(xs, ks, cs, fs, strict=True)]
    classes = [0, 1] * 50
    confidence = [0.6, 0.9, 0.9, 0.9] * 25
    return rows, classes, confidence


# --- bins -------------------------------------------------------------------------------


def test_segments_follow_the_spec_baselines() -> None:
    window = DriftWindow(SPEC, window_rows=1000)
    assert [s.name for s in window.segments] == [*FEATURES, "_class", "_confidence"]
    x, k, c, f = (window.by_name[n] for n in FEATURES)

    assert x.labels == ["[-inf,2)", "[2,5)", "[5,8)", "[8,inf)", "_missing"]
    np.testing.assert_allclose(x.baseline, np.array([*X_COUNTS, X_MISSING]) / (sum(X_COUNTS) + X_MISSING))
    assert (x.missing_bin, x.unseen_bin) == (4, -1)
    assert len(k.labels) == len(K_EDGES) + 2 and k.labels[-1] == "_missing"
    np.testing.assert_allclose(k.baseline, np.array([*K_COUNTS, 0]) / sum(K_COUNTS))
    assert c.labels == ["a", "b", "_unseen", "_missing"]
    np.testing.assert_allclose(c.baseline, [0.75, 0.25, 0.0, 0.0])
    assert (c.unseen_bin, c.missing_bin) == (2, 3)
    assert f.labels == ["false", "true", "_missing"]
    np.testing.assert_allclose(f.baseline, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(window.by_name["_class"].baseline, [0.5, 0.5])
    np.testing.assert_allclose(window.by_name["_confidence"].baseline, [0.25, 0.75])

    # the segments tile one flat vector, in order, with no gap
    offsets = [s.offset for s in window.segments]
    sizes = [s.size for s in window.segments]
    assert offsets == list(np.cumsum([0, *sizes[:-1]]))
    assert window.size == sum(sizes) == 5 + 4 + 4 + 3 + 2 + 2


@pytest.mark.parametrize("one_row", [True, False], ids=["one-row path", "batch path"])
@pytest.mark.parametrize(
    ("x", "expected_bin"),
    [(0.0, 0), (1.999, 0), (2.0, 1), (4.999, 1), (5.0, 2), (7.999, 2), (8.0, 3), (10.0, 3), (None, 4)],
)
def test_numeric_bins_are_right_closed_searchsorted(one_row: bool, x: float | None, expected_bin: int) -> None:
    """A value on an edge belongs to the bin above it (``searchsorted(side="right")``);
    an imputed value counts in the missing bin, not where its fill value would fall."""
    window = DriftWindow(SPEC, window_rows=1000)
    rows = [row(x=x)] if one_row else [row(x=x), row(x=x)]
    observe(window, rows)
    counts = live(window, "x")
    assert counts == [len(rows) if i == expected_bin else 0 for i in range(5)]
    if x is not None:
        assert expected_bin == int(np.searchsorted(X_EDGES, x, side="right"))


@pytest.mark.parametrize("one_row", [True, False], ids=["one-row path", "batch path"])
@pytest.mark.parametrize(("c", "expected_bin"), [("a", 0), ("b", 1), ("never seen", 2), (None, 3)])
def test_category_bins(one_row: bool, c: str | None, expected_bin: int) -> None:
    window = DriftWindow(SPEC, window_rows=1000)
    rows = [row(c=c)] if one_row else [row(c=c)] * 3
    observe(window, rows)
    assert live(window, "c") == [len(rows) if i == expected_bin else 0 for i in range(4)]


@pytest.mark.parametrize("one_row", [True, False], ids=["one-row path", "batch path"])
def test_boolean_integer_and_output_bins(one_row: bool) -> None:
    window = DriftWindow(SPEC, window_rows=1000)
    observe(window, [row(k=2, f=False)] if one_row else [row(k=2, f=False)] * 2, classes=[1] * (1 if one_row else 2), confidence=[0.8] * (1 if one_row else 2))
    n = 1 if one_row else 2
    assert live(window, "f") == [n, 0, 0]
    assert live(window, "k") == [0, 0, n, 0]  # 2 is on the edge 2.0: the bin [2, inf)
    assert live(window, "_class") == [0, n]
    assert live(window, "_confidence") == [0, n]


def test_confidence_outside_the_histogram_is_clamped_into_its_end_bins() -> None:
    window = DriftWindow(SPEC, window_rows=1000)
    observe(window, [row()] * 3, classes=[0, 0, 0], confidence=[0.1, 0.75, 1.0])
    assert live(window, "_confidence") == [1, 2]  # 0.1 below the first edge; 1.0 the last edge
    observe(window, [row()], classes=[0], confidence=[1.0])
    assert live(window, "_confidence") == [1, 3]


# --- batch path and one-row path agree ----------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_row_path_counts_exactly_as_the_batch_path(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, 300)
    classes = rng.integers(0, 2, size=300).tolist()
    confidence = rng.uniform(0.3, 1.0, size=300).round(3).tolist()
    batched = DriftWindow(SPEC, window_rows=100_000)
    single = DriftWindow(SPEC, window_rows=100_000)
    observe(batched, rows, classes, confidence)
    for i, r in enumerate(rows):
        observe(single, [r], classes[i : i + 1], confidence[i : i + 1])
    assert batched.total_rows == single.total_rows == 300
    assert batched.total.tolist() == single.total.tolist()
    assert batched.total.sum() == 300 * len(batched.segments)  # every row counted once per segment
    assert batched.total_confidence == pytest.approx(single.total_confidence, rel=1e-6)
    assert batched.statistics() == single.statistics()  # same counts, same statistics


def test_one_row_path_agrees_for_a_regressor_too() -> None:
    values = [-5.0, 0.0, 9.99, 10.0, 25.0, 30.0, 99.0]
    rows = [{"x": float(v % 10)} for v in range(len(values))]
    batched = DriftWindow(REGRESSION_SPEC, window_rows=1000)
    single = DriftWindow(REGRESSION_SPEC, window_rows=1000)
    observe(batched, rows, values=values)
    for r, v in zip(rows, values, strict=True):
        observe(single, [r], values=[v])
    assert [s.name for s in batched.segments] == ["x", "_prediction"]
    assert batched.total.tolist() == single.total.tolist()
    assert live(batched, "_prediction") == [3, 1, 3]  # [0,10) [10,20) [20,30]: clamped into the recorded range


# --- the window slides ----------------------------------------------------------------------


def _bins_of(rows: Sequence[dict[str, Any]]) -> list[int]:
    """The expected live counts of ``rows`` (a fresh, big window counts them)."""
    reference = DriftWindow(SPEC, window_rows=10**9)
    if rows:
        observe(reference, rows)
    return reference.total.tolist()


def test_size_window_retires_one_chunk_at_a_time() -> None:
    window_rows = 100
    chunk = window_rows // CHUNKS
    window = DriftWindow(SPEC, window_rows=window_rows)
    rows = random_rows(np.random.default_rng(3), 3 * window_rows)
    seen = []
    for r in rows:
        observe(window, [r])
        seen.append(window.total_rows)
    assert seen[:window_rows] == list(range(1, window_rows + 1))
    # from then on: a chunk leaves as the first row of the next one arrives
    assert seen[window_rows] == window_rows - chunk + 1
    assert min(seen[window_rows:]) == window_rows - chunk + 1 and max(seen[window_rows:]) == window_rows
    drops = [a - b for a, b in zip(seen, seen[1:], strict=False) if b < a]
    assert drops and set(drops) == {chunk - 1}  # minus a chunk, plus the new row
    # the counts are exactly those of the most recent total_rows rows
    assert window.total.tolist() == _bins_of(rows[-window.total_rows :])


@pytest.mark.parametrize("batch", [1, 7, 10])
def test_size_window_after_two_windows_holds_the_last_window_within_a_chunk(batch: int) -> None:
    window_rows = 200
    chunk = window_rows // CHUNKS
    window = DriftWindow(SPEC, window_rows=window_rows)
    rows = random_rows(np.random.default_rng(batch), 2 * window_rows)
    for i in range(0, len(rows), batch):
        observe(window, rows[i : i + batch])
    assert abs(window.total_rows - window_rows) <= chunk
    assert window.total.tolist() == _bins_of(rows[-window.total_rows :])
    assert int(window.rows.sum()) == window.total_rows


def test_size_window_stays_within_a_chunk_of_its_size_for_batches_larger_than_a_chunk() -> None:
    window_rows = 100  # chunks of 10 rows
    window = DriftWindow(SPEC, window_rows=window_rows)
    rows = random_rows(np.random.default_rng(4), 50)
    for _ in range(20):  # 1,000 rows in batches of 50
        observe(window, rows)
    assert abs(window.total_rows - window_rows) <= window_rows // CHUNKS, window.total_rows


def test_time_window_forgets_rows_older_than_its_span() -> None:
    clock = Clock()
    window = DriftWindow(SPEC, window_rows=None, window_seconds=10.0, clock=clock)
    observe(window, [row(x=1.0)] * 150)  # t = 0
    clock.now = 9.0
    observe(window, [row(x=9.0)] * 120)
    assert window.total_rows == 270
    clock.now = 10.0  # the first rows are now 10 s old: gone; the later ones stay
    stats = window.statistics()
    assert window.total_rows == 120
    assert live(window, "x") == [0, 0, 0, 120, 0]
    assert stats["x"]["psi"] > 0.25
    observe(window, [row(x=3.0)] * 5)  # still t = 10: into the newest chunk
    assert window.total_rows == 125
    clock.now = 1000.0  # idle far longer than the window: everything is forgotten
    assert window.statistics() == {}
    assert window.total_rows == 0 and not window.total.any()


def _age_bounds_hold(step: float, seconds: float, until: float) -> list[str]:
    """Observe one row per ``step`` seconds; at every call, the window must hold every row
    younger than ``seconds - chunk`` and no row of age ``seconds`` or more."""
    clock = Clock()
    window = DriftWindow(SPEC, window_rows=None, window_seconds=seconds, clock=clock)
    chunk = seconds / CHUNKS
    times: list[float] = []
    wrong = []
    i = 0
    while i * step <= until:
        clock.now = i * step
        observe(window, [row()])
        times.append(clock.now)
        kept_at_least = sum(1 for t in times if clock.now - t < seconds - chunk)
        kept_at_most = sum(1 for t in times if clock.now - t < seconds)
        if not kept_at_least <= window.total_rows <= kept_at_most:
            wrong.append(f"t={clock.now:.1f}: {window.total_rows} rows, expected {kept_at_least}..{kept_at_most}")
        i += 1
    return wrong


def test_time_window_holds_exactly_its_span_when_calls_fall_on_chunk_boundaries() -> None:
    assert _age_bounds_hold(step=0.5, seconds=10.0, until=60.0) == []


def test_time_window_holds_its_span_when_calls_fall_between_chunk_boundaries() -> None:
    assert _age_bounds_hold(step=1.9, seconds=10.0, until=60.0) == []


def test_window_arguments_are_exclusive() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        DriftWindow(SPEC, window_rows=100, window_seconds=10.0)
    with pytest.raises(ValueError, match="exactly one"):
        DriftWindow(SPEC, window_rows=None, window_seconds=None)


def test_memory_does_not_depend_on_the_window_size() -> None:
    """The window is CHUNKS x bins counters whatever its span: observe() adds O(bins) per
    batch and retiring a chunk subtracts O(bins); nothing stores rows."""

    def arrays(window: DriftWindow) -> dict[str, tuple[int, ...]]:
        return {name: value.shape for name, value in vars(window).items() if isinstance(value, np.ndarray)}

    small = DriftWindow(SPEC, window_rows=10)
    huge = DriftWindow(SPEC, window_rows=10**9)
    timed = DriftWindow(SPEC, window_rows=None, window_seconds=86400.0 * 365)
    assert small.counts.shape == huge.counts.shape == timed.counts.shape == (CHUNKS, small.size)
    assert arrays(small) == arrays(huge) == arrays(timed)
    assert all(math.prod(shape) <= CHUNKS * small.size for shape in arrays(huge).values())
    rows = random_rows(np.random.default_rng(5), 500)
    for window in (small, huge, timed):
        observe(window, rows)
        observe(window, rows[:1])
    assert arrays(small) == arrays(huge) == arrays(timed)  # observing allocated nothing that grows
    assert huge.total_rows == timed.total_rows == 501


# --- statistics ------------------------------------------------------------------------------


def test_no_statistics_below_min_rows() -> None:
    window = DriftWindow(SPEC, window_rows=10_000)
    rows = random_rows(np.random.default_rng(6), MIN_ROWS)
    observe(window, rows[:-1], classes=[0] * (MIN_ROWS - 1), confidence=[0.9] * (MIN_ROWS - 1))
    assert window.statistics() == {}
    assert window.estimated_accuracy() is None
    observe(window, rows[-1:], classes=[0], confidence=[0.9])
    stats = window.statistics()
    assert set(stats) == {*FEATURES, "_class", "_confidence"}
    assert window.estimated_accuracy() == pytest.approx(0.9)


def test_psi_is_zero_when_the_live_window_has_the_baseline_shares() -> None:
    window = DriftWindow(SPEC, window_rows=10_000)
    rows, classes, confidence = baseline_rows()
    observe(window, rows, classes, confidence)
    for name in FEATURES:
        counts = np.asarray(live(window, name), dtype=np.float64)
        np.testing.assert_allclose(counts / counts.sum(), window.by_name[name].baseline, err_msg=name)
    stats = window.statistics()
    for name, s in stats.items():
        assert s["psi"] == pytest.approx(0.0, abs=1e-12), name
        assert s.get("ks", s.get("js")) == pytest.approx(0.0, abs=1e-7), name


def test_psi_is_large_for_a_strong_shift() -> None:
    window = DriftWindow(SPEC, window_rows=10_000)
    rows = [row(x=9.0, k=3, c="b", f=True)] * 200
    observe(window, rows, classes=[1] * 200, confidence=[0.55] * 200)
    stats = window.statistics()
    for name in (*FEATURES, "_class", "_confidence"):
        assert stats[name]["psi"] > 0.25, (name, stats[name])


def _hand_psi(p: Sequence[float], q: Sequence[float]) -> float:
    total = 0.0
    for a, b in zip(p, q, strict=True):
        a, b = max(a, 1e-4), max(b, 1e-4)
        total += (a - b) * math.log(a / b)
    return total


def test_psi_ks_and_js_match_a_hand_computation() -> None:
    window = DriftWindow(SPEC, window_rows=10_000)
    # x: 60 in [-inf,2), 30 in [8,inf), 10 missing; c: 70 b, 20 unseen, 10 missing; f all true; k all 0
    xs = [1.0] * 60 + [8.0] * 30 + [None] * 10
    cs = ["b"] * 70 + ["zz"] * 20 + [None] * 10
    rows = [row(x=x, k=0, c=c, f=True) for x, c in zip(xs, cs, strict=True)]
    observe(window, rows)
    stats = window.statistics()

    base_x = [0.2, 0.3, 0.3, 0.1, 0.1]
    live_x = [0.6, 0.0, 0.0, 0.3, 0.1]
    assert stats["x"]["psi"] == pytest.approx(_hand_psi(live_x, base_x), rel=1e-12)
    assert stats["x"]["psi"] == pytest.approx(psi(np.array(live_x), np.array(base_x)), rel=1e-12)
    # KS over the value bins only (missing left out): live CDF 2/3, 2/3, 2/3, 1 against
    # the baseline's 2/9, 5/9, 8/9, 1
    assert stats["x"]["ks"] == pytest.approx(max(abs(2 / 3 - 2 / 9), abs(2 / 3 - 5 / 9), abs(2 / 3 - 8 / 9)), rel=1e-12)
    assert stats["x"]["missing_share"] == pytest.approx(0.1)
    assert "unseen_share" not in stats["x"] and "js" not in stats["x"]

    live_c = [0.0, 0.7, 0.2, 0.1]
    base_c = [0.75, 0.25, 0.0, 0.0]
    assert stats["c"]["psi"] == pytest.approx(_hand_psi(live_c, base_c), rel=1e-12)
    m = [(a + b) / 2 for a, b in zip(live_c, base_c, strict=True)]
    kl = lambda p: sum(a * math.log2(a / b) for a, b in zip(p, m, strict=True) if a > 0)  # noqa: E731
    assert stats["c"]["js"] == pytest.approx(math.sqrt((kl(live_c) + kl(base_c)) / 2), rel=1e-12)
    assert stats["c"]["unseen_share"] == pytest.approx(0.2)
    assert stats["c"]["missing_share"] == pytest.approx(0.1)
    assert "ks" not in stats["c"]

    # an empty baseline bin with an empty live bin adds nothing; floors keep PSI finite
    assert stats["f"]["psi"] == pytest.approx(_hand_psi([0.0, 1.0, 0.0], [0.5, 0.5, 0.0]), rel=1e-12)
    assert math.isfinite(stats["f"]["psi"])
    assert stats["k"]["psi"] == pytest.approx(_hand_psi([1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.5, 0.0]), rel=1e-12)
    assert PSI_FLOOR == 1e-4


def test_js_is_one_for_disjoint_supports_and_every_distance_stays_in_the_unit_interval() -> None:
    window = DriftWindow(SPEC, window_rows=10_000)
    observe(window, [row(c="zz")] * 100)
    stats = window.statistics()
    assert stats["c"]["js"] == pytest.approx(1.0, abs=1e-12)
    assert stats["c"]["unseen_share"] == 1.0 and stats["c"]["missing_share"] == 0.0
    rng = np.random.default_rng(7)
    for _ in range(20):
        w = DriftWindow(SPEC, window_rows=10_000)
        n = int(rng.integers(MIN_ROWS, 400))
        observe(w, random_rows(rng, n), rng.integers(0, 2, n).tolist(), rng.uniform(0, 1, n).tolist())
        for name, s in w.statistics().items():
            distance = s["ks"] if "ks" in s else s["js"]
            assert 0.0 <= distance <= 1.0 + 1e-12, (name, s)
            assert s["psi"] >= 0.0
            for share in ("unseen_share", "missing_share"):
                if share in s:
                    assert 0.0 <= s[share] <= 1.0
        assert ("ks" in w.statistics()["x"]) and ("js" in w.statistics()["c"]) and ("js" in w.statistics()["f"])


# --- through ModelMetrics: one-row requests are buffered, then counted as a batch -------------


def _count(metrics: ModelMetrics, records: Sequence[dict[str, Any]], probabilities: Sequence[Sequence[float]]) -> None:
    """Count a predicted request as ``gateway.service.predict`` does."""
    checked = SPEC.guards.check(to_columns(list(records), SPEC.feature_names))
    assert checked.rejected is None
    p = np.asarray(probabilities, dtype=np.float32)
    metrics.count_predicted(
        PredictedBatch(
            rows=checked.n_rows,
            violations=checked.violations,
            columns=checked.columns,
            imputed=checked.imputed,
            probabilities=p,
        )
    )


def _read(metrics: ModelMetrics) -> DriftWindow:
    """What every reader (scrape, /monitor) does first."""
    with metrics.lock:
        metrics.flush()
    return metrics.drift


@pytest.mark.parametrize("seed", [0, 1])
def test_one_row_requests_count_in_the_window_exactly_as_one_batch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 150  # more than one buffer of one-row requests, and a partial one
    rows = random_rows(rng, n)
    first = rng.uniform(0.0, 1.0, size=n)
    probabilities = np.stack([first, 1.0 - first], axis=1).round(3).tolist()
    single = ModelMetrics(SPEC, "toy", 1, window_rows=100_000)
    batched = ModelMetrics(SPEC, "toy", 1, window_rows=100_000)
    for r, p in zip(rows, probabilities, strict=True):
        _count(single, [r], [p])
    _count(batched, rows, probabilities)
    a, b = _read(single), _read(batched)
    assert a.total_rows == b.total_rows == n
    assert a.total.tolist() == b.total.tolist()
    assert a.statistics() == b.statistics()
    assert single.rows["predicted"] == batched.rows["predicted"] == n
    assert single.confidence.counts.tolist() == batched.confidence.counts.tolist()
    assert single.class_counts.counts.tolist() == batched.class_counts.counts.tolist()


def test_a_read_counts_every_one_row_request_predicted_so_far() -> None:
    metrics = ModelMetrics(SPEC, "toy", 1, window_rows=100_000)
    for _ in range(3):
        _count(metrics, [row(x=None, c="zz")], [[0.2, 0.8]])
    window = _read(metrics)
    assert window.total_rows == 3
    assert live(window, "x")[-1] == 3 and live(window, "c")[2] == 3  # missing and unseen survive the buffer
    assert live(window, "_class") == [0, 3]


def test_time_window_does_not_count_one_row_requests_older_than_its_span() -> None:
    clock = Clock(0.0)
    metrics = ModelMetrics(SPEC, "toy", 1, window_rows=None, window_seconds=10.0)
    metrics.drift.clock = clock
    metrics.drift.started = 0.0
    for _ in range(5):
        _count(metrics, [row()], [[0.9, 0.1]])  # at t = 0
    clock.now = 30.0  # three window spans later, the first read
    assert _read(metrics).total_rows == 0


def test_a_lone_one_row_request_counts_as_a_batch_of_one() -> None:
    alone = ModelMetrics(SPEC, "toy", 1, window_rows=100_000)
    batched = ModelMetrics(SPEC, "toy", 1, window_rows=100_000)
    record = row(x=None, c="zz")
    _count(alone, [record], [[0.3, 0.7]])
    _count(batched, [record, record], [[0.3, 0.7], [0.3, 0.7]])  # two rows: the numpy lane
    a, b = _read(alone), _read(batched)
    assert a.total_rows == 1 and b.total_rows == 2
    assert (b.total - 2 * a.total).tolist() == [0] * len(a.total)  # the same bins, once
    assert live(a, "x")[-1] == 1 and live(a, "c")[2] == 1
