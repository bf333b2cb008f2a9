"""The causal-lm base folder: the reference, its other forms (GGUF, Hugging Face) and the tokenizer (real model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeopt.errors import UserError
from edgeopt.recipes import BaseModelInfo
from edgeopt.taskspec import GgufFileModel, HFFolderModel
from edgeopt.workloads.base import get_workload
from edgeopt.workloads.causal_lm import BundledLLM
from edgeopt.workloads.causal_lm import reference_model as rm


@pytest.fixture(scope="module")
def bundled_base(tmp_path_factory: pytest.TempPathFactory) -> BaseModelInfo:
    pytest.importorskip("llama_cpp")
    dest = tmp_path_factory.mktemp("base") / "base"
    return get_workload("causal-lm").materialize_base(BundledLLM(id="smollm2-135m-instruct"), dest, dest.parent)


def test_bundled_model_gives_reference_hf_and_tokenizer(bundled_base: BaseModelInfo) -> None:
    b = bundled_base
    dest = b.path.parent
    assert (b.format, b.path.name, b.task) == ("gguf", rm.REFERENCE_GGUF, "causal-lm")
    assert b.variants == {"gguf": dest / rm.REFERENCE_GGUF, "hf": dest / rm.HF_DIR}
    assert (b.variants["hf"] / "model.safetensors").is_file()
    # The tokenizer folder is what promotion ships: tokenizer files only, no weights.
    assert b.tokenizer_dir == dest / rm.TOKENIZER_DIR
    assert (b.tokenizer_dir / "tokenizer.json").is_file() and not list(b.tokenizer_dir.glob("*.safetensors"))
    d = b.details
    assert d["source_file_type"] == "MOSTLY_Q4_1" and "dequantized from MOSTLY_Q4_1" in d["reference"]
    assert d["reference_tensor_types"] == {"F32": 272} and d["source"].startswith("bundled smollm2")
    assert json.loads((dest / rm.SOURCE_FILE).read_text())["details"] == d


def test_same_source_reuses_the_folder(bundled_base: BaseModelInfo) -> None:
    dest = bundled_base.path.parent
    before = (dest / rm.REFERENCE_GGUF).stat().st_mtime_ns
    again = get_workload("causal-lm").materialize_base(BundledLLM(id="smollm2-135m-instruct"), dest, dest.parent)
    assert (dest / rm.REFERENCE_GGUF).stat().st_mtime_ns == before
    assert again.sha256 == bundled_base.sha256


def test_user_gguf_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="GGUF file not found"):
        get_workload("causal-lm").materialize_base(GgufFileModel(kind="gguf", path=Path("missing.gguf")),
                                                   tmp_path / "b", tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(UserError, match="corrupt or invalid GGUF file"):
        get_workload("causal-lm").materialize_base(GgufFileModel(kind="gguf", path=bad), tmp_path / "b", tmp_path)


def test_user_hf_folder_stays_the_reference_beside_its_converted_gguf(hf_source_base: BaseModelInfo,
                                                                      hf_dir: Path, tmp_path: Path) -> None:
    b = hf_source_base
    dest = b.path.parent
    assert (b.format, b.path) == ("hf", dest / rm.HF_DIR)
    assert b.variants == {"hf": dest / rm.HF_DIR, "gguf": dest / rm.REFERENCE_GGUF}
    assert "gguf_unavailable" not in b.details and b.details["gguf_conversion"]["outtype"] == "f32"
    # Its evaluation data is still tokenized and scored by transformers: the converted GGUF is a candidate's
    # input, not the reference.
    from edgeopt.workloads.causal_lm import TextWindowsData
    from edgeopt.workloads.causal_lm.text_windows import build_text_windows, load_manifest, load_tokens

    build_text_windows(TextWindowsData(kind="text-windows", windows=2, window_tokens=32), tmp_path / "data", b)
    manifest = load_manifest(tmp_path / "data")
    assert manifest["reference"]["runtime"] == "transformers" and manifest["tokenizer"].startswith("transformers")
    assert load_tokens(tmp_path / "data")[0].shape == (2, 32)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    for f in hf_dir.iterdir():
        (encoder / f.name).symlink_to(f)
    (encoder / "config.json").unlink()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(UserError, match="not a causal language model"):
        get_workload("causal-lm").materialize_base(HFFolderModel(kind="hf", path=encoder), tmp_path / "b2", tmp_path)
