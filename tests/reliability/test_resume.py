"""Resume: `edgeopt run` killed with SIGKILL mid-build and then mid-measurement, then run again.
Finished candidates are cache hits (not rebuilt, not re-measured), nothing half-written is picked
up, no isolated child outlives the killed flow, and the end result equals an uninterrupted run's."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml

from edgeopt.lineage import sha256_file
from tests.integration.conftest import reduced_params
from tests.reliability.conftest import record_outcome

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = [{"name": "torch-fp32", "recipe": "torch-eager"}, {"name": "onnx-fp32", "recipe": "onnx-export"}]


def _params(tmp: Path, slot: str = "edgeopt-benchmark") -> Path:
    raw = reduced_params(tmp, candidates=CANDIDATES)
    raw["pipelines"] = {"minilm": raw["pipelines"]["minilm"]}
    raw["orchestration"] = {"benchmark_concurrency_limit": slot}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _start(params: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeopt.cli", "run", "--params", str(params), "--no-promote"],
                            cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _isolated(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and any(
                    m in " ".join(p.cmdline()) for m in ("edgeopt.isolation", "edgeopt.measure")):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, timeout: float = 600) -> None:
    """SIGKILL the flow's process (only it) once `ready()`; then check its isolated children died with it."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the run ended before the kill point:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "kill point not reached"
        if ready():
            tree = psutil.Process(proc.pid).children(recursive=True)
            children = _isolated(tree)
            if children:  # the build/measure child is running
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # PR_SET_PDEATHSIG: the kernel kills them with their parent, so they are gone at once (a build
    # or benchmark left running would take many seconds here).
    _, alive = psutil.wait_procs(children, timeout=3)
    assert not _isolated(alive), "an isolated child outlived the killed flow"
    for p in tree:  # the rest of what the flow started (Prefect's temporary server): ours to stop
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(tree, timeout=10)


def _reference(tmp: Path) -> tuple[dict, dict[str, str]]:
    """The same config, uninterrupted, through the stage functions."""
    from edgeopt.config import load_params
    from edgeopt.pipeline.candidates import run_candidates
    from edgeopt.pipeline.context import PipelineContext
    from edgeopt.pipeline.data import prepare_data, prepare_inputs

    tmp.mkdir()
    ctx = PipelineContext(load_params(_params(tmp)), "minilm", tmp)
    prepared = prepare_data(ctx)
    inputs = prepare_inputs(ctx, prepared)
    _, rows = run_candidates(ctx, prepared, inputs)
    return {r.name: r for r in rows}, _artifact_hashes(ctx.ws.candidates_dir)


def _artifact_hashes(candidates: Path) -> dict[str, str]:
    return {f"{d.name}/{f.name}": sha256_file(f) for d in sorted(candidates.iterdir())
            for f in sorted(d.iterdir()) if f.name != "candidate.json"}


def test_a_run_killed_twice_resumes_to_the_same_result(tmp_path: Path) -> None:
    work = tmp_path / "resumed"
    work.mkdir()
    # Every run uses the same benchmark slot: a run killed while holding it must not leak it
    # (the machine-local part is a kernel file lock, released when its holder dies).
    params = _params(work, "resume-test")
    ws = work / "outputs" / "minilm"
    cand, meas, staging = ws / "candidates", ws / "measurements", ws / ".staging"

    # 1. Killed while onnx-fp32 is being built (torch-fp32 already built).
    log1 = work / "run1.log"
    _kill_when(_start(params, log1), lambda: (cand / "torch-fp32" / "candidate.json").is_file()
               and any(staging.glob("onnx-fp32.*")), log1)
    torch_built = (cand / "torch-fp32" / "candidate.json").stat().st_mtime_ns
    assert not (cand / "onnx-fp32").exists()  # the half-built candidate was never published
    assert any(staging.glob("onnx-fp32.*"))  # ... its staging folder is what is left
    record_outcome("fault", "SIGKILL of `edgeopt run` mid-build", "flow and build child gone; "
                   "half-built onnx-fp32 only in .staging (not published)")

    # 2. Killed while onnx-fp32 is being measured (torch-fp32 measured).
    log2 = work / "run2.log"
    params = _params(work, "resume-test")
    # Rounds interleave (torch-fp32, onnx-fp32, torch-fp32, ...): killed in onnx-fp32's first round.
    _kill_when(_start(params, log2), lambda: (meas / "torch-fp32" / "rounds" / "0" / "key.txt").is_file()
               and (meas / "onnx-fp32" / "rounds" / "0" / "measure.log").is_file(), log2)
    assert (cand / "torch-fp32" / "candidate.json").stat().st_mtime_ns == torch_built  # not rebuilt
    assert not any(staging.glob("onnx-fp32.*"))  # the stale staging folder was cleared
    onnx_built = (cand / "onnx-fp32" / "candidate.json").stat().st_mtime_ns
    torch_measured = (meas / "torch-fp32" / "rounds" / "0" / "measurement.json").stat().st_mtime_ns
    assert not (meas / "onnx-fp32" / "rounds" / "0" / "key.txt").exists()  # the half round is not committed
    assert not (meas / "onnx-fp32" / "key.txt").exists()
    record_outcome("fault", "SIGKILL of `edgeopt run` mid-measurement", "flow and measure child gone; "
                   "onnx-fp32's round uncommitted (no key.txt)")

    # 3. Runs to the end.
    log3 = work / "run3.log"
    params = _params(work, "resume-test")
    started = time.perf_counter()
    proc = _start(params, log3)
    assert proc.wait(timeout=900) == 0, log3.read_text()[-3000:]
    resume_s = time.perf_counter() - started
    assert (cand / "torch-fp32" / "candidate.json").stat().st_mtime_ns == torch_built
    assert (cand / "onnx-fp32" / "candidate.json").stat().st_mtime_ns == onnx_built
    # The session resumed: torch-fp32's committed round was kept, the rest measured.
    assert (meas / "torch-fp32" / "rounds" / "0" / "measurement.json").stat().st_mtime_ns == torch_measured
    assert (meas / "onnx-fp32" / "key.txt").is_file()
    assert json.loads((meas / "session.json").read_text())["complete"] is True
    assert not staging.exists() or not any(staging.iterdir())
    resumed = {r["name"]: r for r in json.loads((ws / "results.json").read_text())}

    # The same result as a run that was never interrupted.
    ref_rows, ref_hashes = _reference(tmp_path / "reference")
    assert _artifact_hashes(cand) == ref_hashes
    for name, ref in ref_rows.items():
        got = resumed[name]
        assert got["status"] == ref.status == "ok", got.get("error")
        assert got["cache_key"] == ref.cache_key
        for metric, value in ref.quality.metrics.items():
            assert got["quality"]["metrics"][metric] == pytest.approx(value, abs=1e-5), (name, metric)
    record_outcome("fault", "re-run after both kills", f"exit 0 in {resume_s:.0f} s; torch-fp32 and onnx-fp32 "
                   "not rebuilt, torch-fp32's committed round kept; artifacts, cache keys and quality equal an "
                   "uninterrupted run's")
