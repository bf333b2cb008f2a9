"""Microsoft Olive as a candidate builder: a fixed pass list, or Olive's own search.

- `olive-workflow` runs a fixed Olive pass list from the base model (ONNX conversion, ORT
  transformer optimization, dynamic/static quantization; or OpenVINO conversion/quantization).
- `olive-optimize` runs Olive's search over its ONNX quantization pass, scored by Olive's own
  evaluator, and keeps the model Olive ranks best.

Either way the candidate is measured by this pipeline's harness, never by Olive's numbers. Olive's
footprint (and, for a search, its Pareto frontier) is copied to `olive/` in the candidate folder,
and the executed passes with their full configs go to the lineage (`details["passes"]`).

Olive 0.13 facts that shape this module (checked against the installed stack):
- An `HfModel` input fails the TorchScript export with transformers 5.x ("got multiple values for
  argument 'use_cache'"): Olive passes the dummy inputs as kwargs, and the exporter then fills every
  positional default up to `use_cache`. The input is therefore a `PyTorchModel` whose loader returns
  this project's sentence encoder (eager attention, mean pooling, L2 norm); Olive still does the
  conversion itself.
- Custom metrics crash the engine (`Metric.serialize_backend` calls `.model_dump()` on None). The
  search's quality objective is therefore a built-in one: torchmetrics multilabel accuracy of the
  embedding's sign bits against the FP32 reference (sign agreement), computed by Olive.
- A search step whose pass output is already cached crashes (`FootprintNode.update` sets the alias
  `model_config`); in "joint" order that fails every step after the first. "pass-by-pass" order
  works; configs that collapse to an already-run one are lost as failed points.
- 0.13 writes no `pareto_frontier_footprint.json`; it is extracted here from the footprint's
  `is_pareto_frontier` flags.
- Olive's telemetry adds ~7 s at interpreter exit unless it sees a CI variable when its singleton is
  created; `_quiet_telemetry` creates it that way.

olive and torch are imported inside functions: importing this module only registers. Olive is slow
to import (7-10 s).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeopt.errors import CandidateError, library_errors
from edgeopt.recipes import BuildContext, BuildOutput, Recipe, Requirements, register_recipe

OLIVE_DIR = "olive"  # Olive's own records, inside the candidate folder
ONNX_FILE = "model.onnx"
IR_FILE = "model.xml"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
SIGN_BITS = "edgeopt_sign_bits"  # Olive post-process registered by this module

PassName = Literal[
    "conversion",
    "transformers_optimization",
    "dynamic_quantization",
    "static_quantization",
    "openvino_conversion",
    "openvino_quantization",
]
PASS_TYPES: dict[str, str] = {
    "conversion": "OnnxConversion",
    "transformers_optimization": "OrtTransformersOptimization",
    "dynamic_quantization": "OnnxDynamicQuantization",
    "static_quantization": "OnnxStaticQuantization",
    "openvino_conversion": "OpenVINOConversion",
    "openvino_quantization": "OpenVINOQuantization",
}
_ONNX_FAMILY = ("conversion", "transformers_optimization", "dynamic_quantization", "static_quantization")
_OV_FAMILY = ("openvino_conversion", "openvino_quantization")
_QUANTIZERS = ("dynamic_quantization", "static_quantization", "openvino_quantization")
_NEEDS_CALIBRATION = ("static_quantization", "openvino_quantization")

# Written next to each Olive run: Olive imports its model loader and example inputs from a file.
_HOOKS_SCRIPT = '''\
"""Written by edgeopt for one Olive run: the model loader and the export example inputs."""
import torch

from edgeopt.adapters.torch_eager import sentence_encoder


def load_model(model_path):
    # Eager attention exports to the MatMul/Softmax pattern ORT's transformer optimizer fuses.
    return sentence_encoder(model_path, attn_implementation="eager")


def example_inputs(*_args):
    # A padded second row, so the trace records the general attention-mask path.
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 0, 0, 0, 0, 0]])
    return (ids, (ids != 0).long())
'''


# --------------------------------------------------------------------------------------------
# options


class OliveWorkflowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Olive passes, in order; the list starts with a conversion from the PyTorch model.
    passes: list[PassName] = Field(
        default_factory=lambda: ["conversion", "transformers_optimization", "dynamic_quantization"], min_length=1
    )
    # Per-pass Olive parameters (Olive's own names), merged over the defaults set here, e.g.
    # {dynamic_quantization: {per_channel: true}}.
    pass_options: dict[PassName, dict[str, Any]] = Field(default_factory=dict)
    opset: int = Field(default=17, ge=14, le=20)
    calibration_samples: int = Field(default=64, ge=1)  # for static / OpenVINO quantization

    @model_validator(mode="after")
    def _check_passes(self) -> OliveWorkflowOptions:
        passes = self.passes
        if len(set(passes)) != len(passes):
            raise ValueError("each Olive pass may appear once")
        if passes[0] not in ("conversion", "openvino_conversion"):
            raise ValueError("the pass list must start with conversion or openvino_conversion")
        family = _ONNX_FAMILY if passes[0] == "conversion" else _OV_FAMILY
        foreign = [p for p in passes if p not in family]
        if foreign:
            raise ValueError(f"{', '.join(foreign)} cannot follow {passes[0]}")
        if sum(p in _QUANTIZERS for p in passes) > 1:
            raise ValueError("at most one quantization pass")
        stray = sorted(set(self.pass_options) - set(passes))
        if stray:
            raise ValueError(f"pass_options for passes not in the list: {', '.join(stray)}")
        return self


class OliveOptimizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Olive searches OnnxQuantization's own search space; these are its quant_mode choices.
    quant_modes: list[Literal["dynamic", "static"]] = Field(default_factory=lambda: ["dynamic", "static"],
                                                            min_length=1)
    # Olive's pick is lexicographic by metric priority: the first objective decides, the other breaks ties.
    rank_by: Literal["latency", "fidelity"] = "latency"
    # OnnxQuantization parameters held fixed (not searched). The defaults keep the space at 10 points
    # (dynamic: precision x per_channel; static: those x QDQ/QOperator, minus invalid pairs).
    fixed: dict[str, Any] = Field(default_factory=lambda: {
        "reduce_range": False, "quant_preprocess": True, "calibrate_method": "MinMax", "activation_symmetric": False,
    })
    max_iter: int | None = Field(default=None, ge=1)  # cap on search steps (conversion and fusion are 2)
    calibration_samples: int = Field(default=32, ge=1)  # static quantization calibration (first part)
    eval_samples: int = Field(default=32, ge=1)  # Olive's evaluation set (disjoint, next part)
    latency_repeats: int = Field(default=20, ge=1)
    opset: int = Field(default=17, ge=14, le=20)


# --------------------------------------------------------------------------------------------
# helpers








def _quiet_telemetry() -> None:
    """Create Olive's telemetry singleton while CI is set: it is then disabled for the process.

    Setting CI for the whole process would also change other libraries' behaviour.
    """
    previous = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        from olive.telemetry import Telemetry

        Telemetry()
    finally:
        if previous is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = previous


def _sign_bits(output_data: Any, **_kwargs: Any) -> Any:
    """Olive post-process: embedding -> sign bits, scored as multilabel accuracy vs the reference's."""
    return (output_data > 0).int()


def _register_post_process() -> None:
    from olive.data.registry import Registry

    # Same function object every time, so Olive does not log a duplicate registration.
    Registry.register_post_process(SIGN_BITS)(_sign_bits)


def _bert_shape(hf_dir: Path) -> dict[str, int]:
    """num_heads/hidden_size for ORT's transformer optimizer (its detection fails on this graph)."""
    try:
        cfg = json.loads((hf_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    heads, hidden = cfg.get("num_attention_heads"), cfg.get("hidden_size")
    if isinstance(heads, int) and isinstance(hidden, int):
        return {"num_heads": heads, "hidden_size": hidden}
    return {}


def _base_hf_dir(ctx: BuildContext, recipe: str) -> Path:
    if ctx.parent is not None:
        raise CandidateError(f"{recipe} builds from the base model only")
    if ctx.base.format != "hf":
        raise CandidateError(f"{recipe} needs a Hugging Face base model (Olive starts from PyTorch), "
                             f"got format {ctx.base.format!r}")
    return Path(ctx.base.path)


def _write_raw(folder: Path, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
    """One batch-1 sample per file, in Olive's RawDataContainer layout; returns its dataset params."""
    for name, arr in (("input_ids", ids), ("attention_mask", mask)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(len(arr)):
            np.ascontiguousarray(arr[i : i + 1], dtype=np.int64).tofile(folder / name / f"{i:05d}.raw")
    params: dict[str, Any] = {
        "data_dir": str(folder),
        "input_names": list(INPUT_NAMES),
        "input_shapes": [[1, int(ids.shape[1])]] * 2,
        "input_types": ["int64", "int64"],
        "input_suffix": ".raw",
    }
    if labels is not None:
        np.save(folder / "labels.npy", labels)
        params["annotations_file"] = "labels.npy"
    return params


def _calibration(ctx: BuildContext) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = ctx.calibration.get("input_ids"), ctx.calibration.get("attention_mask")
    if ids is None or mask is None or len(ids) == 0:
        raise CandidateError("this Olive workflow needs calibration data (input_ids, attention_mask)")
    return np.asarray(ids), np.asarray(mask)


def _base_config(hf_dir: Path, work: Path, opset: int, passes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    script = work / "edgeopt_olive_hooks.py"
    script.write_text(_HOOKS_SCRIPT)
    for name, cfg in passes.items():
        if cfg["type"] == "OnnxConversion":
            cfg.setdefault("target_opset", opset)
        elif cfg["type"] == "OpenVINOConversion":
            cfg.setdefault("user_script", str(script))
            cfg.setdefault("example_input_func", "example_inputs")
        passes[name] = cfg
    return {
        "input_model": {
            "type": "PyTorchModel",
            "model_path": str(hf_dir),
            "model_script": str(script),
            "model_loader": "load_model",
            "dummy_inputs_func": "example_inputs",
            "io_config": {
                "input_names": list(INPUT_NAMES),
                "input_types": ["int64", "int64"],
                "output_names": [OUTPUT_NAME],
                "dynamic_axes": {
                    "input_ids": {"0": "batch", "1": "sequence"},
                    "attention_mask": {"0": "batch", "1": "sequence"},
                    OUTPUT_NAME: {"0": "batch"},
                },
            },
        },
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "passes": passes,
        "host": "local_system",
        "target": "local_system",
        # Everything Olive writes stays in the build's temporary folder.
        "cache_dir": str(work / "cache"),
        "output_dir": str(work / "output"),
        "log_severity_level": 3,  # errors only: the pipeline's own progress is the log
    }


def run_olive(config: dict[str, Any], threads: int) -> Any:
    import torch

    _quiet_telemetry()
    from olive.workflows import run

    torch.set_num_threads(max(1, threads))  # the export, and Olive's PyTorch steps
    # Olive rewrites parts of the dict it is given; the caller keeps the original for the record.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer/exporter warnings say nothing about the result
        return run(copy.deepcopy(config))


def _chain(footprint: dict[str, Any], model_id: str) -> list[dict[str, Any]]:
    """Footprint nodes from the input model's first pass to `model_id`, in order."""
    nodes = []
    current: str | None = model_id
    while current is not None and current in footprint:
        node = footprint[current]
        if node.get("from_pass"):
            nodes.append(node)
        current = node.get("parent_model_id")
    return nodes[::-1]


def lineage_passes(footprint: dict[str, Any], model_id: str, names: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for node in _chain(footprint, model_id):
        from_pass = str(node.get("from_pass"))
        out.append({
            "name": names.get(from_pass.lower(), from_pass),
            "type": from_pass,
            "model_id": node.get("model_id"),
            "seconds": round(float(node.get("end_time") or 0) - float(node.get("start_time") or 0), 3),
            "config": node.get("pass_run_config") or {},
        })
    return out


def store_olive_artifacts(output_dir: Path, dest: Path, config: dict[str, Any], search: bool) -> list[str]:
    """Copy Olive's records into the candidate's olive/ folder; returns their relative paths."""
    dest.mkdir(parents=True, exist_ok=True)
    kept = []
    for name in ("footprint.json", "run_history.txt"):
        if (output_dir / name).is_file():
            shutil.copy2(output_dir / name, dest / name)
            kept.append(name)
    (dest / "workflow.json").write_text(json.dumps(config, indent=2, default=str))
    kept.append("workflow.json")
    if search and (dest / "footprint.json").is_file():
        nodes = json.loads((dest / "footprint.json").read_text())
        frontier = {k: v for k, v in nodes.items() if v.get("is_pareto_frontier")}
        (dest / "pareto_frontier_footprint.json").write_text(json.dumps(frontier, indent=2))
        kept.append("pareto_frontier_footprint.json")
    return [f"{OLIVE_DIR}/{k}" for k in kept]


def _export_best(best: Any, out_dir: Path) -> tuple[str, str, str, dict[str, Any]]:
    """Copy Olive's chosen model into the candidate: (format, runtime, model_file, details)."""
    model_type = str(best.model_type or "").lower()
    src = Path(best.model_path)
    if model_type == "onnxmodel":
        from edgeopt.adapters.onnxruntime import _finalize, _precision, _quantized_ops

        onnx_src = src if src.is_file() else next(iter(sorted(src.glob("*.onnx"))), src)
        dst = out_dir / ONNX_FILE
        shutil.copy2(onnx_src, dst)
        model = _finalize(dst, source=onnx_src)  # inline any external data, run the checker
        inputs = [i.name for i in model.graph.input]
        if not set(INPUT_NAMES) <= set(inputs):
            raise CandidateError(f"Olive's model has inputs {inputs}, expected {list(INPUT_NAMES)}")
        details = {"precision": _precision(model), "quantized_ops": _quantized_ops(model), "inputs": inputs,
                   "outputs": [o.name for o in model.graph.output]}
        return "onnx", "onnxruntime", ONNX_FILE, details
    if model_type == "openvinomodel":
        xml = src if src.suffix == ".xml" else next(iter(sorted(src.glob("*.xml"))), None)
        if xml is None or not xml.with_suffix(".bin").is_file():
            raise CandidateError(f"Olive's OpenVINO model at {src} has no .xml/.bin pair")
        shutil.copy2(xml, out_dir / IR_FILE)
        shutil.copy2(xml.with_suffix(".bin"), out_dir / Path(IR_FILE).with_suffix(".bin"))
        # The project's OpenVINO runtime reads this; FP32 unless a candidate asks otherwise.
        return "openvino-ir", "openvino", IR_FILE, {"inference_precision": "f32"}
    raise CandidateError(f"Olive returned a model of type {best.model_type!r}, which no runtime here loads")


def _finish(ctx: BuildContext, work: Path, config: dict[str, Any], output: Any, search: bool,
            names: dict[str, str], extra: dict[str, Any]) -> BuildOutput:
    from importlib import metadata

    best = output.get_best_candidate() if output is not None else None
    if best is None:
        raise CandidateError("Olive produced no output model (every pass or search point failed)")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    with library_errors("copying Olive's output model"):
        fmt, runtime, model_file, model_details = _export_best(best, ctx.out_dir)
    output_dir = work / "output"
    artifacts = store_olive_artifacts(output_dir, ctx.out_dir / OLIVE_DIR, config, search)
    footprint_path = ctx.out_dir / OLIVE_DIR / "footprint.json"
    footprint = json.loads(footprint_path.read_text()) if footprint_path.is_file() else {}
    passes = lineage_passes(footprint, best.model_id, names)
    precision = model_details.pop("precision", None) or (
        "int8" if any(p["name"] in _QUANTIZERS for p in passes) else "fp32")
    details = {
        "olive": metadata.version("olive-ai"),
        "input_model": "PyTorchModel: edgeopt sentence encoder (eager attention, mean pooling, L2 norm)",
        "passes": passes,
        "pass_list": [p["name"] for p in passes],
        "olive_model_id": best.model_id,
        "olive_artifacts": artifacts,
        **model_details,
        **extra,
    }
    return BuildOutput(format=fmt, runtime=runtime, precision=precision, model_file=model_file, details=details)


# --------------------------------------------------------------------------------------------
# olive-workflow


def _workflow_passes(opts: OliveWorkflowOptions, hf_dir: Path, calib: str | None) -> dict[str, dict[str, Any]]:
    passes: dict[str, dict[str, Any]] = {}
    for name in opts.passes:
        cfg: dict[str, Any] = {"type": PASS_TYPES[name]}
        if name == "transformers_optimization":
            cfg.update({"model_type": "bert", **_bert_shape(hf_dir)})
        if name in _NEEDS_CALIBRATION:
            cfg["data_config"] = calib
        if name == "openvino_quantization":
            cfg["model_type"] = "TRANSFORMER"  # NNCF's transformer scheme (as nncf-ptq-int8 uses)
        cfg.update(opts.pass_options.get(name, {}))
        passes[name] = cfg
    return passes


def _build_workflow(ctx: BuildContext) -> BuildOutput:
    opts: OliveWorkflowOptions = ctx.options
    hf_dir = _base_hf_dir(ctx, "olive-workflow")
    with tempfile.TemporaryDirectory(prefix="edgeopt-olive-") as tmp:
        work = Path(tmp)
        data_configs = []
        n_cal = 0
        if any(p in _NEEDS_CALIBRATION for p in opts.passes):
            ids, mask = _calibration(ctx)
            n_cal = min(len(ids), opts.calibration_samples)
            params = _write_raw(work / "calibration", ids[:n_cal], mask[:n_cal])
            data_configs.append({"name": "edgeopt_calibration", "type": "RawDataContainer",
                                 "load_dataset_config": {"params": params}})
        passes = _workflow_passes(opts, hf_dir, "edgeopt_calibration" if data_configs else None)
        config = _base_config(hf_dir, work, opts.opset, passes)
        config["data_configs"] = data_configs
        with library_errors("Olive workflow"):
            output = run_olive(config, ctx.threads)
        names = {PASS_TYPES[p].lower(): p for p in opts.passes}
        extra: dict[str, Any] = {"workflow": "fixed pass list"}
        if n_cal:
            extra["calibration_samples"] = n_cal
        result = _finish(ctx, work, config, output, search=False, names=names, extra=extra)
    ov_fp16 = opts.pass_options.get("openvino_conversion", {}).get("compress_to_fp16", True)  # Olive's default
    if result.format == "openvino-ir" and result.precision == "fp32" and ov_fp16:
        result = replace(result, precision="fp16")  # FP16 weights in the IR, FP32 inference
    return result


register_recipe(
    Recipe(
        name="olive-workflow",
        framework="olive",
        options_model=OliveWorkflowOptions,
        accepts=("base",),
        base_formats=("hf",),
        build=_build_workflow,
        description="A fixed Microsoft Olive pass list from the base model (ONNX conversion, ORT fusion, "
        "dynamic/static INT8; or OpenVINO conversion/quantization).",
        requires=Requirements(modules=("olive",)),
    )
)


# --------------------------------------------------------------------------------------------
# olive-optimize


def _reference_sign_bits(hf_dir: Path, ids: np.ndarray, mask: np.ndarray, threads: int) -> np.ndarray:
    """Sign bits of the FP32 reference embeddings, [n, 1, dim] (one label row per raw file)."""
    import torch

    from edgeopt.adapters.torch_eager import sentence_encoder

    torch.set_num_threads(max(1, threads))
    model = sentence_encoder(hf_dir)
    with torch.inference_mode():
        emb = model(torch.from_numpy(np.asarray(ids, dtype=np.int64)),
                    torch.from_numpy(np.asarray(mask, dtype=np.int64)))
    return (emb.numpy() > 0).astype(np.int64)[:, None, :]


def _build_optimize(ctx: BuildContext) -> BuildOutput:
    opts: OliveOptimizeOptions = ctx.options
    hf_dir = _base_hf_dir(ctx, "olive-optimize")
    ids, mask = _calibration(ctx)
    if len(ids) < 2:
        raise CandidateError("olive-optimize needs at least 2 calibration samples (calibration + evaluation)")
    n_eval = min(opts.eval_samples, len(ids) // 2)
    n_cal = min(opts.calibration_samples, len(ids) - n_eval)
    with tempfile.TemporaryDirectory(prefix="edgeopt-olive-") as tmp:
        work = Path(tmp)
        labels = _reference_sign_bits(hf_dir, ids[n_cal : n_cal + n_eval], mask[n_cal : n_cal + n_eval], ctx.threads)
        dim = int(labels.shape[-1])
        cal_params = _write_raw(work / "calibration", ids[:n_cal], mask[:n_cal])
        eval_params = _write_raw(work / "evaluation", ids[n_cal : n_cal + n_eval], mask[n_cal : n_cal + n_eval], labels)
        session = {"onnx": {"session_options": {"intra_op_num_threads": ctx.threads, "inter_op_num_threads": 1}}}
        prio = {"latency": 1, "fidelity": 2} if opts.rank_by == "latency" else {"latency": 2, "fidelity": 1}
        quant: dict[str, Any] = {"type": "OnnxQuantization", "data_config": "edgeopt_calibration", **opts.fixed}
        if len(set(opts.quant_modes)) == 1:
            quant["quant_mode"] = opts.quant_modes[0]
        passes = {
            "conversion": {"type": "OnnxConversion"},
            "transformers_optimization": {"type": "OrtTransformersOptimization", "model_type": "bert",
                                          **_bert_shape(hf_dir)},
            "quantization": quant,
        }
        config = _base_config(hf_dir, work, opts.opset, passes)
        config["data_configs"] = [
            {"name": "edgeopt_calibration", "type": "RawDataContainer", "load_dataset_config": {"params": cal_params}},
            {"name": "edgeopt_evaluation", "type": "RawDataContainer", "load_dataset_config": {"params": eval_params},
             "post_process_data_config": {"type": SIGN_BITS}},
        ]
        config["evaluators"] = {"edgeopt": {"type": "OnnxEvaluator", "metrics": [
            {"name": "fidelity", "type": "accuracy", "data_config": "edgeopt_evaluation",
             "sub_types": [{"name": "accuracy_score", "priority": prio["fidelity"],
                            "metric_config": {"task": "multilabel", "num_labels": dim}}],
             "user_config": {"inference_settings": session}},
            {"name": "latency", "type": "latency", "data_config": "edgeopt_evaluation",
             "sub_types": [{"name": "p50", "priority": prio["latency"],
                            "metric_config": {"warmup_num": 3, "repeat_test_num": opts.latency_repeats}}],
             "user_config": {"inference_settings": session}},
        ]}}
        config["evaluator"] = "edgeopt"
        config["evaluate_input_model"] = False  # the input is the PyTorch model, not a candidate
        config["search_strategy"] = {
            "execution_order": "pass-by-pass",  # see the module docstring: "joint" fails after step 1
            "sampler": "sequential",
            "max_iter": opts.max_iter,
        }
        _register_post_process()
        with library_errors("Olive search"):
            output = run_olive(config, ctx.threads)
        names = {"onnxconversion": "conversion", "orttransformersoptimization": "transformers_optimization",
                 "onnxquantization": "quantization"}
        best = output.get_best_candidate() if output is not None else None
        extra = {
            "workflow": "search",
            "search": {
                "execution_order": "pass-by-pass",
                "sampler": "sequential",
                "max_iter": opts.max_iter,
                "quant_modes": opts.quant_modes,
                "fixed": opts.fixed,
                "objectives": {"latency-p50_ms": f"priority {prio['latency']}, lower is better",
                               "fidelity-accuracy_score": f"priority {prio['fidelity']}: sign agreement with "
                                                          "the FP32 reference embeddings"},
                "calibration_samples": n_cal,
                "eval_samples": n_eval,
            },
            "olive_metrics": {k: v.get("value") for k, v in (best.metrics_value or {}).items()} if best else {},
        }
        result = _finish(ctx, work, config, output, search=True, names=names, extra=extra)
        frontier_file = ctx.out_dir / OLIVE_DIR / "pareto_frontier_footprint.json"
        footprint_file = ctx.out_dir / OLIVE_DIR / "footprint.json"
        if footprint_file.is_file():
            nodes = json.loads(footprint_file.read_text())
            evaluated = [k for k, v in nodes.items() if v.get("metrics") and v.get("from_pass") == "onnxquantization"]
            result.details["search"]["quantized_points_evaluated"] = len(evaluated)
        if frontier_file.is_file():
            result.details["search"]["pareto_frontier"] = sorted(json.loads(frontier_file.read_text()))
        return result


register_recipe(
    Recipe(
        name="olive-optimize",
        framework="olive",
        options_model=OliveOptimizeOptions,
        accepts=("base",),
        base_formats=("hf",),
        build=_build_optimize,
        description="Olive's own search over ONNX quantization (dynamic/static, precision, per-channel, "
        "format), ranked by Olive's evaluator; the candidate is Olive's best model.",
        requires=Requirements(modules=("olive",)),
    )
)
