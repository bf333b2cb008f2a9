"""The promoted object-detection pyfunc: images in, boxes, scores and class ids out.

Inputs: an image file path (str or Path), an RGB(A)/grayscale uint8 array [H, W(, 3|4)], a batch array
[n, H, W, 3], a list of any of these, or a pandas DataFrame / Series whose first (or `image`) column holds them.
Each image is decoded (files: EXIF orientation, alpha over white, `edgeopt.imaging.read_rgb`), letterboxed to the
measured input size and run; the head's output is decoded as measured (per-class NMS), keeping detections with a
score of at least `score_threshold` (model_config; 0.25 by default, or `params={"score_threshold": ...}`).
Output: a pandas DataFrame, one row per image: boxes (a list of [x1, y1, x2, y2] in the original image's
pixels), scores, class_ids, and class_names where the model names its classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from edgeopt.imaging import read_rgb
from edgeopt.serving import load_candidate_runner
from edgeopt.workloads.object_detection.boxes import IOU_THRESHOLD, MAX_DETECTIONS, letterbox
from edgeopt.workloads.object_detection.detector import detections

COLUMNS = ["boxes", "scores", "class_ids", "class_names"]


def image_items(model_input: Any) -> list[Any]:
    """The images of a pyfunc input, one item each (a path, or an array)."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        column = "image" if "image" in model_input.columns else model_input.columns[0]
        return list(model_input[column].tolist())
    if isinstance(model_input, pd.Series):
        return list(model_input.tolist())
    if isinstance(model_input, str | Path):
        return [model_input]
    if isinstance(model_input, np.ndarray):
        if model_input.dtype.kind in "US" or model_input.dtype == object:
            return list(model_input.reshape(-1))
        return list(model_input) if model_input.ndim == 4 else [model_input]
    return list(model_input)


def as_image(item: Any) -> Any:
    """A PIL RGB image of one input: a file decoded, or a uint8 [H, W], [H, W, 3] or [H, W, 4] array."""
    from PIL import Image

    if isinstance(item, str | Path):
        return read_rgb(Path(item))
    arr = np.asarray(item)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"an image array must be uint8 [H, W], [H, W, 3] or [H, W, 4], got {arr.dtype} {arr.shape}")
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L").convert("RGB")
    if arr.shape[2] == 4:  # alpha over white, as for files
        rgba = Image.fromarray(np.ascontiguousarray(arr), mode="RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


class ObjectDetectorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        self.runner, _, cfg = load_candidate_runner(context)
        self.input_size = int(cfg["input_size"])
        names = cfg.get("class_names")
        self.class_names = [str(n) for n in names] if names else None
        self.score_threshold = float(cfg.get("score_threshold", 0.25))
        self.iou_threshold = float(cfg.get("iou_threshold", IOU_THRESHOLD))
        self.max_detections = int(cfg.get("max_detections", MAX_DETECTIONS))
        self.batch_size = int(cfg.get("batch_size", 8))

    # model_input has no type hint on purpose: MLflow validates (and converts) a hinted input, and an input
    # here is a path, an array or a list of either, which no MLflow schema describes.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        threshold = float((params or {}).get("score_threshold", self.score_threshold))
        rows: list[dict[str, Any]] = []
        items = image_items(model_input)
        for start in range(0, len(items), self.batch_size):
            boxed = [letterbox(as_image(i), self.input_size) for i in items[start : start + self.batch_size]]
            found = detections(self.runner, np.stack([b[0] for b in boxed]), [b[1] for b in boxed], len(boxed),
                               threshold, self.iou_threshold, self.max_detections)
            for det in found:
                ids = [int(c) for c in det.classes]
                rows.append({"boxes": [[float(v) for v in box] for box in det.boxes],
                             "scores": [float(s) for s in det.scores], "class_ids": ids,
                             "class_names": [self.class_names[c] for c in ids] if self.class_names else None})
        return pd.DataFrame(rows, columns=COLUMNS)
