"""Checks and copies of base-model files every task uses: Hugging Face folders, ONNX files, tokenizers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgeopt.errors import UserError

# Files copied from a Hugging Face folder. Pickled weights (*.bin, *.pt) are never read.
HF_KEEP = ("config.json", "*.safetensors", "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json",
           "sentencepiece*", "spiece.model", "added_tokens.json")


def check_safetensors(path: Path) -> None:
    """A truncated or corrupt file fails here, with its name, instead of deep inside a recipe."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                f.get_slice(key)
    except Exception as err:
        raise UserError(f"corrupt safetensors file {path}: {err}") from None


def check_hf_folder(path: Path) -> None:
    if not path.is_dir():
        raise UserError(f"model folder not found: {path}")
    if not (path / "config.json").is_file():
        raise UserError(f"not a Hugging Face model folder (no config.json): {path}")
    try:
        json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path / 'config.json'}: invalid JSON ({err})") from None
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in path.glob("*.bin")]
        hint = f" (found {pickled}; pickled weights are refused, convert to safetensors)" if pickled else ""
        raise UserError(f"no *.safetensors weights in {path}{hint}")
    for w in weights:
        check_safetensors(w)


def check_onnx_file(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"corrupt or invalid ONNX file {path}: {first}") from None


def check_tokenizer(path: Path) -> None:
    if not path.is_dir():
        raise UserError(f"tokenizer folder not found: {path}")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    # A check prints one line or nothing: transformers' own warnings (e.g. about an unknown
    # model type, which the task's preflight names itself) are not for the console here.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        AutoTokenizer.from_pretrained(str(path))
    except Exception as err:
        raise UserError(f"cannot load a tokenizer from {path}: {err}") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def copy_hf(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for pattern in HF_KEEP:
        for f in src.glob(pattern):
            if f.is_file():
                shutil.copy2(f, dst / f.name)
