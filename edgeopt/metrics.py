"""Pure measurement arithmetic: latency percentiles, embedding quality, and the confidence intervals of quality
metrics that are means over samples (on edgeopt.stats' bootstrap). No frameworks."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

Interval = tuple[float, float]  # (low, high), as edgeopt.results.Interval


def percentiles_ms(durations_s: Sequence[float]) -> dict[str, float]:
    if not durations_s:
        raise ValueError("no timings")
    ms = np.asarray(durations_s, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(ms.mean())}


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def cosine_per_row(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """float64 [n]: the cosine similarity of each row of two [n, dim] embedding matrices."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {candidate.shape}")
    return np.asarray(np.sum(_unit_rows(reference) * _unit_rows(candidate), axis=1))


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean row-wise cosine similarity between two [n, dim] embedding matrices."""
    return float(np.mean(cosine_per_row(reference, candidate)))


def retrieval_ranks(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """1-based rank of document i among all documents for query i (ties count against it)."""
    scores = _unit_rows(queries) @ _unit_rows(documents).T
    own = np.diag(scores)[:, None]
    return (scores > own).sum(axis=1) + 1


def retrieval_per_query(queries: np.ndarray, documents: np.ndarray) -> dict[str, np.ndarray]:
    """float64 [n] per metric: each query's recall@1 and recall@10 hit (0/1) and reciprocal rank."""
    ranks = retrieval_ranks(queries, documents)
    return {
        "recall@1": (ranks <= 1).astype(np.float64),
        "recall@10": (ranks <= 10).astype(np.float64),
        "mrr": 1.0 / ranks,
    }


def retrieval_metrics(queries: np.ndarray, documents: np.ndarray) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in retrieval_per_query(queries, documents).items()}


def retention(candidate: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """candidate / baseline per metric; a zero baseline gives 1.0 when equal, else 0.0."""
    out: dict[str, float] = {}
    for key, base in baseline.items():
        value = candidate[key]
        out[key] = value / base if base else float(value == base)
    return out


# -- confidence intervals of quality metrics that are means over samples (edgeopt.stats) ---------------------

# Above this many samples, BCa's jackknife (an n x (n-1) array) costs too much memory: a percentile bootstrap
# of the mean, in batches, instead.
MAX_BCA_SAMPLES = 2000
_BATCH = 100


def _containing(ci: Interval, point: float) -> Interval:
    """`ci` widened to hold `point` (the reported value, which may be computed in another precision)."""
    return (min(ci[0], point), max(ci[1], point))


def _finite_samples(samples: Sequence[float] | np.ndarray) -> np.ndarray | None:
    x = np.asarray(samples, dtype=np.float64).ravel()
    return x if x.size and np.isfinite(x).all() else None


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable[..., float | np.ndarray], vectorized: bool,
               paired: bool = False) -> Interval | None:
    """Percentile bootstrap at edgeopt.stats' level, resamples and seed; None where it gives no finite interval."""
    from scipy import stats as scipy_stats

    from edgeopt.stats import LEVEL, N_RESAMPLES, SEED

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = scipy_stats.bootstrap(data, statistic, n_resamples=N_RESAMPLES, confidence_level=LEVEL,
                                        method="percentile", vectorized=vectorized, paired=paired,
                                        batch=_BATCH if vectorized else None, rng=np.random.default_rng(SEED))
        except ValueError:
            return None
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (min(low, high), max(low, high)) if np.isfinite(low) and np.isfinite(high) else None


def _means(a: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(np.mean(a, axis=axis))


def mean_interval(samples: Sequence[float] | np.ndarray, point: float | None = None) -> Interval | None:
    """95% CI of the mean of per-sample scores (edgeopt.stats.mean_ci, BCa), holding `point` (default: the
    mean); None without samples or with a non-finite one (e.g. the infinite KLD of a broken output)."""
    from edgeopt.stats import mean_ci

    x = _finite_samples(samples)
    if x is None:
        return None
    value = float(x.mean()) if point is None else point
    if x.size > MAX_BCA_SAMPLES and not np.all(x == x[0]):
        ci = _bootstrap((x,), _means, vectorized=True)
        return _containing(ci or (value, value), value)
    return _containing(mean_ci(x), value)


def ratio_interval(numerator: Sequence[float] | np.ndarray, denominator: Sequence[float] | np.ndarray,
                   of: Callable[[np.ndarray], float] | None = None,
                   point: float | None = None) -> Interval | None:
    """95% CI of of(numerator) / of(denominator) (default of: the mean), the same samples resampled for both
    (edgeopt.stats.paired_ratio_ci): a candidate's per-sample scores over the baseline's on identical inputs.
    None without samples, with a non-finite one, or where the denominator's value is 0."""
    from edgeopt.stats import paired_ratio_ci

    a, b = _finite_samples(numerator), _finite_samples(denominator)
    if a is None or b is None or a.shape != b.shape:
        return None
    stat: Callable[[np.ndarray], float] = of if of is not None else (lambda v: float(np.mean(v)))
    base = stat(b)
    if not base or not np.isfinite(base):
        return None
    value = stat(a) / base if point is None else point
    return _containing(paired_ratio_ci(a, b, of=stat), value)


def resampled_interval(n: int, statistic: Callable[[np.ndarray], float],
                       point: float | None = None) -> Interval | None:
    """95% percentile-bootstrap CI of statistic(indices) over n samples drawn with replacement: for statistics
    of several per-sample arrays at once (the weakest of several outputs, a ratio of sums), each resample
    taking the same samples from every array. None for fewer than 2 samples or no finite interval."""
    if n < 1:
        return None
    value = statistic(np.arange(n)) if point is None else point
    if not np.isfinite(value):
        return None
    if n < 2:
        return (value, value)
    ci = _bootstrap((np.arange(n, dtype=np.float64),), lambda i: statistic(i.astype(np.intp)), vectorized=False)
    return _containing(ci or (value, value), value)


def scaled_interval(ci: Interval | None, by: float) -> Interval | None:
    """ci / by (a retention whose metric is already relative to the baseline: by is the baseline's value)."""
    if ci is None or not by or not np.isfinite(by):
        return None
    low, high = ci[0] / by, ci[1] / by
    return (min(low, high), max(low, high))


def present(cis: dict[str, Interval | None]) -> dict[str, Interval]:
    """The intervals that exist (the None ones dropped): what `Quality.ci` / `.retention_ci` hold."""
    return {k: v for k, v in cis.items() if v is not None}
