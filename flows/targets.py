"""Hardware in the loop: each target's worker measures the host's candidates on the device.

The optimize flow builds and measures on its own machine, then starts one run of the
`measure-target/<target>` deployment per target. That deployment sits on the target's own work
pool, so the run lands on the device whose worker polls that pool. There it measures the built
candidates (the output folder is shared, or synced with `dvc pull`), tracks them in MLflow tagged
with the target, selects under the same gates and moves the target's own alias
(`<alias>-<target>`, e.g. `champion-edge-a`). The optimize flow reads each outcome from MLflow,
the one store both sides reach.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from prefect import flow, get_run_logger

from edgeopt.config import load_params
from edgeopt.orchestration import (
    TARGET_FLOW,
    require_target,
    target_alias,
    target_context,
    target_deployment,
    target_pool,
)
from edgeopt.pipeline.context import PipelineContext
from edgeopt.pipeline.data import load_prepared
from edgeopt.pipeline.planning import ordered_candidates
from edgeopt.pipeline.runs import finish_tracking, start_tracking
from edgeopt.results import CandidateRecord, Record
from edgeopt.versioning import lock_revision, stage_name
from flows.candidates import measure_all
from tasks import stages

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

POLL_S = 2.0  # how often the optimize flow checks its targets' runs


class TargetOutcome(Record):
    namespace: str
    target: str
    status: str  # "completed" | "failed" | "timed-out" | "not-deployed"
    message: str = ""
    work_pool: str | None = None
    flow_run_id: str | None = None
    mlflow_run_id: str | None = None
    pick: str | None = None
    promoted: bool = False
    alias: str | None = None
    version: str | None = None


def built_records(ctx: PipelineContext) -> tuple[dict[str, CandidateRecord], dict[str, str]]:
    """The host's built candidates, read from the shared candidates folder."""
    records, missing = {}, {}
    for spec in ordered_candidates(ctx.cfg):
        path = ctx.ws.candidate_dir(spec.name) / "candidate.json"
        if path.is_file():
            records[spec.name] = CandidateRecord.model_validate_json(path.read_text())
        else:
            missing[spec.name] = f"{spec.name} was not built on the host (no {path})"
    return records, missing


@flow(name=TARGET_FLOW, flow_run_name="measure-{namespace}-on-{target}")
def measure_target(params_path: str = "params.yaml", namespace: str = "minilm", target: str = "edge",
                   promote: bool = True) -> TargetOutcome:
    """Measure the built candidates of one namespace on this machine, as `target`."""
    from prefect.runtime import flow_run

    logger = get_run_logger()
    path = Path(params_path).resolve()
    ctx = target_context(load_params(path), namespace, target, path.parent)
    prepared = load_prepared(ctx)
    inputs = stages.prepare_inputs(ctx, prepared)  # the same inputs, in the target's own folder
    run = start_tracking(ctx, prepared, lock_revision(ctx.project_root, stage_name(namespace)))
    built, missing = built_records(ctx)
    records, rows = measure_all(ctx, prepared, inputs, built, missing)
    rows = stages.track_candidates(ctx, run, rows, records)
    stages.tag_target(run, rows, target)
    selection = stages.select(ctx, run, rows)
    logger.info("%s on %s: frontier %s; pick %s", namespace, target, selection.frontier, selection.pick)
    promotion = stages.promote(ctx, selection, prepared) if promote else None
    stages.write_report(ctx, selection, promotion, run)
    finish_tracking(run, selection, promotion)
    return TargetOutcome(namespace=namespace, target=target, status="completed",
                         work_pool=target_pool(ctx.params, target), flow_run_id=str(flow_run.id),
                         mlflow_run_id=run.run_id, pick=selection.pick,
                         promoted=bool(promotion and promotion.promoted), alias=ctx.cfg.registry.alias,
                         version=promotion.version if promotion else None)


def dispatch_to_targets(ctx: PipelineContext, params_path: str, targets: list[str], promote: bool,
                        experiment_id: str) -> list[TargetOutcome]:
    """Start every target's measurement run, then wait (bounded by each target's timeout_s)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelling

    logger = get_run_logger()
    outcomes: dict[str, TargetOutcome] = {}
    waiting: dict[str, tuple[str, float]] = {}
    for t in targets:
        require_target(ctx.params, t)
        base = TargetOutcome(namespace=ctx.namespace, target=t, status="failed",
                             work_pool=target_pool(ctx.params, t), alias=target_alias(ctx.cfg.registry.alias, t))
        parameters = {"params_path": params_path, "namespace": ctx.namespace, "target": t, "promote": promote}
        try:
            # timeout=0: start it and return; the runs of all targets proceed at the same time.
            run: FlowRun = run_deployment(  # type: ignore[assignment]  # the sync variant, here
                target_deployment(t), timeout=0, tags=["edgeopt", f"target:{t}"], parameters=parameters)
        except ObjectNotFound:
            outcomes[t] = base.model_copy(update={
                "status": "not-deployed",
                "message": f"deployment {target_deployment(t)} is not registered "
                           "(python -m deployments.deploy register)"})
            continue
        logger.info("measuring on %s: flow run %s on pool %s", t, run.id, base.work_pool)
        outcomes[t] = base.model_copy(update={"flow_run_id": str(run.id)})
        waiting[t] = (str(run.id), time.monotonic() + ctx.params.targets[t].timeout_s)
    with get_client(sync_client=True) as client:
        while waiting:
            for t, (run_id, deadline) in list(waiting.items()):
                state = client.read_flow_run(UUID(run_id)).state
                if state is not None and state.is_final():
                    outcomes[t] = _finished(outcomes[t], state.name or "", state.message or "", experiment_id,
                                            state.is_completed())
                    del waiting[t]
                elif time.monotonic() > deadline:
                    client.set_flow_run_state(UUID(run_id), Cancelling(message="edgeopt: target timed out"), force=True)
                    outcomes[t] = outcomes[t].model_copy(update={
                        "status": "timed-out",
                        "message": f"no result within {ctx.params.targets[t].timeout_s:.0f} s "
                                   f"(is a worker polling pool {outcomes[t].work_pool}?)"})
                    del waiting[t]
            if waiting:
                time.sleep(POLL_S)
    return [outcomes[t] for t in targets]


def _finished(outcome: TargetOutcome, state: str, message: str, experiment_id: str,
              completed: bool) -> TargetOutcome:
    """Fill an outcome from the target's MLflow pipeline run (found by its flow run id)."""
    import mlflow

    if not completed:
        return outcome.model_copy(update={"status": "failed", "message": f"{state}: {message}"[:2000]})
    runs = mlflow.MlflowClient().search_runs(
        [experiment_id], max_results=1,
        filter_string=f"tags.`edgeopt.prefect_flow_run_id` = '{outcome.flow_run_id}' "
                      "and tags.`edgeopt.kind` = 'pipeline'")
    if not runs:
        return outcome.model_copy(update={"status": "failed",
                                          "message": "completed, but its MLflow run was not found"})
    tags = runs[0].data.tags
    pick = tags.get("edgeopt.pick")
    return outcome.model_copy(update={
        "status": "completed", "mlflow_run_id": runs[0].info.run_id,
        "pick": None if pick in (None, "none") else pick,
        "promoted": tags.get("edgeopt.promoted") == "true", "version": tags.get("edgeopt.model_version")})
