"""Olive's LLM INT4 recipes on the real SmolLM2-135M: a real Olive run each (RTN over the ort-fp32 parent; the
model builder from the HF folder when onnxruntime-genai is installed), scored against Hugging Face float32
logits on the shared windows, with Olive's own records kept next to the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edgeopt.errors import CandidateError
from edgeopt.recipes import BuildContext, FeedList, ParentArtifact, all_recipes, get_recipe

THREADS = 2


def _olive_records(cand: dict[str, Any], pass_type: str) -> None:
    """Olive's footprint is next to the model and the lineage lists the pass with its config."""
    details, folder = cand["out"].details, cand["dir"]
    assert details["olive"] and details["pass_list"] == [pass_type]
    assert details["passes"][0]["name"] == pass_type and details["passes"][0]["config"]
    footprint = json.loads((folder / "olive" / "footprint.json").read_text())
    assert details["olive_model_id"] in footprint
    assert footprint[details["olive_model_id"]]["from_pass"] == pass_type.lower()
    assert (folder / "olive" / "pareto_frontier_footprint.json").is_file()
    assert "olive/footprint.json" in details["olive_artifacts"]
    assert not (folder / "model.onnx.data").exists()  # weights inline, one file


def test_recipes_registered_for_causal_lm() -> None:
    recipes = all_recipes()
    assert recipes["olive-llm-int4"].accepts == ("onnx-llm",)
    assert recipes["olive-llm-model-builder"].accepts == ("base", "hf")
    for name in ("olive-llm-int4", "olive-llm-model-builder"):
        assert recipes[name].tasks == ("causal-lm",) and recipes[name].framework == "olive"


def test_rtn_int4_through_olive(scored: Callable[..., dict[str, Any]],
                                hf_greedy: tuple[np.ndarray, list[int]]) -> None:
    fp32 = scored("ort-fp32", "ort-causal-lm-export", {})
    int4 = scored("olive-int4", "olive-llm-int4", {}, "ort-fp32")
    out = int4["out"]
    assert out.format == "onnx-llm" and out.runtime == "onnxruntime-causal-lm" and out.precision == "int4-weights"
    # Every linear layer of the 30 blocks (7 each) plus the LM head; the embedding table too.
    assert out.details["ops"]["MatMulNBits"] == 7 * fp32["out"].details["n_layers"] + 1
    assert out.details["ops"]["GatherBlockQuantized"] == 1
    # Olive renamed the LM head's output to logits_Q4; the recipe restores the interface.
    assert out.details["restored_outputs"] == {"logits_Q4": "logits"}
    assert "position_ids" in out.details["inputs"]
    cfg = out.details["passes"][0]["config"]
    assert (cfg["block_size"], cfg["is_symmetric"], cfg["accuracy_level"]) == (32, True, 4)
    _olive_records(int4, "OnnxBlockWiseRtnQuantization")
    assert int4["mb"] < 0.2 * fp32["mb"]  # measured: 103 MB vs 540 MB
    assert np.isfinite(int4["logits"]).all()
    # Measured on these windows: KLD 0.452, top-1 0.597 (the same as ort-matmulnbits-int4's defaults).
    assert fp32["kld"] < int4["kld"] < 0.7
    assert int4["top1"] > 0.5
    assert int4["ppl"] < 2 * fp32["ppl"]
    prompt, hf_tokens = hf_greedy
    gen = int4["runner"].generate(prompt, len(hf_tokens))
    assert len(gen.token_ids) == len(hf_tokens)


def test_model_builder_int4_through_olive(scored: Callable[..., dict[str, Any]],
                                          hf_greedy: tuple[np.ndarray, list[int]]) -> None:
    fp32 = scored("ort-fp32", "ort-causal-lm-export", {})
    mb = scored("olive-mb-int4", "olive-llm-model-builder", {})  # onnxruntime-genai is pinned to 0.13 in the lock
    out = mb["out"]
    assert out.format == "onnx-genai" and out.runtime == "onnxruntime-genai-layout"
    n = fp32["out"].details["n_layers"]
    # Packed QKV and gate/up: 5 MatMulNBits per block, plus the LM head (tied to the float embedding table).
    assert out.details["ops"]["MatMulNBits"] == 5 * n + 1
    assert out.details["ops"]["GroupQueryAttention"] == n
    assert out.details["inputs"] == ["input_ids", "attention_mask"] and out.details["kv_inputs"] == 2 * n
    _olive_records(mb, "ModelBuilder")
    assert (mb["dir"] / "olive" / "genai_config.json").is_file()
    assert mb["mb"] < 0.45 * fp32["mb"]  # measured: 200 MB (the embedding table stays float)
    assert np.isfinite(mb["logits"]).all()
    # Measured: KLD 0.52, top-1 0.60.
    assert fp32["kld"] < mb["kld"] < 0.8
    assert mb["top1"] > 0.5
    runner = mb["runner"]
    assert runner.runtime_info()["layout"].startswith("onnxruntime-genai")
    prompt, hf_tokens = hf_greedy
    gen = runner.generate(prompt, len(hf_tokens))
    assert len(gen.token_ids) == len(hf_tokens)
    # The cached decode path continues the prompt the way a full recompute does (first token: same logits).
    assert gen.token_ids[0] == int(runner.logits(prompt)[-1].argmax())


def test_options_are_validated() -> None:
    opts = get_recipe("olive-llm-int4").options_model
    for bad in ({"block_size": 48}, {"accuracy_level": 5}, {"algorithm": "hqq"},
                {"algorithm": "kquant", "is_symmetric": False}, {"algorithm": "kquant", "quantize_embeddings": True},
                {"bits": 8}):
        with pytest.raises(ValidationError):
            opts.model_validate(bad)
    with pytest.raises(ValidationError):
        get_recipe("olive-llm-model-builder").options_model.model_validate({"accuracy_level": 0})


def test_int4_refuses_parents_it_cannot_quantize(llm_base: Any, tmp_path: Path) -> None:
    recipe = get_recipe("olive-llm-int4")

    def build(parent: ParentArtifact | None) -> Any:
        return recipe.build(BuildContext(base=llm_base, parent=parent, out_dir=tmp_path, options=recipe.options_model(),
                                         calibration=FeedList(), threads=THREADS))

    with pytest.raises(CandidateError, match="onnx-llm"):
        build(None)
    with pytest.raises(CandidateError, match="onnx-llm"):  # an encoder ONNX is not an LLM parent
        build(ParentArtifact(name="enc", dir=tmp_path, format="onnx", model_file="model.onnx"))
    with pytest.raises(CandidateError, match="not found"):
        build(ParentArtifact(name="gone", dir=tmp_path, format="onnx-llm", model_file="model.onnx"))
