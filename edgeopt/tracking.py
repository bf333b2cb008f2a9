"""MLflow: one parent run per pipeline run, one child run per candidate, with lineage.

The tracking URI is set here, from the environment or params, only when a run starts.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from edgeopt.config import Params
from edgeopt.lineage import git_revision, library_versions
from edgeopt.results import CandidateRecord, CandidateResult, Selection

TAG = "edgeopt."


def tracking_uri(params: Params, project_root: Path) -> str:
    """$MLFLOW_TRACKING_URI, else params `tracking.uri`, else sqlite `mlflow.db` in the project."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if params.tracking.uri:
        return params.tracking.uri
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


def start_pipeline_run(
    experiment_id: str, namespace: str, tags: dict[str, str], config: dict[str, Any]
) -> str:
    import mlflow

    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, run_name=f"{namespace}", tags={**tags, f"{TAG}kind": "pipeline"})
    client.log_batch(run.info.run_id, params=[
        mlflow.entities.Param(k, v[:6000]) for k, v in _flat("", config).items()
    ][:100])
    client.log_dict(run.info.run_id, config, "params.json")
    return str(run.info.run_id)


def log_dataset(run_id: str, data_dir: Path, name: str, digest: str) -> None:
    """Record the evaluation set (name, digest, source, schema) as the run's input."""
    import mlflow
    import pandas as pd

    from edgeopt.data import dataset_rows

    df = pd.DataFrame(dataset_rows(data_dir))
    with warnings.catch_warnings():
        # MLflow registers the local-artifact source twice and warns that a path is ambiguous.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
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


def log_candidate(
    experiment_id: str, parent_run_id: str, row: CandidateResult, record: CandidateRecord | None,
    candidate_dir: Path | None, measurement_dir: Path | None, lineage: dict[str, str],
) -> str:
    """One child run per candidate; a failed or skipped candidate is a FAILED/KILLED run with its error."""
    import mlflow
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient()
    tags = {
        **lineage, "mlflow.parentRunId": parent_run_id, f"{TAG}kind": "candidate",
        f"{TAG}candidate": row.name, f"{TAG}recipe": row.recipe, f"{TAG}status": row.status,
        f"{TAG}parent_candidate": row.parent or "base",
    }
    if record is not None:
        tags[f"{TAG}cache_key"] = record.cache_key
        tags.update({f"{TAG}version.{k}": v for k, v in record.tool_versions.items()})
    run = client.create_run(experiment_id, run_name=row.name, tags=tags)
    run_id = run.info.run_id
    params = {"candidate": row.name, "recipe": row.recipe, "framework": row.framework or "",
              "precision": row.precision or "", "parent": row.parent or "base"}
    if record is not None:
        params.update({"runtime": record.runtime, "format": record.format, **_flat("option", record.options)})
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    if row.status != "ok":
        client.set_tag(run_id, f"{TAG}error", (row.error or "")[:5000])
        client.log_text(run_id, row.error or "", "error.txt")
        # The isolated build/measure child's own output: where a crash or a kill shows.
        for log in ("build.log", "measure.log"):
            if measurement_dir is not None and (measurement_dir / log).is_file():
                client.log_artifact(run_id, str(measurement_dir / log))
        client.set_terminated(run_id, status="FAILED" if row.status == "failed" else "KILLED")
        return str(run_id)

    metrics = flat_metrics(row)
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    client.log_dict(run_id, row.model_dump(mode="json"), "result.json")
    if record is not None:
        client.log_dict(run_id, record.model_dump(mode="json"), "candidate.json")
        client.log_dict(run_id, {"details": record.details}, "recipe_details.json")
    if measurement_dir is not None:
        for f in ("measurement.json", "build.log", "measure.log"):
            if (measurement_dir / f).is_file():
                client.log_artifact(run_id, str(measurement_dir / f), "measurement")
    if record is not None and candidate_dir is not None:
        earlier = _previous_artifact_run(experiment_id, record.cache_key)
        if earlier is None:
            client.log_artifacts(run_id, str(candidate_dir), "model_files")
            client.set_tag(run_id, f"{TAG}artifacts", "logged")
        else:
            client.set_tag(run_id, f"{TAG}artifacts_run_id", earlier)
    client.set_terminated(run_id, status="FINISHED")
    return str(run_id)


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


def write_json_artifact(run_id: str, obj: Any, name: str) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_text(json.dumps(obj, indent=2, default=str))
        mlflow.MlflowClient().log_artifact(run_id, str(p))
