"""Timing shared by the in-process benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def per_call(fn: Callable[[], Any], calls: int, repeat: int) -> float:
    """Median seconds per call over ``repeat`` timed loops of ``calls`` calls (after one warm call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)
