"""Shared timing helper of the benchmark scripts (scripts/bench, scripts/_bench_tenuo.py)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["measure"]


def measure(rounds: int, batch: int, setup: Callable[[], Callable[[], None]]) -> float:
    """Median over rounds of seconds per call; ``setup`` returns the per-round callable
    (its own work is not timed)."""
    per_call = []
    for _ in range(rounds):
        fn = setup()
        t0 = time.perf_counter()
        fn()
        per_call.append((time.perf_counter() - t0) / batch)
    return statistics.median(per_call)
