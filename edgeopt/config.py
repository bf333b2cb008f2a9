"""The one validated configuration: `params.yaml`, read here and nowhere else.

Every section is a pydantic model with `extra="forbid"`, so a mistyped key is
rejected with its dotted path instead of being silently ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, create_model, field_validator, model_validator

from edgeopt.errors import UserError
from edgeopt.taskspec import SourceKind, Strict, all_tasks, get_task

SLUG = r"^[a-z0-9][a-z0-9_.-]*$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # Prefect work pools and concurrency limits


# Model and data source kinds belong to the task packages (edgeopt.taskspec): each task declares which
# `model:` and `data:` kinds it takes, and a pipeline section is validated against its task's table.


# -- candidates ----------------------------------------------------------------------------


class CandidateSpec(Strict):
    """One candidate: a registered recipe applied to its parent (the base model if None)."""

    name: str = Field(pattern=SLUG)
    recipe: str
    parent: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True  # False: listed (and validated) but not built; shown as skipped

    @model_validator(mode="after")
    def _options_match_recipe(self) -> CandidateSpec:
        from edgeopt.recipes import get_recipe  # the registry is import-light by design

        recipe = get_recipe(self.recipe)  # raises ValueError naming the known recipes
        recipe.options_model.model_validate(self.options)
        return self

    def serves(self, task: str, family: str) -> bool:
        from edgeopt.recipes import get_recipe

        return get_recipe(self.recipe).serves(task, family)


# -- benchmark, gates, selection -----------------------------------------------------------


class TuningConfig(Strict):
    """The runtime settings search (edgeopt.tuning): one short probe process per candidate before its rounds."""

    enabled: bool = True
    passes: int = Field(3, ge=2)  # interleaved passes over the configurations (the CI pairs them)
    warmup_iterations: int = Field(2, ge=0)
    min_iterations: int = Field(10, ge=1)  # per configuration and pass
    min_time_s: float = Field(0.2, ge=0)


class BenchmarkConfig(Strict):
    threads: int = Field(2, ge=1)
    batch_size: int = Field(1, ge=1)
    throughput_batch_size: int = Field(16, ge=1)
    sequence_length: int = Field(128, ge=8, le=512)
    warmup_iterations: int = Field(5, ge=0)
    # Per round: each round is a fresh process that warms up, then times until both floors are reached.
    min_iterations: int = Field(20, ge=1)
    min_time_s: float = Field(0.5, ge=0)
    # Rounds per candidate, interleaved across candidates (A B C, A B C, ...); the baseline is in every pass.
    rounds: int = Field(3, ge=1)
    # Extra passes, at most, for the candidates a decision depends on (a timed gate inside the noise, the
    # pick's rivals within the noise), until their CIs separate.
    extra_rounds: int = Field(2, ge=0)
    quality_batch_size: int = Field(32, ge=1)
    timeout_s: float = Field(1800, gt=0)
    # causal-lm only: prompt processing and decode lengths.
    prompt_tokens: int = Field(512, ge=1)
    decode_tokens: int = Field(128, ge=1)
    # Each candidate's runtime settings, searched before its rounds; the rounds run with the winner.
    tuning: TuningConfig = TuningConfig()


class GatesConfig(Strict):
    """A candidate must pass every gate to be eligible for promotion.

    The ranges refuse gates no candidate could pass (retention above 1, a footprint reduction of
    100%), so such a mistake is one line at start instead of minutes of building for nothing.
    """

    min_quality_retention: float = Field(0.95, gt=0, le=1)
    min_speedup: float = Field(2.0, gt=0, le=1000)
    # Negative: the candidate may be bigger than the baseline (-1 = up to twice its footprint).
    min_footprint_reduction: float = Field(0.5, ge=-100, lt=1)
    # Upper bounds on raw quality metrics, e.g. {kld: 0.05, ppl_ratio: 1.05} for causal-lm.
    max_metrics: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)


Objective = Literal["latency_p50_ms", "size_mb", "peak_rss_mb", "quality_loss", "load_time_s"]


DEFAULT_OBJECTIVES: tuple[Objective, ...] = ("latency_p50_ms", "size_mb", "peak_rss_mb", "quality_loss")


class PickRule(Strict):
    """Among frontier candidates with quality retention >= min, take the one lowest in `by`."""

    by: Objective = "latency_p50_ms"
    min_quality_retention: float = Field(0.99, gt=0, le=1)


class SelectionConfig(Strict):
    baseline: str = Field(pattern=SLUG)
    # The quality metrics whose weakest retention the gates read; params.yaml may omit them: the task's default.
    quality_metrics: list[str] = Field(min_length=1)
    objectives: list[Objective] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    pick: PickRule = PickRule()
    # Relative differences below this are noise even when the CIs separate (e.g. 0.03: within 3%).
    noise_floor: float = Field(0.03, ge=0, lt=1)


class RegistryConfig(Strict):
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    alias: str = Field("champion", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")


class PipelineConfig(Strict):
    """One model's optimization pipeline; each entry of `pipelines` is one namespace."""

    task: str  # a registered task package (`edgeopt tasks`)
    model: SerializeAsAny[SourceKind]  # one of the task's model source kinds; default: its bundled model
    data: SerializeAsAny[SourceKind]  # one of the task's data source kinds; default: its first
    candidates: list[CandidateSpec]
    benchmark: BenchmarkConfig = BenchmarkConfig()
    gates: GatesConfig = GatesConfig()
    selection: SelectionConfig
    registry: RegistryConfig

    @model_validator(mode="before")
    @classmethod
    def _sources_of_the_task(cls, raw: Any) -> Any:
        """`model:` and `data:` are validated by the task's own source kinds (defaults included)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("task"), str):
            return raw
        task = get_task(raw["task"])  # ValueError naming the known tasks
        out = {**raw, "model": task.parse_model(raw.get("model")), "data": task.parse_data(raw.get("data"))}
        selection = raw.get("selection")
        if isinstance(selection, dict) and not selection.get("quality_metrics"):
            out["selection"] = {**selection, "quality_metrics": list(task.quality_metrics)}
        return out

    @model_validator(mode="after")
    def _candidates_form_a_dag(self) -> PipelineConfig:
        names = [c.name for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate candidate names: {dupes}")
        family = get_task(self.task).family
        for c in self.candidates:
            if not c.serves(self.task, family):
                raise ValueError(f"candidate {c.name!r}: recipe {c.recipe!r} does not serve task {self.task!r}")
            if c.parent is not None and c.parent not in names:
                raise ValueError(f"candidate {c.name!r}: parent {c.parent!r} is not a candidate")
            if c.parent is not None and names.index(c.parent) > names.index(c.name):
                raise ValueError(f"candidate {c.name!r}: parent {c.parent!r} must be listed before it")
        if self.selection.baseline not in names:
            raise ValueError(f"selection.baseline {self.selection.baseline!r} is not a candidate")
        return self


class TrackingConfig(Strict):
    """MLflow. `uri: null` means $MLFLOW_TRACKING_URI, else sqlite `mlflow.db` in the project."""

    uri: str | None = None
    artifact_root: Path = Path("mlruns")
    experiment: str = "edgeopt"


class OrchestrationConfig(Strict):
    """How Prefect runs the stages."""

    task_runner: Literal["thread", "dask"] = "thread"
    max_workers: int = Field(1, ge=1)  # concurrent candidate builds (threads or Dask workers)
    dask_address: str | None = None  # an existing Dask scheduler; None starts a LocalCluster
    # A global concurrency limit: one benchmark per machine at a time keeps timings clean.
    benchmark_concurrency_limit: str = Field("edgeopt-benchmark", pattern=NAME)
    benchmark_wait_s: float = Field(7200, gt=0)  # how long a measurement waits for that slot
    # The local Prefect server `edgeopt run` starts when PREFECT_API_URL is unset: how long to wait
    # for it. A first start on a fresh, slow machine (database migrations) takes a minute or more.
    server_start_timeout_s: float = Field(300, gt=0)
    # A second `edgeopt run` on the same workspace waits this long for the first one, then refuses.
    workspace_lock_wait_s: float = Field(0, ge=0)
    # Deployments (deployments/deploy.py): the pool the optimize flows run on, and the nightly
    # re-optimization of every pipeline (null: no schedule).
    work_pool: str = Field("edgeopt", pattern=NAME)
    schedule_cron: str | None = "0 2 * * *"
    schedule_timezone: str = "UTC"


TARGET = r"^[a-z0-9][a-z0-9_-]*$"  # also part of an MLflow alias (`champion-<target>`): no dots


class TargetConfig(Strict):
    """A measurement target: a device whose Prefect worker polls the target's own work pool."""

    work_pool: str | None = Field(None, pattern=NAME)  # None: `edgeopt-<target>`
    # None: `<benchmark_concurrency_limit>-<target>`; targets that share a machine share a limit.
    concurrency_limit: str | None = Field(None, pattern=NAME)
    threads: int | None = Field(None, ge=1)  # benchmark threads there; None: the pipeline's
    timeout_s: float = Field(7200, gt=0)  # how long the optimize flow waits for the target's run


class IsolationConfig(Strict):
    """Each candidate build runs in its own process with these limits."""

    build_timeout_s: float = Field(3600, gt=0)
    memory_limit_mb: int | None = Field(None, ge=256)  # None: no limit beyond the machine


class Params(Strict):
    output_dir: Path = Path("outputs")
    tracking: TrackingConfig = TrackingConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    isolation: IsolationConfig = IsolationConfig()
    pipelines: dict[str, PipelineConfig]
    targets: dict[str, TargetConfig] = Field(default_factory=dict)  # measurement devices (optional)

    @field_validator("targets")
    @classmethod
    def _target_names(cls, v: dict[str, TargetConfig]) -> dict[str, TargetConfig]:
        bad = [k for k in v if not re.match(TARGET, k) or k == "local"]
        if bad:
            raise ValueError(f"target names must be lowercase slugs without dots, not 'local': {bad}")
        return v

    @field_validator("pipelines")
    @classmethod
    def _namespace_names(cls, v: dict[str, PipelineConfig]) -> dict[str, PipelineConfig]:
        bad = [k for k in v if not re.match(SLUG, k)]
        if bad:
            raise ValueError(f"pipeline names must be lowercase slugs: {bad}")
        if not v:
            raise ValueError("at least one pipeline is required")
        return v


def _format_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        # Drop pydantic's union-branch tags (e.g. `bundled`) so the path reads like the YAML.
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-")))
        msg = e["msg"].removeprefix("Value error, ")
        # A task's `model:` / `data:` section is validated inside the pipeline; its error names the key.
        nested = re.match(r"^((?:model|data)(?:\.[\w-]+)*): (.*)$", msg)
        if nested:
            loc, msg = f"{loc}.{nested.group(1)}" if loc else nested.group(1), nested.group(2)
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_params(raw: Any, source: str = "params") -> Params:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"{source}: {_format_errors(err)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys silently: a pipeline or candidate defined twice would vanish."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate params.yaml; relative paths inside stay relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"params file not found: {path}")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None
    return parse_params(raw, str(path))


def json_schema() -> str:
    """The schema of params.yaml, with every registered task's model and data source kinds."""
    tasks = all_tasks().values()
    models = tuple(dict.fromkeys(k for t in tasks for k in t.model_sources))
    data = tuple(dict.fromkeys(k for t in tasks for k in t.data_sources))
    model_union: Any = Union[models]  # noqa: UP007 - a union over a runtime tuple
    data_union: Any = Union[data]  # noqa: UP007
    pipeline: Any = create_model("PipelineConfig", __base__=PipelineConfig, __doc__=PipelineConfig.__doc__,
                                 model=(model_union, ...), data=(data_union, ...))
    params = create_model("Params", __base__=Params, pipelines=(dict[str, pipeline], ...))
    return json.dumps(params.model_json_schema(), indent=2)
