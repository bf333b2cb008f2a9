"""Letterboxing, decoding and NMS of the YOLO head's output (numpy), on hand-built outputs and a real image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeopt.workloads.object_detection.boxes import (
    PAD_VALUE,
    Detections,
    batched_nms,
    detect,
    fit,
    iou,
    letterbox,
    nms,
    to_original,
)


def _raw(boxes_xywh: list[list[float]], scores: list[list[float]]) -> np.ndarray:
    """A one-image head output [1, 4 + classes, anchors] from per-anchor boxes and class scores, padded with
    zero-score anchors (a real head has far more anchors than channels)."""
    raw = np.concatenate([np.array(boxes_xywh, np.float32).T, np.array(scores, np.float32).T])
    return np.concatenate([raw, np.zeros((raw.shape[0], 16), np.float32)], axis=1)[None]


def test_letterbox_keeps_the_aspect_ratio_and_pads_grey() -> None:
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    boxed, frame = letterbox(img, 64)
    assert boxed.shape == (64, 64, 3) and boxed.dtype == np.uint8
    assert frame == fit(200, 100, 64) and frame.scale == pytest.approx(0.32) and (frame.left, frame.top) == (0, 16)
    assert (boxed[:16] == PAD_VALUE).all() and (boxed[48:] == PAD_VALUE).all()
    assert (boxed[20:44, :, 0] == 255).all()


def test_boxes_go_back_to_the_original_pixels() -> None:
    frame = fit(200, 100, 64)
    det = Detections(np.array([[0, 16, 64, 48], [-5, 0, 10, 70]], np.float32), np.array([0.9, 0.5], np.float32),
                     np.array([0, 1]))
    back = to_original(det, frame)
    np.testing.assert_allclose(back.boxes[0], [0, 0, 200, 100], atol=1e-4)
    assert back.boxes[1][0] == 0 and back.boxes[1][3] == 100  # clipped to the image


def test_iou_and_greedy_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert iou(boxes[:1], boxes[:1])[0, 0] == pytest.approx(1.0)
    assert iou(boxes[:1], boxes[2:])[0, 0] == 0.0
    assert nms(boxes, np.array([0.5, 0.9, 0.3]), 0.5).tolist() == [1, 2]
    # Another class is never suppressed.
    assert sorted(batched_nms(boxes, np.array([0.5, 0.9, 0.3]), np.array([0, 1, 0]), 0.5).tolist()) == [0, 1, 2]


def test_detect_decodes_centre_boxes_keeps_the_best_class_and_drops_low_scores() -> None:
    raw = _raw([[50, 50, 20, 10], [51, 50, 20, 10], [10, 10, 4, 4], [80, 80, 10, 10]],
               [[0.9, 0.1], [0.8, 0.2], [0.0, 0.0005], [0.1, 0.6]])
    (det,) = detect(raw, score_threshold=0.001, iou_threshold=0.7)
    assert det.classes.tolist() == [0, 1] and det.scores.tolist() == pytest.approx([0.9, 0.6])
    np.testing.assert_allclose(det.boxes[0], [40, 45, 60, 55])
    assert detect(raw, score_threshold=0.95)[0].boxes.shape == (0, 4)


def test_detect_refuses_another_layout_and_drops_non_finite_anchors() -> None:
    with pytest.raises(ValueError, match=r"\[batch, 4 \+ classes, anchors\]"):
        detect(np.zeros((1, 100, 22), np.float32))  # transposed: [batch, anchors, 4 + classes]
    raw = _raw([[50, 50, 20, 10], [10, 10, 5, 5]], [[np.nan, 0.1], [0.7, 0.0]])
    (det,) = detect(raw)
    assert len(det) == 1 and det.scores[0] == pytest.approx(0.7)
