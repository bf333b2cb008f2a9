"""Quality of a candidate's logits against the FP32 base's, on identical inputs: pure numpy.

Every metric has a per-sample form (`*_per_sample`, one value per input) so confidence intervals can be
bootstrapped over inputs, and a mean. Logits are [n, classes]; ranking ties break towards the lower class index
(a stable sort), the same for base and candidate.

A candidate row with a non-finite logit (NaN, inf) is a broken output: it disagrees with the base (top-1 and
top-k 0, KL divergence inf, not a hit for accuracy). The base's logits must be finite (ValueError otherwise).
"""

from __future__ import annotations

import numpy as np


def _logits(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected logits of shape [n, classes], got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected numeric logits, got {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _pair(base: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base, candidate, valid rows of candidate)."""
    b, c = _logits(base, "base"), _logits(candidate, "candidate")
    if b.shape != c.shape:
        raise ValueError(f"base logits {b.shape} and candidate logits {c.shape} differ in shape")
    if not np.isfinite(b).all():
        raise ValueError("base logits are not all finite")
    return b, c, np.isfinite(c).all(axis=1)


def topk_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """int [n, k]: the k highest classes of each row, best first (ties: lower class index first)."""
    x = _logits(logits, "logits")
    if not 1 <= k <= x.shape[1]:
        raise ValueError(f"k must be in 1..{x.shape[1]}, got {k}")
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-softmax over the last axis, stable for large logits (max subtracted first)."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top1_agreement_per_sample(base: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """float [n]: 1.0 where the candidate's top class is the base's, else 0.0."""
    b, c, valid = _pair(base, candidate)
    same = topk_indices(b, 1)[:, 0] == topk_indices(np.where(np.isfinite(c), c, 0.0), 1)[:, 0]
    return (same & valid).astype(np.float64)


def top1_agreement(base: np.ndarray, candidate: np.ndarray) -> float:
    return float(top1_agreement_per_sample(base, candidate).mean())


# The base's own top-1 probability above which its answer counts as decisive. Inputs far from the training
# distribution (textures, micrographs: most of the photographs scikit-image ships) get flat softmaxes whose
# top classes swap under any perturbation, FP16 included: agreement there measures that tie, not the candidate.
DECISIVE_PROBABILITY = 0.5


def decisive(base: np.ndarray) -> np.ndarray:
    """bool [n]: where the base's top-1 softmax probability is at least DECISIVE_PROBABILITY."""
    return np.exp(log_softmax(base).max(axis=1)) >= DECISIVE_PROBABILITY


def decisive_top1_agreement(base: np.ndarray, candidate: np.ndarray) -> float:
    """Top-1 agreement over the inputs the base classifies decisively; all inputs if it classifies none so."""
    mask = decisive(np.asarray(base, dtype=np.float64))
    same = top1_agreement_per_sample(base, candidate)
    return float(same[mask].mean() if mask.any() else same.mean())


def topk_overlap_per_sample(base: np.ndarray, candidate: np.ndarray, k: int = 5) -> np.ndarray:
    """float [n]: |top-k(base) ∩ top-k(candidate)| / k, order inside the top k ignored."""
    b, c, valid = _pair(base, candidate)
    tb = topk_indices(b, k)
    tc = topk_indices(np.where(np.isfinite(c), c, 0.0), k)
    shared = (tb[:, :, None] == tc[:, None, :]).any(axis=2).sum(axis=1)
    return np.where(valid, shared / k, 0.0)


def top5_overlap_per_sample(base: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    return topk_overlap_per_sample(base, candidate, 5)


def top5_overlap(base: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over inputs of |top5(base) ∩ top5(candidate)| / 5."""
    return float(top5_overlap_per_sample(base, candidate).mean())


def softmax_kld_per_sample(base: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """float [n]: KL(softmax(base) || softmax(candidate)) in nats, >= 0 (float rounding clipped)."""
    b, c, valid = _pair(base, candidate)
    lp = log_softmax(b)
    lq = log_softmax(np.where(valid[:, None], c, 0.0))
    kld = np.maximum((np.exp(lp) * (lp - lq)).sum(axis=1), 0.0)
    return np.where(valid, kld, np.inf)


def softmax_kld(base: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over inputs of KL(softmax(base) || softmax(candidate)), nats."""
    return float(softmax_kld_per_sample(base, candidate).mean())


def topk_accuracy_per_sample(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> np.ndarray:
    """float [n]: 1.0 where labels[i] is among the k highest classes of logits[i]."""
    x = _logits(logits, "logits")
    y = np.asarray(labels)
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected {x.shape[0]} integer labels, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= x.shape[1]):
        raise ValueError(f"labels must be class indices in 0..{x.shape[1] - 1}")
    valid = np.isfinite(x).all(axis=1)
    top = topk_indices(np.where(np.isfinite(x), x, 0.0), k)
    return ((top == y[:, None]).any(axis=1) & valid).astype(np.float64)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    return float(topk_accuracy_per_sample(logits, labels, k).mean())


def compare_logits(
    base: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, float]:
    """All metrics at once: top1_agreement, decisive_top1_agreement, top5_overlap, softmax_kld; with labels
    also the candidate's and the
    base's top-1/top-5 accuracy (`top1_accuracy`, `base_top1_accuracy`, ...)."""
    k5 = min(5, np.asarray(base).shape[-1])
    out = {
        "top1_agreement": top1_agreement(base, candidate),
        "decisive_top1_agreement": decisive_top1_agreement(base, candidate),
        "top5_overlap": float(topk_overlap_per_sample(base, candidate, k5).mean()),
        "softmax_kld": softmax_kld(base, candidate),
    }
    if labels is not None:
        for k in (1, k5):
            out[f"top{k}_accuracy"] = topk_accuracy(candidate, labels, k)
            out[f"base_top{k}_accuracy"] = topk_accuracy(base, labels, k)
    return out


# -- confidence intervals: every metric is a mean over inputs -------------------------------------------------------

Interval = tuple[float, float]


def per_sample_scores(base: np.ndarray, candidate: np.ndarray) -> dict[str, np.ndarray]:
    """float [n'] per agreement metric and softmax_kld: the per-input values whose means `compare_logits` reports
    (decisive_top1_agreement: over the decisive inputs only, all of them if there are none)."""
    k5 = min(5, np.asarray(base).shape[-1])
    same = top1_agreement_per_sample(base, candidate)
    mask = decisive(np.asarray(base, dtype=np.float64))
    return {"top1_agreement": same, "decisive_top1_agreement": same[mask] if mask.any() else same,
            "top5_overlap": topk_overlap_per_sample(base, candidate, k5),
            "softmax_kld": softmax_kld_per_sample(base, candidate)}


def quality_intervals(base: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None,
                      metrics: dict[str, float], retention: dict[str, float],
                      retained: tuple[str, ...]) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """(ci, retention_ci), bootstrapped over the evaluation inputs: a mean CI of every metric in `metrics`
    (softmax_kld only where it is finite); the agreements in `retained` are relative to the base already, so
    their retention CI is their CI; accuracy retention pairs each input's hit with the base's on it."""
    from edgeopt.metrics import mean_interval, present, ratio_interval

    per = per_sample_scores(base, candidate)
    if labels is not None:
        k5 = min(5, np.asarray(base).shape[1])
        for name, k in (("top1_accuracy", 1), ("top5_accuracy", k5)):
            per[name] = topk_accuracy_per_sample(candidate, labels, k)
            per[f"base_{name}"] = topk_accuracy_per_sample(base, labels, k)
    ci = present({k: mean_interval(per[k], v) for k, v in metrics.items() if k in per})
    retention_ci = present({k: ci.get(k) if k in retained else ratio_interval(per[k], per[f"base_{k}"], point=v)
                            for k, v in retention.items() if k in per})
    return ci, retention_ci
