"""Importance matrices (llama.cpp "imatrix") in llama.cpp's GGUF imatrix format.

An imatrix holds, for each weight matrix, the mean square of every input column's activation over some
calibration tokens; llama.cpp's quantizer uses it to weight the rounding error. File layout (as written by
llama-imatrix): general.type = "imatrix", imatrix.datasets (str[]), imatrix.chunk_count, imatrix.chunk_size;
per weight `<name>.in_sum2` F32 [n_mat, n_in] (sum of squares) and `<name>.counts` F32 [n_mat, 1] (tokens).

No llama-imatrix binary ships with llama-cpp-python, so `hf_imatrix` collects the same statistics from the
exported Hugging Face model (inputs of every q/k/v/o/gate/up/down projection).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeopt.errors import UserError
from edgeopt.io.atomic import atomic_file

Imatrix = dict[str, npt.NDArray[np.float32]]  # GGUF weight name -> mean squared input activation, [n_in]


def _gguf_weight_name(hf_module: str) -> str | None:
    """GGUF weight name for an HF LlamaForCausalLM linear module name (None for lm_head)."""
    from edgeopt.workloads.causal_lm.hf_export import LAYER_NAMES

    parts = hf_module.split(".")  # model.layers.{i}.self_attn.q_proj
    if len(parts) != 5 or parts[:2] != ["model", "layers"]:
        return None
    suffix = ".".join(parts[3:])
    for gguf_name, hf_name in LAYER_NAMES.items():
        if hf_name == suffix:
            return f"blk.{parts[2]}.{gguf_name}.weight"
    return None


def hf_imatrix(hf_dir: Path, windows: npt.NDArray[np.int64], threads: int | None = 2) -> tuple[Imatrix, int]:
    """Sum of squared inputs of every block linear layer over all window tokens; returns (sums, n_tokens)."""
    import torch
    from transformers import AutoModelForCausalLM

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    sums: dict[str, Any] = {}

    def hook(name: str) -> Any:
        def collect(_module: Any, inputs: tuple[Any, ...], _output: Any) -> None:
            x = inputs[0].detach().double().reshape(-1, inputs[0].shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(dim=0)

        return collect

    try:
        model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True).float().eval()
        handles = []
        for module_name, module in model.named_modules():
            gguf_name = _gguf_weight_name(module_name)
            if gguf_name is not None and isinstance(module, torch.nn.Linear):
                handles.append(module.register_forward_hook(hook(gguf_name)))
        with torch.inference_mode():
            for window in windows:
                model(input_ids=torch.from_numpy(np.ascontiguousarray(window[None, :])))
        for h in handles:
            h.remove()
    finally:
        torch.set_num_threads(previous_threads)
    return {k: v.numpy().astype(np.float32) for k, v in sums.items()}, int(windows.size)


def save_imatrix_gguf(path: Path, sums: Imatrix, n_tokens: int, chunk_size: int, datasets: list[str]) -> Path:
    """Write sums of squares (one matrix per weight, no experts) as a llama.cpp GGUF imatrix file."""
    import gguf

    with atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch="imatrix")
        writer.add_type("imatrix")
        writer.add_array("imatrix.datasets", datasets)
        writer.add_uint32("imatrix.chunk_count", max(1, n_tokens // chunk_size))
        writer.add_uint32("imatrix.chunk_size", chunk_size)
        for name in sorted(sums):
            writer.add_tensor(f"{name}.in_sum2", np.asarray(sums[name], dtype=np.float32).reshape(1, -1))
            writer.add_tensor(f"{name}.counts", np.full((1, 1), float(n_tokens), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def load_imatrix_gguf(path: Path) -> Imatrix:
    """Per-weight importance (in_sum2 / counts per matrix, flattened) as llama.cpp's quantize tool computes it."""
    import gguf

    if not path.is_file():
        raise UserError(f"imatrix not found: {path}")
    try:
        reader = gguf.GGUFReader(path)
    except ValueError as exc:
        raise UserError(f"{path} is not a GGUF imatrix (legacy .dat imatrix files are not supported)") from exc
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    out: Imatrix = {}
    for name, sums in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        base = name.removesuffix(".in_sum2")
        counts = tensors.get(f"{base}.counts")
        if counts is None:
            raise UserError(f"imatrix {path}: {base} has in_sum2 but no counts")
        per_mat = sums.reshape(counts.size, -1)
        c = counts.reshape(-1, 1)
        out[base] = np.where(c > 0, per_mat / np.where(c > 0, c, 1), 1.0).astype(np.float32).reshape(-1)
    if not out:
        raise UserError(f"imatrix {path} holds no <weight>.in_sum2 tensors")
    return out
