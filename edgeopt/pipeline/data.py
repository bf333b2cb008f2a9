"""The data stages: copy the base model in, build and validate the evaluation data, make the model inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import stageclock
from edgeopt.errors import CandidateError, UserError
from edgeopt.io.atomic import atomic_file
from edgeopt.pipeline.context import ModelInputs, PipelineContext, PreparedData
from edgeopt.recipes import BaseModelInfo
from edgeopt.validation import ValidationReport, require_valid
from edgeopt.workloads.base import get_workload


def prepare_data(ctx: PipelineContext) -> PreparedData:
    """Copy the base model into the workspace and build the evaluation data (both DVC outputs)."""
    ws = ctx.ws
    ws.root.mkdir(parents=True, exist_ok=True)
    workload = get_workload(ctx.cfg.task)
    with stageclock.stage("prepare"):
        base = workload.materialize_base(ctx.cfg.model, ws.base_dir, ctx.project_root)
        summary = workload.build_data(resolve_data_paths(ctx), ws.data_dir, base)  # causal-lm: scored by base
    prepared = PreparedData(
        base_path=str(base.path), base_format=base.format,
        tokenizer_dir=str(base.tokenizer_dir) if base.tokenizer_dir else None,
        base_sha256=base.sha256, task=base.task, data_digest=summary.sha256,
        n_pairs=summary.n_pairs, n_sentences=summary.n_sentences,
        base_variants={k: str(v) for k, v in base.variants.items()}, base_details=base.details,
        base_io_spec=base_io_spec(workload, base),
    )
    prepared.write(ws.base_info)
    return prepared


def base_io_spec(workload: Any, base: BaseModelInfo) -> dict[str, Any] | None:
    """The base model's tensor I/O spec: an ONNX graph's own, else the task's PyTorch form's.

    None where the base has neither (a generation model is a stateful decoder, not one call on named tensors).
    """
    if base.format == "onnx":  # as the file declares it: a runtime that cannot load it fails its candidates
        import onnx

        from edgeopt.adapters.onnxruntime import onnx_io_spec

        return onnx_io_spec(onnx.load(str(base.path), load_external_data=False)).to_dict()
    try:
        return dict(workload.torch_form(Path(base.path)).io_spec.to_dict())
    except CandidateError:
        return None


def resolve_data_paths(ctx: PipelineContext) -> Any:
    """Paths in params.yaml are relative to its folder, not to the current directory."""
    return ctx.cfg.data.with_paths_under(ctx.project_root)


def load_prepared(ctx: PipelineContext) -> PreparedData:
    path = ctx.ws.base_info
    if not path.is_file():
        raise UserError(f"{path} is missing: run the prepare stage first")
    return PreparedData.model_validate_json(path.read_text())


def validation_report(ctx: PipelineContext) -> ValidationReport:
    """The task's Great Expectations suites over the evaluation data (written to the workspace)."""
    return get_workload(ctx.cfg.task).validate_data(ctx.ws.data_dir, ctx.ws.validation_report)


def validate_data(ctx: PipelineContext) -> dict[str, object]:
    """Great Expectations over the evaluation data; a failed expectation stops the run."""
    report = validation_report(ctx)
    require_valid(report)
    return report.model_dump()


def prepare_inputs(ctx: PipelineContext, prepared: PreparedData) -> ModelInputs:
    """The task's input arrays (token ids, pixels, ...), made once, so each candidate sees identical inputs."""
    with stageclock.stage("inputs"):
        arrays = get_workload(ctx.cfg.task).prepare_inputs(prepared.base(), ctx.ws.data_dir, ctx.cfg.benchmark)
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(arrays[key].tobytes())
    path = ctx.ws.inputs
    with atomic_file(path) as tmp, tmp.open("wb") as f:  # a file object: np.savez adds no ".npz" to it
        np.savez(f, **arrays)
    return ModelInputs(path=str(path), digest=digest.hexdigest(),
                       shapes={k: list(v.shape) for k, v in arrays.items()})
