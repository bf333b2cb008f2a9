"""Timing loops shared by every workload's benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable

from edgeopt.metrics import percentiles_ms
from edgeopt.results import LatencyStats


def timed_loop(run: Callable[[], object], warmup: int, min_iters: int, min_time_s: float) -> list[float]:
    """Warm up, then repeat until both the iteration floor and the time floor are reached."""
    for _ in range(warmup):
        run()
    durations: list[float] = []
    start = time.perf_counter()
    while len(durations) < min_iters or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        run()
        durations.append(time.perf_counter() - t)
    return durations


def stats(durations: list[float], batch: int) -> LatencyStats:
    return LatencyStats(batch_size=batch, iterations=len(durations), **percentiles_ms(durations))
