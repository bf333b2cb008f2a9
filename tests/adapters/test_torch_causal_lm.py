"""torch-causal-lm: the FP32 baseline on the real SmolLM2 exported to a Hugging Face folder (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import CandidateError
from edgeopt.recipes import BaseModelInfo, BuildContext, NoOptions, ParentArtifact, get_recipe

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf
    from edgeopt.workloads.causal_lm.hf_export import gguf_to_hf_folder

    return gguf_to_hf_folder(bundled_smollm2_gguf(), tmp_path_factory.mktemp("hf") / "hf")


def ctx(variants: dict[str, Path], out: Path, parent: ParentArtifact | None = None) -> BuildContext:
    out.mkdir(parents=True)
    b = BaseModelInfo(path=Path("/nonexistent.gguf"), format="gguf", tokenizer_dir=Path("/nonexistent"),
                      sha256="0" * 64, task="causal-lm", variants=variants,
                      details={"source_file_type": "MOSTLY_Q4_1", "hf_unavailable": "not a llama GGUF"})
    return BuildContext(base=b, parent=parent, out_dir=out, options=NoOptions(), calibration={}, threads=2)


@pytest.fixture(scope="module")
def candidate(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("torch") / "cand"
    return out, get_recipe("torch-causal-lm").build(ctx({"hf": hf_dir}, out))


def test_recipe_copies_the_model_not_the_tokenizer(candidate: tuple[Path, object]) -> None:
    out, result = candidate
    assert (result.format, result.runtime, result.precision, result.model_file) == (
        "hf", "torch-causal-lm", "fp32", "model.safetensors")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    assert result.details["base"] == {"source_file_type": "MOSTLY_Q4_1"}


def test_recipe_needs_the_base_hf_form(tmp_path: Path) -> None:
    with pytest.raises(CandidateError, match="no Hugging Face form: not a llama GGUF"):
        get_recipe("torch-causal-lm").build(ctx({}, tmp_path / "a"))
    parent = ParentArtifact(name="p", dir=tmp_path, format="hf", model_file="model.safetensors")
    with pytest.raises(CandidateError, match="base model only"):
        get_recipe("torch-causal-lm").build(ctx({"hf": tmp_path}, tmp_path / "b", parent))


@pytest.fixture(scope="module")
def runner(candidate: tuple[Path, object]) -> object:
    from edgeopt.recipes import get_runtime

    out, result = candidate
    return get_runtime("torch-causal-lm")(out, result.model_file, result.details, 2)


def test_kv_cache_generation_is_greedy_over_the_full_sequence(runner: object) -> None:
    """Every token decoded with the cache is the argmax of a cache-free forward pass over all tokens so far."""
    prompt = np.array([504, 3240, 1345, 2474, 314, 260, 1789, 28], dtype=np.int64)
    gen = runner.generate(prompt, 6)  # type: ignore[attr-defined]
    assert len(gen.token_ids) == 6 and len(gen.decode_s) == 5
    full = np.concatenate([prompt, gen.token_ids])
    logits = runner.logits(full)  # type: ignore[attr-defined]
    assert logits.shape == (len(full), 49152)
    expected = logits[len(prompt) - 1 : -1].argmax(axis=-1)
    assert gen.token_ids == expected.tolist()


def test_roofline_counts_fp32_weights_and_kv_cache(runner: object, candidate: tuple[Path, object]) -> None:
    out, _ = candidate
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True
    line = runner.roofline()  # type: ignore[attr-defined]
    assert line["weight_bytes"] == 134_515_008 * 4  # the tied embedding counted once
    assert line["kv_bytes_per_position"] == 30 * 2 * 3 * 64 * 4
    assert runner.runtime_info()["kv_cache"] == "f32"  # type: ignore[attr-defined]
    assert line["matmul_params"] == 134_515_008 - 61 * 576  # all but the 61 norm vectors
