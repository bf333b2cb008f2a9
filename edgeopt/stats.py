"""Bootstrap confidence intervals and noise-aware comparisons, on SciPy's `scipy.stats.bootstrap`.

Timings come in rounds (one fresh process each), so two levels of noise matter: between rounds (what the
machine did during each process) and within a round (iteration jitter). `rounds_ci` resamples both:
the rounds themselves (a cluster bootstrap) and the iterations inside each round (stratified), and
reports the hull of the two intervals, so neither level is hidden when there are few rounds.
Pure functions of arrays: no I/O, nothing of the pipeline.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95
N_RESAMPLES = 1000
SEED = 0  # fixed: the same samples give the same interval on every run

Interval = tuple[float, float]
Statistic = Callable[[np.ndarray], float]


def median(x: np.ndarray) -> float:
    return float(np.median(x))


def p99(x: np.ndarray) -> float:
    return float(np.quantile(x, 0.99))


def _finite(low: float, high: float, fallback: Interval) -> Interval:
    if np.isfinite(low) and np.isfinite(high):
        return (float(min(low, high)), float(max(low, high)))
    return fallback


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable[..., float], paired: bool = False,
               method: str = "percentile") -> Interval | None:
    """SciPy's bootstrap on scalar statistics; None where it cannot give an interval (degenerate data)."""
    with warnings.catch_warnings():
        # Degenerate resamples (all equal) warn and give NaN: handled by the callers' fallbacks.
        warnings.simplefilter("ignore")
        try:
            res = scipy_stats.bootstrap(data, statistic, n_resamples=N_RESAMPLES, confidence_level=LEVEL,
                                        method=method, paired=paired, vectorized=False,
                                        random_state=np.random.default_rng(SEED))
        except ValueError:
            return None
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return (min(low, high), max(low, high))


def mean_ci(samples: Sequence[float] | np.ndarray) -> Interval:
    """BCa interval of the mean of per-sample scores (cosine per pair, KLD per token, top-1 hit per image)."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    point = float(x.mean()) if x.size else float("nan")
    if x.size < 2 or np.all(x == x[0]):
        return (point, point)
    return _bootstrap((x,), lambda a: float(np.mean(a)), method="BCa") or (point, point)


def paired_ratio_ci(numerator: Sequence[float] | np.ndarray, denominator: Sequence[float] | np.ndarray,
                    of: Callable[[np.ndarray], float] = lambda a: float(np.mean(a))) -> Interval:
    """Interval of of(numerator) / of(denominator) with the same samples resampled for both (a candidate's
    per-sample scores against the baseline's on identical inputs: quality retention)."""
    a = np.asarray(numerator, dtype=np.float64).ravel()
    b = np.asarray(denominator, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    base = of(b)
    point = of(a) / base if base else float("nan")
    if a.size < 2 or (np.all(a == a[0]) and np.all(b == b[0])):
        return (point, point)

    def ratio(x: np.ndarray, y: np.ndarray) -> float:
        d = of(y)
        return of(x) / d if d else float("nan")

    return _bootstrap((a, b), ratio, paired=True) or (point, point)


def _rounds(rounds: Sequence[Sequence[float] | np.ndarray]) -> list[np.ndarray]:
    out = [np.asarray(r, dtype=np.float64).ravel() for r in rounds]
    out = [r for r in out if r.size]
    if not out:
        raise ValueError("no samples")
    return out


def rounds_ci(rounds: Sequence[Sequence[float] | np.ndarray], statistic: Statistic = median) -> Interval:
    """Interval of `statistic` over the pooled samples of every round: the hull of a cluster bootstrap over
    rounds (between-process noise) and a bootstrap of the iterations within each round (jitter)."""
    rs = _rounds(rounds)
    point = statistic(np.concatenate(rs))
    hull = [(point, point)]
    within = _bootstrap(tuple(rs), lambda *xs: statistic(np.concatenate(xs))) if any(r.size > 1 for r in rs) \
        else None
    if within:
        hull.append(within)
    if len(rs) > 1:
        index = np.arange(len(rs), dtype=np.float64)
        between = _bootstrap((index,), lambda i: statistic(np.concatenate([rs[int(j)] for j in i])))
        if between:
            hull.append(between)
    return (min(h[0] for h in hull), max(h[1] for h in hull))


def rounds_ratio_ci(numerator: Sequence[Sequence[float] | np.ndarray],
                    denominator: Sequence[Sequence[float] | np.ndarray],
                    statistic: Statistic = median) -> Interval:
    """Interval of statistic(numerator) / statistic(denominator), both pooled over their rounds.

    Round i of one pairs with round i of the other (the same interleaved pass: the same machine state),
    so the cluster bootstrap resamples pass indices for both at once; the within-round bootstrap resamples
    each round's iterations independently. Unpaired rounds beyond the shorter list are kept whole.
    """
    num, den = _rounds(numerator), _rounds(denominator)
    point = statistic(np.concatenate(num)) / statistic(np.concatenate(den))
    hull = [(point, point)]
    k = len(num)

    def ratio(*xs: np.ndarray) -> float:
        d = statistic(np.concatenate(xs[k:]))
        return statistic(np.concatenate(xs[:k])) / d if d else float("nan")

    if any(r.size > 1 for r in num + den):
        within = _bootstrap(tuple(num + den), ratio)
        if within:
            hull.append(within)
    pairs = min(len(num), len(den))
    if pairs > 1:
        extra_num, extra_den = num[pairs:], den[pairs:]

        def paired(i: np.ndarray) -> float:
            picked = [int(j) for j in i]
            d = statistic(np.concatenate([den[j] for j in picked] + extra_den))
            return statistic(np.concatenate([num[j] for j in picked] + extra_num)) / d if d else float("nan")

        between = _bootstrap((np.arange(pairs, dtype=np.float64),), paired)
        if between:
            hull.append(between)
    return (min(h[0] for h in hull), max(h[1] for h in hull))


def width_fraction(ci: Interval, value: float) -> float:
    """The interval's width relative to its point value (0.1: 10%)."""
    return (ci[1] - ci[0]) / abs(value) if value else float("inf")


def clearly_below(a: Interval, b: Interval, floor: float = 0.0) -> bool:
    """a is smaller than b beyond the noise: the intervals are separated and the gap between their
    middles is more than `floor` relative to b's."""
    if a[1] >= b[0]:
        return False
    mid_a, mid_b = (a[0] + a[1]) / 2, (b[0] + b[1]) / 2
    return mid_b - mid_a > floor * abs(mid_b)


def separated(a: Interval, b: Interval, floor: float = 0.0) -> bool:
    return clearly_below(a, b, floor) or clearly_below(b, a, floor)


def dominates_beyond_noise(a: Sequence[Interval], b: Sequence[Interval], floor: float = 0.0) -> bool:
    """a dominates b (every objective minimised): clearly better on at least one, clearly worse on none."""
    pairs = list(zip(a, b, strict=True))
    return any(clearly_below(x, y, floor) for x, y in pairs) and not any(clearly_below(y, x, floor)
                                                                          for x, y in pairs)
