"""Pixels in, class logits out, through any named-tensor runtime (a `TensorRunner`).

The one place the task's feed and output handling lives, the same for every runtime:

- the feed: the model's first input gets the float pixels, transposed to NHWC when the graph's input is
  [batch, H, W, 3], in the dtype it declares; a graph with a static batch size is run in chunks of it;
- the output: the model's first output, [batch, classes] (trailing singleton axes, as in
  [batch, classes, 1, 1], are dropped). A graph that ends in a softmax returns probabilities: when every
  row is non-negative and sums to 1 (within 1e-3) the output is treated as probabilities and their log is
  returned, which has the same ranking and the same softmax, so agreement and KLD are unaffected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.iospec import Feed, IOSpec, TensorSpec

PROBABILITY_TOLERANCE = 1e-3
MIN_PROBABILITY = 1e-30  # log(0) would make a row non-finite, i.e. broken


def pixel_input(spec: IOSpec) -> TensorSpec:
    if len(spec.inputs) != 1:
        raise CandidateError(f"image-classification feeds one pixel tensor; the model takes {spec.describe_inputs()}")
    return spec.inputs[0]


def is_nhwc(t: TensorSpec) -> bool:
    return len(t.shape) == 4 and t.shape[3] == 3 and t.shape[1] != 3


def pixel_feed(spec: IOSpec, pixels: np.ndarray) -> Feed:
    """The model's feed from float32 NCHW pixels."""
    t = pixel_input(spec)
    x = np.asarray(pixels)
    if is_nhwc(t):
        x = x.transpose(0, 2, 3, 1)
    return {t.name: np.ascontiguousarray(x, dtype=np.dtype(t.dtype))}


def as_logits(out: np.ndarray, name: str = "output") -> np.ndarray:
    """float32 [batch, classes] from a model output: logits as they are, probabilities as their log."""
    arr = np.asarray(out, dtype=np.float32)
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise CandidateError(f"output {name!r} has shape {np.shape(out)}, expected [batch, classes]")
    if arr.size and np.isfinite(arr).all() and (arr >= 0).all() and \
            np.allclose(arr.sum(axis=1, dtype=np.float64), 1.0, atol=PROBABILITY_TOLERANCE):
        return np.log(np.maximum(arr, MIN_PROBABILITY))
    return arr


def static_batch(spec: IOSpec) -> int | None:
    first = pixel_input(spec).shape[0] if pixel_input(spec).shape else None
    return first if isinstance(first, int) and first > 0 else None


def logits(runner: Any, pixels: np.ndarray) -> np.ndarray:
    """float32 [n, classes] for float32 NCHW pixels [n, 3, H, W], in one call (or chunks of a static batch)."""
    spec: IOSpec = runner.io_spec
    name = spec.output_names[0]
    x = np.asarray(pixels)
    fixed = static_batch(spec)
    if fixed is None or fixed == len(x):
        return as_logits(runner.run(pixel_feed(spec, x))[name], name)
    parts = []
    for i in range(0, len(x), fixed):
        chunk = x[i : i + fixed]
        n = len(chunk)
        if n < fixed:  # pad the last chunk to the graph's batch size; the padding rows are dropped
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), dtype=chunk.dtype)])
        parts.append(as_logits(runner.run(pixel_feed(spec, chunk))[name], name)[:n])
    return np.concatenate(parts)


def logits_all(runner: Any, pixels: np.ndarray, batch: int) -> np.ndarray:
    parts = [logits(runner, pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    return np.concatenate(parts).astype(np.float32, copy=False)
