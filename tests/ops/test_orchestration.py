"""Fast checks of the orchestration config: task runners, targets, their folders and aliases, and
the deployment plan generated from params.yaml. No server is started here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeopt.config import OrchestrationConfig, load_params, parse_params
from edgeopt.errors import UserError
from edgeopt.orchestration import (
    TargetWorkspace,
    make_task_runner,
    target_context,
    target_limit,
    target_params,
    target_pool,
)
from tests.integration.conftest import ROOT


def _raw(**extra: object) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(extra)
    return raw


def test_the_task_runner_follows_params() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    thread = make_task_runner(OrchestrationConfig(max_workers=3))
    assert isinstance(thread, ThreadPoolTaskRunner) and thread._max_workers == 3
    local = make_task_runner(OrchestrationConfig(task_runner="dask", max_workers=2))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 2 and local.cluster_kwargs["processes"] is True
    assert local.cluster_kwargs["host"] == "127.0.0.1"
    remote = make_task_runner(OrchestrationConfig(task_runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"


def test_orchestration_and_targets_are_validated() -> None:
    with pytest.raises(UserError, match=r"orchestration\.task_runner"):
        parse_params(_raw(orchestration={"task_runner": "ray"}))
    with pytest.raises(UserError, match=r"targets\.edge\.work_pol"):
        parse_params(_raw(targets={"edge": {"work_pol": "x"}}))
    with pytest.raises(UserError, match="target names"):
        parse_params(_raw(targets={"Edge.A": {}}))
    with pytest.raises(UserError, match="target names"):
        parse_params(_raw(targets={"local": {}}))  # the host's own name


def test_a_target_gets_its_pool_limit_alias_threads_and_folder(tmp_path: Path) -> None:
    params = parse_params(_raw(targets={"edge-a": {}, "pi": {"work_pool": "rpi", "concurrency_limit": "pi-bench",
                                                              "threads": 4}}))
    assert target_pool(params, "edge-a") == "edgeopt-edge-a" and target_pool(params, "pi") == "rpi"
    assert target_limit(params, "edge-a") == "edgeopt-benchmark-edge-a"
    assert target_limit(params, "pi") == "pi-bench"
    seen = target_params(params, "minilm", "pi")
    assert seen.pipelines["minilm"].registry.alias == "champion-pi"
    assert seen.pipelines["minilm"].benchmark.threads == 4
    assert seen.orchestration.benchmark_concurrency_limit == "pi-bench"
    assert params.pipelines["minilm"].registry.alias == "champion"  # the host's params are untouched
    with pytest.raises(UserError, match="unknown target 'nope'"):
        target_params(params, "minilm", "nope")

    ctx = target_context(params, "minilm", "edge-a", tmp_path)
    ws = ctx.ws
    assert isinstance(ws, TargetWorkspace) and ws.target_root.is_dir()
    root = tmp_path / "outputs" / "minilm"
    # Built candidates and the data are shared; what the target measures and decides is its own.
    assert ws.candidate_dir("onnx-fp32") == root / "candidates" / "onnx-fp32"
    assert ws.data_dir == root / "data" and ws.base_info == root / "base.json"
    assert ws.measurement_dir("onnx-fp32") == root / "targets" / "edge-a" / "measurements" / "onnx-fp32"
    for path in (ws.inputs, ws.results, ws.selection, ws.promotion, ws.metrics, ws.run_info):
        assert path.parent == root / "targets" / "edge-a"


def test_the_deployment_plan_follows_params(tmp_path: Path) -> None:
    from deployments.deploy import plan, runner_deployment

    raw = _raw(orchestration={"work_pool": "main", "schedule_cron": "30 3 * * 1-5",
                              "schedule_timezone": "Europe/Paris"},
               targets={"edge-a": {}, "pi": {"work_pool": "rpi"}})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    plans = {p.full_name: p for p in plan(path)}
    namespaces = list(load_params(path).pipelines)
    assert set(plans) == {"edgeopt/nightly", *(f"edgeopt/{n}" for n in namespaces),
                          "measure-target/edge-a", "measure-target/pi"}
    nightly = plans["edgeopt/nightly"]
    assert (nightly.cron, nightly.timezone, nightly.work_pool) == ("30 3 * * 1-5", "Europe/Paris", "main")
    assert nightly.parameters == {"params_path": str(path.resolve())}
    for n in namespaces:
        assert plans[f"edgeopt/{n}"].parameters["pipelines"] == [n] and plans[f"edgeopt/{n}"].cron is None
    assert plans["measure-target/pi"].work_pool == "rpi"
    assert plans["measure-target/edge-a"].work_pool == "edgeopt-edge-a"
    assert plans["measure-target/edge-a"].parameters["target"] == "edge-a"

    dep = runner_deployment(nightly)
    assert dep.entrypoint == "flows.optimize.optimize" and dep.work_pool_name == "main"
    assert dep.schedules[0].schedule.cron == "30 3 * * 1-5"
    assert runner_deployment(plans["measure-target/pi"]).entrypoint == "flows.targets.measure_target"

    raw["orchestration"]["schedule_cron"] = "every night"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="edgeopt/nightly"):
        runner_deployment(plan(path)[0])
