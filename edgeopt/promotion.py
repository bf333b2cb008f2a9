"""Register the pick and move the alias, only after every gate passed and the model loads.

The alias moves last: if registering or the load check fails, the previous champion stays.
The alias history lives in a registered-model tag, so `rollback` can move it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.config import PipelineConfig
from edgeopt.errors import UserError
from edgeopt.results import CandidateRecord, Promotion, Selection

if TYPE_CHECKING:
    from edgeopt.workloads import Workload

HISTORY_TAG = "edgeopt.alias_history"


def _history(client: object, name: str, alias: str) -> list[str]:
    try:
        model = client.get_registered_model(name)  # type: ignore[attr-defined]
    except Exception:
        return []
    raw = model.tags.get(f"{HISTORY_TAG}.{alias}")
    return list(json.loads(raw)) if raw else []


def current_version(client: object, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)  # type: ignore[attr-defined]
    except Exception:
        return None


def promote(
    selection: Selection, cfg: PipelineConfig, workload: Workload, candidate_dir: Path | None,
    tokenizer_dir: Path, pick_run_id: str | None, data_dir: Path, measurement_dir: Path | None,
) -> Promotion:
    """Log the pick as a pyfunc in its candidate run, register it, check it, then set the alias."""
    import mlflow

    reg = cfg.registry
    client = mlflow.MlflowClient()
    previous = current_version(client, reg.model_name, reg.alias)

    def outcome(promoted: bool, reason: str, **kw: str | None) -> Promotion:
        return Promotion(pipeline=selection.pipeline, promoted=promoted, model_name=reg.model_name,
                         alias=reg.alias, previous_version=previous, reason=reason, **kw)

    if selection.pick is None or pick_run_id is None or candidate_dir is None or measurement_dir is None:
        return outcome(False, selection.reason)
    row = next(r for r in selection.candidates if r.name == selection.pick)
    if not row.passed_gates:  # defensive: select() only picks gated rows
        raise UserError(f"refusing to promote {row.name}: it did not pass every gate")
    record = CandidateRecord.model_validate_json((candidate_dir / "candidate.json").read_text())
    with mlflow.start_run(run_id=pick_run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=workload.python_model(),
            artifacts={"candidate": str(candidate_dir), "tokenizer": str(tokenizer_dir)},
            code_paths=[str(Path(__file__).parent)],
            model_config={"max_length": cfg.benchmark.sequence_length, "threads": cfg.benchmark.threads},
            pip_requirements=[],
            metadata={"candidate": row.name, "recipe": row.recipe, "runtime": record.runtime,
                      "task": workload.task},
        )
    version = mlflow.register_model(info.model_uri, reg.model_name,
                                    tags={"candidate": row.name, "recipe": row.recipe,
                                          "edgeopt.cache_key": record.cache_key,
                                          "edgeopt.pipeline": selection.pipeline})
    v = str(version.version)
    # Prove the registered artifact works before anyone is pointed at it.
    loaded = mlflow.pyfunc.load_model(f"models:/{reg.model_name}/{v}")
    ok, detail = workload.load_check(loaded, data_dir, measurement_dir)
    client.set_model_version_tag(reg.model_name, v, "edgeopt.load_check", detail)
    if not ok:
        return outcome(False, f"registered version {v} failed its load check: {detail}", version=v,
                       candidate=row.name)
    history = _history(client, reg.model_name, reg.alias)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)
    history.append(v)
    client.set_registered_model_alias(reg.model_name, reg.alias, v)
    client.set_registered_model_tag(reg.model_name, f"{HISTORY_TAG}.{reg.alias}", json.dumps(history[-50:]))
    return outcome(True, selection.reason, version=v, candidate=row.name)


def rollback(model_name: str, alias: str) -> Promotion:
    """Move the alias back to the version it pointed at before the current one."""
    import mlflow

    client = mlflow.MlflowClient()
    current = current_version(client, model_name, alias)
    history = _history(client, model_name, alias)
    if current is None:
        raise UserError(f"{model_name}@{alias} is not set; nothing to roll back")
    if len(history) < 2 or history[-1] != current:
        raise UserError(f"{model_name}@{alias}: no earlier version recorded to roll back to")
    target = history[-2]
    client.set_registered_model_alias(model_name, alias, target)
    client.set_registered_model_tag(model_name, f"{HISTORY_TAG}.{alias}", json.dumps(history[:-1]))
    return Promotion(pipeline="", promoted=True, model_name=model_name, alias=alias, version=target,
                     previous_version=current, reason=f"rolled back from version {current}")
