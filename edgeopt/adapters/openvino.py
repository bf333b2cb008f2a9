"""OpenVINO recipes (ONNX -> IR, NNCF INT8 PTQ, NNCF weight compression) and the OpenVINO runtime.

Named tensors throughout: the runtime is a TensorRunner whose `io_spec` is read off the IR (port
names, element types, partial shapes), for any task. The IR keeps no names for dynamic dimensions,
so `ov-convert` stores the ONNX parent's symbolic names ("batch", "sequence") in the IR's rt_info
(`edgeopt/dim_names`); an IR without them (made elsewhere) gets "dim<axis>".

openvino and nncf are imported inside functions: importing this module only registers.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeopt.errors import CandidateError, short_error
from edgeopt.iospec import Feed, IOSpec, TensorSpec
from edgeopt.recipes import (
    BuildContext,
    BuildOutput,
    ParentArtifact,
    Recipe,
    register_recipe,
    register_runtime,
)
from edgeopt.tuning import Settings, SettingsSpace

IR_FILE = "model.xml"
IR_FORMAT = "openvino-ir"
RUNTIME = "openvino"
DEVICE = "CPU"

# Float precision OpenVINO runs non-quantized ops in. The CPU plugin defaults to bf16 on
# avx512_bf16/AMX machines, so FP32 candidates must ask for f32 explicitly.
InferencePrecision = Literal["f32", "bf16", "f16"]
# Where ov-convert records the ONNX parent's dynamic-dimension names in the IR.
_DIM_NAMES_RT = ["edgeopt", "dim_names"]
# Ops that only reshape or re-type a constant: a MatMul fed through them still multiplies by a weight.
_WEIGHT_PATH_OPS = ("Constant", "Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Multiply", "Subtract",
                    "FakeQuantize", "FakeConvert")


class OvConvertOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    compress_to_fp16: bool = False  # store weights as FP16 (halves the file; compute precision unchanged)
    inference_precision: InferencePrecision = "f32"


class NncfPtqOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subset_size: int = Field(default=64, ge=1)  # capped by the calibration samples available
    # mixed = symmetric weights + asymmetric activations: NNCF's own default for transformers,
    # because GELU/softmax outputs are far from zero-centred.
    preset: Literal["performance", "mixed"] = "mixed"
    fast_bias_correction: bool = True  # NNCF notes the slow variant can hang on transformers
    # SmoothQuant (NNCF's default for transformers) migrates activation outliers into weights. On
    # MiniLM it helps with in-domain calibration but hurts badly with off-domain calibration.
    smooth_quant: bool = True
    # Node-name regexes NNCF leaves in float, e.g. ".*output/dense/MatMul" (the outlier-heavy
    # projections), trading some speed for accuracy.
    ignored_patterns: list[str] = Field(default_factory=list)
    # Leave in float the nodes the task names (`Workload.float_nodes`, on the base's ONNX graph; matched to the
    # IR's operations by their output tensor names), e.g. a detector's head. Off, only to compare.
    keep_task_float_nodes: bool = True
    inference_precision: InferencePrecision = "f32"


WeightMode = Literal["int8_asym", "int8_sym", "int4_sym", "int4_asym"]


class NncfWeightCompressionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: WeightMode = "int8_asym"
    group_size: int | None = Field(default=None, ge=1)  # int4 only; None = NNCF default (128)
    ratio: float | None = Field(default=None, gt=0.0, le=1.0)  # int4 only: share of layers in int4
    inference_precision: InferencePrecision = "f32"

    @model_validator(mode="after")
    def _int4_only_fields(self) -> NncfWeightCompressionOptions:
        # NNCF rejects group_size/ratio for int8 modes; fail at config validation instead.
        if not self.mode.startswith("int4") and (self.group_size is not None or self.ratio is not None):
            raise ValueError(f"group_size and ratio apply only to int4 modes, not {self.mode!r}")
        return self


# ---------------------------------------------------------------------------------------------
# helpers


def _parent_file(ctx: BuildContext, recipe: str, fmt: str) -> Path:
    parent: ParentArtifact | None = ctx.parent
    if parent is None or parent.format != fmt:
        got = "the base model" if parent is None else f"a {parent.format!r} parent"
        raise CandidateError(f"{recipe}: needs a {fmt!r} parent, got {got}")
    path = parent.dir / parent.model_file
    if not path.is_file():
        raise CandidateError(f"{recipe}: parent model file {path} not found")
    return path


def _ov_type(precision: str) -> Any:
    import openvino as ov

    return {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}[precision]


def _weight_types(model: Any) -> dict[str, int]:
    """Element types of the model's large constants: records what compression really did.

    Small constants (shapes, per-channel scales, zero points) are skipped; int4 group scales are
    large enough to be counted.
    """
    counts = Counter(
        op.get_output_element_type(0).get_type_name()
        for op in model.get_ops()
        if op.get_type_name() == "Constant" and int(np.prod(list(op.get_output_shape(0)))) >= 1024
    )
    return dict(sorted(counts.items()))


def _save(model: Any, out_dir: Path, compress_to_fp16: bool) -> None:
    import openvino as ov

    ov.save_model(model, str(out_dir / IR_FILE), compress_to_fp16=compress_to_fp16)


def _versions(with_nncf: bool = False) -> dict[str, str]:
    """Library versions for lineage: NNCF and OpenVINO must be a matching pair."""
    import openvino as ov

    out = {"openvino_version": ov.get_version()}
    if with_nncf:
        import nncf

        out["nncf_version"] = nncf.__version__
    return out


def _port_spec(port: Any, axis_names: dict[str, Any], kind: str, index: int) -> TensorSpec:
    """One port as a TensorSpec: its tensor name, numpy dtype and partial shape."""
    if not port.get_names():
        raise CandidateError(f"openvino: {kind} {index} of the model has no tensor name; it cannot be fed by name")
    name = port.get_any_name()
    try:
        dtype = np.dtype(port.get_element_type().to_dtype()).name
    except Exception as exc:  # a dynamic or exotic element type
        raise CandidateError(f"openvino: {kind} {name!r} has element type {port.get_element_type()}, which this "
                             f"pipeline cannot feed or read") from exc
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise CandidateError(f"openvino: {kind} {name!r} has a dynamic rank; the pipeline needs a fixed rank")
    known = axis_names.get(name, {})
    dims = tuple(
        int(d.get_length()) if d.is_static else str(known.get(str(axis)) or f"dim{axis}")
        for axis, d in enumerate(shape)
    )
    return TensorSpec(name, dtype, dims)


def ir_io_spec(model: Any) -> IOSpec:
    """The I/O spec of an `ov.Model`: port names (`get_any_name`), numpy dtypes, partial shapes.

    Dynamic dimensions take the names ov-convert recorded in the IR's rt_info, else "dim<axis>".
    """
    axis_names: dict[str, Any] = {}
    if model.has_rt_info(_DIM_NAMES_RT):
        try:
            axis_names = json.loads(str(model.get_rt_info(_DIM_NAMES_RT).astype(str)))
        except ValueError:
            axis_names = {}
    return IOSpec(
        inputs=tuple(_port_spec(p, axis_names, "input", i) for i, p in enumerate(model.inputs)),
        outputs=tuple(_port_spec(p, axis_names, "output", i) for i, p in enumerate(model.outputs)),
    )


def _record_dim_names(model: Any, parent: IOSpec) -> None:
    """Store the ONNX parent's dynamic-axis names in the IR (by tensor name), for `ir_io_spec`."""
    names = {t.name: {str(axis): dim for axis, dim in t.dynamic_axes().items()}
             for t in (*parent.inputs, *parent.outputs) if t.dynamic_axes()}
    if names:
        model.set_rt_info(json.dumps(names, sort_keys=True), _DIM_NAMES_RT)


def adopt_names(model: Any, spec: IOSpec) -> None:
    """Name an IR's tensors after `spec`, by position, and record `spec`'s dynamic-axis names.

    For IRs converted from PyTorch elsewhere (Olive): OpenVINO names their outputs after the trace
    ("42") or not at all, while `spec` (the task's PyTorch form) has the names the workload reads.
    """
    for ports, tensors, kind in ((model.inputs, spec.inputs, "inputs"), (model.outputs, spec.outputs, "outputs")):
        if len(ports) != len(tensors):
            raise CandidateError(f"openvino: the model has {len(ports)} {kind}, expected {len(tensors)} "
                                 f"({', '.join(t.name for t in tensors)})")
        for port, t in zip(ports, tensors, strict=True):
            if not port.get_names() or port.get_any_name() != t.name:
                port.get_tensor().set_names({t.name})
    _record_dim_names(model, spec)


def _onnx_spec(src: Path) -> IOSpec | None:
    """The ONNX parent's I/O spec (for its dimension names); None if the graph cannot be read."""
    try:
        import onnx

        from edgeopt.adapters.onnxruntime import onnx_io_spec

        return onnx_io_spec(onnx.load(str(src), load_external_data=False))
    except Exception:  # the names are cosmetic: conversion itself reports a broken file
        return None


def _is_weight(node: Any, depth: int = 0) -> bool:
    """A Constant, possibly reshaped / converted / dequantized on the way (a weight, not an activation)."""
    kind = node.get_type_name()
    if kind == "Constant":
        return True
    if kind not in _WEIGHT_PATH_OPS or depth > 8:
        return False
    return all(_is_weight(node.input_value(i).get_node(), depth + 1) for i in range(node.get_input_size()))


def is_transformer(model: Any) -> bool:
    """Structural check: does the graph contain self-attention?

    Attention is a Softmax plus a MatMul of two activations (Q.K^T, or probabilities.V), or a fused
    ScaledDotProductAttention op. A CNN or an MLP multiplies activations by weights only, so a
    classifier's final MatMul + Softmax does not count. Decides NNCF's `model_type`.
    """
    ops = list(model.get_ops())
    types = {op.get_type_name() for op in ops}
    if "ScaledDotProductAttention" in types:
        return True
    if "Softmax" not in types:
        return False
    return any(
        op.get_type_name() == "MatMul"
        and not any(_is_weight(op.input_value(i).get_node()) for i in range(op.get_input_size()))
        for op in ops
    )


# ---------------------------------------------------------------------------------------------
# recipes


def _build_ov_convert(ctx: BuildContext) -> BuildOutput:
    opts: OvConvertOptions = ctx.options
    src = _parent_file(ctx, "ov-convert", "onnx")
    try:
        import openvino as ov

        model = ov.convert_model(str(src))  # external weights (model.onnx.data) are found beside it
        parent_spec = _onnx_spec(src)
        if parent_spec is not None:
            _record_dim_names(model, parent_spec)
        spec = ir_io_spec(model)
        _save(model, ctx.out_dir, opts.compress_to_fp16)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"ov-convert: {short_error(exc)}") from exc
    return BuildOutput(
        format=IR_FORMAT,
        runtime=RUNTIME,
        precision="fp16" if opts.compress_to_fp16 else "fp32",
        model_file=IR_FILE,
        details={
            "inference_precision": opts.inference_precision,
            "compress_to_fp16": opts.compress_to_fp16,
            "inputs": list(spec.input_names),
            "outputs": list(spec.output_names),
            **_versions(),
        },
        io_spec=spec.to_dict(),
    )


def _calibration_items(ctx: BuildContext, spec: IOSpec) -> list[Feed]:
    """One sample per item, keyed by the IR's input names, at its own length where axes are dynamic.

    For text, trailing padding is trimmed when the sequence axis is dynamic, so activation statistics
    come from real tokens, not from padding rows the model never attends to.
    """
    items = ctx.calibration.feeds(spec, own_length=True)
    if not items:
        raise CandidateError("nncf-ptq-int8: the task gave no calibration samples")
    for item in items:
        problem = spec.feed_problem(item)
        if problem:
            raise CandidateError(f"nncf-ptq-int8: calibration sample does not fit the model: {problem}")
    return [spec.cast(item) for item in items]


def _task_float_ops(ctx: BuildContext, model: Any) -> list[str]:
    """Friendly names of the IR operations the base's task keeps in float (`Workload.float_nodes`).

    The task names nodes of an ONNX graph: the base's, when it is one (an IR converted from a base made
    elsewhere gets none). OpenVINO's ONNX frontend keeps the ONNX tensor names on the ports it converts, so
    each named node is found as the operation producing one of its output tensors.
    """
    import onnx

    from edgeopt.workloads.base import get_workload

    source = ctx.base.path if ctx.base.format == "onnx" else ctx.base.variants.get("onnx")
    if source is None or not Path(source).is_file():
        return []
    graph = onnx.load(str(source), load_external_data=False)
    wanted = set(get_workload(ctx.base.task).float_nodes(graph))
    tensors = {out for node in graph.graph.node if node.name in wanted for out in node.output}
    return sorted({op.get_friendly_name() for op in model.get_ops()
                   if any(port.get_names() & tensors for port in op.outputs())})


def _build_nncf_ptq(ctx: BuildContext) -> BuildOutput:
    opts: NncfPtqOptions = ctx.options
    src = _parent_file(ctx, "nncf-ptq-int8", IR_FORMAT)
    try:
        import nncf
        import openvino as ov

        model = ov.Core().read_model(str(src))
        spec = ir_io_spec(model)
        items = _calibration_items(ctx, spec)
        subset = min(opts.subset_size, len(items))
        # NNCF's transformer scheme (SmoothQuant, no quantization of softmax/LayerNorm inputs...) only
        # where the graph has attention; a CNN gets NNCF's default scheme.
        transformer = is_transformer(model)
        extra: dict[str, Any] = {}
        if not opts.smooth_quant:
            from nncf.quantization.advanced_parameters import (
                AdvancedQuantizationParameters,
                AdvancedSmoothQuantParameters,
            )

            # alpha -1 disables SmoothQuant for MatMuls (NNCF's documented switch).
            extra["advanced_parameters"] = AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)
            )
        task_float = _task_float_ops(ctx, model) if opts.keep_task_float_nodes else []
        if opts.ignored_patterns or task_float:
            # validate=False: a pattern or a name may match nothing in this IR (NNCF would refuse the scope).
            extra["ignored_scope"] = nncf.IgnoredScope(patterns=opts.ignored_patterns, names=task_float,
                                                       validate=False)
        quantized = nncf.quantize(
            model,
            nncf.Dataset(items),  # items are already input dicts: no transform needed
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            subset_size=subset,
            preset=nncf.QuantizationPreset(opts.preset),
            fast_bias_correction=opts.fast_bias_correction,
            **extra,
        )
        # FP16 storage would re-round the dequantize scales; keep them exact.
        _save(quantized, ctx.out_dir, compress_to_fp16=False)
        weight_types = _weight_types(quantized)
        out_spec = ir_io_spec(quantized)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"nncf-ptq-int8: {short_error(exc)}") from exc
    return BuildOutput(
        format=IR_FORMAT,
        runtime=RUNTIME,
        precision="int8",
        model_file=IR_FILE,
        details={
            "inference_precision": opts.inference_precision,
            "subset_size": subset,
            "preset": opts.preset,
            "fast_bias_correction": opts.fast_bias_correction,
            "smooth_quant": opts.smooth_quant,
            "ignored_patterns": list(opts.ignored_patterns),
            "task_float_nodes": task_float,
            "model_type": "transformer" if transformer else "default",
            "weight_types": weight_types,
            **_versions(with_nncf=True),
        },
        io_spec=out_spec.to_dict(),
    )


def _build_nncf_weights(ctx: BuildContext) -> BuildOutput:
    opts: NncfWeightCompressionOptions = ctx.options
    src = _parent_file(ctx, "nncf-weight-compression", IR_FORMAT)
    try:
        import nncf
        import openvino as ov

        model = ov.Core().read_model(str(src))
        compressed = nncf.compress_weights(
            model,
            mode=nncf.CompressWeightsMode(opts.mode),
            group_size=opts.group_size,
            ratio=opts.ratio,
        )
        _save(compressed, ctx.out_dir, compress_to_fp16=False)
        weight_types = _weight_types(compressed)
        out_spec = ir_io_spec(compressed)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"nncf-weight-compression: {short_error(exc)}") from exc
    return BuildOutput(
        format=IR_FORMAT,
        runtime=RUNTIME,
        precision=f"{opts.mode[:4]}-weights",
        model_file=IR_FILE,
        details={
            "inference_precision": opts.inference_precision,
            "mode": opts.mode,
            "group_size": opts.group_size,
            "ratio": opts.ratio,
            "weight_types": weight_types,
            **_versions(with_nncf=True),
        },
        io_spec=out_spec.to_dict(),
    )


register_recipe(
    Recipe(
        name="ov-convert",
        framework="openvino",
        options_model=OvConvertOptions,
        accepts=("onnx",),
        build=_build_ov_convert,
        description="Convert any ONNX model to OpenVINO IR (optionally FP16 weights).",
    )
)
register_recipe(
    Recipe(
        name="nncf-ptq-int8",
        framework="nncf",
        options_model=NncfPtqOptions,
        accepts=(IR_FORMAT,),
        build=_build_nncf_ptq,
        description="NNCF post-training INT8 quantization of weights and activations (NNCF's transformer "
        "scheme where the graph has attention).",
    )
)
register_recipe(
    Recipe(
        name="nncf-weight-compression",
        framework="nncf",
        options_model=NncfWeightCompressionOptions,
        accepts=(IR_FORMAT,),
        build=_build_nncf_weights,
        description="NNCF weight-only compression (INT8 or INT4); activations stay float.",
    )
)


# ---------------------------------------------------------------------------------------------
# runtime


class OpenVINORunner:
    """One compiled model; one InferRequest reused by every call. Named tensors in and out."""

    def __init__(self, xml: Path, inference_precision: str, threads: int, settings: Settings | None = None) -> None:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        self._requested = inference_precision
        chosen = {**OV_SETTINGS.default_settings(threads), **(settings or {})}
        self.settings: Settings = chosen
        core = ov.Core()
        config = {
            props.inference_num_threads(): int(chosen["threads"]),
            props.streams.num(): 1,
            hints.performance_mode(): hints.PerformanceMode.LATENCY,
            hints.inference_precision(): _ov_type(inference_precision),
            hints.enable_cpu_pinning(): bool(chosen["cpu_pinning"]),
        }
        model = core.read_model(str(xml))
        self.io_spec: IOSpec = ir_io_spec(model)  # the read model: the compiled one has no rt_info
        self._compiled = core.compile_model(model, DEVICE, config)
        self._request = self._compiled.create_infer_request()
        self._outputs = [(t.name, t.is_float, port)
                         for t, port in zip(self.io_spec.outputs, self._compiled.outputs, strict=True)]

    def run(self, feed: Feed) -> Feed:
        problem = self.io_spec.feed_problem(feed)
        if problem:
            raise CandidateError(f"openvino: {problem}")
        try:
            results = self._request.infer(self.io_spec.cast(feed))
            return {
                name: np.asarray(results[port], dtype=np.float32) if is_float else np.array(results[port])
                for name, is_float, port in self._outputs
            }
        except Exception as exc:
            raise CandidateError(f"openvino: inference failed: {short_error(exc)}") from exc

    def runtime_info(self) -> dict[str, Any]:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        get = self._compiled.get_property
        # Per-op precisions of the executed graph: shows what really ran in int8 / f32 / bf16.
        runtime_precisions = Counter(
            op.get_rt_info()["runtimePrecision"].astype(str)
            for op in self._compiled.get_runtime_model().get_ops()
            if "runtimePrecision" in op.get_rt_info()
        )
        return {
            "device": DEVICE,
            "requested_inference_precision": self._requested,
            "inference_precision": get(hints.inference_precision()).get_type_name(),
            "threads": int(get(props.inference_num_threads())),
            "streams": int(get(props.streams.num())),
            "performance_hint": str(get(hints.performance_mode())),
            "settings": self.settings,
            "execution_devices": list(get(props.execution_devices())),
            "runtime_precisions": dict(sorted(runtime_precisions.items())),
            "inputs": list(self.io_spec.input_names),
            "openvino_version": ov.get_version(),
        }


# Speed-only settings of the CPU plugin (the inference precision changes the outputs: a candidate option).
OV_SETTINGS = SettingsSpace(default={"threads": "threads", "cpu_pinning": True},
                            alternatives={"threads": [1], "cpu_pinning": [False]})


@register_runtime(RUNTIME, settings=OV_SETTINGS)
def load_openvino(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int,
                  settings: Settings | None = None) -> OpenVINORunner:
    xml = candidate_dir / model_file
    if not xml.is_file():
        raise CandidateError(f"openvino: model file {xml} not found")
    precision = details.get("inference_precision", "f32")
    if precision not in ("f32", "bf16", "f16"):
        raise CandidateError(f"openvino: unknown inference_precision {precision!r}")
    try:
        return OpenVINORunner(xml, precision, threads, settings)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"openvino: cannot compile {xml.name}: {short_error(exc)}") from exc
