"""Pure-numpy quality metrics on next-token logits shaped [n_windows, seq, vocab].

Position t's logits predict token t+1 of the same window. All softmax work goes through a float64
log-softmax, one window at a time, so it is stable for any logit scale and bounded in memory. The confidence
intervals of the measured metrics are bootstrapped over windows (`window_means`, `quality_intervals`).
"""

from __future__ import annotations

import math
from pathlib import Path

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


# -- confidence intervals over the evaluation windows ------------------------------------------------------------

Interval = tuple[float, float]
PER_POSITION = ("kld", "nll", "top1")  # what positions.npz holds per window and position (and argmax)


def window_means(positions_file: Path) -> dict[str, npt.NDArray[np.float64]] | None:
    """Each window's mean KLD, NLL and top-1 agreement from a measurement's positions.npz, float64 [windows];
    None where the file is missing (a measurement made before it was written) or lacks one of them.

    Windows are the bootstrap's samples: the positions of one window share its context, so they are not
    independent, and a window mean is what varies from one stretch of text to the next. All windows have the same
    length, so the mean of the window means is the mean over every position: the point values are unchanged.
    """
    if not positions_file.is_file():
        return None
    with np.load(positions_file) as f:
        if not all(k in f.files for k in PER_POSITION):
            return None
        arrays = {k: np.asarray(f[k], dtype=np.float64) for k in PER_POSITION}
    if any(a.ndim != 2 or a.shape[1] == 0 for a in arrays.values()):
        return None
    return {k: a.mean(axis=1) for k, a in arrays.items()}


def _exp_mean(nll: np.ndarray) -> float:
    """Perplexity from per-window mean NLLs (equal-length windows)."""
    return float(np.exp(np.mean(nll)))


def quality_intervals(candidate: dict[str, npt.NDArray[np.float64]] | None,
                      baseline: dict[str, npt.NDArray[np.float64]] | None,
                      metrics: dict[str, float], retention: dict[str, float]) -> tuple[dict[str, Interval],
                                                                                        dict[str, Interval]]:
    """(ci, retention_ci) of the causal-lm metrics from the window means of the candidate and the baseline.

    kld and top1 are means over positions against the reference: mean CIs; top1 is its own retention and kld's
    retention exp(-kld) maps its interval. ppl = exp(mean NLL): exp of the mean NLL's interval; ppl_ratio and the
    ppl retention pair each window's NLL of the candidate with the baseline's (the same windows resampled for
    both). Without the candidate's windows: no interval; without the baseline's: no paired one.
    """
    from edgeopt.metrics import mean_interval, present, ratio_interval

    if candidate is None:
        return {}, {}
    log_ppl = mean_interval(candidate["nll"], math.log(metrics["ppl"])) if metrics["ppl"] > 0 else None
    kld = mean_interval(candidate["kld"], metrics["kld"])
    top1 = mean_interval(candidate["top1"], metrics["top1"])
    nll = candidate["nll"]
    base_nll = baseline["nll"] if baseline is not None and baseline["nll"].shape == nll.shape else None
    ratio = ratio_interval(nll, base_nll, of=_exp_mean, point=metrics["ppl_ratio"]) if base_nll is not None else None
    kept = ratio_interval(base_nll, nll, of=_exp_mean, point=retention["ppl"]) if base_nll is not None else None
    ci = present({"ppl": (math.exp(log_ppl[0]), math.exp(log_ppl[1])) if log_ppl else None, "ppl_ratio": ratio,
                  "kld": kld, "top1": top1})
    retention_ci = present({"top1": top1, "ppl": kept, "ppl_ratio": kept,
                            "kld": (math.exp(-kld[1]), math.exp(-kld[0])) if kld else None})
    return ci, retention_ci
