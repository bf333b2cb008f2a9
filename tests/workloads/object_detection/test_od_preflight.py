"""Bad object-detection input through the CLI: one line on stderr, exit 2, nothing written. A detector whose
output is not [batch, 4 + classes, anchors], a COCO json that does not parse or names images not in the folder,
a folder without images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from edgeopt.cli import app
from tests.workloads.object_detection.conftest import yolo_model_path
from tests.workloads.object_detection.test_od_workload import _transposed

runner = CliRunner()


def _params(tmp: Path, **changes: Any) -> Path:
    pipeline = {"task": "object-detection", "model": {"kind": "onnx", "path": str(yolo_model_path())},
                "data": {"kind": "skimage-photographs", "n_eval": 16, "n_calibration": 8},
                "candidates": [{"name": "onnx-fp32", "recipe": "onnx-export"},
                               {"name": "ort-int8-static", "recipe": "ort-static-int8", "parent": "onnx-fp32"}],
                "selection": {"baseline": "onnx-fp32"}, "registry": {"model_name": "yolo-edge"}, **changes}
    raw = {"output_dir": str(tmp / "outputs"),
           "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_root": str(tmp / "mlruns")},
           "pipelines": {"yolo": pipeline}}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _coco(tmp: Path, text: str | None = None, files: tuple[str, ...] = ("a.png",)) -> dict[str, str]:
    folder = tmp / "images"
    folder.mkdir(exist_ok=True)
    Image.new("RGB", (64, 48), (10, 200, 30)).save(folder / "a.png")
    raw = {"images": [{"id": i, "file_name": f} for i, f in enumerate(files)], "annotations": [],
           "categories": [{"id": 1, "name": "FACE_FEMALE"}]}
    path = tmp / "instances.json"
    path.write_text(text if text is not None else json.dumps(raw))
    return {"kind": "coco", "images": str(folder), "annotations": str(path)}


def _refused(tmp: Path, needle: str, **changes: Any) -> None:
    result = runner.invoke(app, ["run", "--params", str(_params(tmp, **changes)), "--no-promote"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp / "outputs").exists() and not (tmp / "mlflow.db").exists()


def test_a_detector_of_another_output_layout(tmp_path: Path) -> None:
    _refused(tmp_path, "not [batch, 4 + classes, anchors]", model={"kind": "onnx", "path": str(_transposed(tmp_path))})


@pytest.mark.parametrize(("make", "needle"), [
    (lambda tmp: _coco(tmp, text="{\"images\": ["), "not a COCO instances json"),
    (lambda tmp: _coco(tmp, files=("a.png", "missing.jpg")), "'missing.jpg' (id 1) is not in"),
])
def test_a_coco_file_that_is_broken_or_names_missing_images(tmp_path: Path, make: Any, needle: str) -> None:
    _refused(tmp_path, needle, data=make(tmp_path))


def test_a_folder_without_images(tmp_path: Path) -> None:
    data = _coco(tmp_path)
    (Path(data["images"]) / "a.png").unlink()
    (Path(data["images"]) / "notes.txt").write_text("no images here")
    _refused(tmp_path, "no images", data=data)
