"""Quantized GGUFs against the F32 reference on the same windows (real model, no mocks).

Every variant runs with an F32 KV cache, like the reference, so the KLD measures the weights only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# KLD(F32 || F16 weights), nats/position. Measured 4e-6 to 1e-5 (F16 keeps 11 significant bits of weights
# that came from Q4_1); Q8_0 measures ~5e-3. The bound leaves 10x headroom and stays 25x under Q8_0.
F16_MAX_KLD = 2e-4


def _kld(path: Path, windows: np.ndarray, ref_logits: np.ndarray) -> tuple[float, float]:
    from edgeopt.workloads.causal_lm.logits import llamacpp_logits
    from edgeopt.workloads.causal_lm.quality import mean_kld, perplexity

    logits = llamacpp_logits(path, windows, threads=2, kv_cache="f32")
    return mean_kld(ref_logits, logits), perplexity(logits, windows)


@pytest.fixture(scope="module")
def klds(
    bundled_gguf: Path,
    llm_workdir: Path,
    quantized: Callable[[str], dict[str, Any]],
    windows: np.ndarray,
    ref_logits: np.ndarray,
) -> dict[str, tuple[float, float]]:
    from edgeopt.workloads.causal_lm.gguf_reference import dequantize_gguf

    f16 = dequantize_gguf(bundled_gguf, llm_workdir / "ref-f16.gguf", "f16")
    assert f16["tensor_types"] == {"F16": 211, "F32": 61}
    out = {"F16": _kld(Path(f16["dst"]), windows, ref_logits)}
    for qtype in ("Q8_0", "Q4_0"):
        out[qtype] = _kld(Path(quantized(qtype)["dst"]), windows, ref_logits)
    return out


def test_f16_gguf_is_nearly_lossless(klds: dict[str, tuple[float, float]]) -> None:
    assert 0.0 <= klds["F16"][0] < F16_MAX_KLD


def test_kld_orders_q8_0_before_q4_0(klds: dict[str, tuple[float, float]]) -> None:
    kld_f16, kld_q8, kld_q4 = klds["F16"][0], klds["Q8_0"][0], klds["Q4_0"][0]
    assert kld_f16 < kld_q8 < kld_q4
    assert klds["Q8_0"][1] < klds["Q4_0"][1]  # perplexity follows


def test_imatrix_reaches_the_quantizer_and_lowers_q4_0_kld(
    hf_dir: Path,
    ref_path: Path,
    llm_workdir: Path,
    windows: np.ndarray,
    ref_logits: np.ndarray,
    klds: dict[str, tuple[float, float]],
) -> None:
    from edgeopt.workloads.causal_lm.imatrix import hf_imatrix, load_imatrix_gguf, save_imatrix_gguf
    from edgeopt.workloads.causal_lm.logits import offline_text, token_windows
    from edgeopt.workloads.causal_lm.quantize import imatrix_supported, quantize_gguf

    assert imatrix_supported()
    calibration = token_windows(ref_path, 4, 128, text=offline_text()[250_000:])  # not the eval windows
    assert not any(np.array_equal(c, w) for c in calibration for w in windows)
    sums, n_tokens = hf_imatrix(hf_dir, calibration)
    path = save_imatrix_gguf(llm_workdir / "imatrix.gguf", sums, n_tokens, 128, ["pydoc topics, tail"])
    loaded = load_imatrix_gguf(path)
    assert len(loaded) == 210  # 7 matrices x 30 blocks
    name = "blk.0.ffn_down.weight"
    assert np.allclose(loaded[name], sums[name] / n_tokens, rtol=1e-6)
    summary = quantize_gguf(ref_path, llm_workdir / "Q4_0-imatrix.gguf", "Q4_0", imatrix=path)
    assert summary["imatrix_entries"] == 210
    kld_imatrix, _ = _kld(Path(summary["dst"]), windows, ref_logits)
    assert kld_imatrix < 0.9 * klds["Q4_0"][0]
