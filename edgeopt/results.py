"""What each stage returns and writes: plain pydantic records, shared by the flow, the CLI,
DVC stages, MLflow logging and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeopt.io.atomic import write_text_atomic

Status = Literal["ok", "failed", "skipped"]
# A confidence interval (low, high) at the level `edgeopt.stats.LEVEL`.
Interval = tuple[float, float]


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


class RoundRecord(Record):
    """One measurement round: one fresh process, its raw per-iteration samples and the machine's load before it.

    `samples` holds the raw timings: `latency_s` (the gated unit: a batch-1 request or one decoded token),
    `throughput_s` (one throughput batch), `items_per_s`, and any per-iteration workload series (e.g.
    `decode_tok_s`).
    """

    index: int  # the pass this round ran in: passes interleave candidates (A B C, A B C, ...)
    started_at: str  # UTC, ISO 8601
    load_time_s: float
    peak_rss_mb: float
    throughput_items_per_s: float
    extra: dict[str, float] = Field(default_factory=dict)
    samples: dict[str, list[float]] = Field(default_factory=dict)
    # CPU use outside the measured process and the run queue just before the round (edgeopt.machine).
    load: dict[str, float] = Field(default_factory=dict)
    under_load: bool = False


class Measurement(Record):
    """What the measurement subprocesses observed for one candidate: its rounds pooled (edgeopt.rounds).

    The point values are pooled over every round's samples; `ci` holds a bootstrap confidence interval for
    each (`latency_p50_ms`, `latency_p99_ms`, `throughput_items_per_s`, `peak_rss_mb`, `load_time_s`, and
    extras with per-iteration samples such as `decode_tok_s`).
    """

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
    rounds: list[RoundRecord] = Field(default_factory=list)
    ci: dict[str, Interval] = Field(default_factory=dict)
    started_at: str = ""  # the first round's start (UTC)
    machine: dict[str, Any] = Field(default_factory=dict)  # CPU model, flags, cores, memory, kernel
    machine_fingerprint: str = ""  # a hash of `machine`: a cached measurement is reused only on the same one
    harness_version: str = ""
    reused: bool = False  # taken from the measurement cache of an earlier run (same artifact, machine, harness)
    session: str = ""  # the measuring run that made it: reused only together with its baseline's
    # The runtime settings its rounds ran with (edgeopt.tuning), and the probe that chose them (Tuning as a dict).
    runtime_settings: dict[str, Any] = Field(default_factory=dict)
    tuning: dict[str, Any] = Field(default_factory=dict)

    @property
    def under_load_rounds(self) -> int:
        return sum(r.under_load for r in self.rounds)


class Quality(Record):
    """Quality against the baseline on identical inputs; `retention` is value / baseline value.

    `ci` / `retention_ci`: bootstrap confidence intervals of the metrics that are means over samples
    (retention intervals are paired: the same samples resampled for candidate and baseline).
    """

    metrics: dict[str, float]  # cosine, recall@1, recall@10, mrr
    retention: dict[str, float]
    ci: dict[str, Interval] = Field(default_factory=dict)
    retention_ci: dict[str, Interval] = Field(default_factory=dict)


class GateResult(Record):
    """One gate. With a CI, it passes only when the interval's conservative end clears the threshold;
    `within_noise`: the threshold lies inside the interval, so the decision rests on noise."""

    name: str
    value: float
    threshold: float
    passed: bool
    ci: Interval | None = None
    upper_bound: bool = False  # the gate is `value <= threshold` (max_* metrics)
    within_noise: bool = False

    def text(self) -> str:
        """E.g. "speedup 2.00 [1.93, 2.08]: gate >= 2 not cleared (within noise)"."""
        def num(v: float) -> str:
            return f"{v:.2f}" if self.name == "speedup" else f"{v:.4g}"

        ci = f" [{num(self.ci[0])}, {num(self.ci[1])}]" if self.ci else ""
        verdict = "cleared" if self.passed else "not cleared"
        sign = "<=" if self.upper_bound else ">="
        noise = " (within noise)" if self.within_noise else ""
        return f"{self.name} {num(self.value)}{ci}: gate {sign} {self.threshold:g} {verdict}{noise}"


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
    # CIs of the derived values (speedup: paired rounds against the baseline; quality_retention: paired samples).
    ci: dict[str, Interval] = Field(default_factory=dict)
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

    def objective_interval(self, name: str) -> Interval:
        """The objective's confidence interval; a degenerate one where it is exact (size) or has no CI."""
        value = self.objective(name)
        m = self.measurement
        assert m is not None
        if name == "latency_p50_ms" and "latency_p50_ms" in m.ci:
            return m.ci["latency_p50_ms"]
        if name in ("peak_rss_mb", "load_time_s") and name in m.ci:
            return m.ci[name]
        if name == "quality_loss" and "quality_retention" in self.ci:
            low, high = self.ci["quality_retention"]
            return (1.0 - high, 1.0 - low)
        return (value, value)


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
    # Candidates within the noise of the pick on the pick objective (the pick included); the tie rule chose.
    tie: list[str] = Field(default_factory=list)
    tie_rule: str = ""


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
