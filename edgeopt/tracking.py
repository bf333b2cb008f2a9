"""MLflow: one parent run per pipeline run, one child run per candidate, with lineage.

The tracking URI is set here, from the environment or params, only when a run starts.

Every run edgeopt creates carries owner tags (host, pid, process start time), so a run left
RUNNING by a process that was killed can be told from one still in progress: `mark_stale_runs`
(called each time a pipeline run starts) terminates the former as KILLED, with the reason.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import math
import os
import socket
import tempfile
import threading
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeopt.config import Params
from edgeopt.lineage import git_revision, library_versions
from edgeopt.results import CandidateRecord, CandidateResult, Selection

TAG = "edgeopt."

log = logging.getLogger(__name__)

# Who created a run: the process that is responsible for terminating it.
OWNER_HOST = f"{TAG}owner.host"
OWNER_PID = f"{TAG}owner.pid"
OWNER_STARTED = f"{TAG}owner.started"  # the owner's start time (epoch s): a recycled pid is not the owner
OWNER_PID_NAMESPACE = f"{TAG}owner.pid_namespace"  # containers sharing a hostname have their own pids
# Set when the owner exited normally with its pipeline run still open (the staged CLI / `dvc repro`:
# `edgeopt candidates` starts the run, `edgeopt promote` in another process finishes it).
OWNER_RELEASED = f"{TAG}owner.released"
KILLED_REASON = f"{TAG}killed_reason"
# How far a live process's start time may be from the tag and still be the owner. A recycled pid
# belongs to a process started after the owner ended, and /proc-derived start times move with
# wall-clock steps, so this can be generous.
_START_TOLERANCE_S = 2.0
# What MLflow accepts in one tag value and in one log_batch call: MLflow 3's MAX_TAG_VAL_LENGTH,
# MAX_PARAMS_TAGS_PER_BATCH and MAX_ENTITIES_PER_BATCH (metrics + params + tags) in mlflow.utils.validation;
# not imported from there, so that importing this module does not import MLflow.
MAX_TAG_VAL_LENGTH = 8000
MAX_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000 - MAX_TAGS_PER_BATCH  # a full chunk of both stays within the 1000 entities
TIMINGS_ARTIFACT = "measurement/timings.json"


def tracking_uri(params: Params, project_root: Path) -> str:
    """params `tracking.uri`, else $MLFLOW_TRACKING_URI, else sqlite `mlflow.db` in the project.

    An explicit uri wins over the environment: `mlflow.set_tracking_uri` itself exports
    MLFLOW_TRACKING_URI, so another store used earlier in this process (or by a parent) must not
    silently replace the one params.yaml names.
    """
    if params.tracking.uri:
        return params.tracking.uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(project_root / 'mlflow.db').resolve()}"


def artifact_location(params: Params, project_root: Path) -> str:
    root = params.tracking.artifact_root
    return (root if root.is_absolute() else project_root / root).resolve().as_uri()


def configure(params: Params, project_root: Path) -> str:
    """Point MLflow at the configured store and return the experiment id (created if new)."""
    import mlflow

    uri = tracking_uri(params, project_root)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(params.tracking.experiment)
    if exp is not None:
        return str(exp.experiment_id)
    # A server decides where its artifacts go; a local store keeps them under mlruns/.
    location = None if uri.startswith(("http://", "https://")) else artifact_location(params, project_root)
    try:
        return str(client.create_experiment(params.tracking.experiment, artifact_location=location))
    except Exception:
        # Another process created it between our lookup and create.
        exp = client.get_experiment_by_name(params.tracking.experiment)
        if exp is None:
            raise
        return str(exp.experiment_id)


def _flat(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: str(value)[:6000]}


def lineage_tags(
    namespace: str, base_sha256: str, data_digest: str, project_root: Path, dvc: dict[str, str]
) -> dict[str, str]:
    tags = {
        f"{TAG}pipeline": namespace,
        f"{TAG}base_sha256": base_sha256,
        f"{TAG}dataset_digest": data_digest,
        # The code revision is the source checkout's; the data revision is the project's DVC lock.
        **{f"{TAG}{k}": v for k, v in git_revision(Path(__file__).resolve().parents[1]).items()},
        **{f"{TAG}{k}": v for k, v in dvc.items()},
        **{f"{TAG}version.{k}": v for k, v in library_versions().items()},
    }
    return tags


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run it creates."""
    import psutil

    tags = {
        OWNER_HOST: socket.gethostname(),
        OWNER_PID: str(os.getpid()),
        OWNER_STARTED: f"{psutil.Process().create_time():.3f}",
    }
    ns = _pid_namespace()
    if ns:
        tags[OWNER_PID_NAMESPACE] = ns
    return tags


def _process_alive(pid: int, started: float) -> bool:
    """Is the process that started at `started` still running as `pid`? (Unknown counts as alive.)"""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not reaped yet
            return False
        return abs(proc.create_time() - started) <= _START_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # AccessDenied and the like: can't tell
        return True


def _stale_owner(tags: dict[str, str], me: dict[str, str]) -> str | None:
    """`host:pid` of the run's owner if that owner is a process of this machine that no longer exists."""
    host, pid, started = tags.get(OWNER_HOST), tags.get(OWNER_PID), tags.get(OWNER_STARTED)
    if host is None or pid is None or started is None or OWNER_RELEASED in tags:
        return None  # made before owner tags existed, or handed over to a later stage: can't know
    if host != me[OWNER_HOST]:
        return None  # another machine's process: can't see it from here
    ns = tags.get(OWNER_PID_NAMESPACE)
    if ns and me.get(OWNER_PID_NAMESPACE) and ns != me[OWNER_PID_NAMESPACE]:
        return None  # another container with the same hostname: its pids aren't ours
    try:
        pid_n, started_s = int(pid), float(started)
    except ValueError:
        return None
    if pid_n <= 0 or _process_alive(pid_n, started_s):
        return None
    return f"{host}:{pid_n}"


def mark_stale_runs(experiment_id: str) -> list[str]:
    """Terminate as KILLED the experiment's RUNNING runs whose owner process (on this host) is gone.

    Runs owned by another host, runs without owner tags and runs whose owner handed them over to a
    later stage are left alone. Returns the ids of the runs marked.
    """
    import mlflow
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    me = owner_tags()
    query = "attributes.status = 'RUNNING'"
    if not set(me[OWNER_HOST]) & set("'\\`"):
        query += f" and tags.`{OWNER_HOST}` = '{me[OWNER_HOST]}'"
    # Collect first: terminating runs while paging through "status = RUNNING" would shift the pages.
    stale: list[tuple[str, str]] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        for run in page:
            owner = _stale_owner(run.data.tags, me)
            if owner is not None:
                stale.append((run.info.run_id, owner))
        token = page.token
        if not token:
            break
    marked = []
    for run_id, owner in stale:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        reason = f"its process {owner} is gone; marked KILLED by {me[OWNER_HOST]}:{me[OWNER_PID]} at {when}"
        try:
            client.set_tag(run_id, KILLED_REASON, reason)
            client.set_terminated(run_id, status="KILLED")
        except MlflowException as e:  # e.g. deleted meanwhile
            log.warning("could not mark stale MLflow run %s KILLED: %s", run_id, e)
            continue
        marked.append(run_id)
    if marked:
        log.info("marked %d stale MLflow run(s) KILLED: %s", len(marked), ", ".join(marked))
    return marked


# Pipeline runs this process started and has not finished: run id -> (tracking URI, creating pid).
_open_runs: dict[str, tuple[str, int]] = {}
_open_runs_lock = threading.Lock()
_release_hook_registered = False


def _remember_open_run(run_id: str, uri: str) -> None:
    global _release_hook_registered
    with _open_runs_lock:
        _open_runs[run_id] = (uri, os.getpid())
        if not _release_hook_registered:
            atexit.register(_release_open_runs)
            _release_hook_registered = True


def _release_open_runs() -> None:
    """At a normal exit, hand still-open pipeline runs over to whoever finishes them later.

    The staged CLI (`dvc repro`) starts the run in `edgeopt candidates` and finishes it in
    `edgeopt promote`, another process; without this, a pipeline started in between would mark the
    run KILLED. A killed process (SIGKILL, SIGTERM) runs no atexit hook, so its runs stay claimable.
    """
    with _open_runs_lock:
        pending = [(r, uri) for r, (uri, pid) in _open_runs.items() if pid == os.getpid()]
        _open_runs.clear()
    if not pending:
        return
    # Exiting: don't sit through MLflow's HTTP retries against a server that went away.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    import mlflow

    me = owner_tags()
    for run_id, uri in pending:
        try:
            if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):].split("?")[0]).is_file():
                continue  # the store is gone (a test's temporary folder): don't create an empty one
            client = mlflow.MlflowClient(tracking_uri=uri)
            if client.get_run(run_id).info.status != "RUNNING":
                continue
            when = datetime.now(UTC).isoformat(timespec="seconds")
            client.set_tag(run_id, OWNER_RELEASED, f"{me[OWNER_HOST]}:{me[OWNER_PID]} exited at {when} with the "
                                                   "run open, for a later stage to finish")
        except Exception as e:  # never fail an exit over this
            log.debug("could not release MLflow run %s: %s", run_id, e)


def start_pipeline_run(
    experiment_id: str, namespace: str, tags: dict[str, str], config: dict[str, Any]
) -> str:
    import mlflow

    try:
        mark_stale_runs(experiment_id)
    except Exception as e:  # cleanup is best effort: never stop a pipeline over it
        log.warning("could not check for stale MLflow runs: %s", e)
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, run_name=f"{namespace}",
                            tags={**tags, f"{TAG}kind": "pipeline", **owner_tags()})
    _remember_open_run(run.info.run_id, mlflow.get_tracking_uri())
    client.log_batch(run.info.run_id, params=[
        mlflow.entities.Param(k, v[:6000]) for k, v in _flat("", config).items()
    ][:100])
    client.log_dict(run.info.run_id, config, "params.json")
    return str(run.info.run_id)


def log_json(run_id: str, obj: Any, name: str) -> None:
    """A JSON artifact of a run (e.g. the base model's tensor I/O spec)."""
    import mlflow

    mlflow.MlflowClient().log_dict(run_id, obj, name)


def log_dataset(run_id: str, data_dir: Path, rows: list[dict[str, Any]], name: str, digest: str) -> None:
    """Record the evaluation set (name, digest, source, schema: `rows`, the task's table of it) as the run's input."""
    import mlflow
    import pandas as pd

    df = pd.DataFrame(rows)
    with warnings.catch_warnings():
        # MLflow registers the local-artifact source twice and warns that a path is ambiguous.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        # The schema of integer columns (image labels, sizes): MLflow's advice about missing values at
        # inference does not apply to an evaluation table, which has none.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        dataset = mlflow.data.from_pandas(df, source=data_dir.resolve().as_uri(), name=name, digest=digest[:36])
    client = mlflow.MlflowClient()
    client.log_inputs(run_id, datasets=[mlflow.entities.DatasetInput(
        dataset._to_mlflow_entity(), tags=[mlflow.entities.InputTag("mlflow.data.context", "evaluation")]
    )])


def _previous_artifact_run(experiment_id: str, cache_key: str) -> str | None:
    """A run that already holds this exact artifact (same cache key): don't copy it again."""
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG}cache_key` = '{cache_key}' and tags.`{TAG}artifacts` = 'logged'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _round_logs(measurement_dir: Path) -> list[Path]:
    """Each measurement round's child log (`rounds/<i>/measure.log`), in round order."""
    rounds = measurement_dir / "rounds"
    if not rounds.is_dir():
        return []
    return [d / "measure.log" for d in sorted((d for d in rounds.iterdir() if d.name.isdigit()),
                                              key=lambda d: int(d.name)) if (d / "measure.log").is_file()]


def log_candidate(
    experiment_id: str, parent_run_id: str, row: CandidateResult, record: CandidateRecord | None,
    candidate_dir: Path | None, measurement_dir: Path | None, lineage: dict[str, str],
) -> str:
    """One child run per candidate; a failed or skipped candidate is a FAILED/KILLED run with its error."""
    import mlflow

    client = mlflow.MlflowClient()
    tags = {
        **lineage, "mlflow.parentRunId": parent_run_id, f"{TAG}kind": "candidate",
        f"{TAG}candidate": row.name, f"{TAG}recipe": row.recipe, f"{TAG}status": row.status,
        f"{TAG}parent_candidate": row.parent or "base",
    }
    if record is not None:
        tags[f"{TAG}cache_key"] = record.cache_key
        tags.update({f"{TAG}version.{k}": v for k, v in record.tool_versions.items()})
    run = client.create_run(experiment_id, run_name=row.name, tags={**tags, **owner_tags()})
    run_id = run.info.run_id
    try:
        return _fill_candidate_run(client, experiment_id, run_id, row, record, candidate_dir, measurement_dir)
    except BaseException as e:
        # Don't leave the child RUNNING when logging it fails (the parent's process lives on).
        try:
            client.set_tag(run_id, f"{TAG}error", f"logging the candidate failed: {e!r}"[:5000])
            client.set_terminated(run_id, status="FAILED" if isinstance(e, Exception) else "KILLED")
        except Exception:
            pass
        raise


def _fill_candidate_run(
    client: Any, experiment_id: str, run_id: str, row: CandidateResult, record: CandidateRecord | None,
    candidate_dir: Path | None, measurement_dir: Path | None,
) -> str:
    from mlflow.entities import Param

    params = {"candidate": row.name, "recipe": row.recipe, "framework": row.framework or "",
              "precision": row.precision or "", "parent": row.parent or "base"}
    if record is not None:
        params.update({"runtime": record.runtime, "format": record.format, **_flat("option", record.options)})
    if row.measurement is not None and row.measurement.runtime_settings:  # lineage: what its rounds ran with
        params.update(_flat("runtime_setting", row.measurement.runtime_settings))
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    if row.measurement is not None and row.measurement.tuning:
        client.log_dict(run_id, row.measurement.tuning, "tuning.json")
    if row.measurement is not None:  # also a candidate that failed after it was measured
        client.log_dict(run_id, timings(row), TIMINGS_ARTIFACT)
    if row.status != "ok":
        client.set_tag(run_id, f"{TAG}error", (row.error or "")[:5000])
        client.log_text(run_id, row.error or "", "error.txt")
        # The isolated build/measure child's own output: where a crash or a kill shows (the last round's).
        for log in ([measurement_dir / "build.log", *_round_logs(measurement_dir)[-1:]]
                    if measurement_dir is not None else []):
            if log.is_file():
                client.log_artifact(run_id, str(log))
        _log_batch(client, run_id, metrics=interval_metrics(row), tags=measurement_tags(row))
        client.set_terminated(run_id, status="FAILED" if row.status == "failed" else "KILLED")
        return str(run_id)

    metrics = {**flat_metrics(row), **interval_metrics(row)}
    _log_batch(client, run_id, metrics=metrics, tags=measurement_tags(row))
    client.log_dict(run_id, row.model_dump(mode="json"), "result.json")
    if record is not None:
        client.log_dict(run_id, record.model_dump(mode="json"), "candidate.json")
        client.log_dict(run_id, {"details": record.details}, "recipe_details.json")
    if measurement_dir is not None:
        for f in ("measurement.json", "build.log"):
            if (measurement_dir / f).is_file():
                client.log_artifact(run_id, str(measurement_dir / f), "measurement")
        for log in _round_logs(measurement_dir):
            client.log_artifact(run_id, str(log), f"measurement/rounds/{log.parent.name}")
    if record is not None and candidate_dir is not None:
        earlier = _previous_artifact_run(experiment_id, record.cache_key)
        if earlier is None:
            client.log_artifacts(run_id, str(candidate_dir), "model_files")
            client.set_tag(run_id, f"{TAG}artifacts", "logged")
        else:
            client.set_tag(run_id, f"{TAG}artifacts_run_id", earlier)
    client.set_terminated(run_id, status="FINISHED")
    return str(run_id)


def _log_batch(client: Any, run_id: str, metrics: dict[str, float] | None = None,
               tags: dict[str, str] | None = None) -> None:
    """Metrics and tags in as few `log_batch` calls as MLflow's per-call limits allow (usually one)."""
    from mlflow.entities import Metric, RunTag

    ms = [Metric(k, v, 0, 0) for k, v in (metrics or {}).items()]
    ts = [RunTag(k, v) for k, v in (tags or {}).items()]
    m_chunks = [ms[i:i + MAX_METRICS_PER_BATCH] for i in range(0, len(ms), MAX_METRICS_PER_BATCH)]
    t_chunks = [ts[i:i + MAX_TAGS_PER_BATCH] for i in range(0, len(ts), MAX_TAGS_PER_BATCH)]
    empty: list[Any] = []
    for m_chunk, t_chunk in itertools.zip_longest(m_chunks, t_chunks, fillvalue=empty):
        client.log_batch(run_id, metrics=m_chunk, tags=t_chunk)


def _metric_key(name: str) -> str:
    return name.replace("@", "_at_")  # MLflow keys allow [\w./ -]; recall@10 -> recall_at_10


def interval_metrics(row: CandidateResult) -> dict[str, float]:
    """`<name>_ci_low` / `<name>_ci_high` beside each metric that has a confidence interval, and `rounds`.

    Names follow `flat_metrics`: measurement intervals under the measurement's names (latency_p50_ms, ...),
    quality metrics' under theirs, retention intervals as retention_<metric>, and the candidate's own
    (speedup, quality_retention). Non-finite bounds (a degenerate bootstrap) are left out.
    """
    m, q = row.measurement, row.quality
    sources: list[tuple[str, dict[str, tuple[float, float]]]] = []
    if m is not None:
        sources.append(("", m.ci))
    if q is not None:
        sources += [("", q.ci), ("retention_", q.retention_ci)]
    sources.append(("", row.ci))
    out: dict[str, float] = {}
    for prefix, intervals in sources:
        for name, (low, high) in intervals.items():
            key = _metric_key(f"{prefix}{name}")
            for suffix, value in (("low", low), ("high", high)):
                if math.isfinite(value):
                    out[f"{key}_ci_{suffix}"] = float(value)
    if m is not None:
        out["rounds"] = float(len(m.rounds))
    return out


def _truncated_list(items: list[str], limit: int = MAX_TAG_VAL_LENGTH) -> str:
    """Comma-joined, cut at the last whole item that fits MLflow's tag limit."""
    text = ",".join(items)
    if len(text) <= limit:
        return text
    return text[:limit + 1].rsplit(",", 1)[0][:limit]


def measurement_tags(row: CandidateResult) -> dict[str, str]:
    """Where and how the candidate was measured: reused or fresh, on which machine, when, by which harness."""
    m = row.measurement
    if m is None:
        return {}
    flags = m.machine.get("flags") or []
    flag_list = flags.split() if isinstance(flags, str) else [str(f) for f in flags]
    tags = {
        f"{TAG}measurement_reused": str(m.reused).lower(),
        f"{TAG}machine_fingerprint": m.machine_fingerprint,
        f"{TAG}measured_at": m.started_at,
        f"{TAG}cpu_flags": _truncated_list(flag_list),
        f"{TAG}harness_version": m.harness_version,
    }
    # An older measurement lacks some: no empty tags that would read as recorded values.
    return {k: v[:MAX_TAG_VAL_LENGTH] for k, v in tags.items() if v}


def timings(row: CandidateResult) -> dict[str, Any]:
    """`measurement/timings.json`: every round's raw per-iteration samples, with when and under what load."""
    m = row.measurement
    if m is None:
        return {}
    return {
        "candidate": row.name,
        "started_at": m.started_at,
        "reused": m.reused,
        "session": m.session,
        "harness_version": m.harness_version,
        "machine_fingerprint": m.machine_fingerprint,
        "machine": m.machine,
        "units": "samples are the raw per-iteration series as measured: latency_s and throughput_s in seconds, "
                 "rates (items_per_s, decode_tok_s, ...) per second, *_ms in milliseconds",
        "rounds": [{"index": r.index, "started_at": r.started_at, "load": r.load, "under_load": r.under_load,
                    "load_time_s": r.load_time_s, "peak_rss_mb": r.peak_rss_mb,
                    "throughput_items_per_s": r.throughput_items_per_s, "extra": r.extra, "samples": r.samples}
                   for r in m.rounds],
    }


def flat_metrics(row: CandidateResult) -> dict[str, float]:
    m, q = row.measurement, row.quality
    if m is None or q is None:
        return {}
    out = {
        "load_time_s": m.load_time_s,
        "latency_p50_ms": m.latency.p50_ms, "latency_p90_ms": m.latency.p90_ms,
        "latency_p99_ms": m.latency.p99_ms, "latency_mean_ms": m.latency.mean_ms,
        "throughput_batch_p50_ms": m.throughput.p50_ms,
        "throughput_items_per_s": m.throughput_items_per_s,
        "peak_rss_mb": m.peak_rss_mb, "size_mb": m.size_mb,
        **m.extra,  # workload-specific: prompt/decode tok/s, TTFT, bandwidth roof for causal-lm
    }
    for k, v in q.metrics.items():
        out[k.replace("@", "_at_")] = v
    for k, v in q.retention.items():
        out[f"retention_{k.replace('@', '_at_')}"] = v
    for name in ("speedup", "size_reduction", "rss_reduction", "quality_retention"):
        value = getattr(row, name)
        if value is not None:
            out[name] = value
    return out


def log_selection(parent_run_id: str, selection: Selection) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    client.log_dict(parent_run_id, selection.model_dump(mode="json"), "selection.json")
    client.log_dict(parent_run_id, {"frontier": selection.frontier, "pick": selection.pick,
                                    "pick_rule": selection.pick_rule, "reason": selection.reason},
                    "pareto_frontier.json")
    client.set_tag(parent_run_id, f"{TAG}pick", selection.pick or "none")
    client.set_tag(parent_run_id, f"{TAG}frontier", ",".join(selection.frontier))
    for row in selection.candidates:
        if row.mlflow_run_id:
            client.set_tag(row.mlflow_run_id, f"{TAG}on_frontier", str(row.name in selection.frontier).lower())
            client.set_tag(row.mlflow_run_id, f"{TAG}passed_gates", str(row.passed_gates).lower())
            for g in row.gates:
                client.log_metric(row.mlflow_run_id, f"gate_{g.name}", g.value)


def finish_pipeline_run(run_id: str, status: str = "FINISHED") -> None:
    import mlflow

    mlflow.MlflowClient().set_terminated(run_id, status=status)
    with _open_runs_lock:
        _open_runs.pop(run_id, None)


def write_json_artifact(run_id: str, obj: Any, name: str) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_text(json.dumps(obj, indent=2, default=str))
        mlflow.MlflowClient().log_artifact(run_id, str(p))
