"""llama.cpp (llama-cpp-python): GGUF quantization of the causal-lm reference, and the "llamacpp" runtime.

`gguf-quantize` starts from the base model's GGUF form (or from a GGUF candidate) and quantizes with llama.cpp's
own quantizer; with `imatrix: true` it first collects an importance matrix on the calibration windows (disjoint
from the evaluation windows). The base's GGUF form is made once in the prepare stage: a GGUF source dequantized
to F32, or a Hugging Face folder converted by llama.cpp's convert_hf_to_gguf.py in the checkpoint's float type
(edgeopt.workloads.causal_lm.reference_model). llama_cpp and gguf are imported inside functions.

The runtime stores the KV cache at one precision per candidate, timed and scored alike: the recipe's `kv_cache`
option (F32 by default, as every other runtime's cache; F16 is llama.cpp's own default and a common deployment
choice, and its rounding is then part of the scores), recorded in the candidate's details and its runtime_info.
The runtime reads the GGUF's header only (tensor index and metadata), never its tensor data: the only copy of
the model in the measuring process is llama.cpp's own.
"""

from __future__ import annotations

import struct
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
from edgeopt.tuning import Settings, SettingsSpace

MODEL_FILE = "model.gguf"
IMATRIX_FILE = "imatrix.gguf"
FORMAT = "gguf"
RUNTIME = "llamacpp"
SPEED_CTX = 2048  # KV cache of the timed context; grown when a prompt + generation needs more
KvCache = Literal["f32", "f16"]
KV_BYTES: dict[str, int] = {"f32": 4, "f16": 2}


class GgufQuantizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    qtype: str = "Q4_K_M"  # a llama-quantize type name: F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, ...
    imatrix: bool = False  # weight the rounding by activations on the calibration windows
    # KV-cache storage of the llama.cpp contexts, the same when timed and when scored. f32 (as every other
    # runtime's cache) keeps the scores about the weights: F16 KV rounding alone moves SmolLM2's logits by
    # ~0.03 (a KLD of ~1e-4, more than F16 weights cost); f16 (llama.cpp's default) is what many deployments
    # run, and halves the cache.
    kv_cache: KvCache = "f32"

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
                       details={**summary, **extra, "kv_cache": opts.kv_cache, "base": base_lineage})


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


# GGUF metadata value types (gguf.GGUFValueType) with a fixed size, as struct formats; 8 is a string, 9 an array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_SMALL_ARRAY = 4096  # numeric arrays up to this long are kept (per-layer hyperparameters), longer skipped


@dataclass(frozen=True)
class GgufTensorInfo:
    """One entry of a GGUF's tensor index: its data is neither read nor mapped."""

    name: str
    type_name: str  # ggml type, e.g. "Q4_K", "F32"
    dims: tuple[int, ...]  # ggml order (innermost first)
    n_elements: int
    n_bytes: int


def gguf_header(path: Path) -> tuple[dict[str, Any], list[GgufTensorInfo]]:
    """The metadata and the tensor index of a GGUF (versions 2 and 3), read from its header with plain reads.

    gguf.GGUFReader memory-maps the whole file and makes a numpy view per metadata item (a vocabulary makes
    hundreds of thousands): this reads only the header's bytes. Metadata values: numbers, bools and strings
    as Python values, numeric arrays of at most 4096 items as lists; longer and string arrays (the
    vocabulary) are skipped.
    """
    import gguf

    from edgeopt.adapters.causal_lm_common import FileBytes

    with open(path, "rb") as f:
        buf = FileBytes(f)
        if buf[0:4] != b"GGUF":
            raise ValueError(f"{Path(path).name} is not a GGUF file (bad magic)")
        (version,) = struct.unpack("<I", buf[4:8])
        order = "<"
        if version & 0xFFFF == 0:  # written on a machine of the other byte order
            order = ">"
            (version,) = struct.unpack(">I", buf[4:8])
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported (2 or 3)")
        pos = 8

        def take(fmt: str, count: int = 1) -> tuple[Any, ...]:
            nonlocal pos
            layout = f"{order}{count}{fmt}"
            size = struct.calcsize(layout)
            values = struct.unpack(layout, buf[pos : pos + size])
            pos += size
            return values

        def string() -> str:
            nonlocal pos
            (n,) = take("Q")
            raw = buf[pos : pos + n]
            pos += n
            return bytes(raw).decode("utf-8", errors="replace")

        def skip(vtype: int, count: int) -> None:
            nonlocal pos
            if vtype in _GGUF_SCALARS:
                pos += struct.calcsize(_GGUF_SCALARS[vtype]) * count
            elif vtype == _GGUF_STRING:
                for _ in range(count):
                    (n,) = take("Q")  # not `pos += take(...)`: take moves pos itself
                    pos += n
            elif vtype == _GGUF_ARRAY:
                for _ in range(count):
                    sub, n = take("IQ")
                    skip(sub, n)
            else:
                raise ValueError(f"unknown GGUF value type {vtype}")
            if pos > len(buf):
                raise ValueError(f"truncated GGUF header in {Path(path).name}")

        n_tensors, n_kv = take("Q", 2)
        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = string()
            (vtype,) = take("I")
            if vtype in _GGUF_SCALARS:
                fields[key] = take(_GGUF_SCALARS[vtype])[0]
            elif vtype == _GGUF_STRING:
                fields[key] = string()
            elif vtype == _GGUF_ARRAY:
                sub, count = take("IQ")
                if sub in _GGUF_SCALARS and count <= _GGUF_SMALL_ARRAY:
                    fields[key] = list(take(_GGUF_SCALARS[sub], count))
                else:
                    skip(sub, count)
            else:
                raise ValueError(f"unknown GGUF value type {vtype} for {key!r}")
        tensors = []
        for _ in range(n_tensors):
            name = string()
            (n_dims,) = take("I")
            if n_dims > 8:  # ggml has at most 4
                raise ValueError(f"corrupt GGUF tensor index in {Path(path).name}: {name!r} has {n_dims} dims")
            dims = take("Q", n_dims)
            ggml_type, _offset = take("IQ")
            qtype = gguf.GGMLQuantizationType(ggml_type)
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            n_elements = 1
            for d in dims:
                n_elements *= int(d)
            tensors.append(GgufTensorInfo(name, qtype.name, tuple(int(d) for d in dims), n_elements,
                                          n_elements * type_size // block))
    return fields, tensors


def gguf_tensor_types(tensors: list[GgufTensorInfo]) -> dict[str, int]:
    """How many tensors of each ggml type, e.g. {"Q4_1": 210, "F32": 61, "Q8_0": 1} (as tensor_type_histogram)."""
    return dict(Counter(t.type_name for t in tensors).most_common())


def gguf_roofline(path: Path, kv_cache: KvCache = "f32",
                  header: tuple[dict[str, Any], list[GgufTensorInfo]] | None = None) -> dict[str, int]:
    """Bytes a decode step reads (weights) and the KV-cache bytes per cached position, from the GGUF's header.

    Every matrix is read once per token, except the token embedding, which is a one-row lookup unless it
    doubles as the output head (tied embeddings, as in SmolLM2). The KV cache is stored at `kv_cache`.
    """
    fields, tensors = header if header is not None else gguf_header(path)
    by_name = {t.name: t for t in tensors}
    tied = "output.weight" not in by_name
    weight_bytes = sum(t.n_bytes for t in tensors)
    matmul = sum(t.n_elements for t in tensors if len(t.dims) > 1)
    embd = by_name.get("token_embd.weight")
    if embd is not None and not tied:
        weight_bytes -= embd.n_bytes
        matmul -= embd.n_elements
    arch = fields["general.architecture"]
    n_layers = int(fields.get(f"{arch}.block_count", 0))

    def per_layer(key: str, default: int) -> list[int]:
        value = fields.get(f"{arch}.{key}", default)
        return [int(v) for v in value] if isinstance(value, list) else [int(value)] * n_layers

    n_head = max(per_layer("attention.head_count", 1) or [1]) or 1
    n_kv = per_layer("attention.head_count_kv", n_head)  # a list where it varies by layer
    k_dim = int(fields.get(f"{arch}.attention.key_length", int(fields.get(f"{arch}.embedding_length", 0)) // n_head))
    v_dim = int(fields.get(f"{arch}.attention.value_length", k_dim))
    kv_per_position = sum(n_kv) * (k_dim + v_dim) * KV_BYTES[kv_cache]
    return {"weight_bytes": weight_bytes, "kv_bytes_per_position": kv_per_position, "matmul_params": matmul}


class LlamaCppRunner:
    """Two llama.cpp contexts on one GGUF, both with the candidate's KV-cache type (`kv_cache`).

    Timed generation runs as deployed: logits for the last position only. The quality pass (`logits`) runs
    each window as one ubatch with logits for every position, as the reference logits were computed. Both
    contexts store the cache at the same precision, so the speed and the scores belong to the same cache.
    """

    def __init__(self, path: Path, threads: int, kv_cache: KvCache = "f32", settings: Settings | None = None) -> None:
        if kv_cache not in KV_BYTES:
            raise CandidateError(f"llama.cpp: unknown KV-cache type {kv_cache!r} (one of {', '.join(KV_BYTES)})")
        chosen = {**LLAMACPP_SETTINGS.default_settings(threads), **(settings or {})}
        self.settings: Settings = chosen
        self.path = path
        self.threads = int(chosen["threads"])
        self.flash_attn = bool(chosen["flash_attn"])
        self.kv_cache: KvCache = kv_cache
        self._header: tuple[dict[str, Any], list[GgufTensorInfo]] | None = None
        self._speed: Any = None
        self._speed_ctx = 0
        self._quality: Any = None
        self._quality_len = 0
        self._speed_context(SPEED_CTX)  # loading the model is part of load time

    def _llama(self, n_ctx: int, n_batch: int, logits_all: bool) -> Any:
        import llama_cpp
        from llama_cpp import Llama

        kv_type = getattr(llama_cpp, f"GGML_TYPE_{self.kv_cache.upper()}")
        try:
            return Llama(str(self.path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=self.threads,
                         n_threads_batch=self.threads, logits_all=logits_all, verbose=False,
                         type_k=kv_type, type_v=kv_type, flash_attn=self.flash_attn)
        except Exception as err:
            raise CandidateError(f"llama.cpp cannot load {self.path.name}: {err}") from err

    def _speed_context(self, need: int) -> Any:
        if self._speed is None or need > self._speed_ctx:
            if self._speed is not None:
                self._speed.close()
            self._speed_ctx = max(SPEED_CTX, need)
            self._speed = self._llama(self._speed_ctx, 512, logits_all=False)
        return self._speed

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.int64)
        t = len(ids)
        if self._quality is None or self._quality_len != t:
            if self._quality is not None:
                self._quality.close()
            # One ubatch of the whole window, as the reference was computed.
            self._quality = self._llama(t, t, logits_all=True)
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

    def _gguf_header(self) -> tuple[dict[str, Any], list[GgufTensorInfo]]:
        if self._header is None:
            try:
                self._header = gguf_header(self.path)
            except Exception as err:
                raise CandidateError(f"llama.cpp: cannot read the GGUF header of {self.path.name}: {err}") from err
        return self._header

    def roofline(self) -> dict[str, int]:
        return gguf_roofline(self.path, self.kv_cache, header=self._gguf_header())

    def runtime_info(self) -> dict[str, Any]:
        import llama_cpp

        return {"llama_cpp_python": llama_cpp.__version__, "threads": self.threads, "settings": self.settings,
                "kv_cache": self.kv_cache,  # the same for the timed and the scored context
                "tensor_types": gguf_tensor_types(self._gguf_header()[1])}


# llama-bench's sweeps that leave the greedy tokens as they are (the KV-cache type changes them: a candidate option).
LLAMACPP_SETTINGS = SettingsSpace(default={"threads": "threads", "flash_attn": False},
                                  alternatives={"threads": [1], "flash_attn": [True]})


@register_runtime(RUNTIME, settings=LLAMACPP_SETTINGS)
def load_llamacpp(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int,
                  settings: Settings | None = None) -> LlamaCppRunner:
    path = Path(candidate_dir) / model_file
    if not path.is_file():
        raise CandidateError(f"{path} does not exist")
    # Recorded by gguf-quantize; a record without it predates the option: f32, its default.
    return LlamaCppRunner(path, threads, details.get("kv_cache", "f32"), settings)
