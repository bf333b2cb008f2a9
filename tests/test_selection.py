"""Gates, Pareto frontier and the pick rule on hand-built result rows."""

from __future__ import annotations

import itertools

import pytest

from edgeopt.config import GatesConfig, PickRule, SelectionConfig
from edgeopt.results import CandidateResult, LatencyStats, Measurement, Quality
from edgeopt.selection import dominates, pareto_front, select


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
