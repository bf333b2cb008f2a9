"""Columns of the candidate table (`edgeopt run`, `edgeopt results`, bench): each task names its own.

A column is a header and a cell function over a measured row; the table adds the columns every task
shares (candidate, recipe, status, speed-up, gates, frontier, champion) around them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgeopt.results import CandidateResult


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[CandidateResult], str]  # called only for rows with a measurement and a quality


def measured(fmt: str, pick: Callable[[CandidateResult], float | None]) -> Callable[[CandidateResult], str]:
    """A cell that formats one number, or "-" where the row lacks it."""

    def cell(row: CandidateResult) -> str:
        value = pick(row)
        return "-" if value is None else format(value, fmt)

    return cell


def p50_ms(r: CandidateResult) -> float | None:
    return r.measurement.latency.p50_ms if r.measurement else None


def p99_ms(r: CandidateResult) -> float | None:
    return r.measurement.latency.p99_ms if r.measurement else None


def items_per_s(r: CandidateResult) -> float | None:
    return r.measurement.throughput_items_per_s if r.measurement else None


def size_mb(r: CandidateResult) -> float | None:
    return r.measurement.size_mb if r.measurement else None


def rss_mb(r: CandidateResult) -> float | None:
    return r.measurement.peak_rss_mb if r.measurement else None


def metric(name: str) -> Callable[[CandidateResult], float | None]:
    return lambda r: r.quality.metrics.get(name) if r.quality else None


def retention(name: str) -> Callable[[CandidateResult], float | None]:
    return lambda r: r.quality.retention.get(name) if r.quality else None


def extra(name: str, scale: float = 1.0) -> Callable[[CandidateResult], float | None]:
    def pick(r: CandidateResult) -> float | None:
        value = r.measurement.extra.get(name) if r.measurement else None
        return None if value is None else value * scale

    return pick


FOOTPRINT = (Column("size MB", measured(".1f", size_mb)), Column("RSS MB", measured(".0f", rss_mb)))
LATENCY = (Column("p50 ms", measured(".2f", p50_ms)), Column("p99 ms", measured(".2f", p99_ms)),
           Column("items/s", measured(".1f", items_per_s)))


def generic_columns(rows: list[CandidateResult]) -> tuple[Column, ...]:
    """For a task that names no columns: latency, footprint and every quality metric measured."""
    names = sorted({k for r in rows if r.quality for k in r.quality.metrics})
    return (*LATENCY, *FOOTPRINT, *(Column(n, measured(".4g", metric(n))) for n in names))
