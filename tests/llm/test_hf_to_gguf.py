"""llama.cpp's own HF->GGUF converter on the project's SmolLM2 Hugging Face export (real converter, real model).

An HF-only source gets the GGUF candidates: its base folder holds a converted reference.gguf, and the
gguf-quantize recipe builds from it; a folder the converter cannot convert fails those candidates only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.errors import CandidateError
from edgeopt.recipes import BaseModelInfo, BuildContext, FeedList, get_recipe
from edgeopt.workloads.causal_lm import hf_to_gguf as h2g
from edgeopt.workloads.causal_lm import reference_model as rm

pytest.importorskip("llama_cpp")
THREADS = 2

# Measured on the 4 x 128 test windows against transformers (F32 weights), llama.cpp with an F32 KV cache:
# the F16 conversion agrees on top-1 at 0.998 with a KLD of 5.3e-6 nats (max |dlogit| 0.09), the F32 one at
# 1.0 with 1.6e-11, Q8_0 built from it at 0.967 with 5.0e-3 (as Q8_0 of the bundled reference).
F16_MIN_TOP1, F16_MAX_KLD = 0.99, 5e-5  # 10x the measured KLD, still 100x under Q8_0's
Q8_MIN_TOP1, Q8_MAX_KLD = 0.9, 2e-2


@pytest.fixture(scope="module")
def hf_reference_logits(hf_dir: Path, windows: np.ndarray) -> np.ndarray:
    from edgeopt.workloads.causal_lm.logits import hf_logits

    return hf_logits(hf_dir, windows, threads=THREADS)


@pytest.fixture(scope="module")
def f16(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    dst = tmp_path_factory.mktemp("convert") / "model-f16.gguf"
    return dst, h2g.convert_hf_to_gguf(hf_dir, dst, "f16")


def _agreement(reference: np.ndarray, gguf_path: Path, windows: np.ndarray) -> tuple[float, float]:
    from edgeopt.workloads.causal_lm.logits import llamacpp_logits
    from edgeopt.workloads.causal_lm.quality import mean_kld, top1_agreement

    logits = llamacpp_logits(gguf_path, windows, threads=THREADS, kv_cache="f32")
    return top1_agreement(reference, logits), mean_kld(reference, logits)


def test_the_converter_is_installed_with_its_provenance() -> None:
    import llama_cpp

    prov = h2g.converter_provenance()
    assert h2g.converter_dir() == Path(__import__("sys").prefix) / "share" / "llama.cpp"
    assert prov["llama_cpp_python"] == llama_cpp.__version__ and prov["converter"].endswith(h2g.SCRIPT)
    assert len(prov["script_sha256"]) == 64 and prov["gguf_py"]


def test_f16_conversion_loads_and_agrees_with_the_hf_model(f16: tuple[Path, dict[str, Any]], windows: np.ndarray,
                                                          hf_reference_logits: np.ndarray) -> None:
    dst, summary = f16
    assert (summary["outtype"], summary["file_type"], summary["architecture"]) == ("f16", "MOSTLY_F16", "llama")
    # Matrices F16, the 61 norms stay F32, as llama.cpp expects.
    assert summary["tensor_types"] == {"F16": 211, "F32": 61}
    assert 260e6 < summary["size_bytes"] == dst.stat().st_size < 280e6
    assert not list(dst.parent.glob("*.partial"))
    top1, kld = _agreement(hf_reference_logits, dst, windows)
    assert top1 >= F16_MIN_TOP1 and 0.0 <= kld < F16_MAX_KLD


def test_the_converted_gguf_tokenizes_like_the_hf_tokenizer(f16: tuple[Path, dict[str, Any]], hf_dir: Path) -> None:
    from transformers import AutoTokenizer

    from edgeopt.workloads.causal_lm.logits import llamacpp_tokenize, offline_text

    text = offline_text()[:60_000]  # prose, code, digits (the "smollm" pre-tokenizer splits each digit)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    assert llamacpp_tokenize(f16[0], text) == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_an_hf_source_base_holds_the_lossless_conversion(hf_source_base: BaseModelInfo, ref_path: Path) -> None:
    import gguf

    conversion = hf_source_base.details["gguf_conversion"]
    assert conversion["outtype"] == "f32" and conversion["tensor_types"] == {"F32": 272}
    assert conversion["llama_cpp_python"] and conversion["size_bytes"] > 500e6
    # hf_dir is exported from ref_path with Q/K un-permuted; the converter permutes them back: same numbers.
    ours = {t.name: t for t in gguf.GGUFReader(hf_source_base.variants["gguf"]).tensors}
    theirs = {t.name: t for t in gguf.GGUFReader(ref_path).tensors}
    assert set(ours) == set(theirs)
    assert all(np.array_equal(ours[n].data, theirs[n].data) for n in theirs)


def test_the_base_folder_is_converted_once(hf_source_base: BaseModelInfo, hf_dir: Path, llm_workdir: Path) -> None:
    from edgeopt.taskspec import get_task
    from edgeopt.workloads.base import get_workload

    gguf_path = hf_source_base.variants["gguf"]
    before = gguf_path.stat().st_mtime_ns
    source = get_task("causal-lm").parse_model({"kind": "hf", "path": str(hf_dir)})
    again = get_workload("causal-lm").materialize_base(source, gguf_path.parent, llm_workdir)
    assert gguf_path.stat().st_mtime_ns == before and again.sha256 == hf_source_base.sha256
    key = json.loads((gguf_path.parent / rm.SOURCE_FILE).read_text())["key"]
    assert key["gguf_converter"] == h2g.converter_provenance()


def _build(recipe: str, base: BaseModelInfo, out: Path, **options: object) -> Any:
    r = get_recipe(recipe)
    out.mkdir(parents=True)
    return r.build(BuildContext(base=base, parent=None, out_dir=out, options=r.options_model.model_validate(options),
                                calibration=FeedList(), threads=THREADS))


def test_q8_0_builds_from_an_hf_only_source(hf_source_base: BaseModelInfo, tmp_path: Path, windows: np.ndarray,
                                            hf_reference_logits: np.ndarray) -> None:
    result = _build("gguf-quantize", hf_source_base, tmp_path / "q8", qtype="Q8_0")
    d = result.details
    assert (result.format, result.runtime, result.precision) == ("gguf", "llamacpp", "q8_0")
    assert d["src"] == "base:gguf" and d["source_tensor_types"] == {"F32": 272} and d["tensor_types"]["Q8_0"] >= 200
    assert d["base"]["gguf_conversion"]["outtype"] == "f32" and d["base"]["source"].startswith("user Hugging Face")
    top1, kld = _agreement(hf_reference_logits, tmp_path / "q8" / result.model_file, windows)
    assert top1 >= Q8_MIN_TOP1 and kld < Q8_MAX_KLD


def _opt_folder(path: Path, tokenizer_from: Path) -> Path:
    """A tiny random OPTForCausalLM: transformers runs it, llama.cpp's converter does not know it."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=49152, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                       max_position_embeddings=64, word_embed_proj_dim=16)
    OPTForCausalLM(config).save_pretrained(path, safe_serialization=True)
    for f in tokenizer_from.glob("tokenizer*"):
        shutil.copy2(f, path / f.name)
    return path


def test_an_architecture_the_converter_does_not_know_fails_the_gguf_candidates_only(
    hf_dir: Path, tmp_path: Path
) -> None:
    from edgeopt.taskspec import get_task
    from edgeopt.workloads.base import get_workload

    src = _opt_folder(tmp_path / "opt", hf_dir)
    source = get_task("causal-lm").parse_model({"kind": "hf", "path": str(src)})
    base = get_workload("causal-lm").materialize_base(source, tmp_path / "base", tmp_path)
    assert set(base.variants) == {"hf"} and base.format == "hf"  # torch/ONNX/OpenVINO candidates still build
    reason = base.details["gguf_unavailable"]
    assert "Model OPTForCausalLM is not supported" in reason and "\n" not in reason
    assert not list((tmp_path / "base").glob("*.partial")) and not (tmp_path / "base" / rm.REFERENCE_GGUF).exists()
    with pytest.raises(CandidateError, match=r"no GGUF form of the base model: .*OPTForCausalLM is not supported"):
        _build("gguf-quantize", base, tmp_path / "q8", qtype="Q8_0")


def test_a_folder_without_config_fails_with_the_converters_reason(hf_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "no-config"
    bad.mkdir()
    for f in hf_dir.glob("tokenizer*"):
        shutil.copy2(f, bad / f.name)
    with pytest.raises(h2g.ConversionError, match=r"failed \(exit 1\): FileNotFoundError: .*config\.json"):
        h2g.convert_hf_to_gguf(bad, tmp_path / "out.gguf", "f16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-config"]  # no partial output left


def test_a_missing_converter_names_the_bootstrap_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # An environment built before bootstrap.sh installed the converter: its share/llama.cpp is absent.
    monkeypatch.setattr(h2g, "converter_dir", lambda: tmp_path / "share" / "llama.cpp")
    with pytest.raises(h2g.ConversionError, match=r"not installed .*run `bash scripts/bootstrap.sh`"):
        h2g.convert_hf_to_gguf(tmp_path, tmp_path / "out.gguf", "f16")
    assert rm._converter_key() is None  # installing it later changes the base folder's key: it is rebuilt
