"""Gates, the Pareto frontier and the pick rule: pure functions over result rows, aware of the noise.

Every timed value carries a bootstrap CI (edgeopt.rounds, edgeopt.stats). A gate passes only when its
interval's conservative end clears it; one dominates another only when clearly better on one objective
and clearly worse on none; candidates within the noise of the pick on the pick objective are a tie,
broken by TIE_RULE. `undecided` names the candidates whose next rounds could change a decision.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeopt import stats
from edgeopt.config import GatesConfig, SelectionConfig
from edgeopt.results import CandidateResult, GateResult, Interval, Selection
from edgeopt.rounds import speedup_interval

TIE_RULE = "smaller size on disk, then higher quality retention, then name"
# Gates on timings: more rounds can move them (quality is deterministic, size exact).
TIMED_GATES = ("speedup",)


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
    ci: dict[str, Interval] = {}
    speedup = speedup_interval(b, m)
    if speedup is not None:
        ci["speedup"] = speedup
    # The weakest of the chosen metrics: a candidate is only as good as its worst one. Its interval is
    # bounded by the weakest low end and the weakest high end of the metrics' own intervals.
    retention = [q.retention_ci.get(k, (q.retention[k], q.retention[k])) for k in quality_metrics]
    if any(k in q.retention_ci for k in quality_metrics):
        ci["quality_retention"] = (min(r[0] for r in retention), min(r[1] for r in retention))
    return row.model_copy(
        update={
            "speedup": b.latency.p50_ms / m.latency.p50_ms,
            "size_reduction": 1.0 - m.size_mb / b.size_mb,
            "rss_reduction": 1.0 - m.peak_rss_mb / b.peak_rss_mb,
            "quality_retention": min(q.retention[k] for k in quality_metrics),
            "ci": ci,
        }
    )


def gate(name: str, value: float, threshold: float, ci: Interval | None = None,
         upper_bound: bool = False) -> GateResult:
    """A gate read on its interval's conservative end; `within_noise` when the threshold lies inside it."""
    low, high = ci if ci is not None else (value, value)
    if upper_bound:
        passed, within = high <= threshold, low <= threshold < high
    else:
        passed, within = low >= threshold, low < threshold <= high
    return GateResult(name=name, value=value, threshold=threshold, passed=passed, ci=ci, upper_bound=upper_bound,
                      within_noise=within)


def apply_gates(row: CandidateResult, gates: GatesConfig) -> CandidateResult:
    if row.status != "ok" or row.speedup is None or row.quality_retention is None:
        return row
    assert row.size_reduction is not None and row.rss_reduction is not None
    footprint = max(row.size_reduction, row.rss_reduction)
    results = [
        gate("quality_retention", row.quality_retention, gates.min_quality_retention, row.ci.get("quality_retention")),
        gate("speedup", row.speedup, gates.min_speedup, row.ci.get("speedup")),
        gate("footprint_reduction", footprint, gates.min_footprint_reduction),
    ]
    # Upper bounds on raw quality metrics (e.g. kld, ppl_ratio for causal-lm), one gate each.
    assert row.quality is not None
    for name, bound in gates.max_metrics.items():
        if name not in row.quality.metrics:
            raise ValueError(f"{row.name}: gate metric {name!r} not measured "
                             f"(measured: {', '.join(sorted(row.quality.metrics))})")
        results.append(gate(f"max_{name}", row.quality.metrics[name], bound, row.quality.ci.get(name),
                            upper_bound=True))
    return row.model_copy(update={"gates": results})


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b when it is no worse on every (minimised) objective and better on one."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(points: dict[str, Sequence[float]]) -> list[str]:
    """Names of the non-dominated points, in input order. Duplicated points all stay."""
    return [n for n, p in points.items() if not any(dominates(q, p) for m, q in points.items() if m != n)]


def pareto_front_beyond_noise(points: dict[str, Sequence[Interval]], floor: float = 0.0) -> list[str]:
    """Names no other point dominates beyond the noise (`stats.dominates_beyond_noise`), in input order."""
    return [n for n, p in points.items()
            if not any(stats.dominates_beyond_noise(q, p, floor) for m, q in points.items() if m != n)]


def break_tie(names: Sequence[str], rows: dict[str, CandidateResult]) -> str:
    """TIE_RULE: the smallest on disk, then the highest quality retention, then the first name."""
    def key(n: str) -> tuple[float, float, str]:
        m = rows[n].measurement
        return (m.size_mb if m else float("inf"), -(rows[n].quality_retention or 0.0), n)

    return min(names, key=key)


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
    """Derive, gate, build the frontier (beyond the noise) among gated candidates and pick one."""
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
    frontier = pareto_front_beyond_noise(
        {n: [r.objective_interval(o) for o in cfg.objectives] for n, r in eligible.items()}, cfg.noise_floor)

    pick: str | None = None
    tie: list[str] = []
    if not eligible:
        reason = "no candidate passed every gate; the alias stays where it is"
    else:
        good = [n for n in frontier if (eligible[n].quality_retention or 0) >= cfg.pick.min_quality_retention]
        if good:
            best = min(good, key=lambda n: eligible[n].objective(cfg.pick.by))
            best_ci = eligible[best].objective_interval(cfg.pick.by)
            # Within the noise of the best: not clearly worse than it on the pick objective.
            tie = [n for n in good
                   if not stats.clearly_below(best_ci, eligible[n].objective_interval(cfg.pick.by), cfg.noise_floor)]
            pick = break_tie(tie, eligible) if len(tie) > 1 else best
            reason = f"{pick}: lowest {cfg.pick.by} among {len(good)} frontier point(s) at retention >= " \
                     f"{cfg.pick.min_quality_retention:g}"
            if len(tie) > 1:
                reason = f"{pick}: tie within the noise on {cfg.pick.by} among {', '.join(tie)}; " \
                         f"broken by {TIE_RULE}"
            else:
                tie = []
        else:
            pick = max(frontier, key=lambda n: eligible[n].quality_retention or 0)
            reason = f"{pick}: no frontier point reached retention {cfg.pick.min_quality_retention:g}; " \
                     f"took the highest-retention one"
    return Selection(
        pipeline=pipeline, baseline=cfg.baseline, objectives=list(cfg.objectives), task=task,
        pick_rule=pick_rule_text(cfg), candidates=derived, frontier=frontier, pick=pick, reason=reason,
        tie=tie, tie_rule=TIE_RULE if tie else "",
    )


def undecided(selection: Selection, cfg: SelectionConfig) -> list[str]:
    """Candidates whose extra rounds could change a decision: a timed gate inside the noise, the members of
    a tie with the pick, and frontier points that are dominated on the point values but not beyond the noise."""
    rows = {r.name: r for r in selection.candidates if r.status == "ok"}
    near_gate = {n for n, r in rows.items() if any(g.within_noise and g.name in TIMED_GATES for g in r.gates)}
    eligible = {n: r for n, r in rows.items() if r.passed_gates and n != cfg.baseline}
    by_point = set(pareto_front({n: [r.objective(o) for o in cfg.objectives] for n, r in eligible.items()}))
    unsure_front = {n for n in selection.frontier if n not in by_point}
    names = near_gate | set(selection.tie) | unsure_front
    return [r.name for r in selection.candidates if r.name in names]
