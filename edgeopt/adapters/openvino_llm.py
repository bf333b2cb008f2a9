"""OpenVINO for causal LMs: a stateful KV-cache IR from the Hugging Face model, NNCF weight compression
(INT8 / INT4, optionally data-aware AWQ and scale estimation), and the "openvino-causal-lm" runtime.

The IR is exported with `openvino.convert_model` from a torch module that takes and returns the KV cache as
tensors, then made stateful (KV pairs become internal variables, as optimum-intel exports do), with batch 1.
optimum-intel is not used: 1.27 (the last release without torchvision) needs transformers < 4.58, and this
project runs transformers 5. openvino and nncf are imported inside functions.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeopt.adapters.causal_lm_common import (
    INPUTS,
    LOGITS,
    GraphConst,
    GraphOp,
    check_window,
    example_inputs,
    load_kv_module,
    past_names,
    present_names,
    short_error,
    source_hf_dir,
    timed_greedy,
    weight_reads,
)
from edgeopt.errors import CandidateError
from edgeopt.iospec import stack_feeds
from edgeopt.recipes import (
    BuildContext,
    BuildOutput,
    Calibration,
    Generation,
    Recipe,
    Requirements,
    register_recipe,
    register_runtime,
)

IR_FILE = "openvino_model.xml"
IR_FORMAT = "openvino-ir-llm"
RUNTIME = "openvino-causal-lm"
DEVICE = "CPU"
TASKS = ("causal-lm",)

# The CPU plugin computes in bf16 by default on avx512_bf16/AMX machines: FP32 candidates ask for f32.
InferencePrecision = Literal["f32", "bf16", "f16"]
# KV-cache storage in the CPU plugin, one for timing and scoring: below f32, the quality windows are fed token
# by token so they read the cache as decoding does (see OpenVINOCausalLM.logits). Its default is u8 on this
# CPU; f32 unless asked otherwise, as every other runtime's cache. "auto" leaves the plugin's default.
# runtime_info records what was used ("kv_cache") and how the windows were scored ("quality_windows").
KvCachePrecision = Literal["f32", "f16", "u8", "auto"]


class OvCausalLMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight_format: Literal["fp16", "fp32"] = "fp16"  # storage; fp16 weights are widened at load
    inference_precision: InferencePrecision = "f32"
    kv_cache_precision: KvCachePrecision = "f32"


class NncfLlmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["int8_asym", "int8_sym", "int4_sym", "int4_asym"] = "int8_asym"
    # int4 only. None = NNCF's default (128). Widths that the group size does not divide (576 for
    # SmolLM2-135M) follow group_size_fallback; NNCF's own default there is to fail.
    group_size: int | None = Field(default=None, ge=1)
    group_size_fallback: Literal["adjust", "ignore", "error"] = "adjust"
    ratio: float | None = Field(default=None, gt=0.0, le=1.0)  # int4 only: share of layers in int4
    awq: bool = False  # int4 only; data-aware (needs calibration windows)
    scale_estimation: bool = False  # int4 only; data-aware
    subset_size: int = Field(default=128, ge=1)  # calibration windows used, capped by those available
    inference_precision: InferencePrecision = "f32"
    kv_cache_precision: KvCachePrecision = "f32"

    @model_validator(mode="after")
    def _int4_only(self) -> NncfLlmOptions:
        # NNCF rejects these for int8 modes; fail at config validation instead of at build time.
        if not self.mode.startswith("int4"):
            used = [k for k in ("group_size", "ratio") if getattr(self, k) is not None]
            used += [k for k in ("awq", "scale_estimation") if getattr(self, k)]
            if used:
                raise ValueError(f"{', '.join(used)} apply only to int4 modes, not {self.mode!r}")
        return self

    @property
    def data_aware(self) -> bool:
        return self.awq or self.scale_estimation


# ---------------------------------------------------------------------------------------------
# helpers


def _parent_ir(ctx: BuildContext, recipe: str) -> Path:
    parent = ctx.parent
    if parent is None or parent.format != IR_FORMAT:
        got = "the base model" if parent is None else f"a {parent.format!r} parent"
        raise CandidateError(f"{recipe}: needs a {IR_FORMAT!r} parent, got {got}")
    path = parent.dir / parent.model_file
    if not path.is_file():
        raise CandidateError(f"{recipe}: parent model file {path} not found")
    return path


def _versions(with_nncf: bool = False) -> dict[str, str]:
    import openvino as ov

    out = {"openvino_version": ov.get_version()}
    if with_nncf:
        import nncf

        out["nncf_version"] = nncf.__version__
    return out


def _weight_types(model: Any) -> dict[str, int]:
    """Element types of the model's large constants: what compression really did (int4 group scales count)."""
    counts = Counter(
        op.get_output_element_type(0).get_type_name()
        for op in model.get_ops()
        if op.get_type_name() == "Constant" and int(np.prod(list(op.get_output_shape(0)))) >= 1024
    )
    return dict(sorted(counts.items()))


def _add_beam_idx(model: Any, past_params: list[Any]) -> None:
    """Gather every past KV tensor by a `beam_idx` input, as optimum-intel does.

    Greedy decoding feeds [0]; the point is the graph shape: the CPU plugin fuses
    ReadValue -> Gather -> Concat -> SDPA into its KV-cache attention (cache kept inside the plugin), and
    OpenVINO GenAI expects this input.
    """
    import openvino as ov
    import openvino.opset13 as ops

    beam_idx = ops.parameter(ov.PartialShape([1]), ov.Type.i32, name="beam_idx")
    beam_idx.output(0).get_tensor().set_names({"beam_idx"})
    model.add_parameters([beam_idx])
    for param in past_params:
        consumers = param.output(0).get_target_inputs()
        gathered = ops.gather(param.output(0), beam_idx, ops.constant(np.int64(0)))
        for consumer in consumers:
            consumer.replace_source_output(gathered.output(0))
    model.validate_nodes_and_infer_types()


def _init_states_empty(model: Any) -> None:
    """Give every ReadValue an explicit initial value: an empty [1, heads, 0, dim] cache.

    Without one, the CPU plugin's fused KV-cache attention fails to compile ("ReadValue contains less
    parent edges"); optimum-intel does the same for dynamic-batch models.
    """
    import openvino.opset13 as ops

    for op in model.get_ops():
        if op.get_type_name() == "ReadValue":
            dims = [d.get_min_length() for d in op.get_output_partial_shape(0)]  # the dynamic past axis -> 0
            zero = ops.constant(np.zeros((), dtype=op.get_output_element_type(0).to_dtype()))
            op.set_arguments([ops.broadcast(zero, ops.constant(np.array(dims, dtype=np.int64)))])
    model.validate_nodes_and_infer_types()


def _make_stateful_ir(hf_dir: Path, threads: int) -> tuple[Any, dict[str, int]]:
    """Convert the HF model to an ov.Model with batch 1 and the KV cache held in state variables."""
    import warnings

    import openvino as ov
    import torch
    from openvino._offline_transformations import apply_make_stateful_transformation

    module, shape = load_kv_module(hf_dir, threads)
    n = shape["n_layers"]
    # inference_mode(False): tracing fails on inference tensors if a caller is in inference mode.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings are expected and say nothing about the result
        model = ov.convert_model(module, example_input=example_inputs(shape))
    in_names, out_names = [*INPUTS, *past_names(n)], [LOGITS, *present_names(n)]
    if len(model.inputs) != len(in_names) or len(model.outputs) != len(out_names):
        raise CandidateError(
            f"ov-causal-lm: converted model has {len(model.inputs)} inputs / {len(model.outputs)} outputs, "
            f"expected {len(in_names)} / {len(out_names)}"
        )
    for port, name in zip(model.inputs, in_names, strict=True):
        port.get_tensor().set_names({name})
        port.get_node().set_friendly_name(name)
    for port, name in zip(model.outputs, out_names, strict=True):
        port.get_tensor().set_names({name})
    # Batch 1: the state's initial value is then a plain [1, heads, 0, dim] tensor.
    kv = ov.PartialShape([1, shape["kv_heads"], -1, shape["head_dim"]])
    model.reshape({name: (kv if name.startswith("past_") else ov.PartialShape([1, -1])) for name in in_names})
    # Parameters and results are in input/output order: past i pairs with present i.
    pairs = list(zip(model.get_parameters()[len(INPUTS) :], model.get_results()[1:], strict=True))
    _add_beam_idx(model, [p for p, _ in pairs])
    apply_make_stateful_transformation(model, pairs)
    _init_states_empty(model)
    return model, shape


def _calibration_items(model: Any, calibration: Calibration, subset: int) -> list[dict[str, np.ndarray]]:
    """Full-window prompt passes keyed by the IR's inputs; NNCF resets the state before each one."""
    ids = np.asarray(stack_feeds(calibration.feeds(), "input_ids"), dtype=np.int64)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise CandidateError(f"calibration input_ids must be non-empty int64 [N, T] windows, got {ids.shape}")
    names = {name for port in model.inputs for name in port.get_names()}
    items = []
    for row in ids[:subset]:
        t = len(row)
        item = {
            "input_ids": row[None],
            "attention_mask": np.ones((1, t), dtype=np.int64),
            "position_ids": np.arange(t, dtype=np.int64)[None],
        }
        if "beam_idx" in names:  # optimum-exported IRs reorder the cache by beam
            item["beam_idx"] = np.zeros(1, dtype=np.int32)
        items.append({k: v for k, v in item.items() if k in names})
    return items


# ---------------------------------------------------------------------------------------------
# recipes


def _build_ov_causal_lm(ctx: BuildContext) -> BuildOutput:
    opts: OvCausalLMOptions = ctx.options
    hf_dir, source = source_hf_dir(ctx, "ov-causal-lm")
    try:
        import openvino as ov

        model, shape = _make_stateful_ir(hf_dir, ctx.threads)
        ov.save_model(model, str(ctx.out_dir / IR_FILE), compress_to_fp16=opts.weight_format == "fp16")
        weight_types = _weight_types(ov.Core().read_model(str(ctx.out_dir / IR_FILE)))
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"ov-causal-lm: {short_error(exc)}") from exc
    return BuildOutput(
        format=IR_FORMAT,
        runtime=RUNTIME,
        precision=opts.weight_format,
        model_file=IR_FILE,
        details={
            "source": source,
            "exporter": "openvino.convert_model (TorchScript trace) + make_stateful",
            "stateful": True,
            "weight_format": opts.weight_format,
            "inference_precision": opts.inference_precision,
            "kv_cache_precision": opts.kv_cache_precision,
            "weight_types": weight_types,
            **shape,
            **_versions(),
        },
    )


def _build_nncf_llm(ctx: BuildContext) -> BuildOutput:
    opts: NncfLlmOptions = ctx.options
    src = _parent_ir(ctx, "nncf-llm-weight-compression")
    try:
        import nncf
        import openvino as ov
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

        model = ov.Core().read_model(str(src))
        extra: dict[str, Any] = {}
        n_items, items = 0, []
        if opts.data_aware:
            items = _calibration_items(model, ctx.calibration, opts.subset_size)
            n_items = len(items)
            extra.update(dataset=nncf.Dataset(items), subset_size=n_items, awq=opts.awq,
                         scale_estimation=opts.scale_estimation)
        if opts.mode.startswith("int4"):
            extra["advanced_parameters"] = AdvancedCompressionParameters(
                group_size_fallback_mode=GroupSizeFallbackMode(opts.group_size_fallback)
            )
        compressed = nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode(opts.mode), group_size=opts.group_size, ratio=opts.ratio, **extra
        )
        # FP16 storage would re-round the dequantization scales; keep them as NNCF wrote them.
        ov.save_model(compressed, str(ctx.out_dir / IR_FILE), compress_to_fp16=False)
        weight_types = _weight_types(compressed)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"nncf-llm-weight-compression: {short_error(exc)}") from exc
    return BuildOutput(
        format=IR_FORMAT,
        runtime=RUNTIME,
        precision=f"{opts.mode[:4]}-weights",
        model_file=IR_FILE,
        details={
            "stateful": True,
            "mode": opts.mode,
            "group_size": opts.group_size,
            "group_size_fallback": opts.group_size_fallback,
            "ratio": opts.ratio,
            "awq": opts.awq,
            "scale_estimation": opts.scale_estimation,
            "calibration_windows": n_items,
            "calibration_seq_len": int(items[0]["input_ids"].shape[1]) if n_items else 0,
            "inference_precision": opts.inference_precision,
            "kv_cache_precision": opts.kv_cache_precision,
            "weight_types": weight_types,
            **_versions(with_nncf=True),
        },
    )


register_recipe(
    Recipe(
        name="ov-causal-lm",
        framework="openvino",
        options_model=OvCausalLMOptions,
        accepts=("base", "hf"),
        base_formats=("hf",),
        build=_build_ov_causal_lm,
        description="Export a Hugging Face causal LM to a stateful (KV-cache) OpenVINO IR, FP16 or FP32 weights.",
        requires=Requirements(modules=("openvino", "torch", "transformers")),
        families=("generation",),
        tasks=TASKS,
    )
)
register_recipe(
    Recipe(
        name="nncf-llm-weight-compression",
        framework="nncf",
        options_model=NncfLlmOptions,
        accepts=(IR_FORMAT,),
        build=_build_nncf_llm,
        description="NNCF weight compression of an LLM IR: INT8, or INT4 groups with optional AWQ / scale estimation.",
        requires=Requirements(modules=("openvino", "nncf")),
        families=("generation",),
        tasks=TASKS,
    )
)


# ---------------------------------------------------------------------------------------------
# runtime


class OpenVINOCausalLM:
    """One compiled stateful model and one InferRequest; the KV cache lives in the request's state."""

    def __init__(self, xml: Path, inference_precision: str, kv_cache_precision: str, threads: int) -> None:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        types = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16, "u8": ov.Type.u8}
        self._requested = {"inference_precision": inference_precision, "kv_cache_precision": kv_cache_precision}
        config: dict[str, Any] = {
            props.inference_num_threads(): threads,
            props.streams.num(): 1,
            hints.performance_mode(): hints.PerformanceMode.LATENCY,
            hints.inference_precision(): types[inference_precision],
        }
        if kv_cache_precision != "auto":
            config[hints.kv_cache_precision()] = types[kv_cache_precision]
        core = ov.Core()
        self._xml = xml
        self._roofline: dict[str, int] | None = None
        self._scoring: bool | None = None
        self._compiled = core.compile_model(core.read_model(str(xml)), DEVICE, config)
        self._request = self._compiled.create_infer_request()
        if not self._request.query_state():
            raise CandidateError(f"{xml.name} is not a stateful (KV-cache) IR")
        self._names = {name for port in self._compiled.inputs for name in port.get_names()}
        missing = [n for n in ("input_ids", "position_ids") if n not in self._names]
        if missing:
            raise CandidateError(f"{xml.name} lacks input(s) {', '.join(missing)}")

    def _run(self, ids: np.ndarray, start: int) -> np.ndarray:
        """Append ids at positions start.. to the state; return logits [len(ids), vocab] (a view)."""
        t = len(ids)
        feed = {
            "input_ids": ids.reshape(1, t),
            "attention_mask": np.ones((1, start + t), dtype=np.int64),
            "position_ids": np.arange(start, start + t, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, dtype=np.int32),
        }
        try:
            self._request.infer({k: v for k, v in feed.items() if k in self._names})
        except Exception as exc:
            raise CandidateError(f"openvino: inference failed: {short_error(exc)}") from exc
        return self._request.get_tensor(LOGITS).data[0]

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Logits of every position of one window. With an f32 cache, one pass over the window. With a
        compressed one (f16, u8), one token at a time, as decoding runs: the CPU plugin's attention over a
        multi-token pass (a prompt) uses the pass's own keys and values at full precision, while a one-token
        pass (a decode step) reads them from the cache, so a one-pass window would score an f32 cache whatever
        was asked (measured on SmolLM2: one-pass logits are identical at f32, f16 and u8; token by token they
        move by ~0.01 at f16, ~0.4 at u8). It costs a decode step per token (~15 s per 256-token window here)."""
        ids = check_window(input_ids)
        self._request.reset_state()
        if not self._kv_through_cache():
            return np.array(self._run(ids, 0), dtype=np.float32)
        # np.array copies: _run returns a view of the output tensor, which the next inference overwrites.
        return np.stack([np.array(self._run(ids[pos : pos + 1], pos)[0], dtype=np.float32)
                         for pos in range(len(ids))])

    def _kv_through_cache(self) -> bool:
        """Whether the quality windows are fed token by token (the cache is stored below f32)."""
        if self._scoring is None:
            import openvino as ov

            self._scoring = self._kv_storage_type() != ov.Type.f32
        return self._scoring

    def generate(self, prompt_ids: np.ndarray, max_new_tokens: int) -> Generation:
        self._request.reset_state()
        return timed_greedy(
            lambda ids: self._run(ids, 0)[-1],
            lambda token, pos: self._run(np.array([token], dtype=np.int64), pos)[-1],
            prompt_ids,
            max_new_tokens,
        )

    def roofline(self) -> dict[str, int]:
        """Weight bytes and matrix parameters per decoded token, and KV-cache bytes per cached position, from
        the IR as compiled (the graph is re-read here, memory-mapped, not kept)."""
        if self._roofline is None:
            try:
                self._roofline = self._compute_roofline()
            except Exception as exc:
                raise CandidateError(
                    f"openvino: cannot size {self._xml.name} for the roofline: {short_error(exc)}"
                ) from exc
        return dict(self._roofline)

    def _compute_roofline(self) -> dict[str, int]:
        import openvino as ov
        import openvino.properties.hint as hints

        get = self._compiled.get_property
        # Float constants count at the compiled inference precision: the CPU plugin converts them when it
        # packs the weights (an fp16 IR run in f32 allocated ~475 MB at its first inference, the int8 IR
        # ~136 MB, its stored size), so at f32 an fp16 IR reads f32 weights. Integer weights stay packed
        # and are decompressed on the fly: their stored bytes, plus their scales and zero points.
        float_size = int(get(hints.inference_precision()).size)
        model = ov.Core().read_model(str(self._xml))
        consts, ops, kv_per_position = [], [], 0
        for op in model.get_ordered_ops():
            name, op_type = op.get_name(), op.get_type_name()
            if op_type == "Constant":
                elements = int(np.prod(list(op.get_output_shape(0)), dtype=np.int64))
                real = op.get_output_element_type(0).is_real()
                consts.append(GraphConst(name, elements * float_size if real else int(op.get_byte_size()), elements))
                continue
            ops.append(GraphOp(name, op_type, tuple(i.get_source_output().get_node().get_name() for i in op.inputs()),
                               (name,)))
            if op_type == "ReadValue":  # one KV state [batch 1, kv_heads, past (dynamic), head_dim]
                kv_per_position += int(np.prod([d.get_length() for d in op.get_output_partial_shape(0) if d.is_static]))
        weight_bytes, matmul_params = weight_reads(consts, ops)
        # u8 adds small per-token scales and zero points, not counted.
        kv_size = int(self._kv_storage_type().size)
        return {"weight_bytes": weight_bytes, "kv_bytes_per_position": kv_per_position * kv_size,
                "matmul_params": matmul_params}

    def _kv_storage_type(self) -> Any:
        """The element type the KV cache is stored in, for decoding and the quality windows alike (one compiled
        model, one request): the fused KV-cache attention stores it at kv_cache_precision, decomposed
        attention as the state tensors' type."""
        import openvino.properties.hint as hints

        if self._fused_attention():
            return self._compiled.get_property(hints.kv_cache_precision())
        return self._request.query_state()[0].state.get_element_type()

    def _fused_attention(self) -> int:
        """Fused attention nodes reading the cache kept inside the plugin: one per layer when the
        ReadValue -> Gather -> Concat -> SDPA fusion applied, 0 if attention ran decomposed."""
        return sum(
            op.get_rt_info()["layerType"].astype(str) == "ScaledDotProductAttention"
            for op in self._compiled.get_runtime_model().get_ops()
            if "layerType" in op.get_rt_info()
        )

    def runtime_info(self) -> dict[str, Any]:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        get = self._compiled.get_property
        # Per-op precisions of the executed graph: shows what really ran in int4/int8/f32/bf16.
        runtime_precisions = Counter(
            op.get_rt_info()["runtimePrecision"].astype(str)
            for op in self._compiled.get_runtime_model().get_ops()
            if "runtimePrecision" in op.get_rt_info()
        )
        return {
            "device": DEVICE,
            "requested_inference_precision": self._requested["inference_precision"],
            "inference_precision": get(hints.inference_precision()).get_type_name(),
            "requested_kv_cache_precision": self._requested["kv_cache_precision"],
            "kv_cache_precision": get(hints.kv_cache_precision()).get_type_name(),
            "kv_cache": self._kv_storage_type().get_type_name(),  # where it is stored (see _kv_storage_type)
            "quality_windows": "token by token through the cache" if self._kv_through_cache() else "one pass",
            "fused_kv_cache_attention": self._fused_attention(),
            "threads": int(get(props.inference_num_threads())),
            "streams": int(get(props.streams.num())),
            "runtime_precisions": dict(sorted(runtime_precisions.items())),
            "openvino_version": ov.get_version(),
        }


@register_runtime(RUNTIME)
def load_openvino_causal_lm(
    candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int
) -> OpenVINOCausalLM:
    xml = Path(candidate_dir) / model_file
    if not xml.is_file():
        raise CandidateError(f"openvino: model file {xml} not found")
    precision = details.get("inference_precision", "f32")
    kv_precision = details.get("kv_cache_precision", "f32")
    if precision not in ("f32", "bf16", "f16") or kv_precision not in ("auto", "f32", "f16", "u8"):
        raise CandidateError(f"openvino: unknown precision settings {precision!r} / {kv_precision!r}")
    try:
        return OpenVINOCausalLM(xml, precision, kv_precision, threads)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"openvino: cannot compile {xml.name}: {short_error(exc)}") from exc
