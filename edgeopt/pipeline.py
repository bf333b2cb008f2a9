"""The pipeline's stages as plain functions. Prefect tasks and DVC stages both call these.

prepare data -> validate -> inputs -> build candidates -> measure -> evaluate -> select -> promote
Each stage returns what it did (records), and writes its outputs under the namespace's workspace.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from edgeopt import stageclock
from edgeopt.config import CandidateSpec, Params, PipelineConfig
from edgeopt.errors import CandidateError, UserError
from edgeopt.io.atomic import atomic_file, write_text_atomic
from edgeopt.lineage import library_versions
from edgeopt.measure import measure_in_subprocess
from edgeopt.recipes import BaseModelInfo, ParentArtifact, get_recipe
from edgeopt.results import CandidateRecord, CandidateResult, Measurement, Promotion, Record, Selection
from edgeopt.validation import ValidationReport, require_valid
from edgeopt.workloads.base import get_workload
from edgeopt.workspace import Workspace

CODE_VERSION = "2"  # bump when a change in this package invalidates built candidates


@dataclass(frozen=True)
class PipelineContext:
    params: Params
    namespace: str
    project_root: Path

    @property
    def cfg(self) -> PipelineConfig:
        return self.params.pipelines[self.namespace]

    @property
    def ws(self) -> Workspace:
        return Workspace.for_pipeline(self.params, self.namespace, self.project_root)


class PreparedData(Record):
    base_path: str
    base_format: str
    tokenizer_dir: str | None
    base_sha256: str
    task: str
    data_digest: str
    n_pairs: int
    n_sentences: int
    base_variants: dict[str, str] = Field(default_factory=dict)
    base_details: dict[str, Any] = Field(default_factory=dict)
    # The base model's tensor I/O spec (IOSpec.to_dict()); None for a generation model.
    base_io_spec: dict[str, Any] | None = None

    def base(self) -> BaseModelInfo:
        return BaseModelInfo(path=Path(self.base_path), format=self.base_format, sha256=self.base_sha256,
                             task=self.task, tokenizer_dir=Path(self.tokenizer_dir) if self.tokenizer_dir else None,
                             variants={k: Path(v) for k, v in self.base_variants.items()},
                             details=self.base_details)


class ModelInputs(Record):
    path: str
    digest: str
    shapes: dict[str, list[int]]


def _sha(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# -- stages --------------------------------------------------------------------------------


def prepare_data(ctx: PipelineContext) -> PreparedData:
    """Copy the base model into the workspace and build the evaluation data (both DVC outputs)."""
    ws = ctx.ws
    ws.root.mkdir(parents=True, exist_ok=True)
    workload = get_workload(ctx.cfg.task)
    with stageclock.stage("prepare"):
        base = workload.materialize_base(ctx.cfg.model, ws.base_dir, ctx.project_root)
        summary = workload.build_data(resolve_data_paths(ctx), ws.data_dir, base)  # causal-lm: scored by base
    prepared = PreparedData(
        base_path=str(base.path), base_format=base.format,
        tokenizer_dir=str(base.tokenizer_dir) if base.tokenizer_dir else None,
        base_sha256=base.sha256, task=base.task, data_digest=summary.sha256,
        n_pairs=summary.n_pairs, n_sentences=summary.n_sentences,
        base_variants={k: str(v) for k, v in base.variants.items()}, base_details=base.details,
        base_io_spec=base_io_spec(workload, base),
    )
    prepared.write(ws.base_info)
    return prepared


def base_io_spec(workload: Any, base: BaseModelInfo) -> dict[str, Any] | None:
    """The base model's tensor I/O spec: an ONNX graph's own, else the task's PyTorch form's.

    None where the base has neither (a generation model is a stateful decoder, not one call on named tensors).
    """
    if base.format == "onnx":  # as the file declares it: a runtime that cannot load it fails its candidates
        import onnx

        from edgeopt.adapters.onnxruntime import onnx_io_spec

        return onnx_io_spec(onnx.load(str(base.path), load_external_data=False)).to_dict()
    try:
        return dict(workload.torch_form(Path(base.path)).io_spec.to_dict())
    except CandidateError:
        return None


def resolve_data_paths(ctx: PipelineContext) -> Any:
    """Paths in params.yaml are relative to its folder, not to the current directory."""
    return ctx.cfg.data.with_paths_under(ctx.project_root)


def load_prepared(ctx: PipelineContext) -> PreparedData:
    path = ctx.ws.base_info
    if not path.is_file():
        raise UserError(f"{path} is missing: run the prepare stage first")
    return PreparedData.model_validate_json(path.read_text())


def validation_report(ctx: PipelineContext) -> ValidationReport:
    """The task's Great Expectations suites over the evaluation data (written to the workspace)."""
    return get_workload(ctx.cfg.task).validate_data(ctx.ws.data_dir, ctx.ws.validation_report)


def validate_data(ctx: PipelineContext) -> dict[str, object]:
    """Great Expectations over the evaluation data; a failed expectation stops the run."""
    report = validation_report(ctx)
    require_valid(report)
    return report.model_dump()


def prepare_inputs(ctx: PipelineContext, prepared: PreparedData) -> ModelInputs:
    """The task's input arrays (token ids, pixels, ...), made once, so each candidate sees identical inputs."""
    with stageclock.stage("inputs"):
        arrays = get_workload(ctx.cfg.task).prepare_inputs(prepared.base(), ctx.ws.data_dir, ctx.cfg.benchmark)
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(arrays[key].tobytes())
    path = ctx.ws.inputs
    with atomic_file(path) as tmp, tmp.open("wb") as f:  # a file object: np.savez adds no ".npz" to it
        np.savez(f, **arrays)
    return ModelInputs(path=str(path), digest=digest.hexdigest(),
                           shapes={k: list(v.shape) for k, v in arrays.items()})


def candidate_cache_key(
    spec: CandidateSpec, prepared: PreparedData, parent_key: str | None, inputs: ModelInputs,
    versions: dict[str, str],
) -> str:
    """Everything a built candidate depends on: base hash, recipe, parent, calibration, libraries."""
    return _sha(CODE_VERSION, prepared.base_sha256, spec.recipe, spec.options, parent_key,
                inputs.digest, versions)[:20]


def ordered_candidates(cfg: PipelineConfig) -> list[CandidateSpec]:
    """Parents are validated to come first, so config order is a topological order."""
    return list(cfg.candidates)


@dataclass(frozen=True)
class PlannedCandidate:
    """One candidate as both the sequential loop and the Prefect fan-out see it, before anything builds."""

    spec: CandidateSpec
    key: str  # its build cache key (a child's needs only its parent's key, so all are known up front)
    skip: str | None  # why it is left out whatever happens to its parent: disabled, unmet requirement


def plan_candidates(ctx: PipelineContext, prepared: PreparedData, inputs: ModelInputs) -> list[PlannedCandidate]:
    versions = library_versions()
    keys: dict[str, str] = {}
    plan = []
    for spec in ordered_candidates(ctx.cfg):
        keys[spec.name] = candidate_cache_key(spec, prepared, keys[spec.parent] if spec.parent else None, inputs,
                                              versions)
        skip = None if spec.enabled else "disabled in params.yaml (enabled: false)"
        plan.append(PlannedCandidate(spec, keys[spec.name], skip or get_recipe(spec.recipe).requires.unmet()))
    return plan


def parent_missing(spec: CandidateSpec, built: dict[str, CandidateRecord]) -> str | None:
    """Why a child cannot build once its parent is settled: the parent failed or was left out."""
    return f"parent {spec.parent} was not built" if spec.parent is not None and spec.parent not in built else None


def _cached_candidate(out: Path, cache_key: str) -> CandidateRecord | None:
    """The finished candidate in `out` if it was built with this cache key and its model file is there."""
    try:
        record = CandidateRecord.model_validate_json((out / "candidate.json").read_text())
    except (OSError, ValueError):  # absent, or not ours to trust: rebuild
        return None
    if record.cache_key != cache_key or not (out / record.model_file).exists():
        return None
    return record


def _staging_dirs(root: Path, name: str) -> list[Path]:
    """Leftover staging folders of `name` (`<name>.<pid>-<hex>`): builds that were killed mid-way."""
    import re

    if not root.is_dir():
        return []
    return [p for p in root.iterdir()
            if p.name.rsplit(".", 1)[0] == name and re.fullmatch(r"\d+-[0-9a-f]{8}", p.name.rsplit(".", 1)[-1])]


def _confined_output(ws: Workspace, folder: Path, model_file: str) -> None:
    """A recipe's output must stay inside its folder: no model file or symlink pointing out of it."""
    target = (folder / model_file).resolve()
    if not target.is_relative_to(folder.resolve()) or not target.exists():
        raise CandidateError(f"the recipe's model file {model_file!r} is not inside its output folder")
    for p in folder.rglob("*"):
        if p.is_symlink() and not p.resolve().is_relative_to(ws.root):
            raise CandidateError(f"the recipe's output links outside the workspace: {p.name} -> {p.resolve()}")


def build_candidate(
    ctx: PipelineContext, spec: CandidateSpec, prepared: PreparedData, inputs: ModelInputs,
    parent: CandidateRecord | None, cache_key: str,
) -> CandidateRecord:
    """Build one candidate in an isolated child process (timeout, memory limit) and publish it
    atomically; reuse it when the cache key matches.

    The build writes into `<workspace>/.staging/<name>.<pid>-<hex>/out`; only a finished build is
    renamed to `candidates/<name>`, so a kill at any point leaves nothing a later run would use.
    The child's output goes to `measurements/<name>/build.log`.
    """
    import os
    import secrets

    from edgeopt.isolation import build_isolated, file_lock
    from edgeopt.measure import thread_env

    ws = ctx.ws
    out = ws.candidate_dir(spec.name)
    cached = _cached_candidate(out, cache_key)
    if cached is not None:
        return cached
    recipe = get_recipe(spec.recipe)
    parent_artifact = None
    if parent is not None:
        if parent.format not in recipe.accepts:
            raise CandidateError(f"recipe {spec.recipe} cannot start from {parent.format} ({parent.name})")
        parent_artifact = ParentArtifact(name=parent.name, dir=ws.candidate_dir(parent.name),
                                         format=parent.format, model_file=parent.model_file)
    elif "base" not in recipe.accepts:
        raise CandidateError(f"recipe {spec.recipe} needs a parent candidate ({', '.join(recipe.accepts)})")
    base = prepared.base()
    tokenizer = ws.confine(base.tokenizer_dir) if base.tokenizer_dir else None
    base = BaseModelInfo(path=ws.confine(base.path), format=base.format, tokenizer_dir=tokenizer,
                         sha256=base.sha256, task=base.task,
                         variants={k: ws.confine(v) for k, v in base.variants.items()}, details=base.details)
    iso = ctx.params.isolation
    staging_root = ws.root / ".staging"
    # One builder per candidate and workspace: a concurrent run waits, then finds it built.
    with file_lock(ws.root / ".locks" / f"build-{spec.name}.lock"):
        cached = _cached_candidate(out, cache_key)
        if cached is not None:
            return cached
        for stale in [*_staging_dirs(staging_root, spec.name), out.with_name(f".{out.name}.building")]:
            shutil.rmtree(stale, ignore_errors=True)
        staging = ws.confine(staging_root / f"{spec.name}.{os.getpid()}-{secrets.token_hex(4)}")
        tmp = staging / "out"
        tmp.mkdir(parents=True)
        started = time.perf_counter()
        try:
            result = build_isolated(
                recipe, spec.options, base, parent_artifact, tmp, ws.confine(Path(inputs.path)), ctx.cfg.task,
                ctx.cfg.benchmark.threads, log=ws.measurement_dir(spec.name) / "build.log",
                timeout_s=iso.build_timeout_s, memory_limit_mb=iso.memory_limit_mb,
                env=thread_env(ctx.cfg.benchmark.threads),
            )
            _confined_output(ws, tmp, result.model_file)
            record = CandidateRecord(
                name=spec.name, recipe=spec.recipe, framework=recipe.framework, parent=spec.parent,
                options=spec.options, format=result.format, runtime=result.runtime, precision=result.precision,
                model_file=result.model_file, details=result.details, cache_key=cache_key,
                base_sha256=prepared.base_sha256, build_seconds=time.perf_counter() - started,
                tool_versions=library_versions(), io_spec=result.io_spec,
            )
            record.write(tmp / "candidate.json")
            shutil.rmtree(out, ignore_errors=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return record


def measure_candidate(ctx: PipelineContext, record: CandidateRecord, inputs: ModelInputs) -> Measurement:
    """Measure in a fresh, isolated subprocess; reuse a measurement of the same artifact, inputs and settings.

    `key.txt` is the commit marker: removed before measuring, written (atomically) only after a
    complete measurement, so a measurement killed half-way is never reused.
    """
    from edgeopt.isolation import file_lock

    ws = ctx.ws
    out = ws.measurement_dir(record.name)
    key = measurement_key(ctx, record, inputs)
    key_file = out / "key.txt"
    if measurement_present(ctx, record.name, key):
        return Measurement.model_validate_json((out / "measurement.json").read_text())
    # Keyed by the folder: a measurement target (its own measurements/) does not wait on the host's.
    with file_lock(ws.root / ".locks" / f"measure-{record.name}-{_sha(str(out))[:8]}.lock"):
        if measurement_present(ctx, record.name, key):
            return Measurement.model_validate_json((out / "measurement.json").read_text())
        key_file.unlink(missing_ok=True)
        m = measure_in_subprocess(ctx.cfg.task, ws.candidate_dir(record.name), ws.confine(Path(inputs.path)),
                                  ctx.cfg.benchmark, out, memory_limit_mb=ctx.params.isolation.memory_limit_mb)
        write_text_atomic(key_file, key)
    return m


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


def select_candidates(ctx: PipelineContext, rows: list[CandidateResult]) -> Selection:
    from edgeopt.selection import select

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


def failure_text(err: BaseException) -> str:
    if isinstance(err, CandidateError):
        return str(err)
    return "".join(traceback.format_exception_only(type(err), err)).strip()


BuildStep = Callable[[CandidateSpec, "CandidateRecord | None", str], CandidateRecord]
MeasureStep = Callable[[CandidateRecord, str], Measurement]


def run_candidates(
    ctx: PipelineContext, prepared: PreparedData, inputs: ModelInputs,
    build: BuildStep | None = None, measure: MeasureStep | None = None,
) -> tuple[dict[str, CandidateRecord], list[CandidateResult]]:
    """Build every candidate in order, then measure them one at a time, then evaluate.

    `build`/`measure` default to the plain functions; the Prefect flow passes task-backed steps.
    Measurement is sequential on purpose: two benchmarks at once would corrupt both timings.
    """
    from edgeopt import progress

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
        left_out = parent_missing(spec, records) or p.skip
        if left_out:
            errors[spec.name] = ("skipped", "plan", left_out)
            continue
        try:
            # The build step's own compute is clocked inside it (tasks/stages.py, or below).
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


def base_summary(prepared: PreparedData) -> dict[str, str]:
    return {k: str(v) for k, v in asdict(prepared.base()).items()}


# -- tracking, selection and promotion -----------------------------------------------------


class TrackedRun(Record):
    """The MLflow parent run of one pipeline run, and the lineage every child inherits."""

    experiment_id: str
    run_id: str
    lineage: dict[str, str]


def start_tracking(ctx: PipelineContext, prepared: PreparedData, dvc: dict[str, str]) -> TrackedRun:
    from edgeopt import tracking

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
    from edgeopt import tracking

    if not ctx.ws.run_info.is_file():
        raise UserError(f"{ctx.ws.run_info} is missing: run the candidates stage first")
    tracking.configure(ctx.params, ctx.project_root)
    return TrackedRun.model_validate_json(ctx.ws.run_info.read_text())


def track_candidates(ctx: PipelineContext, run: TrackedRun, rows: list[CandidateResult],
                     records: dict[str, CandidateRecord]) -> list[CandidateResult]:
    """One child run per candidate (also for failed ones); returns rows with their run ids."""
    from edgeopt import tracking

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


def select_and_log(ctx: PipelineContext, run: TrackedRun, rows: list[CandidateResult]) -> Selection:
    from edgeopt import tracking

    selection = select_candidates(ctx, rows)
    tracking.log_selection(run.run_id, selection)
    record_recommendation(ctx, run, selection)
    return selection


def record_recommendation(ctx: PipelineContext, run: TrackedRun, selection: Selection) -> None:
    """Which framework won which objective on this machine, vs the seeds' decision tree."""
    import mlflow

    from edgeopt.recommend import recommend_selection

    rec = recommend_selection(selection)
    rec.write(ctx.ws.root / "recommendation.json")
    client = mlflow.MlflowClient()
    client.log_dict(run.run_id, rec.model_dump(mode="json"), "recommendation.json")
    client.set_tag(run.run_id, "edgeopt.tree_prediction", rec.tree_prediction)


def load_selection(ctx: PipelineContext) -> Selection:
    if not ctx.ws.selection.is_file():
        raise UserError(f"{ctx.ws.selection} is missing: run the select stage first")
    return Selection.model_validate_json(ctx.ws.selection.read_text())


def promote_pick(ctx: PipelineContext, selection: Selection, prepared: PreparedData) -> Promotion:
    """Register the pick and move the alias (only if it passed every gate and loads)."""
    from edgeopt import tracking
    from edgeopt.promotion import promote

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


def measurement_key(ctx: PipelineContext, record: CandidateRecord, inputs: ModelInputs) -> str:
    return _sha(record.cache_key, inputs.digest, ctx.cfg.benchmark.model_dump())[:20]


def measurement_present(ctx: PipelineContext, name: str, key: str) -> bool:
    out = ctx.ws.measurement_dir(name)
    key_file = out / "key.txt"
    return key_file.is_file() and key_file.read_text() == key and (out / "measurement.json").is_file()


def finish_tracking(run: TrackedRun, selection: Selection, promotion: Promotion | None) -> None:
    import mlflow

    from edgeopt import tracking

    client = mlflow.MlflowClient()
    if promotion is not None:
        client.log_dict(run.run_id, promotion.model_dump(mode="json"), "promotion.json")
        client.set_tag(run.run_id, "edgeopt.promoted", str(promotion.promoted).lower())
        if promotion.version:
            client.set_tag(run.run_id, "edgeopt.model_version", promotion.version)
    tracking.finish_pipeline_run(run.run_id, "FINISHED")


def candidate_present(ctx: PipelineContext, name: str, key: str) -> bool:
    path = ctx.ws.candidate_dir(name) / "candidate.json"
    return path.is_file() and CandidateRecord.model_validate_json(path.read_text()).cache_key == key
