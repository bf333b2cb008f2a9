"""The tensor I/O spec every model carries: input and output names, dtypes, shapes and dynamic axes.

Pure data (no framework import): adapters read a spec off their own graphs (ONNX, OpenVINO IR) or
take the task's (PyTorch), write it into `candidate.json`, and check feeds against it. A dimension is
an int (static) or a string naming a dynamic axis ("batch", "sequence"), as in `torch.onnx.export`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Feed = dict[str, np.ndarray]  # named tensors in, or out, of one model call
Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # a numpy dtype name: "float32", "int64", "bool", ...
    shape: tuple[Dim, ...]

    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def is_dynamic(self, axis: int) -> bool:
        return isinstance(self.shape[axis], str)

    @property
    def is_float(self) -> bool:
        return np.issubdtype(np.dtype(self.dtype), np.floating)

    def problem(self, value: np.ndarray) -> str | None:
        """Why `value` cannot be fed as this tensor (rank or a static size), or None."""
        shape = np.shape(value)
        if len(shape) != len(self.shape):
            return f"{self.name}: rank {len(shape)}, expected {len(self.shape)} ({self.describe()})"
        for axis, (got, want) in enumerate(zip(shape, self.shape, strict=True)):
            if isinstance(want, int) and want != got:
                return f"{self.name}: size {got} on axis {axis}, expected {want} ({self.describe()})"
        return None

    def describe(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TensorSpec:
        return cls(name=str(raw["name"]), dtype=str(raw["dtype"]),
                   shape=tuple(d if isinstance(d, str) else int(d) for d in raw["shape"]))


@dataclass(frozen=True)
class IOSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def input(self, name: str) -> TensorSpec:
        return _named(self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        return _named(self.outputs, name, "output")

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """`torch.onnx.export(dynamic_axes=...)` form: only tensors with a dynamic axis."""
        return {t.name: t.dynamic_axes() for t in (*self.inputs, *self.outputs) if t.dynamic_axes()}

    def feed_problem(self, feed: Mapping[str, np.ndarray]) -> str | None:
        """Why `feed` does not fit the inputs (a missing name, a rank or static size), or None."""
        missing = [t.name for t in self.inputs if t.name not in feed]
        if missing:
            return f"missing input(s) {', '.join(missing)}; the model takes {self.describe_inputs()}"
        for t in self.inputs:
            problem = t.problem(feed[t.name])
            if problem:
                return problem
        return None

    def cast(self, feed: Mapping[str, np.ndarray]) -> Feed:
        """The feed restricted to the model's inputs, each contiguous in the declared dtype."""
        return {t.name: np.ascontiguousarray(feed[t.name], dtype=np.dtype(t.dtype)) for t in self.inputs}

    def describe_inputs(self) -> str:
        return ", ".join(f"{t.name}: {t.describe()}" for t in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> IOSpec:
        return cls(inputs=tuple(TensorSpec.from_dict(t) for t in raw["inputs"]),
                   outputs=tuple(TensorSpec.from_dict(t) for t in raw["outputs"]))


def _named(tensors: tuple[TensorSpec, ...], name: str, what: str) -> TensorSpec:
    for t in tensors:
        if t.name == name:
            return t
    raise KeyError(f"no {what} named {name!r}; the model has {', '.join(t.name for t in tensors)}")


def stack_feeds(feeds: list[Feed], name: str) -> np.ndarray:
    """One input of every feed, concatenated on the leading (sample) axis."""
    return np.concatenate([np.asarray(f[name]) for f in feeds]) if feeds else np.empty((0, 0), dtype=np.int64)
