"""What a configured model source is, found from its files alone (preflight: before anything is written).

Each source kind (a task package's `SourceKind`) checks itself with `inspect`, through the helpers
here: the files exist and are intact, and the facts the task and the candidate planner need: the
formats the base model will offer, its Hugging Face config, its tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.errors import UserError

# Files that make a folder a tokenizer folder (Hugging Face's fast and slow formats).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "spiece.model")


@dataclass(frozen=True)
class SourceFacts:
    kind: str
    formats: tuple[str, ...]  # what recipes starting from the base may take: "hf", "onnx", "gguf"
    path: Path | None = None  # the model file or folder
    hf_config: dict[str, Any] | None = None  # config.json of a Hugging Face source
    tokenizer_dir: Path | None = None
    gguf: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def with_tokenizer(self, tokenizer_dir: Path) -> SourceFacts:
        return dataclasses.replace(self, tokenizer_dir=tokenizer_dir)


def hf_folder_facts(path: Path, where: str) -> SourceFacts:
    """A Hugging Face folder: config.json and intact safetensors; its tokenizer, if it has one."""
    from edgeopt.base_model import check_hf_folder

    if not path.exists():
        raise UserError(f"{where}.path: not found: {path}")
    check_hf_folder(path)
    config: dict[str, Any] = json.loads((path / "config.json").read_text())
    has_tokenizer = any((path / name).is_file() for name in TOKENIZER_FILES)
    return SourceFacts(kind="hf", formats=("hf",), path=path, hf_config=config,
                       tokenizer_dir=path if has_tokenizer else None)


def gguf_file_facts(path: Path, where: str) -> SourceFacts:
    from edgeopt.integrity import check_gguf_file

    if not path.exists():
        raise UserError(f"{where}.path: not found: {path}")
    summary = check_gguf_file(path)
    # The reference's Hugging Face copy (torch, ONNX, OpenVINO candidates) is exported for llama GGUFs only.
    formats = ("gguf", "hf") if summary.get("architecture") == "llama" else ("gguf",)
    return SourceFacts(kind="gguf", formats=formats, path=path, gguf=path, details=summary)


def onnx_file_facts(path: Path, where: str) -> SourceFacts:
    from edgeopt.base_model import check_onnx_file

    if not path.exists():
        raise UserError(f"{where}.path: not found: {path}")
    check_onnx_file(path)
    return SourceFacts(kind="onnx", formats=("onnx",), path=path)
