"""The candidate loop as Prefect tasks: builds fan out through the configured task runner,
measurement rounds run one at a time (interleaved across candidates) through the machine's benchmark slot."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.futures import PrefectFuture, as_completed

from edgeopt.config import CandidateSpec
from edgeopt.errors import CandidateError
from edgeopt.isolation import interrupt_children, kill_children
from edgeopt.orchestration import candidate_runner
from edgeopt.pipeline.building import candidate_present
from edgeopt.pipeline.candidates import failure_text, run_candidates
from edgeopt.pipeline.context import ModelInputs, PipelineContext, PreparedData
from edgeopt.pipeline.measuring import Session
from edgeopt.pipeline.planning import left_out, plan_candidates
from edgeopt.results import CandidateRecord, CandidateResult, Measurement
from tasks import stages


@contextmanager
def _stop_builds_if_interrupted() -> Iterator[None]:
    """On SIGTERM/Ctrl-C (Prefect raises TerminationSignal in the flow's thread), kill the build
    children at once: leaving the task runner waits for its threads, which would otherwise finish,
    and publish, the builds that were running."""
    try:
        yield
    except Exception:
        kill_children()
        raise
    except BaseException:  # an interrupt: the threads not yet at their child must not start it either
        interrupt_children()
        raise


def build_all(ctx: PipelineContext, prepared: PreparedData,
              inputs: ModelInputs) -> tuple[dict[str, CandidateRecord], dict[str, str]]:
    """Fan the builds out through the configured task runner (threads or Dask).

    A candidate is submitted as soon as its parent is built; children of a failed parent and
    disabled candidates and recipes whose requirements are unmet are left for `run_candidates`
    to mark skipped.
    Returns the built records and the failures (candidate -> message).
    """
    from edgeopt import progress

    plan = plan_candidates(ctx, prepared, inputs)
    records: dict[str, CandidateRecord] = {}
    failed: dict[str, str] = {}
    skipped: set[str] = set()
    pending = list(plan)
    running: dict[PrefectFuture[CandidateRecord], CandidateSpec] = {}
    with candidate_runner(ctx.params.orchestration) as runner, _stop_builds_if_interrupted():
        while pending or running:
            for planned in list(pending):
                spec = planned.spec
                settled = records.keys() | failed.keys() | skipped
                if spec.parent is not None and spec.parent not in settled:
                    continue  # its parent is still building
                if left_out(planned, records):  # the planner's skip rules; run_candidates records the reason
                    skipped.add(spec.name)
                else:
                    task = stages.build_candidate
                    # A cached result is only good while its folder exists (a clean clone, a deleted output).
                    if not candidate_present(ctx, spec.name, planned.key):
                        task = task.with_options(refresh_cache=True)
                    parent = records[spec.parent] if spec.parent else None
                    future = runner.submit(task, parameters={
                        "ctx": ctx, "spec": spec, "prepared": prepared, "inputs": inputs, "parent": parent,
                        "cache_key": planned.key})
                    running[future] = spec
                pending.remove(planned)
            if not running:
                break
            done = next(as_completed(list(running)))
            spec = running.pop(done)
            try:
                records[spec.name] = done.result()
            except CandidateError as err:
                failed[spec.name] = failure_text(err)
            progress.report("build", len(records) + len(failed) + len(skipped), len(plan), spec.name)
    return records, failed


def measure_all(ctx: PipelineContext, prepared: PreparedData, inputs: ModelInputs,
                records: dict[str, CandidateRecord], failed: dict[str, str],
                ) -> tuple[dict[str, CandidateRecord], list[CandidateResult]]:
    """Measure the built candidates in interleaved rounds, one Prefect task per round, then evaluate.

    A target's measurements live in its own folder, so its session (and reuse) is apart from the host's.
    """

    def built(spec: CandidateSpec, parent: CandidateRecord | None, key: str) -> CandidateRecord:
        if spec.name in records:
            return records[spec.name]
        raise CandidateError(failed.get(spec.name, f"{spec.name} was not built"))

    def measure(session: Session, record: CandidateRecord, index: int, write_outputs: bool) -> Measurement:
        return stages.measure_round(ctx, session, record, inputs, index, write_outputs,
                                    return_state=True).result()

    return run_candidates(ctx, prepared, inputs, built, measure)
