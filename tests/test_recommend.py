"""The hardware-aware recommendation on hand-built rows and cpuinfo snippets (pure logic)."""

from __future__ import annotations

from edgeopt.config import GatesConfig, SelectionConfig
from edgeopt.recommend import (
    ObjectiveVerdict,
    Recommendation,
    build_profile,
    framework_family,
    machine_profile,
    parse_cpuinfo,
    recommend,
    recommend_selection,
    tree_prediction,
)
from edgeopt.results import CandidateResult, LatencyStats, Measurement, Quality
from edgeopt.selection import select

OBJECTIVES = ["latency_p50_ms", "size_mb", "peak_rss_mb", "quality_loss"]
GATES = GatesConfig(min_quality_retention=0.95, min_speedup=2.0, min_footprint_reduction=0.5)

INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
AMD_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer\t: 0x41
CPU architecture: 8
"""


def row(name: str, framework: str, p50: float, size: float, rss: float, cos: float,
        status: str = "ok", error: str | None = None) -> CandidateResult:
    if status != "ok":
        return CandidateResult(name=name, recipe="r", parent=None, status=status, framework=framework,  # type: ignore[arg-type]
                               error=error or "boom")
    lat = LatencyStats(batch_size=1, iterations=10, p50_ms=p50, p90_ms=p50, p99_ms=p50, mean_ms=p50)
    m = Measurement(candidate=name, threads=2, sequence_length=128, load_time_s=1.0, latency=lat, throughput=lat,
                    throughput_items_per_s=1000 / p50, peak_rss_mb=rss, size_mb=size)
    q = Quality(metrics={"cosine": cos, "recall@10": 1.0, "mrr": 1.0},
                retention={"cosine": cos, "recall@10": 1.0, "mrr": 1.0})
    return CandidateResult(name=name, recipe="r", parent=None, status="ok", framework=framework, measurement=m,
                           quality=q)


def selected(rows: list[CandidateResult]) -> list[CandidateResult]:
    """Rows as the pipeline hands them over: gates and retention filled by selection."""
    return select("p", rows, GATES, SelectionConfig(baseline="base",
        quality_metrics=["cosine", "recall@10", "mrr"])).candidates


ROWS = [
    row("base", "torch", 10, 90, 600, 1.0),
    row("onnx-fp32", "onnx", 8, 90, 500, 1.0),                 # ran, fails speed-up and footprint
    row("ort-int8", "onnxruntime", 3.0, 23, 300, 0.991),       # gated
    row("ov-int8", "nncf", 2.5, 25, 350, 0.985),               # gated, fastest
    row("mlx-int4", "mlx", 900, 14, 250, 0.96),                # ran, too slow for the gates; smallest
    row("olive-int8", "olive", 4.0, 22, 280, 0.993),           # gated, smallest gated, lowest RSS gated
    row("mlx-int8", "mlx", 1, 1, 1, 1, status="skipped", error="needs Python module(s) mlx, not installed"),
    row("broken", "onnxruntime", 1, 1, 1, 1, status="failed"),
]


def by_objective(rec: Recommendation) -> dict[str, ObjectiveVerdict]:
    return {v.objective: v for v in rec.objectives}


def test_parse_cpuinfo_x86_and_arm() -> None:
    intel = parse_cpuinfo(INTEL_CPUINFO)
    assert intel["cpu_vendor"] == "Intel" and intel["cpu_model"].startswith("Intel(R) Xeon")
    assert intel["isa"]["amx"] and intel["isa"]["avx512_vnni"] and not intel["isa"]["neon"]
    amd = parse_cpuinfo(AMD_CPUINFO)
    assert amd["cpu_vendor"] == "AMD" and amd["isa"]["avx512_bf16"] and not amd["isa"]["amx"]
    arm = parse_cpuinfo(ARM_CPUINFO)
    assert arm["cpu_vendor"] == "ARM" and arm["isa"]["neon"] and not arm["isa"]["avx2"]


def test_tree_branches() -> None:
    assert tree_prediction(build_profile(INTEL_CPUINFO, "Linux", "x86_64", 8, "none"))[0] == "openvino"
    assert tree_prediction(build_profile("", "Darwin", "arm64", 8, "apple-gpu"))[0] == "mlx"
    amd = build_profile(AMD_CPUINFO, "Linux", "x86_64", 2, "none")
    family, rule = tree_prediction(amd)
    assert family == "llama.cpp" and "AMD" in rule
    assert tree_prediction({**amd, "deployment": "enterprise"})[0] == "olive"
    assert tree_prediction(build_profile(ARM_CPUINFO, "Linux", "aarch64", 4, "none"))[0] == "llama.cpp"


def test_framework_families() -> None:
    assert framework_family("nncf") == framework_family("openvino") == "openvino"
    assert framework_family("onnx") == framework_family("onnxruntime") == "onnxruntime"
    assert framework_family("torch") == "pytorch" and framework_family(None) == "unknown"


def test_intel_profile_agreement_per_objective() -> None:
    profile = build_profile(INTEL_CPUINFO, "Linux", "x86_64", 8, "none")
    rec = recommend(selected(ROWS), OBJECTIVES, profile, baseline="base")
    v = by_objective(rec)
    assert rec.tree_prediction == "openvino"
    # Latency: OpenVINO's NNCF INT8 is the fastest gated candidate -> agrees with Intel -> OpenVINO.
    lat = v["latency_p50_ms"]
    assert lat.basis == "gated" and lat.best_gated is not None
    assert (lat.best_gated.candidate, lat.best_gated.framework, lat.verdict) == ("ov-int8", "openvino", "agree")
    # Size: MLX INT4 is smallest of all that ran but fails the speed gate; among gated, Olive wins.
    size = v["size_mb"]
    assert size.best_ok is not None and size.best_ok.candidate == "mlx-int4"
    assert size.best_gated is not None and size.best_gated.candidate == "olive-int8"
    assert size.verdict == "disagree"
    assert size.by_framework["openvino"].candidate == "ov-int8"  # the tree's best, for the report
    # Quality loss: baseline excluded, so an exact FP32 export wins among all, Olive among gated.
    q = v["quality_loss"]
    assert q.best_ok is not None and q.best_ok.candidate == "onnx-fp32"
    assert q.best_gated is not None and q.best_gated.framework == "olive"
    assert "base" not in {w.candidate for w in q.by_framework.values()}
    assert rec.skipped == {"mlx-int8": "needs Python module(s) mlx, not installed"}
    assert set(rec.failed) == {"broken"}
    assert "Intel CPU -> OpenVINO" in rec.text and "mlx-int8 (needs Python module(s) mlx" in rec.text
    assert "latency_p50_ms: openvino won (ov-int8" in rec.text


def test_untested_prediction_and_no_gated_basis() -> None:
    amd = build_profile(AMD_CPUINFO, "Linux", "x86_64", 2, "none")
    rec = recommend(selected(ROWS), OBJECTIVES, amd, baseline="base")
    # No llama.cpp candidate in an embedding run: the tree cannot be checked, not "disagree".
    assert {v.verdict for v in rec.objectives} == {"untested"}
    assert "llama.cpp had no measured candidate" in rec.text
    assert rec.text.startswith("Machine: AMD EPYC 9654 (x86_64, Linux; avx2, avx512f, avx512_vnni, avx512_bf16)")
    slow = [row("base", "torch", 10, 90, 600, 1.0), row("mlx-fp32", "mlx", 20, 90, 500, 1.0),
            row("ort-fp32", "onnxruntime", 8, 90, 500, 1.0)]
    apple = build_profile("", "Darwin", "arm64", 8, "apple-gpu")
    lat = by_objective(recommend(selected(slow), OBJECTIVES, apple, baseline="base"))["latency_p50_ms"]
    assert lat.basis == "ok" and lat.best_gated is None  # nothing passed the gates
    assert lat.best_ok is not None and lat.best_ok.candidate == "ort-fp32" and lat.verdict == "disagree"


def test_no_measured_rows_is_no_data() -> None:
    rows = [row("base", "torch", 10, 90, 600, 1.0), row("x", "mlx", 1, 1, 1, 1, status="skipped", error="nope")]
    rec = recommend(selected(rows), OBJECTIVES, build_profile("", "Linux", "x86_64", 2, "none"), baseline="base")
    assert [v.verdict for v in rec.objectives] == ["no-data"] * len(OBJECTIVES)
    assert rec.skipped == {"x": "nope"}
    # The record round-trips as JSON (it is stored with the run).
    assert type(rec).model_validate_json(rec.model_dump_json()) == rec


def test_machine_profile_reads_this_machine() -> None:
    profile = machine_profile()
    assert set(profile) >= {"cpu_vendor", "cpu_model", "isa", "os", "machine", "cores", "accelerator"}
    assert set(profile["isa"]) == {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx", "neon"}
    assert all(isinstance(v, bool) for v in profile["isa"].values())


def test_recommend_selection_uses_the_selection_settings() -> None:
    sel = select("p", ROWS, GATES, SelectionConfig(baseline="base",
        quality_metrics=["cosine", "recall@10", "mrr"], objectives=["size_mb"]))
    intel = build_profile(INTEL_CPUINFO, "Linux", "x86_64", 8, "none")
    rec = recommend_selection(sel, intel)
    assert [v.objective for v in rec.objectives] == ["size_mb"]
    assert rec == recommend(sel.candidates, ["size_mb"], intel, baseline="base")
    assert recommend_selection(sel).profile == machine_profile()  # defaults to this machine
