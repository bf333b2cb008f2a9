"""The text-embedding base model: a Hugging Face encoder folder, or an ONNX file plus its tokenizer, copied as is."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgeopt.base_model import check_hf_folder, check_onnx_file, check_tokenizer, copy_hf
from edgeopt.errors import UserError
from edgeopt.lineage import sha256_tree
from edgeopt.recipes import BaseModelInfo
from edgeopt.taskspec import HFFolderModel, SourceKind, resolve
from edgeopt.workloads.text_embedding import BundledEncoder, OnnxFileModel


def materialize_encoder(source: SourceKind, dest: Path, task: str, project_root: Path) -> BaseModelInfo:
    """Copy the source into `dest` (atomically: a finished folder or none)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(source, BundledEncoder | HFFolderModel):
        src = source.folder() if isinstance(source, BundledEncoder) else resolve(source.path, project_root)
        check_hf_folder(src)
        check_tokenizer(src)
        copy_hf(src, tmp)
        fmt, model_path, tokenizer = "hf", dest, dest
    elif isinstance(source, OnnxFileModel):
        src = resolve(source.path, project_root)
        check_onnx_file(src)
        check_tokenizer(resolve(source.tokenizer, project_root))
        tmp.mkdir(parents=True)
        shutil.copy2(src, tmp / "model.onnx")
        data = src.with_name(src.name + ".data")
        if data.is_file():
            shutil.copy2(data, tmp / data.name)
        copy_hf(resolve(source.tokenizer, project_root), tmp / "tokenizer")
        fmt, model_path, tokenizer = "onnx", dest / "model.onnx", dest / "tokenizer"
    else:  # the task's kinds are closed: config validation never lets another through
        raise UserError(f"model.kind {source.kind!r} does not fit task {task}")
    digest = sha256_tree(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return BaseModelInfo(path=model_path, format=fmt, tokenizer_dir=tokenizer, sha256=digest, task=task)
