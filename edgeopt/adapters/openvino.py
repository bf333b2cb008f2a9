"""OpenVINO recipes (ONNX -> IR, NNCF INT8 PTQ, NNCF weight compression) and the OpenVINO runtime.

openvino and nncf are imported inside functions: importing this module only registers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeopt.errors import CandidateError, short_error
from edgeopt.recipes import (
    BuildContext,
    BuildOutput,
    ParentArtifact,
    Recipe,
    register_recipe,
    register_runtime,
)

IR_FILE = "model.xml"
IR_FORMAT = "openvino-ir"
RUNTIME = "openvino"
DEVICE = "CPU"

# Float precision OpenVINO runs non-quantized ops in. The CPU plugin defaults to bf16 on
# avx512_bf16/AMX machines, so FP32 candidates must ask for f32 explicitly.
InferencePrecision = Literal["f32", "bf16", "f16"]

# Inputs a BERT-style encoder may declare; token_type_ids gets zeros (single-segment input).
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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


def _input_names(model: Any) -> list[str]:
    """The known input name each model input answers to (IRs may carry several names per port)."""
    names = []
    for port in model.inputs:
        match = [n for n in _KNOWN_INPUTS if n in port.get_names()]
        if not match:
            raise CandidateError(f"model input {sorted(port.get_names())} is not one of {_KNOWN_INPUTS}")
        names.append(match[0])
    return names


# ---------------------------------------------------------------------------------------------
# recipes


def _build_ov_convert(ctx: BuildContext) -> BuildOutput:
    opts: OvConvertOptions = ctx.options
    src = _parent_file(ctx, "ov-convert", "onnx")
    try:
        import openvino as ov

        model = ov.convert_model(str(src))  # external weights (model.onnx.data) are found beside it
        names = _input_names(model)
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
            "inputs": names,
            "outputs": [sorted(p.get_names()) for p in model.outputs],
            **_versions(),
        },
    )


def _calibration_items(model: Any, calibration: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """One sample per item, keyed by the IR's input names.

    Trailing padding is trimmed when the sequence axis is dynamic, so activation statistics come
    from real tokens, not from padding rows the model never attends to.
    """
    ids = np.asarray(calibration.get("input_ids"), dtype=np.int64)
    mask = np.asarray(calibration.get("attention_mask"), dtype=np.int64)
    if ids.ndim != 2 or ids.shape != mask.shape or ids.shape[0] == 0:
        raise CandidateError(
            f"calibration data must be non-empty int64 [N, seq_len] arrays; got {ids.shape} / {mask.shape}"
        )
    names = _input_names(model)
    seq_dynamic = all(p.get_partial_shape()[1].is_dynamic for p in model.inputs)
    items = []
    for row_ids, row_mask in zip(ids, mask, strict=True):
        n = max(int(row_mask.nonzero()[0].max()) + 1, 1) if seq_dynamic and row_mask.any() else len(row_ids)
        arrays = {
            "input_ids": row_ids[None, :n],
            "attention_mask": row_mask[None, :n],
            "token_type_ids": np.zeros((1, n), dtype=np.int64),
        }
        items.append({name: arrays[name] for name in names})
    return items


def _build_nncf_ptq(ctx: BuildContext) -> BuildOutput:
    opts: NncfPtqOptions = ctx.options
    src = _parent_file(ctx, "nncf-ptq-int8", IR_FORMAT)
    try:
        import nncf
        import openvino as ov

        model = ov.Core().read_model(str(src))
        items = _calibration_items(model, ctx.calibration)
        subset = min(opts.subset_size, len(items))
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
        if opts.ignored_patterns:
            extra["ignored_scope"] = nncf.IgnoredScope(patterns=opts.ignored_patterns)
        quantized = nncf.quantize(
            model,
            nncf.Dataset(items),  # items are already input dicts: no transform needed
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=subset,
            preset=nncf.QuantizationPreset(opts.preset),
            fast_bias_correction=opts.fast_bias_correction,
            **extra,
        )
        # FP16 storage would re-round the dequantize scales; keep them exact.
        _save(quantized, ctx.out_dir, compress_to_fp16=False)
        weight_types = _weight_types(quantized)
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
            "model_type": "transformer",
            "weight_types": weight_types,
            **_versions(with_nncf=True),
        },
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
    )


register_recipe(
    Recipe(
        name="ov-convert",
        framework="openvino",
        options_model=OvConvertOptions,
        accepts=("onnx",),
        build=_build_ov_convert,
        description="Convert an ONNX model to OpenVINO IR (optionally FP16 weights).",
    )
)
register_recipe(
    Recipe(
        name="nncf-ptq-int8",
        framework="nncf",
        options_model=NncfPtqOptions,
        accepts=(IR_FORMAT,),
        build=_build_nncf_ptq,
        description="NNCF post-training INT8 quantization of weights and activations.",
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
    """One compiled model; one InferRequest reused by every encode call."""

    def __init__(self, xml: Path, inference_precision: str, threads: int) -> None:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        self._requested = inference_precision
        core = ov.Core()
        config = {
            props.inference_num_threads(): threads,
            props.streams.num(): 1,
            hints.performance_mode(): hints.PerformanceMode.LATENCY,
            hints.inference_precision(): _ov_type(inference_precision),
        }
        self._compiled = core.compile_model(core.read_model(str(xml)), DEVICE, config)
        self._request = self._compiled.create_infer_request()
        self._names = _input_names(self._compiled)
        self._dtypes = [p.get_element_type().to_dtype() for p in self._compiled.inputs]
        outputs = self._compiled.outputs
        named = [p for p in outputs if "sentence_embedding" in p.get_names()]
        self._output = named[0] if named else outputs[0]

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        arrays = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        feed = {
            i: np.ascontiguousarray(arrays[name], dtype=dtype)
            for i, (name, dtype) in enumerate(zip(self._names, self._dtypes, strict=True))
        }
        try:
            out = np.asarray(self._request.infer(feed)[self._output], dtype=np.float32)
        except Exception as exc:
            raise CandidateError(f"openvino: inference failed: {short_error(exc)}") from exc
        if out.ndim == 3:  # last_hidden_state: mean-pool over real tokens
            m = attention_mask.astype(np.float32)[..., None]
            out = (out * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        # Normalising is idempotent for already-normalised outputs and guarantees the contract.
        norms = np.linalg.norm(out, axis=-1, keepdims=True)
        return (out / np.clip(norms, 1e-12, None)).astype(np.float32)

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
            "execution_devices": list(get(props.execution_devices())),
            "runtime_precisions": dict(sorted(runtime_precisions.items())),
            "openvino_version": ov.get_version(),
        }


@register_runtime(RUNTIME)
def load_openvino(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int) -> OpenVINORunner:
    xml = candidate_dir / model_file
    if not xml.is_file():
        raise CandidateError(f"openvino: model file {xml} not found")
    precision = details.get("inference_precision", "f32")
    if precision not in ("f32", "bf16", "f16"):
        raise CandidateError(f"openvino: unknown inference_precision {precision!r}")
    try:
        return OpenVINORunner(xml, precision, threads)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"openvino: cannot compile {xml.name}: {short_error(exc)}") from exc
