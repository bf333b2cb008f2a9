"""Great Expectations (GX Core 1.x) checks on the image-classification evaluation and calibration arrays.

Each array becomes a pandas frame with one row per image (its shape, dtype, value range and sha256), validated
the way `edgeopt.validation` validates text: one ephemeral context, a pandas data source with an asset per
set, a whole-dataframe batch definition, a suite and a validation definition each. The report is the same
`ValidationReport`, so `edgeopt.validation.require_valid` names any failed expectation.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.validation import ValidationReport, run_suites
from edgeopt.workloads.image_classification.images import (
    EVAL_FILE,
    IMAGE_SIZE,
    MANIFEST_FILE,
    MIN_CALIBRATION,
    MIN_EVAL,
    image_hashes,
    load_eval_images,
    read_manifest,
    read_npz,
)

COLUMNS = ["index", "ndim", "height", "width", "channels", "dtype", "min", "max", "span", "sha256"]


def image_frame(images: np.ndarray, labels: np.ndarray | None = None) -> Any:
    """pandas frame, one row per image: index, ndim (of the whole array), height, width, channels (-1 where
    the array has no such axis), dtype, min, max, span (max - min; None if not numeric), sha256 of its bytes;
    with labels also `label` (None where there are fewer labels than images)."""
    import pandas as pd

    arr = np.asarray(images)
    columns = [*COLUMNS, "label"] if labels is not None else COLUMNS
    if arr.ndim == 0:
        return pd.DataFrame(columns=columns)
    numeric = np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    hashes = image_hashes(arr)
    rows = []
    for i, img in enumerate(arr):
        shape = (*img.shape, -1, -1, -1)[:3]
        lo = float(img.min()) if numeric and img.size else None
        hi = float(img.max()) if numeric and img.size else None
        rows.append({
            "index": i, "ndim": arr.ndim, "height": shape[0], "width": shape[1], "channels": shape[2],
            "dtype": str(arr.dtype), "min": lo, "max": hi,
            "span": hi - lo if lo is not None and hi is not None else None, "sha256": hashes[i],
        })
    if labels is not None:
        values = np.asarray(labels).reshape(-1).tolist()
        for i, row in enumerate(rows):
            row["label"] = values[i] if i < len(values) else None
    return pd.DataFrame(rows, columns=columns)


def _suites(frames: dict[str, Any], min_eval: int, min_calibration: int, size: int) -> dict[str, list[Any]]:
    import great_expectations.expectations as gxe

    def image_columns() -> list[Any]:  # fresh instances: an expectation belongs to one suite
        return [
            gxe.ExpectColumnValuesToBeBetween(column="ndim", min_value=4, max_value=4),
            gxe.ExpectColumnValuesToBeBetween(column="height", min_value=size, max_value=size),
            gxe.ExpectColumnValuesToBeBetween(column="width", min_value=size, max_value=size),
            gxe.ExpectColumnValuesToBeBetween(column="channels", min_value=3, max_value=3),
            gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=["uint8"]),
            gxe.ExpectColumnValuesToNotBeNull(column="min"),
            gxe.ExpectColumnValuesToBeBetween(column="min", min_value=0, max_value=255),
            gxe.ExpectColumnValuesToNotBeNull(column="max"),
            gxe.ExpectColumnValuesToBeBetween(column="max", min_value=0, max_value=255),
            # A constant image (all one value) is a blank or broken input, not a photograph.
            gxe.ExpectColumnValuesToBeBetween(column="span", min_value=1, max_value=255),
        ]

    def label_columns(key: str) -> list[Any]:  # labelled data: every image has a class index
        if "label" not in frames[key].columns:
            return []
        return [gxe.ExpectColumnValuesToNotBeNull(column="label"),
                gxe.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=None)]

    eval_hashes = sorted(set(frames["eval"]["sha256"]))
    return {
        "eval": [
            gxe.ExpectTableRowCountToBeBetween(min_value=min_eval, max_value=None),
            *image_columns(),
            *label_columns("eval"),
        ],
        "calibration": [
            gxe.ExpectTableRowCountToBeBetween(min_value=min_calibration, max_value=None),
            *image_columns(),
            # Calibration must never see an evaluation input.
            gxe.ExpectColumnValuesToNotBeInSet(column="sha256", value_set=eval_hashes),
        ],
    }


def validate_image_arrays(
    eval_images: np.ndarray,
    calibration_images: np.ndarray,
    *,
    min_eval: int = MIN_EVAL,
    min_calibration: int = MIN_CALIBRATION,
    size: int = IMAGE_SIZE,
    data_dir: str = "",
    report_path: Path | None = None,
    eval_labels: np.ndarray | None = None,
) -> ValidationReport:
    """Run the GX suites on the two arrays (expected uint8 [n, size, size, 3]); never raises on bad data.
    eval_labels: the evaluation images' class indices (labelled data), one per image, each >= 0."""
    frames = {"eval": image_frame(eval_images, eval_labels), "calibration": image_frame(calibration_images)}
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    start = time.perf_counter()

    report = run_suites(frames, _suites(frames, min_eval, min_calibration, size), data_dir, start)
    if report_path is not None:
        report.write(Path(report_path))
    return report


def validate_image_data(
    data_dir: Path,
    report_path: Path | None = None,
    *,
    min_eval: int = MIN_EVAL,
    min_calibration: int = MIN_CALIBRATION,
    size: int | None = None,
) -> ValidationReport:
    """The suites on the folder `build_eval_images` / `build_folder_images` wrote (size: the manifest's, else
    IMAGE_SIZE; labels where the data has them); raises UserError only if its files are missing/unreadable."""
    data_dir = Path(data_dir)
    arrays = load_eval_images(data_dir)
    if size is None:
        size = read_manifest(data_dir).size if (data_dir / MANIFEST_FILE).is_file() else IMAGE_SIZE
    labels = read_npz(data_dir / EVAL_FILE).get("labels")
    return validate_image_arrays(
        arrays["eval"], arrays["calibration"], min_eval=min_eval, min_calibration=min_calibration, size=size,
        data_dir=str(data_dir), report_path=report_path, eval_labels=labels,
    )
