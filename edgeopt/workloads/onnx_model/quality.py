"""Closeness of a candidate's outputs to the FP32 base's, on identical feeds: pure numpy.

Per output (every value as float64, integer and boolean outputs too):
- cosine:   the mean over samples of the cosine similarity of the sample's flattened output (both all zero: 1);
- rel_l2:   ||candidate - base|| / ||base|| over every sample's values;
- max_abs:  the largest |candidate - base|;
- snr_db:   10 log10(sum base^2 / sum (candidate - base)^2), clipped to +-SNR_CAP_DB (identical: +SNR_CAP_DB);
- argmax_agreement, for outputs that look like class scores (2-D float, at least 2 columns): the fraction of
  rows whose highest column is the base's (ties: the first column, for both alike).

A value both sides hold identically (an infinity included) is no error. A non-finite value that differs (a NaN,
an overflow) is a broken output: that sample's cosine is 0, its rows disagree, rel_l2 and max_abs are
BROKEN_ERROR and snr_db is -SNR_CAP_DB. Every number stays finite, so records and MLflow keep them.

Cosine and argmax agreement (and the weakest output's of each) get bootstrap confidence intervals over the
samples (`per_sample`, `quality_intervals`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

SNR_CAP_DB = 200.0  # float32 rounding is ~150 dB below the signal: beyond this, outputs are identical
BROKEN_ERROR = 1e30
PER_OUTPUT = ("cosine", "rel_l2", "max_abs", "snr_db", "argmax_agreement")
# The weakest output's value of each: what gates and selection read.
SUMMARY = {"cosine": ("min_cosine", min), "rel_l2": ("max_rel_l2", max), "max_abs": ("max_abs_error", max),
           "snr_db": ("min_snr_db", min), "argmax_agreement": ("min_argmax_agreement", min)}


def _pair(base: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(base, candidate) as float64 with identical values (infinities too) zeroed on both sides, and whether any
    other non-finite value remains (a broken candidate, or a base no comparison can be made with)."""
    b = np.asarray(base, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if b.shape != c.shape:
        raise ValueError(f"base output {list(b.shape)} and candidate output {list(c.shape)} differ in shape")
    same = b == c
    b, c = np.where(same, np.where(np.isfinite(b), b, 0.0), b), np.where(same, np.where(np.isfinite(c), c, 0.0), c)
    return b, c, not (np.isfinite(b).all() and np.isfinite(c).all())


def cosine_similarity(base: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine of the two flattened arrays; 1 if both are all zero, 0 if only one is (or the candidate is broken)."""
    b, c, broken = _pair(base, candidate)
    if broken:
        return 0.0
    nb, nc = float(np.linalg.norm(b)), float(np.linalg.norm(c))
    if nb == 0.0 or nc == 0.0:
        return 1.0 if nb == nc else 0.0
    return float(np.clip(np.dot(b.ravel(), c.ravel()) / (nb * nc), -1.0, 1.0))


def relative_l2(base: np.ndarray, candidate: np.ndarray) -> float:
    b, c, broken = _pair(base, candidate)
    err = float(np.linalg.norm(c - b))
    if broken:
        return BROKEN_ERROR
    if err == 0.0:
        return 0.0
    norm = float(np.linalg.norm(b))
    return BROKEN_ERROR if norm == 0.0 else min(err / norm, BROKEN_ERROR)


def max_abs_error(base: np.ndarray, candidate: np.ndarray) -> float:
    b, c, broken = _pair(base, candidate)
    if broken:
        return BROKEN_ERROR
    return float(np.abs(c - b).max()) if b.size else 0.0


def snr_db(base: np.ndarray, candidate: np.ndarray) -> float:
    b, c, broken = _pair(base, candidate)
    if broken:
        return -SNR_CAP_DB
    noise, signal = float(np.sum((c - b) ** 2)), float(np.sum(b**2))
    if noise == 0.0:
        return SNR_CAP_DB
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(np.clip(10.0 * np.log10(signal / noise), -SNR_CAP_DB, SNR_CAP_DB))


def argmax_agreement_per_row(base: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """float [rows]: 1.0 where the candidate's highest column is the base's; a row with a non-finite candidate
    score disagrees."""
    b = np.asarray(base, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if b.ndim != 2 or b.shape != c.shape:
        raise ValueError(f"argmax agreement needs two [rows, classes] arrays, got {list(b.shape)} and {list(c.shape)}")
    valid = np.isfinite(c).all(axis=1)
    same = np.argmax(b, axis=1) == np.argmax(np.where(np.isfinite(c), c, -np.inf), axis=1)
    return (same & valid).astype(np.float64)


def looks_like_class_scores(rank: int, dtype: str | np.dtype, columns: int | None) -> bool:
    """A 2-D float output with at least two columns: logits or probabilities, one row per item."""
    return rank == 2 and bool(np.issubdtype(np.dtype(dtype), np.floating)) and (columns is None or columns >= 2)


def compare_output(base: Sequence[np.ndarray], candidate: Sequence[np.ndarray], class_scores: bool) -> dict[str, float]:
    """The per-output metrics over samples (one array per sample, of the same shape on both sides)."""
    if len(base) != len(candidate) or not base:
        raise ValueError(f"{len(candidate)} candidate samples for {len(base)} base samples")
    for i, (b, c) in enumerate(zip(base, candidate, strict=True)):
        if np.shape(b) != np.shape(c):
            raise ValueError(f"sample {i}: candidate output {list(np.shape(c))} differs from the base's "
                             f"{list(np.shape(b))}")
    flat_b = np.concatenate([np.asarray(b, dtype=np.float64).ravel() for b in base])
    flat_c = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in candidate])
    out = {
        "cosine": float(np.mean([cosine_similarity(b, c) for b, c in zip(base, candidate, strict=True)])),
        "rel_l2": relative_l2(flat_b, flat_c),
        "max_abs": max_abs_error(flat_b, flat_c),
        "snr_db": snr_db(flat_b, flat_c),
    }
    if class_scores:
        rows = [argmax_agreement_per_row(b, c) for b, c in zip(base, candidate, strict=True)]
        out["argmax_agreement"] = float(np.concatenate(rows).mean())
    return out


def summarize(per_output: dict[str, dict[str, float]]) -> dict[str, float]:
    """The weakest output's value of each metric (`min_cosine`, `max_rel_l2`, ...); `min_argmax_agreement` only
    where some output looks like class scores."""
    out: dict[str, float] = {}
    for metric, (name, weakest) in SUMMARY.items():
        values = [m[metric] for m in per_output.values() if metric in m]
        if values:
            out[name] = float(weakest(values))
    return out


# -- confidence intervals: cosine and argmax agreement are means over samples ----------------------------------------
# rel_l2, snr_db (ratios of sums over every value) and max_abs (a maximum) are not: they get no interval.

Interval = tuple[float, float]


def per_sample(base: Sequence[np.ndarray], candidate: Sequence[np.ndarray],
               class_scores: bool) -> dict[str, np.ndarray]:
    """float [samples]: each sample's `cosine`; for class scores also its `argmax_hits` (rows whose highest column
    is the base's) and `argmax_rows`, so that agreement = sum(hits) / sum(rows) as `compare_output` has it."""
    pairs = list(zip(base, candidate, strict=True))
    out = {"cosine": np.asarray([cosine_similarity(b, c) for b, c in pairs], dtype=np.float64)}
    if class_scores:
        out["argmax_hits"] = np.asarray([argmax_agreement_per_row(b, c).sum() for b, c in pairs], dtype=np.float64)
        out["argmax_rows"] = np.asarray([np.shape(b)[0] for b, _ in pairs], dtype=np.float64)
    return out


def _agreement(per: dict[str, np.ndarray], idx: np.ndarray) -> float:
    rows = float(per["argmax_rows"][idx].sum())
    return float(per["argmax_hits"][idx].sum()) / rows if rows else float("nan")


def _agreement_interval(per: dict[str, np.ndarray], point: float) -> Interval | None:
    from edgeopt.metrics import mean_interval, resampled_interval

    rows = per["argmax_rows"]
    if rows.size and rows[0] > 0 and np.all(rows == rows[0]):  # as many rows in every sample: a plain mean
        return mean_interval(per["argmax_hits"] / rows, point)
    return resampled_interval(rows.size, lambda i: _agreement(per, i), point)  # rows clustered by sample


def quality_intervals(per_output: dict[str, dict[str, np.ndarray]], metrics: dict[str, float],
                      key: Callable[[str, str], str],
                      retained: Sequence[str]) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """(ci, retention_ci) bootstrapped over the evaluation samples, from each output's `per_sample` values:
    `cosine.<output>`, `argmax_agreement.<output>`, and the weakest output's (`min_cosine`,
    `min_argmax_agreement`: every output's value on the same resampled samples, their minimum). `retained`
    metrics are relative to the base already: their retention CI is their CI."""
    from edgeopt.metrics import mean_interval, present, resampled_interval

    ci: dict[str, Interval | None] = {}
    for name, per in per_output.items():
        ci[key("cosine", name)] = mean_interval(per["cosine"], metrics.get(key("cosine", name)))
        if "argmax_hits" in per:
            ci[key("argmax_agreement", name)] = _agreement_interval(per, metrics[key("argmax_agreement", name)])
    cosines = [per["cosine"] for per in per_output.values()]
    classes = [per for per in per_output.values() if "argmax_hits" in per]
    n = len(cosines[0]) if cosines else 0
    if "min_cosine" in metrics and cosines:
        ci["min_cosine"] = ci[key("cosine", next(iter(per_output)))] if len(cosines) == 1 else resampled_interval(
            n, lambda i: min(float(np.mean(c[i])) for c in cosines), metrics["min_cosine"])
    if "min_argmax_agreement" in metrics and classes:
        only = [name for name, per in per_output.items() if "argmax_hits" in per]
        ci["min_argmax_agreement"] = ci[key("argmax_agreement", only[0])] if len(classes) == 1 else \
            resampled_interval(n, lambda i: min(_agreement(per, i) for per in classes), metrics["min_argmax_agreement"])
    out = present(ci)
    return out, {k: out[k] for k in retained if k in out}
