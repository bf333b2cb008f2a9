"""The report's content, from a selection made by the real selection code (fast, no servers)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from edgeopt.config import GatesConfig, SelectionConfig
from edgeopt.report import ReportInputs, plot_rows, render_html
from edgeopt.results import CandidateRecord, CandidateResult, LatencyStats, Measurement, Promotion, Quality
from edgeopt.selection import select


def _row(name: str, parent: str | None, p50: float, size: float, cosine: float, status: str = "ok") -> CandidateResult:
    if status != "ok":
        return CandidateResult(name=name, recipe="ort-static-int8", parent=parent, status="failed",
                               error="recipe ort-static-int8 cannot start from openvino-ir <ov-fp32>")
    lat = LatencyStats(batch_size=1, iterations=30, p50_ms=p50, p90_ms=p50 * 1.1, p99_ms=p50 * 1.3, mean_ms=p50)
    m = Measurement(candidate=name, threads=2, sequence_length=128, load_time_s=0.4, latency=lat, throughput=lat,
                    throughput_items_per_s=1000 / p50, peak_rss_mb=size * 4, size_mb=size)
    metrics = {"cosine": cosine, "recall@10": 0.98 * cosine, "mrr": 0.76 * cosine}
    base = {"cosine": 1.0, "recall@10": 0.98, "mrr": 0.76}
    q = Quality(metrics=metrics, retention={k: v / base[k] for k, v in metrics.items()})
    return CandidateResult(name=name, recipe=f"recipe-of-{name}", parent=parent, status="ok", measurement=m,
                           quality=q, framework="onnxruntime", precision="int8" if "int8" in name else "fp32",
                           mlflow_run_id=f"run-{name}")


ROWS = [
    _row("torch-fp32", None, 20.0, 90.0, 1.0),
    _row("onnx-fp32", None, 9.0, 90.0, 1.0),
    _row("ort-int8", "onnx-fp32", 4.0, 23.0, 0.995),  # fastest and small: the pick
    _row("ort-int4", "onnx-fp32", 3.0, 12.0, 0.97),  # faster, smaller, worse: on the frontier too
    _row("slow-int8", "onnx-fp32", 15.0, 23.0, 0.99),  # fails the speed-up gate
    _row("broken", "ov-fp32", 0, 0, 0, status="failed"),
]


def _inputs(promoted: bool = True) -> ReportInputs:
    selection = select("minilm", ROWS, GatesConfig(), SelectionConfig(baseline="torch-fp32",
        quality_metrics=["cosine", "recall@10", "mrr"]))
    assert selection.pick == "ort-int8" and set(selection.frontier) == {"ort-int8", "ort-int4"}
    promotion = Promotion(pipeline="minilm", promoted=promoted, model_name="minilm-edge", alias="champion",
                          version="7" if promoted else None, candidate="ort-int8" if promoted else None,
                          reason=selection.reason if promoted else "registered version 7 failed its load check")
    record = CandidateRecord(name="ort-int8", recipe="recipe-of-ort-int8", framework="onnxruntime",
                             parent="onnx-fp32", options={"per_channel": True}, format="onnx", runtime="onnxruntime",
                             precision="int8", model_file="model.onnx", cache_key="k123", base_sha256="b" * 64,
                             build_seconds=3.0, tool_versions={"onnxruntime": "1.31.1"})
    return ReportInputs(selection=selection, promotion=promotion, records={"ort-int8": record},
                        base={"source": '{"kind": "bundled"}', "sha256": "b" * 64},
                        lineage={"edgeopt.dataset_digest": "d" * 64, "edgeopt.git_commit": "abc"},
                        min_quality_retention=0.95, min_speedup=2.0, mlflow_run_id="parent-run",
                        run_link="http://127.0.0.1:5000/#/experiments/1/runs/parent-run")


class _Ids(HTMLParser):
    """Element ids and the classes of table rows, by candidate."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.rows: dict[str, set[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "tr" and a.get("data-candidate"):
            self.rows[str(a["data-candidate"])] = set(str(a.get("class") or "").split())


def test_report_marks_frontier_and_champion_and_lists_every_candidate() -> None:
    html = render_html(_inputs())
    parsed = _Ids()
    parsed.feed(html)
    # The chart: frontier, other gated/failed points and the champion star are separate SVG groups.
    assert {"pareto-chart", "frontier", "frontier-line", "failed-gate", "champion", "candidates",
            "model-card"} <= parsed.ids
    assert set(parsed.rows) == {r.name for r in ROWS}
    assert parsed.rows["ort-int8"] == {"ok", "frontier", "champion"}
    assert parsed.rows["ort-int4"] == {"ok", "frontier"}
    assert parsed.rows["broken"] == {"failed"}
    assert "cannot start from openvino-ir &lt;ov-fp32&gt;" in html  # errors are shown, escaped
    chart = html[html.index("<svg"):html.index("</svg>")]
    for r in ROWS[:-1]:
        assert f">{r.name}<" in chart  # every measured point is labelled; the failed one is not plotted
    assert ">broken<" not in chart
    assert "http://127.0.0.1:5000/#/experiments/1/runs/parent-run" in html


def test_model_card_has_base_recipe_metrics_gates_and_lineage() -> None:
    html = render_html(_inputs())
    card = html[html.index('id="model-card"'):]
    assert "Model card: ort-int8" in card and "minilm-edge@champion = version 7" in card
    # The recipe chain from the base model, with the options of the step that made it.
    chain = re.findall(r"<li><b>([^<]+)</b>", card)
    assert chain == ["onnx-fp32", "ort-int8"]
    assert "per_channel" in card
    gates = re.findall(r'<tr class="(pass|fail)"><td>([a-z_]+)</td>', card)
    assert gates == [("pass", "quality_retention"), ("pass", "speedup"), ("pass", "footprint_reduction")]
    for text in ("4.00 / 4.40 / 5.20", "dataset_digest", "cache key", "k123", "version onnxruntime", "run-ort-int8",
                 "b" * 64):
        assert text in card, text


def test_an_unpromoted_pick_is_described_as_such() -> None:
    html = render_html(_inputs(promoted=False))
    parsed = _Ids()
    parsed.feed(html)
    assert "champion" not in parsed.rows["ort-int8"]
    assert "pick, not promoted: registered version 7 failed its load check" in html
    assert "pick (not promoted)" in html  # the chart's label


def test_plot_rows_are_flat_for_dvc() -> None:
    rows = plot_rows(_inputs().selection)
    names = [r.name for r in ROWS[:-1]]
    assert [r["candidate"] for r in rows["latency"]] == names
    assert all(isinstance(v, str | float | int | bool) for r in rows["quality"] for v in r.values())
    q = {r["candidate"]: r for r in rows["quality"]}
    assert q["ort-int8"]["frontier"] is True and q["slow-int8"]["frontier"] is False
    assert q["ort-int8"]["quality_retention"] == 0.995
