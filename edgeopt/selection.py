"""Gates, the Pareto frontier and the pick rule: pure functions over result rows."""

from __future__ import annotations

from collections.abc import Sequence

from edgeopt.config import GatesConfig, SelectionConfig
from edgeopt.results import CandidateResult, GateResult, Selection


def derive_against_baseline(
    row: CandidateResult, baseline: CandidateResult, quality_metrics: Sequence[str]
) -> CandidateResult:
    """Speed-up, footprint reductions and quality retention relative to the baseline row."""
    m, b, q = row.measurement, baseline.measurement, row.quality
    if row.status != "ok" or m is None or b is None or q is None:
        return row
    missing = [k for k in quality_metrics if k not in q.retention]
    if missing:
        raise ValueError(f"{row.name}: quality metrics {missing} not measured")
    return row.model_copy(
        update={
            "speedup": b.latency.p50_ms / m.latency.p50_ms,
            "size_reduction": 1.0 - m.size_mb / b.size_mb,
            "rss_reduction": 1.0 - m.peak_rss_mb / b.peak_rss_mb,
            # The weakest of the chosen metrics: a candidate is only as good as its worst one.
            "quality_retention": min(q.retention[k] for k in quality_metrics),
        }
    )


def apply_gates(row: CandidateResult, gates: GatesConfig) -> CandidateResult:
    if row.status != "ok" or row.speedup is None or row.quality_retention is None:
        return row
    assert row.size_reduction is not None and row.rss_reduction is not None
    footprint = max(row.size_reduction, row.rss_reduction)
    results = [
        GateResult(
            name="quality_retention",
            value=row.quality_retention,
            threshold=gates.min_quality_retention,
            passed=row.quality_retention >= gates.min_quality_retention,
        ),
        GateResult(name="speedup", value=row.speedup, threshold=gates.min_speedup,
                   passed=row.speedup >= gates.min_speedup),
        GateResult(
            name="footprint_reduction",
            value=footprint,
            threshold=gates.min_footprint_reduction,
            passed=footprint >= gates.min_footprint_reduction,
        ),
    ]
    # Upper bounds on raw quality metrics (e.g. kld, ppl_ratio for causal-lm), one gate each.
    assert row.quality is not None
    for name, bound in gates.max_metrics.items():
        if name not in row.quality.metrics:
            raise ValueError(f"{row.name}: gate metric {name!r} not measured "
                             f"(measured: {', '.join(sorted(row.quality.metrics))})")
        value = row.quality.metrics[name]
        results.append(GateResult(name=f"max_{name}", value=value, threshold=bound, passed=value <= bound))
    return row.model_copy(update={"gates": results})


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b when it is no worse on every (minimised) objective and better on one."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(points: dict[str, Sequence[float]]) -> list[str]:
    """Names of the non-dominated points, in input order. Duplicated points all stay."""
    return [n for n, p in points.items() if not any(dominates(q, p) for m, q in points.items() if m != n)]


def pick_rule_text(cfg: SelectionConfig) -> str:
    return (
        f"lowest {cfg.pick.by} on the Pareto frontier ({', '.join(cfg.objectives)}) among candidates "
        f"passing every gate with quality retention >= {cfg.pick.min_quality_retention:g}; "
        f"if none reaches that retention, the frontier point with the highest retention"
    )


def select(
    pipeline: str,
    rows: Sequence[CandidateResult],
    gates: GatesConfig,
    cfg: SelectionConfig,
    task: str | None = None,
) -> Selection:
    """Derive, gate, build the frontier among gated candidates and pick one."""
    by_name = {r.name: r for r in rows}
    baseline = by_name.get(cfg.baseline)
    if baseline is None or baseline.status != "ok":
        derived = list(rows)
        return Selection(
            pipeline=pipeline, baseline=cfg.baseline, objectives=list(cfg.objectives), task=task,
            pick_rule=pick_rule_text(cfg), candidates=derived, frontier=[], pick=None,
            reason=f"baseline {cfg.baseline!r} has no measurement; nothing can be compared",
        )
    derived = [apply_gates(derive_against_baseline(r, baseline, cfg.quality_metrics), gates) for r in rows]
    eligible = {r.name: r for r in derived if r.passed_gates and r.name != cfg.baseline}
    frontier = pareto_front({n: [r.objective(o) for o in cfg.objectives] for n, r in eligible.items()})

    pick: str | None = None
    if not eligible:
        reason = "no candidate passed every gate; the alias stays where it is"
    else:
        good = [n for n in frontier if (eligible[n].quality_retention or 0) >= cfg.pick.min_quality_retention]
        if good:
            pick = min(good, key=lambda n: eligible[n].objective(cfg.pick.by))
            reason = f"{pick}: lowest {cfg.pick.by} among {len(good)} frontier point(s) at retention >= " \
                     f"{cfg.pick.min_quality_retention:g}"
        else:
            pick = max(frontier, key=lambda n: eligible[n].quality_retention or 0)
            reason = f"{pick}: no frontier point reached retention {cfg.pick.min_quality_retention:g}; " \
                     f"took the highest-retention one"
    return Selection(
        pipeline=pipeline, baseline=cfg.baseline, objectives=list(cfg.objectives), task=task,
        pick_rule=pick_rule_text(cfg), candidates=derived, frontier=frontier, pick=pick, reason=reason,
    )
