"""Measure one round of one candidate in a fresh, isolated subprocess, identically for every candidate.

The parent makes the task's inputs once (`inputs.npz`), so every runtime sees the same arrays. The child
loads the candidate through its runtime adapter, lets the pipeline's workload time it after
warm-up, reads its own peak RSS and writes the round with its raw samples. In the round that is asked
to (`outputs_dir`), it then writes the outputs quality is computed from: quality is deterministic, so it
is computed once per candidate, in the parent, against the baseline's outputs.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import machine
from edgeopt.config import BenchmarkConfig
from edgeopt.errors import CandidateError
from edgeopt.io.atomic import write_text_atomic
from edgeopt.lineage import tree_size_bytes
from edgeopt.results import CandidateRecord, Measurement, RoundRecord
from edgeopt.tuning import Tuning, choose, same_outputs

MEASUREMENT_FILE = "measurement.json"
TUNING_FILE = "tuning.json"
# Bumped whenever what a round measures changes: cached measurements of another version are not reused.
HARNESS_VERSION = "4"


def thread_env(threads: int) -> dict[str, str]:
    """Pin every threading library the runtimes use to the benchmark's thread count."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def _record(candidate_dir: Path) -> tuple[CandidateRecord, Path]:
    record = CandidateRecord.model_validate_json((candidate_dir / "candidate.json").read_text())
    model_path = (candidate_dir / record.model_file).resolve()
    if not model_path.is_relative_to(candidate_dir.resolve()):
        raise CandidateError(f"model file {record.model_file!r} points outside its candidate folder")
    return record, model_path


def run_in_this_process(
    task: str, candidate_dir: Path, inputs: Path, bench: BenchmarkConfig, out_dir: Path,
    *, round_index: int = 0, write_outputs: bool = True, outputs_dir: Path | None = None,
    settings: dict[str, Any] | None = None,
) -> Measurement:
    """The child's work (also callable in-process for debugging): one round, written to `out_dir`.

    write_outputs: also write the quality outputs after timing, to `outputs_dir` (default `out_dir`); the
    pipeline asks for them in a candidate's first round only.
    """
    started_at = machine.now_utc()
    from edgeopt.recipes import load_runner
    from edgeopt.workloads.base import get_workload

    workload = get_workload(task)
    record, _ = _record(candidate_dir)
    data = np.load(inputs, allow_pickle=False)
    t0 = time.perf_counter()
    runner = load_runner(record.runtime, candidate_dir, record.model_file, record.details, bench.threads, settings)
    load_time = time.perf_counter() - t0

    speed = workload.benchmark(runner, data, bench, out_dir)
    # The peak of the process, imports and model included, read before the quality sets so their
    # larger batches do not count.
    peak_rss_mb = _peak_rss_mb()
    out_dir.mkdir(parents=True, exist_ok=True)
    if write_outputs:
        outputs_dir = outputs_dir or out_dir
        outputs_dir.mkdir(parents=True, exist_ok=True)
        workload.write_outputs(runner, data, bench, outputs_dir)
    size = tree_size_bytes(candidate_dir) - (candidate_dir / "candidate.json").stat().st_size
    info_fn = getattr(runner, "runtime_info", None)
    identity = machine.identity()
    one = RoundRecord(index=round_index, started_at=started_at, load_time_s=load_time, peak_rss_mb=peak_rss_mb,
                      throughput_items_per_s=speed.throughput_items_per_s, extra=speed.extra,
                      samples={k: [float(x) for x in v] for k, v in speed.samples.items()})
    m = Measurement(
        candidate=record.name, threads=bench.threads,
        sequence_length=bench.sequence_length if workload.sequence_inputs else 0,
        load_time_s=load_time, latency=speed.latency, throughput=speed.throughput,
        throughput_items_per_s=speed.throughput_items_per_s, peak_rss_mb=peak_rss_mb, size_mb=size / 1e6,
        extra=speed.extra, runtime_info=info_fn() if callable(info_fn) else {},
        rounds=[one], started_at=started_at, machine=identity, machine_fingerprint=machine.fingerprint(identity),
        harness_version=HARNESS_VERSION, runtime_settings=dict(getattr(runner, "settings", None) or settings or {}),
    )
    m.write(out_dir / MEASUREMENT_FILE)
    return m


def _first_line(err: BaseException) -> str:
    """A configuration's failure in one line (the probe's table cell)."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def tune_in_this_process(task: str, candidate_dir: Path, inputs: Path, bench: BenchmarkConfig,
                         out_dir: Path) -> Tuning:
    """The child's work of the runtime settings probe: every configuration of the candidate's runtime loaded
    once, timed in `bench.tuning.passes` interleaved passes, its outputs compared with the default's.
    Written to `out_dir/tuning.json`. A runtime without settings, or a task without a probe: the default."""
    from edgeopt.recipes import load_runner, settings_space
    from edgeopt.workloads.base import get_workload

    workload = get_workload(task)
    record, _ = _record(candidate_dir)
    space = settings_space(record.runtime)
    data = np.load(inputs, allow_pickle=False)
    grid = space.grid(bench.threads) if space is not None else [{}]
    runners: dict[int, Any] = {}
    failures: dict[int, str] = {}
    for i, settings in enumerate(grid if len(grid) > 1 else []):
        try:
            runners[i] = load_runner(record.runtime, candidate_dir, record.model_file, record.details,
                                     bench.threads, settings)
        except Exception as err:  # a setting this build of the runtime refuses: that configuration fails
            failures[i] = _first_line(err)
    series: dict[int, list[list[float]]] = {i: [] for i in runners}
    outputs: dict[int, Any] = {}
    probed = bool(runners) and 0 in runners
    # Each runner warms up in the first pass only: later passes time it as it is.
    warm = bench.model_copy(update={"tuning": bench.tuning.model_copy(update={"warmup_iterations": 0})})
    for index in range(bench.tuning.passes if probed else 0):
        for i, runner in runners.items():
            if i in failures:
                continue
            try:
                result = workload.probe(runner, data, bench if index == 0 else warm)
            except Exception as err:
                failures[i] = _first_line(err)
                continue
            if result is None:  # the task has no probe: nothing to tune
                probed = False
                break
            samples, out = result
            series[i].append(samples)
            outputs.setdefault(i, out)
        if not probed or 0 in failures:
            break
    if probed and 0 not in failures:
        equal = {i: same_outputs(outputs[i], outputs[0]) for i in outputs}
        tuning = choose(record.runtime, grid, series, equal, failures)
    else:
        default = grid[0]
        note = ("the runtime has no searchable settings" if len(grid) == 1 else
                f"the default settings failed: {failures[0]}" if 0 in failures else "the task has no probe")
        tuning = Tuning(runtime=record.runtime, default=default, chosen=default, note=note)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / TUNING_FILE, tuning.model_dump_json(indent=2))
    return tuning


def tune_in_subprocess(task: str, candidate_dir: Path, inputs: Path, bench: BenchmarkConfig, out_dir: Path,
                       memory_limit_mb: int | None = None) -> Tuning:
    """The runtime settings probe of one candidate in a fresh, isolated interpreter (like a round)."""
    return Tuning.model_validate_json(_child(
        {"mode": "tune", "task": task, "candidate_dir": str(candidate_dir), "inputs": str(inputs),
         "out_dir": str(out_dir), "bench": bench.model_dump()},
        candidate_dir, out_dir, TUNING_FILE, "settings probe", bench, memory_limit_mb, log_name="tune.log"))


def _peak_rss_mb() -> float:
    """This process's own peak RSS. Linux's ru_maxrss also keeps the high-water mark of the image the
    child was forked from (exec records the old mm's peak), so a child of a 1 GB parent reports >= 1 GB;
    /proc/self/status VmHWM belongs to the current address space only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; other OSes: no /proc


def measure_in_subprocess(
    task: str, candidate_dir: Path, inputs: Path, bench: BenchmarkConfig, out_dir: Path,
    memory_limit_mb: int | None = None, *, round_index: int = 0, write_outputs: bool = True,
    outputs_dir: Path | None = None, settings: dict[str, Any] | None = None,
) -> Measurement:
    """Run one round in a fresh, isolated interpreter (edgeopt.isolation): a crash, hang or
    runaway allocation fails only this candidate, with the tail of `measure.log` in the error."""
    spec = {"task": task, "candidate_dir": str(candidate_dir), "inputs": str(inputs), "out_dir": str(out_dir),
            "bench": bench.model_dump(), "round_index": round_index, "write_outputs": write_outputs,
            "outputs_dir": str(outputs_dir) if outputs_dir else None, "settings": settings or {}}
    return Measurement.model_validate_json(_child(spec, candidate_dir, out_dir, MEASUREMENT_FILE, "measurement",
                                                  bench, memory_limit_mb, log_name="measure.log"))


def _child(spec: dict[str, Any], candidate_dir: Path, out_dir: Path, result_file: str, what: str,
           bench: BenchmarkConfig, memory_limit_mb: int | None, log_name: str) -> str:
    """Run this module's child on `spec`; the text of the `result_file` it wrote, or a CandidateError naming why not."""
    from edgeopt.isolation import exit_text, failure, log_tail, plugin_modules, run_child
    from edgeopt.recipes import get_runtime

    out_dir.mkdir(parents=True, exist_ok=True)
    record = CandidateRecord.model_validate_json((candidate_dir / "candidate.json").read_text())
    try:
        plugins = plugin_modules([get_runtime(record.runtime)])
    except ValueError as err:  # an unknown runtime: say so instead of crashing the child
        raise CandidateError(str(err)) from None
    log = out_dir / log_name
    (out_dir / result_file).unlink(missing_ok=True)
    run = run_child("edgeopt.measure", spec, log=log, timeout_s=bench.timeout_s, memory_limit_mb=memory_limit_mb,
                    what=what, env=thread_env(bench.threads), plugins=plugins)
    if run.returncode == 3:  # the child caught the error and printed it as its last line
        last = log_tail(log, 1).removeprefix("error: ")
        raise failure(what, f"failed: {last}", log)
    if run.returncode != 0:
        raise failure(what, f"crashed: {exit_text(run.returncode)}", log)
    try:
        return (out_dir / result_file).read_text()
    except OSError:
        raise failure(what, f"ended without writing {result_file}", log) from None


def _main(argv: list[str]) -> int:
    import traceback

    from edgeopt.isolation import error_text, setup_child

    spec = json.loads(argv[0])
    setup_child(spec)
    try:
        if spec.get("mode") == "tune":
            tune_in_this_process(spec["task"], Path(spec["candidate_dir"]), Path(spec["inputs"]),
                                 BenchmarkConfig.model_validate(spec["bench"]), Path(spec["out_dir"]))
            return 0
        outputs = spec.get("outputs_dir")
        run_in_this_process(spec["task"], Path(spec["candidate_dir"]), Path(spec["inputs"]),
                            BenchmarkConfig.model_validate(spec["bench"]), Path(spec["out_dir"]),
                            round_index=int(spec.get("round_index", 0)),
                            write_outputs=bool(spec.get("write_outputs", True)),
                            outputs_dir=Path(outputs) if outputs else None, settings=spec.get("settings") or None)
    except Exception as err:  # the runtime's own failure: its last line names it for the parent
        traceback.print_exc()
        print(f"error: {error_text(err, spec)}", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
