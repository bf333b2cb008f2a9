"""The promote stage: register the pick in the MLflow model registry and move the alias to it."""

from __future__ import annotations

from edgeopt import tracking
from edgeopt.pipeline.context import PipelineContext, PreparedData
from edgeopt.promotion import promote
from edgeopt.results import Promotion, Selection
from edgeopt.workloads.base import get_workload


def promote_pick(ctx: PipelineContext, selection: Selection, prepared: PreparedData) -> Promotion:
    """Register the pick and move the alias (only if it passed every gate and loads)."""
    tracking.configure(ctx.params, ctx.project_root)
    pick = next((r for r in selection.candidates if r.name == selection.pick), None)
    result = promote(
        selection, ctx.cfg, get_workload(ctx.cfg.task),
        candidate_dir=ctx.ws.candidate_dir(pick.name) if pick else None,
        base=prepared.base(), pick_run_id=pick.mlflow_run_id if pick else None,
        data_dir=ctx.ws.data_dir, measurement_dir=ctx.ws.measurement_dir(pick.name) if pick else None,
    )
    result.write(ctx.ws.promotion)
    return result
