"""object-detection: an image in, boxes out; YOLO-style detectors scored by COCO mAP (pycocotools).

Model source: an ONNX detector in the Ultralytics export layout: pixels [batch, 3, H, W] (RGB, 0..1,
letterboxed to a square input) in, one output [batch, 4 + classes, anchors] out (cx, cy, w, h in input pixels,
then sigmoid'ed class scores). Box decoding and NMS run in the workload, in numpy, for every runtime alike.
Data sources: crops of the photographs scikit-image ships, scored against the FP32 base's own detections
(pseudo-labels), or a user's image folder with COCO instances annotations (mAP against labels, and its
retention against the base).

This module declares the task and stays import-light (pydantic and `edgeopt.taskspec` only); the workload is
`edgeopt.workloads.object_detection.workload`. Its building blocks:

- `boxes`:      letterboxing, box decoding, NMS and the way back to original pixels (numpy);
- `detector`:   letterboxed images in, raw head outputs and detections out, through any named-tensor runtime;
- `model`:      the ONNX detector's checks, its base folder, and the head nodes static INT8 keeps in float;
- `images`:     evaluation/calibration images (shipped photographs, a COCO folder), letterboxed;
- `coco`:       COCO mAP with pycocotools, and reading a COCO instances file;
- `quality`:    a candidate's detections against the reference boxes;
- `validation`: the Great Expectations suite over the images and the reference boxes;
- `serving`:    the promoted pyfunc (images in, boxes, scores and class ids out).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from edgeopt.taskspec import SourceKind, TaskSpec, resolve

if TYPE_CHECKING:
    from edgeopt.sources import SourceFacts


class OnnxDetectorModel(SourceKind):
    """A YOLO-style ONNX detector (Ultralytics export: [batch, 4 + classes, anchors] out). input_size: the square
    input it runs at (None: the graph's static size, else its Ultralytics `imgsz` metadata); class_names: one per
    class (None: the graph's Ultralytics `names` metadata, if any)."""

    kind: Literal["onnx"] = "onnx"
    path: Path
    input_size: int | None = Field(None, ge=32, le=4096)
    class_names: list[str] | None = None
    input_name: str | None = None  # None: the graph's only input

    def inspect(self, root: Path, where: str) -> SourceFacts:
        import dataclasses

        from edgeopt.sources import onnx_file_facts
        from edgeopt.workloads.object_detection.model import check_detector

        path = resolve(self.path, root)
        facts = onnx_file_facts(path, where)
        graph = check_detector(path, self, where)  # the output layout, run once on a blank input
        return dataclasses.replace(facts, details=graph.model_dump(mode="json"))


class PhotographsData(SourceKind):
    """The photographs inside the scikit-image wheel, whole and as seeded random crops and flips, letterboxed to
    the model's input; calibration crops come from photographs held out of evaluation. The FP32 base's detections
    with a score of at least score_threshold are the reference boxes (pseudo-labels)."""

    kind: Literal["skimage-photographs"] = "skimage-photographs"
    n_eval: int = Field(64, ge=8)
    n_calibration: int = Field(32, ge=4)
    seed: int = Field(0, ge=0)
    score_threshold: float = Field(0.25, gt=0, lt=1)


class CocoData(SourceKind):
    """A user's image folder and its COCO instances json (`images[].file_name` relative to the folder). Categories
    match the model's class names by name, or (a model without names) a category id is the class index. A seeded
    choice of n_calibration images is held out for calibration; score_threshold: what detections_per_image counts."""

    kind: Literal["coco"] = "coco"
    images: Path
    annotations: Path
    n_calibration: int = Field(8, ge=1)
    seed: int = Field(0, ge=0)
    score_threshold: float = Field(0.25, gt=0, lt=1)


TASK = TaskSpec(
    name="object-detection",
    family="tensor",
    workload="edgeopt.workloads.object_detection.workload:WORKLOAD",
    model_sources=(OnnxDetectorModel,),
    data_sources=(PhotographsData, CocoData),
    quality_metrics=("map",),
    summary="YOLO-style detectors: COCO mAP@[.5:.95] / mAP@.5 (pycocotools) vs the base's detections or labels",
)
