"""Microsoft Olive as a candidate builder: a fixed pass list, or Olive's own search.

- `olive-workflow` runs a fixed Olive pass list (ONNX conversion, ORT transformer optimization,
  dynamic/static quantization; or OpenVINO conversion/quantization) on one of two inputs: the task's
  PyTorch form of a Hugging Face base (`Workload.torch_form`: Olive's input model, its io_config and
  the calibration files come from the form and its I/O spec), or an ONNX model (an ONNX base, or an
  ONNX parent candidate) as Olive's `ONNXModel`, whose I/O spec is read off the graph.
- `olive-optimize` runs Olive's search over its ONNX quantization pass, scored by Olive's own
  evaluator, and keeps the model Olive ranks best. Its quality objective (sign agreement of the
  embedding) and its fixed BERT fusion pass are text-embedding's, so it serves that task only.

Either way the candidate is measured by this pipeline's harness, never by Olive's numbers. Olive's
footprint (and, for a search, its Pareto frontier) is copied to `olive/` in the candidate folder,
and the executed passes with their full configs go to the lineage (`details["passes"]`).

Olive 0.13 facts that shape this module (checked against the installed stack):
- An `HfModel` input fails the TorchScript export with transformers 5.x ("got multiple values for
  argument 'use_cache'"): Olive passes the dummy inputs as kwargs, and the exporter then fills every
  positional default up to `use_cache`. The input is therefore a `PyTorchModel` whose loader returns
  the task's PyTorch form for export (text-embedding: the sentence encoder with eager attention, mean
  pooling, L2 norm); Olive still does the conversion itself.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeopt.errors import CandidateError, library_errors
from edgeopt.iospec import Feed, IOSpec, stack_feeds
from edgeopt.recipes import BuildContext, BuildOutput, Recipe, Requirements, register_recipe

if TYPE_CHECKING:
    from edgeopt.workloads.base import TorchForm

OLIVE_DIR = "olive"  # Olive's own records, inside the candidate folder
ONNX_FILE = "model.onnx"
IR_FILE = "model.xml"
HOOKS_FILE = "edgeopt_olive_hooks.py"
EXAMPLE_FILE = "edgeopt_olive_example.npz"  # the form's tracing example, beside the hooks script
SIGN_BITS = "edgeopt_sign_bits"  # Olive post-process registered by this module
TEXT_TASK = "text-embedding"  # olive-optimize's metric and fusion pass are this task's

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
# The task name goes in as a constant; the tracing example is saved beside the script (EXAMPLE_FILE).
_HOOKS_SCRIPT = '''\
"""Written by edgeopt for one Olive run: the task's PyTorch form as Olive's model loader and example inputs."""
from pathlib import Path

import numpy as np
import torch

from edgeopt.workloads.base import get_workload

TASK = {task!r}
EXAMPLE = Path(__file__).with_name({example!r})


def load_model(model_path):
    # for_export: the form exporters trace (text-embedding: eager attention, the MatMul/Softmax
    # pattern ORT's transformer optimizer fuses).
    return get_workload(TASK).torch_form(Path(model_path), for_export=True).module


def example_inputs(*_args):
    # The form's example feed, positionally in the order of its io_spec inputs.
    with np.load(EXAMPLE, allow_pickle=False) as example:
        return tuple(torch.from_numpy(example[name]) for name in {input_names!r})
'''


# --------------------------------------------------------------------------------------------
# options


class OliveWorkflowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Olive passes, in order. From a PyTorch form the list starts with a conversion; from an ONNX input
    # a leading `conversion` is a no-op (dropped, and said so in the lineage).
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
        family = _OV_FAMILY if passes[0] in _OV_FAMILY else _ONNX_FAMILY
        foreign = [p for p in passes if p not in family]
        if foreign:
            raise ValueError(f"{', '.join(foreign)} cannot follow {passes[0]}")
        if family == _OV_FAMILY and passes[0] != "openvino_conversion":
            raise ValueError("OpenVINO passes start with openvino_conversion")
        if "conversion" in passes[1:]:
            raise ValueError("conversion must come first")
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


def _base_model_dir(ctx: BuildContext, recipe: str) -> Path:
    if ctx.parent is not None:
        raise CandidateError(f"{recipe} builds from the base model only")
    if ctx.base.format != "hf" or not Path(ctx.base.path).is_dir():
        raise CandidateError(f"{recipe} needs a Hugging Face base model folder (Olive starts from the task's "
                             f"PyTorch form), got format {ctx.base.format!r}")
    return Path(ctx.base.path)


def _torch_form(ctx: BuildContext, model_dir: Path, for_export: bool = True) -> TorchForm:
    """The task's PyTorch form of the base: what Olive's loader returns (for_export), or the reference."""
    from edgeopt.workloads.base import get_workload

    with library_errors(f"loading the {ctx.base.task} PyTorch form"):
        return get_workload(ctx.base.task).torch_form(model_dir, for_export=for_export)


def _has_attention(form: TorchForm) -> bool:
    """Structural check on the module: an attention submodule (BertSelfAttention, nn.MultiheadAttention...)."""
    return any("attention" in type(m).__name__.lower() for m in form.module.modules())


def _write_raw(folder: Path, spec: IOSpec, feeds: list[Feed], labels: np.ndarray | None = None) -> dict[str, Any]:
    """One sample per file per input (folder/<input name>/<index>.raw), Olive's RawDataContainer layout.

    Returns the dataset params. A RawDataContainer has one shape per input, so every feed must have
    the same shapes (the task's fixed benchmark shape: `feeds(spec, own_length=False)`).
    """
    if not feeds:
        raise CandidateError("Olive: the task gave no calibration samples")
    shapes = {name: tuple(np.shape(feeds[0][name])) for name in spec.input_names}
    for feed in feeds:
        problem = spec.feed_problem(feed)
        if problem:
            raise CandidateError(f"Olive: a calibration sample does not fit the model: {problem}")
        odd = [n for n in spec.input_names if tuple(np.shape(feed[n])) != shapes[n]]
        if odd:
            raise CandidateError(f"Olive: calibration samples differ in shape ({', '.join(odd)}); "
                                 "Olive's raw data files need one shape per input")
    for t in spec.inputs:
        (folder / t.name).mkdir(parents=True, exist_ok=True)
        for i, feed in enumerate(feeds):
            np.ascontiguousarray(feed[t.name], dtype=np.dtype(t.dtype)).tofile(folder / t.name / f"{i:05d}.raw")
    params: dict[str, Any] = {
        "data_dir": str(folder),
        "input_names": list(spec.input_names),
        "input_shapes": [list(shapes[n]) for n in spec.input_names],
        "input_types": [t.dtype for t in spec.inputs],
        "input_suffix": ".raw",
    }
    if labels is not None:
        np.save(folder / "labels.npy", labels)
        params["annotations_file"] = "labels.npy"
    return params


def _calibration(ctx: BuildContext, spec: IOSpec) -> list[Feed]:
    """The task's calibration feeds for the form's inputs, at the benchmark's fixed shape."""
    feeds = ctx.calibration.feeds(spec, own_length=False)
    if not feeds:
        raise CandidateError("this Olive workflow needs calibration data; the task gave none")
    return feeds


def io_config(spec: IOSpec) -> dict[str, Any]:
    """Olive's io_config of the PyTorch input model, from the form's I/O spec.

    No input_shapes: Olive takes its dummy inputs from the form's example (dummy_inputs_func), and
    the dynamic axes keep the export shape-free.
    """
    return {
        "input_names": list(spec.input_names),
        "input_types": [t.dtype for t in spec.inputs],
        "output_names": list(spec.output_names),
        "dynamic_axes": {name: {str(axis): dim for axis, dim in axes.items()}
                         for name, axes in spec.dynamic_axes().items()},
    }


@dataclass(frozen=True)
class OliveInput:
    """What Olive starts from: its `input_model` config, the model's I/O spec, a line for the lineage."""

    config: dict[str, Any]
    spec: IOSpec
    description: str
    is_onnx: bool
    transformer: bool  # self-attention inside (NNCF's transformer scheme for OpenVINO quantization)


def _pytorch_input(ctx: BuildContext, model_dir: Path, work: Path, form: TorchForm | None = None) -> OliveInput:
    """The task's PyTorch form of a Hugging Face base, loaded by a hooks script Olive imports."""
    form = form or _torch_form(ctx, model_dir)
    spec = form.io_spec
    script = work / HOOKS_FILE
    np.savez(work / EXAMPLE_FILE, **{name: np.asarray(form.example[name]) for name in spec.input_names})
    script.write_text(_HOOKS_SCRIPT.format(task=ctx.base.task, example=EXAMPLE_FILE,
                                           input_names=list(spec.input_names)))
    config = {"type": "PyTorchModel", "model_path": str(model_dir), "model_script": str(script),
              "model_loader": "load_model", "dummy_inputs_func": "example_inputs", "io_config": io_config(spec)}
    return OliveInput(config, spec, f"PyTorchModel: the {ctx.base.task} task's PyTorch form for export "
                      f"({type(form.module).__name__})", is_onnx=False, transformer=_has_attention(form))


def _onnx_input(path: Path) -> OliveInput:
    """An ONNX file as Olive's ONNXModel; its I/O spec is the graph's own."""
    import onnx

    from edgeopt.adapters.onnxruntime import onnx_io_spec

    with library_errors("reading the ONNX input"):
        model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    transformer = bool(ops & {"Attention", "MultiHeadAttention"}) or ("Softmax" in ops and "LayerNormalization" in ops)
    return OliveInput({"type": "ONNXModel", "model_path": str(path)}, onnx_io_spec(model),
                      f"ONNXModel: {path.name}", is_onnx=True, transformer=transformer)


def _workflow_input(ctx: BuildContext, work: Path) -> OliveInput:
    """An ONNX parent, an ONNX base, or the PyTorch form of a Hugging Face base."""
    if ctx.parent is not None:
        if ctx.parent.format != "onnx":
            raise CandidateError(f"olive-workflow takes an ONNX parent, got format {ctx.parent.format!r}")
        return _onnx_input(ctx.parent.dir / ctx.parent.model_file)
    base = Path(ctx.base.path)
    if ctx.base.format == "onnx":
        onnx_file = base if base.is_file() else next(iter(sorted(base.glob("*.onnx"))), base)
        return _onnx_input(onnx_file)
    return _pytorch_input(ctx, _base_model_dir(ctx, "olive-workflow"), work)


def _base_config(model_input: OliveInput, work: Path, opset: int, passes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for name, cfg in passes.items():
        if cfg["type"] == "OnnxConversion":
            cfg.setdefault("target_opset", opset)
        elif cfg["type"] == "OpenVINOConversion" and not model_input.is_onnx:
            cfg.setdefault("user_script", str(work / HOOKS_FILE))
            cfg.setdefault("example_input_func", "example_inputs")
        passes[name] = cfg
    return {
        "input_model": model_input.config,
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


def _export_best(best: Any, out_dir: Path, spec: IOSpec) -> tuple[str, str, str, dict[str, Any], IOSpec]:
    """Copy Olive's chosen model into the candidate: (format, runtime, model_file, details, io_spec)."""
    model_type = str(best.model_type or "").lower()
    src = Path(best.model_path)
    if model_type == "onnxmodel":
        from edgeopt.adapters.onnxruntime import _finalize, _precision, _quantized_ops, onnx_io_spec

        onnx_src = src if src.is_file() else next(iter(sorted(src.glob("*.onnx"))), src)
        dst = out_dir / ONNX_FILE
        shutil.copy2(onnx_src, dst)
        model = _finalize(dst, source=onnx_src)  # inline any external data, run the checker
        got = onnx_io_spec(model)
        _check_names(got, spec)
        details = {"precision": _precision(model), "quantized_ops": _quantized_ops(model),
                   "inputs": list(got.input_names), "outputs": list(got.output_names)}
        return "onnx", "onnxruntime", ONNX_FILE, details, got
    if model_type == "openvinomodel":
        import openvino as ov

        from edgeopt.adapters.openvino import adopt_names, ir_io_spec

        xml = src if src.suffix == ".xml" else next(iter(sorted(src.glob("*.xml"))), None)
        if xml is None or not xml.with_suffix(".bin").is_file():
            raise CandidateError(f"Olive's OpenVINO model at {src} has no .xml/.bin pair")
        # OpenVINO's PyTorch conversion names outputs after the trace ("42"): the IR gets the form's
        # tensor and axis names. Saved without compression, so the weights stay exactly as Olive stored them.
        model = ov.Core().read_model(str(xml))
        adopt_names(model, spec)
        ov.save_model(model, str(out_dir / IR_FILE), compress_to_fp16=False)
        got = ir_io_spec(model)
        _check_names(got, spec)
        # The project's OpenVINO runtime reads this; FP32 unless a candidate asks otherwise.
        return "openvino-ir", "openvino", IR_FILE, {"inference_precision": "f32"}, got
    raise CandidateError(f"Olive returned a model of type {best.model_type!r}, which no runtime here loads")


def _check_names(got: IOSpec, want: IOSpec) -> None:
    """Olive's model must take the form's inputs (by name) and give its outputs."""
    if not set(want.input_names) <= set(got.input_names) or not set(want.output_names) <= set(got.output_names):
        raise CandidateError(f"Olive's model has inputs {list(got.input_names)} and outputs {list(got.output_names)}, "
                             f"expected {list(want.input_names)} -> {list(want.output_names)}")


def _finish(ctx: BuildContext, work: Path, config: dict[str, Any], output: Any, search: bool,
            names: dict[str, str], extra: dict[str, Any], model_input: OliveInput) -> BuildOutput:
    from importlib import metadata

    best = output.get_best_candidate() if output is not None else None
    if best is None:
        raise CandidateError("Olive produced no output model (every pass or search point failed)")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    with library_errors("copying Olive's output model"):
        fmt, runtime, model_file, model_details, spec = _export_best(best, ctx.out_dir, model_input.spec)
    output_dir = work / "output"
    artifacts = store_olive_artifacts(output_dir, ctx.out_dir / OLIVE_DIR, config, search)
    footprint_path = ctx.out_dir / OLIVE_DIR / "footprint.json"
    footprint = json.loads(footprint_path.read_text()) if footprint_path.is_file() else {}
    passes = lineage_passes(footprint, best.model_id, names)
    precision = model_details.pop("precision", None) or (
        "int8" if any(p["name"] in _QUANTIZERS for p in passes) else "fp32")
    details = {
        "olive": metadata.version("olive-ai"),
        "input_model": model_input.description,
        "task": ctx.base.task,
        "passes": passes,
        "pass_list": [p["name"] for p in passes],
        "olive_model_id": best.model_id,
        "olive_artifacts": artifacts,
        **model_details,
        **extra,
    }
    return BuildOutput(format=fmt, runtime=runtime, precision=precision, model_file=model_file, details=details,
                       io_spec=spec.to_dict())


# --------------------------------------------------------------------------------------------
# olive-workflow


def _workflow_passes(opts: OliveWorkflowOptions, model_dir: Path, calib: str | None,
                     transformer: bool) -> dict[str, dict[str, Any]]:
    passes: dict[str, dict[str, Any]] = {}
    for name in opts.passes:
        cfg: dict[str, Any] = {"type": PASS_TYPES[name]}
        if name == "transformers_optimization":
            # ORT's optimizer for BERT-style encoders (the only transformer family it fuses here).
            cfg.update({"model_type": "bert", **_bert_shape(model_dir)})
        if name in _NEEDS_CALIBRATION:
            cfg["data_config"] = calib
        if name == "openvino_quantization" and transformer:
            cfg["model_type"] = "TRANSFORMER"  # NNCF's transformer scheme (as nncf-ptq-int8 uses)
        cfg.update(opts.pass_options.get(name, {}))
        passes[name] = cfg
    return passes


def _build_workflow(ctx: BuildContext) -> BuildOutput:
    opts: OliveWorkflowOptions = ctx.options
    with tempfile.TemporaryDirectory(prefix="edgeopt-olive-") as tmp:
        work = Path(tmp)
        model_input = _workflow_input(ctx, work)
        spec = model_input.spec
        extra: dict[str, Any] = {"workflow": "fixed pass list"}
        if model_input.is_onnx and opts.passes[0] == "conversion":
            # Already ONNX: Olive's OnnxConversion takes PyTorch models only.
            opts = opts.model_copy(update={"passes": opts.passes[1:]})
            extra["skipped_passes"] = {"conversion": "the input is already ONNX"}
        elif not model_input.is_onnx and opts.passes[0] not in ("conversion", "openvino_conversion"):
            raise CandidateError(f"olive-workflow: {opts.passes[0]} needs an ONNX model; from a Hugging Face base "
                                 "start the pass list with conversion (or give an ONNX parent)")
        if not opts.passes:
            raise CandidateError("olive-workflow: nothing left to run (the input is already ONNX and the only "
                                 "pass was conversion)")
        data_configs = []
        n_cal = 0
        if any(p in _NEEDS_CALIBRATION for p in opts.passes):
            feeds = _calibration(ctx, spec)
            n_cal = min(len(feeds), opts.calibration_samples)
            params = _write_raw(work / "calibration", spec, feeds[:n_cal])
            data_configs.append({"name": "edgeopt_calibration", "type": "RawDataContainer",
                                 "load_dataset_config": {"params": params}})
        passes = _workflow_passes(opts, Path(ctx.base.path), "edgeopt_calibration" if data_configs else None,
                                  transformer=model_input.transformer)
        config = _base_config(model_input, work, opts.opset, passes)
        config["data_configs"] = data_configs
        with library_errors("Olive workflow"):
            output = run_olive(config, ctx.threads)
        names = {PASS_TYPES[p].lower(): p for p in opts.passes}
        if n_cal:
            extra["calibration_samples"] = n_cal
        result = _finish(ctx, work, config, output, search=False, names=names, extra=extra,
                         model_input=model_input)
    ov_fp16 = opts.pass_options.get("openvino_conversion", {}).get("compress_to_fp16", True)  # Olive's default
    if result.format == "openvino-ir" and result.precision == "fp32" and ov_fp16:
        result = replace(result, precision="fp16")  # FP16 weights in the IR, FP32 inference
    return result


register_recipe(
    Recipe(
        name="olive-workflow",
        framework="olive",
        options_model=OliveWorkflowOptions,
        accepts=("base", "onnx"),
        base_formats=("hf", "onnx"),
        build=_build_workflow,
        description="A fixed Microsoft Olive pass list from the task's PyTorch form or an ONNX model (ONNX "
        "conversion, ORT fusion, dynamic/static INT8; or OpenVINO conversion/quantization).",
        requires=Requirements(modules=("olive",)),
    )
)


# --------------------------------------------------------------------------------------------
# olive-optimize


def _reference_sign_bits(ctx: BuildContext, model_dir: Path, spec: IOSpec, feeds: list[Feed]) -> np.ndarray:
    """Sign bits of the FP32 reference outputs (the task's form as torch-eager runs it), [n, 1, dim].

    One batch of every evaluation feed; one label row per raw file.
    """
    import torch

    torch.set_num_threads(max(1, ctx.threads))
    model = _torch_form(ctx, model_dir, for_export=False).module
    batch = spec.cast({name: stack_feeds(feeds, name) for name in spec.input_names})
    with torch.inference_mode():
        out = model(*(torch.from_numpy(batch[name]) for name in spec.input_names))
    emb = out[0] if isinstance(out, tuple) else out
    return (emb.numpy() > 0).astype(np.int64)[:, None, :]


def _build_optimize(ctx: BuildContext) -> BuildOutput:
    opts: OliveOptimizeOptions = ctx.options
    model_dir = _base_model_dir(ctx, "olive-optimize")
    if ctx.base.task != TEXT_TASK:
        raise CandidateError(f"olive-optimize serves {TEXT_TASK} only (its metric is embedding sign agreement)")
    form = _torch_form(ctx, model_dir)
    spec = form.io_spec
    feeds = _calibration(ctx, spec)
    if len(feeds) < 2:
        raise CandidateError("olive-optimize needs at least 2 calibration samples (calibration + evaluation)")
    n_eval = min(opts.eval_samples, len(feeds) // 2)
    n_cal = min(opts.calibration_samples, len(feeds) - n_eval)
    cal_feeds, eval_feeds = feeds[:n_cal], feeds[n_cal : n_cal + n_eval]
    with tempfile.TemporaryDirectory(prefix="edgeopt-olive-") as tmp:
        work = Path(tmp)
        labels = _reference_sign_bits(ctx, model_dir, spec, eval_feeds)
        dim = int(labels.shape[-1])
        cal_params = _write_raw(work / "calibration", spec, cal_feeds)
        eval_params = _write_raw(work / "evaluation", spec, eval_feeds, labels)
        session = {"onnx": {"session_options": {"intra_op_num_threads": ctx.threads, "inter_op_num_threads": 1}}}
        prio = {"latency": 1, "fidelity": 2} if opts.rank_by == "latency" else {"latency": 2, "fidelity": 1}
        quant: dict[str, Any] = {"type": "OnnxQuantization", "data_config": "edgeopt_calibration", **opts.fixed}
        if len(set(opts.quant_modes)) == 1:
            quant["quant_mode"] = opts.quant_modes[0]
        passes = {
            "conversion": {"type": "OnnxConversion"},
            "transformers_optimization": {"type": "OrtTransformersOptimization", "model_type": "bert",
                                          **_bert_shape(model_dir)},
            "quantization": quant,
        }
        model_input = _pytorch_input(ctx, model_dir, work, form)
        config = _base_config(model_input, work, opts.opset, passes)
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
        result = _finish(ctx, work, config, output, search=True, names=names, extra=extra, model_input=model_input)
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
        # Scored by the embedding's sign agreement, with ORT's BERT fusion: a sentence-encoder search.
        tasks=(TEXT_TASK,),
    )
)
