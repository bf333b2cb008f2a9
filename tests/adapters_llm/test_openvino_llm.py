"""OpenVINO causal-LM recipes (stateful KV-cache IR, NNCF weight compression) and runtime on the real
SmolLM2-135M, against Hugging Face float32 logits and greedy tokens on the same windows.

Each IR is built once per module: FP32 and FP16 from the HF folder, then NNCF variants of the FP16 IR.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edgeopt.adapters.causal_lm_common import GraphConst, GraphOp, weight_reads
from edgeopt.errors import CandidateError
from edgeopt.recipes import BuildContext, FeedList, ParentArtifact, all_recipes, get_recipe, get_runtime

pytest.importorskip("openvino")
pytest.importorskip("nncf")

THREADS = 2
INT4 = {"mode": "int4_asym", "group_size": 64}


def _logits(runner: Any, windows: np.ndarray) -> np.ndarray:
    return np.stack([runner.logits(w) for w in windows])


def _fp16(scored: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return scored("ov-fp16", "ov-causal-lm", {"weight_format": "fp16"})


def test_recipes_registered_for_causal_lm_only() -> None:
    recipes = all_recipes()
    assert recipes["ov-causal-lm"].accepts == ("base", "hf")
    assert recipes["nncf-llm-weight-compression"].accepts == ("openvino-ir-llm",)
    for name in ("ov-causal-lm", "nncf-llm-weight-compression"):
        assert recipes[name].tasks == ("causal-lm",)


def test_fp32_ir_matches_hf_and_decodes_greedily(scored: Callable[..., dict[str, Any]], eval_windows: np.ndarray,
                                                  hf_greedy: tuple[np.ndarray, list[int]]) -> None:
    fp32 = scored("ov-fp32", "ov-causal-lm", {"weight_format": "fp32"})
    # Measured: KLD ~1e-11, top-1 1.0 (f32 compute, f32 KV cache).
    assert fp32["top1"] >= 0.99
    assert fp32["kld"] < 1e-5
    assert fp32["out"].precision == "fp32" and fp32["out"].details["stateful"] is True
    runner = fp32["runner"]
    info = runner.runtime_info()
    assert info["inference_precision"] == "f32" and info["kv_cache_precision"] == "f32"
    assert info["kv_cache"] == "f32" and info["quality_windows"] == "one pass"
    assert info["threads"] == THREADS
    # The KV cache stays in the plugin: one fused cache-reading attention per layer.
    assert info["fused_kv_cache_attention"] == fp32["out"].details["n_layers"]

    prompt, hf_tokens = hf_greedy
    gen = runner.generate(prompt, len(hf_tokens))
    assert len(gen.token_ids) == len(hf_tokens) and len(gen.decode_s) == len(hf_tokens) - 1
    assert gen.ttft_s > 0 and all(t > 0 for t in gen.decode_s)
    assert gen.token_ids[:8] == hf_tokens[:8]
    # generate() and logits() each start from a fresh state, whatever ran before.
    again = runner.generate(prompt, 3)
    assert again.token_ids == gen.token_ids[:3]
    np.testing.assert_allclose(runner.logits(eval_windows[1]), _logits(runner, eval_windows[1:2])[0], atol=1e-4)


def test_fp16_ir_halves_the_size_and_keeps_quality(scored: Callable[..., dict[str, Any]],
                                                    hf_greedy: tuple[np.ndarray, list[int]]) -> None:
    fp16 = _fp16(scored)
    fp32 = scored("ov-fp32", "ov-causal-lm", {"weight_format": "fp32"})
    assert fp16["mb"] < 0.55 * fp32["mb"]
    assert fp16["out"].details["weight_types"].get("f16", 0) > 0
    # Measured: KLD ~4e-6, top-1 >= 0.998.
    assert fp16["top1"] >= 0.99
    assert fp16["kld"] < 1e-4
    prompt, hf_tokens = hf_greedy
    assert fp16["runner"].generate(prompt, len(hf_tokens)).token_ids[:8] == hf_tokens[:8]


def test_nncf_int8_beats_int4_and_data_aware_int4_beats_data_free(scored: Callable[..., dict[str, Any]]) -> None:
    fp16 = _fp16(scored)
    int8 = scored("nncf-int8", "nncf-llm-weight-compression", {"mode": "int8_asym"}, "ov-fp16")
    int4 = scored("nncf-int4", "nncf-llm-weight-compression", INT4, "ov-fp16")
    awq = scored("nncf-int4-awq-se", "nncf-llm-weight-compression",
                  {**INT4, "awq": True, "scale_estimation": True, "subset_size": 8}, "ov-fp16")
    assert "u8" in int8["out"].details["weight_types"]
    assert "u4" in int4["out"].details["weight_types"]
    assert int8["out"].precision == "int8-weights" and int4["out"].precision == "int4-weights"
    assert awq["out"].details["calibration_windows"] == 8
    assert int8["mb"] < 0.6 * fp16["mb"]
    assert int4["mb"] < 0.75 * int8["mb"]
    # Measured on these windows: int8 KLD ~0.007 (top-1 ~0.95); int4 ~0.3; AWQ + scale estimation ~0.2.
    assert int8["top1"] >= 0.9
    assert fp16["kld"] < int8["kld"] < int4["kld"]
    assert awq["kld"] < int4["kld"]
    assert int4["runner"].runtime_info()["inference_precision"] == "f32"


def test_int4_options_only_for_int4_modes() -> None:
    opts = get_recipe("nncf-llm-weight-compression").options_model
    for bad in ({"mode": "int8_asym", "awq": True}, {"mode": "int8_sym", "group_size": 64},
                {"mode": "int8_asym", "scale_estimation": True}, {"mode": "int4_sym", "unknown": 1}):
        with pytest.raises(ValidationError):
            opts.model_validate(bad)
    assert opts.model_validate({"mode": "int4_sym", "awq": True}).data_aware


def test_compression_needs_an_llm_ir_parent_and_calibration_windows(
    scored: Callable[..., dict[str, Any]], llm_base: Any, tmp_path: Path
) -> None:
    recipe = get_recipe("nncf-llm-weight-compression")
    fp16 = _fp16(scored)
    parent = ParentArtifact(name="ov-fp16", dir=fp16["dir"], format=fp16["out"].format,
                            model_file=fp16["out"].model_file)

    def ctx(parent: ParentArtifact | None, calibration: FeedList, **opts: Any) -> BuildContext:
        return BuildContext(base=llm_base, parent=parent, out_dir=tmp_path, options=recipe.options_model(**opts),
                            calibration=calibration, threads=THREADS)

    with pytest.raises(CandidateError, match="openvino-ir-llm"):
        recipe.build(ctx(None, FeedList()))
    encoder_ir = ParentArtifact(name="enc", dir=fp16["dir"], format="openvino-ir", model_file="openvino_model.xml")
    with pytest.raises(CandidateError, match="openvino-ir-llm"):
        recipe.build(ctx(encoder_ir, FeedList()))
    with pytest.raises(CandidateError, match="calibration"):
        recipe.build(ctx(parent, FeedList(), mode="int4_sym", awq=True))


def test_runtime_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CandidateError, match="not found"):
        get_runtime("openvino-causal-lm")(tmp_path, "openvino_model.xml", {}, THREADS)


def _hf_reference(hf_dir: Path) -> dict[str, int]:
    """What the HF folder implies per decoded token in fp32: every stored tensor once (a tied embedding is
    stored once and read as the output head), its matrix elements, and the f32 KV bytes per position."""
    import json

    from safetensors import safe_open

    cfg = json.loads((hf_dir / "config.json").read_text())
    with safe_open(str(hf_dir / "model.safetensors"), framework="np") as f:
        shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert cfg["tie_word_embeddings"] and "lm_head.weight" not in shapes  # SmolLM2: tied
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return {
        "weight_bytes": 4 * sum(int(np.prod(s)) for s in shapes.values()),
        "matmul_params": sum(int(np.prod(s)) for s in shapes.values() if len(s) > 1),
        "kv_bytes_per_position": cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * head_dim * 4,
    }


def _decompression_graph(tied: bool) -> tuple[list[GraphConst], list[GraphOp]]:
    """A hand-made OpenVINO-like decoder: an f16 embedding table (Gather), one u8 weight with its zero point
    and scale (Convert -> Subtract -> Multiply -> Reshape -> MatMul), a norm weight (Multiply by the
    activations), and an output head that is the embedding table itself (tied) or its own f16 matrix."""
    v, h, n = 100, 8, 16
    consts = [
        GraphConst("embed", v * h * 2, v * h),
        GraphConst("w_u8", n * h, n * h),
        GraphConst("zp", n, n),
        GraphConst("scale", n * 2, n),
        GraphConst("shape", 16, 2),
        GraphConst("norm", h * 4, h),
        GraphConst("axis", 8, 1),
    ]
    ops = [
        GraphOp("ids", "Parameter", (), ("ids",)),
        GraphOp("embed_f32", "Convert", ("embed",), ("embed_f32",)),
        GraphOp("lookup", "Gather", ("embed_f32", "ids", "axis"), ("x",)),
        GraphOp("w_f32", "Convert", ("w_u8",), ("w_f32",)),
        GraphOp("zp_f32", "Convert", ("zp",), ("zp_f32",)),
        GraphOp("centred", "Subtract", ("w_f32", "zp_f32"), ("centred",)),
        GraphOp("scaled", "Multiply", ("centred", "scale"), ("scaled",)),
        GraphOp("w", "Reshape", ("scaled", "shape"), ("w",)),
        GraphOp("mlp", "MatMul", ("x", "w"), ("y",)),
        GraphOp("normed", "Multiply", ("y", "norm"), ("z",)),
    ]
    if tied:
        ops.append(GraphOp("head", "MatMul", ("z", "embed_f32"), ("logits",)))
    else:
        consts.append(GraphConst("lm_head", v * h * 2, v * h))
        ops += [GraphOp("head_f32", "Convert", ("lm_head",), ("head_f32",)),
                GraphOp("head", "MatMul", ("z", "head_f32"), ("logits",))]
    ops.append(GraphOp("out", "Result", ("logits",), ()))
    return consts, ops


def test_weight_reads_counts_a_tied_embedding_once_and_an_untied_one_not_at_all() -> None:
    v, h, n = 100, 8, 16
    decoder = n * h + n + n * 2 + 16 + h * 4  # u8 weight, zero point, scale, reshape target, norm
    # Tied: the table is the output head's matrix, read once per token; the lookup adds nothing.
    assert weight_reads(*_decompression_graph(tied=True)) == (decoder + v * h * 2, n * h + v * h)
    # Untied: the table is only looked up (one row per token); the separate head counts instead.
    assert weight_reads(*_decompression_graph(tied=False)) == (decoder + v * h * 2, n * h + v * h)
    consts, ops = _decompression_graph(tied=False)
    consts = [GraphConst(c.name, c.nbytes * 3, c.elements) if c.name == "lm_head" else c for c in consts]
    assert weight_reads(consts, ops) == (decoder + v * h * 6, n * h + v * h)  # the head's bytes, not the table's


def test_roofline_from_the_compiled_irs(scored: Callable[..., dict[str, Any]], hf_dir: Path) -> None:
    ref = _hf_reference(hf_dir)
    fp16 = _fp16(scored)
    int8 = scored("nncf-int8", "nncf-llm-weight-compression", {"mode": "int8_asym"}, "ov-fp16")
    int4 = scored("nncf-int4", "nncf-llm-weight-compression", INT4, "ov-fp16")
    roofs = {name: c["runner"].roofline() for name, c in (("fp16", fp16), ("int8", int8), ("int4", int4))}
    print({k: {"weight_mb": r["weight_bytes"] / 1e6, **r} for k, r in roofs.items()})
    # The fp16 IR computes in f32 and its weights are widened when packed: it reads what fp32 weights weigh
    # (538 MB; the few KB over are shape constants).
    assert abs(roofs["fp16"]["weight_bytes"] / ref["weight_bytes"] - 1) < 0.01
    for r in roofs.values():
        assert abs(r["matmul_params"] / ref["matmul_params"] - 1) < 1e-3
        assert r["kv_bytes_per_position"] == ref["kv_bytes_per_position"]  # f32 KV cache asked for
    # INT8 (all matrices incl. the tied head): a quarter of f32, plus per-row scales and zero points.
    assert 0.24 < roofs["int8"]["weight_bytes"] / ref["weight_bytes"] < 0.3
    # INT4 groups of 64 with the tied embedding / head kept in INT8 (NNCF's default): above a pure-int4 eighth.
    assert roofs["int4"]["weight_bytes"] / ref["weight_bytes"] > 0.125
    assert roofs["int4"]["weight_bytes"] < 0.75 * roofs["int8"]["weight_bytes"]

    # The KV cache and float weights as actually compiled: a u8 cache is a quarter of f32; bf16 compute (where
    # the CPU has it) halves the fp16 IR's weight reads.
    out, cand_dir = fp16["out"], fp16["dir"]
    u8 = get_runtime(out.runtime)(cand_dir, out.model_file, {**out.details, "kv_cache_precision": "u8"}, THREADS)
    info = u8.runtime_info()
    assert info["kv_cache_precision"] == info["kv_cache"] == "u8"
    assert u8.roofline()["kv_bytes_per_position"] == ref["kv_bytes_per_position"] // 4
    bf16 = get_runtime(out.runtime)(cand_dir, out.model_file, {**out.details, "inference_precision": "bf16"}, THREADS)
    size = {"f32": 4, "bf16": 2, "f16": 2}[bf16.runtime_info()["inference_precision"]]
    assert abs(bf16.roofline()["weight_bytes"] / (ref["weight_bytes"] * size / 4) - 1) < 0.01


def test_a_compressed_kv_cache_is_scored_as_decoding_reads_it(scored: Callable[..., dict[str, Any]],
                                                               eval_windows: np.ndarray) -> None:
    """A multi-token pass attends over its own keys and values at full precision, so a one-pass window would
    score an f32 cache whatever was asked. With u8 (or f16) the quality windows go token by token through the
    cache, as decoding does, so they see what decoding reads."""
    fp16 = _fp16(scored)
    out, cand_dir = fp16["out"], fp16["dir"]
    u8 = get_runtime(out.runtime)(cand_dir, out.model_file, {**out.details, "kv_cache_precision": "u8"}, THREADS)
    assert u8.runtime_info()["quality_windows"] == "token by token through the cache"
    window = eval_windows[0][:24]
    got = u8.logits(window)
    assert fp16["runner"].runtime_info()["quality_windows"] == "one pass"
    f32_cache = fp16["runner"].logits(window)
    # Measured: one-pass logits are identical at f32 / f16 / u8; through a u8 cache they move by ~0.4.
    assert np.abs(got - f32_cache).max() > 1e-2
