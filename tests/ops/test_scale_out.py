"""Scale-out: candidate builds fan out through Dask, on a LocalCluster the flow starts or at the
address of an existing cluster, and the Dask workers report to the flow's own Prefect server.

These run on the test session's local Prefect server (tests/conftest.py), which is what the
settings shipped to the Dask workers point them at: without that, each worker would start a
temporary server of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import flow, task

from edgeopt.config import OrchestrationConfig
from edgeopt.errors import UserError
from edgeopt.orchestration import candidate_runner
from tests.integration.conftest import reduced_params, write_params

pytestmark = pytest.mark.integration

# onnx-fp32 first, then two children of it that can build at the same time.
FAN = [{"name": "onnx-fp32", "recipe": "onnx-export"},
       {"name": "ort-opt-fp32", "recipe": "ort-transformer-optimize", "parent": "onnx-fp32"},
       {"name": "ort-int8-dynamic", "recipe": "ort-dynamic-int8", "parent": "onnx-fp32"}]


@task(name="where-am-i")
def where_am_i(i: int) -> int:
    return os.getpid()


@flow(name="ops-dask-probe")
def probe(n: int, orchestration: dict[str, Any]) -> list[int]:
    with candidate_runner(OrchestrationConfig.model_validate(orchestration)) as runner:
        futures = [runner.submit(where_am_i, parameters={"i": i}) for i in range(n)]
        return [f.result() for f in futures]


def _task_runs(flow_run_id: UUID, prefix: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                     task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=prefix)))


def test_a_local_cluster_runs_the_tasks_and_its_workers_report_to_the_flows_server() -> None:
    state = probe(2, {"task_runner": "dask", "max_workers": 2}, return_state=True)
    pids = state.result()
    assert os.getpid() not in pids  # ran in Dask worker processes, not in the flow's
    runs = _task_runs(state.state_details.flow_run_id, "where-am-i")
    # Their task runs are in this flow's server: the workers did not each start a temporary one.
    assert len(runs) == 2 and all(r.state.is_completed() for r in runs)


def test_a_remote_dask_cluster_needs_a_reachable_prefect_server() -> None:
    with pytest.raises(UserError, match="PREFECT_API_URL"), \
            candidate_runner(OrchestrationConfig(task_runner="dask", dask_address="tcp://192.0.2.10:8786")):
        pass


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[Any]:
    """An existing cluster, as a team would run one: two single-threaded worker processes."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster


@flow(name="ops-fan-out")
def fan_out(params_path: str) -> dict[str, Any]:
    """The optimize flow's build stage alone (prepare and tokenize first): what the test is about."""
    from prefect.runtime import flow_run

    from edgeopt.config import load_params
    from edgeopt.pipeline.context import PipelineContext
    from edgeopt.pipeline.data import prepare_data, prepare_inputs
    from flows.candidates import build_all

    path = Path(params_path)
    ctx = PipelineContext(load_params(path), "minilm", path.parent)
    prepared = prepare_data(ctx)
    records, failed = build_all(ctx, prepared, prepare_inputs(ctx, prepared))
    return {"built": sorted(records), "failed": failed, "flow_run_id": str(flow_run.id)}


def test_builds_fan_out_to_an_existing_dask_cluster(dask_cluster: Any, tmp_path: Path) -> None:
    raw = reduced_params(tmp_path, candidates=FAN)
    raw["pipelines"]["minilm"]["selection"]["baseline"] = "onnx-fp32"
    raw["orchestration"] = {"task_runner": "dask", "dask_address": dask_cluster.scheduler_address, "max_workers": 2}
    out = fan_out(str(write_params(tmp_path, raw)))
    assert out["failed"] == {} and out["built"] == sorted(c["name"] for c in FAN)
    for c in FAN:
        assert (tmp_path / "outputs" / "minilm" / "candidates" / c["name"] / "candidate.json").is_file()
    # The cluster's scheduler ran one build per candidate (the flow process ran none itself).
    done = {t.key for t in dask_cluster.scheduler.transition_log if t.finish == "memory"}
    assert len([k for k in done if str(k).startswith("build_candidate")]) == len(FAN)
    # Their task runs landed in the flow's server; the children waited for their parent. (Whether the two
    # children also overlapped in time depends on the machine's timing: not asserted here.)
    runs = {r.name: r for r in _task_runs(UUID(out["flow_run_id"]), "build-")}
    assert set(runs) == {f"build-{c['name']}" for c in FAN}
    parent, a, b = runs["build-onnx-fp32"], runs["build-ort-opt-fp32"], runs["build-ort-int8-dynamic"]
    assert a.start_time >= parent.end_time and b.start_time >= parent.end_time
