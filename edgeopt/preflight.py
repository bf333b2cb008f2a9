"""Everything the inputs alone can reveal, checked before the orchestrator or the tracking store is touched.

One UserError (one line, exit 2) names the first problem; nothing is written until all of it passes.
The checks: the model's files and architecture for its task, the evaluation data (built once into a
throw-away folder where that is cheap, long enough for what is asked), each candidate's starting
point, gate and metric names, the tracking store (a fast probe), and the output folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.errors import UserError
from edgeopt.io.prefect_server import health_problem
from edgeopt.sources import SourceFacts

if TYPE_CHECKING:
    from edgeopt.config import Params, PipelineConfig
    from edgeopt.pipeline.context import PipelineContext

TRACKING_PROBE_S = 5.0


def preflight(ctx: PipelineContext) -> SourceFacts:
    """Check one namespace's inputs; return what its model source is."""
    from edgeopt.workloads.base import get_workload

    where = f"pipelines.{ctx.namespace}"
    try:
        facts = ctx.cfg.model.inspect(ctx.project_root, f"{where}.model")
        workload = get_workload(ctx.cfg.task)
        workload.preflight(ctx.cfg, facts, ctx.project_root)
        check_data(ctx)
        check_candidates(ctx.cfg, facts, where)
        check_metric_names(ctx.cfg, workload.metric_names, where)
    except UserError as err:
        raise _one_line(err) from None
    check_writable(ctx.ws.root)
    return facts


def preflight_run(params: Params, names: list[str], project_root: Path) -> None:
    """Every namespace of a run, then the tracking store they share."""
    from edgeopt.pipeline.context import PipelineContext

    for name in names:
        if name not in params.pipelines:
            raise UserError(f"unknown pipeline {name!r}; params.yaml defines: {', '.join(params.pipelines)}")
        preflight(PipelineContext(params, name, project_root))
    check_tracking_store(params, project_root)


def _one_line(err: UserError) -> UserError:
    text = str(err).strip().splitlines()
    return UserError(text[0] if text else "invalid input")


def check_data(ctx: PipelineContext) -> None:
    """Data sources that are files are built once into a throw-away folder: the checks `prepare` runs."""
    from edgeopt.pipeline.data import resolve_data_paths

    data = resolve_data_paths(ctx)
    path = getattr(data, "path", None)
    if isinstance(path, Path):
        if not path.exists():
            raise UserError(f"pipelines.{ctx.namespace}.data.path: not found: {path}")
        from edgeopt.workloads.base import get_workload

        with tempfile.TemporaryDirectory(prefix="edgeopt-preflight-") as tmp:
            get_workload(ctx.cfg.task).build_data(data, Path(tmp) / "data", None)
    source = getattr(data, "source", None)
    if isinstance(source, Path) and (not source.is_file() or source.stat().st_size == 0):
        raise UserError(f"pipelines.{ctx.namespace}.data.source: not found or empty: {source}")


def check_candidates(cfg: PipelineConfig, facts: SourceFacts, where: str) -> None:
    """Each candidate without a parent must start from the base, in a format the base offers.

    A recipe that takes only a parent (e.g. a quantizer of ONNX graphs) listed without one can never
    build; a baseline that cannot start from this base leaves nothing to compare with.
    """
    from edgeopt.recipes import get_recipe

    baseline = next(c for c in cfg.candidates if c.name == cfg.selection.baseline)
    if not baseline.enabled:
        raise UserError(f"{where}.candidates.{baseline.name}: the baseline is disabled (enabled: false), so nothing "
                        "could be compared")
    unmet = get_recipe(baseline.recipe).requires.unmet()
    if unmet:
        raise UserError(f"{where}.candidates.{baseline.name}: the baseline cannot run on this machine: {unmet}")
    for c in cfg.candidates:
        if c.parent is not None:
            continue
        recipe = get_recipe(c.recipe)
        if "base" not in recipe.accepts:
            raise UserError(f"{where}.candidates.{c.name}: recipe {c.recipe} starts from a parent candidate of "
                            f"format {'/'.join(recipe.accepts)}; set `parent:` to a candidate that produces it")
        lacking = recipe.base_formats and not set(recipe.base_formats) & set(facts.formats)
        if lacking and c.name == cfg.selection.baseline:
            raise UserError(f"{where}.candidates.{c.name}: the baseline's recipe {c.recipe} needs a "
                            f"{'/'.join(recipe.base_formats)} base model, and this {facts.kind} source offers "
                            f"{'/'.join(facts.formats)}: choose another baseline")


def check_metric_names(cfg: PipelineConfig, known: tuple[str, ...], where: str) -> None:
    """Gates and selection may only name metrics the task measures (else: minutes, then a KeyError)."""
    if not known:
        return
    for key, names in ((f"{where}.gates.max_metrics", list(cfg.gates.max_metrics)),
                       (f"{where}.selection.quality_metrics", list(cfg.selection.quality_metrics))):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"{key}: {', '.join(unknown)} not measured by task {cfg.task} "
                            f"(it measures {', '.join(known)})")


def check_writable(root: Path) -> None:
    """Probe the output folder (or the nearest folder that exists above it) by writing a temporary file:
    permission bits say nothing for root, and a file may block the path. Nothing is left behind."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"output folder is not writable: {root} ({probe} is not a folder)")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".edgeopt-write-probe-"):
            pass
    except OSError as err:
        raise UserError(f"output folder is not writable: {root} ({err.strerror or err})") from None


def check_tracking_store(params: Params, project_root: Path) -> None:
    """A fast probe of the MLflow store: an unreachable server fails here in seconds, not after
    minutes of HTTP retries; a local store's folder must be writable."""
    from edgeopt.tracking import tracking_uri

    uri = tracking_uri(params, project_root)
    from_env = not params.tracking.uri and os.environ.get("MLFLOW_TRACKING_URI")
    where = "$MLFLOW_TRACKING_URI" if from_env else "tracking.uri"
    if uri.startswith(("http://", "https://")):
        problem = health_problem(uri, TRACKING_PROBE_S)
        if problem:
            raise UserError(f"{where} {uri}: the MLflow server does not answer ({problem}; probed "
                            f"/health for {TRACKING_PROBE_S:g} s)")
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.parent.is_dir():  # sqlite creates the file, not its folder
            raise UserError(f"{where} {uri}: the folder {db.parent} does not exist")
        check_writable(db.parent)
        if db.exists() and not db.is_file():
            raise UserError(f"{where} {uri}: {db} is not a file")
        from edgeopt.tracking import artifact_location

        check_writable(Path(artifact_location(params, project_root).removeprefix("file://")))
    elif uri.startswith("file:") or "://" not in uri:
        raise UserError(f"{where} {uri}: a file store is not supported by MLflow 3.13+; use sqlite:///path.db "
                        "or an http(s):// server")
