"""The candidate plan: the order candidates build in, their cache keys, and why one is left out.

The sequential loop (`candidates.run_candidates`) and the Prefect fan-out (`flows/candidates.py`)
both walk this one plan, so the skip rules and cache keys are computed here and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from edgeopt.config import CandidateSpec, PipelineConfig
from edgeopt.lineage import library_versions
from edgeopt.pipeline.context import ModelInputs, PipelineContext, PreparedData
from edgeopt.recipes import get_recipe
from edgeopt.results import CandidateRecord

CODE_VERSION = "2"  # bump when a change in this package invalidates built candidates


def stable_hash(*parts: object) -> str:
    """The sha256 of the parts as canonical JSON: the same parts give the same key in every process."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def candidate_cache_key(
    spec: CandidateSpec, prepared: PreparedData, parent_key: str | None, inputs: ModelInputs,
    versions: dict[str, str],
) -> str:
    """Everything a built candidate depends on: base hash, recipe, parent, calibration, libraries."""
    return stable_hash(CODE_VERSION, prepared.base_sha256, spec.recipe, spec.options, parent_key,
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
    """Every configured candidate in build order, with its cache key and any reason it is skipped."""
    versions = library_versions()
    keys: dict[str, str] = {}
    plan = []
    for spec in ordered_candidates(ctx.cfg):
        keys[spec.name] = candidate_cache_key(spec, prepared, keys[spec.parent] if spec.parent else None, inputs,
                                              versions)
        skip = None if spec.enabled else "disabled in params.yaml (enabled: false)"
        plan.append(PlannedCandidate(spec, keys[spec.name], skip or get_recipe(spec.recipe).requires.unmet()))
    return plan


def parent_missing(spec: CandidateSpec, built: Mapping[str, CandidateRecord]) -> str | None:
    """Why a child cannot build once its parent is settled: the parent failed or was left out."""
    return f"parent {spec.parent} was not built" if spec.parent is not None and spec.parent not in built else None


def left_out(planned: PlannedCandidate, built: Mapping[str, CandidateRecord]) -> str | None:
    """Why a candidate is not built, once its parent is settled: the parent was not built, or the plan skips it."""
    return parent_missing(planned.spec, built) or planned.skip
