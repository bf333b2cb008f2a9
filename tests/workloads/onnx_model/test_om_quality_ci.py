"""Confidence intervals of the onnx-model quality metrics (cosine, argmax agreement and the weakest output's),
bootstrapped over the evaluation samples, on real onnxruntime outputs of the mixed graph the tests make, against
the same graph with seeded noise added to its outputs (a worse candidate on the same feeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.iospec import Feed
from edgeopt.recipes import BaseModelInfo, get_runtime
from edgeopt.results import Quality
from edgeopt.workloads.onnx_model.quality import per_sample, quality_intervals
from edgeopt.workloads.onnx_model.workload import RETAINED, WORKLOAD

INTERVALS = {"cosine.logits", "cosine.count", "argmax_agreement.logits", "min_cosine", "min_argmax_agreement"}


class NoisyLogits:
    """The runner with seeded Gaussian noise on its float output (the logits); the int64 count untouched."""

    def __init__(self, inner: Any, sigma: float) -> None:
        self.inner, self.sigma, self.io_spec = inner, sigma, inner.io_spec
        self.rng = np.random.default_rng(0)

    def run(self, feed: Feed) -> Feed:
        out = dict(self.inner.run(feed))
        out["logits"] = (out["logits"] + self.rng.normal(0.0, self.sigma, out["logits"].shape)).astype(np.float32)
        return out


@pytest.fixture(scope="module")
def measured(om_root: Path, om_base: BaseModelInfo, om_inputs: dict, om_bench: BenchmarkConfig) -> dict[str, Path]:
    runner = get_runtime("onnxruntime")(om_base.path.parent, om_base.path.name, {}, 1)
    dirs = {"base": runner, "noisy": NoisyLogits(runner, 1.0)}
    out: dict[str, Path] = {}
    for name, r in dirs.items():
        out[name] = om_root / "quality-ci" / name
        out[name].mkdir(parents=True)
        WORKLOAD.write_outputs(r, om_inputs, om_bench, out[name])
    return out


def _holds_its_points(q: Quality) -> None:
    assert set(q.ci) == INTERVALS and set(q.retention_ci) == set(RETAINED)
    for k, (low, high) in q.ci.items():
        assert low <= q.metrics[k] <= high, (k, q.ci[k], q.metrics[k])
    for k, (low, high) in q.retention_ci.items():
        assert low <= q.retention[k] <= high, (k, q.retention_ci[k], q.retention[k])


def test_the_baseline_against_itself(measured: dict[str, Path]) -> None:
    q = WORKLOAD.quality(measured["base"], measured["base"])
    _holds_its_points(q)
    assert q.retention_ci["min_argmax_agreement"] == (1.0, 1.0)
    assert q.retention_ci["min_cosine"] == pytest.approx((1.0, 1.0), abs=1e-12)


def test_a_noisy_candidate_gets_lower_retention_intervals(measured: dict[str, Path]) -> None:
    same, worse = (WORKLOAD.quality(measured[name], measured["base"]) for name in ("base", "noisy"))
    _holds_its_points(worse)
    for k in ("cosine.logits", "argmax_agreement.logits", *RETAINED):
        low, high = worse.ci[k]
        assert low < high, k  # some samples' logits move more than others
    for k in RETAINED:
        assert worse.retention_ci[k][1] < same.retention_ci[k][0], (k, worse.retention_ci[k])
    # The count is untouched: identical on every sample. The weakest output's cosine is the logits'.
    assert worse.ci["cosine.count"] == (1.0, 1.0)
    assert worse.metrics["min_cosine"] == worse.metrics["cosine.logits"] < 1.0


def test_several_rows_per_sample_and_several_outputs() -> None:
    """Samples with different row counts: agreement is sum(hits) / sum(rows), the samples resampled whole; the
    weakest of two outputs that both vary is bootstrapped jointly (the same samples for both)."""
    rng = np.random.default_rng(0)
    base = [rng.normal(size=(n, 4)) for n in (1, 3, 2, 5, 4, 2, 3, 1, 2, 4)]
    cand = [b + rng.normal(0.0, 0.8, b.shape) for b in base]
    other = [rng.normal(size=6) for _ in base]
    per = {"scores": per_sample(base, cand, class_scores=True),
           "other": per_sample(other, [o + rng.normal(0.0, 0.5, 6) for o in other], class_scores=False)}
    hits = np.concatenate([(b.argmax(1) == c.argmax(1)) for b, c in zip(base, cand, strict=True)])
    cosines = {k: float(v["cosine"].mean()) for k, v in per.items()}
    metrics = {"argmax_agreement.scores": float(hits.mean()), "cosine.scores": cosines["scores"],
               "cosine.other": cosines["other"], "min_cosine": min(cosines.values()),
               "min_argmax_agreement": float(hits.mean())}
    ci, kept = quality_intervals(per, metrics, lambda m, o: f"{m}.{o}", RETAINED)
    assert set(ci) == set(metrics) and 0 < metrics["argmax_agreement.scores"] < 1
    for k, (low, high) in ci.items():
        assert low < metrics[k] < high, k
    assert kept == {"min_cosine": ci["min_cosine"], "min_argmax_agreement": ci["argmax_agreement.scores"]}
