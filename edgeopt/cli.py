"""`edgeopt`: one console command. A user's mistake prints one line and exits 2, never a traceback."""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeopt.config import json_schema, load_params
from edgeopt.errors import BusyError, ExitCode, InfrastructureError, UserError
from edgeopt.outcome import Verdict, verdict, worst
from edgeopt.results import Selection

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Optimize a model into edge-deployable variants, measure them, promote the best.")
# Off a terminal (CI logs, pipes) rich assumes 80 columns and squeezes the table unreadably.
console = Console() if Console().is_terminal else Console(width=180)
err_console = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file (validated).")]
PipelineOpt = Annotated[str | None, typer.Option("--pipeline", help="Pipeline namespace (default: the first).")]
F = TypeVar("F", bound=Callable[..., Any])


def _print_error(text: str) -> None:
    # One line, always: some library messages (YAML, safetensors) carry their own newlines.
    # escape: a message quoting "[...]" (YAML, paths) is text, not rich markup.
    err_console.print(f"[bold red]error:[/] {escape(' '.join(text.split()))}", highlight=False, soft_wrap=True)


def _crash_log(err: BaseException) -> Path:
    """An internal failure's full traceback, kept out of the console."""
    import tempfile
    import traceback

    path = Path(tempfile.gettempdir()) / f"edgeopt-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text("".join(traceback.format_exception(err)))
    return path


def user_errors(fn: F) -> F:
    """The exit codes (README, "Exit codes"): each failure is one line on stderr, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edgeopt.environment import quiet_offline_defaults

        quiet_offline_defaults()
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            _print_error(str(err))
            raise typer.Exit(ExitCode.USER) from None
        except BusyError as err:
            _print_error(str(err))
            raise typer.Exit(ExitCode.BUSY) from None
        except InfrastructureError as err:
            _print_error(str(err))
            raise typer.Exit(ExitCode.INTERNAL) from None
        except KeyboardInterrupt:
            _print_error("interrupted: running builds and measurements were stopped, open runs marked KILLED")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except OSError as err:
            if err.errno != errno.ENOSPC:
                log = _crash_log(err)
                _print_error(f"internal error: {type(err).__name__}: {err} (traceback: {log})")
                raise typer.Exit(ExitCode.INTERNAL) from None
            _print_error(f"no space left on the device of {err.filename or 'the output folder'}: free some space "
                         "and run again (finished candidates are reused)")
            raise typer.Exit(ExitCode.INTERNAL) from None
        except Exception as err:
            log = _crash_log(err)
            _print_error(f"internal error: {type(err).__name__}: {err} (traceback: {log})")
            raise typer.Exit(ExitCode.INTERNAL) from None

    return wrapper  # type: ignore[return-value]


def _context(params: Path, pipeline: str | None) -> Any:
    from edgeopt.pipeline.context import PipelineContext

    p = load_params(params)
    name = pipeline or next(iter(p.pipelines))
    if name not in p.pipelines:
        raise UserError(f"unknown pipeline {name!r}; params.yaml defines: {', '.join(p.pipelines)}")
    return PipelineContext(p, name, params.resolve().parent)


@contextmanager
def _stop_children_on_signals() -> Iterator[None]:
    """SIGTERM (and Ctrl-C) stop the build/measure children at once, then unwind as KeyboardInterrupt,
    so the flow marks its runs KILLED and nothing half-built is published."""
    from edgeopt.isolation import allow_children, interrupt_children

    def handler(signum: int, frame: Any) -> None:
        interrupt_children()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    allow_children()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")


class _ProgressBars:
    """Draw `edgeopt.progress` reports as rich progress bars."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[label]}"), TimeElapsedColumn(), console=console,
                                 transient=False)
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int, label: str) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, label=label)
        self.progress.update(self.tasks[stage], completed=done, total=total, label=label)

    def __enter__(self) -> _ProgressBars:
        from edgeopt import progress

        self.progress.start()
        progress.set_sink(self)
        return self

    def __exit__(self, *exc: object) -> None:
        from edgeopt import progress

        progress.set_sink(None)
        self.progress.stop()


def results_table(selection: Selection, champion: str | None = None) -> Table:
    """The candidate table: the columns every task shares around the task's own (`Workload.columns`)."""
    from edgeopt.columns import SHARED, gates_cell, pick_cell
    from edgeopt.workloads.base import table_columns

    columns = (*table_columns(selection), *SHARED)
    t = Table(title=f"{selection.pipeline}: candidates (baseline {selection.baseline})")
    # The interval cells stay on one line (an interval split over two reads badly); the others wrap when narrow.
    one_line = {"speed-up", "noise"}
    for header in ("candidate", "recipe", "status", *(c.header for c in columns), "gates", "front", "pick",
                   "champion"):
        t.add_column(header, justify="left" if header in {"candidate", "recipe", "status", "gates"} else "right",
                     no_wrap=header in one_line)
    for r in selection.candidates:
        if r.status != "ok" or r.measurement is None or r.quality is None:
            t.add_row(escape(r.name), escape(r.recipe), f"[red]{r.status}[/]", *["-"] * len(columns),
                      escape((r.error or "")[:60]), "", "", "")
            continue
        # escape: intervals ("[1.93, 2.08]") and names are text, not rich markup.
        t.add_row(escape(r.name), escape(r.recipe), "ok", *(escape(c.cell(r)) for c in columns),
                  escape(gates_cell(r)), "*" if r.name in selection.frontier else "", pick_cell(r, selection),
                  "champion" if r.name == champion else "")
    return t


def print_results(selection: Selection, champion: str | None = None) -> None:
    """The table, then one warning line per gate decided inside the noise, loaded round and tie."""
    from edgeopt.columns import table_warnings

    console.print(results_table(selection, champion))
    for line in table_warnings(selection):
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _print_outcome(selection: Selection, champion: str | None, note: str) -> None:
    print_results(selection, champion)
    console.print(f"pick: {selection.pick or 'none'} -- {selection.reason}")
    console.print(note)


@app.command()
@user_errors
def run(
    params: ParamsOpt = Path("params.yaml"),
    pipeline: Annotated[list[str] | None, typer.Option("--pipeline", help="Namespace(s); default: all.")] = None,
    promote: Annotated[bool, typer.Option(help="Register and alias the pick if it passes the gates.")] = True,
) -> None:
    """Run the whole pipeline as a Prefect flow, for every namespace in params.yaml."""
    from edgeopt.io.prefect_server import prefect_api, start_timeout
    from edgeopt.io.run_lock import run_lock
    from edgeopt.preflight import preflight_run
    from edgeopt.workspace import output_dir

    p = load_params(params)
    root = params.resolve().parent
    names = pipeline or list(p.pipelines)
    preflight_run(p, names, root)  # user mistakes: one line, exit 2, nothing started or written
    timeout = start_timeout(p.orchestration.server_start_timeout_s)
    started = time.perf_counter()

    def waiting(seconds: float) -> None:
        if int(seconds * 4) % 40 == 0 and seconds >= 10:  # every 10 s, only when the start is slow
            err_console.print(f"waiting for the local Prefect server ({seconds:.0f} s of {timeout:g} s)")

    with (_stop_children_on_signals(),
          run_lock(output_dir(p, root), p.orchestration.workspace_lock_wait_s, "edgeopt run"),
          prefect_api(timeout, _prefect_home(), on_wait=waiting)):
        from flows.optimize import optimize

        with _ProgressBars():
            state = optimize(str(params), names, promote, checked=True, return_state=True)
    outcomes = state.result(raise_on_failure=False)
    if isinstance(outcomes, BaseException):
        raise outcomes
    for o in outcomes:
        if o.selection is not None:
            champ = o.promotion.candidate if o.promotion and o.promotion.promoted else None
            print_results(o.selection, champ)
            console.print(f"pick: {o.selection.pick or 'none'} -- {o.selection.reason}")
    for o in outcomes:
        console.print(o.summary) if o.exit_code == ExitCode.OK else _print_error(o.summary)
    console.print(f"total wall time: {time.perf_counter() - started:.1f} s")
    code = worst(o.exit_code for o in outcomes)
    if code != ExitCode.OK:
        raise typer.Exit(code)


# -- the same stages one at a time (dvc.yaml calls these) ---------------------------------


@app.command("prepare")
@user_errors
def prepare_cmd(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Stage 1: copy the base model into the workspace and build the evaluation data."""
    from edgeopt.pipeline.data import prepare_data
    from edgeopt.preflight import preflight
    from edgeopt.workloads.base import get_workload

    ctx = _context(params, pipeline)
    preflight(ctx)
    prepared = prepare_data(ctx)
    counts = get_workload(ctx.cfg.task).describe_data(prepared.n_pairs, prepared.n_sentences)
    console.print(f"base {prepared.base_format} sha256 {prepared.base_sha256[:12]}; "
                  f"{counts} (digest {prepared.data_digest[:12]})")


@app.command("validate")
@user_errors
def validate_cmd(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Stage 2: validate the evaluation data with Great Expectations; a failure stops here."""
    from edgeopt.pipeline.data import validate_data

    report = validate_data(_context(params, pipeline))
    console.print(f"data validation passed ({len(report['results'])} expectations)")


@app.command("candidates")
@user_errors
def candidates_cmd(
    params: ParamsOpt = Path("params.yaml"),
    pipeline: PipelineOpt = None,
    list_recipes: Annotated[bool, typer.Option(
        "--list", help="Build nothing: list which recipes apply to each pipeline's model, and why the others "
        "do not.")] = False,
) -> None:
    """Stage 3: make the inputs, build and measure every candidate; track them in MLflow."""
    if list_recipes:
        _list_applicable(params, pipeline)
        return
    from edgeopt.pipeline.candidates import run_candidates
    from edgeopt.pipeline.data import load_prepared, prepare_inputs
    from edgeopt.pipeline.runs import start_tracking, track_candidates
    from edgeopt.versioning import lock_revision, stage_name

    ctx = _context(params, pipeline)
    prepared = load_prepared(ctx)
    run = start_tracking(ctx, prepared, lock_revision(ctx.project_root, stage_name(ctx.namespace)))
    inputs = prepare_inputs(ctx, prepared)
    with _ProgressBars():
        records, rows = run_candidates(ctx, prepared, inputs)
    rows = track_candidates(ctx, run, rows, records)
    ok = sum(r.status == "ok" for r in rows)
    console.print(f"{ok}/{len(rows)} candidates measured; MLflow run {run.run_id}")


def _list_applicable(params: Path, pipeline: str | None) -> None:
    from edgeopt.applicability import applicability_table
    from edgeopt.recipes import all_recipes
    from edgeopt.taskspec import get_task

    p = load_params(params)
    if pipeline is not None and pipeline not in p.pipelines:
        raise UserError(f"unknown pipeline {pipeline!r}; params.yaml defines: {', '.join(p.pipelines)}")
    root = params.resolve().parent
    for name, cfg in p.pipelines.items():
        if pipeline is not None and name != pipeline:
            continue
        facts = cfg.model.inspect(root, f"pipelines.{name}.model")
        rows = applicability_table(all_recipes(), cfg.task, get_task(cfg.task).family, facts,
                                   {c.name: c.recipe for c in cfg.candidates})
        t = Table(title=f"{name}: {cfg.task}, {facts.kind} model ({'/'.join(facts.formats)})")
        for col in ("recipe", "framework", "applies", "why", "in params.yaml as"):
            t.add_column(col)
        for r in rows:
            t.add_row(r.recipe, r.framework, "yes" if r.applies else "no", r.reason,
                      ", ".join(r.listed_as) or ("- (not listed)" if r.applies else "-"))
        console.print(t)


@app.command("select")
@user_errors
def select_cmd(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Stage 4: apply the gates, compute the Pareto frontier and pick (re-runnable with new gates)."""
    from edgeopt.pipeline.runs import load_results, load_tracked_run
    from edgeopt.pipeline.selecting import select_and_log

    ctx = _context(params, pipeline)
    selection = select_and_log(ctx, load_tracked_run(ctx), load_results(ctx))
    _print_outcome(selection, None, f"written to {ctx.ws.selection}")
    _exit_with(verdict(selection, None, promote=False))


@app.command("promote")
@user_errors
def promote_cmd(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Stage 5: register the pick and move the alias, only if it passed every gate."""
    from edgeopt.pipeline.data import load_prepared
    from edgeopt.pipeline.promoting import promote_pick
    from edgeopt.pipeline.runs import finish_tracking, load_tracked_run
    from edgeopt.pipeline.selecting import load_selection

    ctx = _context(params, pipeline)
    selection = load_selection(ctx)
    promotion = promote_pick(ctx, selection, load_prepared(ctx))
    finish_tracking(load_tracked_run(ctx), selection, promotion)
    _exit_with(verdict(selection, promotion))


def _exit_with(result: Verdict) -> None:
    """The stage commands (`dvc repro`) end with the same line and exit code as `edgeopt run`."""
    if result.code == ExitCode.OK:
        console.print(result.line)
        return
    _print_error(result.line)
    raise typer.Exit(result.code)


@app.command()
@user_errors
def results(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Show the last run's candidate table with the frontier and the champion marked."""
    from edgeopt.pipeline.selecting import load_selection
    from edgeopt.results import Promotion

    ctx = _context(params, pipeline)
    selection = load_selection(ctx)
    champion = None
    if ctx.ws.promotion.is_file():
        promo = Promotion.model_validate_json(ctx.ws.promotion.read_text())
        champion = promo.candidate if promo.promoted else None
    _print_outcome(selection, champion, f"from {ctx.ws.selection}")


@app.command()
@user_errors
def rollback(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Move the alias back to the previous champion (history kept in registered-model tags)."""
    from edgeopt import tracking
    from edgeopt.promotion import rollback as do_rollback

    ctx = _context(params, pipeline)
    tracking.configure(ctx.params, ctx.project_root)
    reg = ctx.cfg.registry
    result = do_rollback(reg.model_name, reg.alias)
    console.print(f"{reg.model_name}@{reg.alias}: version {result.previous_version} -> {result.version}")


@app.command()
@user_errors
def schema(output: Annotated[Path | None, typer.Option(help="Write to a file instead of stdout.")] = None) -> None:
    """Dump the JSON schema of params.yaml."""
    text = json_schema()
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n")


@app.command("check-params")
@user_errors
def check_params(params: ParamsOpt = Path("params.yaml")) -> None:
    """Validate params.yaml and say so."""
    p = load_params(params)
    counts = ", ".join(f"{k}: {len(v.candidates)} candidates" for k, v in p.pipelines.items())
    console.print(f"{params}: valid ({counts})")


@app.command()
def recipes() -> None:
    """List the registered recipes and their options."""
    from edgeopt.recipes import all_recipes

    t = Table(title="recipes")
    for col in ("recipe", "framework", "starts from", "serves", "options"):
        t.add_column(col)
    for name, r in sorted(all_recipes().items()):
        serves = ", ".join(r.tasks) if r.tasks else f"any {'/'.join(r.families)} task"
        t.add_row(name, r.framework, ", ".join(r.accepts), serves, ", ".join(r.options_model.model_fields) or "-")
    console.print(t)


@app.command()
def tasks() -> None:
    """List the registered task packages, their model and data source kinds."""
    from edgeopt.taskspec import all_tasks

    t = Table(title="tasks")
    for col in ("task", "family", "model kinds", "data kinds", "quality metrics", "what"):
        t.add_column(col)
    for name, spec in sorted(all_tasks().items()):
        t.add_row(name, spec.family, ", ".join(spec.model_kinds), ", ".join(spec.data_kinds),
                  ", ".join(spec.quality_metrics), spec.summary)
    console.print(t)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
