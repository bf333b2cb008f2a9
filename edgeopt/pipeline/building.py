"""The build stage for one candidate: an isolated child process builds it into a staging folder, which is
published under `candidates/<name>` only when finished; a matching cache key reuses the published one."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path

from edgeopt.config import CandidateSpec
from edgeopt.errors import CandidateError
from edgeopt.isolation import build_isolated, file_lock, interrupted
from edgeopt.lineage import library_versions
from edgeopt.measure import thread_env
from edgeopt.pipeline.context import ModelInputs, PipelineContext, PreparedData
from edgeopt.recipes import BaseModelInfo, ParentArtifact, get_recipe
from edgeopt.results import CandidateRecord
from edgeopt.workspace import Workspace


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
        # Staged outside candidates/ (not `atomic_dir`'s sibling folder): a build killed mid-way leaves
        # nothing in the DVC output, and the next build of this candidate finds and removes it by name.
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
            if interrupted():  # the build ended as the interrupt came: a stopped run publishes nothing
                raise CandidateError(f"{spec.name}: not published, the run was interrupted")
            shutil.rmtree(out, ignore_errors=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return record


def candidate_present(ctx: PipelineContext, name: str, key: str) -> bool:
    """Whether `candidates/<name>` holds a build with this cache key (a cached task result is only good then)."""
    path = ctx.ws.candidate_dir(name) / "candidate.json"
    return path.is_file() and CandidateRecord.model_validate_json(path.read_text()).cache_key == key
