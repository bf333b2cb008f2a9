"""Confidence intervals of the causal-lm quality metrics, bootstrapped over the evaluation windows, on real
llama.cpp outputs of the bundled GGUF: the runner against its own reference, and a copy of it whose logits are
perturbed with seeded noise (a worse candidate on the same windows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.results import Quality
from edgeopt.workloads.base import get_workload
from edgeopt.workloads.causal_lm.quality import log_softmax, quality_intervals, window_means
from edgeopt.workloads.causal_lm.workload import POSITIONS_FILE, QUALITY_FILE

WORKLOAD = get_workload("causal-lm")
N_WINDOWS, WINDOW_TOKENS = 8, 32
METRICS = {"ppl", "ppl_ratio", "kld", "top1"}


class NoisyLogits:
    """The runner with seeded Gaussian noise added to every logit it returns (generation untouched)."""

    def __init__(self, inner: Any, sigma: float) -> None:
        self.inner, self.sigma = inner, sigma
        self.rng = np.random.default_rng(0)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        out = np.asarray(self.inner.logits(ids), dtype=np.float32)
        return out + self.rng.normal(0.0, self.sigma, out.shape).astype(np.float32)

    def generate(self, prompt_ids: np.ndarray, max_new_tokens: int) -> Any:
        return self.inner.generate(prompt_ids, max_new_tokens)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the baseline's outputs, a noisy candidate's) on the same real windows of held-out text."""
    pytest.importorskip("llama_cpp")
    from edgeopt.adapters.llamacpp import LlamaCppRunner
    from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf
    from edgeopt.workloads.causal_lm.logits import token_windows

    runner = LlamaCppRunner(bundled_smollm2_gguf(), threads=2)
    windows = token_windows(bundled_smollm2_gguf(), N_WINDOWS, WINDOW_TOKENS)
    reference = np.stack([log_softmax(runner.logits(w)).astype(np.float16) for w in windows])
    inputs = {"eval_input_ids": windows, "reference_logprobs": reference, "probe_prompt_ids": windows[0][:8]}
    root = tmp_path_factory.mktemp("clm-quality")
    base, noisy = root / "base", root / "noisy"
    for out, r in ((base, runner), (noisy, NoisyLogits(runner, sigma=1.5))):
        out.mkdir()
        WORKLOAD.write_outputs(r, inputs, BenchmarkConfig(), out)
    return base, noisy


def _holds_its_points(q: Quality) -> None:
    assert set(q.ci) == METRICS and set(q.retention_ci) == set(q.retention) == METRICS
    for k, (low, high) in q.ci.items():
        assert low <= q.metrics[k] <= high, (k, q.ci[k], q.metrics[k])
    for k, (low, high) in q.retention_ci.items():
        assert low <= q.retention[k] <= high, (k, q.retention_ci[k], q.retention[k])


def test_window_means_are_the_metrics(measured: tuple[Path, Path]) -> None:
    """Equal-length windows: the mean of the window means is the mean over positions the summary reports."""
    for out in measured:
        means = window_means(out / POSITIONS_FILE)
        summary = json.loads((out / QUALITY_FILE).read_text())
        assert means is not None and all(v.shape == (N_WINDOWS,) for v in means.values())
        assert float(np.exp(means["nll"].mean())) == pytest.approx(summary["ppl"], rel=1e-5)
        assert float(means["kld"].mean()) == pytest.approx(summary["kld"], rel=1e-5, abs=1e-9)
        assert float(means["top1"].mean()) == pytest.approx(summary["top1"])


def test_the_baseline_against_itself(measured: tuple[Path, Path]) -> None:
    base, _ = measured
    q = WORKLOAD.quality(base, base)
    _holds_its_points(q)
    # The windows' text differs, so their perplexities do: a real interval around the point.
    low, high = q.ci["ppl"]
    assert low < q.metrics["ppl"] < high
    # Identical outputs: each window's NLL is the baseline's, so every resample's ratio is 1.
    assert q.retention_ci["ppl"] == (1.0, 1.0) and q.ci["ppl_ratio"] == (1.0, 1.0)
    assert q.retention_ci["top1"][0] > 0.95 and q.retention_ci["kld"][0] > 0.999


def test_a_noisy_candidate_gets_lower_retention_intervals(measured: tuple[Path, Path]) -> None:
    base, noisy = measured
    same, worse = WORKLOAD.quality(base, base), WORKLOAD.quality(noisy, base)
    _holds_its_points(worse)
    for k in ("top1", "kld", "ppl"):
        low, high = worse.ci[k]
        assert low < high, k  # the windows differ in how much the noise costs them
        assert worse.retention_ci[k][1] < same.retention_ci[k][0], (k, worse.retention_ci[k], same.retention_ci[k])
    assert worse.retention_ci["ppl"][1] < 1.0 and worse.ci["ppl_ratio"][0] > 1.0


def test_no_positions_no_intervals(measured: tuple[Path, Path], tmp_path: Path) -> None:
    """A measurement without its per-position scores (made before they were saved) keeps its points, no CIs;
    without the baseline's, the paired ppl intervals are left out."""
    base, noisy = measured
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / QUALITY_FILE).write_text((noisy / QUALITY_FILE).read_text())
    q = WORKLOAD.quality(bare, base)
    assert q.ci == {} and q.retention_ci == {}
    assert q.metrics == WORKLOAD.quality(noisy, base).metrics
    ci, kept = quality_intervals(window_means(noisy / POSITIONS_FILE), None, q.metrics, q.retention)
    assert set(ci) == {"ppl", "kld", "top1"} and set(kept) == {"kld", "top1"}
