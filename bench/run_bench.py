"""Benchmarks of the performance goals, measured side by side in one run on this machine.

Usage: .venv/bin/python bench/run_bench.py [--params params.yaml] [--repeats 3] [--skip-llm]

Everything runs on a fresh workspace under bench/results/tmp/ (its own MLflow store), so the
project's outputs and registry are not touched. Results: bench/results/<machine>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeopt.environment import quiet_offline_defaults  # noqa: E402

quiet_offline_defaults()


# -- machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from edgeopt.lineage import library_versions
    from edgeopt.recipes import cpu_flags

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    interesting = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    return {
        "cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
        "isa": [f for f in interesting if f in cpu_flags()], "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "versions": library_versions(),
    }


def machine_slug(m: dict[str, Any]) -> str:
    cpu = re.sub(r"[^a-z0-9]+", "-", m["cpu"].lower()).strip("-")[:40]
    return f"{cpu}-{m['cores']}c"


# -- helpers -------------------------------------------------------------------------------


def bench_params(tmp: Path, pipelines: list[str]) -> Path:
    """The shipped params.yaml with outputs and MLflow under tmp; benchmark settings unchanged."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["output_dir"] = str(tmp / "outputs")
    raw["tracking"] = {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_root": str(tmp / "mlruns"),
                       "experiment": "bench"}
    raw["pipelines"] = {k: v for k, v in raw["pipelines"].items() if k in pipelines}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def row(rid: int, what: str, measured: float | None, target: str, met: bool | None, detail: str) -> dict:
    return {"row": rid, "what": what, "measured": measured, "target": target, "met": met, "detail": detail}


def ctx_for(params_path: Path, namespace: str) -> Any:
    from edgeopt.config import load_params
    from edgeopt.pipeline import PipelineContext

    return PipelineContext(load_params(params_path), namespace, params_path.parent)


def remeasure(ctx: Any, names: list[str], repeats: int) -> dict[str, list[Any]]:
    """Measure candidates interleaved (a, b, a, b, ...) so drift hits both alike."""
    from edgeopt.measure import measure_in_subprocess

    out: dict[str, list[Any]] = {n: [] for n in names}
    inputs = ctx.ws.inputs
    for i in range(repeats):
        for n in names:
            m = measure_in_subprocess(ctx.cfg.task, ctx.ws.candidate_dir(n), inputs, ctx.cfg.benchmark,
                                      ctx.ws.root / "bench-remeasure" / f"{n}-{i}")
            out[n].append(m)
    return out


def median_p50(ms: list[Any]) -> float:
    return statistics.median(m.latency.p50_ms for m in ms)


# -- rows ----------------------------------------------------------------------------------


def rows_orchestration(params_path: Path, pipelines: list[str]) -> tuple[list[dict], list[Any]]:
    """Row 6: wall time vs the stages' own compute. Row 7: a cached re-run, in-process and CLI."""
    from edgeopt import stageclock
    from flows.optimize import optimize

    stageclock.reset()
    t0 = time.perf_counter()
    outcomes = optimize(str(params_path), pipelines)
    wall = time.perf_counter() - t0
    spent = stageclock.spent()
    compute = sum(spent.values())
    overhead = (wall - compute) / compute
    r6 = row(6, "orchestration + tracking overhead: (pipeline wall - stages' own compute) / compute",
             overhead, "<= 5%", overhead <= 0.05,
             f"wall {wall:.1f} s, compute {compute:.1f} s ("
             + ", ".join(f"{k} {v:.1f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])) + ")")

    t0 = time.perf_counter()
    optimize(str(params_path), pipelines, promote=False)
    rerun_inproc = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "edgeopt"), "run", "--params", str(params_path), "--no-promote"],
                   check=True, capture_output=True, cwd=params_path.parent)
    rerun_cli = time.perf_counter() - t0
    r7 = row(7, "cached re-run with nothing changed (new `edgeopt run` process)", rerun_cli, "<= 15 s",
             rerun_cli <= 15, f"CLI process {rerun_cli:.1f} s (starts Python, imports, Prefect's temporary "
             f"server); the same flow re-run inside a warm process {rerun_inproc:.1f} s")
    return [r6, r7], outcomes


def row_encoder_speedup(params_path: Path, outcome: Any, repeats: int) -> tuple[dict, dict | None]:
    """Row 1: champion vs PyTorch FP32 eager, re-measured side by side. Row 5 (encoder part)."""
    sel = outcome.selection
    ctx = ctx_for(params_path, outcome.namespace)
    base = sel.baseline
    if sel.pick is None:
        return row(1, "encoder champion vs PyTorch FP32 eager", None, ">= 4x", False, "no champion picked"), None
    ms = remeasure(ctx, [sel.pick, base], repeats)
    ratio = median_p50(ms[base]) / median_p50(ms[sel.pick])
    pick = next(r for r in sel.candidates if r.name == sel.pick)
    cos, r10 = pick.quality.metrics["cosine"], pick.quality.retention["recall@10"]
    met = ratio >= 4 and cos >= 0.99 and r10 >= 0.99
    b = ctx.cfg.benchmark
    r1 = row(1, f"encoder champion ({sel.pick}) latency vs PyTorch FP32 eager (batch {b.batch_size}, "
                f"seq {b.sequence_length}, {b.threads} threads)", ratio, ">= 4x at cosine >= 0.99, R@10 ret >= 0.99",
             met, f"p50 {median_p50(ms[sel.pick]):.2f} ms vs {median_p50(ms[base]):.2f} ms (median of {repeats} "
                  f"interleaved runs); cosine {cos:.4f}, R@10 retention {r10:.3f}")
    size_c = ms[sel.pick][0].size_mb
    size_b = ms[base][0].size_mb
    red = 1 - size_c / size_b
    r5 = row(5, f"encoder champion size vs base ({sel.pick} vs {base})", red, ">= 70% smaller", red >= 0.70,
             f"{size_c:.1f} MB vs {size_b:.1f} MB")
    return r1, r5


def row_olive(outcome: Any) -> dict:
    """Row 2: champion vs the best of Olive's own optimize workflow, same harness, same gates."""
    sel = outcome.selection
    olive = [r for r in sel.candidates if r.recipe == "olive-optimize" and r.status == "ok"]
    if not olive or sel.pick is None:
        why = "no olive-optimize candidate measured" if not olive else "no champion"
        return row(2, "encoder champion vs Olive's own optimize workflow", None, "<= 0.8x latency", None, why)
    o = olive[0]
    pick = next(r for r in sel.candidates if r.name == sel.pick)
    ratio = pick.measurement.latency.p50_ms / o.measurement.latency.p50_ms
    q_ok = (pick.quality_retention or 0) >= (o.quality_retention or 0)
    return row(2, f"encoder champion ({pick.name}) vs Olive's best ({o.name})", ratio,
               "<= 0.8x latency at equal or better quality", ratio <= 0.8 and q_ok,
               f"p50 {pick.measurement.latency.p50_ms:.2f} vs {o.measurement.latency.p50_ms:.2f} ms; quality "
               f"retention {pick.quality_retention:.4f} vs {o.quality_retention:.4f}; Olive passed gates: "
               f"{o.passed_gates}")


def _median_ms(text: str) -> float | None:
    m = re.search(r"Median:\s+([\d.]+)\s*ms", text)
    return float(m.group(1)) if m else None


def rows_peers(params_path: Path, outcome: Any) -> list[dict]:
    """Row 8: our latency vs peer tools on the same artifacts, same threads."""
    import numpy as np

    ctx = ctx_for(params_path, outcome.namespace)
    sel = outcome.selection
    by = {r.name: r for r in sel.candidates if r.status == "ok"}
    b = ctx.cfg.benchmark
    data = np.load(ctx.ws.inputs)
    ids, mask = data["bench_input_ids"][:1], data["bench_attention_mask"][:1]
    out = []
    # A plain onnxruntime session loop on our ONNX files.
    import onnxruntime as ort

    from edgeopt.timing import stats, timed_loop

    for name in [n for n in ("onnx-fp32", "ort-int8-dynamic") if n in by]:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = b.threads, 1
        sess = ort.InferenceSession(str(ctx.ws.candidate_dir(name) / "model.onnx"), so,
                                    providers=["CPUExecutionProvider"])
        feed = {i.name: (ids if i.name == "input_ids" else mask) for i in sess.get_inputs()}
        peer = stats(timed_loop(lambda s=sess, f=feed: s.run(None, f), b.warmup_iterations, b.min_iterations,
                                b.min_time_s), 1).p50_ms
        ours = by[name].measurement.latency.p50_ms
        diff = ours / peer - 1
        out.append(row(8, f"{name}: our p50 vs a plain onnxruntime session loop", diff, "within 10%",
                       abs(diff) <= 0.10, f"ours {ours:.2f} ms, plain ORT {peer:.2f} ms"))
        del sess
    # OpenVINO's benchmark_app on our IRs (latency hint, sync API, 1 stream, same threads).
    app = shutil.which("benchmark_app") or str(ROOT / ".venv" / "bin" / "benchmark_app")
    for name in [n for n in ("ov-fp32", "nncf-int8-ptq") if n in by]:
        xml = ctx.ws.candidate_dir(name) / "model.xml"
        # benchmark_app refuses -nstreams/-nthreads with a hint: "-hint none" + 1 stream is the
        # latency setting spelled out, like our runtime's (LATENCY hint, 1 stream, N threads).
        cmd = [app, "-m", str(xml), "-d", "CPU", "-hint", "none", "-api", "sync", "-nstreams", "1",
               "-nthreads", str(b.threads), "-infer_precision", "f32", "-t", "10",
               "-data_shape", f"input_ids[1,{b.sequence_length}],attention_mask[1,{b.sequence_length}]"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        peer = _median_ms(res.stdout)
        ours = by[name].measurement.latency.p50_ms
        if peer is None:
            out.append(row(8, f"{name}: our p50 vs OpenVINO benchmark_app", None, "within 10%", None,
                           f"benchmark_app failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}"))
            continue
        diff = ours / peer - 1
        out.append(row(8, f"{name}: our p50 vs OpenVINO benchmark_app", diff, "within 10%", abs(diff) <= 0.10,
                       f"ours {ours:.2f} ms, benchmark_app median {peer:.2f} ms (random data, same shape)"))
    return out


# -- report --------------------------------------------------------------------------------


def fmt(r: dict) -> str:
    v = r["measured"]
    if v is None:
        shown = "-"
    elif r["row"] in (6, 8):
        shown = f"{v:+.1%}"
    elif r["row"] == 5:
        shown = f"{v:.1%}"
    elif r["row"] == 7:
        shown = f"{v:.1f} s"
    else:
        shown = f"{v:.2f}x"
    met = {True: "yes", False: "**no**", None: "n/a"}[r["met"]]
    return f"| {r['row']} | {r['what']} | {shown} | {r['target']} | {met} | {r['detail']} |"


def write_report(results: list[dict], m: dict[str, Any], out_dir: Path, seconds: float) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = machine_slug(m)
    payload = {"machine": m, "rows": results, "bench_seconds": seconds,
               "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    (out_dir / f"{slug}.json").write_text(json.dumps(payload, indent=2, default=str))
    lines = [f"# Benchmarks on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB)", "",
             f"ISA: {', '.join(m['isa']) or '-'}; {m['os']}; Python {m['python']}; measured "
             f"{payload['date']} UTC in {seconds / 60:.1f} min.", "",
             "| # | compared | measured | target | met | detail |", "|---|---|---|---|---|---|"]
    lines += [fmt(r) for r in sorted(results, key=lambda r: r["row"])]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v != "absent")]
    md = out_dir / f"{slug}.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-llm", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    started = time.perf_counter()
    tmp = args.out / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    pipelines = [p for p, c in raw["pipelines"].items() if not (args.skip_llm and c.get("task") == "causal-lm")]
    params_path = bench_params(tmp, pipelines)
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores; pipelines: {pipelines}", flush=True)

    results, outcomes = rows_orchestration(params_path, pipelines)
    by_task = {ctx_for(params_path, o.namespace).cfg.task: o for o in outcomes}
    enc = by_task.get("text-embedding")
    if enc is not None:
        r1, r5 = row_encoder_speedup(params_path, enc, args.repeats)
        results += [r1] + ([r5] if r5 else [])
        results.append(row_olive(enc))
        results += rows_peers(params_path, enc)
    md = write_report(results, m, args.out, time.perf_counter() - started)
    print(md.read_text())


if __name__ == "__main__":
    main()
