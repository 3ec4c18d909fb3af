"""Prediction ids, the bounded prediction log, and the online-metric window
(``gateway.monitoring.feedback``). Time is an injected clock."""

from __future__ import annotations

import gc
import re
import tracemalloc

import numpy as np
import pytest

from gateway.monitoring.feedback import ENTRY_BYTES, FeedbackWindow, PredictionLog


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def labels(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n) % 3).astype(np.intp)


# --- ids ----------------------------------------------------------------------------------


def test_ids_are_unique_and_carry_a_process_prefix_and_a_counter() -> None:
    log = PredictionLog(capacity=1024)
    ids = log.record("penguins", 1, 5, labels(5), None) + log.record("penguins", 1, 1, labels(1), None)
    ids += log.record("diabetes", 2, 3, None, np.zeros(3, dtype=np.float32))
    assert len(set(ids)) == len(ids) == 9
    counters = []
    for pid in ids:
        match = re.fullmatch(r"([0-9a-f]+)-([0-9a-f]+)", pid)
        assert match, pid
        assert match.group(1) == log.prefix
        counters.append(int(match.group(2), 16))
    assert counters == list(range(counters[0], counters[0] + 9))  # one counter per row, in order
    assert log.issued == counters[-1]
    assert PredictionLog(capacity=1024).prefix != log.prefix  # another process (or replica): other ids


def test_recorded_rows_are_found_with_their_version_label_and_value() -> None:
    log = PredictionLog(capacity=1024)
    a = log.record("penguins", 1, 4, np.array([2, 0, 1, 2]), None)
    b = log.record("penguins", 3, 1, np.array([1]), None)
    c = log.record("diabetes", 1, 2, None, np.array([151.5, 75.25], dtype=np.float32))
    slots, versions, status = log.lookup("penguins", [*a, *b])
    assert status == ["matched"] * 5
    assert versions.tolist() == [1, 1, 1, 1, 3]
    assert log.labels[slots].tolist() == [2, 0, 1, 2, 1]
    slots, versions, status = log.lookup("diabetes", c)
    assert status == ["matched", "matched"] and versions.tolist() == [1, 1]
    assert log.values[slots].tolist() == [151.5, 75.25]


def test_ids_overwritten_by_capacity_newer_rows_are_expired() -> None:
    capacity = 1024
    log = PredictionLog(capacity=capacity)
    old = log.record("m", 1, 10, labels(10), None)
    log.record("m", 1, capacity - 10, labels(capacity - 10), None)
    # exactly capacity rows so far: every one is still there
    assert log.lookup("m", old)[2] == ["matched"] * 10
    log.record("m", 1, 3, labels(3), None)  # overwrites the slots of the three oldest
    _, _, status = log.lookup("m", old)
    assert status == ["expired"] * 3 + ["matched"] * 7
    newest = log.record("m", 1, 1, labels(1), None)
    assert log.lookup("m", newest)[2] == ["matched"]


def test_ids_never_issued_of_other_processes_or_garbage_are_unknown() -> None:
    log = PredictionLog(capacity=1024)
    ids = log.record("m", 1, 3, labels(3), None)
    other = PredictionLog(capacity=1024).record("m", 1, 3, labels(3), None)
    prefix = log.prefix
    garbage = [
        f"{prefix}-{log.issued + 1:x}",  # the next id, not issued yet
        f"{prefix}-{log.issued + 5000:x}",  # far in the future, whose slot wraps onto an issued one
        f"{prefix}-0",
        f"{prefix}--1",
        f"{prefix}-",
        f"{prefix}-xyz",
        prefix,
        "",
        "not-an-id",
        f"{'0' * 8}-1",
        ids[0] + "0",  # a counter 16 times larger
    ]
    _, _, status = log.lookup("m", [*other, *garbage])
    assert status == ["unknown_id"] * (len(other) + len(garbage))
    slots, versions, status = log.lookup("m", [None, 17, 3.5, ["x"], ids[1]])  # type: ignore[list-item]
    assert status == ["unknown_id"] * 4 + ["matched"]
    assert len(slots) == len(versions) == 1


def test_only_the_exact_issued_spelling_of_an_id_matches() -> None:
    log = PredictionLog(capacity=1024)
    log.record("m", 1, 200, labels(200), None)
    prefix = log.prefix
    spellings = [f"{prefix}-0x5", f"{prefix}-+5", f"{prefix}- 5", f"{prefix}-5 ", f"{prefix}-A", f"{prefix}-1_0", f"{prefix}-05"]
    _, _, status = log.lookup("m", spellings)
    assert status == ["unknown_id"] * len(spellings)


def test_ids_of_another_model_are_unknown() -> None:
    log = PredictionLog(capacity=1024)
    penguins = log.record("penguins", 1, 3, labels(3), None)
    diabetes = log.record("diabetes", 1, 2, None, np.ones(2, dtype=np.float32))
    assert log.lookup("diabetes", penguins)[2] == ["unknown_id"] * 3
    assert log.lookup("penguins", diabetes)[2] == ["unknown_id"] * 2
    assert log.lookup("never-served", penguins)[2] == ["unknown_id"] * 3
    assert log.lookup("penguins", penguins)[2] == ["matched"] * 3


def test_ids_older_than_the_ttl_are_expired() -> None:
    clock = Clock(1_000.0)
    log = PredictionLog(capacity=1024, ttl_seconds=60.0, clock=clock)
    early = log.record("m", 1, 2, labels(2), None)
    clock.now = 1_030.0
    late = log.record("m", 1, 2, labels(2), None)
    clock.now = 1_060.0  # early ones exactly 60 s old: still in time
    assert log.lookup("m", [*early, *late])[2] == ["matched"] * 4
    clock.now = 1_060.5
    assert log.lookup("m", [*early, *late])[2] == ["expired", "expired", "matched", "matched"]
    clock.now = 1_091.0
    slots, _, status = log.lookup("m", [*early, *late])
    assert status == ["expired"] * 4 and len(slots) == 0


def test_lookup_of_nothing() -> None:
    log = PredictionLog(capacity=1024)
    slots, versions, status = log.lookup("m", [])
    assert status == [] and slots.shape == (0,) and versions.shape == (0,)


# --- memory -----------------------------------------------------------------------------------


def test_memory_is_fixed_at_start_and_never_grows() -> None:
    capacity = 4096
    log = PredictionLog(capacity=capacity)
    assert log.nbytes == capacity * ENTRY_BYTES == capacity * 40
    before = log.nbytes
    for i in range(40):  # 10x capacity rows, in batches of 1,024
        log.record("m", 1 + i % 2, 1024, labels(1024, i), None)
        log.record("r", 1, 1, None, np.ones(1, dtype=np.float32))
    assert log.nbytes == before
    assert all(a.shape == (capacity,) for a in (log.counters, log.models, log.versions, log.labels, log.values, log.times))


@pytest.mark.slow
def test_recording_allocates_nothing_that_stays_or_grows_with_traffic() -> None:
    """200k rows in batches of 1,000, then 10,000 small requests: traced memory (Python
    objects and numpy buffers alike) does not grow beyond the id strings of the batch in
    flight, which the caller drops; nothing is kept per row or per request."""
    log = PredictionLog(capacity=4096)
    batch = 1000
    classes = labels(batch)
    log.record("m", 1, batch, classes, None)  # warm up: first-use allocations are not growth
    log.record("m", 1, 1, classes[:1], None)
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        largest_batch_of_ids = 0
        for _ in range(200):
            ids = log.record("m", 1, batch, classes, None)
            largest_batch_of_ids = max(largest_batch_of_ids, sum(map(len, ids)) + 64 * len(ids))
            del ids
        for i in range(5000):  # many small requests: a leak per request shows up too
            log.record("m", 1, 1, classes[i % 3 : i % 3 + 1], None)
            log.record("m", 1, 2, classes[:2], None)
        log.lookup("m", [f"{log.prefix}-1"])
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert log.issued == 1 + 201 * batch + 3 * 5000
    assert current - start < 16 * 1024, f"{current - start} bytes stayed allocated after 216k rows"
    assert peak - start < largest_batch_of_ids + 1024 * 1024, f"peak {peak - start} bytes"


# --- online metrics ---------------------------------------------------------------------------


def test_accuracy_is_exact_over_the_window() -> None:
    rng = np.random.default_rng(0)
    window = FeedbackWindow(window=100)
    assert window.accuracy() is None and window.rows == 0
    seen: list[bool] = []
    for size in rng.integers(1, 37, size=60):
        correct = rng.random(size) < 0.7
        window.add(correct=correct)
        seen.extend(correct.tolist())
        # the window holds the most recent rows: all of them up to 100, then 91 to 100
        if len(seen) <= 100:
            assert window.rows == len(seen)
        else:
            assert 91 <= window.rows <= 100
        assert window.accuracy() == pytest.approx(np.mean(seen[-window.rows :]), abs=1e-12)


def test_old_feedback_ages_out_a_chunk_at_a_time() -> None:
    window = FeedbackWindow(window=100)
    window.add(correct=np.ones(100, dtype=bool))
    assert window.accuracy() == 1.0 and window.rows == 100
    window.add(correct=np.zeros(50, dtype=bool))  # split across chunks: five old chunks leave
    assert window.rows == 100 and window.accuracy() == 0.5
    window.add(correct=np.zeros(1, dtype=bool))
    assert window.rows == 91 and window.accuracy() == pytest.approx(40 / 91)
    window.add(correct=np.zeros(500, dtype=bool))
    assert window.accuracy() == 0.0


def test_mae_and_rmse_are_the_textbook_formulas_over_the_window() -> None:
    window = FeedbackWindow(window=10_000)
    assert window.mae() is None and window.rmse() is None
    errors = np.array([3.0, -4.0, 0.0, 1.5, -0.5])
    window.add(errors=errors)
    assert window.mae() == pytest.approx(np.abs(errors).mean())
    assert window.mae() == pytest.approx((3 + 4 + 0 + 1.5 + 0.5) / 5)
    assert window.rmse() == pytest.approx(np.sqrt((9 + 16 + 0 + 2.25 + 0.25) / 5))
    rng = np.random.default_rng(1)
    small = FeedbackWindow(window=50)
    seen: list[float] = []
    for size in rng.integers(1, 20, size=30):
        e = rng.normal(0, 10, size)
        small.add(errors=e)
        seen.extend(e.tolist())
        recent = np.asarray(seen[-small.rows :])
        assert small.mae() == pytest.approx(np.abs(recent).mean(), rel=1e-9)
        assert small.rmse() == pytest.approx(np.sqrt((recent**2).mean()), rel=1e-9)
