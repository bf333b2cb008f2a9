"""The main flow: every pipeline namespace in params.yaml runs the same sub-flow (Kedro-style).

prepare data -> version (DVC) -> validate (GX) -> inputs -> build candidates (fanned out through
the configured task runner) -> measure (one benchmark per machine) -> evaluate -> track (MLflow)
-> select (gates, Pareto) -> promote (alias) -> report -> measure on every target (their workers)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed
from pydantic import Field

from edgeopt.config import load_params
from edgeopt.errors import ExitCode
from edgeopt.io.prefect_logs import quiet_expected_failures
from edgeopt.orchestration import LOCAL
from edgeopt.outcome import verdict
from edgeopt.pipeline.context import PipelineContext
from edgeopt.pipeline.runs import TrackedRun, finish_tracking, start_tracking
from edgeopt.preflight import check_tracking_store, preflight
from edgeopt.results import CandidateResult, Promotion, Record, Selection
from flows.candidates import build_all, measure_all
from flows.targets import TargetOutcome, dispatch_to_targets
from tasks import stages


class PipelineOutcome(Record):
    """What one namespace's run did: returned to callers and tests."""

    namespace: str
    status: str  # "completed" | "stopped"
    message: str = ""
    # The verdict (edgeopt.outcome): the process's exit code for this namespace, and its one line.
    exit_code: int = ExitCode.OK
    summary: str = ""
    mlflow_run_id: str | None = None
    selection: Selection | None = None
    promotion: Promotion | None = None
    report: str | None = None  # path of report.html
    flow_run_id: str | None = None  # the Prefect flow run of this namespace
    targets: list[TargetOutcome] = Field(default_factory=list)


def _stopped(ctx: PipelineContext, run: TrackedRun | None, message: str,
             code: ExitCode = ExitCode.USER) -> PipelineOutcome:
    if run is not None:
        import mlflow

        from edgeopt import tracking

        mlflow.MlflowClient().set_tag(run.run_id, "edgeopt.stopped", message[:5000])
        tracking.finish_pipeline_run(run.run_id, "FAILED")
    return PipelineOutcome(namespace=ctx.namespace, status="stopped", message=message, exit_code=code,
                           summary=f"{ctx.namespace}: {message}", mlflow_run_id=run.run_id if run else None)


def _interrupted(run: TrackedRun, err: BaseException) -> None:
    """Mark the pipeline run, and any candidate run it left open, KILLED, with the reason."""
    import mlflow

    from edgeopt import tracking

    reason = f"interrupted ({type(err).__name__}{': ' + str(err) if str(err) else ''})"
    client = mlflow.MlflowClient()
    open_children = client.search_runs([run.experiment_id], filter_string=(
        f"tags.`mlflow.parentRunId` = '{run.run_id}' and attributes.status = 'RUNNING'"))
    for r in [*open_children, client.get_run(run.run_id)]:
        client.set_tag(r.info.run_id, "edgeopt.killed_reason", reason)
        tracking.finish_pipeline_run(r.info.run_id, "KILLED")


def _report_failures(logger: Any, rows: list[CandidateResult]) -> None:
    """One line per candidate that did not make it: name, stage, reason (its log path is in the reason)."""
    for row in rows:
        if row.status == "failed":
            logger.warning("%s FAILED at %s: %s", row.name, row.stage or "?",
                           (row.error or "").strip().splitlines()[0] if row.error else "no reason recorded")


@flow(name="optimize-model", flow_run_name="optimize-{namespace}")
def optimize_model(params_path: str = "params.yaml", namespace: str = "minilm", promote: bool = True,
                   targets: list[str] | None = None, checked: bool = False) -> PipelineOutcome:
    """One namespace end to end; then its candidates are measured on `targets` (default: all in params).

    `checked`: the caller (the CLI) already ran the preflight; a deployment's run does it here.
    """
    from prefect.runtime import flow_run

    quiet_expected_failures()
    logger = get_run_logger()
    path = Path(params_path).resolve()
    ctx = PipelineContext(load_params(path), namespace, path.parent)
    if not checked:
        preflight(ctx)
        check_tracking_store(ctx.params, ctx.project_root)

    prepared = stages.prepare_data(ctx)
    dvc_info = stages.version_data(ctx)
    run = start_tracking(ctx, prepared, dvc_info)
    try:
        report = stages.validate_data(ctx)
        if not report["success"]:
            message = "data validation failed: " + ", ".join(report["failed"])
            logger.error(message)
            return _stopped(ctx, run, message)

        inputs = stages.prepare_inputs(ctx, prepared)
        built, failed = build_all(ctx, prepared, inputs)
        records, rows = measure_all(ctx, prepared, inputs, built, failed)
        _report_failures(logger, rows)
        rows = stages.track_candidates(ctx, run, rows, records)
        stages.tag_target(run, rows, LOCAL)
        selection = stages.select(ctx, run, rows)
        logger.info("frontier: %s; pick: %s (%s)", selection.frontier, selection.pick, selection.reason)
        promotion = stages.promote(ctx, selection, prepared) if promote else None
        if promotion is not None:
            logger.info("promotion: %s", promotion.reason if not promotion.promoted else
                        f"{promotion.model_name}@{promotion.alias} -> version {promotion.version}")
        report_path = stages.write_report(ctx, selection, promotion, run)
        finish_tracking(run, selection, promotion)
    except BaseException as err:  # Ctrl-C, SIGTERM, a crash: no run stays RUNNING
        _interrupted(run, err)
        raise
    names = list(ctx.params.targets) if targets is None else targets
    target_outcomes = dispatch_to_targets(ctx, str(path), names, promote, run.experiment_id) if names else []
    result = verdict(selection, promotion, promote)
    return PipelineOutcome(namespace=namespace, status="completed", exit_code=result.code, summary=result.line,
                           mlflow_run_id=run.run_id, selection=selection, promotion=promotion,
                           report=report_path, flow_run_id=str(flow_run.id), targets=target_outcomes)


@flow(name="edgeopt", log_prints=True)
def optimize(params_path: str = "params.yaml", pipelines: list[str] | None = None,
             promote: bool = True, targets: list[str] | None = None, checked: bool = False) -> list[PipelineOutcome]:
    """Run the same pipeline for each namespace (all of params.yaml's `pipelines` by default),
    then on each measurement target (all of params.yaml's `targets` by default; [] for none).

    The flow run fails (deployments, schedules) exactly when `edgeopt run` would exit non-zero.
    """
    params = load_params(params_path)
    names = pipelines or list(params.pipelines)
    outcomes = [optimize_model(params_path, name, promote, targets, checked) for name in names]
    problems = [o.summary for o in outcomes if o.exit_code != ExitCode.OK]
    problems += [f"{o.namespace} on {t.target}: {t.message}" for o in outcomes for t in o.targets
                 if t.status != "completed"]
    if problems:
        # A Failed state without a traceback: the message already names the problem.
        return Failed(message="; ".join(problems), data=outcomes)  # type: ignore[return-value]
    return outcomes
