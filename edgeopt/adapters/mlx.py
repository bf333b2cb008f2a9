"""Apple MLX: the task's own mlx.nn module, FP32/FP16 and 8/4-bit weights, as one runtime for every task.

The module comes from the task's workload (`Workload.mlx_form`): text-embedding re-implements a BERT
encoder (mean pooling + L2 norm), image-classification ports the bundled EfficientNet-Lite0. This adapter
only converts: `mlx-convert` loads the base folder's weights into that module, casts it to FP32/FP16,
optionally quantizes it with `mlx.nn.quantize`, and saves its parameters beside the base's config.json;
the `mlx` runtime rebuilds the module from that config, loads the saved parameters and runs named tensors
through it. A task without an MLX form fails its candidate with the reason. mlx is imported inside
functions, so importing this module only registers.

Quantization: `mlx.nn.quantize` packs Linear and Embedding layers only (MLX has no quantized
convolution), so a model with convolutions is refused rather than shipped with most of its weights float.

Threads: MLX has no thread-count setting on the CPU. Its Linux CPU build evaluates the graph on
one worker thread per stream and calls the reference (netlib) BLAS bundled in `mlx-cpu`, which
is single-threaded; so every MLX candidate runs on one core whatever `benchmark.threads` says.
The runner reports that in `runtime_info`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.errors import CandidateError
from edgeopt.iospec import Feed, IOSpec
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

    from edgeopt.workloads.base import MlxForm

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "mlx_config.json"
RUNTIME = "mlx"
FORMAT = "mlx"
# The base folder's architecture description, copied into the candidate: what the runtime rebuilds from.
_ARCH_CONFIG = "config.json"
# The task of a candidate whose mlx_config.json names none (built when mlx-convert was text-embedding only).
_LEGACY_TASK = "text-embedding"


class MlxConvertOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Literal["fp32", "fp16"] = "fp32"  # storage and compute dtype of the float tensors
    quantize_bits: Literal[4, 8] | None = None  # affine weight quantization of the Linear layers
    group_size: Literal[32, 64, 128] = 64  # divides 384 and 1536, MiniLM's Linear input widths
    # The word-embedding table is half of MiniLM's bytes; nn.quantize can pack it too.
    quantize_embeddings: bool = False


class MlxModelConfig(BaseModel):
    """mlx_config.json: how the saved parameters were made (the module tree they fit)."""

    model_config = ConfigDict(extra="forbid")

    task: str = _LEGACY_TASK
    dtype: Literal["fp32", "fp16"]
    quantize_bits: int | None
    group_size: int
    quantize_embeddings: bool
    # Candidates of the first mlx-convert kept the BERT shape here (read by the text-embedding form).
    bert: dict[str, Any] | None = None


def _mlx_form(task: str, model_dir: Path, weights: bool) -> MlxForm:
    from edgeopt.workloads.base import get_workload

    return get_workload(task).mlx_form(model_dir, weights)


def _refuse_unquantizable(model: mlx.nn.Module) -> None:
    """nn.quantize would leave convolutions float: refuse a model that has any, with one line saying why."""
    import mlx.nn as nn

    convs = [m for _, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    if not convs:
        return
    total = _param_count(model)["bytes"]
    in_convs = sum(_param_count(m)["bytes"] for m in convs)
    raise CandidateError(f"quantize_bits: mlx.nn.quantize packs Linear/Embedding layers only (MLX has no quantized "
                         f"convolution); {len(convs)} Conv layers hold {in_convs / total:.0%} of this model's weights")


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
    cfg = MlxModelConfig(task=ctx.base.task, dtype=opts.dtype, quantize_bits=opts.quantize_bits,
                         group_size=opts.group_size, quantize_embeddings=opts.quantize_embeddings)
    try:
        import mlx.core as mx
        from mlx.utils import tree_flatten

        form = _mlx_form(ctx.base.task, src, weights=True)
        model = form.module
        model.set_dtype(_dtype(opts.dtype))
        if opts.quantize_bits is not None:
            _refuse_unquantizable(model)
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
    shutil.copy2(src / _ARCH_CONFIG, ctx.out_dir / _ARCH_CONFIG)
    (ctx.out_dir / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2, exclude={"bert"}))
    bits = opts.quantize_bits
    return BuildOutput(
        format=FORMAT,
        runtime=RUNTIME,
        precision=f"int{bits}-weights" if bits else opts.dtype,
        model_file=WEIGHTS_FILE,
        details={
            "task": ctx.base.task,
            "dtype": opts.dtype,
            "quantize_bits": bits,
            "group_size": opts.group_size if bits else None,
            "quantized_modules": (["Linear", "Embedding"] if opts.quantize_embeddings else ["Linear"]) if bits else [],
            "quantization_mode": "affine" if bits else None,
            "weights_bytes": stats["bytes"],
            "tensors": stats["tensors"],
            "mlx": mx.__version__,
        },
        io_spec=form.io_spec.to_dict(),
    )


register_recipe(
    Recipe(
        name="mlx-convert",
        framework="mlx",
        options_model=MlxConvertOptions,
        accepts=("base",),
        base_formats=("hf",),
        build=_build_mlx_convert,
        description="The task's mlx.nn module (text-embedding: BERT encoder + mean pooling + L2 norm; "
        "image-classification: EfficientNet-Lite0, BatchNorm folded); fp32/fp16 weights, optionally 8/4-bit "
        "affine quantization of the Linear (and Embedding) layers via mlx.nn.quantize.",
        requires=Requirements(modules=("mlx",)),
        # Every tensor task: a task without an MLX form (Workload.mlx_form) fails the candidate with the reason.
    )
)


class MlxRunner:
    """Runs the task's MLX module on the default device (the CPU on Linux): named tensors in and out."""

    def __init__(self, folder: Path, model_file: str, threads: int) -> None:
        import mlx.core as mx

        self._mx = mx
        self._requested_threads = threads
        cfg = MlxModelConfig.model_validate_json((folder / CONFIG_FILE).read_text())
        self._cfg = cfg
        form = _mlx_form(cfg.task, folder, weights=False)
        model = form.module
        model.set_dtype(_dtype(cfg.dtype))
        _quantize(model, cfg)  # same module tree as at build time, so the saved tensors fit
        model.load_weights(str(folder / model_file), strict=True)
        mx.eval(model.parameters())
        model.eval()
        self._model = model
        self.io_spec: IOSpec = form.io_spec

    def run(self, feed: Feed) -> Feed:
        spec = self.io_spec
        problem = spec.feed_problem(feed)
        if problem:
            raise CandidateError(f"mlx: {problem}")
        mx = self._mx
        # MLX indexing (embeddings) takes int32; the spec's int64 is what the task feeds.
        args = [mx.array(np.asarray(a, dtype=np.float32 if t.is_float else np.int32))
                for t, a in zip(spec.inputs, spec.cast(feed).values(), strict=True)]
        out = self._model(*args)
        outs = tuple(out) if isinstance(out, tuple | list) else (out,)
        if len(outs) != len(spec.outputs):
            raise CandidateError(f"the MLX module returned {len(outs)} output(s), its spec declares "
                                 f"{len(spec.outputs)} ({', '.join(spec.output_names)})")
        mx.eval(*outs)
        return {t.name: np.array(v, dtype=np.float32) if t.is_float else np.array(v)
                for t, v in zip(spec.outputs, outs, strict=True)}

    def runtime_info(self) -> dict[str, Any]:
        mx = self._mx
        return {
            "mlx": mx.__version__,
            "device": str(mx.default_device()),
            "task": self._cfg.task,
            "dtype": self._cfg.dtype,
            "quantize_bits": self._cfg.quantize_bits,
            "inputs": list(self.io_spec.input_names),
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
