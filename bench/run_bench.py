"""Benchmarks of the performance goals, measured side by side in one run on this machine.

Usage: .venv/bin/python bench/run_bench.py [--repeats 3] [--skip-llm] [--pipelines effnet ...]

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
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import profiles  # noqa: E402
from edgeopt.environment import quiet_offline_defaults  # noqa: E402

quiet_offline_defaults()
PROFILES = ROOT / "bench" / "results" / "profiles"


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


# --smoke: a few candidates on tiny budgets, to check the benchmark code itself (numbers meaningless).
SMOKE_CANDIDATES = {"text-embedding": {"torch-fp32", "onnx-fp32", "ort-int8-dynamic", "ov-fp32"},
                    "causal-lm": {"torch-fp32", "gguf-f16", "gguf-q8_0"},
                    "image-classification": {"torch-fp32", "onnx-fp32", "nncf-int8-ptq"},
                    "object-detection": {"onnx-fp32", "nncf-int8-ptq"}}
SMOKE_BUDGET = {"text-embedding": {"min_iterations": 5, "min_time_s": 0, "warmup_iterations": 1},
                "image-classification": {"min_iterations": 5, "min_time_s": 0, "warmup_iterations": 1},
                "object-detection": {"min_iterations": 5, "min_time_s": 0, "warmup_iterations": 1},
                "causal-lm": {"prompt_tokens": 64, "decode_tokens": 8, "min_iterations": 1, "min_time_s": 0}}


def bench_only_pipelines() -> dict[str, dict[str, Any]]:
    """bench/pipelines/<name>.yaml: pipelines measured beyond params.yaml, on models other packages ship
    (`{nudenet}`: the installed nudenet package's folder; such a pipeline is left out where it is missing)."""
    import importlib.util

    spec = importlib.util.find_spec("nudenet")  # not imported: its module needs OpenCV, only its file is used
    places = {"nudenet": spec.submodule_search_locations[0]} if spec and spec.submodule_search_locations else {}
    out = {}
    for path in sorted((ROOT / "bench" / "pipelines").glob("*.yaml")):
        text = path.read_text()
        if all("{" + k + "}" not in text or k in places for k in ("nudenet",)):
            out[path.stem] = yaml.safe_load(text.replace("{nudenet}", places.get("nudenet", "")))
    return out


def bench_params(tmp: Path, pipelines: list[str], smoke: bool = False) -> Path:
    """The shipped params.yaml (plus bench/pipelines/) with outputs and MLflow under tmp; benchmark settings
    unchanged."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["output_dir"] = str(tmp / "outputs")
    raw["tracking"] = {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_root": str(tmp / "mlruns"),
                       "experiment": "bench"}
    raw["pipelines"] = {k: v for k, v in {**raw["pipelines"], **bench_only_pipelines()}.items() if k in pipelines}
    if smoke:
        for cfg in raw["pipelines"].values():
            task = cfg["task"]
            keep = set(SMOKE_CANDIDATES[task])
            parents = {c["name"]: c.get("parent") for c in cfg["candidates"]}
            for name in list(keep):  # and their ancestors
                while parents.get(name):
                    name = parents[name]
                    keep.add(name)
            cfg["candidates"] = [c for c in cfg["candidates"] if c["name"] in keep]
            cfg.setdefault("benchmark", {}).update(SMOKE_BUDGET[task])
            if task == "causal-lm":
                cfg["data"].update(windows=2, window_tokens=64)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def row(rid: int, what: str, measured: float | None, target: str, met: bool | None, detail: str) -> dict:
    return {"row": rid, "what": what, "measured": measured, "target": target, "met": met, "detail": detail}


def ctx_for(params_path: Path, namespace: str) -> Any:
    from edgeopt.config import load_params
    from edgeopt.pipeline.context import PipelineContext

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


@contextmanager
def prefect_server(tmp: Path) -> Iterator[str]:
    """`prefect server start` on a free loopback port with its own home; yields the API URL."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(PREFECT_HOME=str(tmp / "prefect-server-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = (tmp / "prefect-server.log").open("w")
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port), "--no-ui"], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"prefect server did not start (see {log.name})") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def rows_orchestration(params_path: Path, pipelines: list[str]) -> tuple[list[dict], list[Any]]:
    """Row 6: wall time vs the stages' own compute. Row 7: a cached re-run, in-process and CLI."""
    from edgeopt import stageclock
    from flows.optimize import optimize

    stageclock.reset()
    parent_profile = PROFILES / "row6-pipeline-parent.txt"
    # This process's own CPU, sampled while the pipeline runs: builds and measurements run in child
    # processes, so what shows here is orchestration, tracking and the stages run in-process.
    with profiles.sampling(parent_profile):
        t0 = time.perf_counter()
        outcomes = optimize(str(params_path), pipelines)
        wall = time.perf_counter() - t0
    spent = stageclock.spent()
    compute = sum(spent.values())
    overhead = (wall - compute) / compute
    r6 = row(6, "orchestration + tracking overhead: (pipeline wall - stages' own compute) / compute",
             overhead, "<= 5%", overhead <= 0.05,
             f"wall {wall:.1f} s, compute {compute:.1f} s ("
             + ", ".join(f"{k} {v:.1f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])) + ")"
             + (f"; profile of this process (py-spy, {profiles.stored(parent_profile).name}): "
                + profiles.describe(profiles.summarize(parent_profile)) if overhead > 0.05 else ""))

    t0 = time.perf_counter()
    optimize(str(params_path), pipelines, promote=False)
    rerun_inproc = time.perf_counter() - t0
    cli = [str(ROOT / ".venv" / "bin" / "edgeopt"), "run", "--params", str(params_path), "--no-promote"]
    t0 = time.perf_counter()
    subprocess.run(cli, check=True, capture_output=True, cwd=params_path.parent)
    rerun_cli = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import edgeopt.cli, flows.optimize"], check=True, cwd=ROOT)
    imports = time.perf_counter() - t0
    # The same CLI against an already running Prefect server, as a scheduled deployment has (no temporary one).
    with prefect_server(params_path.parent) as api_url:
        t0 = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True, cwd=params_path.parent,
                       env={**os.environ, "PREFECT_API_URL": api_url})
        rerun_server = time.perf_counter() - t0
    detail = (f"CLI process {rerun_cli:.1f} s, of which starting Python + importing the CLI and flow {imports:.1f} s; "
              f"the same CLI with a Prefect server already running (no temporary server) {rerun_server:.1f} s; "
              f"the same flow re-run inside a warm process {rerun_inproc:.1f} s")
    if rerun_cli > 15:
        prof = PROFILES / "row7-cached-rerun.txt"
        profiles.record_command(cli, prof, params_path.parent)
        detail += (f"; profile (py-spy, {profiles.stored(prof).name}, CPU samples, children included): "
                   + profiles.describe(profiles.summarize(prof)))
    r7 = row(7, "cached re-run with nothing changed (new `edgeopt run` process)", rerun_cli, "<= 15 s",
             rerun_cli <= 15, detail)
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


def ratio_ci(base_ms: list[float], cand_ms: list[float]) -> tuple[float, float, float]:
    """Median ratio base/candidate over interleaved rounds, with a paired bootstrap 95% CI (SciPy)."""
    import numpy as np
    from scipy.stats import bootstrap

    b, c = np.asarray(base_ms), np.asarray(cand_ms)
    ratio = float(np.median(b) / np.median(c))
    if len(b) < 3:
        return ratio, float("nan"), float("nan")
    res = bootstrap((b, c), lambda x, y: np.median(x) / np.median(y), paired=True, vectorized=False,
                    n_resamples=2000, confidence_level=0.95, method="percentile", random_state=0)
    return ratio, float(res.confidence_interval.low), float(res.confidence_interval.high)


def rows_classifier(params_path: Path, outcome: Any, repeats: int) -> list[dict]:
    """Row 9: the image classifier's champion vs PyTorch FP32 eager at batch 1, same threads, side by side."""
    sel = outcome.selection
    ctx = ctx_for(params_path, outcome.namespace)
    base = sel.baseline
    if sel.pick is None:
        return [row(9, "classifier champion vs PyTorch FP32 eager", None, ">= 2.5x", False, "no champion picked")]
    ms = remeasure(ctx, [sel.pick, base], repeats)
    ratio, low, high = ratio_ci([m.latency.p50_ms for m in ms[base]], [m.latency.p50_ms for m in ms[sel.pick]])
    pick = next(r for r in sel.candidates if r.name == sel.pick)
    q = pick.quality.metrics
    # Agreement on the inputs the base classifies decisively (top-1 p >= 0.5): on the shipped photographs,
    # mostly outside ImageNet, the plain figure counts near-tied classes swapping (shown alongside).
    agree = q["decisive_top1_agreement"]
    red = 1 - ms[sel.pick][0].size_mb / ms[base][0].size_mb
    b = ctx.cfg.benchmark
    # The conservative end of the CI must clear the target; a CI straddling it is noise, not a result.
    met = low >= 2.5 and agree >= 0.98 and red >= 0.70
    return [
        row(9, f"classifier champion ({sel.pick}) latency vs PyTorch FP32 eager (batch {b.batch_size}, "
               f"{b.threads} threads)", ratio, ">= 2.5x (CI low end) at decisive top-1 agreement >= 0.98, "
               ">= 70% smaller", met,
            f"p50 {median_p50(ms[sel.pick]):.2f} ms vs {median_p50(ms[base]):.2f} ms (medians of {repeats} "
            f"interleaved runs), 95% CI of the ratio [{low:.2f}, {high:.2f}] (paired bootstrap); decisive top-1 "
            f"agreement {agree:.4f} (all inputs {q['top1_agreement']:.4f}), top-5 overlap {q['top5_overlap']:.4f}, "
            f"softmax KLD {q['softmax_kld']:.4f}; size {ms[sel.pick][0].size_mb:.1f} MB vs "
            f"{ms[base][0].size_mb:.1f} MB ({red:.1%} smaller)"),
    ]


def rows_detector(params_path: Path, outcome: Any, repeats: int) -> list[dict]:
    """Row 10: the fastest INT8 detector that keeps mAP@[.5:.95] >= 0.95 of the base's, vs ONNX FP32 on ORT.

    Also shows what keeping the YOLO head in float is worth: each static INT8 recipe with and without it.
    """
    sel = outcome.selection
    ctx = ctx_for(params_path, outcome.namespace)
    base = sel.baseline
    rows = {r.name: r for r in sel.candidates}
    int8 = [r for r in sel.candidates if r.status == "ok" and "int8" in (r.precision or "") and r.quality]
    if not int8:
        return [row(10, "detector INT8 vs ONNX FP32", None, ">= 1.8x at mAP retention >= 0.95", False,
                    "no INT8 candidate measured")]
    keeps = [r for r in int8 if r.quality.retention.get("map", 0.0) >= 0.95]
    best = min(keeps, key=lambda r: r.measurement.latency.p50_ms) if keeps else max(
        int8, key=lambda r: r.quality.retention.get("map", 0.0))
    ms = remeasure(ctx, [best.name, base], repeats)
    ratio, low, high = ratio_ci([m.latency.p50_ms for m in ms[base]], [m.latency.p50_ms for m in ms[best.name]])
    kept = best.quality.retention.get("map", 0.0)
    met = bool(keeps) and low >= 1.8

    def maps(name: str) -> str:
        r = rows.get(name)
        if r is None or r.quality is None:
            return f"{name}: {r.status if r else 'absent'}"
        return f"{name} {r.quality.metrics['map']:.3f}/{r.quality.metrics['map50']:.3f}"

    pairs = "; ".join(f"{maps(n)} vs {maps(n + '-head-int8')}" for n in ("ort-int8-static", "nncf-int8-ptq"))
    d = ctx.cfg.data
    return [row(10, f"detector INT8 ({best.name}) latency vs ONNX FP32 on ORT (batch {ctx.cfg.benchmark.batch_size}, "
                    f"{ctx.cfg.benchmark.threads} threads)", ratio, ">= 1.8x (CI low end) at mAP@[.5:.95] retention "
                    ">= 0.95", met,
                f"p50 {median_p50(ms[best.name]):.2f} ms vs {median_p50(ms[base]):.2f} ms (medians of {repeats} "
                f"interleaved runs), 95% CI of the ratio [{low:.2f}, {high:.2f}] (paired bootstrap); mAP@[.5:.95] "
                f"retention {kept:.3f}, mAP@.5 {best.quality.metrics['map50']:.3f} against the base's own detections "
                f"(score >= {d.score_threshold}, {d.n_eval} images, "
                f"{rows[base].quality.metrics.get('detections_per_image', float('nan')):.2f} per image); "
                f"head kept in float vs quantized, mAP@[.5:.95]/mAP@.5: {pairs}")]


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


def interleaved(pairs: dict[str, tuple[Any, Any]], repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    """Run ours, peer, ours, peer, ... for every artifact, so drift on the machine hits both alike."""
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
    for _ in range(repeats):
        for name, (ours, peer) in pairs.items():
            out[name][0].append(ours())
            out[name][1].append(peer())
    return out


def our_measure(ctx: Any, name: str, key: str, counter: list[int]) -> Any:
    """One fresh-process measurement by our harness; returns the figure `key` of it."""
    from edgeopt.measure import measure_in_subprocess

    counter[0] += 1
    m = measure_in_subprocess(ctx.cfg.task, ctx.ws.candidate_dir(name), ctx.ws.inputs, ctx.cfg.benchmark,
                              ctx.ws.root / "bench-peers" / f"{name}-{counter[0]}")
    return m.latency.p50_ms if key == "p50_ms" else m.throughput_items_per_s


def ort_loop_peer(path: Path, ids: Any, mask: Any, b: Any) -> float:
    """A plain onnxruntime session loop: p50 ms."""
    import onnxruntime as ort

    from edgeopt.timing import stats, timed_loop

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = b.threads, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {i.name: (ids if i.name == "input_ids" else mask) for i in sess.get_inputs()}
    return stats(timed_loop(lambda: sess.run(None, feed), b.warmup_iterations, b.min_iterations,
                            b.min_time_s), 1).p50_ms


def benchmark_app_peer(xml: Path, b: Any) -> float:
    """OpenVINO's benchmark_app: median ms (raises with its last line if it fails)."""
    app = shutil.which("benchmark_app") or str(ROOT / ".venv" / "bin" / "benchmark_app")
    # benchmark_app refuses -nstreams/-nthreads with a hint: "-hint none" + 1 stream is the
    # latency setting spelled out, like our runtime's (LATENCY hint, 1 stream, N threads).
    cmd = [app, "-m", str(xml), "-d", "CPU", "-hint", "none", "-api", "sync", "-nstreams", "1",
           "-nthreads", str(b.threads), "-infer_precision", "f32", "-t", "10",
           "-data_shape", f"input_ids[1,{b.sequence_length}],attention_mask[1,{b.sequence_length}]"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    peer = _median_ms(res.stdout)
    if peer is None:
        raise RuntimeError(f"benchmark_app failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
    return peer


def llamacpp_peer(gguf: Path, inputs: Path, b: Any) -> float:
    """llama.cpp's own performance counters (bench/peer_llamacpp.py in a fresh process): decode tok/s."""
    cmd = [sys.executable, str(ROOT / "bench" / "peer_llamacpp.py"), str(gguf), str(inputs), str(b.threads),
           str(b.decode_tokens), str(max(1, b.min_iterations))]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"peer_llamacpp failed: {res.stderr.strip().splitlines()[-1:]}")
    return float(json.loads(res.stdout.strip().splitlines()[-1])["decode_tok_s"])


def rows_peers(params_path: Path, outcome: Any, repeats: int) -> list[dict]:
    """Row 8: our latency vs peer tools on the same artifacts, same threads, measured interleaved."""
    import numpy as np

    ctx = ctx_for(params_path, outcome.namespace)
    by = {r.name for r in outcome.selection.candidates if r.status == "ok"}
    b = ctx.cfg.benchmark
    n = [0]
    pairs: dict[str, tuple[Any, Any]] = {}
    labels: dict[str, tuple[str, str]] = {}
    if ctx.cfg.task == "text-embedding":
        data = np.load(ctx.ws.inputs)
        ids, mask = data["bench_input_ids"][:1], data["bench_attention_mask"][:1]
        for name in [x for x in ("onnx-fp32", "ort-int8-dynamic") if x in by]:
            path = ctx.ws.candidate_dir(name) / "model.onnx"
            pairs[name] = (lambda nm=name: our_measure(ctx, nm, "p50_ms", n),
                           lambda p=path: ort_loop_peer(p, ids, mask, b))
            labels[name] = ("a plain onnxruntime session loop", "ms")
        for name in [x for x in ("ov-fp32", "nncf-int8-ptq") if x in by]:
            xml = ctx.ws.candidate_dir(name) / "model.xml"
            pairs[name] = (lambda nm=name: our_measure(ctx, nm, "p50_ms", n), lambda x=xml: benchmark_app_peer(x, b))
            labels[name] = ("OpenVINO benchmark_app (random data, same shape)", "ms")
    else:
        for name in [x for x in ("gguf-f16", "gguf-q8_0") if x in by]:
            gguf = ctx.ws.candidate_dir(name) / "model.gguf"
            pairs[name] = (lambda nm=name: our_measure(ctx, nm, "tok_s", n),
                           lambda g=gguf: llamacpp_peer(g, ctx.ws.inputs, b))
            labels[name] = ("llama.cpp's own perf counters (llama_perf_context, Llama.generate top_k=1)", "tok/s")
    out = []
    for name, (ours, peer) in interleaved(pairs, repeats).items():
        what, unit = labels[name]
        o, p = statistics.median(ours), statistics.median(peer)
        # Compare times: for tok/s a higher rate is a shorter time per token.
        diff = (o / p - 1) if unit == "ms" else (p / o - 1)
        out.append(row(8, f"{name}: our {'p50' if unit == 'ms' else 'decode'} vs {what}", diff, "within 10%",
                       abs(diff) <= 0.10, f"ours {o:.2f} {unit}, peer {p:.2f} {unit} (medians of {repeats} "
                                          f"interleaved runs: ours {_fmt_list(ours)}, peer {_fmt_list(peer)})"))
    return out


def _fmt_list(xs: list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in xs)


def decode_profile(ctx: Any, name: str) -> str:
    """py-spy (native frames too) of the candidate's timed generation: where a decoded token's time goes."""
    from edgeopt.measure import thread_env

    b = ctx.cfg.benchmark
    prof = PROFILES / f"row3-decode-{name}.txt"
    cmd = [sys.executable, str(ROOT / "bench" / "decode_child.py"), str(ctx.ws.candidate_dir(name)),
           str(ctx.ws.inputs), str(b.threads), str(b.decode_tokens), "3"]
    env = {**os.environ, **thread_env(b.threads)}
    profiles.record_command(cmd, prof, ROOT, idle=False, native=True, env=env)
    return (f"decode profile of {name} (py-spy --native, {profiles.stored(prof).name}): "
            + profiles.describe(profiles.summarize(prof)))


def rows_llm(params_path: Path, outcome: Any, repeats: int) -> list[dict]:
    """Rows 3, 4 and 5 (LLM): champion decode vs the F16 GGUF, its roof fraction, its size vs F16."""
    sel = outcome.selection
    ctx = ctx_for(params_path, outcome.namespace)
    by = {r.name: r for r in sel.candidates if r.status == "ok"}
    f16 = "gguf-f16"
    if sel.pick is None or f16 not in by:
        why = "no champion picked" if sel.pick is None else f"no {f16} candidate measured"
        return [row(3, "LLM champion decode vs F16 GGUF", None, ">= 2.5x at KLD <= 0.05", False, why)]
    pick = sel.pick
    ms = remeasure(ctx, [pick, f16], repeats)

    def tok_s(name: str) -> float:
        return statistics.median(m.throughput_items_per_s for m in ms[name])

    ratio = tok_s(pick) / tok_s(f16)
    kld = by[pick].quality.metrics["kld"]
    # What would meet the target, from the pipeline's own measurements (one run each).
    ok = [r for r in by.values() if r.quality.metrics.get("kld", 1) <= 0.05]
    fastest = max(ok, key=lambda r: r.measurement.throughput_items_per_s)
    f16_run = by[f16].measurement.throughput_items_per_s
    r3 = row(3, f"LLM champion ({pick}) decode tok/s vs the F16 GGUF", ratio, ">= 2.5x at KLD <= 0.05",
             ratio >= 2.5 and kld <= 0.05,
             f"{tok_s(pick):.1f} vs {tok_s(f16):.1f} tok/s (median of {repeats} interleaved runs), KLD {kld:.4f}; "
             f"fastest candidate with KLD <= 0.05 in the pipeline run: {fastest.name} "
             f"{fastest.measurement.throughput_items_per_s / f16_run:.2f}x (KLD "
             f"{fastest.quality.metrics['kld']:.4f}, top-1 {fastest.quality.metrics['top1']:.3f})")
    if not r3["met"]:
        r3["detail"] += "; " + decode_profile(ctx, pick)
    rows = [r3]
    fractions = [m.extra["roof_fraction"] for m in ms[pick] if "roof_fraction" in m.extra]
    if fractions:
        fr = statistics.median(fractions)
        x = ms[pick][0].extra
        best = max((r for r in by.values() if "roof_fraction" in r.measurement.extra),
                   key=lambda r: r.measurement.extra["roof_fraction"])
        rows.append(row(4, f"LLM champion ({pick}) decode as a fraction of the memory-bandwidth roof", fr, ">= 70%",
                        fr >= 0.70,
                        f"copy bandwidth {x['copy_bandwidth_gbs']:.1f} GB/s / {x['bytes_per_token_mb']:.1f} MB per "
                        f"token = roof {x['roof_tok_s']:.0f} tok/s; decode {tok_s(pick):.1f} tok/s, "
                        f"{x['decode_gflops']:.1f} GFLOP/s; highest in the run: {best.name} "
                        f"{best.measurement.extra['roof_fraction']:.0%}"))
    else:
        rows.append(row(4, f"LLM champion ({pick}) roof fraction", None, ">= 70%", None,
                        "its runtime reports no roofline (bytes read per token)"))
    size_c, size_f = ms[pick][0].size_mb, ms[f16][0].size_mb
    red = 1 - size_c / size_f
    rows.append(row(5, f"LLM champion size vs the F16 GGUF ({pick} vs {f16})", red, ">= 70% smaller",
                    red >= 0.70, f"{size_c:.1f} MB vs {size_f:.1f} MB"))
    return rows


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


def markdown_table(table: Any) -> list[str]:
    """The CLI's results table (rich) as markdown, markup stripped."""
    from rich.text import Text

    cols = table.columns
    cells = [[Text.from_markup(str(c)).plain for c in col._cells] for col in cols]
    lines = ["| " + " | ".join(str(c.header) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(col[i] for col in cells) + " |" for i in range(len(cells[0]) if cells else 0)]
    return lines


def candidate_tables(outcomes: list[Any]) -> list[str]:
    """Every candidate of the timed pipeline run, per pipeline, as `edgeopt results` shows them."""
    from edgeopt.cli import results_table

    lines: list[str] = []
    for o in outcomes:
        lines += ["", f"## {o.namespace}: every candidate of the timed pipeline run (one measurement each)", ""]
        lines += markdown_table(results_table(o.selection, o.selection.pick))
    return lines


def write_report(results: list[dict], m: dict[str, Any], out_dir: Path, seconds: float,
                 outcomes: list[Any] | None = None) -> Path:
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
    lines += candidate_tables(outcomes or [])
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v != "absent")]
    md = out_dir / f"{slug}.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-llm", action="store_true")
    ap.add_argument("--pipelines", nargs="+", help="only these namespaces of params.yaml (default: all)")
    ap.add_argument("--smoke", action="store_true", help="a few candidates, tiny budgets: checks the code only")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    global PROFILES
    started = time.perf_counter()
    out = args.out / "smoke" if args.smoke else args.out  # a smoke run never clobbers a full run's files
    if args.pipelines:  # nor does a run of some pipelines only
        out = out / "-".join(args.pipelines)
    PROFILES = out / "profiles"
    tmp = out / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    every = {**raw["pipelines"], **bench_only_pipelines()}
    pipelines = [p for p, c in every.items() if not (args.skip_llm and c.get("task") == "causal-lm")
                 and (not args.pipelines or p in args.pipelines)]
    params_path = bench_params(tmp, pipelines, args.smoke)
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores; pipelines: {pipelines}", flush=True)

    results, outcomes = rows_orchestration(params_path, pipelines)
    by_task = {ctx_for(params_path, o.namespace).cfg.task: o for o in outcomes}
    enc = by_task.get("text-embedding")
    if enc is not None:
        r1, r5 = row_encoder_speedup(params_path, enc, args.repeats)
        results += [r1] + ([r5] if r5 else [])
        results.append(row_olive(enc))
        results += rows_peers(params_path, enc, args.repeats)
    clf = by_task.get("image-classification")
    if clf is not None:
        results += rows_classifier(params_path, clf, args.repeats)
    det = by_task.get("object-detection")
    if det is not None:
        results += rows_detector(params_path, det, args.repeats)
    llm = by_task.get("causal-lm")
    if llm is not None:
        results += rows_llm(params_path, llm, args.repeats)
        results += rows_peers(params_path, llm, args.repeats)
    md = write_report(results, m, out, time.perf_counter() - started, outcomes)
    print(md.read_text())


if __name__ == "__main__":
    main()
