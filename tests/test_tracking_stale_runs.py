"""Stale runs: a run left RUNNING by a killed edgeopt process is marked KILLED, nothing else is."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import psutil
import pytest

from edgeopt import tracking
from edgeopt.results import CandidateResult

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path):
    """A private sqlite store with one experiment; yields (tracking URI, experiment id)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.MlflowClient().create_experiment("stale", artifact_location=(tmp_path / "mlruns").as_uri())
        yield uri, str(exp)
    finally:
        mlflow.set_tracking_uri(None)


def _run(exp: str, name: str, tags: dict[str, str]) -> str:
    return mlflow.MlflowClient().create_run(exp, run_name=name, tags=tags).info.run_id


def _owner(host: str, pid: int, started: float) -> dict[str, str]:
    return {tracking.OWNER_HOST: host, tracking.OWNER_PID: str(pid), tracking.OWNER_STARTED: f"{started:.3f}"}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _status(run_id: str) -> str:
    return mlflow.MlflowClient().get_run(run_id).info.status


def test_only_runs_of_gone_local_processes_are_marked(store):
    _, exp = store
    host, me = socket.gethostname(), psutil.Process()
    dead_pid, dead_started = _dead_pid(), time.time()

    dead = _run(exp, "dead", _owner(host, dead_pid, dead_started))
    live = _run(exp, "live", tracking.owner_tags())
    other_host = _run(exp, "other-host", _owner("some-other-host.invalid", dead_pid, dead_started))
    legacy = _run(exp, "legacy", {"edgeopt.kind": "pipeline"})  # made before owner tags existed
    # Our own pid, but a start time long before ours: the pid was recycled, its owner is gone.
    recycled = _run(exp, "recycled", _owner(host, me.pid, me.create_time() - 3600))
    released = _run(exp, "released", {**_owner(host, dead_pid, dead_started),
                                      tracking.OWNER_RELEASED: "exited with the run open"})
    finished = _run(exp, "finished", _owner(host, dead_pid, dead_started))
    mlflow.MlflowClient().set_terminated(finished, "FINISHED")

    # An exited but not yet reaped process (a zombie) is gone too, though its pid and start time match.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 60
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.05)
        zombie = _run(exp, "zombie", _owner(host, child.pid, psutil.Process(child.pid).create_time()))
        marked = tracking.mark_stale_runs(exp)
    finally:
        child.wait()

    assert sorted(marked) == sorted([dead, recycled, zombie])
    client = mlflow.MlflowClient()
    for run_id in (dead, recycled, zombie):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.info.end_time is not None
        reason = run.data.tags[tracking.KILLED_REASON]
        owner_pid = run.data.tags[tracking.OWNER_PID]
        assert reason.startswith(f"its process {host}:{owner_pid} is gone; marked KILLED by {host}:{os.getpid()} at ")
    for run_id in (live, other_host, legacy, released):
        assert _status(run_id) == "RUNNING"
        assert tracking.KILLED_REASON not in client.get_run(run_id).data.tags
    assert _status(finished) == "FINISHED"
    assert tracking.mark_stale_runs(exp) == []  # nothing left to do


def test_other_pid_namespace_is_left_alone(store):
    """A container sharing this hostname has its own pids: its runs can't be judged from here."""
    _, exp = store
    if tracking.OWNER_PID_NAMESPACE not in tracking.owner_tags():
        pytest.skip("no /proc/self/ns/pid here")
    tags = {**_owner(socket.gethostname(), _dead_pid(), time.time()), tracking.OWNER_PID_NAMESPACE: "pid:[1]"}
    run_id = _run(exp, "other-container", tags)
    assert tracking.mark_stale_runs(exp) == []
    assert _status(run_id) == "RUNNING"


def test_candidate_runs_carry_owner_tags_and_never_stay_running(store, monkeypatch):
    _, exp = store
    parent = _run(exp, "parent", tracking.owner_tags())
    failed = CandidateResult(name="c1", recipe="torch-eager", parent=None, status="failed", error="boom")
    run_id = tracking.log_candidate(exp, parent, failed, None, None, None, {"edgeopt.pipeline": "t"})
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED"
    me = tracking.owner_tags()
    for key in (tracking.OWNER_HOST, tracking.OWNER_PID, tracking.OWNER_STARTED):
        assert run.data.tags[key] == me[key]
    assert abs(float(me[tracking.OWNER_STARTED]) - psutil.Process().create_time()) < 0.01

    # Logging a candidate fails half-way: its child run is terminated, not left RUNNING.
    def broken(row):
        raise RuntimeError("metrics went missing")

    monkeypatch.setattr(tracking, "flat_metrics", broken)
    ok = CandidateResult(name="c2", recipe="torch-eager", parent=None, status="ok")
    with pytest.raises(RuntimeError, match="metrics went missing"):
        tracking.log_candidate(exp, parent, ok, None, None, None, {})
    (child,) = mlflow.MlflowClient().search_runs([exp], filter_string="attributes.run_name = 'c2'")
    assert child.info.status == "FAILED"
    assert "metrics went missing" in child.data.tags["edgeopt.error"]
    tracking.finish_pipeline_run(parent)


# A pipeline process: starts its parent run through edgeopt, then is SIGKILLed or exits normally.
PIPELINE = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path

    import mlflow

    from edgeopt import tracking

    uri, experiment, how = sys.argv[1:4]
    mlflow.set_tracking_uri(uri)
    tags = tracking.lineage_tags("e2e", "0" * 64, "1" * 64, Path.cwd(), {})
    run_id = tracking.start_pipeline_run(experiment, "e2e", tags, {"model": {"kind": "bundled"}})
    child = mlflow.MlflowClient().create_run(experiment, run_name="half-logged",
                                             tags={"mlflow.parentRunId": run_id, **tracking.owner_tags()})
    print(run_id, child.info.run_id, flush=True)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    mlflow.MlflowClient().set_terminated(child.info.run_id)
''')


def test_killed_pipeline_run_is_marked_when_the_next_one_starts(store):
    uri, exp = store
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # One after the other: each start marks the stale runs of gone processes, so a killed process that died
    # before the other one started would already be marked (on a slow machine, the second start is late).
    # The normal exit goes first: the killed process's own start must leave its handed-over run alone.
    procs, out = {}, {}
    for how in ("exit", "kill"):
        procs[how] = subprocess.Popen([sys.executable, "-c", PIPELINE, uri, exp, how], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, text=True)
        stdout, _ = procs[how].communicate(timeout=300)
        out[how] = stdout.split()
    assert procs["kill"].returncode == -9
    assert procs["exit"].returncode == 0
    killed_parent, killed_child = out["kill"]
    handed_over, _ = out["exit"]
    assert _status(killed_parent) == _status(killed_child) == _status(handed_over) == "RUNNING"

    new = tracking.start_pipeline_run(exp, "e2e", {"edgeopt.pipeline": "e2e"}, {"model": {"kind": "bundled"}})
    try:
        client = mlflow.MlflowClient()
        host, pid = socket.gethostname(), procs["kill"].pid
        for run_id in (killed_parent, killed_child):
            run = client.get_run(run_id)
            assert run.info.status == "KILLED"
            assert run.data.tags[tracking.KILLED_REASON].startswith(
                f"its process {host}:{pid} is gone; marked KILLED by {host}:{os.getpid()} at ")
        # The process that exited normally handed its open run over (the staged CLI finishes it later).
        run = client.get_run(handed_over)
        assert run.info.status == "RUNNING"
        assert f"{host}:{procs['exit'].pid} exited at " in run.data.tags[tracking.OWNER_RELEASED]
        assert tracking.KILLED_REASON not in run.data.tags
        new_run = client.get_run(new)
        assert new_run.info.status == "RUNNING"
        assert new_run.data.tags[tracking.OWNER_PID] == str(os.getpid())
        assert new_run.data.tags["edgeopt.kind"] == "pipeline"
    finally:
        tracking.finish_pipeline_run(new)
    assert new not in tracking._open_runs
