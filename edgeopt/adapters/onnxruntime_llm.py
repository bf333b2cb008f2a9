"""ONNX Runtime for causal LMs: an FP32 ONNX export with explicit past/present KV tensors, block-wise INT4
weight quantization (MatMulNBits), and the "onnxruntime-causal-lm" runtime (greedy KV-cache loop in numpy).

The export traces the Hugging Face model with torch.onnx's TorchScript exporter (dynamo=False): onnxruntime-genai's
model builder is not installed. torch, onnx and onnxruntime are imported inside functions.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeopt.adapters.causal_lm_common import (
    INPUTS,
    LOGITS,
    FileBytes,
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
    import onnx

MODEL_FILE = "model.onnx"
ONNX_FORMAT = "onnx-llm"
RUNTIME = "onnxruntime-causal-lm"
TASKS = ("causal-lm",)
_GATHER_MIN_OPSET = 18


class OrtCausalLMExportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # 18: ReduceMean takes axes as an input, as in opset 21, which int4 embeddings (GatherBlockQuantized)
    # force the model to. 20 is the TorchScript exporter's last.
    opset: int = Field(default=18, ge=14, le=20)


class OrtMatMulNBitsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Defaults follow onnxruntime-genai's model builder for CPU: 32-wide symmetric blocks, accuracy level 4
    # (activations quantized to int8 inside MatMulNBits, the fast CPU kernel).
    block_size: int = Field(default=32, ge=16)
    is_symmetric: bool = True
    accuracy_level: int | None = Field(default=4, ge=0, le=4)  # None/0: the op's default (fp32 compute)
    quantize_lm_head: bool = True  # False keeps the output projection in float (NNCF keeps it in int8)
    # The token embedding table (Gather) in int4 too (GatherBlockQuantized); the builder leaves it in float.
    # For SmolLM2-135M it is a fifth of the weights: 199 MB -> 103 MB on disk, KLD 0.43 -> 0.45.
    # Needs a parent exported with opset >= 18.
    quantize_embeddings: bool = True


# ---------------------------------------------------------------------------------------------
# helpers


def _parent_onnx(ctx: BuildContext, recipe: str) -> Path:
    parent = ctx.parent
    if parent is None or parent.format != ONNX_FORMAT:
        got = "the base model" if parent is None else f"a {parent.format!r} parent"
        raise CandidateError(f"{recipe}: needs a {ONNX_FORMAT!r} parent, got {got}")
    path = parent.dir / parent.model_file
    if not path.is_file():
        raise CandidateError(f"{recipe}: parent model file {path} not found")
    return path


def _op_counts(model: onnx.ModelProto, ops: tuple[str, ...]) -> dict[str, int]:
    counts = Counter(n.op_type for n in model.graph.node)
    return {op: counts[op] for op in ops if counts[op]}


def _lm_head_node(model: onnx.ModelProto) -> str | None:
    """The MatMul whose output is the logits (it may feed them through no other op)."""
    by_output = {o: n for n in model.graph.node for o in n.output}
    node = by_output.get(LOGITS)
    return node.name if node is not None and node.op_type == "MatMul" else None


def _save(model: onnx.ModelProto, path: Path) -> None:
    """One file, weights inline (these models are far below protobuf's 2 GB limit), checked."""
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=False)
    onnx.checker.check_model(str(path))


# ---------------------------------------------------------------------------------------------
# recipes


def _build_export(ctx: BuildContext) -> BuildOutput:
    opts: OrtCausalLMExportOptions = ctx.options
    hf_dir, source = source_hf_dir(ctx, "ort-causal-lm-export")
    work = ctx.out_dir / ".export"
    work.mkdir(parents=True)
    try:
        import warnings

        import onnx
        import torch

        module, shape = load_kv_module(hf_dir, ctx.threads)
        n = shape["n_layers"]
        dynamic: dict[str, dict[int, str]] = {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"},
            LOGITS: {0: "batch", 1: "sequence"},
        }
        dynamic.update({name: {0: "batch", 2: "past_sequence"} for name in past_names(n)})
        dynamic.update({name: {0: "batch", 2: "total_sequence"} for name in present_names(n)})
        tmp = work / MODEL_FILE
        # inference_mode(False): tracing fails on inference tensors if a caller is in inference mode.
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer/deprecation warnings are expected here
            torch.onnx.export(
                module,
                example_inputs(shape),
                str(tmp),
                input_names=[*INPUTS, *past_names(n)],
                output_names=[LOGITS, *present_names(n)],
                dynamic_axes=dynamic,
                opset_version=opts.opset,
                dynamo=False,
            )
        model = onnx.load(str(tmp), load_external_data=True)  # inlines side files the exporter may write
        _save(model, ctx.out_dir / MODEL_FILE)
        torch_version = torch.__version__
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"ort-causal-lm-export: {short_error(exc)}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildOutput(
        format=ONNX_FORMAT,
        runtime=RUNTIME,
        precision="fp32",
        model_file=MODEL_FILE,
        details={
            "source": source,
            "exporter": "torch.onnx TorchScript (dynamo=False)",
            "opset": opts.opset,
            "torch": torch_version,
            **shape,
        },
    )


def _build_matmulnbits(ctx: BuildContext) -> BuildOutput:
    opts: OrtMatMulNBitsOptions = ctx.options
    src = _parent_onnx(ctx, "ort-matmulnbits-int4")
    try:
        import onnx
        import onnxruntime
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        model = onnx.load(str(src))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opts.quantize_embeddings and opset < _GATHER_MIN_OPSET:
            raise CandidateError(
                f"ort-matmulnbits-int4: quantize_embeddings needs a parent exported with opset >= "
                f"{_GATHER_MIN_OPSET} (the quantizer lifts the model to opset 21), this one has {opset}"
            )
        lm_head = _lm_head_node(model)
        excluded = [lm_head] if lm_head and not opts.quantize_lm_head else []
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=4,
            block_size=opts.block_size,
            is_symmetric=opts.is_symmetric,
            accuracy_level=opts.accuracy_level,
            nodes_to_exclude=excluded,
            op_types_to_quantize=("MatMul", "Gather") if opts.quantize_embeddings else ("MatMul",),
            quant_axes=(("MatMul", 0), ("Gather", 1)),  # blocks along the hidden axis for both
        )
        quantizer.process()
        quantized = quantizer.model.model
        _save(quantized, ctx.out_dir / MODEL_FILE)
        ops = _op_counts(quantized, ("MatMulNBits", "GatherBlockQuantized", "MatMul"))
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"ort-matmulnbits-int4: {short_error(exc)}") from exc
    if not ops.get("MatMulNBits"):
        raise CandidateError("ort-matmulnbits-int4: no MatMul was quantized (no constant-weight MatMuls found)")
    return BuildOutput(
        format=ONNX_FORMAT,
        runtime=RUNTIME,
        precision="int4-weights",
        model_file=MODEL_FILE,
        details={
            "block_size": opts.block_size,
            "is_symmetric": opts.is_symmetric,
            "accuracy_level": opts.accuracy_level,
            "quantize_lm_head": opts.quantize_lm_head,
            "quantize_embeddings": opts.quantize_embeddings,
            "lm_head_node": lm_head,
            "ops": ops,
            "onnxruntime": onnxruntime.__version__,
        },
    )


register_recipe(
    Recipe(
        name="ort-causal-lm-export",
        framework="onnx",
        options_model=OrtCausalLMExportOptions,
        accepts=("base", "hf"),
        base_formats=("hf",),
        build=_build_export,
        description="Export a Hugging Face causal LM to one FP32 ONNX file with past/present KV-cache tensors.",
        requires=Requirements(modules=("torch", "transformers", "onnx", "onnxruntime")),
        families=("generation",),
        tasks=TASKS,
    )
)
register_recipe(
    Recipe(
        name="ort-matmulnbits-int4",
        framework="onnxruntime",
        options_model=OrtMatMulNBitsOptions,
        accepts=(ONNX_FORMAT,),
        build=_build_matmulnbits,
        description="Block-wise INT4 weight quantization of an LLM's MatMuls (onnxruntime MatMulNBits).",
        requires=Requirements(modules=("onnx", "onnxruntime")),
        families=("generation",),
        tasks=TASKS,
    )
)


# ---------------------------------------------------------------------------------------------
# runtime


class OrtCausalLM:
    """One InferenceSession on the CPU provider; the KV cache is the previous step's present tensors."""

    def __init__(self, model_path: Path, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._version = ort.__version__
        self._threads = threads
        self._path = model_path
        self._roofline: dict[str, int] | None = None
        self._session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self._session.get_inputs()}
        # position_ids is optional: onnxruntime-genai's GroupQueryAttention graphs take positions from the mask.
        missing = [n for n in INPUTS if n != "position_ids" and n not in inputs]
        if missing:
            raise CandidateError(f"{model_path.name} lacks input(s) {', '.join(missing)}")
        self._positions = "position_ids" in inputs
        self._past = [n for n in inputs if n.startswith("past_key_values.")]
        self._present = [n.replace("past_key_values.", "present.", 1) for n in self._past]
        outputs = {o.name for o in self._session.get_outputs()}
        if not self._past or LOGITS not in outputs or not set(self._present) <= outputs:
            raise CandidateError(f"{model_path.name} has no logits/past_key_values/present KV-cache interface")
        first = inputs[self._past[0]]
        heads, dim = first.shape[1], first.shape[3]
        if not (isinstance(heads, int) and isinstance(dim, int)):
            raise CandidateError(f"{model_path.name}: KV-cache heads/head_dim must be static, got {first.shape}")
        kv_dtype = np.float16 if first.type == "tensor(float16)" else np.float32
        self._empty = np.zeros((1, heads, 0, dim), dtype=kv_dtype)
        self._outputs = [LOGITS, *self._present]
        self._cache: list[np.ndarray] = []

    def _run(self, ids: np.ndarray, start: int) -> np.ndarray:
        """Append ids at positions start.. to the cache; return logits [len(ids), vocab]."""
        t = len(ids)
        past = self._cache or [self._empty] * len(self._past)
        feed = {
            "input_ids": ids.reshape(1, t),
            "attention_mask": np.ones((1, start + t), dtype=np.int64),
            **dict(zip(self._past, past, strict=True)),
        }
        if self._positions:
            feed["position_ids"] = np.arange(start, start + t, dtype=np.int64)[None]
        try:
            logits, *self._cache = self._session.run(self._outputs, feed)
        except Exception as exc:
            raise CandidateError(f"onnxruntime: inference failed: {short_error(exc)}") from exc
        return logits[0]

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        ids = check_window(input_ids)
        self._cache = []
        out = np.asarray(self._run(ids, 0), dtype=np.float32)
        self._cache = []
        return out

    def generate(self, prompt_ids: np.ndarray, max_new_tokens: int) -> Generation:
        self._cache = []
        try:
            return timed_greedy(
                lambda ids: self._run(ids, 0)[-1],
                lambda token, pos: self._run(np.array([token], dtype=np.int64), pos)[-1],
                prompt_ids,
                max_new_tokens,
            )
        finally:
            self._cache = []

    def roofline(self) -> dict[str, int]:
        """Weight bytes and matrix parameters per decoded token, and KV-cache bytes per cached position, from
        the ONNX graph's skeleton (shapes and types, no tensor data: the measurement child's peak RSS must not
        include a second copy of the weights) and the session's KV inputs."""
        if self._roofline is None:
            try:
                weight_bytes, matmul_params = weight_reads(*_graph_description(onnx_skeleton(self._path)))
            except Exception as exc:
                raise CandidateError(f"onnxruntime: cannot size {self._path.name} for the roofline: "
                                     f"{short_error(exc)}") from exc
            _, heads, _, dim = self._empty.shape
            kv = len(self._past) * heads * dim * self._empty.itemsize
            self._roofline = {"weight_bytes": weight_bytes, "kv_bytes_per_position": kv, "matmul_params": matmul_params}
        return dict(self._roofline)

    def runtime_info(self) -> dict[str, Any]:
        return {
            "onnxruntime": self._version,
            "providers": self._session.get_providers(),
            "intra_op_threads": self._threads,
            "kv_cache_dtype": str(self._empty.dtype),
            # The graph's past/present tensors fix it (fp32 for every export here): the same for timing and scoring.
            "kv_cache": KV_NAMES[self._empty.dtype.name],
            "layers": len(self._past) // 2,
        }


def _tensor_size(dims: Any, data_type: int) -> tuple[int, int]:
    """(bytes, elements) of a tensor as stored: 4-bit types are packed two per byte."""
    import onnx

    elements = int(np.prod(list(dims), dtype=np.int64))
    if data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (elements + 1) // 2, elements
    return elements * onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize, elements


def _graph_description(model: onnx.ModelProto) -> tuple[list[GraphConst], list[GraphOp]]:
    """Initializers and Constant nodes as constants, the other nodes (already topologically ordered) as ops.

    MatMulNBits' packed uint8 B counts as its N x K matrix (attributes N and K) for the parameter count.
    ORT reads float MatMul weights as stored (fp32 here; MLAS prepacking keeps the type).
    """
    import onnx

    logical: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and len(node.input) > 1:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            logical[node.input[1]] = int(attrs["N"]) * int(attrs["K"])
    consts, ops = [], []
    for init in model.graph.initializer:
        nbytes, elements = _tensor_size(init.dims, init.data_type)
        consts.append(GraphConst(init.name, nbytes, logical.get(init.name, elements)))
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and node.output:
            # value_float / value_ints / ... forms are a few bytes: sized as one element.
            nbytes, elements = _tensor_size(value.dims, value.data_type) if value is not None else (4, 1)
            consts.append(GraphConst(node.output[0], nbytes, elements))
        else:
            ops.append(GraphOp(node.name, node.op_type, tuple(node.input), tuple(node.output)))
    return consts, ops


# The skeleton of an ONNX file: every message on the way to a tensor (field numbers of onnx.proto), with the
# tensors' data fields dropped (None) and everything else kept byte for byte.
_Schema = dict[int, "_Schema | None"]
_TENSOR: _Schema = {4: None, 5: None, 6: None, 7: None, 9: None, 10: None, 11: None}  # *_data, raw_data
_SPARSE: _Schema = {1: _TENSOR, 2: _TENSOR}  # values, indices
_ATTRIBUTE: _Schema = {5: _TENSOR, 10: _TENSOR, 22: _SPARSE, 23: _SPARSE}  # t, tensors, sparse_tensor(s)
_NODE: _Schema = {5: _ATTRIBUTE}
_GRAPH: _Schema = {1: _NODE, 5: _TENSOR, 15: _SPARSE}  # node, initializer, sparse_initializer
_ATTRIBUTE.update({6: _GRAPH, 11: _GRAPH})  # g, graphs (If / Loop / Scan bodies)
_MODEL: _Schema = {7: _GRAPH, 20: {1: _GRAPH, 2: _GRAPH}, 25: {7: _NODE}}  # graph, training_info, functions
KV_NAMES = {"float32": "f32", "float16": "f16"}


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"malformed protobuf varint at byte {pos}")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _strip(buf: Any, start: int, end: int, schema: _Schema) -> bytearray:
    """The protobuf message buf[start:end] without the fields `schema` drops, its sub-messages stripped in turn."""
    out = bytearray()
    pos = keep = start
    while pos < end:
        field_start = pos
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        body = pos
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, body = _varint(buf, pos)
            pos = body + length
        else:  # 3/4: groups, which onnx.proto does not use
            raise ValueError(f"unexpected protobuf wire type {wire} at byte {field_start}")
        if pos > end:
            raise ValueError(f"truncated protobuf field at byte {field_start}")
        if field not in schema:
            continue
        out += buf[keep:field_start]
        keep = pos
        rule = schema[field]
        if rule is None:  # a tensor's data (packed or not): dropped unread
            continue
        if wire != 2:  # not the sub-message the schema expects: kept as it is
            out += buf[field_start:pos]
            continue
        inner = _strip(buf, body, pos, rule)
        out += _encode_varint(tag) + _encode_varint(len(inner)) + inner
    out += buf[keep:end]
    return out


def onnx_skeleton(path: Path) -> onnx.ModelProto:
    """An ONNX model with every tensor's shape, type, name and external-data record but none of its data.

    `onnx.load(path, load_external_data=False)` still reads weights stored inline (as every export here stores
    them: a second copy of them in the process), so the file's protobuf fields are walked instead and only
    the bytes outside tensor data are read.
    """
    import onnx

    with open(path, "rb") as f:
        buf = FileBytes(f)
        if not len(buf):
            raise ValueError(f"{Path(path).name} is empty")
        skeleton = _strip(buf, 0, len(buf), _MODEL)
    model = onnx.ModelProto()
    model.ParseFromString(bytes(skeleton))
    return model


@register_runtime(RUNTIME)
def load_onnxruntime_causal_lm(
    candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int
) -> OrtCausalLM:
    path = Path(candidate_dir) / model_file
    if not path.is_file():
        raise CandidateError(f"onnxruntime: model file {path} not found")
    try:
        return OrtCausalLM(path, threads)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"onnxruntime: cannot load {path.name}: {short_error(exc)}") from exc
