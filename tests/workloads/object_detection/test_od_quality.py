"""Confidence intervals of the object-detection quality metrics on the real YOLOv8n detector's outputs: only
detections_per_image, a mean over images, gets one; mAP (and so every retention) is pooled over images: none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.config import BenchmarkConfig
from edgeopt.workloads.object_detection.quality import DETECTIONS_FILE, confident, load_detections
from edgeopt.workloads.object_detection.workload import WORKLOAD


def test_detections_per_image_gets_an_interval_over_images(od_inputs: Path, od_runner: Any,
                                                           od_bench: BenchmarkConfig, tmp_path: Path) -> None:
    with np.load(od_inputs) as inputs:
        WORKLOAD.write_outputs(od_runner, inputs, od_bench, tmp_path)
        threshold = float(inputs["score_threshold"])
    q = WORKLOAD.quality(tmp_path, tmp_path)
    assert set(q.ci) == {"detections_per_image"} and q.retention_ci == {}
    dets, _ = load_detections(tmp_path / DETECTIONS_FILE)
    counts = [len(d) for d in confident(dets, threshold)]
    assert len(set(counts)) > 1  # the photographs hold different numbers of things
    low, high = q.ci["detections_per_image"]
    assert low < q.metrics["detections_per_image"] == np.mean(counts) < high
