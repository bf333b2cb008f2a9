"""Integrity checks of model files a user hands in: a truncated or corrupt file fails here, with
its name and one line, instead of deep inside a recipe (or as a crash of llama.cpp)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.errors import UserError

GGUF_MAGIC = b"GGUF"


def check_gguf_file(path: Path) -> dict[str, Any]:
    """Read a GGUF file's header and tensor index with the `gguf` package and check that every
    tensor's data lies inside the file. Returns a small summary; raises UserError if it is not a
    readable, complete GGUF file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"GGUF file not found: {path}")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise UserError(f"not a GGUF file (bad magic {head!r}): {path}")
    reader_cls = _bounded_reader()
    try:
        reader = reader_cls(str(path))
    except Exception as err:  # the reader raises ValueError, IndexError, KeyError, ... on bad bytes
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"corrupt or truncated GGUF file {path}: {detail}") from None
    if not reader.tensors:
        raise UserError(f"GGUF file has no tensors (a vocabulary-only file?): {path}")
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise UserError(f"truncated GGUF file {path}: tensor {t.name} ends at byte {end}, "
                            f"the file has {size}")
    arch = reader.get_field("general.architecture")
    return {
        "architecture": arch.contents() if arch is not None else None,
        "tensors": len(reader.tensors),
        "metadata_keys": len(reader.fields),
        "bytes": size,
    }


def _bounded_reader() -> Any:
    """GGUFReader that refuses to read past the end of the file.

    The stock reader slices its memory map, so a read past the end silently yields a short array
    and a corrupt length can send it looping over empty reads; bounding every read stops at the
    first byte that is not there.
    """
    import numpy as np
    from gguf import GGUFReader

    class BoundedReader(GGUFReader):
        def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> Any:
            end = int(offset) + np.dtype(dtype).itemsize * int(count)
            if end > len(self.data):
                raise ValueError(f"needs bytes up to {end}, the file ends at {len(self.data)}")
            return super()._get(offset, dtype, count, override_order)

    return BoundedReader
