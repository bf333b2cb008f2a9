"""Register the pick and move the alias, only after every gate passed and the model loads.

The alias moves last: if registering or the load check fails, the previous champion stays.

Concurrent runs against one registry. Registering a version is safe as it is (the registry
numbers versions itself). Moving the alias is a read-modify-write of two things, the alias and
its history tag, so it is serialized by a registry-side lock: MLflow has no compare-and-set, but
creating a registered model is atomic (the backend's unique name constraint lets exactly one
creator win), on a local sqlite store and on a remote tracking server alike. The lock is a
transient registered model `<name>.<alias>.edgeopt-lock`, deleted on release. Under it the alias
and history are re-read, reconciled, then set, and read back.

Limits: a holder that dies (SIGKILL) leaves the lock until it expires (LOCK_TTL_S after its
creation); breaking an expired lock is not atomic itself, so the TTL is far longer than the
critical section (a few registry calls). Expiry compares the server's creation time with this
machine's clock, so clocks must agree to well within the TTL. Anyone who moves the alias without
edgeopt (UI, API) bypasses the lock; the next promotion or rollback reconciles the history with
wherever the alias is.

History: the registered-model tag `edgeopt.alias_history.<alias>` is the stack of champions
(rollback pops it); `edgeopt.alias_log.<alias>` is an append-only log of every move.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.config import PipelineConfig
from edgeopt.errors import UserError
from edgeopt.lineage import sha256_tree
from edgeopt.measure import MEASUREMENT_FILE
from edgeopt.results import CandidateRecord, Measurement, Promotion, Selection

if TYPE_CHECKING:
    from edgeopt.recipes import BaseModelInfo
    from edgeopt.workloads.base import Workload

HISTORY_TAG = "edgeopt.alias_history"
LOG_TAG = "edgeopt.alias_log"
ARTIFACT_TAG = "edgeopt.artifact_sha256"  # sha256 of the candidate folder a version was registered from
SETTINGS_TAG = "edgeopt.runtime_settings"  # the runtime settings it serves with (JSON)
LOCK_SUFFIX = "edgeopt-lock"
LOCK_OWNER_TAG = "edgeopt.lock.owner"
LOCK_HOLDER_TAG = "edgeopt.lock.holder"
LOCK_TTL_S = 120.0
LOCK_WAIT_S = 300.0
MAX_HISTORY = 50
MAX_LOG = 200


class RegistryBusy(Exception):
    """Another promotion held the alias lock for longer than we were willing to wait."""


def _history(client: Any, name: str, alias: str) -> list[str]:
    try:
        model = client.get_registered_model(name)
    except Exception:
        return []
    raw = model.tags.get(f"{HISTORY_TAG}.{alias}")
    return [str(v) for v in json.loads(raw)] if raw else []


def _log(client: Any, name: str, alias: str) -> list[dict[str, Any]]:
    try:
        raw = client.get_registered_model(name).tags.get(f"{LOG_TAG}.{alias}")
    except Exception:
        return []
    return list(json.loads(raw)) if raw else []


def current_version(client: Any, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def reconcile(history: list[str], current: str | None) -> list[str]:
    """Make the history end at the alias's current version.

    A move interrupted between setting the alias and writing the history (or an alias moved by
    hand) leaves them apart: a current version found earlier in the stack means a rollback that
    did not finish, one not in it a promotion that did not.
    """
    if current is None or (history and history[-1] == current):
        return list(history)
    if current in history:
        return history[: len(history) - history[::-1].index(current)]
    return [*history, current]


def _error_code(err: Exception) -> str:
    return str(getattr(err, "error_code", ""))


def lock_name(name: str, alias: str) -> str:
    return f"{name}.{alias}.{LOCK_SUFFIX}"


@contextmanager
def alias_lock(client: Any, name: str, alias: str, wait_s: float = LOCK_WAIT_S,
               ttl_s: float = LOCK_TTL_S) -> Iterator[str]:
    """Hold the registry-side lock of `name@alias` (see the module docstring)."""
    lock = lock_name(name, alias)
    token = secrets.token_hex(8)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(
                lock, tags={LOCK_OWNER_TAG: token, LOCK_HOLDER_TAG: holder},
                description=f"edgeopt: transient lock on {name}@{alias}; removed when the promotion ends")
            break
        except Exception as err:
            if _error_code(err) != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = client.get_registered_model(lock)
        except Exception:
            continue  # released between our create and our read: try again at once
        age = time.time() - held.creation_timestamp / 1000
        if age > ttl_s:
            # Its holder died. Delete it only if it is still that holder's (narrows, not closes, the race).
            again = client.get_registered_model(lock)
            if again.tags.get(LOCK_OWNER_TAG) == held.tags.get(LOCK_OWNER_TAG):
                client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise RegistryBusy(f"{name}@{alias} is locked by {held.tags.get(LOCK_HOLDER_TAG, '?')} "
                               f"(for {age:.0f} s); gave up after {wait_s:g} s")
        time.sleep(random.uniform(0.1, 0.5))
    try:
        yield token
    finally:
        try:
            if client.get_registered_model(lock).tags.get(LOCK_OWNER_TAG) == token:
                client.delete_registered_model(lock)
        except Exception as err:
            if _error_code(err) != "RESOURCE_DOES_NOT_EXIST":
                raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def move_alias(client: Any, name: str, alias: str, version: str, action: str,
               expect_top: str | None = None) -> tuple[str | None, list[str]]:
    """Under the lock: re-read, reconcile, set the alias and its history, read back.

    `action` "promote" pushes `version`; "rollback" pops the current one (`version` must be the
    one below it, `expect_top` the one being rolled back). Returns (previous version, new history).
    """
    with alias_lock(client, name, alias):
        current = current_version(client, name, alias)
        history = reconcile(_history(client, name, alias), current)
        if action == "rollback":
            if current is None or current != expect_top or len(history) < 2 or history[-2] != version:
                raise UserError(f"{name}@{alias} moved while rolling back (now version {current}); try again")
            history = history[:-1]
        elif not history or history[-1] != version:
            history.append(version)
        client.set_registered_model_alias(name, alias, version)
        client.set_registered_model_tag(name, f"{HISTORY_TAG}.{alias}", json.dumps(history[-MAX_HISTORY:]))
        log = [*_log(client, name, alias), {"at": _now(), "action": action, "from": current, "to": version,
                                            "by": f"{socket.gethostname()}:{os.getpid()}"}]
        client.set_registered_model_tag(name, f"{LOG_TAG}.{alias}", json.dumps(log[-MAX_LOG:]))
        if current_version(client, name, alias) != version:  # someone bypassed the lock
            raise UserError(f"{name}@{alias} was moved by someone else during the promotion")
    return current, history


def log_served_model(workload: Workload, candidate_dir: Path, artifacts: dict[str, Path], model_config: dict[str, Any],
                     metadata: dict[str, Any]) -> Any:
    """Log a candidate as the workload's pyfunc in the active run; returns MLflow's ModelInfo.

    Models from code: `python_model` is the workload's .py file, stored as source next to the MLmodel, so
    nothing is pickled and loading executes that file (plus the edgeopt copy from `code_paths`).
    """
    import mlflow

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(workload.python_model()),
        artifacts={"candidate": str(candidate_dir), **{k: str(v) for k, v in artifacts.items()}},
        code_paths=[str(Path(__file__).parent)],
        model_config=model_config,
        pip_requirements=[],
        metadata={**metadata, "task": workload.task},
    )


def _artifact_of(client: Any, name: str, version: str) -> tuple[str, str, str] | None:
    """(candidate, artifact digest, runtime settings as JSON) a registered version was made from; None for
    versions without the tags."""
    try:
        tags = client.get_model_version(name, version).tags
    except Exception:
        return None
    if "candidate" not in tags or ARTIFACT_TAG not in tags:
        return None
    # The runtime settings it serves with are part of what it is (versions before them: the runtime's defaults).
    return tags["candidate"], tags[ARTIFACT_TAG], tags.get(SETTINGS_TAG, "{}")


def served_settings(measurement_dir: Path) -> dict[str, Any]:
    """The runtime settings the pick was measured with (edgeopt.tuning), which its pyfunc serves with."""
    try:
        return dict(Measurement.model_validate_json((measurement_dir / MEASUREMENT_FILE).read_text()).runtime_settings)
    except (OSError, ValueError):
        return {}


def promote(
    selection: Selection, cfg: PipelineConfig, workload: Workload, candidate_dir: Path | None,
    base: BaseModelInfo, pick_run_id: str | None, data_dir: Path, measurement_dir: Path | None,
) -> Promotion:
    """Log the pick as a pyfunc in its candidate run, register it, check it, then set the alias."""
    import mlflow

    reg = cfg.registry
    client = mlflow.MlflowClient()
    previous = current_version(client, reg.model_name, reg.alias)

    def outcome(promoted: bool, reason: str, **kw: Any) -> Promotion:
        return Promotion(pipeline=selection.pipeline, promoted=promoted, model_name=reg.model_name,
                         alias=reg.alias, reason=reason, **{"previous_version": previous, **kw})

    if selection.pick is None or pick_run_id is None or candidate_dir is None or measurement_dir is None:
        return outcome(False, selection.reason)
    row = next(r for r in selection.candidates if r.name == selection.pick)
    if not row.passed_gates:  # defensive: select() only picks gated rows
        raise UserError(f"refusing to promote {row.name}: it did not pass every gate")
    record = CandidateRecord.model_validate_json((candidate_dir / "candidate.json").read_text())
    digest = sha256_tree(candidate_dir)
    settings = served_settings(measurement_dir)
    settings_json = json.dumps(settings, sort_keys=True)
    if previous is not None and _artifact_of(client, reg.model_name, previous) == (row.name, digest, settings_json):
        # A nightly re-run that picks the same files must not add a version a night for nothing.
        return outcome(True, f"champion unchanged: version {previous} is {row.name} with the same artifact digest",
                       version=previous, candidate=row.name, unchanged=True)
    with mlflow.start_run(run_id=pick_run_id):
        info = log_served_model(
            workload, candidate_dir, workload.serving_artifacts(base),
            model_config={**workload.serving_config(cfg, base), "runtime_settings": settings},
            metadata={"candidate": row.name, "recipe": row.recipe, "runtime": record.runtime},
        )
    version = mlflow.register_model(info.model_uri, reg.model_name,
                                    tags={"candidate": row.name, "recipe": row.recipe,
                                          "edgeopt.cache_key": record.cache_key, ARTIFACT_TAG: digest,
                                          SETTINGS_TAG: settings_json, "edgeopt.pipeline": selection.pipeline})
    v = str(version.version)
    # Prove the registered artifact works before anyone is pointed at it.
    loaded = mlflow.pyfunc.load_model(f"models:/{reg.model_name}/{v}")
    ok, detail = workload.load_check(loaded, data_dir, measurement_dir)
    client.set_model_version_tag(reg.model_name, v, "edgeopt.load_check", detail)
    if not ok:
        return outcome(False, f"registered version {v} failed its load check: {detail}", version=v,
                       candidate=row.name)
    try:
        replaced, _ = move_alias(client, reg.model_name, reg.alias, v, "promote")
    except RegistryBusy as err:
        return outcome(False, f"registered version {v}, but did not move the alias: {err}", version=v,
                       candidate=row.name)
    client.set_model_version_tag(reg.model_name, v, f"edgeopt.promoted_at.{reg.alias}", _now())
    return outcome(True, selection.reason, version=v, candidate=row.name, previous_version=replaced)


def rollback(model_name: str, alias: str) -> Promotion:
    """Move the alias back to the version it pointed at before the current one."""
    import mlflow

    client = mlflow.MlflowClient()
    current = current_version(client, model_name, alias)
    if current is None:
        raise UserError(f"{model_name}@{alias} is not set; nothing to roll back")
    history = reconcile(_history(client, model_name, alias), current)
    if len(history) < 2:
        raise UserError(f"{model_name}@{alias}: no earlier version recorded to roll back to")
    target = history[-2]
    try:
        client.get_model_version(model_name, target)
    except Exception:
        raise UserError(f"{model_name}: version {target}, the previous {alias}, no longer exists") from None
    try:
        move_alias(client, model_name, alias, target, "rollback", expect_top=current)
    except RegistryBusy as err:
        raise UserError(str(err)) from None
    return Promotion(pipeline="", promoted=True, model_name=model_name, alias=alias, version=target,
                     previous_version=current, reason=f"rolled back from version {current}")
