"""The candidate stage as one sequential loop: build every planned candidate, measure them one at a time,
then evaluate each against the baseline. The Prefect flow runs the same loop with task-backed steps."""

from __future__ import annotations

import traceback
from collections.abc import Callable

from edgeopt import progress, stageclock
from edgeopt.config import CandidateSpec
from edgeopt.errors import CandidateError
from edgeopt.pipeline.building import build_candidate
from edgeopt.pipeline.context import ModelInputs, PipelineContext, PreparedData
from edgeopt.pipeline.measuring import measure_candidate, measurement_key
from edgeopt.pipeline.planning import left_out, plan_candidates
from edgeopt.recipes import get_recipe
from edgeopt.results import CandidateRecord, CandidateResult, Measurement
from edgeopt.workloads.base import get_workload

BuildStep = Callable[[CandidateSpec, "CandidateRecord | None", str], CandidateRecord]
MeasureStep = Callable[[CandidateRecord, str], Measurement]


def evaluate(
    ctx: PipelineContext, specs: list[CandidateSpec], records: dict[str, CandidateRecord],
    measurements: dict[str, Measurement], errors: dict[str, tuple[str, str, str]],
) -> list[CandidateResult]:
    """One row per configured candidate; quality is compared with the baseline's embeddings."""
    ws = ctx.ws
    baseline = ctx.cfg.selection.baseline
    workload = get_workload(ctx.cfg.task)
    rows = []
    for spec in specs:
        rec = records.get(spec.name)
        common = {"name": spec.name, "recipe": spec.recipe, "parent": spec.parent,
                  "framework": rec.framework if rec else get_recipe(spec.recipe).framework,
                  "precision": rec.precision if rec else None, "cache_key": rec.cache_key if rec else None}
        if spec.name in errors:
            status, stage, message = errors[spec.name]
            rows.append(CandidateResult(status=status, stage=stage, error=message, **common))  # type: ignore[arg-type]
            continue
        if baseline not in measurements:
            rows.append(CandidateResult(status="failed", stage="evaluate",
                                        error=f"baseline {baseline} was not measured", **common))
            continue
        quality = workload.quality(ws.measurement_dir(spec.name), ws.measurement_dir(baseline))
        rows.append(CandidateResult(status="ok", measurement=measurements[spec.name], quality=quality, **common))
    return rows


def failure_text(err: BaseException) -> str:
    """A failed candidate's error as one message: a CandidateError's own text, else the exception's last line."""
    if isinstance(err, CandidateError):
        return str(err)
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def run_candidates(
    ctx: PipelineContext, prepared: PreparedData, inputs: ModelInputs,
    build: BuildStep | None = None, measure: MeasureStep | None = None,
) -> tuple[dict[str, CandidateRecord], list[CandidateResult]]:
    """Build every candidate in order, then measure them one at a time, then evaluate.

    `build`/`measure` default to the plain functions; the Prefect flow passes task-backed steps.
    Measurement is sequential on purpose: two benchmarks at once would corrupt both timings.
    """

    def build_here(spec: CandidateSpec, parent: CandidateRecord | None, key: str) -> CandidateRecord:
        with stageclock.stage("build"):
            return build_candidate(ctx, spec, prepared, inputs, parent, key)

    build = build or build_here
    measure = measure or (lambda record, key: measure_candidate(ctx, record, inputs))
    plan = plan_candidates(ctx, prepared, inputs)
    specs = [p.spec for p in plan]
    records: dict[str, CandidateRecord] = {}
    errors: dict[str, tuple[str, str, str]] = {}  # name -> (status, stage, message)
    for i, p in enumerate(plan):
        spec = p.spec
        progress.report("build", i, len(specs), spec.name)
        reason = left_out(p, records)  # config order is topological: its parent is settled by now
        if reason:
            errors[spec.name] = ("skipped", "plan", reason)
            continue
        try:
            # The build step's own compute is clocked inside it (tasks/stages.py, or above).
            records[spec.name] = build(spec, records.get(spec.parent) if spec.parent else None, p.key)
        except CandidateError as err:
            errors[spec.name] = ("failed", "build", failure_text(err))
    progress.report("build", len(specs), len(specs), "done")

    measurements: dict[str, Measurement] = {}
    built = [s for s in specs if s.name in records]
    for i, spec in enumerate(built):
        progress.report("measure", i, len(built), spec.name)
        try:
            with stageclock.stage("measure"):
                measurements[spec.name] = measure(records[spec.name],
                                                  measurement_key(ctx, records[spec.name], inputs))
        except CandidateError as err:
            errors[spec.name] = ("failed", "measure", failure_text(err))
    progress.report("measure", len(built), len(built), "done")
    with stageclock.stage("evaluate"):
        return records, evaluate(ctx, specs, records, measurements, errors)
