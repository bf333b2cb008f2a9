"""COCO-style box mAP with pycocotools (the reference `COCOeval`, not a re-derivation), and reading COCO files.

`mean_ap` scores one candidate's detections against reference boxes: mAP@[.5:.95] (`map`, COCOeval's
stats[0]: all areas, 100 detections per image) and mAP@.5 (`map50`, stats[1]). Both sides are in-memory COCO
objects built from arrays (image ids 1..n, category id = class index + 1), so nothing is written and an image
or a candidate without any detection is scored, not refused (pycocotools' `loadRes` cannot take an empty list).

`read_instances` reads a user's COCO instances json (images, annotations, categories) into per-image reference
boxes in class-index space, refusing a file that does not parse or names images that are not in the folder.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import UserError, one_line
from edgeopt.workloads.object_detection.boxes import Detections


def _dataset(images: Sequence[tuple[int, int]], n_classes: int) -> dict[str, Any]:
    return {"images": [{"id": i + 1, "width": int(w), "height": int(h)} for i, (w, h) in enumerate(images)],
            "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)], "annotations": []}


def _coco(dataset: dict[str, Any]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


def _annotations(dets: Sequence[Detections], with_scores: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for image, det in enumerate(dets):
        for box, score, cls in zip(det.boxes, det.scores, det.classes, strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            ann = {"id": len(out) + 1, "image_id": image + 1, "category_id": int(cls) + 1,
                   "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0}
            if with_scores:
                ann["score"] = float(score)
            out.append(ann)
    return out


def mean_ap(reference: Sequence[Detections], predicted: Sequence[Detections], image_sizes: Sequence[tuple[int, int]],
            n_classes: int) -> dict[str, float]:
    """{"map": mAP@[.5:.95], "map50": mAP@.5} of `predicted` against `reference` boxes, image by image.

    image_sizes: (width, height) of each image. ValueError if the lists differ in length or the reference
    holds no box at all (mAP is undefined then).
    """
    from pycocotools.cocoeval import COCOeval

    if not len(reference) == len(predicted) == len(image_sizes):
        raise ValueError(f"{len(reference)} reference, {len(predicted)} predicted images and {len(image_sizes)} "
                         f"sizes differ")
    if not sum(len(d) for d in reference):
        raise ValueError("the reference has no box on any image: mAP is undefined")
    gt = _coco({**_dataset(image_sizes, n_classes), "annotations": _annotations(reference, with_scores=False)})
    if not sum(len(d) for d in predicted):
        return {"map": 0.0, "map50": 0.0}
    dt = _coco({**_dataset(image_sizes, n_classes), "annotations": _annotations(predicted, with_scores=True)})
    evaluator = COCOeval(gt, dt, iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"map": max(0.0, float(stats[0])), "map50": max(0.0, float(stats[1]))}


# -- a user's COCO instances file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instances:
    """A COCO instances file in class-index space: the images in file order, and each one's reference boxes."""

    files: list[str]  # file_name of each image, relative to the image folder
    boxes: list[Detections]  # xyxy in the image's own pixels; scores 1
    categories: dict[int, int]  # COCO category id -> the model's class index


def _category_map(categories: Any, class_names: Sequence[str] | None, n_classes: int | None,
                  path: Path) -> dict[int, int]:
    """COCO category id -> class index: by name where the model has class names, else the id itself (checked to be
    one of the model's classes where their number is known)."""
    if not isinstance(categories, list) or not categories:
        raise UserError(f"{path}: no 'categories' list (a COCO instances file names its categories)")
    out: dict[int, int] = {}
    index = {name: i for i, name in enumerate(class_names or ())}
    for cat in categories:
        if not isinstance(cat, Mapping) or not isinstance(cat.get("id"), int):
            raise UserError(f"{path}: a category without an integer 'id': {str(cat)[:80]}")
        if index:
            if cat.get("name") not in index:
                raise UserError(f"{path}: category {cat.get('name')!r} (id {cat['id']}) is not one of the model's "
                                f"{len(index)} class names")
            out[cat["id"]] = index[cat["name"]]
        else:
            if n_classes is not None and not 0 <= cat["id"] < n_classes:
                raise UserError(f"{path}: category id {cat['id']} is outside the model's classes 0..{n_classes - 1} "
                                f"(without class names, a category id is the model's class index)")
            out[cat["id"]] = cat["id"]
    return out


def read_instances(path: Path, folder: Path, class_names: Sequence[str] | None, n_classes: int | None) -> Instances:
    """The images and boxes of a COCO instances json whose file names are relative to `folder`.

    n_classes None (the model not known yet): category ids are not checked against the model's classes.

    Crowd annotations (iscrowd 1) are left out. UserError, one line, for a file that does not parse, an image
    missing from the folder, an annotation of an unknown image or category, or a box of non-positive size.
    """
    path, folder = Path(path), Path(folder)
    if not path.is_file():
        raise UserError(f"{path}: COCO annotations file not found")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a COCO instances json ({one_line(err)})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list) or \
            not isinstance(raw.get("annotations"), list):
        raise UserError(f"{path}: not a COCO instances json (expected an object with 'images', 'annotations' and "
                        f"'categories' lists)")
    categories = _category_map(raw.get("categories"), class_names, n_classes, path)
    ids: dict[int, int] = {}
    files: list[str] = []
    for image in raw["images"]:
        if not isinstance(image, Mapping) or not isinstance(image.get("id"), int) or \
                not isinstance(image.get("file_name"), str):
            raise UserError(f"{path}: an image without an integer 'id' and a 'file_name': {str(image)[:80]}")
        if not (folder / image["file_name"]).is_file():
            raise UserError(f"{path}: image {image['file_name']!r} (id {image['id']}) is not in {folder}")
        ids[image["id"]] = len(files)
        files.append(image["file_name"])
    if not files:
        raise UserError(f"{path}: lists no images")
    per_image: list[list[tuple[list[float], int]]] = [[] for _ in files]
    for ann in raw["annotations"]:
        if not isinstance(ann, Mapping) or ann.get("image_id") not in ids:
            raise UserError(f"{path}: annotation {str(ann)[:80]} names no image of the file")
        if ann.get("category_id") not in categories:
            raise UserError(f"{path}: annotation {ann.get('id')} has category {ann.get('category_id')!r}, not one "
                            f"of the file's categories")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, int | float) for v in bbox) or \
                bbox[2] <= 0 or bbox[3] <= 0:
            raise UserError(f"{path}: annotation {ann.get('id')} has bbox {bbox!r}, not [x, y, width, height] of "
                            f"positive size")
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in bbox)
        per_image[ids[ann["image_id"]]].append(([x, y, x + w, y + h], categories[ann["category_id"]]))
    boxes = [Detections(np.array([b for b, _ in anns], np.float32).reshape(-1, 4), np.ones(len(anns), np.float32),
                        np.array([c for _, c in anns], np.int64)) for anns in per_image]
    return Instances(files=files, boxes=boxes, categories=categories)
