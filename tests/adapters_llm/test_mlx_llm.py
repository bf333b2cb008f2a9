"""mlx-lm conversion (8/4-bit affine groups) and the "mlx-lm" runtime on the real SmolLM2-135M, against Hugging
Face float32 logits on the same windows.

MLX's Linux CPU build runs on one thread with plain quantized-matmul loops (~10 s per 64-token forward here),
so quality is scored on 2 windows of 64 tokens: the first 64 positions of the shared 96-token reference
windows (causal, so the prefix logits are the same).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.errors import CandidateError
from edgeopt.recipes import BuildContext, FeedList, ParentArtifact, all_recipes, get_recipe, get_runtime
from edgeopt.workloads.causal_lm.quality import perplexity

THREADS = 2
N_WIN, WIN_LEN = 2, 64


@pytest.fixture(scope="module")
def scored_windows(eval_windows: np.ndarray) -> np.ndarray:
    return eval_windows[:N_WIN, :WIN_LEN]


@pytest.fixture(scope="module")
def scored_reference(hf_ref_logits: np.ndarray) -> np.ndarray:
    return hf_ref_logits[:N_WIN, :WIN_LEN]


def _mlx(scored: Callable[..., dict[str, Any]], bits: int) -> dict[str, Any]:
    return scored(f"mlx-lm-q{bits}", "mlx-lm-convert", {"quantize_bits": bits})


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def test_recipe_registered_for_causal_lm() -> None:
    recipe = all_recipes()["mlx-lm-convert"]
    assert recipe.accepts == ("base", "hf")
    assert recipe.tasks == ("causal-lm",)
    assert set(recipe.requires.modules) == {"mlx", "mlx_lm"}


def test_q8_is_close_to_the_reference_and_better_than_q4(scored: Callable[..., dict[str, Any]],
                                                         scored_reference: np.ndarray,
                                                         scored_windows: np.ndarray) -> None:
    q8, q4 = _mlx(scored, 8), _mlx(scored, 4)
    for cand in (q8, q4):
        assert cand["logits"].dtype == np.float32 and cand["logits"].shape == scored_reference.shape
    # Measured on these windows: q8 KLD ~0.002, top-1 ~0.97; q4 KLD ~0.4, top-1 ~0.7 (the tied embedding,
    # which is also the output head, is 4-bit too).
    assert q8["kld"] < 0.01
    assert q8["top1"] >= 0.9
    assert q4["kld"] > 5 * q8["kld"]
    assert q4["top1"] < q8["top1"]
    ppl_ref = perplexity(scored_reference, scored_windows)
    assert abs(q8["ppl"] / ppl_ref - 1) < 0.05
    for bits, cand in ((8, q8), (4, q4)):
        d = cand["out"].details
        assert cand["out"].precision == f"int{bits}-weights" and cand["out"].format == "mlx-lm"
        assert d["quantization"] == {"group_size": 64, "bits": bits, "mode": "affine"}
        # 30 layers x 7 Linear + the tied embedding, all quantized.
        assert d["quantized_matrices"] == 211 and d["float_matrices"] == 0 and d["tied_embeddings"] is True
        # fp32 scale and bias per group of 64: bits + 1.
        assert d["bits_per_weight"] == pytest.approx(bits + 1, abs=0.05)
        info = cand["runner"].runtime_info()
        assert info["quantization"]["bits"] == bits and info["dtype"] == "float32" and info["kv_cache"] == "f32"
        assert info["effective_threads"] == 1 and info["requested_threads"] == THREADS


def test_sizes_and_roofline_match_the_files(scored: Callable[..., dict[str, Any]], hf_dir: Path) -> None:
    hf_shapes = _safetensors_shapes(hf_dir / "model.safetensors")
    hf_matrix_params = sum(int(np.prod(s)) for k, s in hf_shapes.items() if len(s) == 2 and k != "lm_head.weight")
    hf_bytes = (hf_dir / "model.safetensors").stat().st_size
    sizes = {}
    for bits in (8, 4):
        cand = _mlx(scored, bits)
        size = (cand["dir"] / "model.safetensors").stat().st_size
        sizes[bits] = size
        roof = cand["runner"].roofline()
        # Tied embedding: every stored tensor is read once per token, so the bytes are the file's minus its header.
        assert 0.999 * size < roof["weight_bytes"] <= size
        assert roof["matmul_params"] == hf_matrix_params
        assert roof["kv_bytes_per_position"] == 30 * 2 * 3 * 64 * 4  # layers x (K, V) x kv heads x head dim x fp32
    assert sizes[8] < 0.3 * hf_bytes  # 9 of 32 bits per weight
    assert sizes[4] < 0.6 * sizes[8]


def test_generate_decodes_greedily_with_the_kv_cache(scored: Callable[..., dict[str, Any]],
                                                     eval_windows: np.ndarray) -> None:
    runner = _mlx(scored, 8)["runner"]
    prompt, n = eval_windows[2, :24], 8
    gen = runner.generate(prompt, n)
    assert len(gen.token_ids) == n and len(gen.decode_s) == n - 1
    assert gen.ttft_s > 0 and all(t > 0 for t in gen.decode_s)
    # The cached decode agrees with full forwards (no cache) over prompt + generated tokens.
    full = runner.logits(np.concatenate([prompt, np.array(gen.token_ids[:-1], dtype=np.int64)]))
    assert gen.token_ids == full[len(prompt) - 1 :].argmax(axis=-1).tolist()
    # Each generation starts from a fresh cache.
    assert runner.generate(prompt, 2).token_ids == gen.token_ids[:2]


def test_a_group_size_that_leaves_matrices_in_float_fails(llm_base: Any, tmp_path: Path) -> None:
    recipe = get_recipe("mlx-lm-convert")
    ctx = BuildContext(base=llm_base, parent=None, out_dir=tmp_path,
                       options=recipe.options_model(quantize_bits=4, group_size=128), calibration=FeedList(),
                       threads=THREADS)
    # 576 (SmolLM2's width) is not a multiple of 128: mlx-lm would quantize only down_proj.
    with pytest.raises(CandidateError, match="group_size 128"):
        recipe.build(ctx)


def test_needs_a_hugging_face_source(llm_base: Any, tmp_path: Path) -> None:
    recipe = get_recipe("mlx-lm-convert")
    parent = ParentArtifact(name="gguf", dir=tmp_path, format="gguf", model_file="model.gguf")
    ctx = BuildContext(base=llm_base, parent=parent, out_dir=tmp_path / "out", options=recipe.options_model(),
                       calibration=FeedList(), threads=THREADS)
    with pytest.raises(CandidateError, match="Hugging Face parent"):
        recipe.build(ctx)


def test_runtime_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CandidateError, match="does not exist"):
        get_runtime("mlx-lm")(tmp_path, "model.safetensors", {}, THREADS)
