"""Measure one candidate in a fresh subprocess, identically for every candidate.

The parent tokenizes once (`inputs.npz`), so every runtime sees the same token ids. The child
loads the candidate through its runtime adapter, times batch-1 latency and a throughput batch
after warm-up, reads its own peak RSS, then embeds the quality sets. Quality numbers are
computed in the parent against the baseline's embeddings.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.config import BenchmarkConfig
from edgeopt.errors import CandidateError
from edgeopt.lineage import tree_size_bytes
from edgeopt.metrics import mean_cosine, percentiles_ms, retention, retrieval_metrics
from edgeopt.results import CandidateRecord, LatencyStats, Measurement, Quality

QUALITY_SETS = ("fidelity", "queries", "documents")
EMBEDDINGS_FILE = "embeddings.npz"
MEASUREMENT_FILE = "measurement.json"


def thread_env(threads: int) -> dict[str, str]:
    """Pin every threading library the runtimes use to the benchmark's thread count."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def _timed_loop(run: Any, warmup: int, min_iters: int, min_time_s: float) -> list[float]:
    for _ in range(warmup):
        run()
    durations: list[float] = []
    start = time.perf_counter()
    while len(durations) < min_iters or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        run()
        durations.append(time.perf_counter() - t)
    return durations


def _stats(durations: list[float], batch: int) -> LatencyStats:
    return LatencyStats(batch_size=batch, iterations=len(durations), **percentiles_ms(durations))


def _encode_all(runner: Any, ids: np.ndarray, mask: np.ndarray, batch: int) -> np.ndarray:
    parts = [runner.encode(ids[i : i + batch], mask[i : i + batch]) for i in range(0, len(ids), batch)]
    return np.concatenate(parts).astype(np.float32)


def run_in_this_process(candidate_dir: Path, inputs: Path, bench: BenchmarkConfig, out_dir: Path) -> Measurement:
    """The child's work (also callable in-process for debugging)."""
    from edgeopt.recipes import get_runtime

    record = CandidateRecord.model_validate_json((candidate_dir / "candidate.json").read_text())
    data = np.load(inputs)
    t0 = time.perf_counter()
    runner = get_runtime(record.runtime)(candidate_dir, record.model_file, record.details, bench.threads)
    load_time = time.perf_counter() - t0

    ids, mask = data["bench_input_ids"], data["bench_attention_mask"]
    b1 = bench.batch_size
    lat = _timed_loop(lambda: runner.encode(ids[:b1], mask[:b1]),
                      bench.warmup_iterations, bench.min_iterations, bench.min_time_s)
    tb = bench.throughput_batch_size
    thr = _timed_loop(lambda: runner.encode(ids[:tb], mask[:tb]),
                      max(1, bench.warmup_iterations // 2), max(3, bench.min_iterations // 4), bench.min_time_s)
    # ru_maxrss is in KiB on Linux: peak of the process, imports and model included.
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    embeddings = {
        name: _encode_all(runner, data[f"{name}_input_ids"], data[f"{name}_attention_mask"],
                          bench.quality_batch_size)
        for name in QUALITY_SETS
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / EMBEDDINGS_FILE, **embeddings)
    size = tree_size_bytes(candidate_dir) - (candidate_dir / "candidate.json").stat().st_size
    info_fn = getattr(runner, "runtime_info", None)
    thr_stats = _stats(thr, tb)
    m = Measurement(
        candidate=record.name,
        threads=bench.threads,
        sequence_length=int(ids.shape[1]),
        load_time_s=load_time,
        latency=_stats(lat, b1),
        throughput=thr_stats,
        throughput_items_per_s=tb / (thr_stats.mean_ms / 1000.0),
        peak_rss_mb=peak_rss_mb,
        size_mb=size / 1e6,
        runtime_info=info_fn() if callable(info_fn) else {},
    )
    m.write(out_dir / MEASUREMENT_FILE)
    return m


def measure_in_subprocess(
    candidate_dir: Path, inputs: Path, bench: BenchmarkConfig, out_dir: Path
) -> Measurement:
    """Run the measurement in a fresh interpreter; a crash or hang fails only this candidate."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {"candidate_dir": str(candidate_dir), "inputs": str(inputs), "out_dir": str(out_dir),
            "bench": bench.model_dump()}
    env = {**os.environ, **thread_env(bench.threads)}
    log = out_dir / "measure.log"
    try:
        with log.open("w") as logf:
            proc = subprocess.run([sys.executable, "-m", "edgeopt.measure", json.dumps(spec)],
                                  stdout=logf, stderr=subprocess.STDOUT, env=env, timeout=bench.timeout_s)
    except subprocess.TimeoutExpired:
        raise CandidateError(f"measurement timed out after {bench.timeout_s:g} s (log: {log})") from None
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        raise CandidateError(f"measurement process exited {proc.returncode}: {tail[0]} (log: {log})")
    return Measurement.model_validate_json((out_dir / MEASUREMENT_FILE).read_text())


def quality_against(candidate_dir: Path, baseline_dir: Path) -> Quality:
    """Cosine to the baseline on the fidelity set; retrieval metrics and their retention."""
    cand, base = np.load(candidate_dir / EMBEDDINGS_FILE), np.load(baseline_dir / EMBEDDINGS_FILE)
    base_retrieval = retrieval_metrics(base["queries"], base["documents"])
    cand_retrieval = retrieval_metrics(cand["queries"], cand["documents"])
    cosine = mean_cosine(base["fidelity"], cand["fidelity"])
    return Quality(
        metrics={"cosine": cosine, **cand_retrieval},
        # Cosine is already relative to the baseline, so it is its own retention.
        retention={"cosine": cosine, **retention(cand_retrieval, base_retrieval)},
    )


def _main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    run_in_this_process(Path(spec["candidate_dir"]), Path(spec["inputs"]),
                        BenchmarkConfig.model_validate(spec["bench"]), Path(spec["out_dir"]))
    return 0


if __name__ == "__main__":
    from edgeopt.environment import quiet_offline_defaults

    quiet_offline_defaults()
    raise SystemExit(_main(sys.argv[1:]))
