"""COCO mAP through pycocotools, and reading a user's COCO instances file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeopt.errors import UserError
from edgeopt.workloads.object_detection.boxes import Detections
from edgeopt.workloads.object_detection.coco import mean_ap, read_instances

SIZES = [(100, 100), (100, 100)]


def _det(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(classes, np.int64))


REF = [_det([[10, 10, 50, 50]], [1.0], [0]), _det([[20, 20, 80, 60], [0, 0, 30, 30]], [1.0, 1.0], [1, 0])]


def test_identical_boxes_score_one_and_missing_ones_lower() -> None:
    assert mean_ap(REF, REF, SIZES, 2) == {"map": pytest.approx(1.0), "map50": pytest.approx(1.0)}
    half = [REF[0], _det([[20, 20, 80, 60]], [0.9], [1])]
    got = mean_ap(REF, half, SIZES, 2)
    assert 0.0 < got["map"] < 1.0
    # A box shifted to IoU ~0.6 counts at 0.5 but not at the stricter thresholds.
    shifted = [_det([[18, 10, 58, 50]], [0.9], [0]), REF[1]]
    got = mean_ap(REF, shifted, SIZES, 2)
    assert got["map50"] == pytest.approx(1.0) and got["map"] < 0.9


def test_no_detection_scores_zero_and_no_reference_is_refused() -> None:
    empty = [Detections.empty(), Detections.empty()]
    assert mean_ap(REF, empty, SIZES, 2) == {"map": 0.0, "map50": 0.0}
    with pytest.raises(ValueError, match="no box"):
        mean_ap(empty, REF, SIZES, 2)


def _folder(tmp: Path) -> Path:
    folder = tmp / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 48), (10, 200, 30)).save(folder / name)
    return folder


def _coco(tmp: Path, **changes: object) -> Path:
    raw = {"images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 48},
                      {"id": 9, "file_name": "b.png", "width": 64, "height": 48}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [4, 5, 20, 10], "iscrowd": 0},
                           {"id": 2, "image_id": 9, "category_id": 1, "bbox": [0, 0, 8, 8], "iscrowd": 1}],
           "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]}
    raw.update(changes)
    path = tmp / "instances.json"
    path.write_text(json.dumps(raw))
    return path


def test_instances_map_categories_by_name_and_leave_crowds_out(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    got = read_instances(_coco(tmp_path), folder, ["dog", "cat"], 2)
    assert got.files == ["a.png", "b.png"] and got.categories == {1: 1, 3: 0}
    np.testing.assert_allclose(got.boxes[0].boxes, [[4, 5, 24, 15]])
    assert got.boxes[0].classes.tolist() == [0] and len(got.boxes[1]) == 0
    # Without class names a category id is the class index.
    assert read_instances(_coco(tmp_path), folder, None, 4).categories == {1: 1, 3: 3}


@pytest.mark.parametrize(("changes", "needle"), [
    ({"images": [{"id": 7, "file_name": "missing.png"}]}, "'missing.png' (id 7) is not in"),
    ({"categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "horse"}]}, "'horse' (id 3) is not one of"),
    ({"annotations": [{"id": 1, "image_id": 8, "category_id": 1, "bbox": [0, 0, 1, 1]}]}, "names no image"),
    ({"annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 0, 1]}]}, "positive size"),
    ({"images": []}, "lists no images"),
])
def test_bad_instances_are_one_line_user_errors(tmp_path: Path, changes: dict, needle: str) -> None:
    with pytest.raises(UserError) as err:
        read_instances(_coco(tmp_path, **changes), _folder(tmp_path), ["dog", "cat"], 2)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="not a COCO instances json"):
        read_instances(path, _folder(tmp_path), None, 2)
