"""Prefect deployments of edgeopt, generated from params.yaml (so they follow its pipelines and targets).

    python -m deployments.deploy show                # what would be registered
    python -m deployments.deploy register            # create the work pools, register the deployments
    prefect worker start --pool edgeopt              # runs the optimize deployments
    prefect worker start --pool edgeopt-<target>     # on each target device: its measurements
    python -m deployments.deploy serve               # or: one process runs the optimize schedule itself

Deployments:
- `edgeopt/nightly`: every pipeline, on `orchestration.schedule_cron` (nightly re-optimization).
- `edgeopt/<pipeline>`: one parameterized, unscheduled deployment per model (pipeline namespace).
- `measure-target/<target>`: per target, on the target's own work pool (`targets.<t>.work_pool`).

The flows are referenced by module path (`flows.optimize.optimize`), so a worker needs the
installed package, not this checkout; `params_path` is an absolute path every worker must reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgeopt.config import Params, load_params
from edgeopt.errors import UserError
from edgeopt.orchestration import TARGET_FLOW, target_limit, target_pool

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

OPTIMIZE_FLOW = "edgeopt"
TAGS = ("edgeopt",)


@dataclass(frozen=True)
class Plan:
    """One deployment: which flow, under which name, with which parameters, pool and schedule."""

    flow: str
    name: str
    parameters: dict[str, Any]
    work_pool: str
    description: str
    cron: str | None = None
    timezone: str = "UTC"
    tags: tuple[str, ...] = field(default=TAGS)

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"


def plan(params_path: Path) -> list[Plan]:
    params = load_params(params_path)
    path = str(params_path.resolve())
    orch = params.orchestration
    plans = [Plan(OPTIMIZE_FLOW, "nightly", {"params_path": path}, orch.work_pool, cron=orch.schedule_cron,
                  timezone=orch.schedule_timezone,
                  description="Nightly re-optimization of every pipeline in params.yaml, then every target.")]
    for name in params.pipelines:
        if name == "nightly":
            raise UserError("pipeline name 'nightly' clashes with the nightly deployment: rename the pipeline")
        plans.append(Plan(OPTIMIZE_FLOW, name, {"params_path": path, "pipelines": [name]}, orch.work_pool,
                          description=f"Optimize the {name!r} pipeline on demand.", tags=(*TAGS, name)))
    for target in params.targets:
        plans.append(Plan(TARGET_FLOW, target, {"params_path": path, "target": target}, target_pool(params, target),
                          description=f"Measure built candidates on {target!r} (started by the optimize flow).",
                          tags=(*TAGS, f"target:{target}")))
    return plans


def runner_deployment(p: Plan, with_pool: bool = True) -> RunnerDeployment:
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.optimize import optimize
    from flows.targets import measure_target

    flow = {OPTIMIZE_FLOW: optimize, TARGET_FLOW: measure_target}[p.flow]
    try:
        schedules = [Cron(p.cron, timezone=p.timezone)] if p.cron else None
        return flow.to_deployment(  # type: ignore[attr-defined]
            name=p.name, schedules=schedules, parameters=p.parameters, description=p.description,
            tags=list(p.tags), work_pool_name=p.work_pool if with_pool else None,
            entrypoint_type=EntrypointType.MODULE_PATH)
    except ValueError as err:  # a bad cron string or timezone
        raise UserError(f"deployment {p.full_name}: {err}") from None


def ensure_work_pools(names: set[str]) -> list[str]:
    """Create missing `process` work pools; returns the ones created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    created = []
    with get_client(sync_client=True) as client:
        for name in sorted(names):
            try:
                client.read_work_pool(name)
            except ObjectNotFound:
                try:
                    client.create_work_pool(WorkPoolCreate(
                        name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
                    created.append(name)
                except ObjectAlreadyExists:
                    pass
    return created


def register(params_path: Path) -> list[str]:
    """Create the pools and benchmark limits, then register (create or update) every deployment."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    from edgeopt.orchestration import ensure_concurrency_limit

    if not PREFECT_API_URL.value():
        # Without it Prefect would register into a temporary server that vanishes on exit.
        raise UserError("PREFECT_API_URL is not set: point it at your Prefect server "
                        "(`prefect server start`, then export PREFECT_API_URL=http://127.0.0.1:4200/api)")
    params: Params = load_params(params_path)
    plans = plan(params_path)
    try:
        ensure_work_pools({p.work_pool for p in plans})
    except httpx.ConnectError as err:
        raise UserError(f"cannot reach the Prefect server at {PREFECT_API_URL.value()}: {err}") from None
    for limit in {params.orchestration.benchmark_concurrency_limit, *(target_limit(params, t) for t in params.targets)}:
        ensure_concurrency_limit(limit)
    for p in plans:
        runner_deployment(p).apply()
    return [p.full_name for p in plans]


def serve(params_path: Path) -> None:
    """Serve the optimize deployments from this process (no work pool; targets still need workers)."""
    from prefect import serve as prefect_serve

    prefect_serve(*(runner_deployment(p, with_pool=False) for p in plan(params_path) if p.flow == OPTIMIZE_FLOW))


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Register or serve edgeopt's Prefect deployments (from params.yaml).")
ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file.")]


def _run(fn: Any, *args: Any) -> Any:
    from edgeopt.environment import quiet_offline_defaults

    quiet_offline_defaults()
    try:
        return fn(*args)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@app.command("show")
def show_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the deployments params.yaml defines."""
    for p in _run(plan, params):
        schedule = f"cron {p.cron!r} ({p.timezone})" if p.cron else "on demand"
        typer.echo(f"{p.full_name:32} pool {p.work_pool:24} {schedule:28} {p.parameters}")


@app.command("register")
def register_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """Create the work pools and register the deployments with $PREFECT_API_URL's server."""
    for name in _run(register, params):
        typer.echo(f"registered {name}")


@app.command("serve")
def serve_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """Run the optimize deployments (and their schedule) from this process until stopped."""
    _run(serve, params)


if __name__ == "__main__":
    app()
