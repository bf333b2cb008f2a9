"""The causal-lm workload: its quality arithmetic, and its harness on a real llama.cpp runner (bundled GGUF)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.errors import UserError
from edgeopt.recipes import BaseModelInfo
from edgeopt.workloads.base import get_workload
from edgeopt.workloads.causal_lm.quality import log_softmax, mean_kld, perplexity, top1_agreement
from edgeopt.workloads.causal_lm.workload import QUALITY_FILE, roof, until_eos, window_scores

WORKLOAD = get_workload("causal-lm")


def test_roof_is_bandwidth_over_bytes_per_token() -> None:
    r = roof(10e9, {"weight_bytes": 90_000_000, "kv_bytes_per_position": 20_000, "matmul_params": 134_000_000},
             mean_context=500, decode_tok_s=50.0)
    assert r["bytes_per_token_mb"] == pytest.approx(100.0)  # 90 MB of weights + 500 x 20 kB of KV cache
    assert r["roof_tok_s"] == pytest.approx(100.0)
    assert r["roof_fraction"] == pytest.approx(0.5)
    assert r["decode_gflops"] == pytest.approx(50 * 2 * 0.134)


def test_window_scores_agree_with_the_whole_array_metrics() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, (16, 300)).astype(np.float32)
    cand = ref + rng.normal(0, 0.5, ref.shape).astype(np.float32)
    ids = rng.integers(0, 300, 16)
    s = window_scores(cand, log_softmax(ref).astype(np.float16), ids)
    assert s["kld"].mean() == pytest.approx(mean_kld(ref[None], cand[None]), rel=1e-3)  # float16 storage only
    assert math.exp(s["nll"].mean()) == pytest.approx(perplexity(cand[None], ids[None]), rel=1e-9)
    assert s["top1"].mean() == pytest.approx(top1_agreement(ref[None], cand[None]))
    same = window_scores(ref, log_softmax(ref).astype(np.float16), ids)
    assert same["kld"].max() < 1e-5 and same["top1"].all()


def test_quality_is_relative_to_the_baseline(tmp_path: Path) -> None:
    base, cand = tmp_path / "base", tmp_path / "cand"
    for d, ppl, kld, top1 in ((base, 20.0, 1e-7, 1.0), (cand, 21.0, 0.04, 0.9)):
        d.mkdir()
        (d / QUALITY_FILE).write_text(json.dumps({"ppl": ppl, "kld": kld, "top1": top1}))
    q = WORKLOAD.quality(cand, base)
    assert q.metrics == {"ppl": 21.0, "ppl_ratio": pytest.approx(1.05), "kld": 0.04, "top1": 0.9}
    assert q.retention["ppl"] == pytest.approx(20 / 21) and q.retention["top1"] == 0.9
    assert q.retention["kld"] == pytest.approx(math.exp(-0.04))


def test_until_eos_cuts_at_the_first_end_token() -> None:
    assert until_eos([5, 6, 2, 7, 2], {2}) == [5, 6]
    assert until_eos([5, 6], {2}) == [5, 6]


def test_decode_needs_at_least_two_tokens(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="decode_tokens"):
        base = BaseModelInfo(path=tmp_path, format="gguf", sha256="0" * 64, task="causal-lm", tokenizer_dir=tmp_path)
        WORKLOAD.prepare_inputs(base, tmp_path, BenchmarkConfig(decode_tokens=1))


# -- the harness on the real model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runner() -> object:
    pytest.importorskip("llama_cpp")
    from edgeopt.adapters.llamacpp import LlamaCppRunner
    from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf

    return LlamaCppRunner(bundled_smollm2_gguf(), threads=2)


@pytest.fixture(scope="module")
def inputs(runner: object) -> dict[str, np.ndarray]:
    """Two real windows; the 'reference' is the runner's own prediction, so quality must be perfect."""
    from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf
    from edgeopt.workloads.causal_lm.logits import token_windows

    windows = token_windows(bundled_smollm2_gguf(), 2, 32)
    reference = np.stack([log_softmax(runner.logits(w)).astype(np.float16) for w in windows])  # type: ignore[attr-defined]
    return {"eval_input_ids": windows, "reference_logprobs": reference, "calibration_input_ids": windows,
            "bench_prompt_ids": windows.ravel()[:24], "probe_prompt_ids": windows[0][:8]}


def test_outputs_score_a_runner_against_its_own_reference(runner: object, inputs: dict, tmp_path: Path) -> None:
    WORKLOAD.write_outputs(runner, inputs, BenchmarkConfig(), tmp_path)
    summary = json.loads((tmp_path / QUALITY_FILE).read_text())
    assert summary["kld"] < 1e-5 and summary["top1"] >= 0.98
    assert summary["ppl"] == pytest.approx(summary["ppl_reference"], rel=1e-3)
    positions = np.load(tmp_path / "positions.npz")
    assert positions["kld"].shape == (2, 32) and positions["nll"].shape == (2, 31)
    generation = json.loads((tmp_path / "generation.json").read_text())
    assert generation["prompt_ids"] == inputs["probe_prompt_ids"].tolist() and len(generation["token_ids"]) == 32
    # Greedy decoding on the timed context reproduces itself.
    again = runner.generate(inputs["probe_prompt_ids"], 32)  # type: ignore[attr-defined]
    assert again.token_ids == generation["token_ids"]


def test_benchmark_times_prompt_and_decode(runner: object, inputs: dict, tmp_path: Path) -> None:
    from edgeopt.bandwidth import CACHE_FILE, machine_fingerprint

    meas = tmp_path / "measurements"
    meas.mkdir()
    # A known bandwidth in the per-machine cache: the roof follows from it and the runner's roofline.
    (meas / CACHE_FILE).write_text(json.dumps({"bytes_per_s": 10e9, "fingerprint": machine_fingerprint(2)}))
    bench = BenchmarkConfig(threads=2, prompt_tokens=24, decode_tokens=5, warmup_iterations=1, min_iterations=2,
                            min_time_s=0)
    speed = WORKLOAD.benchmark(runner, inputs, bench, meas / "cand")
    x = speed.extra
    assert speed.latency.iterations == 2 * 4  # two generations, four timed decode steps each
    assert speed.throughput.iterations == 2 and speed.throughput_items_per_s == x["decode_tok_s"] > 0
    assert x["prompt_tokens"] == 24 and x["prompt_tok_s"] > 0 and x["ttft_ms"] > 0
    line = runner.roofline()  # type: ignore[attr-defined]
    assert x["copy_bandwidth_gbs"] == pytest.approx(10.0)
    assert x["bytes_per_token_mb"] == pytest.approx((line["weight_bytes"] + line["kv_bytes_per_position"] * 26.5) / 1e6)
    assert x["roof_fraction"] == pytest.approx(x["decode_tok_s"] / x["roof_tok_s"])
