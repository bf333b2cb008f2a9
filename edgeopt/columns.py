"""Columns of the candidate table (`edgeopt run`, `edgeopt results`, bench, the report): each task names its own.

A column is a header and a cell function over a measured row; the table adds the columns every task
shares (candidate, recipe, status, speed-up, rounds, noise, gates, frontier, pick, champion) around them.

The cells are interval-aware: each value knows where its confidence interval lives (`Measurement.ci`,
`Quality.ci`, `Quality.retention_ci`, `CandidateResult.ci`). The console table shows the shared cells'
intervals (speed-up `2.00x [1.93, 2.08]`, latency `noise` `±2.1%`) and keeps the task's cells plain to stay
readable; the report shows every cell with its interval (`Column.with_interval`). A value without one (an
exact size, a selection.json written before rounds existed) is shown plain everywhere.
`table_warnings` lists what a reader of the table must not miss: gates decided inside the noise, rounds
that ran on a loaded machine, a pick tied with others within the noise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from edgeopt.results import CandidateResult, GateResult, Interval, Selection

Value = Callable[[CandidateResult], float | None]
IntervalOf = Callable[[CandidateResult], Interval | None]


def _none(row: CandidateResult) -> Interval | None:
    return None


@dataclass(frozen=True)
class Pick:
    """One number of a row (called like a function) and where its confidence interval lives."""

    value: Value
    interval: IntervalOf = _none

    def __call__(self, row: CandidateResult) -> float | None:
        return self.value(row)


def half_width(ci: Interval | None, value: float | None) -> float | None:
    """The interval's half-width relative to the value (0.021: ±2.1%); None without a usable interval."""
    if ci is None or value is None or not value:
        return None
    return (ci[1] - ci[0]) / 2 / abs(value)


def percent(fraction: float) -> str:
    """±2.1%, ±12.0%, ±0.043%: one decimal, two significant digits below 0.1%."""
    pct = fraction * 100
    return f"±{pct:.1f}%" if pct >= 0.1 else f"±{pct:.2g}%"


def interval_text(ci: Interval, fmt: str = ".2f") -> str:
    return f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


@dataclass(frozen=True)
class Measured:
    """A cell formatting one number ("-" where the row lacks it) that knows the number's interval (`Pick`)."""

    fmt: str
    pick: Value

    def interval(self, row: CandidateResult) -> Interval | None:
        of = getattr(self.pick, "interval", None)
        return of(row) if callable(of) else None

    def __call__(self, row: CandidateResult) -> str:
        value = self.pick(row)
        return "-" if value is None else format(value, self.fmt)

    def with_interval(self, row: CandidateResult) -> str:
        """`4.00 [3.92, 4.08]`; the plain value where there is no interval or it is a point."""
        text, ci = self(row), self.interval(row)
        if text == "-" or ci is None or ci[0] == ci[1]:
            return text
        return f"{text} {interval_text(ci, self.fmt)}"


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[CandidateResult], str]  # called only for rows with a measurement and a quality

    def interval(self, row: CandidateResult) -> Interval | None:
        """The cell value's confidence interval, where the cell knows one."""
        return self.cell.interval(row) if isinstance(self.cell, Measured) else None

    def with_interval(self, row: CandidateResult) -> str:
        """The cell with its interval where it has one (the report; the console table is too narrow for it)."""
        return self.cell.with_interval(row) if isinstance(self.cell, Measured) else self.cell(row)


def measured(fmt: str, pick: Value) -> Callable[[CandidateResult], str]:
    """A cell that formats one number, or "-" where the row lacks it; it knows the number's CI (a `Pick`)."""
    return Measured(fmt, pick)


def _measurement_ci(key: str, scale: float = 1.0) -> IntervalOf:
    def of(r: CandidateResult) -> Interval | None:
        ci = r.measurement.ci.get(key) if r.measurement else None
        return None if ci is None else (ci[0] * scale, ci[1] * scale)

    return of


p50_ms = Pick(lambda r: r.measurement.latency.p50_ms if r.measurement else None, _measurement_ci("latency_p50_ms"))
p99_ms = Pick(lambda r: r.measurement.latency.p99_ms if r.measurement else None, _measurement_ci("latency_p99_ms"))
items_per_s = Pick(lambda r: r.measurement.throughput_items_per_s if r.measurement else None,
                   _measurement_ci("throughput_items_per_s"))
size_mb = Pick(lambda r: r.measurement.size_mb if r.measurement else None)  # exact: no interval
rss_mb = Pick(lambda r: r.measurement.peak_rss_mb if r.measurement else None, _measurement_ci("peak_rss_mb"))
load_time_s = Pick(lambda r: r.measurement.load_time_s if r.measurement else None, _measurement_ci("load_time_s"))


def metric(name: str) -> Pick:
    return Pick(lambda r: r.quality.metrics.get(name) if r.quality else None,
                lambda r: r.quality.ci.get(name) if r.quality else None)


def retention(name: str) -> Pick:
    return Pick(lambda r: r.quality.retention.get(name) if r.quality else None,
                lambda r: r.quality.retention_ci.get(name) if r.quality else None)


def extra(name: str, scale: float = 1.0) -> Pick:
    def value(r: CandidateResult) -> float | None:
        v = r.measurement.extra.get(name) if r.measurement else None
        return None if v is None else v * scale

    return Pick(value, _measurement_ci(name, scale))


FOOTPRINT = (Column("size MB", measured(".1f", size_mb)), Column("RSS MB", measured(".0f", rss_mb)))
LATENCY = (Column("p50 ms", measured(".2f", p50_ms)), Column("p99 ms", measured(".2f", p99_ms)),
           Column("items/s", measured(".1f", items_per_s)))


def generic_columns(rows: list[CandidateResult]) -> tuple[Column, ...]:
    """For a task that names no columns: latency, footprint and every quality metric measured."""
    names = sorted({k for r in rows if r.quality for k in r.quality.metrics})
    return (*LATENCY, *FOOTPRINT, *(Column(n, measured(".4g", metric(n))) for n in names))


# -- the cells every task shares ----------------------------------------------------------------


def speedup_cell(row: CandidateResult) -> str:
    """`2.00x [1.93, 2.08]`: against the baseline, with its paired-rounds interval where there is one."""
    if row.speedup is None:
        return "-"
    ci = row.ci.get("speedup")
    return f"{row.speedup:.2f}x" + (f" {interval_text(ci)}" if ci is not None else "")


def rounds_cell(row: CandidateResult) -> str:
    """How many fresh-process rounds were pooled ("-": none recorded, e.g. an older selection.json)."""
    m = row.measurement
    return str(len(m.rounds)) if m is not None and m.rounds else "-"


def latency_noise(row: CandidateResult) -> float | None:
    """The latency p50 CI's half-width relative to the p50 (0.021: ±2.1%)."""
    m = row.measurement
    return half_width(m.ci.get("latency_p50_ms"), m.latency.p50_ms) if m is not None else None


def noise_cell(row: CandidateResult) -> str:
    rel = latency_noise(row)
    return "-" if rel is None else percent(rel)


def settings_cell(row: CandidateResult) -> str:
    """The runtime settings its rounds ran with, as changed from the runtime's default by the probe
    (edgeopt.tuning): "default", e.g. "allow_spinning=False", or "-" where none were probed."""
    m = row.measurement
    if m is None or not m.tuning:
        return "-"
    label = m.tuning.get("chosen_label")
    return str(label) if label else "-"


SHARED = (Column("speed-up", speedup_cell), Column("rounds", rounds_cell), Column("noise", noise_cell),
          Column("settings", settings_cell))


def gates_cell(row: CandidateResult) -> str:
    """`pass`, or the gates not passed; a gate decided inside its interval is marked `(noise)`."""
    if not row.gates:
        return "-"

    def name(g: GateResult) -> str:
        return f"{g.name} (noise)" if g.within_noise else g.name

    if row.passed_gates:
        noisy = [g.name for g in row.gates if g.within_noise]
        return "pass" + (f" (noise: {', '.join(noisy)})" if noisy else "")
    return ",".join(name(g) for g in row.gates if not g.passed) or "-"


def is_tie(selection: Selection) -> bool:
    return selection.pick is not None and len(selection.tie) > 1


def pick_cell(row: CandidateResult, selection: Selection) -> str:
    """`yes` on the pick's row, `yes (tie)` when others were within the noise of it."""
    if row.name != selection.pick:
        return ""
    return "yes (tie)" if is_tie(selection) else "yes"


def pick_objective(selection: Selection) -> str | None:
    """The objective the pick rule minimises (`selection.pick_rule` starts "lowest <objective> on ...")."""
    found = re.match(r"lowest (\S+) ", selection.pick_rule)
    return found.group(1) if found else None


def table_warnings(selection: Selection) -> list[str]:
    """Lines to print under the table: gates inside the noise, rounds under load, a tie at the pick."""
    out: list[str] = []
    for r in selection.candidates:
        out += [f"{r.name}: {g.text()}" for g in r.gates if g.within_noise]
        m = r.measurement
        if m is not None and m.under_load_rounds > 0:
            out.append(f"{r.name}: {m.under_load_rounds} of {len(m.rounds)} rounds ran under load: "
                       "timings may be inflated")
    if is_tie(selection):
        objective = pick_objective(selection)
        on = f" on {objective}" if objective else ""
        rule = selection.tie_rule or "the tie rule"
        out.append(f"tie within the noise{on}: {', '.join(selection.tie)}; broken by {rule}: {selection.pick}")
    return out
