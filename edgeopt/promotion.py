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
    import numpy as np

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
    selection: Selection, cfg: PipelineConfig, candidate_dir: Path, tokenizer_dir: Path,
    pick_run_id: str | None, expected: np.ndarray | None = None, probe_texts: list[str] | None = None,
) -> Promotion:
    """Log the pick as a pyfunc in its candidate run, register it, check it, then set the alias."""
    import mlflow

    from edgeopt.serving import TextEmbeddingModel

    reg = cfg.registry
    client = mlflow.MlflowClient()
    previous = current_version(client, reg.model_name, reg.alias)
    if selection.pick is None or pick_run_id is None:
        return Promotion(pipeline=selection.pipeline, promoted=False, model_name=reg.model_name,
                         alias=reg.alias, previous_version=previous, reason=selection.reason)
    row = next(r for r in selection.candidates if r.name == selection.pick)
    if not row.passed_gates:  # defensive: select() only picks gated rows
        raise UserError(f"refusing to promote {row.name}: it did not pass every gate")
    record = CandidateRecord.model_validate_json((candidate_dir / "candidate.json").read_text())
    with mlflow.start_run(run_id=pick_run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TextEmbeddingModel(),
            artifacts={"candidate": str(candidate_dir), "tokenizer": str(tokenizer_dir)},
            code_paths=[str(Path(__file__).parent)],
            model_config={"max_length": cfg.benchmark.sequence_length, "threads": cfg.benchmark.threads},
            pip_requirements=[],
            metadata={"candidate": row.name, "recipe": row.recipe, "runtime": record.runtime},
        )
    version = mlflow.register_model(info.model_uri, reg.model_name,
                                     tags={"candidate": row.name, "recipe": row.recipe,
                                           "edgeopt.cache_key": record.cache_key,
                                           "edgeopt.pipeline": selection.pipeline})
    # Prove the registered artifact embeds text before anyone is pointed at it.
    if probe_texts:
        import numpy as np

        loaded = mlflow.pyfunc.load_model(f"models:/{reg.model_name}/{version.version}")
        got = np.asarray(loaded.predict(probe_texts))
        if got.shape[0] != len(probe_texts) or not np.all(np.isfinite(got)):
            client.set_model_version_tag(reg.model_name, version.version, "edgeopt.load_check", "failed")
            return Promotion(pipeline=selection.pipeline, promoted=False, model_name=reg.model_name,
                             alias=reg.alias, version=str(version.version), previous_version=previous,
                             candidate=row.name, reason="registered version failed its load check")
        if expected is not None:
            cos = float(np.mean(np.sum(got * expected, axis=1)))
            client.set_model_version_tag(reg.model_name, version.version, "edgeopt.load_check_cosine",
                                         f"{cos:.6f}")
    history = _history(client, reg.model_name, reg.alias)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)
    history.append(str(version.version))
    client.set_registered_model_alias(reg.model_name, reg.alias, version.version)
    client.set_registered_model_tag(reg.model_name, f"{HISTORY_TAG}.{reg.alias}", json.dumps(history[-50:]))
    return Promotion(pipeline=selection.pipeline, promoted=True, model_name=reg.model_name, alias=reg.alias,
                     version=str(version.version), previous_version=previous, candidate=row.name,
                     reason=selection.reason)


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
