"""Measure one candidate in a fresh subprocess, identically for every candidate.

The parent tokenizes once (`inputs.npz`), so every runtime sees the same token ids. The child
loads the candidate through its runtime adapter, lets the pipeline's workload time it after
warm-up, reads its own peak RSS, then writes the outputs quality is computed from. Quality
numbers are computed in the parent against the baseline's outputs.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgeopt.config import BenchmarkConfig
from edgeopt.errors import CandidateError
from edgeopt.lineage import tree_size_bytes
from edgeopt.results import CandidateRecord, Measurement

MEASUREMENT_FILE = "measurement.json"


def thread_env(threads: int) -> dict[str, str]:
    """Pin every threading library the runtimes use to the benchmark's thread count."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def run_in_this_process(
    task: str, candidate_dir: Path, inputs: Path, bench: BenchmarkConfig, out_dir: Path
) -> Measurement:
    """The child's work (also callable in-process for debugging)."""
    from edgeopt.recipes import get_runtime
    from edgeopt.workloads import get_workload

    workload = get_workload(task)
    record = CandidateRecord.model_validate_json((candidate_dir / "candidate.json").read_text())
    data = np.load(inputs)
    t0 = time.perf_counter()
    runner = get_runtime(record.runtime)(candidate_dir, record.model_file, record.details, bench.threads)
    load_time = time.perf_counter() - t0

    speed = workload.benchmark(runner, data, bench)
    # ru_maxrss is in KiB on Linux: the peak of the process, imports and model included,
    # read before the quality sets so their larger batches do not count.
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out_dir.mkdir(parents=True, exist_ok=True)
    workload.write_outputs(runner, data, bench, out_dir)
    size = tree_size_bytes(candidate_dir) - (candidate_dir / "candidate.json").stat().st_size
    info_fn = getattr(runner, "runtime_info", None)
    m = Measurement(
        candidate=record.name, threads=bench.threads, sequence_length=bench.sequence_length,
        load_time_s=load_time, latency=speed.latency, throughput=speed.throughput,
        throughput_items_per_s=speed.throughput_items_per_s, peak_rss_mb=peak_rss_mb, size_mb=size / 1e6,
        extra=speed.extra, runtime_info=info_fn() if callable(info_fn) else {},
    )
    m.write(out_dir / MEASUREMENT_FILE)
    return m


def measure_in_subprocess(
    task: str, candidate_dir: Path, inputs: Path, bench: BenchmarkConfig, out_dir: Path
) -> Measurement:
    """Run the measurement in a fresh interpreter; a crash or hang fails only this candidate."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {"task": task, "candidate_dir": str(candidate_dir), "inputs": str(inputs), "out_dir": str(out_dir),
            "bench": bench.model_dump()}
    env = {**os.environ, **thread_env(bench.threads)}
    log = out_dir / "measure.log"
    (out_dir / MEASUREMENT_FILE).unlink(missing_ok=True)
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


def _main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    run_in_this_process(spec["task"], Path(spec["candidate_dir"]), Path(spec["inputs"]),
                        BenchmarkConfig.model_validate(spec["bench"]), Path(spec["out_dir"]))
    return 0


if __name__ == "__main__":
    from edgeopt.environment import quiet_offline_defaults

    quiet_offline_defaults()
    raise SystemExit(_main(sys.argv[1:]))
