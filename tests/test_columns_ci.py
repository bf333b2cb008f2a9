"""The candidate table shows the noise: intervals in the cells, rounds, a within-noise gate, a tie, loaded
rounds; and the same table from rows without any of these (a selection.json written before rounds) is unchanged."""

from __future__ import annotations

import pytest
from rich.console import Console

from edgeopt import columns as col
from edgeopt.cli import print_results, results_table
from edgeopt.results import (
    CandidateResult,
    GateResult,
    LatencyStats,
    Measurement,
    Quality,
    RoundRecord,
    Selection,
)

PICK_RULE = ("lowest latency_p50_ms on the Pareto frontier (latency_p50_ms, size_mb) among candidates passing "
             "every gate with quality retention >= 0.99; if none reaches that retention, the frontier point with "
             "the highest retention")
TIE_RULE = "smaller size on disk, then higher quality retention, then name"


def _round(i: int, under_load: bool = False) -> RoundRecord:
    return RoundRecord(index=i, started_at=f"2025-01-01T00:00:0{i}Z", load_time_s=0.4, peak_rss_mb=300.0,
                       throughput_items_per_s=250.0, samples={"latency_s": [0.004, 0.0041, 0.0039]},
                       load={"cpu_other": 0.7 if under_load else 0.05, "run_queue": 3.0 if under_load else 0.0},
                       under_load=under_load)


def row(name: str, p50: float, size: float, cosine: float, speedup: float | None, *, noise: bool = True,
        rounds: int = 3, loaded: int = 0, gates: list[GateResult] | None = None) -> CandidateResult:
    lat = LatencyStats(batch_size=1, iterations=60, p50_ms=p50, p90_ms=p50 * 1.1, p99_ms=p50 * 1.3, mean_ms=p50)
    m = Measurement(
        candidate=name, threads=2, sequence_length=128, load_time_s=0.4, latency=lat, throughput=lat,
        throughput_items_per_s=1000 / p50, peak_rss_mb=size * 4, size_mb=size,
        rounds=[_round(i, under_load=i < loaded) for i in range(rounds)] if noise else [],
        ci={"latency_p50_ms": (p50 * 0.98, p50 * 1.02), "latency_p99_ms": (p50 * 1.2, p50 * 1.45),
            "throughput_items_per_s": (1000 / p50 * 0.97, 1000 / p50 * 1.03),
            "peak_rss_mb": (size * 4 - 1, size * 4 + 1)} if noise else {},
    )
    q = Quality(metrics={"cosine": cosine}, retention={"cosine": cosine},
                ci={"cosine": (cosine - 0.001, min(1.0, cosine + 0.001))} if noise else {},
                retention_ci={"cosine": (cosine - 0.001, min(1.0, cosine + 0.001))} if noise else {})
    ci = {"speedup": (speedup * 0.965, speedup * 1.04), "quality_retention": (cosine - 0.001, cosine)} \
        if noise and speedup is not None else {}
    gates = gates if gates is not None else [GateResult(name="speedup", value=speedup or 0, threshold=2.0,
                                                        passed=(speedup or 0) >= 2.0)]
    return CandidateResult(name=name, recipe=f"recipe-{name}", parent=None, status="ok", measurement=m, quality=q,
                           speedup=speedup, quality_retention=cosine, gates=gates, ci=ci)


def noisy_selection() -> Selection:
    border = GateResult(name="speedup", value=2.0, threshold=2.0, passed=False, ci=(1.93, 2.08),
                        within_noise=True)
    rows = [
        row("torch-fp32", 20.0, 90.0, 1.0, 1.0, gates=[]),
        row("ort-opt-fp32", 10.0, 90.0, 1.0, 2.0, gates=[border]),
        row("ort-int8", 4.0, 23.0, 0.995, 5.0, loaded=1),
        row("ov-int8", 4.05, 24.0, 0.996, 4.94),
        CandidateResult(name="broken", recipe="ort-static-int8", parent="onnx-fp32", status="failed",
                        stage="build", error="calibration [data] missing"),
    ]
    return Selection(pipeline="minilm", baseline="torch-fp32", objectives=["latency_p50_ms", "size_mb"],
                     pick_rule=PICK_RULE, candidates=rows, frontier=["ort-int8", "ov-int8"], pick="ort-int8",
                     reason="ort-int8: tie within the noise", tie=["ort-int8", "ov-int8"], tie_rule=TIE_RULE)


def plain_selection() -> Selection:
    """As an older selection.json reads: no rounds, no intervals, no tie."""
    rows = [row("torch-fp32", 20.0, 90.0, 1.0, 1.0, noise=False, gates=[]),
            row("ort-int8", 4.0, 23.0, 0.995, 5.0, noise=False),
            row("slow", 15.0, 23.0, 0.99, 1.33, noise=False)]
    return Selection(pipeline="minilm", baseline="torch-fp32", objectives=["latency_p50_ms", "size_mb"],
                     pick_rule=PICK_RULE, candidates=rows, frontier=["ort-int8"], pick="ort-int8", reason="x")


def render(selection: Selection, width: int = 250) -> str:
    console = Console(width=width, record=True)
    console.print(results_table(selection, champion=selection.pick))
    return console.export_text()


def line_of(text: str, name: str) -> str:
    return next(ln for ln in text.splitlines() if ln.lstrip("│ ").startswith(name + " "))


def test_cells_show_intervals_rounds_and_noise() -> None:
    text = render(noisy_selection())
    for header in ("speed-up", "rounds", "noise", "gates", "pick"):
        assert header in text
    int8 = line_of(text, "ort-int8")
    assert "5.00x [4.83, 5.20]" in int8  # the speed-up with its interval
    assert "│ ±2.0% │" in int8  # the latency p50 noise
    assert "│   4.00 │" in int8  # the task's cells stay plain in the console (their intervals: the report)
    assert "│      3 │" in int8  # rounds
    assert "yes (tie)" in int8
    assert "pass" in int8
    other = line_of(text, "ov-int8")
    assert "4.94x [4.77, 5.14]" in other and "yes" not in other  # in the tie, not the pick


def test_a_gate_inside_the_noise_is_marked() -> None:
    text = render(noisy_selection())
    opt = line_of(text, "ort-opt-fp32")
    assert "speedup (noise)" in opt
    assert "2.00x [1.93, 2.08]" in opt
    assert "yes" not in opt  # not the pick


def test_warnings_name_noisy_gates_loaded_rounds_and_the_tie() -> None:
    warnings = col.table_warnings(noisy_selection())
    assert warnings == [
        "ort-opt-fp32: speedup 2.00 [1.93, 2.08]: gate >= 2 not cleared (within noise)",
        "ort-int8: 1 of 3 rounds ran under load: timings may be inflated",
        f"tie within the noise on latency_p50_ms: ort-int8, ov-int8; broken by {TIE_RULE}: ort-int8",
    ]


def test_warnings_are_printed_under_the_table(monkeypatch) -> None:
    from edgeopt import cli

    console = Console(width=250, record=True)
    monkeypatch.setattr(cli, "console", console)
    print_results(noisy_selection(), champion=None)
    text = console.export_text()
    table_end = text.rindex("└")
    assert text.index("warning: ort-opt-fp32: speedup 2.00 [1.93, 2.08]") > table_end
    assert "warning: ort-int8: 1 of 3 rounds ran under load" in text
    assert "warning: tie within the noise on latency_p50_ms: ort-int8, ov-int8" in text


def test_a_failed_candidate_keeps_its_error_and_dashes() -> None:
    text = render(noisy_selection())
    broken = line_of(text, "broken")
    assert "calibration [data] missing" in broken  # escaped: shown as text, not swallowed as markup
    assert "failed" in broken and "-" in broken


def test_rows_without_intervals_render_as_before() -> None:
    sel = plain_selection()
    text = render(sel)
    int8 = line_of(text, "ort-int8")
    assert "5.00x" in int8 and "[" not in int8 and "±" not in int8
    assert "4.00" in int8 and "0.995" in int8
    assert "yes" in int8 and "yes (tie)" not in int8
    slow = line_of(text, "slow")
    assert "speedup" in slow and "(noise)" not in slow
    assert col.table_warnings(sel) == []
    # The cells one by one: nothing recorded is "-", never an exception.
    base = sel.candidates[0]
    assert col.rounds_cell(base) == "-" and col.noise_cell(base) == "-" and col.gates_cell(base) == "-"


def test_cells_without_a_measurement_or_a_speedup() -> None:
    failed = CandidateResult(name="f", recipe="r", parent=None, status="failed", error="boom")
    assert col.speedup_cell(failed) == "-"
    assert col.rounds_cell(failed) == "-"
    assert col.noise_cell(failed) == "-"
    assert col.measured(".2f", col.p50_ms)(failed) == "-"
    assert col.LATENCY[0].interval(failed) is None
    sel = Selection(pipeline="p", baseline="b", objectives=["latency_p50_ms"], pick_rule="custom rule",
                    candidates=[failed], frontier=[], pick=None, reason="nothing measured", tie=["f", "g"])
    assert col.pick_cell(failed, sel) == ""
    assert col.table_warnings(sel) == []  # a tie without a pick is no tie


def test_a_tie_without_a_recorded_rule_or_objective_still_reads() -> None:
    sel = noisy_selection().model_copy(update={"pick_rule": "my own rule", "tie_rule": ""})
    assert col.table_warnings(sel)[-1] == "tie within the noise: ort-int8, ov-int8; broken by the tie rule: ort-int8"


def test_generic_cells_know_their_intervals() -> None:
    r = noisy_selection().candidates[2]
    p50, p99, items = col.LATENCY
    size, rss = col.FOOTPRINT
    assert p50.interval(r) == pytest.approx((3.92, 4.08))
    assert p50.cell(r) == "4.00" and p50.with_interval(r) == "4.00 [3.92, 4.08]"
    assert p99.with_interval(r) == "5.20 [4.80, 5.80]"
    assert items.with_interval(r) == "250.0 [242.5, 257.5]"
    assert size.interval(r) is None and size.with_interval(r) == "23.0"  # exact: no interval
    assert rss.with_interval(r) == "92 [91, 93]"
    cosine = col.generic_columns([r])[-1]
    assert cosine.header == "cosine" and cosine.with_interval(r) == "0.995 [0.994, 0.996]"
    assert col.Column("R ret", col.measured(".3f", col.retention("cosine"))).with_interval(r) == \
        "0.995 [0.994, 0.996]"
    # A cell function of the task's own (not col.measured) has no interval and shows as it is.
    custom = col.Column("mine", lambda row: "x")
    assert custom.interval(r) is None and custom.with_interval(r) == "x"
    assert col.noise_cell(r) == "±2.0%" and col.latency_noise(r) == pytest.approx(0.02)
    assert col.percent(0.123) == "±12.3%" and col.percent(0.00043) == "±0.043%"


def test_task_columns_gain_intervals_without_naming_them() -> None:
    """A task's own columns (causal-lm's, declared with col.measured/col.extra) know their values' intervals."""
    r = row("gguf-q8_0", 8.0, 144.8, 0.957, 2.5)
    m = r.measurement
    assert m is not None
    r = r.model_copy(update={"measurement": m.model_copy(update={
        "extra": {"prompt_tok_s": 812.0, "roof_fraction": 0.52},
        "ci": {**m.ci, "prompt_tok_s": (790.0, 830.0)}})})
    sel = noisy_selection().model_copy(update={"candidates": [r], "task": "causal-lm", "tie": [], "pick": None})
    from edgeopt.workloads.base import table_columns

    by_header = {c.header: c for c in table_columns(sel)}
    assert by_header["prompt tok/s"].with_interval(r) == "812 [790, 830]"
    assert by_header["decode tok/s"].with_interval(r) == "125.0 [121.2, 128.8]"  # items/s: decode rate
    assert by_header["roof %"].with_interval(r) == "52"  # no interval recorded for the roof
    line = line_of(render(sel), "gguf-q8_0")
    assert "812" in line and "2.50x [2.41, 2.60]" in line
    assert col.extra("prompt_tok_s").interval(r) == (790.0, 830.0)
    assert col.extra("roof_fraction", 100.0).interval(r) is None



def test_the_report_shows_the_same_intervals_rounds_tie_and_gate_intervals() -> None:
    from edgeopt.report import ReportInputs, candidate_table, model_card, noise_warnings

    sel = noisy_selection()
    sel = sel.model_copy(update={"candidates": [
        r.model_copy(update={"gates": [GateResult(name="speedup", value=5.0, threshold=2.0, passed=True,
                                                  ci=(4.83, 5.2))]}) if r.name == "ort-int8" else r
        for r in sel.candidates]})
    inputs = ReportInputs(selection=sel)
    table = candidate_table(inputs)
    for header in ("speed-up", "rounds", "noise", "pick"):
        assert f"<th>{header}</th>" in table
    int8 = table[table.index('data-candidate="ort-int8"'):].split("</tr>")[0]
    for cell in ("5.00x [4.83, 5.20]", "<td>3</td>", "±2.0%", "yes (tie)", "4.00 [3.92, 4.08]",
                 "0.9950 [0.9940, 0.9950]", "<td>23.0</td>"):
        assert cell in int8, cell
    opt = table[table.index('data-candidate="ort-opt-fp32"'):].split("</tr>")[0]
    assert "fail: speedup (noise)" in opt
    warnings = noise_warnings(inputs)
    assert "ort-opt-fp32: speedup 2.00 [1.93, 2.08]: gate &gt;= 2 not cleared (within noise)" in warnings
    assert "tie within the noise on latency_p50_ms" in warnings
    card = model_card(inputs)
    assert '<tr class="pass"><td>speedup</td><td>5.0000</td><td>[4.8300, 5.2000]</td>' in card
    assert "3, 1 under load" in card and "5.00x [4.83, 5.20]" in card
    # Without intervals or rounds: no warnings list, plain cells, no interval rows in the card.
    plain = ReportInputs(selection=plain_selection())
    assert noise_warnings(plain) == ""
    assert "[" not in candidate_table(plain)
    assert "interval (ms)" not in model_card(plain) and "<dt>rounds</dt>" not in model_card(plain)
