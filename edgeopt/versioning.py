"""DVC: version the base model and evaluation data that a run used, and push them to the remote.

`dvc repro` versions them itself; a Prefect run calls `dvc commit` on the same stage so both
entry points leave the same `dvc.lock`, then pushes to the default (local) remote.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from edgeopt.pipeline.context import PipelineContext

log = logging.getLogger(__name__)


def stage_name(namespace: str) -> str:
    return f"prepare@{namespace}"


def lock_revision(project_root: Path, stage: str) -> dict[str, str]:
    """The md5s DVC recorded for a stage's outputs: the data revision a run can be traced to."""
    lock = project_root / "dvc.lock"
    if not lock.is_file():
        return {}
    stages: dict[str, Any] = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    entry = stages.get(stage, {})
    return {f"dvc.{Path(o['path']).name}": str(o.get("md5", "")) for o in entry.get("outs", [])}


def track_prepared(ctx: PipelineContext) -> dict[str, str]:
    """`dvc commit` + `dvc push` the prepare stage's outputs; a no-op outside a DVC repo."""
    root = ctx.project_root
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return {"dvc": "not a DVC repository"}
    from dvc.repo import Repo

    stage = stage_name(ctx.namespace)
    pushed = "no"
    with Repo(str(root)) as repo:
        repo.commit(stage, force=True)
        try:
            repo.push(targets=[stage])
            pushed = "yes"
        except Exception as err:  # a missing remote must not fail the optimization
            log.warning("dvc push failed: %s", err)
    return {**lock_revision(root, stage), "dvc.pushed": pushed}
