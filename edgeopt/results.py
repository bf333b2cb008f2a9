"""What each stage returns and writes: plain pydantic records, shared by the flow, the CLI,
DVC stages, MLflow logging and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeopt.io.atomic import write_text_atomic

Status = Literal["ok", "failed", "skipped"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def write(self, path: Path) -> None:
        """Write as JSON atomically: a reader never sees half a file."""
        write_text_atomic(path, self.model_dump_json(indent=2))


class CandidateRecord(Record):
    """`candidate.json` inside every built candidate folder: how it was made."""

    name: str
    recipe: str
    framework: str
    parent: str | None
    options: dict[str, Any]
    format: str
    runtime: str
    precision: str
    model_file: str
    details: dict[str, Any] = Field(default_factory=dict)
    cache_key: str
    base_sha256: str
    build_seconds: float
    tool_versions: dict[str, str] = Field(default_factory=dict)
    # The model's tensor I/O spec (edgeopt.iospec.IOSpec.to_dict()); None for stateful generation runtimes.
    io_spec: dict[str, Any] | None = None


class LatencyStats(Record):
    batch_size: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float


class Measurement(Record):
    """What the measurement subprocess observed for one candidate."""

    candidate: str
    threads: int
    sequence_length: int  # token inputs' padded length; 0 for tasks without sequences
    load_time_s: float
    latency: LatencyStats  # batch_size from the benchmark config (1 by default)
    throughput: LatencyStats  # the throughput batch
    throughput_items_per_s: float
    peak_rss_mb: float
    size_mb: float
    extra: dict[str, float] = Field(default_factory=dict)  # workload-specific (tok/s, TTFT, ...)
    runtime_info: dict[str, Any] = Field(default_factory=dict)


class Quality(Record):
    """Quality against the baseline on identical inputs; `retention` is value / baseline value."""

    metrics: dict[str, float]  # cosine, recall@1, recall@10, mrr
    retention: dict[str, float]


class GateResult(Record):
    name: str
    value: float
    threshold: float
    passed: bool


class CandidateResult(Record):
    """One row of the results table."""

    name: str
    recipe: str
    parent: str | None
    status: Status
    error: str | None = None
    stage: str | None = None  # where a failed or skipped candidate stopped: plan, build, measure, evaluate
    framework: str | None = None
    precision: str | None = None
    cache_key: str | None = None
    measurement: Measurement | None = None
    quality: Quality | None = None
    # Derived against the baseline (filled by selection).
    speedup: float | None = None
    size_reduction: float | None = None
    rss_reduction: float | None = None
    quality_retention: float | None = None
    gates: list[GateResult] = Field(default_factory=list)
    mlflow_run_id: str | None = None

    @property
    def passed_gates(self) -> bool:
        return self.status == "ok" and bool(self.gates) and all(g.passed for g in self.gates)

    def objective(self, name: str) -> float:
        m = self.measurement
        if m is None or self.quality_retention is None:
            raise ValueError(f"{self.name}: no measurement")
        values = {
            "latency_p50_ms": m.latency.p50_ms,
            "size_mb": m.size_mb,
            "peak_rss_mb": m.peak_rss_mb,
            "quality_loss": 1.0 - self.quality_retention,
            "load_time_s": m.load_time_s,
        }
        return values[name]


class Selection(Record):
    """The frontier and the pick, as written to `selection.json`."""

    pipeline: str
    baseline: str
    objectives: list[str]
    pick_rule: str
    task: str | None = None  # whose table columns and report this selection gets (None: generic)
    candidates: list[CandidateResult]
    frontier: list[str]
    pick: str | None
    reason: str


class Promotion(Record):
    pipeline: str
    promoted: bool
    model_name: str
    alias: str
    version: str | None = None
    previous_version: str | None = None
    candidate: str | None = None
    reason: str
    unchanged: bool = False  # the pick is the current champion's artifact: no new version was registered


class EvalDataSummary(Record):
    """What a task's `build_data` wrote: counts, files, and a sha256 over their contents.

    n_pairs / n_sentences are text-embedding's words; other tasks put their item counts in n_sentences.
    """

    kind: str
    source: str
    seed: int
    n_pairs: int
    n_sentences: int
    n_calibration: int
    files: list[str]
    sha256: str
