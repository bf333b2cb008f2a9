"""Apple MLX: a BERT encoder re-implemented in mlx.core/mlx.nn, FP32/FP16 and 8/4-bit weights.

`mlx-convert` turns the base Hugging Face BERT weights (safetensors) into MLX arrays, optionally
quantized with `mlx.nn.quantize`; the `mlx` runtime runs embeddings -> encoder layers -> mean
pooling -> L2 norm. It is a re-implementation of one architecture, so the recipe serves the
text-embedding task only. The runtime is a TensorRunner with the sentence-encoder interface
(input_ids, attention_mask -> sentence_embedding). mlx is imported inside functions, so importing
this module only registers.

Threads: MLX has no thread-count setting on the CPU. Its Linux CPU build evaluates the graph on
one worker thread per stream and calls the reference (netlib) BLAS bundled in `mlx-cpu`, which
is single-threaded; so every MLX candidate runs on one core whatever `benchmark.threads` says.
The runner reports that in `runtime_info`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.errors import CandidateError
from edgeopt.iospec import Feed, IOSpec, TensorSpec
from edgeopt.recipes import (
    BuildContext,
    BuildOutput,
    Recipe,
    Requirements,
    register_recipe,
    register_runtime,
)

if TYPE_CHECKING:
    import mlx.nn

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "mlx_config.json"
RUNTIME = "mlx"
FORMAT = "mlx"
_HF_CONFIG = "config.json"
_HF_WEIGHTS = "model.safetensors"
# HF BERT tensors the encoder does not use (pooler head, the position-id buffer).
_UNUSED_PREFIXES = ("pooler.", "embeddings.position_ids")
TASK = "text-embedding"
OUTPUT_NAME = "sentence_embedding"


class MlxConvertOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Literal["fp32", "fp16"] = "fp32"  # storage and compute dtype of the float tensors
    quantize_bits: Literal[4, 8] | None = None  # affine weight quantization of the Linear layers
    group_size: Literal[32, 64, 128] = 64  # divides 384 and 1536, MiniLM's Linear input widths
    # The word-embedding table is half of MiniLM's bytes; nn.quantize can pack it too.
    quantize_embeddings: bool = False


class BertShape(BaseModel):
    """The fields of a Hugging Face BertConfig this encoder uses (stored as mlx_config.json)."""

    model_config = ConfigDict(extra="ignore")

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    position_embedding_type: str = "absolute"
    model_type: str = "bert"


class MlxModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bert: BertShape
    dtype: Literal["fp32", "fp16"]
    quantize_bits: int | None
    group_size: int
    quantize_embeddings: bool


def io_spec(shape: BertShape) -> IOSpec:
    """The encoder's tensors: int64 token ids and mask [batch, sequence] -> float32 [batch, hidden]."""
    tokens = ("batch", "sequence")
    return IOSpec(
        inputs=(TensorSpec("input_ids", "int64", tokens), TensorSpec("attention_mask", "int64", tokens)),
        outputs=(TensorSpec(OUTPUT_NAME, "float32", ("batch", shape.hidden_size)),),
    )


def _check_supported(shape: BertShape) -> None:
    problems = []
    if shape.model_type != "bert":
        problems.append(f"model_type {shape.model_type!r}")
    if shape.hidden_act != "gelu":
        problems.append(f"hidden_act {shape.hidden_act!r}")
    if shape.position_embedding_type != "absolute":
        problems.append(f"position_embedding_type {shape.position_embedding_type!r}")
    if shape.hidden_size % shape.num_attention_heads:
        problems.append("hidden_size not divisible by num_attention_heads")
    if problems:
        raise CandidateError(f"mlx-convert supports plain BERT encoders only, not {', '.join(problems)}")


def _build_module(shape: BertShape) -> mlx.nn.Module:
    """An uninitialised-weight BERT encoder whose parameter names mirror Hugging Face's."""
    import mlx.core as mx
    import mlx.nn as nn

    h, heads, eps = shape.hidden_size, shape.num_attention_heads, shape.layer_norm_eps

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Linear(h, h)
            self.key = nn.Linear(h, h)
            self.value = nn.Linear(h, h)

    class Dense(nn.Module):  # HF's "*.output": dense + residual LayerNorm
        def __init__(self, n_in: int) -> None:
            super().__init__()
            self.dense = nn.Linear(n_in, h)
            self.LayerNorm = nn.LayerNorm(h, eps=eps)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.self = SelfAttention()
            self.output = Dense(h)

    class Intermediate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = nn.Linear(h, shape.intermediate_size)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = Attention()
            self.intermediate = Intermediate()
            self.output = Dense(shape.intermediate_size)

        def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
            b, n, _ = x.shape
            sa = self.attention.self

            def split(t: mx.array) -> mx.array:
                return t.reshape(b, n, heads, h // heads).transpose(0, 2, 1, 3)

            ctx = mx.fast.scaled_dot_product_attention(
                split(sa.query(x)), split(sa.key(x)), split(sa.value(x)), scale=(h // heads) ** -0.5, mask=mask
            )
            ctx = ctx.transpose(0, 2, 1, 3).reshape(b, n, h)
            x = self.attention.output.LayerNorm(x + self.attention.output.dense(ctx))
            # nn.gelu is the exact (erf) GELU, as HF's "gelu".
            y = self.output.dense(nn.gelu(self.intermediate.dense(x)))
            return self.output.LayerNorm(x + y)

    class Embeddings(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(shape.vocab_size, h)
            self.position_embeddings = nn.Embedding(shape.max_position_embeddings, h)
            self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, h)
            self.LayerNorm = nn.LayerNorm(h, eps=eps)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = [Layer() for _ in range(shape.num_hidden_layers)]

    class SentenceBert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()

        def __call__(self, input_ids: mx.array, attention_mask: mx.array) -> mx.array:
            e = self.embeddings
            n = input_ids.shape[1]
            # Single-segment input: every token has token type 0.
            x = e.word_embeddings(input_ids) + e.position_embeddings(mx.arange(n)) + e.token_type_embeddings(
                mx.zeros((1, n), dtype=mx.int32)
            )
            x = e.LayerNorm(x)
            keep = attention_mask.astype(mx.bool_)
            mask = keep[:, None, None, :]  # boolean: padded keys get no attention
            for layer in self.encoder.layer:
                x = layer(x, mask)
            # Mean pooling over real tokens, then L2 norm, in float32 whatever the model dtype.
            w = keep.astype(mx.float32)[:, :, None]
            pooled = (x.astype(mx.float32) * w).sum(axis=1) / mx.maximum(w.sum(axis=1), 1e-9)
            return pooled / mx.maximum(mx.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    return SentenceBert()


def _quantize(model: mlx.nn.Module, cfg: MlxModelConfig) -> None:
    import mlx.nn as nn

    if cfg.quantize_bits is None:
        return
    kinds: tuple[type, ...] = (nn.Linear, nn.Embedding) if cfg.quantize_embeddings else (nn.Linear,)
    nn.quantize(
        model,
        group_size=cfg.group_size,
        bits=cfg.quantize_bits,
        class_predicate=lambda _path, m: isinstance(m, kinds),
    )


def _dtype(name: str) -> Any:
    import mlx.core as mx

    return {"fp32": mx.float32, "fp16": mx.float16}[name]


def _hf_weights(src: Path) -> dict[str, Any]:
    import mlx.core as mx

    path = src / _HF_WEIGHTS
    if not path.is_file():
        raise CandidateError(f"mlx-convert needs {path} (single-file safetensors weights)")
    raw = mx.load(str(path))
    if not isinstance(raw, dict):
        raise CandidateError(f"{path} did not load as a dict of tensors")
    weights = {}
    for name, value in raw.items():
        key = name.removeprefix("bert.")  # BertFor* checkpoints nest the encoder under "bert."
        if not key.startswith(_UNUSED_PREFIXES):
            weights[key] = value
    return weights


def _param_count(model: mlx.nn.Module) -> dict[str, int]:
    from mlx.utils import tree_flatten

    flat = tree_flatten(model.parameters())
    return {"tensors": len(flat), "bytes": int(sum(v.nbytes for _, v in flat))}


def _build_mlx_convert(ctx: BuildContext) -> BuildOutput:
    opts: MlxConvertOptions = ctx.options
    if ctx.parent is not None:
        raise CandidateError("mlx-convert builds from the base model only")
    if ctx.base.format != "hf":
        raise CandidateError(f"mlx-convert needs a Hugging Face base model, got format {ctx.base.format!r}")
    src = Path(ctx.base.path)
    try:
        shape = BertShape.model_validate_json((src / _HF_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise CandidateError(f"mlx-convert cannot read {src / _HF_CONFIG}: {exc}") from exc
    _check_supported(shape)
    cfg = MlxModelConfig(bert=shape, dtype=opts.dtype, quantize_bits=opts.quantize_bits,
                         group_size=opts.group_size, quantize_embeddings=opts.quantize_embeddings)
    try:
        import mlx.core as mx
        from mlx.utils import tree_flatten

        model = _build_module(shape)
        # strict: every encoder tensor must come from the checkpoint, with HF's shape.
        model.load_weights(list(_hf_weights(src).items()), strict=True)
        model.set_dtype(_dtype(opts.dtype))
        _quantize(model, cfg)
        mx.eval(model.parameters())
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(ctx.out_dir / WEIGHTS_FILE), dict(tree_flatten(model.parameters())),
                            metadata={"format": "mlx"})
        stats = _param_count(model)
    except CandidateError:
        raise
    except Exception as exc:  # mlx raises ValueError/RuntimeError for shape or key mismatches
        raise CandidateError(f"mlx-convert failed: {type(exc).__name__}: {exc}") from exc
    (ctx.out_dir / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2))
    bits = opts.quantize_bits
    return BuildOutput(
        format=FORMAT,
        runtime=RUNTIME,
        precision=f"int{bits}-weights" if bits else opts.dtype,
        model_file=WEIGHTS_FILE,
        details={
            "dtype": opts.dtype,
            "quantize_bits": bits,
            "group_size": opts.group_size if bits else None,
            "quantized_modules": (["Linear", "Embedding"] if opts.quantize_embeddings else ["Linear"]) if bits else [],
            "quantization_mode": "affine" if bits else None,
            "weights_bytes": stats["bytes"],
            "tensors": stats["tensors"],
            "mlx": mx.__version__,
        },
        io_spec=io_spec(shape).to_dict(),
    )


register_recipe(
    Recipe(
        name="mlx-convert",
        framework="mlx",
        options_model=MlxConvertOptions,
        accepts=("base",),
        base_formats=("hf",),
        build=_build_mlx_convert,
        description="BERT encoder re-implemented in MLX (mean pooling + L2 norm); fp32/fp16 weights, "
        "optionally 8/4-bit affine quantization of the Linear layers via mlx.nn.quantize.",
        requires=Requirements(modules=("mlx",)),
        tasks=(TASK,),  # a BERT re-implementation: it knows sentence encoders only
    )
)


class MlxRunner:
    """Runs the MLX encoder on the default device (the CPU on Linux)."""

    def __init__(self, folder: Path, model_file: str, threads: int) -> None:
        import mlx.core as mx

        self._mx = mx
        self._requested_threads = threads
        cfg = MlxModelConfig.model_validate_json((folder / CONFIG_FILE).read_text())
        self._cfg = cfg
        model = _build_module(cfg.bert)
        model.set_dtype(_dtype(cfg.dtype))
        _quantize(model, cfg)  # same module tree as at build time, so the saved tensors fit
        model.load_weights(str(folder / model_file), strict=True)
        mx.eval(model.parameters())
        model.eval()
        self._model = model
        self.io_spec: IOSpec = io_spec(cfg.bert)

    def run(self, feed: Feed) -> Feed:
        problem = self.io_spec.feed_problem(feed)
        if problem:
            raise CandidateError(f"mlx: {problem}")
        mx = self._mx
        # MLX embeddings take int32 indices; the spec's int64 is what the task feeds.
        out = self._model(mx.array(np.asarray(feed["input_ids"], dtype=np.int32)),
                          mx.array(np.asarray(feed["attention_mask"], dtype=np.int32)))
        mx.eval(out)
        return {OUTPUT_NAME: np.array(out, dtype=np.float32)}

    def runtime_info(self) -> dict[str, Any]:
        mx = self._mx
        return {
            "mlx": mx.__version__,
            "device": str(mx.default_device()),
            "dtype": self._cfg.dtype,
            "quantize_bits": self._cfg.quantize_bits,
            "requested_threads": self._requested_threads,
            # See the module docstring: no thread setting exists; the CPU stream is one thread.
            "effective_threads": 1,
        }


@register_runtime(RUNTIME)
def load_mlx(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int) -> MlxRunner:
    folder = Path(candidate_dir)
    for name in (model_file, CONFIG_FILE):
        if not (folder / name).is_file():
            raise CandidateError(f"mlx: {folder / name} does not exist")
    try:
        return MlxRunner(folder, model_file, threads)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"mlx: cannot load {folder}: {type(exc).__name__}: {exc}") from exc


