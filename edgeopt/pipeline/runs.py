"""The MLflow bookkeeping of a pipeline run: its parent run, one child run per candidate, and its end."""

from __future__ import annotations

import json

from edgeopt import tracking
from edgeopt.errors import UserError
from edgeopt.io.atomic import write_text_atomic
from edgeopt.pipeline.context import PipelineContext, PreparedData
from edgeopt.results import CandidateRecord, CandidateResult, Promotion, Record, Selection
from edgeopt.workloads.base import get_workload


class TrackedRun(Record):
    """The MLflow parent run of one pipeline run, and the lineage every child inherits."""

    experiment_id: str
    run_id: str
    lineage: dict[str, str]


def start_tracking(ctx: PipelineContext, prepared: PreparedData, dvc: dict[str, str]) -> TrackedRun:
    """Open the pipeline's parent run, tagged with its lineage, and log the evaluation data to it."""
    experiment_id = tracking.configure(ctx.params, ctx.project_root)
    lineage = tracking.lineage_tags(ctx.namespace, prepared.base_sha256, prepared.data_digest,
                                    ctx.project_root, dvc)
    run_id = tracking.start_pipeline_run(experiment_id, ctx.namespace, lineage,
                                         ctx.cfg.model_dump(mode="json"))
    rows = get_workload(ctx.cfg.task).dataset_rows(ctx.ws.data_dir)
    tracking.log_dataset(run_id, ctx.ws.data_dir, rows, f"{ctx.namespace}-eval", prepared.data_digest)
    if prepared.base_io_spec is not None:
        tracking.log_json(run_id, prepared.base_io_spec, "base_io_spec.json")
    run = TrackedRun(experiment_id=experiment_id, run_id=run_id, lineage=lineage)
    run.write(ctx.ws.run_info)
    return run


def load_tracked_run(ctx: PipelineContext) -> TrackedRun:
    if not ctx.ws.run_info.is_file():
        raise UserError(f"{ctx.ws.run_info} is missing: run the candidates stage first")
    tracking.configure(ctx.params, ctx.project_root)
    return TrackedRun.model_validate_json(ctx.ws.run_info.read_text())


def track_candidates(ctx: PipelineContext, run: TrackedRun, rows: list[CandidateResult],
                     records: dict[str, CandidateRecord]) -> list[CandidateResult]:
    """One child run per candidate (also for failed ones); returns rows with their run ids."""
    ws = ctx.ws
    out = []
    for row in rows:
        rec = records.get(row.name)
        cand_dir = ws.candidate_dir(row.name) if rec else None
        meas_dir = ws.measurement_dir(row.name)
        run_id = tracking.log_candidate(run.experiment_id, run.run_id, row, rec, cand_dir,
                                        meas_dir if meas_dir.is_dir() else None, run.lineage)
        out.append(row.model_copy(update={"mlflow_run_id": run_id}))
    write_results(ctx, out)
    return out


def write_results(ctx: PipelineContext, rows: list[CandidateResult]) -> None:
    write_text_atomic(ctx.ws.results, json.dumps([r.model_dump(mode="json") for r in rows], indent=2))


def load_results(ctx: PipelineContext) -> list[CandidateResult]:
    if not ctx.ws.results.is_file():
        raise UserError(f"{ctx.ws.results} is missing: run the candidates stage first")
    return [CandidateResult.model_validate(r) for r in json.loads(ctx.ws.results.read_text())]


def finish_tracking(run: TrackedRun, selection: Selection, promotion: Promotion | None) -> None:
    """Log the promotion (if any) to the parent run and close it as FINISHED."""
    import mlflow

    client = mlflow.MlflowClient()
    if promotion is not None:
        client.log_dict(run.run_id, promotion.model_dump(mode="json"), "promotion.json")
        client.set_tag(run.run_id, "edgeopt.promoted", str(promotion.promoted).lower())
        if promotion.version:
            client.set_tag(run.run_id, "edgeopt.model_version", promotion.version)
    tracking.finish_pipeline_run(run.run_id, "FINISHED")
