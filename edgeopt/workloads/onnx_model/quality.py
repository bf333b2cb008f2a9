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
"""

from __future__ import annotations

from collections.abc import Sequence

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
