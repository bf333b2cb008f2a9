"""The main flow: every pipeline namespace in params.yaml runs the same sub-flow (Kedro-style).

prepare data -> version (DVC) -> validate (GX) -> tokenize -> build candidates -> measure
-> evaluate -> track (MLflow) -> select (gates, Pareto) -> promote (alias)
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import Failed

from edgeopt import pipeline
from edgeopt.config import CandidateSpec, load_params
from edgeopt.pipeline import PipelineContext
from edgeopt.results import CandidateRecord, Measurement, Promotion, Record, Selection
from tasks import stages


class PipelineOutcome(Record):
    """What one namespace's run did: returned to callers and tests."""

    namespace: str
    status: str  # "completed" | "stopped"
    message: str = ""
    mlflow_run_id: str | None = None
    selection: Selection | None = None
    promotion: Promotion | None = None


def _stopped(ctx: PipelineContext, run: pipeline.TrackedRun | None, message: str) -> PipelineOutcome:
    if run is not None:
        import mlflow

        from edgeopt import tracking

        mlflow.MlflowClient().set_tag(run.run_id, "edgeopt.stopped", message[:5000])
        tracking.finish_pipeline_run(run.run_id, "FAILED")
    return PipelineOutcome(namespace=ctx.namespace, status="stopped", message=message,
                           mlflow_run_id=run.run_id if run else None)


@flow(name="optimize-model", flow_run_name="optimize-{namespace}")
def optimize_model(params_path: str = "params.yaml", namespace: str = "minilm",
                   promote: bool = True) -> PipelineOutcome:
    logger = get_run_logger()
    path = Path(params_path).resolve()
    ctx = PipelineContext(load_params(path), namespace, path.parent)

    prepared = stages.prepare_data(ctx)
    dvc_info = stages.version_data(ctx)
    run = pipeline.start_tracking(ctx, prepared, dvc_info)
    report = stages.validate_data(ctx)
    if not report["success"]:
        message = "data validation failed: " + ", ".join(report["failed"])
        logger.error(message)
        return _stopped(ctx, run, message)

    inputs = stages.tokenize_inputs(ctx, prepared)

    def build(spec: CandidateSpec, parent: CandidateRecord | None, key: str) -> CandidateRecord:
        task = stages.build_candidate
        # A cached result is only good while its folder exists (a clean clone, a deleted output).
        if not pipeline.candidate_present(ctx, spec.name, key):
            task = task.with_options(refresh_cache=True)
        return task(ctx, spec, prepared, inputs, parent, key, return_state=True).result()

    def measure(record: CandidateRecord, key: str) -> Measurement:
        task = stages.measure_candidate
        if not pipeline.measurement_present(ctx, record.name, key):
            task = task.with_options(refresh_cache=True)
        return task(ctx, record, inputs, key, return_state=True).result()

    records, rows = pipeline.run_candidates(ctx, prepared, inputs, build, measure)
    for row in rows:
        if row.status != "ok":
            logger.warning("%s %s: %s", row.name, row.status, row.error)
    rows = stages.track_candidates(ctx, run, rows, records)
    selection = stages.select(ctx, run, rows)
    logger.info("frontier: %s; pick: %s (%s)", selection.frontier, selection.pick, selection.reason)
    promotion = stages.promote(ctx, selection, prepared) if promote else None
    if promotion is not None:
        logger.info("promotion: %s", promotion.reason if not promotion.promoted else
                    f"{promotion.model_name}@{promotion.alias} -> version {promotion.version}")
    pipeline.finish_tracking(run, selection, promotion)
    return PipelineOutcome(namespace=namespace, status="completed", mlflow_run_id=run.run_id,
                           selection=selection, promotion=promotion)


@flow(name="edgeopt", log_prints=True)
def optimize(params_path: str = "params.yaml", pipelines: list[str] | None = None,
             promote: bool = True) -> list[PipelineOutcome]:
    """Run the same pipeline for each namespace (all of params.yaml's `pipelines` by default)."""
    params = load_params(params_path)
    names = pipelines or list(params.pipelines)
    outcomes = [optimize_model(params_path, name, promote) for name in names]
    stopped = [o for o in outcomes if o.status != "completed"]
    if stopped:
        # A Failed state without a traceback: the message already names the problem.
        return Failed(message="; ".join(f"{o.namespace}: {o.message}" for o in stopped),  # type: ignore[return-value]
                      data=outcomes)
    return outcomes
