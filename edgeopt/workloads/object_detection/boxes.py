"""Letterboxing and the YOLO head's post-processing, in numpy: what turns a detector's raw output into boxes.

The Ultralytics export layout: one output [batch, 4 + classes, anchors], each anchor's box as (cx, cy, w, h) in
the letterboxed input's pixels, then one already-sigmoid'ed score per class. `detect` keeps each anchor's best
class (Ultralytics' single-label default), drops scores under a threshold, runs per-class greedy NMS and keeps
the `max_det` best; `to_original` undoes the letterbox (scale, then padding), so boxes come out as xyxy in the
original image's pixels, clipped to it.

`letterbox` resizes an image to fit the model's square input keeping its aspect ratio (bilinear, Pillow) and
pads the rest with grey 114, as Ultralytics does; `Frame` records the scale and padding to map boxes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

PAD_VALUE = 114  # Ultralytics' letterbox grey
SCORE_THRESHOLD = 0.001  # what mAP is computed over (Ultralytics' and COCO's validation convention)
IOU_THRESHOLD = 0.7  # Ultralytics' NMS default for YOLOv8
MAX_DETECTIONS = 300


class Frame(NamedTuple):
    """Where an original image sits in its letterboxed square: input = original * scale + (left, top)."""

    scale: float
    left: int
    top: int
    width: int  # the original image's size
    height: int


@dataclass(frozen=True)
class Detections:
    """One image's detections: boxes float32 [n, 4] (x1, y1, x2, y2), scores float32 [n], classes int64 [n]."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def fit(width: int, height: int, size: int) -> Frame:
    """The letterbox frame of a width x height image in a size x size input (centred, Ultralytics' rounding)."""
    if width < 1 or height < 1:
        raise ValueError(f"an image must be at least 1x1, got {width}x{height}")
    scale = min(size / width, size / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return Frame(scale=scale, left=(size - new_w) // 2, top=(size - new_h) // 2, width=width, height=height)


def letterbox(img: Image.Image, size: int) -> tuple[np.ndarray, Frame]:
    """uint8 [size, size, 3] of an RGB image resized to fit (aspect ratio kept, bilinear) and padded grey."""
    from PIL import Image

    frame = fit(img.size[0], img.size[1], size)
    new_w, new_h = max(1, round(frame.width * frame.scale)), max(1, round(frame.height * frame.scale))
    canvas = Image.new("RGB", (size, size), (PAD_VALUE,) * 3)
    canvas.paste(img.convert("RGB").resize((new_w, new_h), Image.Resampling.BILINEAR), (frame.left, frame.top))
    return np.asarray(canvas, dtype=np.uint8), frame


def to_pixels(batch: np.ndarray) -> np.ndarray:
    """uint8 [n, H, W, 3] -> float32 [n, 3, H, W] in 0..1 (Ultralytics' input), C-contiguous."""
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected a [n, H, W, 3] batch, got shape {batch.shape}")
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float32)
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 [len(a), len(b)]: intersection over union of xyxy boxes (0 where both are empty)."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """int64 indices of the boxes greedy NMS keeps, best score first (ties: the lower index first)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = np.asarray(boxes, np.float32)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        overlap = iou(boxes[best : best + 1], boxes[order[1:]])[0]
        order = order[1:][overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS within each class (boxes of different classes never suppress each other); indices, best score first."""
    kept = [idx[nms(boxes[idx], scores[idx], iou_threshold)] for c in np.unique(classes)
            for idx in (np.flatnonzero(classes == c),)]
    keep = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    return keep[np.argsort(-scores[keep], kind="stable")]


def raw_layout(output: np.ndarray) -> tuple[int, int]:
    """(classes, anchors) of a raw head output [batch, 4 + classes, anchors]; ValueError for another layout."""
    shape = np.shape(output)
    if len(shape) != 3 or shape[1] < 5 or shape[2] < shape[1]:
        raise ValueError(f"expected a YOLO head output [batch, 4 + classes, anchors], got shape {tuple(shape)}")
    return int(shape[1] - 4), int(shape[2])


def detect(output: np.ndarray, score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = IOU_THRESHOLD,
           max_det: int = MAX_DETECTIONS) -> list[Detections]:
    """Per image of a raw output [batch, 4 + classes, anchors]: the detections after thresholding and NMS,
    boxes in the letterboxed input's pixels. A non-finite anchor (a broken runtime) is dropped."""
    raw_layout(output)
    out = []
    for image in np.asarray(output, dtype=np.float32):
        scores_all = image[4:]
        classes = scores_all.argmax(axis=0)
        scores = scores_all[classes, np.arange(scores_all.shape[1])]
        ok = (scores > score_threshold) & np.isfinite(scores) & np.isfinite(image[:4]).all(axis=0)
        if not ok.any():
            out.append(Detections.empty())
            continue
        boxes = xywh_to_xyxy(image[:4, ok].T)
        scores, classes = scores[ok], classes[ok].astype(np.int64)
        keep = batched_nms(boxes, scores, classes, iou_threshold)[:max_det]
        out.append(Detections(boxes[keep], scores[keep].astype(np.float32), classes[keep]))
    return out


def to_original(det: Detections, frame: Frame) -> Detections:
    """The detections with boxes mapped from the letterboxed input back to the original image, clipped to it."""
    b = (det.boxes - np.array([frame.left, frame.top, frame.left, frame.top], np.float32)) / np.float32(frame.scale)
    b[:, 0::2] = b[:, 0::2].clip(0, frame.width)
    b[:, 1::2] = b[:, 1::2].clip(0, frame.height)
    return Detections(b.astype(np.float32), det.scores, det.classes)
