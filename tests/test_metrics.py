"""Embedding-quality arithmetic on small hand-checked arrays."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.metrics import mean_cosine, percentiles_ms, retention, retrieval_metrics, retrieval_ranks


def test_percentiles() -> None:
    p = percentiles_ms([0.001 * i for i in range(1, 101)])
    assert p["p50_ms"] == pytest.approx(50.5)
    assert p["p99_ms"] == pytest.approx(99.01)
    with pytest.raises(ValueError):
        percentiles_ms([])


def test_cosine_ignores_scale_and_detects_change() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 8))
    assert mean_cosine(a, 3 * a) == pytest.approx(1.0)
    assert mean_cosine(a, -a) == pytest.approx(-1.0)
    assert mean_cosine(a, a + rng.normal(scale=0.5, size=a.shape)) < 0.99
    with pytest.raises(ValueError):
        mean_cosine(a, a[:5])


def test_retrieval_ranks_and_metrics() -> None:
    docs = np.eye(4)
    queries = np.array([[1, 0, 0, 0], [0, 0.2, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    # Query 1 is closer to document 2 than to its own document 1.
    assert retrieval_ranks(queries, docs).tolist() == [1, 2, 1, 1]
    m = retrieval_metrics(queries, docs)
    assert m["recall@1"] == pytest.approx(0.75)
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)


def test_retention() -> None:
    assert retention({"a": 0.5, "b": 0.0}, {"a": 1.0, "b": 0.0}) == {"a": 0.5, "b": 1.0}
