"""Crash isolation: a crash, hang or runaway allocation in one candidate's build or measurement
fails that candidate only (FAILED in MLflow with its error and log); the rest of the run goes on."""

from __future__ import annotations

import time

import psutil
import pytest

from edgeopt.config import load_params
from edgeopt.pipeline.candidates import run_candidates
from edgeopt.pipeline.context import PipelineContext
from tests.reliability.conftest import FAULTS, FaultRun, fault_params, record_outcome

pytestmark = pytest.mark.integration


def _isolated_children() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any(m in " ".join(p.cmdline()) for m in ("edgeopt.isolation", "edgeopt.measure")):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_each_fault_fails_only_its_candidate(fault_run: FaultRun) -> None:
    rows = {r.name: r for r in fault_run.rows}
    for name in ("torch-fp32", "onnx-fp32"):
        assert rows[name].status == "ok", rows[name].error
        assert rows[name].measurement.latency.p50_ms > 0
    assert rows["onnx-fp32"].quality.metrics["cosine"] > 0.9999
    for name, expected in FAULTS.items():
        row = rows[name]
        first_line = (row.error or "").splitlines()[0] if row.error else ""
        record_outcome("fault", name, f"{row.status}: {first_line}")
        assert row.status == "failed", name
        assert expected in row.error, (name, row.error)
        # A failed build publishes nothing; a failed measurement publishes no measurement.
        assert not (fault_run.ctx.ws.measurement_dir(name) / "measurement.json").exists(), name
        if "measure" not in name:
            assert not fault_run.ctx.ws.candidate_dir(name).exists(), name
    # The crash's own output made it into the error: what it printed and Python's fatal-error dump.
    assert "fault-abort: calling abort()" in rows["fault-abort"].error
    assert "Fatal Python error: Aborted" in rows["fault-abort"].error
    # Nothing half-built is left behind and no child outlives its run.
    staging = fault_run.ctx.ws.root / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
    assert _isolated_children() == []


def test_failed_candidates_are_failed_runs_with_error_and_log(fault_run: FaultRun) -> None:
    client = fault_run.client()
    for row in fault_run.rows:
        run = client.get_run(row.mlflow_run_id)
        if row.name not in FAULTS:
            assert run.info.status == "FINISHED"
            continue
        assert run.info.status == "FAILED", row.name
        assert FAULTS[row.name] in run.data.tags["edgeopt.error"], row.name
        artifacts = {a.path for a in client.list_artifacts(row.mlflow_run_id)}
        assert "error.txt" in artifacts, row.name
        log = "measure.log" if "measure" in row.name else "build.log"
        assert log in artifacts, (row.name, artifacts)


def test_a_hang_is_killed_at_the_build_timeout(fault_run: FaultRun) -> None:
    """Same workspace, a 5 s build timeout: the real candidates are cache hits, the hang is killed."""
    ctx0 = fault_run.ctx
    before = (ctx0.ws.candidate_dir("torch-fp32") / "candidate.json").stat().st_mtime_ns
    params = fault_params(fault_run.root, [{"name": "torch-fp32", "recipe": "torch-eager"},
                                           {"name": "fault-hang", "recipe": "fault-hang"}], build_timeout_s=5,
                          file_name="hang.yaml")
    ctx = PipelineContext(load_params(params), "minilm", fault_run.root)
    started = time.perf_counter()
    _, rows = run_candidates(ctx, fault_run.prepared, fault_run.inputs)
    elapsed = time.perf_counter() - started
    by_name = {r.name: r for r in rows}
    hang = by_name["fault-hang"]
    record_outcome("fault", "fault-hang", f"{hang.status}: {hang.error.splitlines()[0]} (after {elapsed:.1f} s)")
    assert hang.status == "failed" and "build timed out after 5 s" in hang.error
    assert "fault-hang: sleeping forever" in hang.error
    assert by_name["torch-fp32"].status == "ok"
    assert (ctx.ws.candidate_dir("torch-fp32") / "candidate.json").stat().st_mtime_ns == before
    assert _isolated_children() == []


def test_after_an_interrupt_no_new_child_starts(tmp_path) -> None:
    """A worker thread that reaches its child only after the interrupt must not start it: the task
    runner waits for that thread, which would otherwise build, and publish, after the interrupt."""
    from edgeopt.errors import CandidateError
    from edgeopt.isolation import allow_children, interrupt_children, interrupted, run_child

    log = tmp_path / "child.log"
    interrupt_children()
    try:
        assert interrupted()
        with pytest.raises(CandidateError, match="interrupted"):
            run_child("this", {}, log=log, timeout_s=60, memory_limit_mb=None, what="build")
        assert not log.exists()  # refused before anything was started or written
    finally:
        allow_children()
    run = run_child("this", {}, log=log, timeout_s=60, memory_limit_mb=None, what="build")
    assert run.returncode == 0 and "Beautiful is better than ugly" in log.read_text()
