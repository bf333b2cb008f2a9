"""One real pipeline run on the real model, shared by the integration tests (reduced budget)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def reduced_params(tmp: Path, **pipeline_overrides: object) -> dict:
    """The shipped params.yaml with a small benchmark budget and everything written under tmp."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["output_dir"] = str(tmp / "outputs")
    raw["tracking"] = {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_root": str(tmp / "mlruns"),
                       "experiment": "integration"}
    p = raw["pipelines"]["minilm"]
    # Olive's own search (~2 min) and MLX (minutes per candidate here) have their own tests.
    p["candidates"] = [c for c in p["candidates"] if c["recipe"] not in {"olive-optimize", "mlx-convert"}]
    p["data"].update(max_pairs=80, fidelity_sentences=48)
    p["benchmark"].update(min_iterations=8, min_time_s=0.3, warmup_iterations=2, throughput_batch_size=8,
                          timeout_s=600, rounds=2, extra_rounds=1)
    p.update(copy.deepcopy(pipeline_overrides))
    return raw


def write_params(tmp: Path, raw: dict) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class PipelineRun:
    root: Path
    params_path: Path
    outcomes: list
    tracking_uri: str


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineRun]:
    """The full default candidate set through the Prefect flow, once per session."""
    import mlflow

    from flows.optimize import optimize

    tmp = tmp_path_factory.mktemp("run")
    raw = reduced_params(tmp)
    # The champion test needs a promotion, not a real 2x speed-up on a shared machine (that is a bench/ row).
    raw["pipelines"]["minilm"]["gates"]["min_speedup"] = 0.01
    # One candidate that fails inside its framework: an IR cannot be statically quantized by ORT.
    raw["pipelines"]["minilm"]["candidates"].append(
        {"name": "broken-static", "recipe": "ort-static-int8", "parent": "ov-fp32"})
    params_path = write_params(tmp, raw)
    outcomes = optimize(str(params_path), ["minilm"])
    yield PipelineRun(tmp, params_path, outcomes, raw["tracking"]["uri"])
    mlflow.set_tracking_uri(None)
