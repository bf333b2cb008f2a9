"""Lineage facts: content hashes, library versions, code and data revisions."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

# Distributions whose versions are recorded with every candidate.
TRACKED_DISTRIBUTIONS = (
    "edgeopt", "torch", "transformers", "onnx", "onnxruntime", "openvino", "nncf", "olive-ai",
    "llama-cpp-python", "mlx", "mlflow", "prefect", "dvc", "great-expectations", "numpy",
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """Hash of a file, or of a folder's relative paths and file contents in sorted order."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(b"\0")
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def tree_size_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def library_versions(names: tuple[str, ...] = TRACKED_DISTRIBUTIONS) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_revision(cwd: Path) -> dict[str, str]:
    """Commit and whether the tree had uncommitted changes (then the commit alone is not the code)."""
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return {"git_commit": "none"}
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}
