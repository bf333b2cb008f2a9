"""The select stage: gates and Pareto frontier over the candidate rows, the pick, and what it is written to."""

from __future__ import annotations

import json

from edgeopt import stageclock, tracking
from edgeopt.errors import UserError
from edgeopt.io.atomic import write_text_atomic
from edgeopt.pipeline.context import PipelineContext
from edgeopt.pipeline.runs import TrackedRun
from edgeopt.recommend import recommend_selection
from edgeopt.results import CandidateResult, Selection
from edgeopt.selection import select


def select_candidates(ctx: PipelineContext, rows: list[CandidateResult]) -> Selection:
    """Apply the gates and pick; write `selection.json` and the flat metrics file."""
    with stageclock.stage("select"):
        selection = select(ctx.namespace, rows, ctx.cfg.gates, ctx.cfg.selection, ctx.cfg.task)
    selection.write(ctx.ws.selection)
    write_metrics(ctx, selection)
    return selection


def write_metrics(ctx: PipelineContext, selection: Selection) -> None:
    """A flat metrics file for `dvc metrics show` / `dvc metrics diff`."""
    out: dict[str, object] = {"pick": selection.pick or "none", "frontier": ",".join(selection.frontier)}
    for r in selection.candidates:
        if r.status == "ok" and r.measurement and r.quality:
            out[r.name] = {
                "latency_p50_ms": round(r.measurement.latency.p50_ms, 4),
                "latency_p99_ms": round(r.measurement.latency.p99_ms, 4),
                "throughput_items_per_s": round(r.measurement.throughput_items_per_s, 2),
                "size_mb": round(r.measurement.size_mb, 3),
                "peak_rss_mb": round(r.measurement.peak_rss_mb, 1),
                **{k: round(v, 5) for k, v in r.quality.metrics.items()},
                "quality_retention": round(r.quality_retention or 0.0, 5),
                "speedup": round(r.speedup or 0.0, 3),
                # Workload-specific speed figures (causal-lm: prompt tok/s, TTFT, roof fraction).
                **{k: round(v, 4) for k, v in r.measurement.extra.items()},
            }
    write_text_atomic(ctx.ws.metrics, json.dumps(out, indent=2))


def select_and_log(ctx: PipelineContext, run: TrackedRun, rows: list[CandidateResult]) -> Selection:
    """Select, then log the selection and the framework recommendation to the pipeline run."""
    selection = select_candidates(ctx, rows)
    tracking.log_selection(run.run_id, selection)
    record_recommendation(ctx, run, selection)
    return selection


def record_recommendation(ctx: PipelineContext, run: TrackedRun, selection: Selection) -> None:
    """Which framework won which objective on this machine, vs the seeds' decision tree."""
    import mlflow

    rec = recommend_selection(selection)
    rec.write(ctx.ws.root / "recommendation.json")
    client = mlflow.MlflowClient()
    client.log_dict(run.run_id, rec.model_dump(mode="json"), "recommendation.json")
    client.set_tag(run.run_id, "edgeopt.tree_prediction", rec.tree_prediction)


def load_selection(ctx: PipelineContext) -> Selection:
    if not ctx.ws.selection.is_file():
        raise UserError(f"{ctx.ws.selection} is missing: run the select stage first")
    return Selection.model_validate_json(ctx.ws.selection.read_text())
