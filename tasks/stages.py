"""One Prefect task per pipeline stage. The work lives in `edgeopt.pipeline`'s stage modules; tasks only add
orchestration: names, caching keyed on the inputs, and retries where they make sense."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from edgeopt import stageclock
from edgeopt.config import CandidateSpec
from edgeopt.pipeline import building, data, measuring, promoting, runs, selecting
from edgeopt.pipeline.context import ModelInputs, PipelineContext, PreparedData
from edgeopt.results import CandidateRecord, CandidateResult, Measurement, Promotion, Selection


@task(name="prepare-data", cache_policy=NONE)
def prepare_data(ctx: PipelineContext) -> PreparedData:
    return data.prepare_data(ctx)


@task(name="version-data", cache_policy=NONE)
def version_data(ctx: PipelineContext) -> dict[str, str]:
    from edgeopt.versioning import track_prepared

    with stageclock.stage("version"):
        return track_prepared(ctx)


@task(name="validate-data", cache_policy=NONE)
def validate_data(ctx: PipelineContext) -> dict[str, Any]:
    # Returned, not raised: the flow stops with one clear message instead of a task traceback.
    with stageclock.stage("validate"):
        return data.validation_report(ctx).model_dump()


@task(name="prepare-inputs", cache_policy=NONE)
def prepare_inputs(ctx: PipelineContext, prepared: PreparedData) -> ModelInputs:
    return data.prepare_inputs(ctx, prepared)


def _build_key(_: Any, p: dict[str, Any]) -> str:
    return f"edgeopt-build-{p['ctx'].namespace}-{p['spec'].name}-{p['cache_key']}"


@task(name="build-candidate", task_run_name="build-{spec.name}", cache_key_fn=_build_key,
      persist_result=True, result_serializer="json")
def build_candidate(
    ctx: PipelineContext, spec: CandidateSpec, prepared: PreparedData, inputs: ModelInputs,
    parent: CandidateRecord | None, cache_key: str,
) -> CandidateRecord:
    with stageclock.stage("build"):
        return building.build_candidate(ctx, spec, prepared, inputs, parent, cache_key)


@task(name="measure-round", task_run_name="measure-{record.name}-round-{index}", cache_policy=NONE)
def measure_round(ctx: PipelineContext, session: measuring.Session, record: CandidateRecord, inputs: ModelInputs,
                  index: int, write_outputs: bool) -> Measurement:
    # Not cached by Prefect: the measuring session decides what is reused (edgeopt.pipeline.measuring);
    # the benchmark slot (one measurement per machine) is held inside, for every entry point alike.
    return measuring.measure_round(ctx, session, record, inputs, index, write_outputs)


@task(name="track-candidates", cache_policy=NONE)
def track_candidates(ctx: PipelineContext, run: runs.TrackedRun, rows: list[CandidateResult],
                     records: dict[str, CandidateRecord]) -> list[CandidateResult]:
    return runs.track_candidates(ctx, run, rows, records)


@task(name="select-candidate", cache_policy=NONE)
def select(ctx: PipelineContext, run: runs.TrackedRun, rows: list[CandidateResult]) -> Selection:
    return selecting.select_and_log(ctx, run, rows)


@task(name="promote-champion", cache_policy=NONE)
def promote(ctx: PipelineContext, selection: Selection, prepared: PreparedData) -> Promotion:
    return promoting.promote_pick(ctx, selection, prepared)


@task(name="tag-target", cache_policy=NONE)
def tag_target(run: runs.TrackedRun, rows: list[CandidateResult], target: str) -> None:
    """Tag the pipeline run and every candidate run with the machine that measured them."""
    import mlflow
    from prefect.runtime import flow_run

    client = mlflow.MlflowClient()
    client.set_tag(run.run_id, "edgeopt.target", target)
    # The flow run that produced this MLflow run: the optimize flow finds a target's results by it.
    client.set_tag(run.run_id, "edgeopt.prefect_flow_run_id", str(flow_run.id or ""))
    if target != "local":  # tell the target's run apart from the host's in the runs list
        client.set_tag(run.run_id, "mlflow.runName", f"{run.lineage.get('edgeopt.pipeline', 'pipeline')}@{target}")
    for row in rows:
        if row.mlflow_run_id:
            client.set_tag(row.mlflow_run_id, "edgeopt.target", target)


@task(name="write-report", cache_policy=NONE)
def write_report(ctx: PipelineContext, selection: Selection, promotion: Promotion | None,
                 run: runs.TrackedRun | None) -> str:
    from edgeopt.report import write_report as write

    return str(write(ctx, selection, promotion, run))
