"""gguf-quantize and the llamacpp runtime on the real bundled SmolLM2 GGUF (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import CandidateError
from edgeopt.recipes import BaseModelInfo, BuildContext, FeedList, ParentArtifact, get_recipe

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def q4_1() -> Path:
    from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf

    return bundled_smollm2_gguf()


def base(variants: dict[str, Path], **details: str) -> BaseModelInfo:
    fmt = "gguf" if "gguf" in variants else "hf"
    return BaseModelInfo(path=next(iter(variants.values()), Path("/nonexistent")), format=fmt,
                         tokenizer_dir=Path("/nonexistent"), sha256="0" * 64, task="causal-lm",
                         variants=variants, details={"source_file_type": "MOSTLY_Q4_1", **details})


def ctx(b: BaseModelInfo, out: Path, parent: ParentArtifact | None = None, **options: object) -> BuildContext:
    recipe = get_recipe("gguf-quantize")
    out.mkdir(parents=True)
    return BuildContext(base=b, parent=parent, out_dir=out, options=recipe.options_model.model_validate(options),
                        calibration=FeedList(), threads=2)


def test_options_know_llama_quantize_types() -> None:
    model = get_recipe("gguf-quantize").options_model
    assert model.model_validate({"qtype": "q4_k"}).qtype == "Q4_K_M"
    assert model.model_validate({}).qtype == "Q4_K_M"
    with pytest.raises(ValueError, match="unknown GGUF quantization type 'Q9_9'"):
        model.model_validate({"qtype": "Q9_9"})
    with pytest.raises(ValueError):
        model.model_validate({"qtype": "Q8_0", "bits": 8})
    assert get_recipe("gguf-quantize").tasks == ("causal-lm",)
    assert model.model_validate({}).kv_cache == "f32"  # as every other runtime's cache
    assert model.model_validate({"kv_cache": "f16"}).kv_cache == "f16"
    with pytest.raises(ValueError):
        model.model_validate({"kv_cache": "q8_0"})


@pytest.fixture(scope="module")
def q8_0(q4_1: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("gguf") / "q8"
    result = get_recipe("gguf-quantize").build(ctx(base({"gguf": q4_1}), out, qtype="Q8_0"))
    return out, result


def test_quantize_from_the_base_gguf_records_lineage(q8_0: tuple[Path, object]) -> None:
    out, result = q8_0
    assert (result.format, result.runtime, result.precision, result.model_file) == ("gguf", "llamacpp", "q8_0",
                                                                                      "model.gguf")
    d = result.details
    assert d["src"] == "base:gguf" and d["dst"] == "model.gguf"
    assert d["source_tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert d["tensor_types"]["Q8_0"] >= 200 and d["imatrix"] is None
    assert d["kv_cache"] == "f32"  # what the runtime times and scores with
    assert d["base"] == {"source_file_type": "MOSTLY_Q4_1"}
    assert sorted(p.name for p in out.iterdir()) == ["model.gguf"]


def test_quantize_from_a_gguf_parent(q8_0: tuple[Path, object], q4_1: Path, tmp_path: Path) -> None:
    out, _ = q8_0
    parent = ParentArtifact(name="gguf-q8_0", dir=out, format="gguf", model_file="model.gguf")
    result = get_recipe("gguf-quantize").build(ctx(base({"gguf": q4_1}), tmp_path / "q4", parent, qtype="Q4_0"))
    assert result.details["src"] == "gguf-q8_0"
    assert result.details["source_tensor_types"]["Q8_0"] >= 200 and result.details["tensor_types"]["Q4_0"] >= 200


def test_a_base_whose_conversion_failed_fails_with_the_converters_reason(tmp_path: Path) -> None:
    # What the base folder of an HF source records when llama.cpp's converter cannot convert it.
    reason = ("llama.cpp's HF->GGUF converter could not convert opt: convert_hf_to_gguf.py failed (exit 1): "
              "Model OPTForCausalLM is not supported")
    hf_only = base({"hf": tmp_path}, gguf_unavailable=reason)
    with pytest.raises(CandidateError, match=r"no GGUF form of the base model: .*OPTForCausalLM is not supported"):
        get_recipe("gguf-quantize").build(ctx(hf_only, tmp_path / "out"))
    assert list((tmp_path / "out").iterdir()) == []


def test_imatrix_needs_the_hf_form(q4_1: Path, tmp_path: Path) -> None:
    with pytest.raises(CandidateError, match="imatrix: the base model has no Hugging Face form"):
        get_recipe("gguf-quantize").build(ctx(base({"gguf": q4_1}), tmp_path / "out", imatrix=True))


def test_runner_logits_match_the_reference_harness(q4_1: Path) -> None:
    from edgeopt.adapters.llamacpp import LlamaCppRunner
    from edgeopt.workloads.causal_lm.logits import llamacpp_logits, token_windows

    window = token_windows(q4_1, 1, 48)
    runner = LlamaCppRunner(q4_1, threads=2)
    got = runner.logits(window[0])
    # Same F32 KV cache and one ubatch per window as the reference logits: identical numbers.
    np.testing.assert_array_equal(got, llamacpp_logits(q4_1, window, threads=2, kv_cache="f32")[0])
    gen = runner.generate(window[0][:16], 6)
    assert len(gen.token_ids) == 6 and len(gen.decode_s) == 5 and gen.ttft_s > 0
    # The first generated token is the greedy choice after the prompt.
    assert gen.token_ids[0] == int(runner.logits(window[0][:16])[-1].argmax())


def test_one_kv_cache_type_for_timing_and_scoring(q4_1: Path, tmp_path: Path) -> None:
    import llama_cpp

    from edgeopt.adapters.llamacpp import LlamaCppRunner
    from edgeopt.recipes import get_runtime
    from edgeopt.workloads.causal_lm.logits import llamacpp_logits, token_windows

    window = token_windows(q4_1, 1, 32)[0]
    for kv, ggml_type in (("f32", llama_cpp.GGML_TYPE_F32), ("f16", llama_cpp.GGML_TYPE_F16)):
        (tmp_path / "model.gguf").unlink(missing_ok=True)
        (tmp_path / "model.gguf").symlink_to(q4_1)
        runner = get_runtime("llamacpp")(tmp_path, "model.gguf", {"kv_cache": kv}, 2)
        assert isinstance(runner, LlamaCppRunner) and runner.kv_cache == kv
        runner.generate(window[:8], 2)
        got = runner.logits(window)
        for ctx in (runner._speed, runner._quality):  # the timed and the scored context
            assert (ctx.context_params.type_k, ctx.context_params.type_v) == (ggml_type, ggml_type)
        assert runner.runtime_info()["kv_cache"] == kv
        np.testing.assert_array_equal(got, llamacpp_logits(q4_1, window[None], threads=2, kv_cache=kv)[0])
        assert runner.roofline()["kv_bytes_per_position"] == 30 * 2 * 3 * 64 * {"f32": 4, "f16": 2}[kv]
    # A record from before the option: f32.
    assert get_runtime("llamacpp")(tmp_path, "model.gguf", {}, 2).kv_cache == "f32"
    with pytest.raises(CandidateError, match="unknown KV-cache type 'q8_0'"):
        get_runtime("llamacpp")(tmp_path, "model.gguf", {"kv_cache": "q8_0"}, 2)


def test_roofline_reads_the_gguf(q4_1: Path) -> None:
    import gguf

    from edgeopt.adapters.llamacpp import gguf_roofline

    line = gguf_roofline(q4_1)
    tensors = gguf.GGUFReader(q4_1).tensors
    assert line["weight_bytes"] == sum(int(t.n_bytes) for t in tensors)  # tied: the embedding is the output head
    assert line["kv_bytes_per_position"] == 30 * 2 * 3 * 64 * 4  # layers x (K, V) x kv heads x head dim x f32
    assert gguf_roofline(q4_1, "f16")["kv_bytes_per_position"] == 30 * 2 * 3 * 64 * 2
    assert line["matmul_params"] == 134_515_008 - sum(int(t.n_elements) for t in tensors if len(t.shape) == 1)


def test_gguf_header_is_read_without_the_tensor_data(q4_1: Path, tmp_path: Path) -> None:
    """The header alone (the file cut where the tensor data starts) gives the same index, metadata, histogram and
    roofline: nothing past the header is read. They agree with gguf's own reader."""
    import gguf

    from edgeopt.adapters.llamacpp import gguf_header, gguf_roofline, gguf_tensor_types
    from edgeopt.workloads.causal_lm.gguf_reference import tensor_type_histogram

    reader = gguf.GGUFReader(q4_1)
    head = tmp_path / "header-only.gguf"
    with q4_1.open("rb") as f:
        head.write_bytes(f.read(reader.data_offset))
    fields, tensors = gguf_header(head)
    assert (fields, tensors) == gguf_header(q4_1)
    assert [(t.name, t.type_name, t.dims, t.n_elements, t.n_bytes) for t in tensors] == [
        (t.name, t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.n_elements), int(t.n_bytes))
        for t in reader.tensors]
    assert gguf_tensor_types(tensors) == tensor_type_histogram(q4_1) == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    for key in ("general.architecture", "llama.block_count", "llama.attention.head_count_kv",
                "llama.rope.freq_base", "tokenizer.ggml.model"):
        assert fields[key] == reader.fields[key].contents()
    assert "tokenizer.ggml.tokens" not in fields  # the vocabulary is skipped, not parsed
    assert gguf_roofline(head) == gguf_roofline(q4_1)
    version_7 = b"GGUF" + (7).to_bytes(4, "little") + bytes(16)
    for bad, match in ((b"GGML" + bytes(20), "bad magic"), (version_7, "version 7"),
                       (head.read_bytes()[:5000], "truncated")):
        head.write_bytes(bad)
        with pytest.raises(ValueError, match=match):
            gguf_header(head)
