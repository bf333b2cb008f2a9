"""Tasks as plug-ins: what a task package declares, and how the core finds the packages.

A task package is any importable package whose module defines `TASK = TaskSpec(...)`: its name, the
model family its candidates run as (which recipes apply), the model and data source kinds its
`params.yaml` section may use, and where its Workload lives. The core finds the packages under
`edgeopt/workloads/` and those other distributions register in the `edgeopt.tasks` entry-point group
(`my_task = "my_package"`), and never names a task itself.

This module imports nothing heavy: `edgeopt.config` reads it while validating params.yaml, and a task
package's own `__init__` must stay as light (its workload module is imported only when the task runs).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from edgeopt.sources import SourceFacts

ENTRY_POINT_GROUP = "edgeopt.tasks"
BUILTIN_PACKAGE = "edgeopt.workloads"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceKind(Strict):
    """A model or data source section of params.yaml; each kind knows how to check itself."""

    kind: str

    def inspect(self, root: Path, where: str) -> SourceFacts:
        """Check a model source's files (relative to `root`) and say what they are, writing nothing."""
        raise NotImplementedError(f"{type(self).__name__} is not a model source")

    def with_paths_under(self, root: Path) -> Any:
        """A copy whose relative paths (params.yaml's, relative to its folder) are under `root`."""
        update = {name: root / value for name, value in self if isinstance(value, Path) and not value.is_absolute()}
        return self.model_copy(update=update) if update else self


# -- model source kinds more than one task uses ----------------------------------------------------


class HFFolderModel(SourceKind):
    """A local Hugging Face folder (config.json, safetensors weights, and the task's preprocessing files)."""

    kind: Literal["hf"] = "hf"
    path: Path

    def inspect(self, root: Path, where: str) -> SourceFacts:
        from edgeopt.sources import hf_folder_facts

        return hf_folder_facts(resolve(self.path, root), where)


class GgufFileModel(SourceKind):
    """A GGUF file (llama.cpp); its tokenizer is read from the file itself."""

    kind: Literal["gguf"] = "gguf"
    path: Path

    def inspect(self, root: Path, where: str) -> SourceFacts:
        from edgeopt.sources import gguf_file_facts

        return gguf_file_facts(resolve(self.path, root), where)


def resolve(path: Path, root: Path) -> Path:
    """A params.yaml path: relative ones are relative to the file's folder."""
    return path if path.is_absolute() else root / path


# -- the task table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    name: str
    # "tensor": stateless named tensors in and out (encoders, classifiers, detectors); "generation":
    # stateful decoding. A recipe declares the families its output runs as.
    family: str
    workload: str  # "module:attribute" of the task's Workload instance
    model_sources: tuple[type[SourceKind], ...]  # the first, with its defaults, is the default model
    data_sources: tuple[type[SourceKind], ...]  # the first, with its defaults, is the default data
    quality_metrics: tuple[str, ...]  # `selection.quality_metrics` when params.yaml names none
    summary: str = ""

    @property
    def model_kinds(self) -> tuple[str, ...]:
        return tuple(_kind_of(c) for c in self.model_sources)

    @property
    def data_kinds(self) -> tuple[str, ...]:
        return tuple(_kind_of(c) for c in self.data_sources)

    def parse_model(self, raw: Any) -> SourceKind:
        return _parse(raw, self.model_sources, "model", self)

    def parse_data(self, raw: Any) -> SourceKind:
        return _parse(raw, self.data_sources, "data", self)

    def load_workload(self) -> Any:
        """The task's Workload instance (typed in edgeopt.workloads.base.get_workload)."""
        module, _, attr = self.workload.partition(":")
        return getattr(importlib.import_module(module), attr)


def _kind_of(cls: type[SourceKind]) -> str:
    default = cls.model_fields["kind"].default
    return str(default)


def _parse(raw: Any, kinds: tuple[type[SourceKind], ...], section: str, task: TaskSpec) -> SourceKind:
    """Validate a `model:` / `data:` section against the task's kinds; ValueError with the YAML path."""
    if raw is None:
        return kinds[0].model_validate({})  # the task's default source, with its defaults
    if isinstance(raw, SourceKind):
        raw = raw.model_dump()
    known = {_kind_of(k): k for k in kinds}
    kind = raw.get("kind", _kind_of(kinds[0])) if isinstance(raw, dict) else None
    if kind not in known:
        raise ValueError(f"{section}.kind: {kind!r} does not fit task {task.name!r} (use one of {', '.join(known)})")
    try:
        return known[kind].model_validate({**raw, "kind": kind})
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{section}.{loc}: {first['msg'].removeprefix('Value error, ')}" if loc
                         else f"{section}: {first['msg']}") from None


@cache
def all_tasks() -> dict[str, TaskSpec]:
    """Every task package: the built-in ones under edgeopt/workloads/, then the entry points."""
    found: dict[str, TaskSpec] = {}
    builtin = importlib.import_module(BUILTIN_PACKAGE)
    modules = [f"{BUILTIN_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(builtin.__path__) if m.ispkg]
    for name in sorted(modules):
        spec = getattr(importlib.import_module(name), "TASK", None)
        if isinstance(spec, TaskSpec):
            _add(found, spec, name)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        loaded = ep.load()
        spec = loaded if isinstance(loaded, TaskSpec) else getattr(loaded, "TASK", None)
        if not isinstance(spec, TaskSpec):
            raise RuntimeError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) is not a TaskSpec")
        _add(found, spec, ep.value)
    return found


def _add(found: dict[str, TaskSpec], spec: TaskSpec, where: str) -> None:
    if spec.name in found:
        raise RuntimeError(f"task {spec.name!r} is declared twice (again in {where})")
    found[spec.name] = spec


def get_task(name: str) -> TaskSpec:
    tasks = all_tasks()
    if name not in tasks:
        # ValueError, so pydantic reports it at the pipeline's `task` in params.yaml.
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(tasks))}")
    return tasks[name]
