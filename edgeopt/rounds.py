"""Pool a candidate's measurement rounds into one Measurement with bootstrap CIs (pure: no I/O).

Each round is one fresh process (`edgeopt.measure`), written as a one-round Measurement whose RoundRecord
carries the raw per-iteration samples. Percentiles are taken over the pooled samples of every round;
their intervals come from `edgeopt.stats.rounds_ci`, which resamples both the rounds and the iterations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeopt import stats
from edgeopt.metrics import percentiles_ms
from edgeopt.results import Interval, LatencyStats, Measurement, RoundRecord

# Samples in seconds, reported in milliseconds.
LATENCY = "latency_s"
THROUGHPUT = "throughput_s"
ITEMS_PER_S = "items_per_s"
SECONDS_SERIES = (LATENCY, THROUGHPUT)


def _series(rounds: Sequence[RoundRecord], key: str, scale: float = 1.0) -> list[np.ndarray]:
    return [np.asarray(r.samples[key], dtype=np.float64) * scale for r in rounds if r.samples.get(key)]


def _pooled_stats(rounds: Sequence[RoundRecord], key: str, fallback: LatencyStats) -> LatencyStats:
    series = _series(rounds, key)
    if not series:
        return fallback
    pooled = np.concatenate(series)
    return LatencyStats(batch_size=fallback.batch_size, iterations=int(pooled.size), **percentiles_ms(list(pooled)))


def _per_round(rounds: Sequence[RoundRecord], value: str) -> list[np.ndarray]:
    return [np.asarray([float(getattr(r, value))]) for r in rounds]


def combine(parts: Sequence[Measurement]) -> Measurement:
    """One Measurement from one-round Measurements of the same candidate (in pass order)."""
    if not parts:
        raise ValueError("no rounds to combine")
    first = parts[0]
    rounds = sorted((r for p in parts for r in p.rounds), key=lambda r: r.index)
    if not rounds:  # measured before rounds existed: nothing to pool
        return first
    ci: dict[str, Interval] = {}
    latency = _series(rounds, LATENCY, 1000.0)
    if latency:
        ci["latency_p50_ms"] = stats.rounds_ci(latency, stats.median)
        ci["latency_p99_ms"] = stats.rounds_ci(latency, stats.p99)
    items = _series(rounds, ITEMS_PER_S)
    if items:
        ci["throughput_items_per_s"] = stats.rounds_ci(items, stats.median)
    for name in ("peak_rss_mb", "load_time_s"):
        ci[name] = stats.rounds_ci(_per_round(rounds, name), stats.median)
    extra = dict(first.extra)
    for key in {k for r in rounds for k in r.extra}:
        values = [r.extra[key] for r in rounds if key in r.extra]
        extra[key] = float(np.median(values))
    for key in {k for r in rounds for k in r.samples} - {LATENCY, THROUGHPUT, ITEMS_PER_S}:
        series = _series(rounds, key)
        extra[key] = stats.median(np.concatenate(series))
        ci[key] = stats.rounds_ci(series, stats.median)
    return first.model_copy(update={
        "latency": _pooled_stats(rounds, LATENCY, first.latency),
        "throughput": _pooled_stats(rounds, THROUGHPUT, first.throughput),
        "throughput_items_per_s": stats.median(np.concatenate(items)) if items else first.throughput_items_per_s,
        "load_time_s": float(np.median([r.load_time_s for r in rounds])),
        "peak_rss_mb": float(np.median([r.peak_rss_mb for r in rounds])),
        "extra": extra,
        "rounds": rounds,
        "ci": ci,
        "started_at": rounds[0].started_at,
    })


def speedup_interval(baseline: Measurement, candidate: Measurement) -> Interval | None:
    """CI of baseline p50 / candidate p50, pairing rounds by pass (the same machine state for both)."""
    by_pass_base = {r.index: r for r in baseline.rounds}
    by_pass_cand = {r.index: r for r in candidate.rounds}
    shared = sorted(set(by_pass_base) & set(by_pass_cand))
    # Paired passes first (round i with round i), then the rest of each side unpaired.
    base = [by_pass_base[i] for i in shared] + [r for i, r in sorted(by_pass_base.items()) if i not in shared]
    cand = [by_pass_cand[i] for i in shared] + [r for i, r in sorted(by_pass_cand.items()) if i not in shared]
    num, den = _series(base, LATENCY), _series(cand, LATENCY)
    if not num or not den:
        return None
    if len(num) != len(base) or len(den) != len(cand):
        return None
    return stats.rounds_ratio_ci(num, den, stats.median)
