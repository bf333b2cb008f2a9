"""The recipe registry: every optimization is a registered pass with a declared options model.

A recipe turns its parent (the base model, or another candidate) into a new candidate folder.
A runtime adapter loads such a folder and runs it. Framework modules register both on import;
they import their heavy libraries inside functions, so reading the registry stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.iospec import Feed, IOSpec

if TYPE_CHECKING:  # the registry stays import-light: the spaces come with the adapters that declare them
    from edgeopt.tuning import Settings, SettingsSpace

# Modules that register recipes/runtimes. Adding a framework = one module here + params.yaml.
ADAPTER_MODULES = (
    "edgeopt.adapters.torch_eager",
    "edgeopt.adapters.onnxruntime",
    "edgeopt.adapters.openvino",
    "edgeopt.adapters.llamacpp",
    "edgeopt.adapters.torch_causal_lm",
    "edgeopt.adapters.mlx",
    "edgeopt.adapters.olive",
    "edgeopt.adapters.openvino_llm",
    "edgeopt.adapters.onnxruntime_llm",
    "edgeopt.adapters.olive_llm",
    "edgeopt.adapters.mlx_llm",
)


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class BaseModelInfo:
    """The materialized base model every candidate derives from."""

    path: Path  # a Hugging Face folder, or an ONNX file
    format: str  # "hf" | "onnx" | "gguf"
    sha256: str
    task: str
    # Text tasks: the tokenizer that made the inputs (served with the model); None where there is none.
    tokenizer_dir: Path | None = None
    # The same weights in other formats, e.g. {"gguf": reference.gguf, "hf": hf/} for an LLM
    # shipped as GGUF: recipes take the form they start from.
    variants: dict[str, Path] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # lineage (e.g. "dequantized from Q4_1")


@dataclass(frozen=True)
class ParentArtifact:
    """A built candidate used as the input of another recipe."""

    name: str
    dir: Path
    format: str  # "hf" | "onnx" | "openvino-ir"
    model_file: str  # relative to dir


class Calibration(Protocol):
    """The calibration samples of the task, as named-tensor feeds for the model being quantized."""

    def feeds(self, spec: IOSpec | None = None, own_length: bool = False) -> list[Feed]:
        """One feed per sample (leading axis 1), keyed by `spec`'s input names; None: the task's own names.

        own_length: each sample at its own length where `spec`'s axes are dynamic (text without its
        padding), for quantizers that collect statistics per sample; else the benchmark's fixed shape.
        """
        ...


@dataclass(frozen=True)
class FeedList:
    """A fixed list of calibration feeds (tests, or a task whose feeds do not depend on the model)."""

    items: tuple[Feed, ...] = ()

    def feeds(self, spec: IOSpec | None = None, own_length: bool = False) -> list[Feed]:
        return [spec.cast(f) for f in self.items] if spec is not None else list(self.items)


@dataclass(frozen=True)
class WorkloadCalibration:
    """The calibration feeds of a task's workload, made from the saved inputs on request."""

    workload: Any  # edgeopt.workloads.base.Workload (not imported: the registry stays import-light)
    inputs: Any  # the inputs.npz arrays

    def feeds(self, spec: IOSpec | None = None, own_length: bool = False) -> list[Feed]:
        feeds: list[Feed] = self.workload.calibration(self.inputs, spec, own_length)
        return feeds


@dataclass(frozen=True)
class BuildContext:
    base: BaseModelInfo
    parent: ParentArtifact | None  # None: build from the base model
    out_dir: Path  # an empty folder; published atomically by the caller on success
    options: Any  # an instance of the recipe's options_model
    calibration: Calibration  # built by the task's workload, never from the evaluation set
    threads: int


@dataclass(frozen=True)
class BuildOutput:
    format: str  # "hf" | "onnx" | "openvino-ir": what later recipes may take as parent
    runtime: str  # the runtime adapter that loads it: "torch" | "onnxruntime" | "openvino"
    precision: str  # "fp32", "fp16", "int8", "int8-weights", ...
    model_file: str  # main file, relative to out_dir
    details: dict[str, Any] = field(default_factory=dict)  # recorded in lineage
    # The model's tensor I/O spec (IOSpec.to_dict()); None only for stateful generation runtimes.
    io_spec: dict[str, Any] | None = None


class TensorRunner(Protocol):
    """What every stateless runtime is: named tensors in, named tensors out, one call per batch.

    The task's workload builds the feeds (tokens, pixels, ...) and post-processes the outputs (pooling,
    softmax, top-k) once, for every runtime alike.
    """

    io_spec: IOSpec

    def run(self, feed: Feed) -> Feed:
        """One inference: every input of `io_spec` in, every output out (float outputs as float32)."""
        ...


@dataclass(frozen=True)
class Generation:
    """Timings of one greedy generation: the prompt pass, then one entry per decoded token."""

    ttft_s: float  # prompt processing up to the first generated token
    decode_s: list[float]  # wall time of each further token
    token_ids: list[int]


class CausalLMRunner(Protocol):
    """What a causal-lm runtime returns."""

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """One window [T] int64 from a fresh state -> next-token logits float32 [T, vocab]."""
        ...

    def generate(self, prompt_ids: np.ndarray, max_new_tokens: int) -> Generation:
        """Greedy decoding from a fresh state (KV cache where the runtime has one)."""
        ...


def cpu_flags() -> frozenset[str]:
    """ISA flags of this CPU (Linux /proc/cpuinfo); empty where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@dataclass(frozen=True)
class Requirements:
    """What a recipe needs from the machine. Unmet: the candidate is SKIPPED with the reason."""

    modules: tuple[str, ...] = ()  # importable top-level modules
    cpu_flags: tuple[str, ...] = ()  # e.g. ("avx2",); checked on x86 Linux only
    platforms: tuple[str, ...] = ()  # platform.system() values, e.g. ("Linux", "Darwin")
    machines: tuple[str, ...] = ()  # platform.machine() values, e.g. ("x86_64", "arm64")

    def unmet(self) -> str | None:
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if missing:
            return f"needs Python module(s) {', '.join(missing)}, not installed"
        if self.platforms and platform.system() not in self.platforms:
            return f"needs platform {'/'.join(self.platforms)}, this is {platform.system()}"
        if self.machines and platform.machine() not in self.machines:
            return f"needs CPU architecture {'/'.join(self.machines)}, this is {platform.machine()}"
        flags = cpu_flags()
        lacking = [f for f in self.cpu_flags if flags and f not in flags]
        if lacking:
            return f"needs CPU feature(s) {', '.join(lacking)}"
        return None


@dataclass(frozen=True)
class Recipe:
    name: str
    framework: str  # the library doing the work (lineage + capability checks)
    options_model: type[BaseModel]
    accepts: tuple[str, ...]  # parent formats it can start from; "base" means the base model
    build: Callable[[BuildContext], BuildOutput]
    # With "base" in accepts: the base-model formats (or variants) it can start from; empty: any.
    base_formats: tuple[str, ...] = ()
    description: str = ""
    requires: Requirements = Requirements()
    # The model families its output runs as: "tensor" (a TensorRunner: any task whose workload makes
    # feeds) or "generation" (a stateful decoder). A task declares its family.
    families: tuple[str, ...] = ("tensor",)
    # Narrower: only these tasks (a graph rewrite that knows one architecture); empty: every task of the family.
    tasks: tuple[str, ...] = ()

    def serves(self, task: str, family: str) -> bool:
        return family in self.families and (not self.tasks or task in self.tasks)


# runtime name -> loader(candidate_dir, model_file, details, threads) -> runner of the task. A runtime
# registered with a SettingsSpace also takes `settings=` (one configuration of it, edgeopt.tuning).
RuntimeLoader = Callable[..., Any]

_RECIPES: dict[str, Recipe] = {}
_RUNTIMES: dict[str, RuntimeLoader] = {}
_SETTINGS: dict[str, SettingsSpace] = {}
_loaded = False


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in _RECIPES:
        raise RuntimeError(f"recipe {recipe.name!r} registered twice")
    _RECIPES[recipe.name] = recipe
    return recipe


def register_runtime(name: str, settings: SettingsSpace | None = None) -> Callable[[RuntimeLoader], RuntimeLoader]:
    """Register a runtime's loader; `settings`: the runtime's own settings the measure stage searches."""

    def deco(fn: RuntimeLoader) -> RuntimeLoader:
        _RUNTIMES[name] = fn
        if settings is not None:
            _SETTINGS[name] = settings
        return fn

    return deco


def _load_adapters() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in ADAPTER_MODULES:
            importlib.import_module(mod)


def all_recipes() -> dict[str, Recipe]:
    _load_adapters()
    return dict(_RECIPES)


def get_recipe(name: str) -> Recipe:
    recipes = all_recipes()
    if name not in recipes:
        # ValueError, so pydantic reports it at the candidate's path in params.yaml.
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(recipes))}")
    return recipes[name]


def get_runtime(name: str) -> RuntimeLoader:
    _load_adapters()
    if name not in _RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(sorted(_RUNTIMES))}")
    return _RUNTIMES[name]


def settings_space(runtime: str) -> SettingsSpace | None:
    """The runtime's searchable settings; None: it has none (it runs as loaded)."""
    _load_adapters()
    return _SETTINGS.get(runtime)


def load_runner(runtime: str, candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int,
                settings: Settings | None = None) -> Any:
    """The runner of a candidate, with `settings` (a configuration of its runtime's SettingsSpace) if any."""
    loader = get_runtime(runtime)
    if settings and runtime in _SETTINGS:
        return loader(candidate_dir, model_file, details, threads, settings=settings)
    return loader(candidate_dir, model_file, details, threads)
