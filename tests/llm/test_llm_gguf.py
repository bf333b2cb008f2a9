"""The bundled GGUF, its dequantized F32 reference, and llama.cpp quantization (real model, no mocks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.errors import CandidateError


def test_bundled_gguf_is_the_q4_1_smollm2(bundled_gguf: Path) -> None:
    from edgeopt.workloads.causal_lm.gguf_reference import gguf_metadata, tensor_type_histogram

    assert bundled_gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert tensor_type_histogram(bundled_gguf) == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    meta = gguf_metadata(bundled_gguf, ("general.architecture", "llama.block_count", "llama.embedding_length"))
    assert meta == {"general.architecture": "llama", "llama.block_count": 30, "llama.embedding_length": 576}


def test_f32_reference_keeps_every_kv_field_and_records_lineage(bundled_gguf: Path, ref_f32: dict[str, Any]) -> None:
    import gguf

    assert ref_f32["source_file_type"] == "MOSTLY_Q4_1"
    assert ref_f32["source_tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert ref_f32["tensor_types"] == {"F32": 272}
    assert ref_f32["n_params"] == 134_515_008
    src, dst = gguf.GGUFReader(bundled_gguf), gguf.GGUFReader(ref_f32["dst"])
    skip = {"general.file_type"}
    src_kv = {k: f.contents() for k, f in src.fields.items() if not k.startswith("GGUF.") and k not in skip}
    dst_kv = {k: f.contents() for k, f in dst.fields.items() if not k.startswith("GGUF.") and k not in skip}
    assert dst_kv == src_kv
    assert dst.fields["general.file_type"].contents() == 0  # LLAMA_FTYPE_ALL_F32
    assert not list(Path(ref_f32["dst"]).parent.glob("*.partial"))


def test_f32_reference_has_the_q4_1_perplexity(bundled_gguf: Path, windows: np.ndarray, ref_logits: np.ndarray) -> None:
    """Same weights, different kernels: llama.cpp's Q4_1 matmul also rounds activations to 8 bits."""
    from edgeopt.workloads.causal_lm.logits import llamacpp_logits
    from edgeopt.workloads.causal_lm.quality import perplexity

    q41 = llamacpp_logits(bundled_gguf, windows, kv_cache="f32")
    assert perplexity(ref_logits, windows) == pytest.approx(perplexity(q41, windows), rel=0.02)


def test_quantize_reads_back_actual_tensor_types(quantized: Callable[[str], dict[str, Any]], ref_path: Path) -> None:
    q4_0 = quantized("Q4_0")
    types = q4_0["tensor_types"]
    assert types["F32"] == 61  # the 1-D norms are never quantized
    assert types["Q4_0"] >= 200
    assert q4_0["source_tensor_types"] == {"F32": 272}
    assert 4.5 < q4_0["bits_per_weight"] < 6.0
    assert Path(q4_0["dst"]).stat().st_size < ref_path.stat().st_size / 5


def test_failed_quantize_from_missing_source_leaves_no_file(ref_path: Path, tmp_path: Path) -> None:
    from edgeopt.workloads.causal_lm.quantize import quantize_gguf

    dst = tmp_path / "out.gguf"
    with pytest.raises(CandidateError):
        quantize_gguf(tmp_path / "missing.gguf", dst, "Q8_0")
    assert list(tmp_path.iterdir()) == []


def test_failed_quantize_midway_leaves_no_partial_file(ref_path: Path, tmp_path: Path) -> None:
    """A mis-sized imatrix entry for the last block fails after ~90% of the output is written."""
    import ctypes

    import llama_cpp

    from edgeopt.workloads.causal_lm.imatrix import load_imatrix_gguf, save_imatrix_gguf
    from edgeopt.workloads.causal_lm.quantize import _imatrix_array, ftype_for, quantize_gguf

    bad = {"blk.29.ffn_down.weight": np.ones(7, dtype=np.float32)}  # needs 1536 values
    imatrix = save_imatrix_gguf(tmp_path / "bad-imatrix.gguf", bad, n_tokens=1, chunk_size=1, datasets=["bad"])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(CandidateError):
        quantize_gguf(ref_path, out_dir / "q4_0.gguf", "Q4_0", imatrix=imatrix)
    assert list(out_dir.iterdir()) == []

    # The hazard being guarded against: the bare binding call leaves most of a GGUF at the destination.
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.allow_requantize = ftype_for("Q4_0"), 2, True
    params.imatrix, _keep = _imatrix_array(load_imatrix_gguf(imatrix))
    raw = out_dir / "raw.gguf"
    assert llama_cpp.llama_model_quantize(str(ref_path).encode(), str(raw).encode(), ctypes.byref(params)) != 0
    assert raw.stat().st_size > 50_000_000
