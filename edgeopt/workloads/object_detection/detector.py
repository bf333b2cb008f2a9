"""Letterboxed images in, raw head outputs and detections out, through any named-tensor runtime (a `TensorRunner`).

The feed: the model's one input gets uint8 letterboxed images [n, S, S, 3] as float 0..1 NCHW, in the dtype it
declares; a graph with a static batch size (Ultralytics exports batch 1 unless asked otherwise) runs in chunks of
it, the last one padded. The output: the model's first output, [n, 4 + classes, anchors], as float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.iospec import Feed, IOSpec, TensorSpec
from edgeopt.workloads.object_detection.boxes import (
    IOU_THRESHOLD,
    MAX_DETECTIONS,
    Detections,
    Frame,
    detect,
    raw_layout,
    to_original,
    to_pixels,
)


def pixel_input(spec: IOSpec) -> TensorSpec:
    if len(spec.inputs) != 1:
        raise CandidateError(f"object-detection feeds one pixel tensor; the model takes {spec.describe_inputs()}")
    return spec.inputs[0]


def pixel_feed(spec: IOSpec, images: np.ndarray) -> Feed:
    """The model's feed from uint8 [n, H, W, 3] letterboxed images."""
    t = pixel_input(spec)
    return {t.name: np.ascontiguousarray(to_pixels(images), dtype=np.dtype(t.dtype))}


def _static_batch(spec: IOSpec) -> int | None:
    shape = pixel_input(spec).shape
    first = shape[0] if shape else None
    return first if isinstance(first, int) and first > 0 else None


def raw_output(runner: Any, images: np.ndarray) -> np.ndarray:
    """float32 [n, 4 + classes, anchors] for uint8 letterboxed images [n, S, S, 3]."""
    spec: IOSpec = runner.io_spec
    name = spec.output_names[0]
    x = np.asarray(images)
    fixed = _static_batch(spec)
    chunks = [x] if fixed is None or fixed == len(x) else [x[i : i + fixed] for i in range(0, len(x), fixed)]
    parts = []
    for chunk in chunks:
        n = len(chunk)
        if fixed is not None and n < fixed:  # padding rows, dropped below
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), dtype=chunk.dtype)])
        out = np.asarray(runner.run(pixel_feed(spec, chunk))[name], dtype=np.float32)[:n]
        try:
            raw_layout(out)
        except ValueError as err:
            raise CandidateError(f"output {name!r}: {err}") from None
        parts.append(out)
    return np.concatenate(parts)


def detections(runner: Any, images: np.ndarray, frames: Sequence[Frame], batch: int,
               score_threshold: float, iou_threshold: float = IOU_THRESHOLD,
               max_det: int = MAX_DETECTIONS) -> list[Detections]:
    """Each image's detections in its original pixels, `batch` images per runtime call."""
    out: list[Detections] = []
    for start in range(0, len(images), batch):
        raw = raw_output(runner, images[start : start + batch])
        for i, det in enumerate(detect(raw, score_threshold, iou_threshold, max_det)):
            out.append(to_original(det, frames[start + i]))
    return out
