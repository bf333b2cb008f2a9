"""What every stage runs for (a namespace of params.yaml) and the records stages hand each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from edgeopt.config import Params, PipelineConfig
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import Record
from edgeopt.workspace import Workspace


@dataclass(frozen=True)
class PipelineContext:
    """One namespace of params.yaml, and the project folder its relative paths start from."""

    params: Params
    namespace: str
    project_root: Path

    @property
    def cfg(self) -> PipelineConfig:
        return self.params.pipelines[self.namespace]

    @property
    def ws(self) -> Workspace:
        return Workspace.for_pipeline(self.params, self.namespace, self.project_root)


class PreparedData(Record):
    """The prepare stage's result (`base.json`): the base model copied into the workspace and its data's digest."""

    base_path: str
    base_format: str
    tokenizer_dir: str | None
    base_sha256: str
    task: str
    data_digest: str
    n_pairs: int
    n_sentences: int
    base_variants: dict[str, str] = Field(default_factory=dict)
    base_details: dict[str, Any] = Field(default_factory=dict)
    # The base model's tensor I/O spec (IOSpec.to_dict()); None for a generation model.
    base_io_spec: dict[str, Any] | None = None

    def base(self) -> BaseModelInfo:
        return BaseModelInfo(path=Path(self.base_path), format=self.base_format, sha256=self.base_sha256,
                             task=self.task, tokenizer_dir=Path(self.tokenizer_dir) if self.tokenizer_dir else None,
                             variants={k: Path(v) for k, v in self.base_variants.items()},
                             details=self.base_details)


class ModelInputs(Record):
    """The input arrays every candidate is measured on (one `.npz`), and their digest."""

    path: str
    digest: str
    shapes: dict[str, list[int]]
