"""Quality of a candidate's detections: COCO mAP against reference boxes, on identical inputs.

The reference is the user's labels where the data has them (then `retention` is the candidate's mAP over the
FP32 base's), else the base's own detections with a score of at least the data's score threshold
(pseudo-labels: the mAP is relative to the base already, so it is its own retention, and the base scores 1.0
against itself). Every run's detections are kept down to score 0.001, as COCO evaluation expects.

`detections.npz` (what `write_outputs` saves, one file per candidate): flat `image`, `boxes`, `scores`, `classes`
over all evaluation images, their `frames`, `n_classes`, `score_threshold`, and the labels' `gt_*` arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.io.atomic import atomic_file
from edgeopt.metrics import retention
from edgeopt.workloads.object_detection.boxes import Detections
from edgeopt.workloads.object_detection.coco import mean_ap
from edgeopt.workloads.object_detection.images import reference_arrays, reference_boxes

DETECTIONS_FILE = "detections.npz"
MAP = ("map", "map50")


def confident(dets: Sequence[Detections], threshold: float) -> list[Detections]:
    """Each image's detections with a score of at least `threshold`."""
    return [Detections(d.boxes[d.scores >= threshold], d.scores[d.scores >= threshold],
                       d.classes[d.scores >= threshold]) for d in dets]


def save_detections(path: Path, dets: Sequence[Detections], frames: np.ndarray, n_classes: int,
                    score_threshold: float, labels: Sequence[Detections] | None) -> None:
    flat = reference_arrays(dets)  # the same flat layout as the labels, plus the scores
    arrays: dict[str, Any] = {"image": flat["gt_image"], "boxes": flat["gt_boxes"], "classes": flat["gt_classes"],
                              "scores": np.concatenate([d.scores for d in dets] or [np.zeros(0)]).astype(np.float32),
                              "frames": np.asarray(frames, np.float64), "n_classes": np.int64(n_classes),
                              "score_threshold": np.float64(score_threshold)}
    if labels is not None:
        arrays.update(reference_arrays(labels))
    with atomic_file(Path(path)) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)


def load_detections(path: Path) -> tuple[list[Detections], dict[str, Any]]:
    """(each image's detections, the other arrays of the file)."""
    with np.load(Path(path), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    n = len(arrays["frames"])
    image = arrays["image"]
    dets = [Detections(arrays["boxes"][image == i], arrays["scores"][image == i], arrays["classes"][image == i])
            for i in range(n)]
    return dets, arrays


def image_sizes(frames: np.ndarray) -> list[tuple[int, int]]:
    return [(int(r[3]), int(r[4])) for r in np.asarray(frames)]


def compare(base: Sequence[Detections], candidate: Sequence[Detections], sizes: Sequence[tuple[int, int]],
            n_classes: int, score_threshold: float,
            labels: Sequence[Detections] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, retention) of a candidate: map, map50 against the labels or the base's confident detections,
    and detections_per_image (score >= score_threshold). ValueError when the reference has no box."""
    reference = list(labels) if labels is not None else confident(base, score_threshold)
    scores = mean_ap(reference, candidate, sizes, n_classes)
    metrics = {**scores, "detections_per_image": float(np.mean([len(d) for d in confident(candidate,
                                                                                          score_threshold)]))}
    if labels is None:
        return metrics, dict(scores)
    return metrics, retention(scores, mean_ap(reference, base, sizes, n_classes))


def detection_intervals(candidate: Sequence[Detections], score_threshold: float,
                        metrics: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Bootstrap CIs over the images of the metrics that are means over them: detections_per_image.

    mAP is not a mean over images (precision and recall pool every image's detections per class before the
    average), and a bootstrap over images would rerun the COCO evaluation a thousand times: it gets none.
    """
    from edgeopt.metrics import mean_interval, present

    counts = [len(d) for d in confident(candidate, score_threshold)]
    return present({"detections_per_image": mean_interval(counts, metrics["detections_per_image"])})


def quality_of(candidate_file: Path, baseline_file: Path) -> tuple[dict[str, float], dict[str, float]]:
    """`compare` on two saved detections files (the labels and threshold are the baseline's)."""
    metrics, kept, _ = quality_and_intervals(candidate_file, baseline_file)
    return metrics, kept


def quality_and_intervals(candidate_file: Path, baseline_file: Path) -> tuple[dict[str, float], dict[str, float],
                                                                              dict[str, tuple[float, float]]]:
    """`quality_of`, and the CIs of `detection_intervals`."""
    cand, _ = load_detections(candidate_file)
    base, arrays = load_detections(baseline_file)
    if len(cand) != len(base):
        raise ValueError(f"{len(cand)} images against the baseline's {len(base)}")
    labels = reference_boxes(arrays, len(base))
    threshold = float(arrays["score_threshold"])
    metrics, kept = compare(base, cand, image_sizes(arrays["frames"]), int(arrays["n_classes"]), threshold, labels)
    return metrics, kept, detection_intervals(cand, threshold, metrics)
