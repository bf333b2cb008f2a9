"""Where each stage reads and writes, per pipeline namespace. One place for every path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeopt.config import Params, PipelineConfig
from edgeopt.errors import UserError


@dataclass(frozen=True)
class Workspace:
    """Paths of one pipeline namespace under `<output_dir>/<namespace>/`."""

    project_root: Path
    namespace: str
    root: Path

    @classmethod
    def for_pipeline(cls, params: Params, namespace: str, project_root: Path) -> Workspace:
        if namespace not in params.pipelines:
            known = ", ".join(params.pipelines)
            raise UserError(f"unknown pipeline {namespace!r}; params.yaml defines: {known}")
        out = output_dir(params, project_root)
        return cls(project_root=project_root.resolve(), namespace=namespace, root=(out / namespace).resolve())

    def confine(self, path: Path) -> Path:
        """Resolve a path and refuse anything that escapes the output folder."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise UserError(f"refusing to write outside {self.root}: {path}")
        return resolved

    @property
    def base_dir(self) -> Path:
        return self.root / "base"

    @property
    def base_info(self) -> Path:
        return self.root / "base.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def validation_report(self) -> Path:
        return self.root / "validation.json"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs.npz"

    @property
    def candidates_dir(self) -> Path:
        return self.root / "candidates"

    def candidate_dir(self, name: str) -> Path:
        return self.confine(self.candidates_dir / name)

    def measurement_dir(self, name: str) -> Path:
        return self.confine(self.root / "measurements" / name)

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    @property
    def promotion(self) -> Path:
        return self.root / "promotion.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"


def pipeline_config(params: Params, namespace: str) -> PipelineConfig:
    if namespace not in params.pipelines:
        raise UserError(f"unknown pipeline {namespace!r}; params.yaml defines: {', '.join(params.pipelines)}")
    return params.pipelines[namespace]


def output_dir(params: Params, project_root: Path) -> Path:
    """The folder every namespace's workspace lives in (params.yaml's `output_dir`, relative to its folder)."""
    out = params.output_dir if params.output_dir.is_absolute() else project_root / params.output_dir
    return out.resolve()
