"""Apple MLX for causal LMs through mlx-lm: `mlx-lm-convert` (mlx-lm's own conversion and affine 8/4-bit
group quantization of a Hugging Face folder) and the "mlx-lm" runtime (mlx-lm's model and KV cache).

Conversion is `mlx_lm.convert.convert`, as `mlx_lm.convert --hf-path ... -q --q-bits N` runs it: every Linear
and the token embedding (which, tied, is also the output head) become groups of `group_size` weights with a
scale and a bias each, in the model dtype. The folder it writes is an mlx-lm model folder (config.json with
a "quantization" entry, model.safetensors, tokenizer files) that `mlx_lm.load` reads anywhere.

Threads: as for the encoder (`edgeopt/adapters/mlx.py`), MLX's Linux CPU build evaluates on one thread with
the reference BLAS of `mlx-cpu`, whatever `benchmark.threads` says. There its quantized matmuls are slower than
its float ones (SmolLM2-135M, one core: fp32 ~12 decode tok/s, 8- and 4-bit ~6) and fp16/bf16 compute is
~50x slower than fp32; on Apple silicon (Metal) the opposite holds. mlx and mlx_lm are imported inside
functions, so importing this module only registers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.adapters.causal_lm_common import check_window, short_error, source_hf_dir, timed_greedy
from edgeopt.errors import CandidateError
from edgeopt.recipes import (
    BuildContext,
    BuildOutput,
    Generation,
    Recipe,
    Requirements,
    register_recipe,
    register_runtime,
)

if TYPE_CHECKING:
    import mlx.nn

RECIPE = "mlx-lm-convert"
RUNTIME = "mlx-lm"
FORMAT = "mlx-lm"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TASKS = ("causal-lm",)
_MX_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_SHORT_DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}  # as the other runtimes name KV types


class MlxLmConvertOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Float dtype of the stored tensors (and of the quantization scales/biases), which is also the compute and
    # KV-cache dtype. fp32 is the exported HF folder's own dtype (mlx-lm's default for it) and the only fast
    # one on MLX's Linux CPU build; fp16/bf16 are for Apple silicon.
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    quantize_bits: Literal[4, 8] | None = None  # mlx-lm's `-q --q-bits`; None: a float conversion
    # Must divide every matrix's input width (576 and 1536 for SmolLM2-135M: 32 or 64).
    group_size: Literal[32, 64, 128] = 64


def _versions() -> dict[str, str]:
    import mlx.core as mx
    import mlx_lm

    return {"mlx": str(mx.__version__), "mlx_lm": str(mlx_lm.__version__)}


def _matrices(model: mlx.nn.Module) -> dict[str, dict[str, Any]]:
    """Every weight matrix of the model: {path: {"params" (logical count), "bytes", "bits" (None: float)}}.

    A quantized layer's bytes are its packed weight plus its scales and biases.
    """
    import mlx.nn as nn

    out: dict[str, dict[str, Any]] = {}
    for path, m in model.named_modules():
        if isinstance(m, nn.QuantizedLinear | nn.QuantizedEmbedding):
            extra = sum(int(m[k].nbytes) for k in ("scales", "biases", "bias") if k in m)
            out[path] = {"params": int(m.weight.size) * 32 // int(m.bits), "bytes": int(m.weight.nbytes) + extra,
                         "bits": int(m.bits)}
        elif isinstance(m, nn.Linear | nn.Embedding):
            extra = int(m["bias"].nbytes) if "bias" in m else 0
            out[path] = {"params": int(m.weight.size), "bytes": int(m.weight.nbytes) + extra, "bits": None}
    return out


def _check_converted(folder: Path, opts: MlxLmConvertOptions) -> dict[str, Any]:
    """Load the converted folder back with mlx-lm; refuse a "quantized" model that left matrices in float.

    mlx-lm silently skips a layer whose input width is not a multiple of the group size.
    """
    from mlx_lm.utils import compute_bits_per_weight, load_model

    model, config = load_model(folder, lazy=True)
    mats = _matrices(model)
    floats = sorted(p for p, m in mats.items() if m["bits"] is None)
    if opts.quantize_bits is not None and floats:
        raise CandidateError(
            f"{RECIPE}: group_size {opts.group_size} does not divide the input width of {len(floats)} weight "
            f"matrices (e.g. {floats[0]}), which mlx-lm left unquantized; choose a group size that divides them"
        )
    return {
        "quantization": config.get("quantization"),
        "quantized_matrices": len(mats) - len(floats),
        "float_matrices": len(floats),
        "bits_per_weight": round(float(compute_bits_per_weight(model)), 4),
        "tied_embeddings": not any(p.split(".")[-1] == "lm_head" for p in mats),
        "model_type": config.get("model_type"),
    }


def _build_mlx_lm_convert(ctx: BuildContext) -> BuildOutput:
    opts: MlxLmConvertOptions = ctx.options
    hf_dir, source = source_hf_dir(ctx, RECIPE)
    # convert() refuses an existing folder: it writes a fresh sub-folder, whose files are then moved up into
    # out_dir (itself a staging folder the pipeline publishes only on success).
    work = ctx.out_dir / "_mlx_lm_convert"
    try:
        from mlx_lm.convert import convert

        convert(
            str(hf_dir),
            str(work),
            quantize=opts.quantize_bits is not None,
            q_group_size=opts.group_size,
            q_bits=opts.quantize_bits,
            q_mode="affine",
            dtype=_MX_DTYPES[opts.dtype],
        )
        for item in work.iterdir():
            item.replace(ctx.out_dir / item.name)
        work.rmdir()
        if not (ctx.out_dir / MODEL_FILE).is_file():
            raise CandidateError(f"{RECIPE}: mlx-lm wrote no single {MODEL_FILE} (a sharded model?)")
        facts = _check_converted(ctx.out_dir, opts)
    except CandidateError:
        raise
    except Exception as exc:  # mlx-lm raises ValueError for unsupported architectures, OSError, ...
        raise CandidateError(f"{RECIPE}: {short_error(exc)}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bits = opts.quantize_bits
    return BuildOutput(
        format=FORMAT,
        runtime=RUNTIME,
        precision=f"int{bits}-weights" if bits else opts.dtype,
        model_file=MODEL_FILE,
        details={
            "source": source,
            "converter": "mlx_lm.convert.convert",
            "dtype": opts.dtype,
            "quantize_bits": bits,
            "group_size": opts.group_size if bits else None,
            "quantization_mode": "affine" if bits else None,
            **facts,
            **_versions(),
        },
    )


register_recipe(
    Recipe(
        name=RECIPE,
        framework="mlx",
        options_model=MlxLmConvertOptions,
        accepts=("base", "hf"),
        base_formats=("hf",),
        build=_build_mlx_lm_convert,
        description="mlx-lm conversion of a Hugging Face causal LM (mlx_lm.convert), fp32/fp16/bf16, optionally "
        "8/4-bit affine group quantization of every matrix (the tied embedding/output head included).",
        requires=Requirements(modules=("mlx", "mlx_lm")),
        families=("generation",),
        tasks=TASKS,
    )
)


# ---------------------------------------------------------------------------------------------
# runtime


class MlxLmRunner:
    """An mlx-lm model on the default device (the CPU on Linux); a fresh KV cache per generation."""

    def __init__(self, folder: Path, threads: int) -> None:
        import mlx.core as mx
        from mlx_lm.utils import load_model

        self._mx = mx
        self._requested_threads = threads
        self._model, self._config = load_model(folder)  # lazy=False: the weights are evaluated here
        self._model.eval()
        self._dtype = self._activation_dtype()

    def _activation_dtype(self) -> Any:
        """The float dtype of the hidden states (and so of the KV cache): that of the embedding output."""
        import mlx.nn as nn

        for _, m in self._model.named_modules():
            if isinstance(m, nn.QuantizedEmbedding):
                return m.scales.dtype
            if isinstance(m, nn.Embedding):
                return m.weight.dtype
        raise CandidateError("mlx-lm: the model has no token embedding")

    def _forward(self, ids: np.ndarray, cache: list[Any] | None, last_only: bool) -> np.ndarray:
        mx = self._mx
        try:
            out = self._model(mx.array(ids.astype(np.int32)[None]), cache=cache)[0]
            out = (out[-1] if last_only else out).astype(mx.float32)
            # Evaluated here, so the time of the step is the time of its computation (MLX is lazy); the cache
            # arrays are written by the same graph.
            mx.eval(out, [c.state for c in cache] if cache is not None else [])
        except Exception as exc:
            raise CandidateError(f"mlx-lm: inference failed: {short_error(exc)}") from exc
        return np.array(out)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        return self._forward(check_window(input_ids), None, last_only=False)

    def generate(self, prompt_ids: np.ndarray, max_new_tokens: int) -> Generation:
        from mlx_lm.models.cache import make_prompt_cache

        cache: list[Any] = []

        def prefill(ids: np.ndarray) -> np.ndarray:
            cache[:] = make_prompt_cache(self._model)  # a fresh state per generation
            return self._forward(ids, cache, last_only=True)

        def step(token: int, _pos: int) -> np.ndarray:
            return self._forward(np.array([token], dtype=np.int64), cache, last_only=True)

        return timed_greedy(prefill, step, prompt_ids, max_new_tokens)

    def roofline(self) -> dict[str, int]:
        """Bytes a decode step reads: every parameter once (a quantized matrix as its packed weights, scales and
        biases), so a tied embedding counts once, as the output head; an untied embedding table is left out (a
        one-row lookup). And the KV cache per cached position, in the activation dtype."""
        import mlx.nn as nn
        from mlx.utils import tree_flatten

        weight_bytes = sum(int(v.nbytes) for _, v in tree_flatten(self._model.parameters()))
        mats = _matrices(self._model)
        matmul = sum(m["params"] for m in mats.values())
        if any(p.split(".")[-1] == "lm_head" for p in mats):  # untied: the embedding is only looked up
            modules = dict(self._model.named_modules())
            for p, m in mats.items():
                if isinstance(modules[p], nn.Embedding | nn.QuantizedEmbedding):
                    weight_bytes -= m["bytes"]
                    matmul -= m["params"]
        cfg = self._config
        n_heads = int(cfg["num_attention_heads"])
        n_kv = int(cfg.get("num_key_value_heads") or n_heads)
        head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // n_heads)
        kv = int(cfg["num_hidden_layers"]) * 2 * n_kv * head_dim * self._dtype.size
        return {"weight_bytes": int(weight_bytes), "kv_bytes_per_position": kv, "matmul_params": int(matmul)}

    def runtime_info(self) -> dict[str, Any]:
        mx = self._mx
        return {
            **_versions(),
            "device": str(mx.default_device()),
            "dtype": str(self._dtype).removeprefix("mlx.core."),
            # The cache holds K/V in the activation dtype (f32, f16 or bf16), for generation and scoring alike.
            "kv_cache": _SHORT_DTYPES.get(str(self._dtype).removeprefix("mlx.core."),
                                          str(self._dtype).removeprefix("mlx.core.")),
            "quantization": self._config.get("quantization"),
            "requested_threads": self._requested_threads,
            # See the module docstring: no thread setting exists; the CPU stream is one thread.
            "effective_threads": 1,
        }


@register_runtime(RUNTIME)
def load_mlx_lm(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int) -> MlxLmRunner:
    folder = Path(candidate_dir)
    for name in (model_file, CONFIG_FILE):
        if not (folder / name).is_file():
            raise CandidateError(f"mlx-lm: {folder / name} does not exist")
    try:
        return MlxLmRunner(folder, threads)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"mlx-lm: cannot load {folder}: {short_error(exc)}") from exc
