"""Workloads: what "measure" and "quality" mean for one ML task (text-embedding, causal-lm, ...).

The pipeline, the measurement subprocess and promotion are task-agnostic; they ask the
workload of the pipeline's `task` to tokenize the inputs, time the runner, produce the outputs
quality is computed from, compare them with the baseline's, and wrap the promoted model.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.columns import Column
from edgeopt.config import BenchmarkConfig, DataSource, ModelSource, PipelineConfig
from edgeopt.data import EvalDataSummary
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import LatencyStats, Quality
from edgeopt.sources import SourceFacts

# task name -> module defining `WORKLOAD`. Adding a task = one module here + config.
WORKLOAD_MODULES = {
    "text-embedding": "edgeopt.workloads.text_embedding",
    "causal-lm": "edgeopt.workloads.causal_lm",
}


@dataclass(frozen=True)
class Speed:
    """What the benchmark of one runner observed (in the measurement subprocess)."""

    latency: LatencyStats  # the unit the gates compare: batch-1 request, or one decoded token
    throughput: LatencyStats
    throughput_items_per_s: float
    extra: dict[str, float] = field(default_factory=dict)


class Workload(ABC):
    task: str
    # Quality metrics whose retention the gates read by default.
    default_quality_metrics: tuple[str, ...]
    # Every key of `quality().metrics` / `.retention`: what gates and selection may name.
    metric_names: tuple[str, ...] = ()
    # The task's columns of the candidate table; empty: latency, footprint and every quality metric.
    columns: tuple[Column, ...] = ()

    def preflight(self, cfg: PipelineConfig, source: SourceFacts, project_root: Path) -> None:
        """Task-specific checks of the inputs alone (architecture, enough data), before anything starts.

        Raise UserError naming the problem; the default checks nothing.
        """
        return None

    @abstractmethod
    def materialize_base(self, source: ModelSource, dest: Path, project_root: Path) -> BaseModelInfo:
        """Check the model source and copy it (and any derived forms) to `dest`, atomically."""

    @abstractmethod
    def build_data(self, source: DataSource, out_dir: Path, base: BaseModelInfo | None) -> EvalDataSummary:
        """Build the evaluation data folder (`base` is None in preflight, where only file sources are built)."""

    @abstractmethod
    def dataset_rows(self, data_dir: Path) -> list[dict[str, Any]]:
        """The evaluation set as one table, for MLflow's dataset lineage (`log_input`)."""

    def describe_data(self, n_pairs: int, n_items: int) -> str:
        """One line about the evaluation data (`edgeopt prepare`)."""
        return f"{n_items} evaluation items"

    @abstractmethod
    def tokenize(self, tokenizer_dir: Path, data_dir: Path, bench: BenchmarkConfig) -> dict[str, np.ndarray]:
        """All token arrays every candidate will see (saved once as inputs.npz)."""

    @abstractmethod
    def calibration(self, inputs: Any) -> dict[str, np.ndarray]:
        """The calibration arrays handed to recipes that quantize statically."""

    @abstractmethod
    def benchmark(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path | None = None) -> Speed:
        """Time the runner after warm-up (child process).

        out_dir: where this candidate's measurement goes; its parent (the pipeline's measurements folder)
        may hold per-machine caches, e.g. the copy bandwidth causal-lm reports decode speed against.
        """

    @abstractmethod
    def write_outputs(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path) -> None:
        """Run the quality sets and save what `quality` compares (child process)."""

    @abstractmethod
    def quality(self, candidate_dir: Path, baseline_dir: Path) -> Quality:
        """Compare a candidate's saved outputs with the baseline's (parent process)."""

    @abstractmethod
    def python_model(self) -> Path:
        """The models-from-code file that serves a promoted candidate (MLflow's `python_model=<path>`).

        A .py file (see edgeopt/serving_code/) that calls `mlflow.models.set_model(<a PythonModel>)`; the
        registry stores that source, so loading the model executes it instead of unpickling an object.
        """

    @abstractmethod
    def load_check(self, model: Any, data_dir: Path, measurement_dir: Path) -> tuple[bool, str]:
        """Prove a registered model works before the alias moves to it."""


def get_workload(task: str) -> Workload:
    if task not in WORKLOAD_MODULES:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(WORKLOAD_MODULES)}")
    workload: Workload = importlib.import_module(WORKLOAD_MODULES[task]).WORKLOAD
    return workload
