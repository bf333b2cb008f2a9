"""Pure measurement arithmetic: latency percentiles and embedding quality. No frameworks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean row-wise cosine similarity between two [n, dim] embedding matrices."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {candidate.shape}")
    return float(np.mean(np.sum(_unit_rows(reference) * _unit_rows(candidate), axis=1)))


def retrieval_ranks(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """1-based rank of document i among all documents for query i (ties count against it)."""
    scores = _unit_rows(queries) @ _unit_rows(documents).T
    own = np.diag(scores)[:, None]
    return (scores > own).sum(axis=1) + 1


def retrieval_metrics(queries: np.ndarray, documents: np.ndarray) -> dict[str, float]:
    ranks = retrieval_ranks(queries, documents)
    return {
        "recall@1": float(np.mean(ranks <= 1)),
        "recall@10": float(np.mean(ranks <= 10)),
        "mrr": float(np.mean(1.0 / ranks)),
    }


def retention(candidate: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """candidate / baseline per metric; a zero baseline gives 1.0 when equal, else 0.0."""
    out: dict[str, float] = {}
    for key, base in baseline.items():
        value = candidate[key]
        out[key] = value / base if base else float(value == base)
    return out
