"""`edgeopt`: one console command. A user's mistake prints one line and exits 2, never a traceback."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeopt.config import json_schema, load_params
from edgeopt.errors import UserError
from edgeopt.results import Selection

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Optimize a model into edge-deployable variants, measure them, promote the best.")
# Off a terminal (CI logs, pipes) rich assumes 80 columns and squeezes the table unreadably.
console = Console() if Console().is_terminal else Console(width=180)
err_console = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file (validated).")]
PipelineOpt = Annotated[str | None, typer.Option("--pipeline", help="Pipeline namespace (default: the first).")]
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edgeopt.environment import quiet_offline_defaults

        quiet_offline_defaults()
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            # One line, always: some library messages (YAML, safetensors) carry their own newlines.
            # escape: a message quoting "[...]" (YAML, paths) is text, not rich markup.
            err_console.print(f"[bold red]error:[/] {escape(' '.join(str(err).split()))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _context(params: Path, pipeline: str | None) -> Any:
    from edgeopt.pipeline import PipelineContext

    p = load_params(params)
    name = pipeline or next(iter(p.pipelines))
    if name not in p.pipelines:
        raise UserError(f"unknown pipeline {name!r}; params.yaml defines: {', '.join(p.pipelines)}")
    return PipelineContext(p, name, params.resolve().parent)


def _check_writable(root: Path) -> None:
    """Probe by writing: permission bits say nothing for root, and a file may block the path."""
    import tempfile

    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise UserError(f"output folder is not writable: {root} ({err.strerror or err})") from None


def _one_line(err: UserError) -> UserError:
    text = str(err).strip().splitlines()
    return UserError(text[0] if text else "invalid input")


def _preflight(ctx: Any) -> None:
    """Check everything the user gave before an orchestrated run starts: the model files
    (existence and integrity), the evaluation data, then the output folder. Nothing is written
    to the workspace, and nothing reaches the registry, unless all of it passes."""
    try:
        _check_inputs(ctx)
    except UserError as err:
        raise _one_line(err) from None
    _check_writable(ctx.ws.root)


def _check_inputs(ctx: Any) -> None:
    from edgeopt.config import GgufFileModel, HFFolderModel, JsonlData, OnnxFileModel, TextWindowsData

    def rel(p: Path) -> Path:
        return p if p.is_absolute() else ctx.project_root / p

    where = f"pipelines.{ctx.namespace}"
    model = ctx.cfg.model
    if isinstance(model, HFFolderModel | OnnxFileModel | GgufFileModel):
        path = rel(model.path)
        if not path.exists():
            raise UserError(f"{where}.model.path: not found: {path}")
        if isinstance(model, HFFolderModel):
            from edgeopt.base_model import check_hf_folder

            check_hf_folder(path)
        elif isinstance(model, OnnxFileModel):
            from edgeopt.base_model import check_onnx_file

            check_onnx_file(path)
            if not rel(model.tokenizer).is_dir():
                raise UserError(f"{where}.model.tokenizer: not found: {rel(model.tokenizer)}")
        else:
            from edgeopt.integrity import check_gguf_file

            check_gguf_file(path)
    data = ctx.cfg.data
    if isinstance(data, JsonlData):
        path = rel(data.path)
        if not path.is_file():
            raise UserError(f"{where}.data.path: not found: {path}")
        _check_eval_data(data.model_copy(update={"path": path}))
    elif isinstance(data, TextWindowsData) and isinstance(data.source, Path):
        path = rel(data.source)
        if not path.is_file() or path.stat().st_size == 0:
            raise UserError(f"{where}.data.source: not found or empty: {path}")


def _check_eval_data(data: Any) -> None:
    """Build the evaluation data once into a throw-away folder: the same checks `prepare` runs."""
    import tempfile

    from edgeopt.data import build_eval_data

    with tempfile.TemporaryDirectory(prefix="edgeopt-preflight-") as tmp:
        build_eval_data(data, Path(tmp) / "data")


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


def _is_causal_lm(selection: Selection) -> bool:
    return any(r.quality is not None and "kld" in r.quality.metrics for r in selection.candidates)


def _llm_results_table(selection: Selection, champion: str | None) -> Table:
    """causal-lm: quality against the reference, prompt/decode speed and the bandwidth roof."""
    t = Table(title=f"{selection.pipeline}: candidates (baseline {selection.baseline})")
    for col in ("candidate", "recipe", "status", "size MB", "RSS MB", "PPL", "KLD", "top-1", "prompt tok/s",
                "decode tok/s", "TTFT ms", "roof %", "speed-up", "gates", "front", "champion"):
        t.add_column(col, justify="left" if col in {"candidate", "recipe", "status", "gates"} else "right")
    for r in selection.candidates:
        m, q = r.measurement, r.quality
        if r.status != "ok" or m is None or q is None:
            t.add_row(r.name, r.recipe, f"[red]{r.status}[/]", *["-"] * 10, (r.error or "")[:60], "", "")
            continue
        gates = "pass" if r.passed_gates else ",".join(g.name for g in r.gates if not g.passed) or "-"
        x = m.extra
        roof = f"{100 * x['roof_fraction']:.0f}" if "roof_fraction" in x else "-"
        t.add_row(
            r.name, r.recipe, "ok", f"{m.size_mb:.1f}", f"{m.peak_rss_mb:.0f}", f"{q.metrics['ppl']:.3f}",
            f"{q.metrics['kld']:.2e}", f"{q.metrics['top1']:.3f}", f"{x.get('prompt_tok_s', 0):.0f}",
            f"{m.throughput_items_per_s:.1f}", f"{x.get('ttft_ms', 0):.0f}", roof,
            f"{r.speedup:.2f}x" if r.speedup else "-", gates,
            "*" if r.name in selection.frontier else "", "champion" if r.name == champion else "",
        )
    return t


def results_table(selection: Selection, champion: str | None = None) -> Table:
    if _is_causal_lm(selection):
        return _llm_results_table(selection, champion)
    t = Table(title=f"{selection.pipeline}: candidates (baseline {selection.baseline})")
    for col in ("candidate", "recipe", "status", "p50 ms", "p99 ms", "items/s", "size MB", "RSS MB",
                "cosine", "R@10 ret", "MRR ret", "speed-up", "gates", "front", "champion"):
        t.add_column(col, justify="left" if col in {"candidate", "recipe", "status", "gates"} else "right")
    for r in selection.candidates:
        m, q = r.measurement, r.quality
        if r.status != "ok" or m is None or q is None:
            t.add_row(r.name, r.recipe, f"[red]{r.status}[/]", *["-"] * 9, (r.error or "")[:60], "", "")
            continue
        gates = "pass" if r.passed_gates else ",".join(g.name for g in r.gates if not g.passed) or "-"
        t.add_row(
            r.name, r.recipe, "ok", f"{m.latency.p50_ms:.2f}", f"{m.latency.p99_ms:.2f}",
            f"{m.throughput_items_per_s:.1f}", f"{m.size_mb:.1f}", f"{m.peak_rss_mb:.0f}",
            f"{q.metrics['cosine']:.4f}", f"{q.retention['recall@10']:.3f}", f"{q.retention['mrr']:.3f}",
            f"{r.speedup:.2f}x" if r.speedup else "-", gates,
            "*" if r.name in selection.frontier else "", "champion" if r.name == champion else "",
        )
    return t


def _print_outcome(selection: Selection, champion: str | None, note: str) -> None:
    console.print(results_table(selection, champion))
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
    from edgeopt.pipeline import PipelineContext

    p = load_params(params)
    names = pipeline or list(p.pipelines)
    for name in names:
        if name not in p.pipelines:
            raise UserError(f"unknown pipeline {name!r}; params.yaml defines: {', '.join(p.pipelines)}")
        _preflight(PipelineContext(p, name, params.resolve().parent))
    from flows.optimize import optimize

    started = time.perf_counter()
    with _ProgressBars():
        state = optimize(str(params), names, promote, return_state=True)
    outcomes = state.result(raise_on_failure=False)
    if state.is_failed():
        if isinstance(outcomes, UserError):
            raise outcomes
        if isinstance(outcomes, BaseException):
            raise UserError(str(outcomes).splitlines()[0]) from None
        raise UserError(state.message or "the run failed")
    for o in outcomes:
        if o.selection is not None:
            champ = o.promotion.candidate if o.promotion and o.promotion.promoted else None
            note = (f"promoted {o.promotion.candidate} as {o.promotion.model_name}@{o.promotion.alias} "
                    f"(version {o.promotion.version})" if champ else
                    f"not promoted: {o.promotion.reason if o.promotion else 'promotion disabled'}")
            _print_outcome(o.selection, champ, note)
    console.print(f"total wall time: {time.perf_counter() - started:.1f} s")


# -- the same stages one at a time (dvc.yaml calls these) ---------------------------------


@app.command("prepare")
@user_errors
def prepare_cmd(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Stage 1: copy the base model into the workspace and build the evaluation data."""
    from edgeopt.pipeline import prepare_data

    ctx = _context(params, pipeline)
    _preflight(ctx)
    prepared = prepare_data(ctx)
    # text-windows data (causal-lm) has no pairs: its "sentences" are the evaluation windows.
    counts = (f"{prepared.n_sentences} evaluation windows" if prepared.task == "causal-lm"
              else f"{prepared.n_pairs} pairs, {prepared.n_sentences} sentences")
    console.print(f"base {prepared.base_format} sha256 {prepared.base_sha256[:12]}; "
                  f"{counts} (digest {prepared.data_digest[:12]})")


@app.command("validate")
@user_errors
def validate_cmd(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Stage 2: validate the evaluation data with Great Expectations; a failure stops here."""
    from edgeopt.pipeline import validate_data

    report = validate_data(_context(params, pipeline))
    console.print(f"data validation passed ({len(report['results'])} expectations)")


@app.command("candidates")
@user_errors
def candidates_cmd(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Stage 3: tokenize, build and measure every candidate; track them in MLflow."""
    from edgeopt import pipeline as pl
    from edgeopt.versioning import lock_revision, stage_name

    ctx = _context(params, pipeline)
    prepared = pl.load_prepared(ctx)
    run = pl.start_tracking(ctx, prepared, lock_revision(ctx.project_root, stage_name(ctx.namespace)))
    inputs = pl.tokenize_inputs(ctx, prepared)
    with _ProgressBars():
        records, rows = pl.run_candidates(ctx, prepared, inputs)
    rows = pl.track_candidates(ctx, run, rows, records)
    ok = sum(r.status == "ok" for r in rows)
    console.print(f"{ok}/{len(rows)} candidates measured; MLflow run {run.run_id}")


@app.command("select")
@user_errors
def select_cmd(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Stage 4: apply the gates, compute the Pareto frontier and pick (re-runnable with new gates)."""
    from edgeopt import pipeline as pl

    ctx = _context(params, pipeline)
    selection = pl.select_and_log(ctx, pl.load_tracked_run(ctx), pl.load_results(ctx))
    _print_outcome(selection, None, f"written to {ctx.ws.selection}")


@app.command("promote")
@user_errors
def promote_cmd(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Stage 5: register the pick and move the alias, only if it passed every gate."""
    from edgeopt import pipeline as pl

    ctx = _context(params, pipeline)
    selection = pl.load_selection(ctx)
    promotion = pl.promote_pick(ctx, selection, pl.load_prepared(ctx))
    pl.finish_tracking(pl.load_tracked_run(ctx), selection, promotion)
    console.print(f"{promotion.model_name}@{promotion.alias} -> version {promotion.version} ({promotion.candidate})"
                  if promotion.promoted else f"not promoted: {promotion.reason}")


@app.command()
@user_errors
def results(params: ParamsOpt = Path("params.yaml"), pipeline: PipelineOpt = None) -> None:
    """Show the last run's candidate table with the frontier and the champion marked."""
    from edgeopt import pipeline as pl
    from edgeopt.results import Promotion

    ctx = _context(params, pipeline)
    selection = pl.load_selection(ctx)
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
    for col in ("recipe", "framework", "starts from", "options"):
        t.add_column(col)
    for name, r in sorted(all_recipes().items()):
        t.add_row(name, r.framework, ", ".join(r.accepts), ", ".join(r.options_model.model_fields) or "-")
    console.print(t)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
