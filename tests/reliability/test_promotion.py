"""Promotion: concurrent promotions from two processes against one registry, rollback, the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from edgeopt.cli import app
from edgeopt.errors import UserError
from edgeopt.promotion import HISTORY_TAG, LOG_TAG, RegistryBusy, alias_lock, lock_name, reconcile
from edgeopt.results import Promotion
from tests.reliability.conftest import FaultRun, record_outcome

ROOT = Path(__file__).resolve().parents[2]

# One promoting process. Both wait for each other right before the alias move (after the load
# check), and the alias write is slowed down, so without serialization their read-modify-writes
# of the alias and its history overlap.
PROMOTER = textwrap.dedent('''
    import sys, time
    from pathlib import Path

    import mlflow

    from edgeopt import tracking
    from edgeopt.config import load_params
    from edgeopt.pipeline.context import PipelineContext
    from edgeopt.pipeline.data import load_prepared
    from edgeopt.pipeline.selecting import load_selection
    from edgeopt.promotion import promote
    from edgeopt.workloads.base import get_workload
    from tests.reliability import faults

    faults.register()  # the run's params name the fault recipes
    params, tag, barrier, out = sys.argv[1:5]
    ctx = PipelineContext(load_params(params), "minilm", Path(params).parent)
    experiment = tracking.configure(ctx.params, ctx.project_root)
    selection, prepared = load_selection(ctx), load_prepared(ctx)
    run_id = mlflow.MlflowClient().create_run(experiment, run_name=f"promoter-{tag}").info.run_id
    workload = get_workload(ctx.cfg.task)

    class LinedUp:
        """The task's workload, with a load check that waits for the other promoter."""

        def __getattr__(self, name):
            return getattr(workload, name)

        def load_check(self, *args):
            result = workload.load_check(*args)
            Path(barrier, tag).touch()
            while len(list(Path(barrier).iterdir())) < 2:
                time.sleep(0.02)
            return result

    set_alias = mlflow.MlflowClient.set_registered_model_alias

    def slow_set_alias(self, *args, **kwargs):
        time.sleep(1.0)
        return set_alias(self, *args, **kwargs)

    mlflow.MlflowClient.set_registered_model_alias = slow_set_alias
    pick = selection.pick
    result = promote(selection, ctx.cfg, LinedUp(), ctx.ws.candidate_dir(pick), prepared.base(),
                     run_id, ctx.ws.data_dir, ctx.ws.measurement_dir(pick))
    Path(out).write_text(result.model_dump_json())
''')


def test_two_concurrent_promotions_leave_one_champion_and_lose_no_version(fault_run: FaultRun,
                                                                         tmp_path: Path) -> None:
    assert fault_run.selection.pick is not None, fault_run.selection.reason
    script = tmp_path / "promoter.py"
    script.write_text(PROMOTER)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {tag: subprocess.Popen([sys.executable, str(script), str(fault_run.params_path), tag, str(barrier),
                                    str(tmp_path / f"{tag}.json")], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for tag in ("a", "b")}
    for tag, proc in procs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"promoter {tag}:\n{output[-3000:]}"
    results = {tag: Promotion.model_validate_json((tmp_path / f"{tag}.json").read_text()) for tag in procs}
    assert all(r.promoted for r in results.values()), results

    client = fault_run.client()
    name, alias = results["a"].model_name, results["a"].alias
    versions = {r.version for r in results.values()}
    assert len(versions) == 2  # each run registered its own version ...
    registered = {str(v.version) for v in client.search_model_versions(f"name = '{name}'")}
    assert versions <= registered  # ... and both are still there
    # Exactly one champion: the alias moved twice, one move after the other.
    first = next(r for r in results.values() if r.previous_version is None)
    second = next(r for r in results.values() if r is not first)
    assert second.previous_version == first.version
    assert str(client.get_model_version_by_alias(name, alias).version) == second.version
    model = client.get_registered_model(name)
    assert json.loads(model.tags[f"{HISTORY_TAG}.{alias}"]) == [first.version, second.version]
    moves = json.loads(model.tags[f"{LOG_TAG}.{alias}"])
    assert [(m["from"], m["to"]) for m in moves] == [(None, first.version), (first.version, second.version)]
    assert not client.search_registered_models(f"name = '{lock_name(name, alias)}'")  # the lock is gone
    record_outcome("fault", "two processes promote at once",
                   f"versions {sorted(versions)} registered; {alias} -> {second.version}; "
                   f"history {[first.version, second.version]}")

    # Rollback moves the alias back to the previous champion; with none left it is one line, exit 2.
    runner = CliRunner()
    back = runner.invoke(app, ["rollback", "--params", str(fault_run.params_path)])
    assert back.exit_code == 0, back.output
    assert str(client.get_model_version_by_alias(name, alias).version) == first.version
    assert json.loads(client.get_registered_model(name).tags[f"{HISTORY_TAG}.{alias}"]) == [first.version]
    again = runner.invoke(app, ["rollback", "--params", str(fault_run.params_path)])
    lines = [ln for ln in again.stderr.splitlines() if ln.strip()]
    assert again.exit_code == 2 and len(lines) == 1 and "no earlier version recorded" in lines[0], again.output
    assert str(client.get_model_version_by_alias(name, alias).version) == first.version
    record_outcome("fault", "rollback twice", f"{alias}: {second.version} -> {first.version}; then exit "
                                              f"{again.exit_code}: {lines[0]}")


def test_a_dead_holders_lock_expires_and_a_live_one_makes_others_wait(tmp_path: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        client = mlflow.MlflowClient()
        client.create_registered_model("m")
        client.create_registered_model(lock_name("m", "champion"))  # left by a holder that died
        started = time.monotonic()
        with pytest.raises(RegistryBusy, match="is locked by"), alias_lock(client, "m", "champion", wait_s=1):
            pass
        assert time.monotonic() - started >= 1
        time.sleep(1.2)
        with alias_lock(client, "m", "champion", ttl_s=1):  # expired: broken, then taken
            assert client.get_registered_model(lock_name("m", "champion"))
        assert not client.search_registered_models(f"name = '{lock_name('m', 'champion')}'")
        with pytest.raises(UserError, match="nothing to roll back"):
            from edgeopt.promotion import rollback

            rollback("m", "champion")
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize(
    ("history", "current", "expected"),
    [
        (["1", "2"], "2", ["1", "2"]),  # consistent
        (["1", "2"], "3", ["1", "2", "3"]),  # a promotion set the alias but not the history
        (["1", "2", "3"], "2", ["1", "2"]),  # a rollback set the alias but not the history
        ([], "4", ["4"]),  # the alias was set by hand
        (["1"], None, ["1"]),  # no alias: nothing to reconcile
    ],
)
def test_reconcile_repairs_an_interrupted_move(history: list[str], current: str | None,
                                               expected: list[str]) -> None:
    assert reconcile(history, current) == expected


def test_promoting_the_champions_own_artifact_again_registers_no_new_version(fault_run: FaultRun) -> None:
    """A nightly re-run with nothing changed: "champion unchanged", not one more version a night."""
    from edgeopt.outcome import verdict
    from edgeopt.promotion import promote
    from edgeopt.workloads.base import get_workload

    ctx, selection = fault_run.ctx, fault_run.selection
    assert selection.pick is not None, selection.reason
    name = "reliability-edge-unchanged"
    cfg = ctx.cfg.model_copy(update={"registry": ctx.cfg.registry.model_copy(update={"model_name": name})})
    pick = next(r for r in selection.candidates if r.name == selection.pick)

    def again() -> Promotion:
        return promote(selection, cfg, get_workload(ctx.cfg.task), ctx.ws.candidate_dir(pick.name),
                       fault_run.prepared.base(), pick.mlflow_run_id, ctx.ws.data_dir,
                       ctx.ws.measurement_dir(pick.name))

    client = fault_run.client()
    first, second = again(), again()
    assert first.promoted and not first.unchanged and first.version == "1"
    assert second.unchanged and second.version == first.version, second
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert "champion unchanged" in verdict(selection, second).line
    # A different artifact under the same name is a new version: the digest is of the files, not the name.
    extra = ctx.ws.candidate_dir(pick.name) / "touched.txt"
    extra.write_text("changes the candidate folder's digest")
    try:
        third = again()
    finally:
        extra.unlink()
    assert third.promoted and not third.unchanged and third.version == "2"
