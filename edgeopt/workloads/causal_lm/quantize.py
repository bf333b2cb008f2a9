"""GGUF quantization through llama.cpp's own quantizer (`llama_cpp.llama_model_quantize`).

The output is written under a temporary name and renamed only on success: a failed llama.cpp quantize
leaves a partial file behind. The returned summary reads the tensor types back from the file, because
llama.cpp silently substitutes types (on this model's width of 576, most "Q4_K_M" tensors are not Q4_K).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeopt.errors import CandidateError, UserError
from edgeopt.io.atomic import atomic_file

# Names as llama-quantize spells them; each maps to llama_cpp.LLAMA_FTYPE_MOSTLY_<name> (F32: ALL_F32).
QUANT_TYPES = (
    "F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0",
    "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K",
    "IQ3_M", "IQ3_S", "IQ3_XS", "IQ3_XXS", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S",
)  # fmt: skip
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


def ftype_for(qtype: str) -> int:
    """The llama_ftype value for a llama-quantize type name (case-insensitive; Q4_K means Q4_K_M)."""
    import llama_cpp

    name = _ALIASES.get(qtype.upper(), qtype.upper())
    const = "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}"
    if not re.fullmatch(r"[A-Z0-9_]+", name) or not hasattr(llama_cpp, const):
        raise UserError(f"unknown GGUF quantization type {qtype!r}; known: {', '.join(QUANT_TYPES)}")
    return int(getattr(llama_cpp, const))


def imatrix_supported() -> bool:
    """Whether the installed bindings pass importance-matrix data to the quantizer (typed struct array)."""
    import llama_cpp

    fields = {f[0] for f in llama_cpp.llama_model_quantize_params._fields_}
    return hasattr(llama_cpp, "llama_model_imatrix_data") and "imatrix" in fields


def _imatrix_array(data: dict[str, Any]) -> tuple[Any, list[Any]]:
    """A NULL-terminated llama_model_imatrix_data[] and the buffers it points into (keep them alive)."""
    import llama_cpp
    import numpy as np

    entry = llama_cpp.llama_model_imatrix_data
    keep: list[Any] = []
    array = (entry * (len(data) + 1))()
    for i, (name, values) in enumerate(sorted(data.items())):
        buf = np.ascontiguousarray(values, dtype=np.float32)
        keep.append(buf)
        array[i].name = name.encode()
        array[i].data = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        array[i].size = buf.size
    array[len(data)].name = None  # terminator
    keep.append(array)
    return ctypes.cast(array, ctypes.POINTER(entry)), keep


@contextlib.contextmanager
def _llama_log_level(level: int) -> Iterator[None]:
    """llama-cpp-python routes llama.cpp's log through this logger; its level filters what is printed."""
    logger = logging.getLogger("llama-cpp-python")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def quantize_gguf(
    src: Path,
    dst: Path,
    qtype: str,
    imatrix: Path | None = None,
    threads: int = 2,
    verbose: bool = False,
) -> dict[str, Any]:
    """Quantize src to dst as qtype (requantizing allowed); optionally weighted by a GGUF imatrix file.

    Raises UserError for a bad type or imatrix, CandidateError when llama.cpp fails; dst then does not exist.
    Returns the lineage: source and actual output tensor-type histograms, size, bits per weight.
    """
    import llama_cpp

    from edgeopt.workloads.causal_lm.gguf_reference import tensor_type_histogram
    from edgeopt.workloads.causal_lm.imatrix import load_imatrix_gguf

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_for(qtype)
    params.nthread = threads
    params.allow_requantize = True
    keep: list[Any] = []
    n_imatrix = 0
    if imatrix is not None:
        if not imatrix_supported():
            raise UserError("the installed llama-cpp-python cannot pass an imatrix to the quantizer")
        data = load_imatrix_gguf(imatrix)
        params.imatrix, keep = _imatrix_array(data)
        n_imatrix = len(data)
    start = time.perf_counter()
    with atomic_file(dst) as tmp, _llama_log_level(logging.DEBUG if verbose else logging.ERROR):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise CandidateError(f"llama.cpp could not quantize {src} to {qtype} (code {rc}); see its log above")
    seconds = time.perf_counter() - start
    del keep  # the quantizer has copied the imatrix data
    return _summary(src, dst, qtype, params.ftype, imatrix, n_imatrix, seconds, tensor_type_histogram(src))


def _summary(
    src: Path,
    dst: Path,
    qtype: str,
    ftype: int,
    imatrix: Path | None,
    n_imatrix: int,
    seconds: float,
    source_types: dict[str, int],
) -> dict[str, Any]:
    import gguf

    tensors = gguf.GGUFReader(dst).tensors
    n_params = sum(int(t.n_elements) for t in tensors)
    size = dst.stat().st_size
    return {
        "src": str(src),
        "dst": str(dst),
        "qtype": qtype.upper(),
        "ftype": ftype,
        "allow_requantize": True,
        "imatrix": str(imatrix) if imatrix is not None else None,
        "imatrix_entries": n_imatrix,
        "source_tensor_types": source_types,
        "tensor_types": dict(Counter(t.tensor_type.name for t in tensors).most_common()),
        "size_bytes": size,
        "bits_per_weight": round(8 * size / n_params, 3),
        "seconds": round(seconds, 2),
    }
