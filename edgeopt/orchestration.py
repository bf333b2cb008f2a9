"""How Prefect runs the work, from `params.orchestration` and `params.targets`.

- Candidate builds fan out through a task runner: a thread pool (default) or Dask.
- Benchmarks take a slot of a Prefect global concurrency limit, so one runs per machine at a time.
- A target (an edge device) measures the host's candidates in its own workspace folder, tags its
  MLflow runs with its name and promotes its own alias, `<alias>-<target>`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from edgeopt.config import OrchestrationConfig, Params
from edgeopt.errors import UserError
from edgeopt.pipeline.context import PipelineContext
from edgeopt.workspace import Workspace

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

log = logging.getLogger(__name__)

LOCAL = "local"  # the target name of the machine the optimize flow itself runs on
TARGET_FLOW = "measure-target"  # the flow each target deployment runs
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# -- task runners --------------------------------------------------------------------------


def make_task_runner(cfg: OrchestrationConfig) -> TaskRunner:
    """The runner candidate builds fan out through (not started)."""
    if cfg.task_runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.max_workers)
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    # One single-threaded worker process per build: frameworks bring their own thread pools, and
    # a crash in one build takes down one worker, not the flow. No dashboard: nothing to bind.
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.max_workers, "threads_per_worker": 1,
                                          "processes": True, "host": "127.0.0.1", "dashboard_address": None})


def prefect_api_url() -> str:
    """The API this process reports to: a started server, or the temporary one Prefect started."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


@contextmanager
def candidate_runner(cfg: OrchestrationConfig) -> Iterator[TaskRunner]:
    """A started task runner for the builds.

    Dask workers are other processes: without an API URL each would start its own temporary
    Prefect server (~15 s) and its task runs would land there. Prefect ships the caller's settings
    with every task, so pointing the settings at this flow's own server (even the temporary one,
    which listens on loopback) makes the workers report where the flow does.
    """
    runner = make_task_runner(cfg)
    with ExitStack() as stack:
        if cfg.task_runner == "dask":
            from prefect.settings import PREFECT_API_URL, temporary_settings

            api = prefect_api_url()
            if cfg.dask_address and _host(cfg.dask_address) not in LOOPBACK and _host(api) in LOOPBACK:
                raise UserError(f"orchestration.dask_address {cfg.dask_address} is another machine, but the "
                                f"Prefect API is {api}: set PREFECT_API_URL to a server its workers can reach")
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api}))
        yield stack.enter_context(runner)


def _host(url: str) -> str:
    return urlparse(url if "://" in url else f"tcp://{url}").hostname or ""


# -- one benchmark per machine -------------------------------------------------------------


_ensured: set[tuple[str, str]] = set()


def ensure_concurrency_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit if it is missing (an existing one is left as it is).

    Prefect skips a missing limit with a warning, which would silently let benchmarks overlap.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        key = (str(client.api_url), name)
        if key in _ensured:
            return
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another process created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
    _ensured.add(key)


BENCHMARK_EVENT = "edgeopt.benchmark"


@contextmanager
def machine_lock(name: str, wait_s: float) -> Iterator[None]:
    """A kernel file lock: per machine, and released by the kernel if its holder is killed."""
    import fcntl
    import tempfile

    from edgeopt.io.run_lock import flock_within

    path = Path(tempfile.gettempdir()) / f"edgeopt-{name}.lock"
    with path.open("a+") as handle:
        if not flock_within(handle, wait_s):
            raise TimeoutError(f"no benchmark slot of {name!r} within {wait_s:.0f} s "
                               "(another benchmark on this machine holds it)")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def benchmark_slot(name: str, wait_s: float, label: str = "") -> Iterator[None]:
    """Hold the machine's benchmark slot.

    The machine-local part is a kernel file lock, so a killed run never leaks it. With a real
    Prefect server (PREFECT_API_URL set) the slot is also a Prefect global concurrency limit,
    which orders benchmarks across workers and shows them in the server's event feed
    (`edgeopt.benchmark.started`/`.finished`). Without one, each run has its own temporary
    server whose lease state dies with it, so only the file lock is used.
    """
    from prefect.settings import PREFECT_API_URL

    with machine_lock(name, wait_s):
        if not PREFECT_API_URL.value():  # a temporary server: its lease state dies with the run
            yield
            return
        from prefect.concurrency.sync import concurrency
        from prefect.events import emit_event

        ensure_concurrency_limit(name)
        resource = {"prefect.resource.id": f"{BENCHMARK_EVENT}.{name}", "prefect.resource.name": name,
                    "edgeopt.benchmark": label}
        held = False
        try:
            # A missed lease renewal should not kill a long benchmark halfway: keep measuring.
            with concurrency(name, occupy=1, timeout_seconds=wait_s, strict=True,
                             raise_on_lease_renewal_failure=False):
                held = True
                started = emit_event(f"{BENCHMARK_EVENT}.started", resource=resource)
                try:
                    yield
                finally:
                    emit_event(f"{BENCHMARK_EVENT}.finished", resource=resource, follows=started)
        except TimeoutError:
            if held:  # raised by the benchmark itself, not by the wait
                raise
            raise TimeoutError(f"no benchmark slot of {name!r} within {wait_s:.0f} s "
                               "(another benchmark holds it)") from None


# -- measurement targets -------------------------------------------------------------------


def target_alias(alias: str, target: str) -> str:
    return alias if target == LOCAL else f"{alias}-{target}"


def target_pool(params: Params, target: str) -> str:
    return params.targets[target].work_pool or f"edgeopt-{target}"


def target_limit(params: Params, target: str) -> str:
    if target == LOCAL:
        return params.orchestration.benchmark_concurrency_limit
    return params.targets[target].concurrency_limit or f"{params.orchestration.benchmark_concurrency_limit}-{target}"


def target_deployment(target: str) -> str:
    """The full name of the target's measurement deployment (`deployments/deploy.py`)."""
    return f"{TARGET_FLOW}/{target}"


def require_target(params: Params, target: str) -> None:
    if target not in params.targets:
        known = ", ".join(params.targets) or "none"
        raise UserError(f"unknown target {target!r}; params.yaml defines: {known}")


def target_params(params: Params, namespace: str, target: str) -> Params:
    """The pipeline's params as seen on a target: its alias, its benchmark slot, its threads."""
    require_target(params, target)
    t = params.targets[target]
    cfg = params.pipelines[namespace]
    bench = cfg.benchmark.model_copy(update={"threads": t.threads}) if t.threads else cfg.benchmark
    registry = cfg.registry.model_copy(update={"alias": target_alias(cfg.registry.alias, target)})
    pipe = cfg.model_copy(update={"benchmark": bench, "registry": registry})
    orch = params.orchestration.model_copy(update={"benchmark_concurrency_limit": target_limit(params, target)})
    return params.model_copy(update={"pipelines": {**params.pipelines, namespace: pipe}, "orchestration": orch})


@dataclass(frozen=True)
class TargetWorkspace(Workspace):
    """The host's workspace, with what a target measures and decides under `targets/<target>/`.

    Base model, data and built candidates stay shared; inputs, measurements, results, selection,
    promotion and the report are the target's own.
    """

    target: str = LOCAL

    @property
    def target_root(self) -> Path:
        return self.root / "targets" / self.target

    @property
    def inputs(self) -> Path:
        return self.target_root / "inputs.npz"

    def measurement_dir(self, name: str) -> Path:
        return self.confine(self.target_root / "measurements" / name)

    @property
    def results(self) -> Path:
        return self.target_root / "results.json"

    @property
    def selection(self) -> Path:
        return self.target_root / "selection.json"

    @property
    def promotion(self) -> Path:
        return self.target_root / "promotion.json"

    @property
    def metrics(self) -> Path:
        return self.target_root / "metrics.json"

    @property
    def run_info(self) -> Path:
        return self.target_root / "run.json"


@dataclass(frozen=True)
class TargetContext(PipelineContext):
    """A PipelineContext whose stages read and write the target's own files."""

    target: str = LOCAL

    @property
    def ws(self) -> Workspace:
        base = super().ws
        return TargetWorkspace(project_root=base.project_root, namespace=base.namespace, root=base.root,
                               target=self.target)


def target_context(params: Params, namespace: str, target: str, project_root: Path) -> TargetContext:
    if namespace not in params.pipelines:
        raise UserError(f"unknown pipeline {namespace!r}; params.yaml defines: {', '.join(params.pipelines)}")
    ctx = TargetContext(target_params(params, namespace, target), namespace, project_root, target)
    ws = ctx.ws
    assert isinstance(ws, TargetWorkspace)
    ws.target_root.mkdir(parents=True, exist_ok=True)  # some stages write files without mkdir
    return ctx


def context_target(ctx: PipelineContext) -> str:
    return ctx.target if isinstance(ctx, TargetContext) else LOCAL


def output_root(ctx: PipelineContext) -> Path:
    """Where this context's own results go: the workspace, or the target's folder in it."""
    ws = ctx.ws
    return ws.target_root if isinstance(ws, TargetWorkspace) else ws.root
