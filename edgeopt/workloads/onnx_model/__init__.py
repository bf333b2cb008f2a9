"""onnx-model: any ONNX graph, named tensors in and out, scored by closeness to the FP32 graph's own outputs.

No tokenizer and no task knowledge: the inputs are whatever the graph declares (its I/O spec). They come
from the user's sample feeds (an `.npz` file, one array per input name with a leading sample axis: the only
way for stateful models) or are synthesised, seeded, from declared sizes of the symbolic dimensions and a
value range per input. Integer and boolean inputs (token ids, sample rates, masks) keep their dtype
everywhere: they are fed as given, never synthesised as floats, never quantized. Quality compares every
output with the FP32 base's on identical feeds; the gates read the weakest output.

This module declares the task and stays import-light (pydantic and `edgeopt.taskspec` only); the workload
is `edgeopt.workloads.onnx_model.workload`. Its building blocks:

- `data`:       the graph's I/O spec, the user's feeds or synthesised ones, the data folder;
- `validation`: the Great Expectations suite over the evaluation and calibration feeds;
- `quality`:    numpy metrics of a candidate's outputs against the base's (cosine, relative L2, SNR, ...);
- `serving`:    the promoted pyfunc (a dict of arrays in, a dict of arrays out).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from edgeopt.taskspec import SourceKind, TaskSpec, resolve

if TYPE_CHECKING:
    from edgeopt.sources import SourceFacts


class OnnxGraphModel(SourceKind):
    """Any ONNX file (external data beside it is copied too); its I/O spec is read off the graph."""

    kind: Literal["onnx"] = "onnx"
    path: Path

    def inspect(self, root: Path, where: str) -> SourceFacts:
        import dataclasses

        from edgeopt.sources import onnx_file_facts
        from edgeopt.workloads.onnx_model.data import graph_spec

        path = resolve(self.path, root)
        facts = onnx_file_facts(path, where)  # UserError for a missing or non-ONNX file
        spec = graph_spec(path, where)  # UserError for an input or output this pipeline cannot feed or read
        return dataclasses.replace(facts, details={"io_spec": spec.to_dict()})


class SyntheticFeeds(SourceKind):
    """Seeded feeds made from the graph's I/O spec: `dims` gives every symbolic dimension a size, `ranges` every
    float or integer input its [lo, hi] (integers: inclusive, drawn as integers); a boolean input without a
    range is all true. The calibration set comes from another seeded stream and never repeats an evaluation feed."""

    kind: Literal["synthetic"] = "synthetic"
    dims: dict[str, int] = Field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    n_eval: int = Field(32, ge=1)
    n_calibration: int = Field(16, ge=1)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> SyntheticFeeds:
        for name, size in self.dims.items():
            if size < 1:
                raise ValueError(f"dims.{name}: a dimension's size must be at least 1, got {size}")
        for name, (lo, hi) in self.ranges.items():
            if lo > hi:
                raise ValueError(f"ranges.{name}: lo {lo:g} is above hi {hi:g}")
        return self


class NpzFeeds(SourceKind):
    """The user's sample feeds: an `.npz` with one array per graph input, the leading axis counting samples
    (an array of the input's own rank is split on its first axis, one row a sample; one rank more: one entry a
    sample). Calibration: `calibration_path` (another such file), else a seeded `calibration_fraction` of the
    samples, held out of evaluation."""

    kind: Literal["npz"] = "npz"
    path: Path
    calibration_path: Path | None = None
    calibration_fraction: float | None = Field(None, gt=0, lt=1)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> NpzFeeds:
        if self.calibration_path is not None and self.calibration_fraction is not None:
            raise ValueError("calibration_path and calibration_fraction exclude each other: give one")
        return self


TASK = TaskSpec(
    name="onnx-model",
    family="tensor",
    workload="edgeopt.workloads.onnx_model.workload:WORKLOAD",
    model_sources=(OnnxGraphModel,),
    data_sources=(SyntheticFeeds, NpzFeeds),
    quality_metrics=("min_cosine",),
    summary="any ONNX graph: per-output cosine / relative L2 / max error / SNR (and argmax agreement of class "
            "scores) vs the FP32 graph, gated on the weakest output",
)
