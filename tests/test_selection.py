"""Gates, Pareto frontier and the pick rule on hand-built result rows."""

from __future__ import annotations

import itertools

import pytest

from edgeopt.config import GatesConfig, PickRule, SelectionConfig
from edgeopt.results import CandidateResult, LatencyStats, Measurement, Quality
from edgeopt.selection import dominates, pareto_front, select, undecided


def row(name: str, p50: float, size: float, rss: float, cos: float, r10: float = 1.0, mrr: float = 1.0,
        status: str = "ok") -> CandidateResult:
    lat = LatencyStats(batch_size=1, iterations=10, p50_ms=p50, p90_ms=p50, p99_ms=p50, mean_ms=p50)
    m = Measurement(candidate=name, threads=2, sequence_length=128, load_time_s=1.0, latency=lat, throughput=lat,
                    throughput_items_per_s=1000 / p50, peak_rss_mb=rss, size_mb=size)
    q = Quality(metrics={"cosine": cos, "recall@10": r10, "mrr": mrr},
                retention={"cosine": cos, "recall@10": r10, "mrr": mrr})
    if status != "ok":
        return CandidateResult(name=name, recipe="r", parent=None, status=status, error="boom")  # type: ignore[arg-type]
    return CandidateResult(name=name, recipe="r", parent=None, status="ok", measurement=m, quality=q)


CFG = SelectionConfig(baseline="base", quality_metrics=["cosine", "recall@10", "mrr"])
GATES = GatesConfig(min_quality_retention=0.95, min_speedup=2.0, min_footprint_reduction=0.5)


def test_dominates_and_front_basics() -> None:
    assert dominates([1, 1], [2, 1])
    assert not dominates([1, 1], [1, 1])
    assert not dominates([1, 2], [2, 1])
    assert pareto_front({"a": [1, 2], "b": [2, 1], "c": [2, 2], "d": [1, 2]}) == ["a", "b", "d"]


def test_front_is_exactly_the_non_dominated_set() -> None:
    pts = {f"p{i}": [float(x), float(y)] for i, (x, y) in enumerate(itertools.product(range(4), repeat=2))}
    front = pareto_front(pts)
    assert front == ["p0"]  # (0, 0) dominates everything else
    pts.pop("p0")
    assert sorted(front := pareto_front(pts)) == ["p1", "p4"]  # (0,1) and (1,0)
    for name, p in pts.items():
        dominated = any(dominates(q, p) for q in pts.values())
        assert (name in front) == (not dominated)


def test_gates_and_pick() -> None:
    rows = [
        row("base", 10, 90, 600, 1.0),
        row("fast-bad", 2, 20, 300, 0.90),            # fails quality
        row("slow", 6, 20, 300, 0.999),               # fails speed-up (1.67x)
        row("fat", 4, 80, 580, 0.999),                # fails footprint (11%, 3%)
        row("good", 4, 45, 500, 0.995),               # passes: 2.5x, size -50%
        row("better", 3, 23, 400, 0.995),             # passes, faster and smaller
        row("lossy", 2.5, 23, 400, 0.97),             # passes gates, below the pick's 0.99
        row("broken", 1, 1, 1, 1, status="failed"),
    ]
    sel = select("p", rows, GATES, CFG)
    by = {r.name: r for r in sel.candidates}
    assert not by["fast-bad"].passed_gates and not by["slow"].passed_gates and not by["fat"].passed_gates
    assert by["good"].passed_gates and by["better"].passed_gates and by["lossy"].passed_gates
    assert not by["broken"].passed_gates and by["broken"].gates == []
    assert by["good"].speedup == pytest.approx(2.5)
    assert "good" not in sel.frontier  # dominated by "better"
    assert set(sel.frontier) == {"better", "lossy"}
    assert sel.pick == "better"  # lossy is faster but under the pick's 0.99 retention


def test_fallback_to_highest_retention_and_no_pick() -> None:
    cfg = SelectionConfig(baseline="base",
        quality_metrics=["cosine", "recall@10", "mrr"], pick=PickRule(min_quality_retention=0.999))
    rows = [row("base", 10, 90, 600, 1.0), row("a", 3, 20, 300, 0.97), row("b", 2, 30, 300, 0.96)]
    sel = select("p", rows, GATES, cfg)
    assert sel.pick == "a" and "highest-retention" in sel.reason
    none = select("p", [row("base", 10, 90, 600, 1.0), row("a", 9, 20, 300, 0.99)], GATES, CFG)
    assert none.pick is None and none.frontier == []


def test_failed_baseline_means_no_selection() -> None:
    sel = select("p", [row("base", 1, 1, 1, 1, status="failed"), row("a", 3, 20, 300, 0.99)], GATES, CFG)
    assert sel.pick is None and "baseline" in sel.reason


def test_quality_retention_is_the_weakest_metric() -> None:
    sel = select("p", [row("base", 10, 90, 600, 1.0), row("a", 3, 20, 300, 0.999, r10=0.93)], GATES, CFG)
    a = sel.candidates[1]
    assert a.quality_retention == pytest.approx(0.93)
    assert not a.passed_gates


def llm_row(name: str, p50: float, size: float, kld: float, ppl_ratio: float, top1: float) -> CandidateResult:
    lat = LatencyStats(batch_size=1, iterations=10, p50_ms=p50, p90_ms=p50, p99_ms=p50, mean_ms=p50)
    m = Measurement(candidate=name, threads=2, sequence_length=128, load_time_s=1.0, latency=lat, throughput=lat,
                    throughput_items_per_s=1000 / p50, peak_rss_mb=size * 2, size_mb=size)
    q = Quality(metrics={"ppl": 20 * ppl_ratio, "ppl_ratio": ppl_ratio, "kld": kld, "top1": top1},
                retention={"top1": top1, "ppl": 1 / ppl_ratio})
    return CandidateResult(name=name, recipe="r", parent=None, status="ok", measurement=m, quality=q)


LLM_CFG = SelectionConfig(baseline="base", quality_metrics=["top1", "ppl"])


def test_max_metric_gates_bound_raw_quality_metrics() -> None:
    gates = GatesConfig(min_quality_retention=0.9, min_speedup=1.5, min_footprint_reduction=0.5,
                        max_metrics={"kld": 0.05, "ppl_ratio": 1.05})
    rows = [
        llm_row("base", 30, 540, 0.0, 1.0, 1.0),
        llm_row("q8", 10, 145, 0.005, 1.004, 0.96),
        llm_row("q4km", 9, 106, 0.057, 1.04, 0.92),   # KLD over the bound, everything else passes
        llm_row("q4-ppl", 8, 92, 0.04, 1.06, 0.91),   # PPL ratio over the bound
        llm_row("edge", 9.5, 110, 0.05, 1.05, 0.93),  # exactly on both bounds: passes
    ]
    sel = select("p", rows, gates, LLM_CFG)
    by = {r.name: r for r in sel.candidates}
    gate = {n: {g.name: g for g in r.gates} for n, r in by.items()}
    assert [g.name for g in by["q8"].gates][-2:] == ["max_kld", "max_ppl_ratio"]
    assert gate["q4km"]["max_kld"].value == pytest.approx(0.057) and not gate["q4km"]["max_kld"].passed
    assert gate["q4km"]["max_ppl_ratio"].passed and gate["q4km"]["quality_retention"].passed
    assert not gate["q4-ppl"]["max_ppl_ratio"].passed and gate["q4-ppl"]["max_kld"].passed
    assert by["q8"].passed_gates and by["edge"].passed_gates
    assert not by["q4km"].passed_gates and not by["q4-ppl"].passed_gates
    assert set(sel.frontier) <= {"q8", "edge"}


def test_max_metric_gate_on_an_unmeasured_metric_is_an_error() -> None:
    gates = GatesConfig(max_metrics={"kdl": 0.05})
    with pytest.raises(ValueError, match="'kdl' not measured"):
        select("p", [llm_row("base", 30, 540, 0.0, 1.0, 1.0), llm_row("q8", 10, 145, 0.005, 1.0, 0.96)],
               gates, LLM_CFG)


def test_no_max_metrics_means_only_the_three_default_gates() -> None:
    sel = select("p", [row("base", 10, 90, 600, 1.0), row("a", 3, 20, 300, 0.99)], GATES, CFG)
    assert [g.name for g in sel.candidates[1].gates] == ["quality_retention", "speedup", "footprint_reduction"]


# -- the noise: rounds with raw samples, CIs, ties ------------------------------------------------


def rounds_row(name: str, p50_rounds: list[float], size: float, rss: float = 100.0, cos: float = 1.0,
               spread: float = 0.02, n: int = 60, seed: int = 0) -> CandidateResult:
    """A measured row whose rounds carry raw latency samples around each round's p50 (ms)."""
    import numpy as np

    from edgeopt.results import RoundRecord
    from edgeopt.rounds import combine

    rng = np.random.default_rng(seed)
    parts = []
    for i, p50 in enumerate(p50_rounds):
        lat_s = list(rng.normal(p50, p50 * spread, n) / 1000)
        one = RoundRecord(index=i, started_at="t", load_time_s=1.0, peak_rss_mb=rss, throughput_items_per_s=1.0,
                          samples={"latency_s": lat_s, "throughput_s": lat_s, "items_per_s": [1.0] * n})
        lat = LatencyStats(batch_size=1, iterations=n, p50_ms=p50, p90_ms=p50, p99_ms=p50, mean_ms=p50)
        parts.append(Measurement(candidate=name, threads=2, sequence_length=128, load_time_s=1.0, latency=lat,
                                 throughput=lat, throughput_items_per_s=1.0, peak_rss_mb=rss, size_mb=size,
                                 rounds=[one]))
    q = Quality(metrics={"cosine": cos, "recall@10": 1.0, "mrr": 1.0},
                retention={"cosine": cos, "recall@10": 1.0, "mrr": 1.0})
    return CandidateResult(name=name, recipe="r", parent=None, status="ok", measurement=combine(parts), quality=q)


def test_pooled_rounds_carry_cis_that_contain_the_point() -> None:
    r = rounds_row("a", [10.0, 10.4, 9.8], 10)
    m = r.measurement
    assert m is not None and len(m.rounds) == 3 and m.latency.iterations == 180
    low, high = m.ci["latency_p50_ms"]
    assert low <= m.latency.p50_ms <= high and high > low


def test_speedup_gate_reads_the_conservative_end_and_says_when_it_is_noise() -> None:
    gates = GatesConfig(min_quality_retention=0.95, min_speedup=2.0, min_footprint_reduction=-10)
    base = rounds_row("base", [20.0, 21.0, 19.0], 90, seed=1)
    # About 2.0x on the point, with rounds that disagree by several percent: the CI straddles 2.
    borderline = rounds_row("border", [10.0, 10.9, 9.3], 20, seed=2)
    clear = rounds_row("clear", [5.0, 5.1, 4.9], 20, seed=3)
    sel = select("p", [base, borderline, clear], gates, CFG)
    by = {r.name: r for r in sel.candidates}
    speed = {n: next(g for g in by[n].gates if g.name == "speedup") for n in ("border", "clear")}
    lo, hi = by["border"].ci["speedup"]
    assert lo < 2.0 <= hi
    assert not speed["border"].passed and speed["border"].within_noise
    assert "not cleared (within noise)" in speed["border"].text()
    assert speed["clear"].passed and not speed["clear"].within_noise
    assert sel.pick == "clear"
    assert "border" in undecided(sel, CFG)  # its next rounds could move it across the gate


def test_a_candidate_listed_twice_is_a_tie_not_a_winner() -> None:
    gates = GatesConfig(min_quality_retention=0.95, min_speedup=1.5, min_footprint_reduction=-10)
    base = rounds_row("base", [20.0, 20.5, 19.5], 90, seed=1)
    # Identical settings, so identical size and quality; their timings differ only by noise.
    twin_b = rounds_row("twin-b", [8.0, 8.3, 7.8], 20, seed=4)
    twin_a = rounds_row("twin-a", [8.2, 7.9, 8.1], 20, seed=5)
    sel = select("p", [base, twin_b, twin_a], gates, CFG)
    assert set(sel.frontier) == {"twin-a", "twin-b"}  # neither dominates the other beyond the noise
    assert sorted(sel.tie) == ["twin-a", "twin-b"]
    assert sel.pick == "twin-a"  # the stated rule: equal size, equal quality, then name
    assert "tie" in sel.reason and sel.tie_rule
    assert set(undecided(sel, CFG)) >= {"twin-a", "twin-b"}


def test_clearly_separated_candidates_are_no_tie() -> None:
    gates = GatesConfig(min_quality_retention=0.95, min_speedup=1.5, min_footprint_reduction=-10)
    base = rounds_row("base", [20.0, 20.5, 19.5], 90, seed=1)
    fast = rounds_row("fast", [5.0, 5.1, 4.95], 30, seed=6)
    slower_smaller = rounds_row("slower-smaller", [8.0, 8.1, 7.9], 10, seed=7)
    sel = select("p", [base, fast, slower_smaller], gates, CFG)
    assert sel.pick == "fast" and sel.tie == []
    assert set(sel.frontier) == {"fast", "slower-smaller"}  # each clearly better on one objective
    assert undecided(sel, CFG) == []


def test_noise_floor_makes_a_tiny_separated_gap_a_tie() -> None:
    gates = GatesConfig(min_quality_retention=0.95, min_speedup=1.5, min_footprint_reduction=-10)
    base = rounds_row("base", [20.0, 20.0, 20.0], 90, spread=0.001, seed=1)
    a = rounds_row("a", [8.0, 8.0, 8.0], 20, spread=0.001, seed=8)
    b = rounds_row("b", [8.1, 8.1, 8.1], 20, spread=0.001, seed=9)  # 1.2% slower, CIs separated
    exact = select("p", [base, a, b], gates, CFG.model_copy(update={"noise_floor": 0.0}))
    assert exact.tie == [] and exact.frontier == ["a"]  # no floor: a is faster beyond its CI, b dominated
    sel = select("p", [base, a, b], gates, CFG)  # default floor 3%: within the noise
    assert sorted(sel.tie) == ["a", "b"] and sel.pick == "a"  # equal size and quality: the first name
