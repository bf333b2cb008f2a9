"""Microsoft Olive's LLM int4 paths as candidate builders for causal LMs, on CPU.

- `olive-llm-int4` runs one Olive weight-only INT4 pass over an "onnx-llm" parent (the FP32 graph with
  past/present KV tensors from `ort-causal-lm-export`): `OnnxBlockWiseRtnQuantization` (block-wise RTN,
  MatMulNBits + GatherBlockQuantized) or `OnnxKQuantQuantization` (k-quant scales, MatMulNBits). The output
  keeps the parent's interface and is measured by the "onnxruntime-causal-lm" runtime.
- `olive-llm-model-builder` runs Olive's `ModelBuilder` pass (onnxruntime-genai's model builder) from the
  Hugging Face folder at int4. Its graph is the GenAI layout (fused GroupQueryAttention with rotary inside,
  packed QKV / gate-up MatMulNBits, no `position_ids` input), measured by the "onnxruntime-genai-layout"
  runtime registered here.

Either way the candidate is measured by this pipeline's harness, never by Olive's numbers. Olive's footprint,
run history, workflow config and the Pareto extraction go to `olive/` in the candidate folder; the executed
passes with their full configs and the Olive version go to the lineage.

Olive 0.13 facts that shape this module (checked against the installed stack):
- RTN renames the output of every node it quantizes to "<name>_Q4", graph outputs included: the LM head's
  `logits` becomes `logits_Q4`. The graph output name is restored here.
- `OnnxHqqQuantization` on this graph gives a 754 MB model with KLD 64 vs the reference (top-1 0): broken,
  so not offered. `OnnxKQuantQuantization` leaves the embedding Gather in float.
- `ModelBuilder` works with onnxruntime-genai 0.9-0.14 only: it monkeypatches
  `onnxruntime_genai.models.quantized_model` (gone in 0.17) and calls `create_model` without the
  `hf_details` that 0.15+ require ("Please call `parse_extra_options` before `create_model`").
- Without an evaluator Olive flags no Pareto point: the extracted frontier of a fixed pass list is empty.

olive, onnx and onnxruntime are imported inside functions: importing this module only registers.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeopt.adapters.causal_lm_common import LOGITS, short_error, source_hf_dir
from edgeopt.adapters.olive import OLIVE_DIR, lineage_passes, run_olive, store_olive_artifacts
from edgeopt.adapters.onnxruntime_llm import ONNX_FORMAT, RUNTIME, TASKS, OrtCausalLM
from edgeopt.errors import CandidateError, library_errors
from edgeopt.recipes import BuildContext, BuildOutput, Recipe, Requirements, register_recipe, register_runtime

if TYPE_CHECKING:
    import onnx

MODEL_FILE = "model.onnx"
GENAI_FORMAT = "onnx-genai"  # not "onnx-llm": the ORT recipes' parents have position_ids and unfused attention
GENAI_RUNTIME = "onnxruntime-genai-layout"
GENAI_RANGE = ("0.9", "0.15")  # onnxruntime-genai versions Olive 0.13's ModelBuilder pass works with
BlockSize = Literal[16, 32, 64, 128, 256]
PASS_TYPES = {"rtn": "OnnxBlockWiseRtnQuantization", "kquant": "OnnxKQuantQuantization"}
_QUANT_OPS = ("MatMulNBits", "GatherBlockQuantized", "MatMul", "GroupQueryAttention")


class OliveLlmInt4Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["rtn", "kquant"] = "rtn"
    # Defaults follow onnxruntime-genai's model builder for CPU (as ort-matmulnbits-int4 does): 32-wide
    # blocks, accuracy level 4 (activations quantized to int8 inside MatMulNBits, the fast CPU kernel).
    block_size: BlockSize = 32
    accuracy_level: int = Field(default=4, ge=0, le=4)  # 0: the op's default (fp32 compute)
    # RTN only (k-quant chooses its own scales and zero points); None: RTN's default, symmetric.
    is_symmetric: bool | None = None
    # RTN only: the token-embedding Gather in int4 too (GatherBlockQuantized). None: RTN's default, yes.
    quantize_embeddings: bool | None = None

    @model_validator(mode="after")
    def _rtn_only(self) -> OliveLlmInt4Options:
        if self.algorithm == "kquant":
            for name in ("is_symmetric", "quantize_embeddings"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to algorithm rtn only (OnnxKQuantQuantization has no such "
                                     "option)")
        return self


class OliveModelBuilderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    block_size: BlockSize = 32
    is_symmetric: bool = True
    accuracy_level: int = Field(default=4, ge=1, le=4)  # the pass accepts 1 (fp32) .. 4 (int8)


# ---------------------------------------------------------------------------------------------
# helpers


def _olive_config(input_model: dict[str, Any], passes: dict[str, dict[str, Any]], work: Path) -> dict[str, Any]:
    return {
        "input_model": input_model,
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "passes": passes,
        "host": "local_system",
        "target": "local_system",
        "cache_dir": str(work / "cache"),
        "output_dir": str(work / "output"),
        "log_severity_level": 3,
    }


def _parent_onnx(ctx: BuildContext, recipe: str) -> Path:
    parent = ctx.parent
    if parent is None or parent.format != ONNX_FORMAT:
        got = "the base model" if parent is None else f"a {parent.format!r} parent"
        raise CandidateError(f"{recipe}: needs a {ONNX_FORMAT!r} parent (ort-causal-lm-export), got {got}")
    path = parent.dir / parent.model_file
    if not path.is_file():
        raise CandidateError(f"{recipe}: parent model file {path} not found")
    return path


def _embedding_gathers(model: onnx.ModelProto) -> list[str]:
    """Names of the Gather nodes that read a weight table (an initializer): what RTN would quantize."""
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "Gather" and n.input and n.input[0] in weights]


def _restore_output_names(model: onnx.ModelProto, wanted: list[str]) -> dict[str, str]:
    """Rename graph outputs "<name>_Q4" (RTN's renaming) back to <name>; returns {old: new}."""
    renamed = {o.name: o.name[: -len("_Q4")] for o in model.graph.output
               if o.name.endswith("_Q4") and o.name[: -len("_Q4")] in wanted}
    if not renamed:
        return {}
    for out in model.graph.output:
        out.name = renamed.get(out.name, out.name)
    for node in model.graph.node:
        node.output[:] = [renamed.get(v, v) for v in node.output]
        node.input[:] = [renamed.get(v, v) for v in node.input]
    return renamed


def _olive_onnx(best: Any) -> Path:
    src = Path(best.model_path)
    onnx_file = src if src.is_file() else src / MODEL_FILE
    if not onnx_file.is_file():
        raise CandidateError(f"Olive's output {src} holds no {MODEL_FILE}")
    return onnx_file


def _save(model: onnx.ModelProto, path: Path) -> None:
    """One file, weights inline (these models are far below protobuf's 2 GB limit), checked.

    The model builder emits SimplifiedLayerNormalization in the default domain, an op only onnxruntime
    registers, which onnx's checker rejects: onnxruntime loading the file is the check then.
    """
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=False)
    if any(n.op_type == "SimplifiedLayerNormalization" and n.domain in ("", "ai.onnx") for n in model.graph.node):
        import onnxruntime as ort

        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    else:
        onnx.checker.check_model(str(path))


def _io(model: onnx.ModelProto) -> dict[str, Any]:
    counts = Counter(n.op_type for n in model.graph.node)
    inputs = [i.name for i in model.graph.input]
    return {
        "ops": {op: counts[op] for op in _QUANT_OPS if counts[op]},
        "inputs": [n for n in inputs if not n.startswith("past_key_values.")],
        "kv_inputs": sum(n.startswith("past_key_values.") for n in inputs),
    }


def _finish(ctx: BuildContext, work: Path, config: dict[str, Any], best: Any, names: dict[str, str],
            model: onnx.ModelProto, fmt: str, runtime: str, extra: dict[str, Any]) -> BuildOutput:
    """Write the model and Olive's records into the candidate folder; lineage from Olive's footprint."""
    from importlib import metadata

    _save(model, ctx.out_dir / MODEL_FILE)
    artifacts = store_olive_artifacts(work / "output", ctx.out_dir / OLIVE_DIR, config, search=True)
    footprint_path = ctx.out_dir / OLIVE_DIR / "footprint.json"
    footprint = json.loads(footprint_path.read_text()) if footprint_path.is_file() else {}
    passes = lineage_passes(footprint, best.model_id, names)
    if not passes:
        raise CandidateError("Olive's footprint records no pass for its output model")
    details = {
        "olive": metadata.version("olive-ai"),
        "passes": passes,
        "pass_list": [p["name"] for p in passes],  # Olive's pass class names, in order
        "olive_model_id": best.model_id,
        "olive_artifacts": artifacts,
        **_io(model),
        **extra,
    }
    return BuildOutput(format=fmt, runtime=runtime, precision="int4-weights", model_file=MODEL_FILE, details=details)


def _best(output: Any) -> Any:
    best = output.get_best_candidate() if output is not None else None
    if best is None:
        raise CandidateError("Olive produced no output model (its pass failed; see Olive's log)")
    return best


# ---------------------------------------------------------------------------------------------
# olive-llm-int4


def _build_int4(ctx: BuildContext) -> BuildOutput:
    import onnx
    import onnxruntime

    opts: OliveLlmInt4Options = ctx.options
    src = _parent_onnx(ctx, "olive-llm-int4")
    pass_type = PASS_TYPES[opts.algorithm]
    cfg: dict[str, Any] = {"type": pass_type, "bits": 4, "block_size": opts.block_size,
                           "accuracy_level": opts.accuracy_level}
    with library_errors("reading the parent ONNX"):
        parent = onnx.load(str(src), load_external_data=False)
    wanted = [o.name for o in parent.graph.output]
    if opts.algorithm == "rtn":
        cfg["is_symmetric"] = True if opts.is_symmetric is None else opts.is_symmetric
        if opts.quantize_embeddings is False:
            cfg["nodes_to_exclude"] = _embedding_gathers(parent)
    del parent
    with tempfile.TemporaryDirectory(prefix="edgeopt-olive-llm-") as tmp:
        work = Path(tmp)
        config = _olive_config({"type": "ONNXModel", "model_path": str(src)}, {"int4": cfg}, work)
        with library_errors(f"Olive {pass_type}"):
            best = _best(run_olive(config, ctx.threads))
            model = onnx.load(str(_olive_onnx(best)), load_external_data=True)
        renamed = _restore_output_names(model, wanted)
        missing = [n for n in wanted if n not in {o.name for o in model.graph.output}]
        if missing:
            raise CandidateError(f"Olive's model lost the output(s) {', '.join(missing[:3])}")
        with library_errors("saving Olive's model"):
            result = _finish(ctx, work, config, best, {pass_type.lower(): pass_type}, model,
                             ONNX_FORMAT, RUNTIME, {
                                 "parent_interface": "ort-causal-lm-export (position_ids, past/present KV)",
                                 "restored_outputs": renamed,
                                 "onnxruntime": onnxruntime.__version__,
                             })
    if not result.details["ops"].get("MatMulNBits"):
        raise CandidateError("olive-llm-int4: Olive quantized no MatMul (no constant-weight MatMuls found)")
    return result


register_recipe(
    Recipe(
        name="olive-llm-int4",
        framework="olive",
        options_model=OliveLlmInt4Options,
        accepts=(ONNX_FORMAT,),
        build=_build_int4,
        description="Olive's weight-only INT4 pass (block-wise RTN or k-quant, MatMulNBits) over the FP32 "
        "ONNX causal LM with past/present KV; Olive's footprint and pass list are kept.",
        requires=Requirements(modules=("olive", "onnx", "onnxruntime")),
        families=("generation",),
        tasks=TASKS,
    )
)


# ---------------------------------------------------------------------------------------------
# olive-llm-model-builder


def _genai_version() -> str:
    from importlib import metadata

    from packaging.version import Version

    version = metadata.version("onnxruntime-genai")
    low, high = GENAI_RANGE
    if not Version(low) <= Version(version) < Version(high):
        raise CandidateError(
            f"olive-llm-model-builder: onnxruntime-genai {version} does not work with Olive 0.13's ModelBuilder "
            f"pass (needs >={low},<{high})"
        )
    return version


def _build_model_builder(ctx: BuildContext) -> BuildOutput:
    import onnx
    import onnxruntime

    opts: OliveModelBuilderOptions = ctx.options
    genai = _genai_version()
    hf_dir, source = source_hf_dir(ctx, "olive-llm-model-builder")
    cfg = {"type": "ModelBuilder", "precision": "int4", "int4_block_size": opts.block_size,
           "int4_is_symmetric": opts.is_symmetric, "int4_accuracy_level": opts.accuracy_level}
    with tempfile.TemporaryDirectory(prefix="edgeopt-olive-llm-") as tmp:
        work = Path(tmp)
        config = _olive_config({"type": "HfModel", "model_path": str(hf_dir)}, {"model_builder": cfg}, work)
        with library_errors("Olive ModelBuilder"):
            best = _best(run_olive(config, ctx.threads))
            onnx_file = _olive_onnx(best)
            model = onnx.load(str(onnx_file), load_external_data=True)  # inlines model.onnx.data
        if LOGITS not in {o.name for o in model.graph.output}:
            raise CandidateError("Olive's ModelBuilder output has no logits output")
        with library_errors("saving Olive's model"):
            result = _finish(ctx, work, config, best, {"modelbuilder": "ModelBuilder"}, model,
                             GENAI_FORMAT, GENAI_RUNTIME, {
                                 "source": source,
                                 "onnxruntime_genai": genai,
                                 "onnxruntime": onnxruntime.__version__,
                             })
            genai_config = onnx_file.parent / "genai_config.json"
            if genai_config.is_file():  # the builder's own description of the layout, for the record
                shutil.copy2(genai_config, ctx.out_dir / OLIVE_DIR / genai_config.name)
                result.details["olive_artifacts"].append(f"{OLIVE_DIR}/{genai_config.name}")
    return result


register_recipe(
    Recipe(
        name="olive-llm-model-builder",
        framework="olive",
        options_model=OliveModelBuilderOptions,
        accepts=("base", "hf"),
        base_formats=("hf",),
        build=_build_model_builder,
        description="Olive's ModelBuilder pass (onnxruntime-genai's model builder) at INT4 from the Hugging "
        "Face model: fused GroupQueryAttention, MatMulNBits; Olive's footprint and pass list are kept.",
        requires=Requirements(modules=("olive", "onnx", "onnxruntime", "onnxruntime_genai")),
        families=("generation",),
        tasks=TASKS,
    )
)


# ---------------------------------------------------------------------------------------------
# runtime


class OrtGenAILayoutCausalLM(OrtCausalLM):
    """OrtCausalLM on the model builder's graph (no position_ids input: GroupQueryAttention takes the positions
    from the attention mask; KV names, layouts and fp32 KV as ours). Only its runtime_info differs."""

    def runtime_info(self) -> dict[str, Any]:
        return {**super().runtime_info(), "layout": "onnxruntime-genai (no position_ids)"}


@register_runtime(GENAI_RUNTIME)
def load_onnxruntime_genai_layout(
    candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int
) -> OrtGenAILayoutCausalLM:
    path = Path(candidate_dir) / model_file
    if not path.is_file():
        raise CandidateError(f"onnxruntime: model file {path} not found")
    try:
        return OrtGenAILayoutCausalLM(path, threads)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"onnxruntime: cannot load {path.name}: {short_error(exc)}") from exc
