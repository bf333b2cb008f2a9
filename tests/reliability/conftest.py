"""A real, reduced pipeline run with fault-injecting candidates next to two real ones (torch, ONNX)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import reduced_params
from tests.reliability import faults

MEMORY_LIMIT_MB = 1536  # ONNX export peaks near 0.8 GB RSS here; the OOM faults go past this
REAL = [{"name": "torch-fp32", "recipe": "torch-eager"}, {"name": "onnx-fp32", "recipe": "onnx-export"}]
# candidate -> what its error must say (observed outcome, checked by test_isolation.py)
FAULTS = {
    "fault-abort": "build crashed: killed by SIGABRT",
    "fault-segfault": "build crashed: killed by SIGSEGV",
    "fault-exit": "build crashed: exited with code 7",
    "fault-sigkill": "build crashed: killed by SIGKILL (the system may have run out of memory)",
    "fault-raise": "RuntimeError: injected framework failure",
    "fault-oom": f"build exceeded the memory limit of {MEMORY_LIMIT_MB} MB",
    "fault-huge-alloc": "MemoryError",
    "fault-escape": "is not inside its output folder",
    "fault-symlink": "links outside the workspace",
    "fault-measure-abort": "measurement crashed: killed by SIGABRT",
    "fault-measure-oom": f"measurement exceeded the memory limit of {MEMORY_LIMIT_MB} MB",
}
# Lenient gates: the promotion tests need a gated pick from this small run.
LENIENT_GATES = {"min_quality_retention": 0.5, "min_speedup": 0.01, "min_footprint_reduction": -10.0}


def fault_params(tmp: Path, candidates: list[dict], build_timeout_s: float = 600,
                 file_name: str = "params.yaml") -> Path:
    raw = reduced_params(tmp, candidates=candidates, gates=LENIENT_GATES)
    raw["isolation"] = {"build_timeout_s": build_timeout_s, "memory_limit_mb": MEMORY_LIMIT_MB}
    raw["pipelines"]["minilm"]["registry"]["model_name"] = "reliability-edge"
    path = tmp / file_name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def record_outcome(kind: str, case: str, outcome: str) -> None:
    """Append an observed outcome to $EDGEOPT_OUTCOME_LOG (the fault table of the report)."""
    path = os.environ.get("EDGEOPT_OUTCOME_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"kind": kind, "case": case, "outcome": outcome}) + "\n")


@dataclass
class FaultRun:
    root: Path
    params_path: Path
    ctx: object
    prepared: object
    inputs: object
    run: object
    rows: list
    selection: object
    seconds: float
    tracking_uri: str

    def client(self) -> object:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.MlflowClient()


@pytest.fixture(scope="session")
def fault_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultRun]:
    import mlflow

    from edgeopt import tracking
    from edgeopt.config import load_params
    from edgeopt.pipeline.candidates import run_candidates
    from edgeopt.pipeline.context import PipelineContext
    from edgeopt.pipeline.data import prepare_data, prepare_inputs
    from edgeopt.pipeline.runs import start_tracking, track_candidates
    from edgeopt.pipeline.selecting import select_and_log

    faults.register()  # before params are parsed: candidates name these recipes
    tmp = tmp_path_factory.mktemp("faults")
    specs = REAL + [{"name": name, "recipe": name} for name in FAULTS]
    params_path = fault_params(tmp, specs)
    ctx = PipelineContext(load_params(params_path), "minilm", tmp)
    started = time.perf_counter()
    prepared = prepare_data(ctx)
    inputs = prepare_inputs(ctx, prepared)
    run = start_tracking(ctx, prepared, {})
    records, rows = run_candidates(ctx, prepared, inputs)
    rows = track_candidates(ctx, run, rows, records)
    selection = select_and_log(ctx, run, rows)
    yield FaultRun(tmp, params_path, ctx, prepared, inputs, run, rows, selection, time.perf_counter() - started,
                   tracking.tracking_uri(ctx.params, tmp))
    mlflow.set_tracking_uri(None)
    faults.unregister()
