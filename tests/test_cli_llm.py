"""The results table shows the columns of the selection's task (causal-lm here), and generic ones without a task."""

from __future__ import annotations

from rich.console import Console

from edgeopt.cli import results_table
from edgeopt.results import CandidateResult, LatencyStats, Measurement, Quality, Selection


def llm_row(name: str, kld: float, extra: dict[str, float]) -> CandidateResult:
    lat = LatencyStats(batch_size=1, iterations=10, p50_ms=8.0, p90_ms=9.0, p99_ms=10.0, mean_ms=8.2)
    m = Measurement(candidate=name, threads=2, sequence_length=128, load_time_s=0.5, latency=lat, throughput=lat,
                    throughput_items_per_s=120.0, peak_rss_mb=180, size_mb=144.8, extra=extra)
    q = Quality(metrics={"ppl": 17.812, "ppl_ratio": 1.004, "kld": kld, "top1": 0.957},
                retention={"top1": 0.957, "ppl": 0.996})
    return CandidateResult(name=name, recipe="gguf-quantize", parent=None, status="ok", measurement=m, quality=q)


def render(selection: Selection) -> str:
    console = Console(width=250, record=True)
    console.print(results_table(selection, champion="gguf-q8_0"))
    return console.export_text()


def test_llm_table_shows_quality_speed_and_roof() -> None:
    rows = [
        llm_row("gguf-q8_0", 4.86e-3, {"prompt_tok_s": 812.0, "ttft_ms": 630.0, "roof_fraction": 0.52}),
        llm_row("ov-int8", 5.1e-3, {"prompt_tok_s": 500.0, "ttft_ms": 1000.0}),  # a runner without a roofline
        CandidateResult(name="gguf-bad", recipe="gguf-quantize", parent=None, status="failed", error="boom"),
    ]
    sel = Selection(pipeline="smollm2", baseline="torch-fp32", objectives=["latency_p50_ms"], pick_rule="r",
                    candidates=rows, frontier=["gguf-q8_0"], pick="gguf-q8_0", reason="x", task="causal-lm")
    text = render(sel)
    for header in ("PPL", "KLD", "top-1", "prompt tok/s", "decode tok/s", "TTFT ms", "roof %"):
        assert header in text
    assert "cosine" not in text
    q8 = next(line for line in text.splitlines() if "gguf-q8_0" in line)
    for cell in ("144.8", "17.812", "4.86e-03", "0.957", "812", "120.0", "630", "52", "champion"):
        assert cell in q8
    assert "boom" in next(line for line in text.splitlines() if "gguf-bad" in line)


def test_a_task_without_columns_gets_every_measured_metric_and_no_key_error() -> None:
    """A new task's rows carry metrics no built-in table knows (the old table indexed `cosine` and raised)."""
    row = llm_row("int8", 0.01, {}).model_copy(update={"quality": Quality(
        metrics={"top1_agreement": 0.991, "softmax_kld": 0.0123}, retention={"top1_agreement": 0.991})})
    sel = Selection(pipeline="effnet", baseline="torch-fp32", objectives=["latency_p50_ms"], pick_rule="r",
                    candidates=[row], frontier=[], pick=None, reason="x")
    text = render(sel)
    line = next(ln for ln in text.splitlines() if ln.lstrip("│ ").startswith("int8"))
    for header in ("p50 ms", "size MB", "top1_agreement", "softmax_kld"):
        assert header in text
    for cell in ("8.00", "144.8", "0.991", "0.0123"):
        assert cell in line
