"""ONNX export and ONNX Runtime passes (graph optimization and fusion, dynamic/static INT8), plus the
onnxruntime runtime.

Task-agnostic: the export traces the task's PyTorch form (`Workload.torch_form`), the runtime runs
named tensors and reads its I/O spec off the session; only `ort-transformer-optimize` knows an
architecture (BERT-style text encoders). torch, onnx and onnxruntime are imported inside functions so
importing this module only registers. Every recipe writes one self-contained `model.onnx` (weights
inline) into ctx.out_dir.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeopt.errors import CandidateError, library_errors
from edgeopt.iospec import Feed, IOSpec, TensorSpec
from edgeopt.recipes import (
    BuildContext,
    BuildOutput,
    Recipe,
    register_recipe,
    register_runtime,
)
from edgeopt.tuning import Settings, SettingsSpace

if TYPE_CHECKING:
    import onnx

MODEL_FILE = "model.onnx"
# Activations feeding these come out of GELU: a few channels carry outliers hundreds of times the
# median, so per-tensor 8-bit activation scales wreck them (see _gelu_consumers).
_GELU_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu", "QuickGelu", "Erf", "Tanh"})


# --------------------------------------------------------------------------------------------
# helpers


def _parent_onnx(ctx: BuildContext, recipe: str) -> Path:
    if ctx.parent is None or ctx.parent.format != "onnx":
        got = "the base model" if ctx.parent is None else f"format {ctx.parent.format!r}"
        raise CandidateError(f"{recipe} needs an ONNX parent, got {got}")
    path = ctx.parent.dir / ctx.parent.model_file
    if not path.is_file():
        raise CandidateError(f"{recipe}: parent model {path} does not exist")
    return path


def _linked_into(work: Path, model: Path) -> Path:
    """`model` (and its sibling files, e.g. external data) seen through symlinks inside `work`.

    ONNX Runtime's quantizers write temporary files next to their input (`<model>-inferred.onnx`);
    given the parent's own path, that would write into a published candidate, and leave the file
    there when the build dies (a full disk). Through the links it goes to this build's staging folder.
    """
    work.mkdir(parents=True, exist_ok=True)
    for f in model.parent.iterdir():
        if f.is_file():
            (work / f.name).symlink_to(f.resolve())
    return work / model.name


def _save_inline(model: onnx.ModelProto, path: Path) -> None:
    """Save with every tensor inside the file (models here are far below protobuf's 2 GB limit)."""
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=False)


def _finalize(path: Path, source: Path | None = None) -> onnx.ModelProto:
    """Make `path` one self-contained file, run the ONNX checker on it, and return the model.

    source: where `path` was copied from; external-data side files are resolved next to it.
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    head = onnx.load(str(path), load_external_data=False)
    if any(uses_external_data(t) for t in head.graph.initializer):
        # Pull the weights in from the side file(s) and rewrite one file.
        full = onnx.load(str(source or path), load_external_data=True)
        for t in full.graph.initializer:
            t.ClearField("data_location")
            del t.external_data[:]
        _save_inline(full, path)
        head = full
    onnx.checker.check_model(str(path))
    return head


def _precision(model: onnx.ModelProto) -> str:
    """Best guess of a model's numeric precision, for models this module did not quantize itself."""
    import onnx

    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "DynamicQuantizeLinear", "QAttention"}:
        return "int8"
    dtypes = {t.data_type for t in model.graph.initializer}
    if onnx.TensorProto.FLOAT16 in dtypes and onnx.TensorProto.FLOAT not in dtypes:
        return "fp16"
    return "fp32"


def _quantized_ops(model: onnx.ModelProto) -> dict[str, int]:
    counts = Counter(n.op_type for n in model.graph.node)
    return {
        op: n
        for op, n in sorted(counts.items())
        if "quant" in op.lower() or "Integer" in op or op.startswith(("QLinear", "QAttention", "QEmbed", "QGemm"))
    }


def _heads_and_hidden(ctx: BuildContext) -> tuple[int, int, str | None]:
    """num_heads/hidden_size from the base's config.json; 0 lets the optimizer detect them."""
    candidates = [ctx.base.tokenizer_dir / "config.json"] if ctx.base.tokenizer_dir is not None else []
    if ctx.base.path.is_dir():
        candidates.insert(0, ctx.base.path / "config.json")
    for cfg_path in candidates:
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text())
            except (OSError, ValueError):
                continue
            heads, hidden = cfg.get("num_attention_heads"), cfg.get("hidden_size")
            if isinstance(heads, int) and isinstance(hidden, int):
                return heads, hidden, str(cfg_path)
    return 0, 0, None


# onnxruntime's type strings (NodeArg.type) as numpy dtype names.
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool",
}


def _dim(value: Any, axis: int) -> int | str:
    """A static size, a symbolic dimension's name, or "dim<axis>" for a dimension with neither."""
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value:
        return value
    return f"dim{axis}"


def _session_tensor(arg: Any) -> TensorSpec:
    dtype = _ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise CandidateError(f"ONNX tensor {arg.name!r} has type {arg.type}, which this pipeline cannot feed or read")
    return TensorSpec(arg.name, dtype, tuple(_dim(d, i) for i, d in enumerate(arg.shape or ())))


def _proto_tensor(value: Any) -> TensorSpec:
    import onnx

    if value.type.WhichOneof("value") != "tensor_type":
        raise CandidateError(f"ONNX value {value.name!r} is not a tensor, which this pipeline cannot feed or read")
    tensor = value.type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    except Exception as exc:  # KeyError/ValueError for undefined or exotic element types
        raise CandidateError(f"ONNX tensor {value.name!r} has element type {tensor.elem_type}, which this "
                             f"pipeline cannot feed or read") from exc
    dims = tensor.shape.dim if tensor.HasField("shape") else []
    shape = tuple(
        _dim(d.dim_value if d.HasField("dim_value") else d.dim_param, i) for i, d in enumerate(dims)
    )
    return TensorSpec(value.name, dtype, shape)


def onnx_io_spec(model: Any) -> IOSpec:
    """The I/O spec of an `onnx.ModelProto` or of an `onnxruntime.InferenceSession`.

    Inputs are the graph inputs that are not initializers; symbolic dimensions keep their names
    ("batch", "sequence"), a dimension with neither size nor name becomes "dim<axis>".
    """
    if hasattr(model, "get_inputs"):  # an InferenceSession
        return IOSpec(inputs=tuple(_session_tensor(a) for a in model.get_inputs()),
                      outputs=tuple(_session_tensor(a) for a in model.get_outputs()))
    constants = {t.name for t in model.graph.initializer}
    return IOSpec(inputs=tuple(_proto_tensor(v) for v in model.graph.input if v.name not in constants),
                  outputs=tuple(_proto_tensor(v) for v in model.graph.output))


def served_io_spec(path: Path) -> IOSpec:
    """The spec the onnxruntime runtime will read off `path`: what BuildOutput.io_spec records.

    Loading resolves the graph with ORT's shape inference, which can be more precise than the file's
    declarations (the TorchScript exporter names the embedding width symbolically; ORT infers 384).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # shapes only, no rewrite
    so.intra_op_num_threads = 1
    return onnx_io_spec(ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]))


# --------------------------------------------------------------------------------------------
# onnx-export


class OnnxExportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # 17: first opset with a native LayerNormalization; the TorchScript exporter goes up to 20.
    opset: int = Field(default=17, ge=14, le=20)
    # "torchscript" gives the graph ORT's transformer optimizer fuses fully; see _export_torch.
    exporter: Literal["torchscript", "dynamo"] = "torchscript"


def _export_torch(
    task: str, hf_dir: Path, out: Path, work: Path, opts: OnnxExportOptions, threads: int
) -> tuple[dict[str, Any], IOSpec]:
    """Trace the task's PyTorch form of `hf_dir` into `out`; the details and the graph's I/O spec."""
    import warnings

    import torch

    from edgeopt.workloads.base import get_workload

    # Exporter choice, measured on all-MiniLM-L6-v2 with torch 2.13 / transformers 5.23 / ORT 1.31:
    # the legacy TorchScript exporter (dynamo=False, deprecated but present) with "eager" attention
    # (what torch_form(for_export=True) gives) is the only combination after which onnxruntime's bert
    # optimizer fuses Attention (6/6), EmbedLayerNormalization, SkipLayerNormalization (12) and
    # BiasGelu (6). The dynamo exporter's graph (either attention implementation) and the sdpa trace
    # get no Attention fusion at all, and the dynamo graph also needs opt_level 2 for
    # SkipLayerNormalization. "dynamo" stays available, and is used as a fallback if a later torch
    # removes the TorchScript exporter.
    torch.set_num_threads(max(1, threads))
    form = get_workload(task).torch_form(hf_dir, for_export=True)
    spec = form.io_spec
    missing = [n for n in spec.input_names if n not in form.example]
    if missing:
        raise CandidateError(f"the {task} export example lacks input(s) {', '.join(missing)}")
    # The example in io_spec's input order: module.forward takes the inputs positionally.
    args = tuple(torch.from_numpy(a) for a in spec.cast(form.example).values())
    input_names, output_names = list(spec.input_names), list(spec.output_names)
    tmp = work / MODEL_FILE
    exporter = opts.exporter
    opset = opts.opset
    # inference_mode(False): tracing fails on inference tensors if a caller is in inference mode.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # Tracer and deprecation warnings are expected here and say nothing about the result.
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            try:
                torch.onnx.export(
                    form.module,
                    args,
                    str(tmp),
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=opset,
                    dynamo=False,
                    dynamic_axes=spec.dynamic_axes(),
                )
            except (ImportError, TypeError, NotImplementedError):
                exporter = "dynamo"  # the TorchScript exporter is gone from this torch
        if exporter == "dynamo":
            opset = max(opset, 18)  # the dynamo exporter starts at opset 18
            dims: dict[str, Any] = {}  # one torch.export.Dim per axis name: equal names are equal sizes
            dynamic_shapes = tuple(
                {axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in t.dynamic_axes().items()}
                or None
                for t in spec.inputs
            )
            program = torch.onnx.export(
                form.module,
                args,
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
            )
            if program is None:  # only the TorchScript path returns None
                raise CandidateError("the dynamo exporter returned no ONNX program")
            program.save(str(tmp), external_data=False)
    _finalize(tmp)  # inline any external data written next to tmp
    shutil.move(str(tmp), str(out))
    return {"exporter": exporter, "opset": opset, "torch": torch.__version__}, served_io_spec(out)


def _build_onnx_export(ctx: BuildContext) -> BuildOutput:
    opts: OnnxExportOptions = ctx.options
    out = ctx.out_dir / MODEL_FILE
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    if ctx.parent is None and ctx.base.format == "onnx":
        # A user's ONNX enters the candidate tree as-is (made self-contained if it has side files).
        with library_errors("copying the ONNX base model"):
            shutil.copyfile(ctx.base.path, out)
            head = _finalize(out, source=Path(ctx.base.path))
            spec = served_io_spec(out)
        return BuildOutput(
            format="onnx",
            runtime="onnxruntime",
            precision=_precision(head),
            model_file=MODEL_FILE,
            details={"source": "onnx-base", "copied_from": str(ctx.base.path)},
            io_spec=spec.to_dict(),
        )
    if ctx.parent is not None:
        if ctx.parent.format != "hf":
            raise CandidateError(f"onnx-export needs a Hugging Face parent, got {ctx.parent.format!r}")
        hf_dir, source = ctx.parent.dir, ctx.parent.name
    elif ctx.base.format == "hf":
        hf_dir, source = ctx.base.path, "base"
    else:
        raise CandidateError(f"onnx-export cannot start from a base of format {ctx.base.format!r}")
    work = ctx.out_dir / ".export"
    work.mkdir()
    try:
        with library_errors("ONNX export"):
            details, spec = _export_torch(ctx.base.task, Path(hf_dir), out, work, opts, ctx.threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    details.update({"source": source, "inputs": list(spec.input_names), "outputs": list(spec.output_names)})
    return BuildOutput(format="onnx", runtime="onnxruntime", precision="fp32", model_file=MODEL_FILE,
                       details=details, io_spec=spec.to_dict())


register_recipe(
    Recipe(
        name="onnx-export",
        framework="onnx",
        options_model=OnnxExportOptions,
        accepts=("base", "hf"),
        base_formats=("hf", "onnx"),
        build=_build_onnx_export,
        description="Export the task's PyTorch module (for text-embedding: the encoder with mean pooling and "
        "L2 norm) to one FP32 ONNX file; an ONNX base model is copied.",
    )
)


# --------------------------------------------------------------------------------------------
# ort-transformer-optimize


class OrtOptimizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # 1 (ORT's default for bert): basic, provider-independent ORT passes, then the Python fusions.
    # 2/99 fuse the same operators here and add nothing at run time (the session runs ORT_ENABLE_ALL
    # anyway), but bake in CPU-specific nodes that later quantization passes may not understand.
    opt_level: Literal[0, 1, 2, 99] = 1
    model_type: str = "bert"


def _build_ort_optimize(ctx: BuildContext) -> BuildOutput:
    opts: OrtOptimizeOptions = ctx.options
    src = _parent_onnx(ctx, "ort-transformer-optimize")
    heads, hidden, cfg = _heads_and_hidden(ctx)
    with library_errors("onnxruntime transformer optimizer"):
        from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

        if opts.model_type not in MODEL_TYPES:
            raise CandidateError(
                f"unknown model_type {opts.model_type!r} for the ORT optimizer; known: {', '.join(sorted(MODEL_TYPES))}"
            )
        optimizer = optimize_model(
            str(src),
            model_type=opts.model_type,
            num_heads=heads,
            hidden_size=hidden,
            opt_level=opts.opt_level,
            use_gpu=False,
        )
        stats = {k: int(v) for k, v in optimizer.get_fused_operator_statistics().items() if v}
        out = ctx.out_dir / MODEL_FILE
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        optimizer.save_model_to_file(str(out), use_external_data_format=False)
        model = _finalize(out)
        spec = served_io_spec(out)
    return BuildOutput(
        format="onnx",
        runtime="onnxruntime",
        precision=_precision(model),
        model_file=MODEL_FILE,
        details={
            "fused_operators": stats,
            "opt_level": opts.opt_level,
            "model_type": opts.model_type,
            "num_heads": heads,
            "hidden_size": hidden,
            "shape_source": cfg or "detected from graph",
        },
        io_spec=spec.to_dict(),
    )


register_recipe(
    Recipe(
        name="ort-transformer-optimize",
        framework="onnxruntime",
        options_model=OrtOptimizeOptions,
        accepts=("onnx",),
        build=_build_ort_optimize,
        description="onnxruntime.transformers graph fusion (Attention, SkipLayerNorm, Gelu, ...) of a BERT-style "
        "text encoder.",
        # The fusions match BERT-style attention/embedding subgraphs; other architectures get nothing.
        tasks=("text-embedding",),
    )
)


# --------------------------------------------------------------------------------------------
# ort-graph-optimize


class OrtGraphOptimizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # onnxruntime's own offline graph optimization, for any graph. basic: constant folding and
    # redundant-node removal (provider-independent); extended: also fusions into contrib ops
    # (Gelu, LayerNorm, Attention, MatMul+Add, ...); all: also layout-specific kernels (NCHWc) tied to
    # this CPU's instruction set, which ORT documents as not portable to other machines.
    level: Literal["basic", "extended", "all"] = "extended"


def _build_ort_graph_optimize(ctx: BuildContext) -> BuildOutput:
    opts: OrtGraphOptimizeOptions = ctx.options
    src = _parent_onnx(ctx, "ort-graph-optimize")
    out = ctx.out_dir / MODEL_FILE
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    work = ctx.out_dir / ".work"
    work.mkdir()
    try:
        with library_errors("onnxruntime graph optimization"):
            import onnx
            import onnxruntime as ort

            levels = {
                "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            }
            tmp = work / MODEL_FILE
            so = ort.SessionOptions()
            so.graph_optimization_level = levels[opts.level]
            so.optimized_model_filepath = str(tmp)  # creating the session writes the optimized graph
            so.intra_op_num_threads = max(1, ctx.threads)
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
            if not tmp.is_file():
                raise CandidateError("onnxruntime wrote no optimized model")
            before = Counter(n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node)
            model = _finalize(tmp)
            shutil.move(str(tmp), str(out))
            spec = served_io_spec(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    after = Counter(n.op_type for n in model.graph.node)
    return BuildOutput(
        format="onnx",
        runtime="onnxruntime",
        precision=_precision(model),
        model_file=MODEL_FILE,
        details={
            "level": opts.level,
            "onnxruntime": ort.__version__,
            "nodes_before": sum(before.values()),
            "nodes_after": sum(after.values()),
            # Operators the optimization introduced (fused contrib ops), with their counts.
            "new_ops": {op: n for op, n in sorted(after.items()) if op not in before},
        },
        io_spec=spec.to_dict(),
    )


register_recipe(
    Recipe(
        name="ort-graph-optimize",
        framework="onnxruntime",
        options_model=OrtGraphOptimizeOptions,
        accepts=("onnx",),
        build=_build_ort_graph_optimize,
        description="onnxruntime's own offline graph optimization (basic/extended/all levels) of any ONNX graph.",
    )
)


# --------------------------------------------------------------------------------------------
# ort-dynamic-int8


class OrtDynamicInt8Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight_type: Literal["qint8", "quint8"] = "qint8"
    # Measured on MiniLM (8 sentences, min cosine vs FP32): per-tensor 0.93 (qint8) / 0.97 (quint8),
    # per-channel 0.991 for both.
    per_channel: bool = True
    # 7-bit weights only help CPUs without VNNI; with per-tensor scales it cost 0.1-0.15 cosine here.
    reduce_range: bool = False


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[name]


def _build_ort_dynamic(ctx: BuildContext) -> BuildOutput:
    opts: OrtDynamicInt8Options = ctx.options
    out = ctx.out_dir / MODEL_FILE
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    work = ctx.out_dir / ".work"
    src = _linked_into(work, _parent_onnx(ctx, "ort-dynamic-int8"))
    with library_errors("onnxruntime dynamic quantization"):
        import onnx
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(
            str(src),
            str(out),
            weight_type=_quant_type(opts.weight_type),
            per_channel=opts.per_channel,
            reduce_range=opts.reduce_range,
            use_external_data_format=False,
            # Fused contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape inference;
            # their outputs are float, which is what this tells the quantizer.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        shutil.rmtree(work)
        model = _finalize(out)
        spec = served_io_spec(out)
    return BuildOutput(
        format="onnx",
        runtime="onnxruntime",
        precision="int8",
        model_file=MODEL_FILE,
        details={
            "mode": "dynamic",
            "weight_type": opts.weight_type,
            "per_channel": opts.per_channel,
            "reduce_range": opts.reduce_range,
            "quantized_ops": _quantized_ops(model),
        },
        io_spec=spec.to_dict(),
    )


register_recipe(
    Recipe(
        name="ort-dynamic-int8",
        framework="onnxruntime",
        options_model=OrtDynamicInt8Options,
        accepts=("onnx",),
        build=_build_ort_dynamic,
        description="onnxruntime dynamic quantization: INT8 weights, activations quantized at run time.",
    )
)


# --------------------------------------------------------------------------------------------
# ort-static-int8


class OrtStaticInt8Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    # Per-channel weights: min cosine 0.986 vs 0.985 (unfused parent), 0.992 vs 0.989 (fused).
    per_channel: bool = True
    # ORT's guidance for x86 CPUs (VNNI or not): uint8 activations, int8 weights.
    activation_type: Literal["quint8", "qint8"] = "quint8"
    weight_type: Literal["qint8", "quint8"] = "qint8"
    reduce_range: bool = False
    calibration_samples: int = Field(default=64, ge=1)
    # MatMul: the dense layers (only those with constant weights, see MatMulConstBOnly);
    # Gather: the embedding tables, most of MiniLM's bytes.
    # Empty: every op type ORT can quantize (what a CNN wants; see the effnet pipeline in params.yaml).
    op_types: list[str] = Field(default_factory=lambda: ["MatMul", "Gather"])
    # Keep the MatMuls fed by GELU in float: quantizing them alone drops MiniLM's min cosine from
    # 0.99 to 0.90 (layer 0's FFN output projection alone costs 0.04).
    keep_fp32_after_gelu: bool = True
    # Keep in float the nodes the task names for this graph (`Workload.float_nodes`): a detector's head, whose
    # final concat of box coordinates (0..input size) and class scores (0..1) rounds every score to 0 under one
    # 8-bit scale. Off, only to show that collapse; tasks that name none are unaffected.
    keep_task_float_nodes: bool = True
    nodes_to_exclude: list[str] = Field(default_factory=list)


def _gelu_consumers(model: onnx.ModelProto) -> list[str]:
    """MatMuls whose activation input comes from a GELU (fused op, or the Erf/Tanh formula)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = {t.name for t in model.graph.initializer}

    def from_gelu(tensor: str, depth: int = 0) -> bool:
        node = producer.get(tensor)
        if node is None or depth > 4:
            return False
        if node.op_type in _GELU_OPS:
            return True
        if node.op_type not in ("Mul", "Add", "Div"):  # the arithmetic around Erf in x*0.5*(1+erf(x/√2))
            return False
        return any(from_gelu(i, depth + 1) for i in node.input if i and i not in constants)

    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input and from_gelu(n.input[0])]


def _task_float_nodes(ctx: BuildContext, model: onnx.ModelProto) -> list[str]:
    """The nodes of `model` the base's task keeps in float (`Workload.float_nodes`), that the graph has."""
    from edgeopt.workloads.base import get_workload

    names = {n.name for n in model.graph.node}
    return [n for n in get_workload(ctx.base.task).float_nodes(model) if n in names]


def _calibration_batches(feeds: list[Feed], spec: IOSpec, batch_size: int = 8) -> list[Feed]:
    """The task's per-sample feeds, consecutive ones concatenated `batch_size` at a time while shapes match.

    Small batches: MinMax/histogram calibrators aggregate across them, memory stays low. Only where every
    input's leading axis is symbolic: a static one (an LSTM's state [1, 1, 128]) takes one sample per call.
    """
    if not all(t.shape and isinstance(t.shape[0], str) for t in spec.inputs):
        batch_size = 1
    batches: list[Feed] = []
    group: list[Feed] = []
    for feed in feeds:
        problem = spec.feed_problem(feed)
        if problem:
            raise CandidateError(f"calibration feed does not fit the model: {problem}")
        feed = spec.cast(feed)
        if group and (len(group) == batch_size or any(feed[n].shape != group[0][n].shape for n in feed)):
            batches.append({n: np.concatenate([f[n] for f in group]) for n in spec.input_names})
            group = []
        group.append(feed)
    if group:
        batches.append({n: np.concatenate([f[n] for f in group]) for n in spec.input_names})
    return batches


def _seq_len(feeds: list[Feed], spec: IOSpec) -> int | None:
    """The longest axis 1 of the first input over the feeds (the sequence length of text), if it has one."""
    first = spec.inputs[0].name if spec.inputs else None
    lengths = [np.shape(f[first])[1] for f in feeds if first in f and np.ndim(f[first]) >= 2]
    return int(max(lengths)) if lengths else None


def _build_ort_static(ctx: BuildContext) -> BuildOutput:
    opts: OrtStaticInt8Options = ctx.options
    src = _parent_onnx(ctx, "ort-static-int8")
    out = ctx.out_dir / MODEL_FILE
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    work = ctx.out_dir / ".work"
    work.mkdir()
    try:
        with library_errors("onnxruntime static quantization"):
            import onnx
            from onnxruntime.quantization import (
                CalibrationDataReader,
                CalibrationMethod,
                QuantFormat,
                quantize_static,
            )
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = work / "preprocessed.onnx"
            try:
                # auto_merge: symbolic shape inference otherwise stops on the exported mask arithmetic.
                quant_pre_process(str(src), str(pre), auto_merge=True)
                shape_inference = "symbolic"
            except Exception:  # symbolic inference gives up on some graphs; ONNX's own still helps
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                shape_inference = "onnx"
            pre_model = onnx.load(str(pre))
            excluded = list(opts.nodes_to_exclude)
            if opts.keep_fp32_after_gelu:
                excluded += [n for n in _gelu_consumers(pre_model) if n not in excluded]
            task_float = _task_float_nodes(ctx, pre_model) if opts.keep_task_float_nodes else []
            excluded += [n for n in task_float if n not in excluded]
            spec = onnx_io_spec(pre_model)
            # The benchmark's fixed shape: static scales are for what the candidate will run.
            feeds = ctx.calibration.feeds(spec, own_length=False)[: opts.calibration_samples]
            if not feeds:
                raise CandidateError("static quantization needs calibration data; the task's calibration set is empty")
            batches = _calibration_batches(feeds, spec)

            class Reader(CalibrationDataReader):  # defined here: its base class is imported lazily
                def __init__(self) -> None:
                    self._it = iter(batches)

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self._it, None)

                def rewind(self) -> None:
                    self._it = iter(batches)

            method = {
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[opts.calibrate_method]
            quantize_static(
                str(pre),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=opts.op_types,
                per_channel=opts.per_channel,
                reduce_range=opts.reduce_range,
                activation_type=_quant_type(opts.activation_type),
                weight_type=_quant_type(opts.weight_type),
                nodes_to_exclude=excluded or None,
                calibrate_method=method,
                use_external_data_format=False,
                extra_options={
                    # Activation x activation MatMuls (QK^T, attention x V) stay float.
                    "MatMulConstBOnly": True,
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                },
            )
            model = _finalize(out)
            served = served_io_spec(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildOutput(
        format="onnx",
        runtime="onnxruntime",
        precision="int8",
        model_file=MODEL_FILE,
        details={
            "mode": "static-qdq",
            "calibrate_method": opts.calibrate_method,
            "per_channel": opts.per_channel,
            "activation_type": opts.activation_type,
            "weight_type": opts.weight_type,
            "reduce_range": opts.reduce_range,
            "op_types": opts.op_types,
            "calibration_samples": len(feeds),
            "calibration_seq_len": _seq_len(feeds, spec),
            "excluded_nodes": excluded,
            "task_float_nodes": task_float,
            "shape_inference": shape_inference,
            "quantized_ops": _quantized_ops(model),
        },
        io_spec=served.to_dict(),
    )


register_recipe(
    Recipe(
        name="ort-static-int8",
        framework="onnxruntime",
        options_model=OrtStaticInt8Options,
        accepts=("onnx",),
        build=_build_ort_static,
        description="onnxruntime static QDQ quantization calibrated on the calibration set.",
    )
)


# --------------------------------------------------------------------------------------------
# runtime


class OrtRunner:
    """One InferenceSession on the CPU provider, sequential, with a fixed intra-op thread count.

    Named tensors in and out; `io_spec` is read off the session (what the graph declares).
    """

    def __init__(self, model_path: Path, threads: int, settings: Settings | None = None) -> None:
        import onnxruntime as ort

        chosen = {**ORT_SETTINGS.default_settings(threads), **(settings or {})}
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(chosen["intra_op_threads"])
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = _ORT_LEVELS[chosen["graph_optimization_level"]](ort)
        # Spinning trades idle CPU for wake-up latency: on 2 cores it can cost as much as it saves.
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if chosen["allow_spinning"] else "0")
        self._ort_version = ort.__version__
        self._threads = int(chosen["intra_op_threads"])
        self.settings: Settings = chosen
        self._session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        self.io_spec: IOSpec = onnx_io_spec(self._session)

    def run(self, feed: Feed) -> Feed:
        spec = self.io_spec
        problem = spec.feed_problem(feed)
        if problem:
            raise CandidateError(f"onnxruntime: {problem}")
        outs = self._session.run(list(spec.output_names), spec.cast(feed))
        return {
            t.name: np.asarray(v, dtype=np.float32) if t.is_float else np.asarray(v)
            for t, v in zip(spec.outputs, outs, strict=True)
        }

    def runtime_info(self) -> dict[str, Any]:
        return {
            "onnxruntime": self._ort_version,
            "providers": self._session.get_providers(),
            "intra_op_threads": self._threads,
            "settings": self.settings,
            "inputs": list(self.io_spec.input_names),
        }


_ORT_LEVELS: dict[str, Any] = {
    "basic": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# The session options Olive's OrtSessionParamsTuning searches that leave the outputs as they are.
ORT_SETTINGS = SettingsSpace(
    default={"intra_op_threads": "threads", "allow_spinning": True, "graph_optimization_level": "all"},
    alternatives={"intra_op_threads": [1], "allow_spinning": [False], "graph_optimization_level": ["extended"]},
)


@register_runtime("onnxruntime", settings=ORT_SETTINGS)
def load_onnxruntime(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int,
                     settings: Settings | None = None) -> OrtRunner:
    path = Path(candidate_dir) / model_file
    if not path.is_file():
        raise CandidateError(f"{path} does not exist")
    with library_errors(f"loading {path.name} in onnxruntime"):
        return OrtRunner(path, threads, settings)
