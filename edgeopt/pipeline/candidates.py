"""The candidate stage as one sequential loop: build every planned candidate, measure them in interleaved
rounds (one at a time), then evaluate each against the baseline. The Prefect flow runs the same loop with
task-backed steps."""

from __future__ import annotations

import traceback
from collections.abc import Callable

from edgeopt import progress, stageclock
from edgeopt.config import CandidateSpec
from edgeopt.errors import CandidateError
from edgeopt.pipeline.building import build_candidate
from edgeopt.pipeline.context import ModelInputs, PipelineContext, PreparedData
from edgeopt.pipeline.measuring import Session, measure_round, measurement_key, pooled
from edgeopt.pipeline.planning import left_out, plan_candidates
from edgeopt.recipes import get_recipe
from edgeopt.results import CandidateRecord, CandidateResult, Measurement, Quality
from edgeopt.selection import select, undecided
from edgeopt.workloads.base import get_workload

BuildStep = Callable[[CandidateSpec, "CandidateRecord | None", str], CandidateRecord]
# (session, record, round index, write the quality outputs) -> that round's one-round Measurement
MeasureStep = Callable[[Session, CandidateRecord, int, bool], Measurement]
# The candidates measured so far (pooled) and the failures -> the ones a decision still depends on
Decide = Callable[[dict[str, Measurement], dict[str, str]], list[str]]


def evaluate(
    ctx: PipelineContext, specs: list[CandidateSpec], records: dict[str, CandidateRecord],
    measurements: dict[str, Measurement], errors: dict[str, tuple[str, str, str]],
    qualities: dict[str, Quality] | None = None,
) -> list[CandidateResult]:
    """One row per configured candidate; quality is compared with the baseline's outputs.

    qualities: a memo (quality is deterministic: computed once per candidate however often rows are made)."""
    memo = qualities if qualities is not None else {}
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
            rows.append(CandidateResult(status=status, stage=stage, error=message, **common))
            continue
        if baseline not in measurements:
            rows.append(CandidateResult(status="failed", stage="evaluate",
                                        error=f"baseline {baseline} was not measured", **common))
            continue
        if spec.name not in memo:
            memo[spec.name] = workload.quality(ws.measurement_dir(spec.name), ws.measurement_dir(baseline))
        quality = memo[spec.name]
        rows.append(CandidateResult(status="ok", measurement=measurements[spec.name], quality=quality, **common))
    return rows


def failure_text(err: BaseException) -> str:
    """A failed candidate's error as one message: a CandidateError's own text, else the exception's last line."""
    if isinstance(err, CandidateError):
        return str(err)
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def measure_all_rounds(ctx: PipelineContext, records: dict[str, CandidateRecord], inputs: ModelInputs,
                       measure: MeasureStep, decide: Decide) -> tuple[dict[str, Measurement], dict[str, str]]:
    """Measure every built candidate in `benchmark.rounds` interleaved passes (A B C, A B C, ...), then up
    to `benchmark.extra_rounds` more passes of the baseline and the candidates `decide` names, while any.

    Returns the pooled measurements and the failures (name -> message). A finished session with the same
    candidates is reused whole; an unfinished one resumes (see edgeopt.pipeline.measuring).
    """
    bench = ctx.cfg.benchmark
    baseline = ctx.cfg.selection.baseline
    names = list(records)
    session = Session(ctx, {n: measurement_key(ctx, records[n], inputs) for n in names})
    reused = session.reused()
    if reused is not None:
        return reused
    parts: dict[str, list[Measurement]] = {n: [] for n in names}
    failed = {n: msg for n, msg in session.failed.items() if n in records}
    total = bench.rounds * len(names)
    done = 0

    def run_pass(index: int, members: list[str], label: str) -> None:
        nonlocal done
        for name in members:
            done += 1
            if name in failed:
                continue
            progress.report("measure", done - 1, max(total, done), f"{name} ({label})")
            try:
                with stageclock.stage("measure"):
                    parts[name].append(measure(session, records[name], index, not parts[name]))
            except CandidateError as err:
                failed[name] = failure_text(err)
                session.fail(name, failed[name])

    for index in range(bench.rounds):
        run_pass(index, names, f"round {index + 1}/{bench.rounds}")
    for extra in range(bench.extra_rounds):
        current = {n: pooled(p, session) for n, p in parts.items() if p and n not in failed}
        rivals = [n for n in decide(current, failed) if n != baseline and n in current]
        if not rivals:
            break
        total += len(rivals) + 1
        run_pass(bench.rounds + extra, [baseline, *rivals], f"extra round {extra + 1}: undecided")
    progress.report("measure", total, total, "done")
    measurements = {n: pooled(p, session) for n, p in parts.items() if p and n not in failed}
    session.finish(measurements)
    return measurements, failed


def run_candidates(
    ctx: PipelineContext, prepared: PreparedData, inputs: ModelInputs,
    build: BuildStep | None = None, measure: MeasureStep | None = None,
) -> tuple[dict[str, CandidateRecord], list[CandidateResult]]:
    """Build every candidate in order, then measure them in interleaved rounds, then evaluate.

    `build`/`measure` default to the plain functions; the Prefect flow passes task-backed steps.
    Measurement is sequential on purpose: two benchmarks at once would corrupt both timings.
    """

    def build_here(spec: CandidateSpec, parent: CandidateRecord | None, key: str) -> CandidateRecord:
        with stageclock.stage("build"):
            return build_candidate(ctx, spec, prepared, inputs, parent, key)

    def measure_here(session: Session, record: CandidateRecord, index: int, write_outputs: bool) -> Measurement:
        return measure_round(ctx, session, record, inputs, index, write_outputs)

    build = build or build_here
    measure = measure or measure_here
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

    qualities: dict[str, Quality] = {}

    def decide(current: dict[str, Measurement], failed: dict[str, str]) -> list[str]:
        with stageclock.stage("evaluate"):
            errs = {**errors, **{n: ("failed", "measure", msg) for n, msg in failed.items()}}
            measured = [s for s in specs if s.name in current or s.name in errs]
            rows = evaluate(ctx, measured, records, current, errs, qualities)
            cfg = ctx.cfg
            return undecided(select(ctx.namespace, rows, cfg.gates, cfg.selection, cfg.task), cfg.selection)

    measurements, failed = measure_all_rounds(ctx, records, inputs, measure, decide)
    for name, message in failed.items():
        errors[name] = ("failed", "measure", message)
    with stageclock.stage("evaluate"):
        return records, evaluate(ctx, specs, records, measurements, errors, qualities)
