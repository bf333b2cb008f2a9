"""causal-lm evaluation data: held-out text, token windows and reference log-probs (real GGUF, real GX)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import UserError
from edgeopt.recipes import BaseModelInfo
from edgeopt.workloads.base import get_workload
from edgeopt.workloads.causal_lm import TextWindowsData
from edgeopt.workloads.causal_lm import text_windows as tw
from edgeopt.workloads.causal_lm.text_windows import build_text_windows
from edgeopt.workloads.causal_lm.validation import validate_text_windows

pytest.importorskip("llama_cpp")
SOURCE = TextWindowsData(kind="text-windows", windows=3, window_tokens=64)


@pytest.fixture(scope="module")
def base() -> BaseModelInfo:
    """The bundled Q4_1 GGUF stands in for the reference: its tokenizer and its predictions."""
    from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf

    gguf = bundled_smollm2_gguf()
    return BaseModelInfo(path=gguf, format="gguf", tokenizer_dir=Path("/nonexistent"), sha256="a" * 64,
                         task="causal-lm", variants={"gguf": gguf})


@pytest.fixture(scope="module")
def data_dir(base: BaseModelInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tw") / "data"
    build_text_windows(SOURCE, out, base)
    return out


def test_folder_holds_text_windows_and_reference(data_dir: Path) -> None:
    manifest = tw.load_manifest(data_dir)
    assert manifest["windows"] == 3 and manifest["window_tokens"] == 64
    assert manifest["tokenizer"].startswith("llama.cpp") and manifest["vocab_size"] == 49152
    assert manifest["reference"]["kv_cache"] == "F32" and 1 < manifest["reference"]["perplexity"] < 1000
    eval_ids, calib = tw.load_tokens(data_dir)
    assert eval_ids.shape == (3, 64) and calib.shape == (tw.N_CALIBRATION_WINDOWS, 64)
    ref = tw.load_reference(data_dir)
    assert ref.shape == (3, 64, 49152) and ref.dtype == np.float16
    # Log-probabilities: each row is a normalised distribution.
    assert np.allclose(np.exp(ref[0].astype(np.float64)).sum(axis=-1), 1.0, atol=1e-2)
    rows = get_workload("causal-lm").dataset_rows(data_dir)
    assert [r["window"] for r in rows] == [0, 1, 2] and all(r["text"].strip() for r in rows)


def test_calibration_text_is_disjoint_from_evaluation(data_dir: Path) -> None:
    evaluation = set(tw.paragraphs((data_dir / tw.EVAL_TEXT).read_text()))
    calibration = tw.paragraphs((data_dir / tw.CALIBRATION_TEXT).read_text())
    assert calibration and not evaluation & set(calibration)
    eval_ids, calib = tw.load_tokens(data_dir)
    assert not any(np.array_equal(c, w) for c in calib for w in eval_ids)


def test_same_settings_reuse_the_folder_and_new_ones_rebuild(data_dir: Path, base: BaseModelInfo) -> None:
    ref = data_dir / tw.REFERENCE_FILE
    before = ref.stat().st_mtime_ns
    again = build_text_windows(SOURCE, data_dir, base)
    assert ref.stat().st_mtime_ns == before
    assert again.sha256 == tw.load_manifest(data_dir)["sha256"]
    other = data_dir.parent / "seed1"
    build_text_windows(SOURCE.model_copy(update={"seed": 1}), other, base)
    assert not np.array_equal(tw.load_tokens(other)[0], tw.load_tokens(data_dir)[0])


def test_validation_passes_on_the_built_data(data_dir: Path) -> None:
    report = validate_text_windows(data_dir)
    assert report.success, report.failed
    assert {r.dataset for r in report.results} == {"windows", "calibration", "calibration_text", "eval_text",
                                                   "reference"}


def test_validation_names_leaked_calibration_text_and_a_broken_reference(data_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    leaked = tw.paragraphs((broken / tw.CALIBRATION_TEXT).read_text())[0]
    with (broken / tw.EVAL_TEXT).open("a") as f:
        f.write("\n" + leaked + "\n")
    ref = np.load(broken / tw.REFERENCE_FILE, mmap_mode="r+")
    ref[1, 5, :] = np.nan
    ref.flush()
    del ref
    report = validate_text_windows(broken)
    assert not report.success
    assert "expect_column_values_to_not_be_in_set(calibration_text.text)" in report.failed
    assert "expect_column_values_to_be_in_set(reference.finite)" in report.failed


def test_user_text_errors_are_one_line(base: BaseModelInfo, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="text file not found"):
        build_text_windows(SOURCE.model_copy(update={"source": tmp_path / "missing.txt"}), tmp_path / "a", base)
    short = tmp_path / "short.txt"
    short.write_text("One short paragraph.\n\nAnother one.\n")
    with pytest.raises(UserError, match=r"fewer than data\.windows"):
        build_text_windows(SOURCE.model_copy(update={"source": short}), tmp_path / "b", base)
    with pytest.raises(UserError, match="needs the base model"):
        get_workload("causal-lm").build_data(SOURCE, tmp_path / "c", None)


def test_a_user_text_file_is_split_by_paragraph(base: BaseModelInfo, tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    paras = [f"Paragraph {i} explains how the interpreter reads source file number {i} line by line, "
             f"then compiles it to bytecode before running it." for i in range(400)]
    text.write_text("\n\n".join(paras) + "\n")
    out = tmp_path / "data"
    summary = build_text_windows(SOURCE.model_copy(update={"source": text}), out, base)
    assert summary.kind == "text-windows" and summary.n_sentences == 3
    assert str(text) in json.loads((out / tw.MANIFEST).read_text())["source"]
    assert validate_text_windows(out).success
