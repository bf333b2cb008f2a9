"""Pure-numpy quality metrics on next-token logits shaped [n_windows, seq, vocab].

Position t's logits predict token t+1 of the same window. All softmax work goes through a float64
log-softmax, one window at a time, so it is stable for any logit scale and bounded in memory.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]


def log_softmax(logits: FloatArray) -> npt.NDArray[np.float64]:
    """log softmax over the last axis, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _check_pair(ref_logits: FloatArray, cand_logits: FloatArray) -> None:
    if ref_logits.shape != cand_logits.shape or ref_logits.ndim != 3:
        raise ValueError(f"logits must both be [windows, seq, vocab]: {ref_logits.shape} vs {cand_logits.shape}")


def mean_nll(logits: FloatArray, windows: IntArray) -> float:
    """Mean negative log-likelihood (nats) of tokens 1..seq-1 of each window given the tokens before them."""
    if logits.ndim != 3 or logits.shape[:2] != windows.shape:
        raise ValueError(f"logits {logits.shape} do not match windows {windows.shape}")
    if windows.shape[1] < 2:
        raise ValueError("windows need at least 2 tokens")
    total = 0.0
    for lg, ids in zip(logits, windows, strict=True):
        lp = log_softmax(lg[:-1])
        total -= float(lp[np.arange(len(ids) - 1), ids[1:]].sum())
    return total / (windows.shape[0] * (windows.shape[1] - 1))


def perplexity(logits: FloatArray, windows: IntArray) -> float:
    """exp(mean NLL) over every predicted position of every window."""
    return float(np.exp(mean_nll(logits, windows)))


def mean_kld(ref_logits: FloatArray, cand_logits: FloatArray) -> float:
    """Mean over positions of KL(softmax(ref) || softmax(cand)), in nats."""
    _check_pair(ref_logits, cand_logits)
    total, n = 0.0, 0
    for ref, cand in zip(ref_logits, cand_logits, strict=True):
        lp_ref, lp_cand = log_softmax(ref), log_softmax(cand)
        kl = (np.exp(lp_ref) * (lp_ref - lp_cand)).sum(axis=-1)
        total += float(kl.sum())
        n += kl.shape[0]
    return total / n


def top1_agreement(ref_logits: FloatArray, cand_logits: FloatArray) -> float:
    """Fraction of positions whose argmax token is the same in both."""
    _check_pair(ref_logits, cand_logits)
    return float((ref_logits.argmax(axis=-1) == cand_logits.argmax(axis=-1)).mean())


def max_abs_logit_diff(ref_logits: FloatArray, cand_logits: FloatArray) -> float:
    """Largest |ref - cand| over all positions and vocabulary entries."""
    _check_pair(ref_logits, cand_logits)
    return float(max(np.abs(r.astype(np.float64) - c).max() for r, c in zip(ref_logits, cand_logits, strict=True)))
