"""llama.cpp (llama-cpp-python): GGUF quantization of the causal-lm reference, and the "llamacpp" runtime.

`gguf-quantize` starts from the base model's GGUF form (or from a GGUF candidate) and quantizes with llama.cpp's
own quantizer; with `imatrix: true` it first collects an importance matrix on the calibration windows (disjoint
from the evaluation windows). The base's GGUF form is made once in the prepare stage: a GGUF source dequantized
to F32, or a Hugging Face folder converted by llama.cpp's convert_hf_to_gguf.py in the checkpoint's float type
(edgeopt.workloads.causal_lm.reference_model). llama_cpp and gguf are imported inside functions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from edgeopt.errors import CandidateError, UserError
from edgeopt.iospec import stack_feeds
from edgeopt.recipes import (
    BuildContext,
    BuildOutput,
    Generation,
    Recipe,
    Requirements,
    register_recipe,
    register_runtime,
)

MODEL_FILE = "model.gguf"
IMATRIX_FILE = "imatrix.gguf"
FORMAT = "gguf"
RUNTIME = "llamacpp"
SPEED_CTX = 2048  # KV cache of the timed context; grown when a prompt + generation needs more


class GgufQuantizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    qtype: str = "Q4_K_M"  # a llama-quantize type name: F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, ...
    imatrix: bool = False  # weight the rounding by activations on the calibration windows

    @field_validator("qtype")
    @classmethod
    def _known_type(cls, v: str) -> str:
        from edgeopt.workloads.causal_lm.quantize import _ALIASES, QUANT_TYPES

        name = _ALIASES.get(v.upper(), v.upper())
        if name not in QUANT_TYPES:
            raise ValueError(f"unknown GGUF quantization type {v!r}; known: {', '.join(QUANT_TYPES)}")
        return name


def _source_gguf(ctx: BuildContext) -> tuple[Path, str]:
    if ctx.parent is not None:
        if ctx.parent.format != FORMAT:
            raise CandidateError(f"gguf-quantize needs a GGUF parent, got {ctx.parent.format!r}")
        return ctx.parent.dir / ctx.parent.model_file, ctx.parent.name
    gguf = ctx.base.variants.get("gguf")
    if gguf is None:
        reason = ctx.base.details.get("gguf_unavailable", f"the base model is {ctx.base.format}, not GGUF")
        raise CandidateError(f"gguf-quantize: no GGUF form of the base model: {reason}")
    return Path(gguf), "base:gguf"


def _imatrix(ctx: BuildContext) -> tuple[Path, dict[str, Any]]:
    """An importance matrix from the calibration windows, collected on the base model's HF form."""
    from edgeopt.workloads.causal_lm.imatrix import hf_imatrix, save_imatrix_gguf

    hf = ctx.base.variants.get("hf")
    if hf is None:
        raise CandidateError("gguf-quantize imatrix: the base model has no Hugging Face form to collect "
                             f"activations with ({ctx.base.details.get('hf_unavailable', 'not exported')})")
    windows = np.asarray(stack_feeds(ctx.calibration.feeds(), "input_ids"), dtype=np.int64)
    if windows.ndim != 2 or windows.size == 0:
        raise CandidateError(f"gguf-quantize imatrix: no calibration windows (got shape {windows.shape})")
    start = time.perf_counter()
    sums, n_tokens = hf_imatrix(Path(hf), windows, threads=ctx.threads)
    path = save_imatrix_gguf(ctx.out_dir / IMATRIX_FILE, sums, n_tokens, int(windows.shape[1]),
                             ["edgeopt calibration windows (disjoint from the evaluation windows)"])
    return path, {"imatrix_windows": int(windows.shape[0]), "imatrix_tokens": n_tokens,
                  "imatrix_seconds": round(time.perf_counter() - start, 2), "imatrix_collected_with": "torch (hf/)"}


def _build_gguf_quantize(ctx: BuildContext) -> BuildOutput:
    from edgeopt.workloads.causal_lm.quantize import quantize_gguf

    opts: GgufQuantizeOptions = ctx.options
    src, source_name = _source_gguf(ctx)
    if not src.is_file():
        raise CandidateError(f"gguf-quantize: source GGUF {src} does not exist")
    extra: dict[str, Any] = {}
    imatrix = None
    if opts.imatrix:
        imatrix, extra = _imatrix(ctx)
    try:
        summary = quantize_gguf(src, ctx.out_dir / MODEL_FILE, opts.qtype, imatrix=imatrix, threads=ctx.threads)
    except UserError as err:  # a bad imatrix or type is this candidate's failure, not the run's
        raise CandidateError(f"gguf-quantize: {err}") from err
    summary["src"], summary["dst"] = source_name, MODEL_FILE  # absolute paths say nothing in lineage
    if summary.get("imatrix"):
        summary["imatrix"] = IMATRIX_FILE
    # gguf_conversion: which converter made an HF source's GGUF, and as what outtype.
    base_lineage = {k: ctx.base.details[k] for k in ("source", "source_file_type", "reference", "gguf_conversion")
                    if k in ctx.base.details}
    return BuildOutput(format=FORMAT, runtime=RUNTIME, precision=opts.qtype.lower(), model_file=MODEL_FILE,
                       details={**summary, **extra, "base": base_lineage})


register_recipe(
    Recipe(
        name="gguf-quantize",
        framework="llama.cpp",
        options_model=GgufQuantizeOptions,
        accepts=("base", FORMAT),
        base_formats=("gguf",),
        build=_build_gguf_quantize,
        description="llama.cpp quantization of the reference GGUF (any llama-quantize type, optional imatrix).",
        requires=Requirements(modules=("llama_cpp", "gguf")),
        families=("generation",),
        tasks=("causal-lm",),
    )
)


def gguf_roofline(path: Path, kv_bytes: int = 2) -> dict[str, int]:
    """Bytes a decode step reads (weights) and the KV-cache bytes per cached position, from the GGUF itself.

    Every matrix is read once per token, except the token embedding, which is a one-row lookup unless it
    doubles as the output head (tied embeddings, as in SmolLM2).
    """
    import gguf

    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    tied = "output.weight" not in tensors
    weight_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    matmul = sum(int(t.n_elements) for t in reader.tensors if len(t.shape) > 1)
    embd = tensors.get("token_embd.weight")
    if embd is not None and not tied:
        weight_bytes -= int(embd.n_bytes)
        matmul -= int(embd.n_elements)
    arch = reader.fields["general.architecture"].contents()

    def field(key: str, default: int = 0) -> int:
        f = reader.fields.get(f"{arch}.{key}")
        return int(f.contents()) if f is not None else default

    n_head = field("attention.head_count", 1)
    n_kv = field("attention.head_count_kv", n_head)
    head_dim = field("attention.key_length", field("embedding_length") // max(n_head, 1))
    kv_per_position = field("block_count") * 2 * n_kv * head_dim * kv_bytes
    return {"weight_bytes": weight_bytes, "kv_bytes_per_position": kv_per_position, "matmul_params": matmul}


class LlamaCppRunner:
    """Two llama.cpp contexts on one GGUF.

    Timed generation runs as deployed: llama.cpp's default F16 KV cache, logits for the last position only.
    The quality pass (`logits`) uses an F32 KV cache, like the reference logits: F16 KV rounding alone moves
    logits by ~0.03 (a KLD of ~1e-4), which would swamp the ~5e-6 that F16 weights cost, so with it every
    GGUF's KLD would mostly measure the cache, not the weights.
    """

    def __init__(self, path: Path, threads: int) -> None:
        self.path = path
        self.threads = threads
        self._speed: Any = None
        self._speed_ctx = 0
        self._quality: Any = None
        self._quality_len = 0
        self._speed_context(SPEED_CTX)  # loading the model is part of load time

    def _llama(self, n_ctx: int, n_batch: int, logits_all: bool, kv: str | None) -> Any:
        import llama_cpp
        from llama_cpp import Llama

        kv_kw = {} if kv is None else {"type_k": getattr(llama_cpp, f"GGML_TYPE_{kv}"),
                                       "type_v": getattr(llama_cpp, f"GGML_TYPE_{kv}")}
        try:
            return Llama(str(self.path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=self.threads,
                         n_threads_batch=self.threads, logits_all=logits_all, verbose=False, **kv_kw)
        except Exception as err:
            raise CandidateError(f"llama.cpp cannot load {self.path.name}: {err}") from err

    def _speed_context(self, need: int) -> Any:
        if self._speed is None or need > self._speed_ctx:
            if self._speed is not None:
                self._speed.close()
            self._speed_ctx = max(SPEED_CTX, need)
            self._speed = self._llama(self._speed_ctx, 512, logits_all=False, kv=None)
        return self._speed

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.int64)
        t = len(ids)
        if self._quality is None or self._quality_len != t:
            if self._quality is not None:
                self._quality.close()
            # One ubatch of the whole window, as the reference was computed.
            self._quality = self._llama(t, t, logits_all=True, kv="F32")
            self._quality_len = t
        llm = self._quality
        llm.reset()
        llm.eval([int(i) for i in ids])
        return np.array(llm.scores[:t], dtype=np.float32)

    def generate(self, prompt_ids: np.ndarray, max_new_tokens: int) -> Generation:
        import llama_cpp

        from edgeopt.adapters.causal_lm_common import timed_greedy

        prompt = np.asarray(prompt_ids, dtype=np.int64)
        llm = self._speed_context(len(prompt) + max_new_tokens)
        n_vocab = llm.n_vocab()

        def last_logits() -> np.ndarray:
            return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))

        def prefill(ids: np.ndarray) -> np.ndarray:
            llm.reset()
            llm.eval([int(i) for i in ids])
            return last_logits()

        def step(token: int, _pos: int) -> np.ndarray:
            llm.eval([token])
            return last_logits()

        return timed_greedy(prefill, step, prompt, max_new_tokens)

    def roofline(self) -> dict[str, int]:
        return gguf_roofline(self.path, kv_bytes=2)  # the timed context's F16 KV cache

    def runtime_info(self) -> dict[str, Any]:
        import llama_cpp

        from edgeopt.workloads.causal_lm.gguf_reference import tensor_type_histogram

        return {"llama_cpp_python": llama_cpp.__version__, "threads": self.threads,
                "kv_cache": {"generate": "f16", "logits": "f32"}, "tensor_types": tensor_type_histogram(self.path)}


@register_runtime(RUNTIME)
def load_llamacpp(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int) -> LlamaCppRunner:
    path = Path(candidate_dir) / model_file
    if not path.is_file():
        raise CandidateError(f"{path} does not exist")
    return LlamaCppRunner(path, threads)
