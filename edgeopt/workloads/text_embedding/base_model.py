"""The text-embedding base model: a Hugging Face encoder folder, or an ONNX file plus its tokenizer, copied as is."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgeopt.base_model import check_hf_folder, check_onnx_file, check_tokenizer, copy_hf
from edgeopt.errors import UserError
from edgeopt.io.atomic import atomic_dir
from edgeopt.lineage import sha256_tree
from edgeopt.recipes import BaseModelInfo
from edgeopt.taskspec import HFFolderModel, SourceKind, resolve
from edgeopt.workloads.text_embedding import BundledEncoder, OnnxFileModel


def materialize_encoder(source: SourceKind, dest: Path, task: str, project_root: Path) -> BaseModelInfo:
    """Copy the source into `dest` (atomically: a finished folder or none)."""
    with atomic_dir(dest) as tmp:
        fmt, model_path, tokenizer = _copy_source(source, tmp, dest, task, project_root)
        digest = sha256_tree(tmp)
    return BaseModelInfo(path=model_path, format=fmt, tokenizer_dir=tokenizer, sha256=digest, task=task)


def _copy_source(source: SourceKind, tmp: Path, dest: Path, task: str, project_root: Path) -> tuple[str, Path, Path]:
    """The source's files into the (empty) folder `tmp`; its format, model path and tokenizer once at `dest`."""
    if isinstance(source, BundledEncoder | HFFolderModel):
        src = source.folder() if isinstance(source, BundledEncoder) else resolve(source.path, project_root)
        check_hf_folder(src)
        check_tokenizer(src)
        copy_hf(src, tmp)
        return "hf", dest, dest
    elif isinstance(source, OnnxFileModel):
        src = resolve(source.path, project_root)
        check_onnx_file(src)
        check_tokenizer(resolve(source.tokenizer, project_root))
        shutil.copy2(src, tmp / "model.onnx")
        data = src.with_name(src.name + ".data")
        if data.is_file():
            shutil.copy2(data, tmp / data.name)
        copy_hf(resolve(source.tokenizer, project_root), tmp / "tokenizer")
        return "onnx", dest / "model.onnx", dest / "tokenizer"
    # The task's kinds are closed: config validation never lets another through.
    raise UserError(f"model.kind {source.kind!r} does not fit task {task}")
