"""What a configured model source is, found from its files alone (preflight: before anything is written).

Each source kind has one inspector in `INSPECTORS`; it checks the files (existence, integrity) and
returns the facts the task and the candidate planner need: the formats the base model will offer,
its Hugging Face config, its tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.config import BundledModel, GgufFileModel, HFFolderModel, ModelSource, OnnxFileModel
from edgeopt.errors import UserError


@dataclass(frozen=True)
class SourceFacts:
    kind: str
    formats: tuple[str, ...]  # what recipes starting from the base may take: "hf", "onnx", "gguf"
    hf_config: dict[str, Any] | None = None  # config.json of a Hugging Face source
    tokenizer_dir: Path | None = None
    gguf: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _hf_config(path: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((path / "config.json").read_text())
    return config


def _hf_folder(path: Path, where: str) -> SourceFacts:
    from edgeopt.base_model import check_hf_folder, check_tokenizer

    if not path.exists():
        raise UserError(f"{where}.path: not found: {path}")
    check_hf_folder(path)
    check_tokenizer(path)
    return SourceFacts(kind="hf", formats=("hf",), hf_config=_hf_config(path), tokenizer_dir=path)


def _gguf_file(path: Path, where: str) -> SourceFacts:
    from edgeopt.integrity import check_gguf_file

    if not path.exists():
        raise UserError(f"{where}.path: not found: {path}")
    summary = check_gguf_file(path)
    # The reference's Hugging Face copy (torch, ONNX, OpenVINO candidates) is exported for llama GGUFs only.
    formats = ("gguf", "hf") if summary.get("architecture") == "llama" else ("gguf",)
    return SourceFacts(kind="gguf", formats=formats, gguf=path, details=summary)


def inspect_bundled(model: ModelSource, root: Path, where: str) -> SourceFacts:
    assert isinstance(model, BundledModel)
    if model.id == "smollm2-135m-instruct":
        from edgeopt.llm.gguf_reference import bundled_smollm2_gguf

        return _gguf_file(bundled_smollm2_gguf(), where)
    from edgeopt.base_model import bundled_model_path

    return _hf_folder(bundled_model_path(model), where)


def inspect_hf(model: ModelSource, root: Path, where: str) -> SourceFacts:
    assert isinstance(model, HFFolderModel)
    return _hf_folder(_rel(model.path, root), where)


def inspect_onnx(model: ModelSource, root: Path, where: str) -> SourceFacts:
    from edgeopt.base_model import check_onnx_file, check_tokenizer

    assert isinstance(model, OnnxFileModel)
    path, tokenizer = _rel(model.path, root), _rel(model.tokenizer, root)
    if not path.exists():
        raise UserError(f"{where}.path: not found: {path}")
    check_onnx_file(path)
    if not tokenizer.is_dir():
        raise UserError(f"{where}.tokenizer: not found: {tokenizer}")
    check_tokenizer(tokenizer)
    return SourceFacts(kind="onnx", formats=("onnx",), tokenizer_dir=tokenizer)


def inspect_gguf(model: ModelSource, root: Path, where: str) -> SourceFacts:
    assert isinstance(model, GgufFileModel)
    return _gguf_file(_rel(model.path, root), where)


INSPECTORS: dict[str, Callable[[ModelSource, Path, str], SourceFacts]] = {
    "bundled": inspect_bundled,
    "hf": inspect_hf,
    "onnx": inspect_onnx,
    "gguf": inspect_gguf,
}


def inspect_source(model: ModelSource, root: Path, where: str) -> SourceFacts:
    """Check the source's files and say what they are; paths are relative to `root` (params.yaml's folder)."""
    return INSPECTORS[model.kind](model, root, where)


def _rel(path: Path, root: Path) -> Path:
    return path if path.is_absolute() else root / path
