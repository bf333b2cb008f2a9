"""The promoted image-classification pyfunc: images in, the top class and the top-5 classes with probabilities out.

Inputs: an image file path (str or Path), an RGB(A)/grayscale uint8 array [H, W(, 3|4)], a batch array
[n, H, W, 3], a list of any of these, or a pandas DataFrame / Series whose first column holds them.
Preprocessing is the measured one, from the pyfunc's model_config: a file is decoded (EXIF orientation,
alpha over white) and center-cropped (crop_fraction of its shorter side) like the image-folder evaluation
data; an array is taken as already framed. Both are resized to image_size, then (x / 255 - mean) / std.
Output: a pandas DataFrame, one row per image: class_index, probability, top5_indices, top5_probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from edgeopt.serving import load_candidate_runner
from edgeopt.workloads.image_classification.images import (
    CROP_FRACTION,
    center_crop,
    preprocess,
    read_rgb,
    resize_images,
)
from edgeopt.workloads.image_classification.logits import logits
from edgeopt.workloads.image_classification.quality import log_softmax, topk_indices

TOP_K = 5


def image_list(model_input: Any) -> list[Any]:
    """The images of a pyfunc input, one item each (a path, or an array)."""
    try:
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            column = "image" if "image" in model_input.columns else model_input.columns[0]
            return list(model_input[column].tolist())
        if isinstance(model_input, pd.Series):
            return list(model_input.tolist())
    except ImportError:  # pragma: no cover
        pass
    if isinstance(model_input, str | Path):
        return [model_input]
    if isinstance(model_input, np.ndarray):
        if model_input.ndim == 4:
            return list(model_input)
        if model_input.dtype.kind in "US" or model_input.dtype == object:
            return list(model_input.reshape(-1))
        return [model_input]
    return list(model_input)


def as_rgb(item: Any, size: int, crop_fraction: float | None) -> np.ndarray:
    """uint8 [size, size, 3] of one input image."""
    if isinstance(item, str | Path):
        return center_crop(read_rgb(Path(item)), size, crop_fraction)
    arr = np.asarray(item)
    if arr.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:  # RGBA: alpha over white, as for files
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = np.round(arr[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"an image array must be [H, W, 3] (or [H, W], [H, W, 4]), got shape {arr.shape}")
    return resize_images(arr[None], size)[0]


class ImageClassifierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        self.runner, _, cfg = load_candidate_runner(context)
        self.image_size = int(cfg.get("image_size", 224))
        self.mean = tuple(float(v) for v in cfg.get("mean", (0.5, 0.5, 0.5)))
        self.std = tuple(float(v) for v in cfg.get("std", (0.5, 0.5, 0.5)))
        crop = cfg.get("crop_fraction", CROP_FRACTION)
        self.crop_fraction = None if crop is None else float(crop)
        self.batch_size = int(cfg.get("batch_size", 32))

    # model_input has no type hint on purpose: MLflow validates (and converts) a hinted input, and an input
    # here is a path, an array or a list of either, which no MLflow schema describes (MLflow warns once).
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        items = image_list(model_input)
        rows: list[dict[str, Any]] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            batch = np.stack([as_rgb(i, self.image_size, self.crop_fraction) for i in chunk])
            scores = logits(self.runner, preprocess(batch, self.mean, self.std))
            probs = np.exp(log_softmax(scores))
            top = topk_indices(scores, min(TOP_K, scores.shape[1]))  # ranked as measured: by the logits
            for p, t in zip(probs, top, strict=True):
                rows.append({"class_index": int(t[0]), "probability": float(p[t[0]]),
                             "top5_indices": [int(c) for c in t], "top5_probabilities": [float(p[c]) for c in t]})
        return pd.DataFrame(rows, columns=["class_index", "probability", "top5_indices", "top5_probabilities"])
