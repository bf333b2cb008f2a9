"""The Workload: what "inputs", "measure" and "quality" mean for one ML task.

The pipeline, the measurement subprocess and promotion are task-agnostic; they ask the workload of
the pipeline's task to make the input arrays, build calibration feeds, time the runner, produce the
outputs quality is computed from, compare them with the baseline's, and wrap the promoted model.
Each task package (`edgeopt/workloads/<task>/`) declares its `TASK` and implements one Workload.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.columns import Column, generic_columns
from edgeopt.errors import CandidateError
from edgeopt.iospec import Feed, IOSpec
from edgeopt.results import EvalDataSummary, LatencyStats, Quality, Selection
from edgeopt.timing import stats, timed_loop

if TYPE_CHECKING:
    import mlx.nn
    import onnx
    import torch

    from edgeopt.config import BenchmarkConfig, PipelineConfig
    from edgeopt.recipes import BaseModelInfo
    from edgeopt.sources import SourceFacts
    from edgeopt.taskspec import SourceKind
    from edgeopt.validation import ValidationReport


@dataclass(frozen=True)
class Speed:
    """What the benchmark of one runner observed (in the measurement subprocess)."""

    latency: LatencyStats  # the unit the gates compare: batch-1 request, or one decoded token
    throughput: LatencyStats
    throughput_items_per_s: float
    extra: dict[str, float] = field(default_factory=dict)
    # Raw per-iteration series (seconds, or items/s): `latency_s`, `throughput_s`, and any of the task's own
    # (e.g. `decode_tok_s`); stored with the round and bootstrapped across rounds (edgeopt.rounds).
    samples: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class TorchForm:
    """The task's PyTorch module for a base folder: what torch-eager runs and the exporters trace.

    `forward` takes the inputs of `io_spec` positionally, in order, and returns its outputs (a tensor,
    or a tuple in order). `example` is a small feed for tracing; its dynamic axes are those of `io_spec`.
    """

    module: torch.nn.Module
    io_spec: IOSpec
    example: Feed


@dataclass(frozen=True)
class MlxForm:
    """The task's Apple MLX module for a folder: what mlx-convert converts and the mlx runtime runs.

    `module` is called with the inputs of `io_spec` positionally, in order, as mx arrays (integer inputs
    as int32, float inputs as float32: it casts to its own dtype) and returns its outputs (an array, or a
    tuple in order); the task's post-processing stays in the workload, as for every runtime.
    """

    module: mlx.nn.Module
    io_spec: IOSpec


class Workload(ABC):
    task: str
    # Quality metrics whose retention the gates read by default.
    default_quality_metrics: tuple[str, ...]
    # Every key of `quality().metrics` / `.retention`: what gates and selection may name.
    metric_names: tuple[str, ...] = ()
    # The task's columns of the candidate table; empty: latency, footprint and every quality metric.
    columns: tuple[Column, ...] = ()
    # Whether `benchmark.sequence_length` shapes the inputs (token sequences padded to it).
    sequence_inputs: bool = False

    def preflight(self, cfg: PipelineConfig, source: SourceFacts, project_root: Path) -> None:
        """Task-specific checks of the inputs alone (architecture, enough data), before anything starts.

        Raise UserError naming the problem; the default checks nothing.
        """
        return None

    # -- the base model and the data ------------------------------------------------------------

    @abstractmethod
    def materialize_base(self, source: SourceKind, dest: Path, project_root: Path) -> BaseModelInfo:
        """Check the model source and copy it (and any derived forms) to `dest`, atomically."""

    @abstractmethod
    def build_data(self, source: SourceKind, out_dir: Path, base: BaseModelInfo | None) -> EvalDataSummary:
        """Build the evaluation data folder (`base` is None in preflight, where only file sources are built)."""

    @abstractmethod
    def validate_data(self, data_dir: Path, report_path: Path | None) -> ValidationReport:
        """The task's Great Expectations suites over its data folder (never raises on bad data)."""

    @abstractmethod
    def dataset_rows(self, data_dir: Path) -> list[dict[str, Any]]:
        """The evaluation set as one table, for MLflow's dataset lineage (`log_input`)."""

    def describe_data(self, n_pairs: int, n_items: int) -> str:
        """One line about the evaluation data (`edgeopt prepare`)."""
        return f"{n_items} evaluation items"

    # -- inputs and calibration -------------------------------------------------------------------

    @abstractmethod
    def prepare_inputs(self, base: BaseModelInfo, data_dir: Path, bench: BenchmarkConfig) -> dict[str, np.ndarray]:
        """Every array every candidate will see (token ids, pixels, ...), saved once as inputs.npz."""

    @abstractmethod
    def calibration(self, inputs: Any, spec: IOSpec | None, own_length: bool = False) -> list[Feed]:
        """Calibration feeds for static quantizers: one sample each, keyed by `spec`'s input names.

        `spec` is the model being quantized (None: the task's own input names). `own_length`: each
        sample at its own length where the model's axes are dynamic (e.g. text without its padding);
        otherwise at the benchmark's fixed shape. Built from the calibration set only, never from
        the evaluation inputs.
        """

    def torch_form(self, model_dir: Path, for_export: bool = False) -> TorchForm:
        """The PyTorch module of a base folder (torch-eager, ONNX export, Olive); tasks without one refuse."""
        raise CandidateError(f"task {self.task!r} has no PyTorch form")

    def float_nodes(self, model: onnx.ModelProto) -> list[str]:
        """Names of the nodes of `model` that static INT8 must keep in float for this task's outputs to survive.

        ort-static-int8 (`nodes_to_exclude`) and nncf-ptq-int8 (`nncf.IgnoredScope`) read it when their
        `keep_task_float_nodes` option is on, e.g. a detector's head, whose concat of box coordinates and class
        scores has no 8-bit scale that fits both. The default keeps nothing in float.
        """
        return []

    def mlx_form(self, model_dir: Path, weights: bool = True) -> MlxForm:
        """The MLX module of a folder (mlx-convert, the mlx runtime); tasks without one refuse.

        weights: load the folder's own (base-model) weights into it; False: the architecture alone, from
        the folder's config, for the runtime that loads the converted weights of a candidate.
        """
        raise CandidateError(f"task {self.task!r} has no MLX form")

    # -- measurement (child process) and quality (parent) ------------------------------------------

    @abstractmethod
    def benchmark(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path | None = None) -> Speed:
        """Time the runner after warm-up (child process).

        out_dir: where this candidate's measurement goes; its parent (the pipeline's measurements folder)
        may hold per-machine caches, e.g. the copy bandwidth causal-lm reports decode speed against.
        """

    def batch_call(self, runner: Any, inputs: Any, n: int) -> Callable[[], object] | None:
        """The call that runs one benchmark batch of n items, returning its outputs; None: the task has none."""
        return None

    def probe(self, runner: Any, inputs: Any, bench: BenchmarkConfig) -> tuple[list[float], Any] | None:
        """A short timing of the gated unit (seconds per sample) and the outputs it gave, for the runtime
        settings search (edgeopt.tuning); None: the task cannot be probed (its runtimes run untuned)."""
        call = self.batch_call(runner, inputs, bench.batch_size)
        if call is None:
            return None
        tuning = bench.tuning
        samples = timed_loop(call, tuning.warmup_iterations, tuning.min_iterations, tuning.min_time_s)
        return samples, call()

    @abstractmethod
    def write_outputs(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path) -> None:
        """Run the quality sets and save what `quality` compares (child process)."""

    @abstractmethod
    def quality(self, candidate_dir: Path, baseline_dir: Path) -> Quality:
        """Compare a candidate's saved outputs with the baseline's (parent process)."""

    # -- serving ----------------------------------------------------------------------------------

    @abstractmethod
    def python_model(self) -> Path:
        """The models-from-code file that serves a promoted candidate (MLflow's `python_model=<path>`).

        A .py file in the task's package (`serving_code.py`) that calls `mlflow.models.set_model(<a
        PythonModel>)`; the registry stores that source, so loading the model executes it instead of
        unpickling an object.
        """

    def serving_artifacts(self, base: BaseModelInfo) -> dict[str, Path]:
        """Files the served model needs besides the candidate folder (e.g. the tokenizer)."""
        return {"tokenizer": base.tokenizer_dir} if base.tokenizer_dir is not None else {}

    def serving_config(self, cfg: PipelineConfig, base: BaseModelInfo) -> dict[str, Any]:
        """The pyfunc's `model_config`: the measured settings it serves with."""
        return {"threads": cfg.benchmark.threads}

    @abstractmethod
    def load_check(self, model: Any, data_dir: Path, measurement_dir: Path) -> tuple[bool, str]:
        """Prove a registered model works before the alias moves to it."""


def batch_speed(make_call: Callable[[int], Callable[[], object]], bench: BenchmarkConfig,
                extra: dict[str, float] | None = None) -> Speed:
    """A tensor task's timing: batches of `bench.batch_size` (latency), then of `throughput_batch_size`
    (throughput), each after its warm-up. `make_call(n)` gives the call that runs one batch of n items."""
    b1, tb = bench.batch_size, bench.throughput_batch_size
    lat = timed_loop(make_call(b1), bench.warmup_iterations, bench.min_iterations, bench.min_time_s)
    thr = timed_loop(make_call(tb), max(1, bench.warmup_iterations // 2), max(3, bench.min_iterations // 4),
                     bench.min_time_s)
    items_per_s = [tb / d for d in thr]
    return Speed(latency=stats(lat, b1), throughput=stats(thr, tb),
                 throughput_items_per_s=float(np.median(items_per_s)), extra=extra or {},
                 samples={"latency_s": lat, "throughput_s": thr, "items_per_s": items_per_s})


def get_workload(task: str) -> Workload:
    """The Workload of a registered task (see edgeopt.taskspec)."""
    from edgeopt.taskspec import get_task

    workload: Workload = get_task(task).load_workload()
    return workload


def table_columns(selection: Selection) -> tuple[Column, ...]:
    """The task's own columns of a candidate table, or the generic ones (any task, or none recorded)."""
    task_columns = get_workload(selection.task).columns if selection.task else ()
    return task_columns or generic_columns(selection.candidates)
