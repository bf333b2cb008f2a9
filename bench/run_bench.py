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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import profiles  # noqa: E402
from edgeopt.environment import quiet_offline_defaults  # noqa: E402
from edgeopt.machine import BUSY_CPUS_LIMIT  # noqa: E402
from edgeopt.machine import fingerprint as machine_fingerprint  # noqa: E402
from edgeopt.machine import identity as machine_identity  # noqa: E402
from edgeopt.tuning import Tuning  # noqa: E402
from edgeopt.tuning import label as settings_label  # noqa: E402

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
    identity = machine_identity()
    return {
        "cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
        "isa": [f for f in interesting if f in cpu_flags()], "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "versions": library_versions(),
        # What every measurement of the pipeline records (edgeopt.machine): timings of two machines compare
        # only on the same fingerprint.
        "identity": identity, "fingerprint": machine_fingerprint(identity),
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


def row(rid: int, what: str, measured: float | None, target: str, met: bool | None, detail: str, *,
        ci: tuple[float, float] | None = None, loaded: tuple[int, int] | None = None, reference: str = "") -> dict:
    """One goal. ci: the 95% CI of `measured` (met is judged on its conservative end); loaded: (rounds that
    ran under load, rounds) of the measurements behind it; reference: figures shown, not compared."""
    return {"row": rid, "what": what, "measured": measured, "ci": list(ci) if ci else None, "target": target,
            "met": met, "loaded": list(loaded) if loaded else None, "detail": detail, "reference": reference}


def ctx_for(params_path: Path, namespace: str) -> Any:
    from edgeopt.config import load_params
    from edgeopt.pipeline.context import PipelineContext

    return PipelineContext(load_params(params_path), namespace, params_path.parent)


# -- interleaved re-measurements -----------------------------------------------------------


@contextmanager
def bench_slot(ctx: Any, label: str) -> Iterator[None]:
    """The machine's benchmark slot, as every pipeline round takes it, around a section of re-measurements and
    peer runs (the pipeline's own rounds take it themselves: never call the pipeline inside)."""
    from edgeopt.orchestration import benchmark_slot

    orch = ctx.params.orchestration
    with benchmark_slot(orch.benchmark_concurrency_limit, orch.benchmark_wait_s, f"bench/{ctx.namespace}/{label}"):
        yield


def sample_load() -> tuple[dict[str, float], bool]:
    """The machine's load just before a round (this process waits idle meanwhile) and whether it counts as loaded."""
    from edgeopt import machine

    load = machine.load()
    return load, machine.under_load(load)


def chosen_settings(outcome: Any) -> dict[str, dict[str, Any]]:
    """Each measured candidate's runtime settings, as its pipeline rounds ran with them (the probe's choice)."""
    return {r.name: dict(r.measurement.runtime_settings) for r in outcome.selection.candidates
            if r.measurement is not None and r.measurement.runtime_settings}


def remeasure(ctx: Any, names: list[str], repeats: int, settings: dict[str, dict[str, Any]] | None = None,
              ) -> dict[str, Any]:
    """Re-measure candidates interleaved (a, b, a, b, ...; pass i is round i of each), so drift hits all alike,
    each with the runtime settings its pipeline rounds used (`settings`, from `chosen_settings`).

    Each round is a fresh process of our harness (timing only, no quality outputs), the machine's load sampled
    just before it; returns each candidate's rounds pooled (`edgeopt.rounds.combine`). Hold `bench_slot`.
    """
    settings = settings or {}
    return remeasure_configs(ctx, {n: (n, settings.get(n)) for n in names}, repeats)


def remeasure_configs(ctx: Any, configs: dict[str, tuple[str, dict[str, Any] | None]], repeats: int,
                      ) -> dict[str, Any]:
    """`remeasure` of labelled configurations: label -> (candidate, runtime settings; None: the default), so
    one artifact can be timed under two settings side by side."""
    from edgeopt.measure import measure_in_subprocess
    from edgeopt.rounds import combine

    parts: dict[str, list[Any]] = {label: [] for label in configs}
    inputs = ctx.ws.inputs
    for i in range(repeats):
        for label, (name, settings) in configs.items():
            load, loaded = sample_load()
            m = measure_in_subprocess(ctx.cfg.task, ctx.ws.candidate_dir(name), inputs, ctx.cfg.benchmark,
                                      ctx.ws.root / "bench-remeasure" / f"{label}-{i}",
                                      memory_limit_mb=ctx.params.isolation.memory_limit_mb, round_index=i,
                                      write_outputs=False, settings=settings)
            rounds = [r.model_copy(update={"load": load, "under_load": loaded}) for r in m.rounds]
            parts[label].append(m.model_copy(update={"rounds": rounds}))
    return {label: combine(ps) for label, ps in parts.items()}


def loaded_rounds(*measurements: Any) -> tuple[int, int]:
    """(rounds run under load, rounds) over the measurements' rounds."""
    rounds = [r for m in measurements if m is not None for r in m.rounds]
    return sum(bool(r.under_load) for r in rounds), len(rounds)


def speedup(base: Any, cand: Any) -> tuple[float, tuple[float, float] | None]:
    """base p50 / candidate p50 over their pooled rounds, with the paired-rounds 95% CI (edgeopt.rounds)."""
    from edgeopt.rounds import speedup_interval

    return base.latency.p50_ms / cand.latency.p50_ms, speedup_interval(base, cand)


def clears(ci: tuple[float, float] | None, target: float, higher_is_better: bool = True) -> bool:
    """The CI's conservative end clears the target (no CI: not met)."""
    if ci is None:
        return False
    return ci[0] >= target if higher_is_better else ci[1] <= target


def _ci(ci: tuple[float, float] | None, spec: str = ".2f") -> str:
    return f"[{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "[no CI]"


def p50_text(m: Any) -> str:
    """"3.12 ms [3.05, 3.20]": pooled p50 with its CI."""
    return f"{m.latency.p50_ms:.2f} ms {_ci(m.ci.get('latency_p50_ms'))}"


def rounds_text(m: Any, what: str = "iterations") -> str:
    return f"{len(m.rounds)} interleaved rounds, {m.latency.iterations} {what} pooled"


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
    # Not a ratio of two measured things: both figures come from this one pipeline run (this process's
    # wall clock; the stages' own time from edgeopt/stageclock.py). "Under load": the run's measurement rounds.
    measured = [r.measurement for o in outcomes if o.selection for r in o.selection.candidates if r.measurement]
    r6 = row(6, "orchestration + tracking overhead: (pipeline wall - stages' own compute) / compute",
             overhead, "<= 5%", overhead <= 0.05,
             f"one timed pipeline run: wall {wall:.1f} s (this process's clock), compute {compute:.1f} s "
             "(edgeopt/stageclock.py: "
             + ", ".join(f"{k} {v:.1f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])) + ")"
             + (f"; profile of this process (py-spy, {profiles.stored(parent_profile).name}): "
                + profiles.describe(profiles.summarize(parent_profile)) if overhead > 0.05 else ""),
             loaded=loaded_rounds(*measured) if measured else None)

    t0 = time.perf_counter()
    optimize(str(params_path), pipelines, promote=False)
    rerun_inproc = time.perf_counter() - t0
    cli = [str(ROOT / ".venv" / "bin" / "edgeopt"), "run", "--params", str(params_path), "--no-promote"]
    _load, cli_loaded = sample_load()
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
    detail = (f"one run, wall clock around it: CLI process {rerun_cli:.1f} s, of which starting Python + "
              f"importing the CLI and flow {imports:.1f} s; "
              f"the same CLI with a Prefect server already running (no temporary server) {rerun_server:.1f} s; "
              f"the same flow re-run inside a warm process {rerun_inproc:.1f} s")
    if rerun_cli > 15:
        prof = PROFILES / "row7-cached-rerun.txt"
        profiles.record_command(cli, prof, params_path.parent)
        detail += (f"; profile (py-spy, {profiles.stored(prof).name}, CPU samples, children included): "
                   + profiles.describe(profiles.summarize(prof)))
    r7 = row(7, "cached re-run with nothing changed (new `edgeopt run` process)", rerun_cli, "<= 10 s",
             rerun_cli <= 10, detail, loaded=(int(cli_loaded), 1))
    return [r6, r7], outcomes


def row_encoder_speedup(params_path: Path, outcome: Any, repeats: int) -> tuple[dict, dict | None]:
    """Row 1: champion vs PyTorch FP32 eager, re-measured side by side. Row 5 (encoder part)."""
    sel = outcome.selection
    ctx = ctx_for(params_path, outcome.namespace)
    base = sel.baseline
    if sel.pick is None:
        return row(1, "encoder champion vs PyTorch FP32 eager", None, ">= 4x", False, "no champion picked"), None
    with bench_slot(ctx, "row1"):
        ms = remeasure(ctx, [sel.pick, base], repeats, chosen_settings(outcome))
    ratio, ci = speedup(ms[base], ms[sel.pick])
    pick = next(r for r in sel.candidates if r.name == sel.pick)
    cos, r10 = pick.quality.metrics["cosine"], pick.quality.retention["recall@10"]
    met = clears(ci, 4) and cos >= 0.99 and r10 >= 0.99
    b = ctx.cfg.benchmark
    r1 = row(1, f"encoder champion ({sel.pick}) latency vs PyTorch FP32 eager (batch {b.batch_size}, "
                f"seq {b.sequence_length}, {b.threads} threads)", ratio,
             ">= 4x (CI low end) at cosine >= 0.99, R@10 ret >= 0.99", met,
             f"p50 {p50_text(ms[sel.pick])} vs {p50_text(ms[base])} ({rounds_text(ms[base])} each); 95% CI of the "
             f"ratio: paired rounds (edgeopt.rounds.speedup_interval); cosine {cos:.4f}, R@10 retention {r10:.3f}",
             ci=ci, loaded=loaded_rounds(ms[sel.pick], ms[base]))
    size_c = ms[sel.pick].size_mb
    size_b = ms[base].size_mb
    red = 1 - size_c / size_b
    r5 = row(5, f"encoder champion size vs base ({sel.pick} vs {base})", red, ">= 70% smaller", red >= 0.70,
             f"{size_c:.1f} MB vs {size_b:.1f} MB on disk (the candidates' folders, read by the row 1 "
             "re-measurements; no timing)")
    return r1, r5


def rows_classifier(params_path: Path, outcome: Any, repeats: int) -> list[dict]:
    """Row 9: the image classifier's champion vs PyTorch FP32 eager at batch 1, same threads, side by side."""
    sel = outcome.selection
    ctx = ctx_for(params_path, outcome.namespace)
    base = sel.baseline
    if sel.pick is None:
        return [row(9, "classifier champion vs PyTorch FP32 eager", None, ">= 2.5x", False, "no champion picked")]
    with bench_slot(ctx, "row9"):
        ms = remeasure(ctx, [sel.pick, base], repeats, chosen_settings(outcome))
    ratio, ci = speedup(ms[base], ms[sel.pick])
    pick = next(r for r in sel.candidates if r.name == sel.pick)
    q = pick.quality.metrics
    # Agreement on the inputs the base classifies decisively (top-1 p >= 0.5): on the shipped photographs,
    # mostly outside ImageNet, the plain figure counts near-tied classes swapping (shown alongside).
    agree = q["decisive_top1_agreement"]
    red = 1 - ms[sel.pick].size_mb / ms[base].size_mb
    b = ctx.cfg.benchmark
    # The conservative end of the CI must clear the target; a CI straddling it is noise, not a result.
    met = clears(ci, 2.5) and agree >= 0.98 and red >= 0.70
    return [
        row(9, f"classifier champion ({sel.pick}) latency vs PyTorch FP32 eager (batch {b.batch_size}, "
               f"{b.threads} threads)", ratio, ">= 2.5x (CI low end) at decisive top-1 agreement >= 0.98, "
               ">= 70% smaller", met,
            f"p50 {p50_text(ms[sel.pick])} vs {p50_text(ms[base])} ({rounds_text(ms[base])} each); 95% CI of the "
            f"ratio: paired rounds (edgeopt.rounds.speedup_interval); decisive top-1 "
            f"agreement {agree:.4f} (all inputs {q['top1_agreement']:.4f}), top-5 overlap {q['top5_overlap']:.4f}, "
            f"softmax KLD {q['softmax_kld']:.4f}; size on disk {ms[sel.pick].size_mb:.1f} MB vs "
            f"{ms[base].size_mb:.1f} MB ({red:.1%} smaller)", ci=ci, loaded=loaded_rounds(ms[sel.pick], ms[base])),
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
    # Which one: the fastest in the timed pipeline run (its pooled rounds); then re-measured against the base.
    best = min(keeps, key=lambda r: r.measurement.latency.p50_ms) if keeps else max(
        int8, key=lambda r: r.quality.retention.get("map", 0.0))
    with bench_slot(ctx, "row10"):
        ms = remeasure(ctx, [best.name, base], repeats, chosen_settings(outcome))
    ratio, ci = speedup(ms[base], ms[best.name])
    kept = best.quality.retention.get("map", 0.0)
    met = bool(keeps) and clears(ci, 1.8)

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
                f"p50 {p50_text(ms[best.name])} vs {p50_text(ms[base])} ({rounds_text(ms[base])} each); 95% CI of "
                f"the ratio: paired rounds (edgeopt.rounds.speedup_interval); mAP@[.5:.95] "
                f"retention {kept:.3f}, mAP@.5 {best.quality.metrics['map50']:.3f} against the base's own detections "
                f"(score >= {d.score_threshold}, {d.n_eval} images, "
                f"{rows[base].quality.metrics.get('detections_per_image', float('nan')):.2f} per image); "
                f"head kept in float vs quantized, mAP@[.5:.95]/mAP@.5: {pairs}",
                ci=ci, loaded=loaded_rounds(ms[best.name], ms[base]))]


def row_olive(outcome: Any) -> dict:
    """Row 2: champion vs the best of Olive's own optimize workflow, same harness, same gates.

    Both timings are the timed pipeline run's own (its pooled rounds, interleaved across every candidate,
    the machine's slot held by the pipeline), not a bench re-measurement.
    """
    sel = outcome.selection
    olive = [r for r in sel.candidates if r.recipe == "olive-optimize" and r.status == "ok"]
    if not olive or sel.pick is None:
        why = "no olive-optimize candidate measured" if not olive else "no champion"
        return row(2, "encoder champion vs Olive's own optimize workflow", None, "<= 0.8x latency", None, why)
    o = olive[0]
    pick = next(r for r in sel.candidates if r.name == sel.pick)
    # pick p50 / Olive p50: speedup_interval(baseline=pick, candidate=Olive's) pairs the pipeline's passes.
    ratio, ci = speedup(pick.measurement, o.measurement)
    q_ok = (pick.quality_retention or 0) >= (o.quality_retention or 0)
    return row(2, f"encoder champion ({pick.name}) vs Olive's best ({o.name})", ratio,
               "<= 0.8x latency (CI high end) at equal or better quality", clears(ci, 0.8, False) and q_ok,
               f"p50 {p50_text(pick.measurement)} vs {p50_text(o.measurement)}, from the timed pipeline run "
               f"({rounds_text(o.measurement)}; not re-measured by bench); 95% CI of the ratio: paired rounds; "
               f"quality retention {pick.quality_retention:.4f} vs {o.quality_retention:.4f}; Olive passed gates: "
               f"{o.passed_gates}", ci=ci, loaded=loaded_rounds(pick.measurement, o.measurement))


@dataclass
class Timed:
    """One run of one side of a comparison: its per-iteration wall times (s), whether the machine was loaded
    just before it, and figures kept for reference only."""

    samples: list[float]
    under_load: bool = False
    reference: dict[str, float] = field(default_factory=dict)


def interleaved(pairs: dict[str, tuple[Any, Any]], repeats: int) -> dict[str, tuple[list[Timed], list[Timed]]]:
    """Run ours, peer, ours, peer, ... for every artifact, so drift on the machine hits both alike; the
    machine's load sampled before each run. Hold `bench_slot`."""
    out: dict[str, tuple[list[Timed], list[Timed]]] = {k: ([], []) for k in pairs}
    for _ in range(repeats):
        for name, sides in pairs.items():
            for side, run in enumerate(sides):
                _load, loaded = sample_load()
                timed = run()
                timed.under_load = loaded
                out[name][side].append(timed)
    return out


def our_measure(ctx: Any, name: str, key: str, counter: list[int]) -> Timed:
    """One fresh-process round of our harness (timing only): its raw series `key` (seconds)."""
    from edgeopt.measure import measure_in_subprocess

    counter[0] += 1
    m = measure_in_subprocess(ctx.cfg.task, ctx.ws.candidate_dir(name), ctx.ws.inputs, ctx.cfg.benchmark,
                              ctx.ws.root / "bench-peers" / f"{name}-{counter[0]}",
                              memory_limit_mb=ctx.params.isolation.memory_limit_mb, write_outputs=False)
    r = m.rounds[0]
    ref = {"decode_tok_s": r.extra["decode_tok_s"]} if "decode_tok_s" in r.extra else {}
    if r.samples.get("throughput_s") and "decode_tok_s" in r.extra:  # causal-lm: wall decode time per generation
        ref["decode_s"] = float(statistics.median(r.samples["throughput_s"]))
    return Timed(list(r.samples[key]), reference=ref)


def ort_loop_peer(path: Path, ids: Any, mask: Any, b: Any) -> Timed:
    """A plain onnxruntime session loop (in this process): its per-iteration wall times."""
    import onnxruntime as ort

    from edgeopt.timing import timed_loop

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = b.threads, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {i.name: (ids if i.name == "input_ids" else mask) for i in sess.get_inputs()}
    return Timed(timed_loop(lambda: sess.run(None, feed), b.warmup_iterations, b.min_iterations, b.min_time_s))


def _median_ms(text: str) -> float | None:
    m = re.search(r"Median:\s+([\d.]+)\s*ms", text)
    return float(m.group(1)) if m else None


def benchmark_app_peer(xml: Path, b: Any) -> Timed:
    """OpenVINO's benchmark_app: its median (it reports no per-iteration times, so one sample per run; raises
    with its last line if it fails)."""
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
    return Timed([peer / 1000])


def llamacpp_peer(gguf: Path, inputs: Path, b: Any, kv_cache: str, n_ctx: int) -> Timed:
    """llama-cpp-python's own greedy loop, wall time per decode step (bench/peer_llamacpp.py in a fresh process);
    llama.cpp's internal counters (llama_perf_context) kept for reference."""
    from edgeopt.measure import thread_env

    cmd = [sys.executable, str(ROOT / "bench" / "peer_llamacpp.py"), str(gguf), str(inputs), str(b.threads),
           str(b.decode_tokens), str(max(1, b.min_iterations)), kv_cache, str(n_ctx), str(b.warmup_iterations)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                         env={**os.environ, **thread_env(b.threads)})
    if res.returncode != 0:
        raise RuntimeError(f"peer_llamacpp failed: {res.stderr.strip().splitlines()[-1:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return Timed([s for run in out["step_s"] for s in run],
                 reference={"decode_s": float(statistics.median(out["decode_s"])),
                            "decode_tok_s": float(statistics.median(out["decode_steps"] / d for d in out["decode_s"])),
                            "perf_decode_tok_s": float(statistics.median(out["perf_decode_tok_s"])),
                            "perf_prompt_tok_s": float(statistics.median(out["perf_prompt_tok_s"]))})


def rows_peers(params_path: Path, outcome: Any, repeats: int) -> list[dict]:
    """Row 8: our wall times vs peer tools' wall times on the same artifacts, same threads, interleaved."""
    import numpy as np

    from edgeopt import stats

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
            pairs[name] = (lambda nm=name: our_measure(ctx, nm, "latency_s", n),
                           lambda p=path: ort_loop_peer(p, ids, mask, b))
            labels[name] = ("a plain onnxruntime session loop", "p50 per batch-1 request")
        for name in [x for x in ("ov-fp32", "nncf-int8-ptq") if x in by]:
            xml = ctx.ws.candidate_dir(name) / "model.xml"
            pairs[name] = (lambda nm=name: our_measure(ctx, nm, "latency_s", n),
                           lambda x=xml: benchmark_app_peer(x, b))
            labels[name] = ("OpenVINO benchmark_app (random data, same shape; its median, one sample per run)",
                            "p50 per batch-1 request")
    else:
        from edgeopt.adapters.llamacpp import SPEED_CTX

        prompt_len = len(np.load(ctx.ws.inputs)["bench_prompt_ids"])
        for name in [x for x in ("gguf-f16", "gguf-q8_0") if x in by]:
            cand = ctx.ws.candidate_dir(name)
            details = json.loads((cand / "candidate.json").read_text()).get("details", {})
            kv = details.get("kv_cache", "f32")  # what our runtime times with (its default where unrecorded)
            n_ctx = max(SPEED_CTX, prompt_len + b.decode_tokens)
            pairs[name] = (lambda nm=name: our_measure(ctx, nm, "latency_s", n),
                           lambda g=cand / "model.gguf", k=kv, c=n_ctx: llamacpp_peer(g, ctx.ws.inputs, b, k, c))
            labels[name] = (f"llama-cpp-python's own loop (Llama.generate top_k=1, wall time per step; {kv} KV, "
                            f"n_ctx {n_ctx})", "p50 wall time per decoded token")
    if not pairs:
        return []
    with bench_slot(ctx, "row8"):
        runs = interleaved(pairs, repeats)
    out = []
    for name, (ours, peer) in runs.items():
        what, unit = labels[name]
        num, den = [t.samples for t in ours], [t.samples for t in peer]
        o, p = stats.median(np.concatenate(num)), stats.median(np.concatenate(den))
        # ours / peer, both wall times: > 0 means ours is slower. CI: rounds paired by pass, iterations resampled.
        lo, hi = stats.rounds_ratio_ci(num, den, stats.median)
        diff, ci = o / p - 1, (lo - 1, hi - 1)
        loaded = (sum(t.under_load for t in ours + peer), len(ours) + len(peer))
        detail = (f"{unit}: ours {o * 1e3:.3f} ms, peer {p * 1e3:.3f} ms (pooled medians of {repeats} interleaved "
                  f"runs each, {sum(map(len, num))} vs {sum(map(len, den))} samples; per run: ours "
                  f"{_fmt_list([stats.median(np.asarray(x)) * 1e3 for x in num])}, peer "
                  f"{_fmt_list([stats.median(np.asarray(x)) * 1e3 for x in den])} ms); 95% CI of the ratio: "
                  "edgeopt.stats.rounds_ratio_ci")
        reference = ""
        if ctx.cfg.task != "text-embedding":
            rate = lambda ts, k: statistics.median(t.reference[k] for t in ts)  # noqa: E731
            detail += (f"; decode tok/s from wall time per generation ({b.decode_tokens - 1} steps): ours "
                       f"{rate(ours, 'decode_tok_s'):.1f}, peer {rate(peer, 'decode_tok_s'):.1f}")
            reference = (f"llama.cpp's internal counters (llama_perf_context, not wall time): decode "
                         f"{rate(peer, 'perf_decode_tok_s'):.1f} tok/s, prompt {rate(peer, 'perf_prompt_tok_s'):.0f} "
                         "tok/s (medians of the peer's runs)")
        out.append(row(8, f"{name}: our {unit} vs {what}", diff, "within 10% (whole CI)",
                       max(abs(ci[0]), abs(ci[1])) <= 0.10, detail, ci=ci, loaded=loaded, reference=reference))
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
    from edgeopt.rounds import speedup_interval

    sel = outcome.selection
    ctx = ctx_for(params_path, outcome.namespace)
    by = {r.name: r for r in sel.candidates if r.status == "ok"}
    f16 = "gguf-f16"
    if sel.pick is None or f16 not in by:
        why = "no champion picked" if sel.pick is None else f"no {f16} candidate measured"
        return [row(3, "LLM champion decode vs F16 GGUF", None, ">= 2.5x at KLD <= 0.05", False, why)]
    pick = sel.pick
    with bench_slot(ctx, "row3"):
        ms = remeasure(ctx, [pick, f16], repeats, chosen_settings(outcome))
        # The decode time per token (latency_s: the pipeline's gated unit for causal-lm), paired rounds.
        ratio, ci = speedup(ms[f16], ms[pick])
        kld = by[pick].quality.metrics["kld"]
        r3_met = clears(ci, 2.5) and kld <= 0.05
        profile = "" if r3_met else "; " + decode_profile(ctx, pick)

    def tok_s(name: str) -> str:
        m = ms[name]
        return f"{m.extra['decode_tok_s']:.1f} {_ci(m.ci.get('decode_tok_s'), '.1f')}"

    # What would meet the target, from the timed pipeline run's pooled rounds (not re-measured).
    ok = [r for r in by.values() if r.quality.metrics.get("kld", 1) <= 0.05]
    fastest_text = "none"
    if ok:
        fastest = max(ok, key=lambda r: r.measurement.throughput_items_per_s)
        f_ci = speedup_interval(by[f16].measurement, fastest.measurement)
        f_ratio = by[f16].measurement.latency.p50_ms / fastest.measurement.latency.p50_ms
        fastest_text = (f"{fastest.name} {f_ratio:.2f}x {_ci(f_ci)} (KLD {fastest.quality.metrics['kld']:.4f}, "
                        f"top-1 {fastest.quality.metrics['top1']:.3f})")
    r3 = row(3, f"LLM champion ({pick}) decode speed vs the F16 GGUF", ratio, ">= 2.5x (CI low end) at KLD <= 0.05",
             r3_met,
             f"decode tok/s {tok_s(pick)} vs {tok_s(f16)} (pooled per-generation rates, {len(ms[f16].rounds)} "
             f"interleaved rounds each); ratio of p50 decode time per token {p50_text(ms[f16])} / {p50_text(ms[pick])}"
             f", 95% CI: paired rounds (edgeopt.rounds.speedup_interval); KLD {kld:.4f}; fastest candidate with "
             f"KLD <= 0.05 in the timed pipeline run (its pooled rounds): {fastest_text}" + profile,
             ci=ci, loaded=loaded_rounds(ms[pick], ms[f16]))
    rows = [r3]
    x = ms[pick].extra
    if "roof_tok_s" in x:
        roof = x["roof_tok_s"]
        fr = x["decode_tok_s"] / roof
        rate_ci = ms[pick].ci.get("decode_tok_s")
        fr_ci = (rate_ci[0] / roof, rate_ci[1] / roof) if rate_ci else None
        best = max((r for r in by.values() if "roof_fraction" in r.measurement.extra),
                   key=lambda r: r.measurement.extra["roof_fraction"])
        rows.append(row(4, f"LLM champion ({pick}) decode as a fraction of the memory-bandwidth roof", fr,
                        ">= 70% (CI low end)", clears(fr_ci, 0.70),
                        f"copy bandwidth {x['copy_bandwidth_gbs']:.1f} GB/s / {x['bytes_per_token_mb']:.1f} MB per "
                        f"token = roof {roof:.0f} tok/s (measured once per machine); decode {tok_s(pick)} tok/s from "
                        f"the row 3 re-measurements, 95% CI: edgeopt.rounds.combine's (rounds and generations "
                        f"resampled) over the roof; {x['decode_gflops']:.1f} GFLOP/s; highest in the timed pipeline "
                        f"run: {best.name} {best.measurement.extra['roof_fraction']:.0%}",
                        ci=fr_ci, loaded=loaded_rounds(ms[pick])))
    else:
        rows.append(row(4, f"LLM champion ({pick}) roof fraction", None, ">= 70%", None,
                        "its runtime reports no roofline (bytes read per token)"))
    size_c, size_f = ms[pick].size_mb, ms[f16].size_mb
    red = 1 - size_c / size_f
    rows.append(row(5, f"LLM champion size vs the F16 GGUF ({pick} vs {f16})", red, ">= 70% smaller",
                    red >= 0.70, f"{size_c:.1f} MB vs {size_f:.1f} MB on disk (the candidates' folders, read by the "
                                 "row 3 re-measurements; no timing)"))
    return rows


def row_tuning(params_path: Path, outcome: Any, repeats: int) -> dict:
    """Row 11: the champion with its probed runtime settings vs the same artifact with the runtime's defaults,
    interleaved. Where the probe kept the defaults both sides run the same configuration: the row is then an
    A/A check of the re-measurement's own noise, and says so."""
    sel = outcome.selection
    ctx = ctx_for(params_path, outcome.namespace)
    what = f"{outcome.namespace} champion, tuned vs untuned runtime settings (same artifact)"
    if sel.pick is None:
        return row(11, what, None, "> 1x, or the defaults kept", None, "no champion picked")
    pick = next(r for r in sel.candidates if r.name == sel.pick)
    tuning = Tuning.model_validate(pick.measurement.tuning) if pick.measurement.tuning else None
    tuned = dict(pick.measurement.runtime_settings)
    default = dict(tuning.default) if tuning else tuned
    with bench_slot(ctx, "row11"):
        ms = remeasure_configs(ctx, {f"{sel.pick}@tuned": (sel.pick, tuned),
                                     f"{sel.pick}@default": (sel.pick, default)}, repeats)
    ratio, ci = speedup(ms[f"{sel.pick}@default"], ms[f"{sel.pick}@tuned"])
    kept = tuned == default
    probes = "; ".join(f"{p.label} " + (f"{p.speedup:.2f}x {_ci(p.speedup_ci)} " if p.speedup is not None else "")
                       + f"({p.verdict})" for p in (tuning.probes if tuning else []) if p.label != "default")
    shown = ", ".join(f"{k}={v}" for k, v in default.items()) or "none"
    probe_text = (probes or tuning.note or "nothing probed") if tuning else "not probed"
    runtime = tuning.runtime if tuning else "runtime unknown"
    detail = (f"{sel.pick} ({runtime}): tuned = {settings_label(tuned, default)}, "
              f"default = {shown}; p50 {p50_text(ms[f'{sel.pick}@tuned'])} vs {p50_text(ms[f'{sel.pick}@default'])} "
              f"({rounds_text(ms[f'{sel.pick}@default'])} each), 95% CI: paired rounds; the pipeline's probe "
              f"({tuning.passes if tuning else 0} interleaved passes): {probe_text}")
    if kept:
        return row(11, what, ratio, "A/A: CI contains 1 (the probe kept the defaults)",
                   ci is not None and ci[0] <= 1 <= ci[1], detail, ci=ci,
                   loaded=loaded_rounds(*ms.values()))
    return row(11, what, ratio, "> 1x (CI low end)", clears(ci, 1.0), detail, ci=ci,
               loaded=loaded_rounds(*ms.values()))


# -- report --------------------------------------------------------------------------------


def _shown(rid: int, v: float) -> str:
    if rid in (6, 8):
        return f"{v:+.1%}"
    if rid in (4, 5):
        return f"{v:.1%}"
    if rid == 7:
        return f"{v:.1f} s"
    return f"{v:.2f}x"


def fmt(r: dict) -> str:
    v, ci = r["measured"], r.get("ci")
    shown = "-" if v is None else _shown(r["row"], v)
    if v is not None and ci:
        shown += f" [{_shown(r['row'], ci[0])}, {_shown(r['row'], ci[1])}]"
    met = {True: "yes", False: "**no**", None: "n/a"}[r["met"]]
    loaded = r.get("loaded")
    load = "-" if not loaded else (f"**{loaded[0]} of {loaded[1]}**" if loaded[0] else f"0 of {loaded[1]}")
    return (f"| {r['row']} | {r['what']} | {shown} | {r['target']} | {met} | {load} | {r['detail']} | "
            f"{r.get('reference') or '-'} |")


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
        lines += ["", f"## {o.namespace}: every candidate of the timed pipeline run (its pooled rounds)", ""]
        lines += markdown_table(results_table(o.selection, o.selection.pick))
    return lines


def write_report(results: list[dict], m: dict[str, Any], out_dir: Path, seconds: float,
                 outcomes: list[Any] | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = machine_slug(m)
    payload = {"machine": m, "rows": results, "bench_seconds": seconds,
               "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    (out_dir / f"{slug}.json").write_text(json.dumps(payload, indent=2, default=str))
    ident = m["identity"]
    lines = [f"# Benchmarks on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB)", "",
             f"ISA: {', '.join(m['isa']) or '-'}; {m['os']}; Python {m['python']}; measured "
             f"{payload['date']} UTC in {seconds / 60:.1f} min.", "",
             f"Machine fingerprint `{m['fingerprint']}` (`edgeopt.machine.identity()`: {ident['cpu_model']}, "
             f"{ident['cores']} cores, {ident['mem_total_kb'] / 2**20:.1f} GiB, {ident['system']} {ident['kernel']} "
             f"{ident['machine']}, {len(ident['cpu_flags'])} CPU flags; all of it in the .json). Every ratio is of "
             "interleaved rounds measured in this run, with its 95% CI in brackets; a goal is met only when the "
             "CI's conservative end clears the target. \"under load\": the rounds behind the row that started with "
             f"other work on the CPUs (`edgeopt.machine.under_load`: > {BUSY_CPUS_LIMIT} busy CPUs or another "
             "runnable task, sampled just before each round).",
             "",
             "| # | compared | measured [95% CI] | target | met | under load | detail | reference (not compared) |",
             "|---|---|---|---|---|---|---|---|"]
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
    results += [row_tuning(params_path, o, args.repeats) for o in outcomes if o.selection is not None]
    md = write_report(results, m, out, time.perf_counter() - started, outcomes)
    print(md.read_text())


if __name__ == "__main__":
    main()
