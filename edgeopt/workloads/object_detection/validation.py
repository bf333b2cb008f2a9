"""Great Expectations (GX Core 1.x) checks on the object-detection data: the letterboxed images and the reference boxes.

Three datasets, each a pandas frame validated through `edgeopt.validation.run_suites` (one ephemeral context, a
suite per frame), so `edgeopt.validation.require_valid` names any failed expectation:

- `eval` / `calibration`: one row per image: its letterboxed side, channels, dtype, pixel span, letterbox scale,
  original size and sha256 (calibration images must all differ from every evaluation image);
- `boxes` (labelled data only): one row per reference box: its image, class, and its extent inside the image.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.imaging import image_hashes
from edgeopt.validation import ValidationReport, run_suites
from edgeopt.workloads.object_detection.images import MIN_CALIBRATION, MIN_EVAL, load_sets, read_manifest


def letterbox_frame(arrays: dict[str, np.ndarray]) -> Any:
    """One row per image: side (the square's), channels, dtype, span of its pixel values, scale and the
    original's width and height from its frame, sha256."""
    import pandas as pd

    images, frames = np.asarray(arrays["images"]), np.asarray(arrays["frames"])
    square = images.ndim == 4 and images.shape[1] == images.shape[2]
    return pd.DataFrame({
        "side": [images.shape[1] if square else -1] * len(images),
        "channels": [images.shape[-1] if images.ndim == 4 else -1] * len(images),
        "dtype": [str(images.dtype)] * len(images),
        "span": [int(img.max()) - int(img.min()) if img.size else 0 for img in images],
        "scale": frames[:, 0] if frames.ndim == 2 and len(frames) == len(images) else [None] * len(images),
        "width": frames[:, 3] if frames.ndim == 2 and len(frames) == len(images) else [None] * len(images),
        "height": frames[:, 4] if frames.ndim == 2 and len(frames) == len(images) else [None] * len(images),
        "sha256": image_hashes(images),
    })


def boxes_frame(arrays: dict[str, np.ndarray]) -> Any:
    """One row per reference box: image index, class, width and height, and how far it reaches past its image
    (overflow: the largest of -x1, -y1, x2 - width, y2 - height; <= 0 inside)."""
    import pandas as pd

    image, boxes, classes = (np.asarray(arrays[k]) for k in ("gt_image", "gt_boxes", "gt_classes"))
    frames = np.asarray(arrays["frames"])
    size = frames[np.clip(image, 0, len(frames) - 1), 3:5] if len(frames) else np.zeros((len(image), 2))
    overflow = np.max(np.stack([-boxes[:, 0], -boxes[:, 1], boxes[:, 2] - size[:, 0], boxes[:, 3] - size[:, 1]]),
                      axis=0) if len(boxes) else np.zeros(0)
    return pd.DataFrame({"image": image, "class": classes, "box_width": boxes[:, 2] - boxes[:, 0],
                         "box_height": boxes[:, 3] - boxes[:, 1], "overflow": overflow})


def _suites(frames: dict[str, Any], size: int, n_eval: int) -> dict[str, list[Any]]:
    import great_expectations.expectations as gxe

    def per_image(floor: int) -> list[Any]:  # fresh instances: an expectation belongs to one suite
        return [
            gxe.ExpectTableRowCountToBeBetween(min_value=floor, max_value=None),
            gxe.ExpectColumnValuesToBeBetween(column="side", min_value=size, max_value=size),
            gxe.ExpectColumnValuesToBeBetween(column="channels", min_value=3, max_value=3),
            gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=["uint8"]),
            # A constant image is a blank or broken input (the grey padding around it does not count: it is 114).
            gxe.ExpectColumnValuesToBeBetween(column="span", min_value=1, max_value=255),
            gxe.ExpectColumnValuesToNotBeNull(column="scale"),
            gxe.ExpectColumnValuesToBeBetween(column="scale", min_value=0, max_value=None, strict_min=True),
            gxe.ExpectColumnValuesToBeBetween(column="width", min_value=1, max_value=None),
            gxe.ExpectColumnValuesToBeBetween(column="height", min_value=1, max_value=None),
        ]

    suites = {
        "eval": per_image(MIN_EVAL),
        "calibration": [*per_image(MIN_CALIBRATION),
                        # Calibration must never see an evaluation input.
                        gxe.ExpectColumnValuesToNotBeInSet(column="sha256",
                                                           value_set=sorted(set(frames["eval"]["sha256"])))],
    }
    if "boxes" in frames:
        suites["boxes"] = [
            gxe.ExpectTableRowCountToBeBetween(min_value=1, max_value=None),
            gxe.ExpectColumnValuesToBeBetween(column="image", min_value=0, max_value=n_eval - 1),
            gxe.ExpectColumnValuesToBeBetween(column="class", min_value=0, max_value=None),
            gxe.ExpectColumnValuesToBeBetween(column="box_width", min_value=0, max_value=None, strict_min=True),
            gxe.ExpectColumnValuesToBeBetween(column="box_height", min_value=0, max_value=None, strict_min=True),
            # COCO boxes may round a pixel past the border; a box well outside its image is a mislabelled file.
            gxe.ExpectColumnValuesToBeBetween(column="overflow", min_value=None, max_value=1.0),
        ]
    return suites


def validate_detection_data(data_dir: Path, report_path: Path | None = None) -> ValidationReport:
    """The suites on the folder the data build wrote; raises UserError only if its files are missing/unreadable."""
    data_dir = Path(data_dir)
    sets = load_sets(data_dir)
    frames = {key: letterbox_frame(arrays) for key, arrays in sets.items()}
    if "gt_image" in sets["eval"]:
        frames["boxes"] = boxes_frame(sets["eval"])
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    start = time.perf_counter()
    report = run_suites(frames, _suites(frames, read_manifest(data_dir).size, len(sets["eval"]["images"])),
                        str(data_dir), start)
    if report_path is not None:
        report.write(Path(report_path))
    return report
