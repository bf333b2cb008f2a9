"""Write a file or folder under a temporary name next to its destination; rename it into place on success.

The one way files are published here: a reader (another stage, a concurrent run, DVC) never sees half a
file, and a write that dies (a kill, a full disk) leaves nothing under the final name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_file(dst: Path) -> Iterator[Path]:
    """Yield a (not yet existing) temp path in dst's folder; rename it to dst if the block succeeds.

    Whatever the block left at the temp path is deleted if it raises.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Not created here (mkstemp would make it 0600): the writer creates it with the usual umask.
    tmp = dst.parent / f".{dst.name}.{os.getpid()}-{secrets.token_hex(4)}.partial"
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(dst: Path) -> Iterator[Path]:
    """Yield an empty temp folder next to dst; swap it in for dst if the block succeeds, delete it otherwise."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700
    try:
        yield tmp
        old = None
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.replace(dst, old / dst.name)
        os.replace(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(dst: Path, text: str) -> None:
    with atomic_file(dst) as tmp:
        tmp.write_text(text, encoding="utf-8")
