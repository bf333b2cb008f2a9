"""Pure numpy checks of the LLM quality metrics and helpers, on tiny hand-made inputs (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.workloads.causal_lm.hf_export import hf_tensor_name, unpermute_qk
from edgeopt.workloads.causal_lm.quality import (
    log_softmax,
    max_abs_logit_diff,
    mean_kld,
    perplexity,
    top1_agreement,
)


def _random_logits(shape: tuple[int, ...], seed: int = 0, scale: float = 5.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def test_kld_of_identical_logits_is_zero() -> None:
    logits = _random_logits((2, 5, 11))
    assert mean_kld(logits, logits.copy()) == 0.0


def test_kld_ignores_a_constant_shift_and_is_stable_for_huge_logits() -> None:
    logits = _random_logits((1, 3, 7))
    assert mean_kld(logits, logits.astype(np.float64) + 1e4) == pytest.approx(0.0, abs=1e-9)
    huge = logits * 1e3  # naive exp() would overflow float32 and float64
    assert np.isfinite(mean_kld(huge, huge[:, ::-1].copy()))


def test_kld_matches_the_definition_on_a_two_token_vocabulary() -> None:
    p, q = np.array([0.75, 0.25]), np.array([0.5, 0.5])
    ref = np.log(p).reshape(1, 1, 2).astype(np.float32)
    cand = np.log(q).reshape(1, 1, 2).astype(np.float32)
    expected = float((p * np.log(p / q)).sum())
    assert mean_kld(ref, cand) == pytest.approx(expected, rel=1e-6)
    assert mean_kld(cand, ref) != pytest.approx(expected)  # KL(ref || cand), not symmetric


def test_perplexity_of_uniform_distribution_is_vocab_size() -> None:
    vocab = 50
    windows = np.random.default_rng(1).integers(0, vocab, size=(3, 9))
    assert perplexity(np.zeros((3, 9, vocab), np.float32), windows) == pytest.approx(vocab, rel=1e-9)


def test_perplexity_uses_position_t_to_predict_token_t_plus_1() -> None:
    vocab, windows = 6, np.array([[0, 1, 2, 3]])
    logits = np.zeros((1, 4, vocab), np.float32)
    logits[0, np.arange(3), windows[0, 1:]] = 50.0  # confident and right about every next token
    assert perplexity(logits, windows) == pytest.approx(1.0, abs=1e-12)
    shifted = np.zeros_like(logits)
    shifted[0, np.arange(1, 4), windows[0, 1:]] = 50.0  # right token, off by one position
    assert perplexity(shifted, windows) > 1e10


def test_log_softmax_rows_are_normalized() -> None:
    lp = log_softmax(_random_logits((4, 13)))
    assert np.allclose(np.exp(lp).sum(axis=-1), 1.0)


def test_top1_agreement_and_max_abs_diff() -> None:
    ref = np.array([[[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]]], np.float32)
    cand = np.array([[[0.0, 1.5, 1.0], [0.0, 3.0, 0.0]]], np.float32)
    assert top1_agreement(ref, cand) == 0.5
    assert max_abs_logit_diff(ref, cand) == 3.0


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        mean_kld(np.zeros((1, 2, 3)), np.zeros((1, 2, 4)))
    with pytest.raises(ValueError):
        perplexity(np.zeros((1, 2, 3)), np.zeros((1, 3), dtype=np.int64))


def _llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to q_proj/k_proj rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("n_head", [3, 9])
def test_unpermute_inverts_the_converter_permutation(n_head: int) -> None:
    w = np.arange(n_head * 64 * 5, dtype=np.float32).reshape(n_head * 64, 5)
    assert np.array_equal(unpermute_qk(_llamacpp_permute(w, n_head), n_head), w)
    assert not np.array_equal(_llamacpp_permute(w, n_head), w)


def test_tensor_names_map_to_llama_for_causal_lm() -> None:
    assert hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_tensor_name("blk.29.attn_k.weight") == "model.layers.29.self_attn.k_proj.weight"
    assert hf_tensor_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"


def test_quant_type_names_map_to_llama_ftypes() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from edgeopt.errors import UserError
    from edgeopt.workloads.causal_lm.quantize import QUANT_TYPES, ftype_for

    assert ftype_for("q4_k") == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert ftype_for("F16") == llama_cpp.LLAMA_FTYPE_MOSTLY_F16
    assert ftype_for("F32") == llama_cpp.LLAMA_FTYPE_ALL_F32
    assert len({ftype_for(q) for q in QUANT_TYPES}) == len(QUANT_TYPES)
    with pytest.raises(UserError, match="unknown"):
        ftype_for("Q4_K_XL")
