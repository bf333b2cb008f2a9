"""Shared by the OpenVINO and ONNX Runtime causal-LM adapters: the traceable KV-cache module both
exporters trace, the I/O names of the exported graphs, the timed greedy-decoding loop, and the weight bytes a
decoded token reads (`weight_reads`, over a framework-neutral description of either graph), and `FileBytes`,
with which the ONNX and GGUF runtimes read a model file's skeleton without its weights.

The exported graphs follow the optimum/onnxruntime-genai layout: inputs `input_ids`, `attention_mask`
(past + new tokens), `position_ids` and `past_key_values.{i}.key|value` [batch, kv_heads, past, head_dim];
outputs `logits` [batch, seq, vocab] and `present.{i}.key|value` (past + new). Runners feed batch 1, no
padding. torch and transformers are imported inside functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import CandidateError, short_error
from edgeopt.recipes import BuildContext, Generation

if TYPE_CHECKING:
    import torch

INPUTS = ("input_ids", "attention_mask", "position_ids")
LOGITS = "logits"


def past_names(n_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]





def source_hf_dir(ctx: BuildContext, recipe: str) -> tuple[Path, str]:
    """The Hugging Face folder a causal-LM export starts from, and where it came from (lineage).

    An "hf" parent candidate wins; otherwise the base model's "hf" variant (an LLM shipped as GGUF has
    one), or the base itself when it is a Hugging Face folder.
    """
    if ctx.parent is not None:
        if ctx.parent.format != "hf":
            raise CandidateError(f"{recipe}: needs a Hugging Face parent, got {ctx.parent.format!r}")
        hf_dir, source = ctx.parent.dir, ctx.parent.name
    elif "hf" in ctx.base.variants:
        hf_dir, source = ctx.base.variants["hf"], "base:hf"
    elif ctx.base.format == "hf":
        hf_dir, source = ctx.base.path, "base"
    else:
        reason = ctx.base.details.get("hf_unavailable", "no Hugging Face form was exported")
        raise CandidateError(f"{recipe}: the base model ({ctx.base.format}) has no Hugging Face form: {reason}")
    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise CandidateError(f"{recipe}: {hf_dir} is not a Hugging Face model folder (no config.json)")
    return hf_dir, source


def load_kv_module(hf_dir: Path, threads: int) -> tuple[torch.nn.Module, dict[str, int]]:
    """The HF causal LM (float32, sdpa attention) wrapped to take and return its KV cache as tensors.

    Returns the module and its shape facts: n_layers, kv_heads, head_dim, vocab.
    """
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache
    from transformers.cache_utils import DynamicLayer

    torch.set_num_threads(max(1, threads))
    try:
        # use_safetensors=True: loading must never unpickle.
        model = AutoModelForCausalLM.from_pretrained(
            str(hf_dir), use_safetensors=True, dtype=torch.float32, attn_implementation="sdpa", local_files_only=True
        ).eval()
    except Exception as exc:  # transformers raises many types (OSError, ValueError, ...)
        raise CandidateError(f"cannot load causal LM from {hf_dir}: {short_error(exc)}") from exc
    cfg = model.config.get_text_config()
    n_layers = int(cfg.num_hidden_layers)
    n_heads = int(cfg.num_attention_heads)
    shape = {
        "n_layers": n_layers,
        "kv_heads": int(getattr(cfg, "num_key_value_heads", None) or n_heads),
        "head_dim": int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads),
        "vocab": int(cfg.vocab_size),
    }

    class KVCausalLM(torch.nn.Module):
        def __init__(self, lm: torch.nn.Module) -> None:
            super().__init__()
            self.lm = lm

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
        ) -> tuple[torch.Tensor, ...]:
            cache = DynamicCache()
            for i in range(n_layers):
                # Filled directly: DynamicCache(data) concatenates onto an empty 1-D tensor first,
                # which torch allows but OpenVINO's converter rejects.
                layer = DynamicLayer()
                layer.keys, layer.values = past[2 * i], past[2 * i + 1]
                layer.dtype, layer.device = layer.keys.dtype, layer.keys.device
                layer.is_initialized = True
                cache.layers.append(layer)
            out = self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            present: list[torch.Tensor] = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return KVCausalLM(model).eval(), shape


def example_inputs(shape: dict[str, int], past: int = 2, seq: int = 3) -> tuple[torch.Tensor, ...]:
    """Trace inputs with both a non-empty cache and several new tokens, so the trace records the general
    causal-mask path (a 1-token or empty-cache trace may specialise it away). Token values do not matter.
    """
    import torch

    ids = torch.arange(1, seq + 1, dtype=torch.int64)[None]
    mask = torch.ones(1, past + seq, dtype=torch.int64)
    pos = torch.arange(past, past + seq, dtype=torch.int64)[None]
    kv = [torch.zeros(1, shape["kv_heads"], past, shape["head_dim"]) for _ in range(2 * shape["n_layers"])]
    return (ids, mask, pos, *kv)


# Op types that multiply a token's activations by a weight matrix, and that look one row up per token.
MATMUL_OPS = frozenset({"MatMul", "MatMulNBits", "Gemm", "FullyConnected"})
LOOKUP_OPS = frozenset({"Gather", "GatherBlockQuantized"})
# Ops never folded into a constant chain even when all their inputs are constant (state initial values).
OPAQUE_OPS = frozenset({"ReadValue", "Assign", "Result"})


@dataclass(frozen=True)
class GraphConst:
    """A constant / initializer: bytes a decode step reads from it, and its logical element count (a packed
    int4 N x K matrix counts N*K)."""

    name: str
    nbytes: int
    elements: int


@dataclass(frozen=True)
class GraphOp:
    """A non-constant node: the value names it reads and writes (a missing optional input is "")."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def weight_reads(consts: Sequence[GraphConst], ops: Sequence[GraphOp]) -> tuple[int, int]:
    """(weight bytes, matrix parameters) one decoded token reads, from a graph description.

    `ops` in topological order. An op whose inputs are all constant-derived (decompression chains:
    Convert -> Subtract -> Multiply -> Reshape, casts, transposes) is part of the constant; the first op
    that also takes an activation consumes every constant feeding it. A constant consumed only by lookups
    (the token-embedding table) reads one row per token and is not counted; consumed by a lookup and a
    MatMul (tied embeddings) it counts once. Each MatMul multiplies the largest constant feeding it (the
    matrix; the others are its scales / zero points / shapes).
    """
    origin: dict[str, frozenset[str]] = {c.name: frozenset({c.name}) for c in consts}
    consumers: dict[str, set[str]] = {}
    matmuls: list[frozenset[str]] = []
    for op in ops:
        inputs = [v for v in op.inputs if v]
        if inputs and op.op_type not in OPAQUE_OPS and all(v in origin for v in inputs):
            derived = frozenset().union(*(origin[v] for v in inputs))
            origin.update((out, derived) for out in op.outputs)
            continue
        fed = frozenset().union(*(origin[v] for v in inputs if v in origin))
        for name in fed:
            consumers.setdefault(name, set()).add(op.op_type)
        if fed and op.op_type in MATMUL_OPS:
            matmuls.append(fed)
    size = {c.name: c for c in consts}
    weight_bytes = sum(size[name].nbytes for name, types in consumers.items() if not types <= LOOKUP_OPS)
    matmul_params = sum(max(size[name].elements for name in fed) for fed in matmuls)
    return weight_bytes, matmul_params


class FileBytes:
    """Bytes of an open file read on demand through a small window: skipping a field costs a seek, not a read.

    Plain reads, not a memory map, so no page of the file is mapped into the process (a mapped page would count
    towards its RSS, and fault-around maps its neighbours too).
    """

    WINDOW = 1 << 16

    def __init__(self, f: Any) -> None:
        self._f = f
        self._size = f.seek(0, 2)
        self._start, self._chunk = 0, b""

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            start, stop = key.start, key.stop
            if self._start <= start and stop <= self._start + len(self._chunk):
                return self._chunk[start - self._start : stop - self._start]
            if not 0 <= start <= stop <= self._size:  # checked first: a corrupt length must not allocate
                raise ValueError(f"truncated file: bytes {start}..{stop} are past the end ({self._size} bytes)")
            self._f.seek(start)
            return self._f.read(stop - start)
        if not self._start <= key < self._start + len(self._chunk):
            if not 0 <= key < self._size:
                raise ValueError(f"truncated file: byte {key} is past the end ({self._size} bytes)")
            self._f.seek(key)
            self._start, self._chunk = key, self._f.read(self.WINDOW)
        return self._chunk[key - self._start]


def check_window(input_ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(input_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise CandidateError(f"expected one non-empty token window [T], got shape {ids.shape}")
    return ids.astype(np.int64, copy=False)


def timed_greedy(
    prefill: Callable[[np.ndarray], np.ndarray],
    step: Callable[[int, int], np.ndarray],
    prompt_ids: np.ndarray,
    max_new_tokens: int,
) -> Generation:
    """Greedy decoding: prefill(prompt) -> last-position logits; step(token, position) -> next logits.

    Exactly max_new_tokens tokens (no stop on EOS), so every candidate decodes the same amount of work.
    """
    prompt = check_window(prompt_ids)
    if max_new_tokens < 1:
        raise CandidateError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    start = time.perf_counter()
    token = int(np.argmax(prefill(prompt)))
    ttft = time.perf_counter() - start
    tokens, decode = [token], []
    for pos in range(len(prompt), len(prompt) + max_new_tokens - 1):
        t0 = time.perf_counter()
        token = int(np.argmax(step(token, pos)))
        decode.append(time.perf_counter() - t0)
        tokens.append(token)
    return Generation(ttft_s=ttft, decode_s=decode, token_ids=tokens)
