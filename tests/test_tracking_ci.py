"""A candidate's rounds and intervals reach MLflow: *_ci_low/_ci_high metrics, `rounds`, the measurement tags
and `measurement/timings.json` with every round's raw samples (a real sqlite store, the project's own logging)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import mlflow
import pytest

from edgeopt import tracking
from edgeopt.results import CandidateResult, GateResult, LatencyStats, Measurement, Quality, RoundRecord

FLAGS = ["fpu", "sse4_2", "avx2", "fma", "avx512f"]


@pytest.fixture
def store(tmp_path: Path):
    """A private sqlite store with one experiment and a parent run; yields (experiment id, parent run id)."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        client = mlflow.MlflowClient()
        exp = str(client.create_experiment("ci", artifact_location=(tmp_path / "mlruns").as_uri()))
        parent = client.create_run(exp, run_name="pipeline", tags=tracking.owner_tags()).info.run_id
        yield exp, parent
        tracking.finish_pipeline_run(parent)
    finally:
        mlflow.set_tracking_uri(None)


def _round(i: int, under_load: bool = False) -> RoundRecord:
    return RoundRecord(index=i, started_at=f"2025-03-01T10:00:0{i}+00:00", load_time_s=0.40 + i / 100,
                       peak_rss_mb=300.0 + i, throughput_items_per_s=250.0 - i,
                       samples={"latency_s": [0.0040 + i / 1e4, 0.0041, 0.0039], "throughput_s": [0.064, 0.065],
                                "items_per_s": [250.0, 246.2]},
                       load={"cpu_other": 0.62 if under_load else 0.03, "run_queue": 2.0 if under_load else 0.0},
                       under_load=under_load)


def measured_row(name: str = "ort-int8", flags: list[str] | None = None,
                 status: Literal["ok", "failed"] = "ok") -> CandidateResult:
    lat = LatencyStats(batch_size=1, iterations=9, p50_ms=4.0, p90_ms=4.1, p99_ms=4.3, mean_ms=4.02)
    m = Measurement(
        candidate=name, threads=2, sequence_length=128, load_time_s=0.41, latency=lat, throughput=lat,
        throughput_items_per_s=248.0, peak_rss_mb=301.0, size_mb=23.0, extra={"decode_tok_s": 61.0},
        rounds=[_round(0), _round(1, under_load=True), _round(2)],
        ci={"latency_p50_ms": (3.92, 4.08), "latency_p99_ms": (4.1, 4.6), "throughput_items_per_s": (244.0, 251.0),
            "peak_rss_mb": (300.0, 302.0), "load_time_s": (0.40, 0.42), "decode_tok_s": (59.5, 62.0)},
        started_at="2025-03-01T10:00:00+00:00",
        machine={"cpu": "Test CPU", "flags": FLAGS if flags is None else flags, "cores": 2, "memory_gib": 8},
        machine_fingerprint="f00dfeed", harness_version="rounds-2", reused=True, session="s1",
    )
    q = Quality(metrics={"cosine": 0.995, "recall@10": 0.97}, retention={"cosine": 0.995, "recall@10": 0.99},
                ci={"cosine": (0.994, 0.996), "recall@10": (0.95, 0.98)},
                retention_ci={"cosine": (0.994, 0.996), "recall@10": (0.97, 1.0)})
    return CandidateResult(
        name=name, recipe="ort-dynamic-int8", parent="onnx-fp32", status=status,
        error="evaluate: boom" if status != "ok" else None, measurement=m, quality=q, speedup=5.0,
        size_reduction=0.74, rss_reduction=0.5, quality_retention=0.99,
        gates=[GateResult(name="speedup", value=5.0, threshold=2.0, passed=True, ci=(4.83, 5.2))],
        ci={"speedup": (4.83, 5.2), "quality_retention": (0.97, 0.996)})


def test_intervals_rounds_tags_and_timings_are_logged(store, tmp_path: Path, monkeypatch) -> None:
    exp, parent = store
    calls: list[tuple[int, int]] = []
    original = mlflow.MlflowClient.log_batch

    def counting(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        calls.append((len(metrics), len(tags)))
        return original(self, run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", counting)
    row = measured_row()
    run_id = tracking.log_candidate(exp, parent, row, None, None, None, {"edgeopt.pipeline": "minilm"})
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    metrics, tags = run.data.metrics, run.data.tags

    expected = {
        "latency_p50_ms": (3.92, 4.08), "latency_p99_ms": (4.1, 4.6), "throughput_items_per_s": (244.0, 251.0),
        "peak_rss_mb": (300.0, 302.0), "load_time_s": (0.40, 0.42), "decode_tok_s": (59.5, 62.0),
        "cosine": (0.994, 0.996), "recall_at_10": (0.95, 0.98),
        "retention_cosine": (0.994, 0.996), "retention_recall_at_10": (0.97, 1.0),
        "speedup": (4.83, 5.2), "quality_retention": (0.97, 0.996),
    }
    for name, (low, high) in expected.items():
        assert metrics[f"{name}_ci_low"] == pytest.approx(low), name
        assert metrics[f"{name}_ci_high"] == pytest.approx(high), name
        assert name in metrics  # the point value sits beside its interval under the same name
    assert metrics["rounds"] == 3

    assert tags["edgeopt.measurement_reused"] == "true"
    assert tags["edgeopt.machine_fingerprint"] == "f00dfeed"
    assert tags["edgeopt.measured_at"] == "2025-03-01T10:00:00+00:00"
    assert tags["edgeopt.cpu_flags"] == "fpu,sse4_2,avx2,fma,avx512f"
    assert tags["edgeopt.harness_version"] == "rounds-2"

    # Batched: the params in one call, every metric and the measurement tags in one more.
    assert len(calls) == 2
    assert calls[1][0] == len(metrics) and calls[1][1] == 5

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=tracking.TIMINGS_ARTIFACT,
                                               dst_path=str(tmp_path / "dl"))
    timings = json.loads(Path(path).read_text())
    assert timings["candidate"] == "ort-int8" and timings["started_at"] == "2025-03-01T10:00:00+00:00"
    assert [r["index"] for r in timings["rounds"]] == [0, 1, 2]
    for logged, original_round in zip(timings["rounds"], row.measurement.rounds, strict=True):
        assert logged["samples"] == original_round.samples
        assert logged["started_at"] == original_round.started_at
        assert logged["load"] == original_round.load
        assert logged["under_load"] == original_round.under_load
    assert timings["machine"]["cpu"] == "Test CPU"


def test_cpu_flags_are_cut_at_a_whole_flag_within_the_tag_limit(store) -> None:
    exp, parent = store
    flags = [f"flag{i:05d}" for i in range(2000)]  # 19999 characters joined
    run_id = tracking.log_candidate(exp, parent, measured_row(flags=flags), None, None, None, {})
    logged = mlflow.MlflowClient().get_run(run_id).data.tags["edgeopt.cpu_flags"]
    assert len(logged) <= tracking.MAX_TAG_VAL_LENGTH
    assert logged.split(",") == flags[:len(logged.split(","))]  # whole flags only, in order
    assert len(logged) > tracking.MAX_TAG_VAL_LENGTH - 10


def test_a_candidate_that_failed_after_it_was_measured_keeps_its_timings(store, tmp_path: Path) -> None:
    exp, parent = store
    run_id = tracking.log_candidate(exp, parent, measured_row("late-fail", status="failed"), None, None, None, {})
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.metrics["rounds"] == 3 and run.data.metrics["latency_p50_ms_ci_low"] == pytest.approx(3.92)
    assert run.data.tags["edgeopt.machine_fingerprint"] == "f00dfeed"
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=tracking.TIMINGS_ARTIFACT,
                                               dst_path=str(tmp_path / "dl"))
    assert len(json.loads(Path(path).read_text())["rounds"]) == 3


def test_an_older_measurement_without_rounds_logs_no_intervals_and_no_empty_tags(store, tmp_path: Path) -> None:
    exp, parent = store
    row = measured_row("old")
    assert row.measurement is not None and row.quality is not None
    old = row.model_copy(update={
        "measurement": Measurement(**{**row.measurement.model_dump(), "rounds": [], "ci": {}, "started_at": "",
                                      "machine": {}, "machine_fingerprint": "", "harness_version": "",
                                      "reused": False, "session": ""}),
        "quality": Quality(metrics=row.quality.metrics, retention=row.quality.retention), "ci": {}})
    run_id = tracking.log_candidate(exp, parent, old, None, None, None, {})
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert not [k for k in run.data.metrics if "_ci_" in k]
    assert run.data.metrics["rounds"] == 0 and run.data.metrics["latency_p50_ms"] == 4.0
    assert run.data.tags["edgeopt.measurement_reused"] == "false"
    for absent in ("edgeopt.machine_fingerprint", "edgeopt.measured_at", "edgeopt.cpu_flags",
                   "edgeopt.harness_version"):
        assert absent not in run.data.tags
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=tracking.TIMINGS_ARTIFACT,
                                               dst_path=str(tmp_path / "dl"))
    assert json.loads(Path(path).read_text())["rounds"] == []
