"""The object-detection workload on the real YOLOv8n export: its checks, its head's float nodes, the data, the
inputs, measurement outputs and quality (pseudo-labels and labels), and the served pyfunc."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from PIL import Image

from edgeopt.config import BenchmarkConfig
from edgeopt.errors import UserError
from edgeopt.imaging import skimage_data_dir
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import CandidateRecord
from edgeopt.workloads.object_detection import CocoData, OnnxDetectorModel
from edgeopt.workloads.object_detection.images import load_sets
from edgeopt.workloads.object_detection.model import check_detector, read_config
from edgeopt.workloads.object_detection.quality import DETECTIONS_FILE, load_detections
from edgeopt.workloads.object_detection.serving import ObjectDetectorModel
from edgeopt.workloads.object_detection.workload import WORKLOAD
from tests.workloads.object_detection.conftest import N_CALIBRATION, N_EVAL, yolo_model_path


def test_the_base_folder_describes_the_detector(od_base: BaseModelInfo) -> None:
    cfg = read_config(od_base.path)
    assert (cfg.input_name, cfg.input_size, cfg.num_classes, cfg.anchors) == ("images", 320, 18, 2100)
    assert cfg.class_names is not None and cfg.class_names[1] == "FACE_FEMALE"  # Ultralytics' names metadata
    assert od_base.format == "onnx" and od_base.path.name == "model.onnx"


def test_the_head_nodes_kept_in_float_are_the_post_processing(od_base: BaseModelInfo) -> None:
    model = onnx.load(str(od_base.path))
    names = WORKLOAD.float_nodes(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    # The final concat, the class sigmoid, the DFL softmax and conv, and the box arithmetic.
    assert {"/model.22/Concat_25", "/model.22/Sigmoid", "/model.22/dfl/Softmax", "/model.22/dfl/conv/Conv",
            "/model.22/Mul_5", "/model.22/Div_1", "/model.22/Sub_1"} <= set(names)
    # The head's own convolutions (and the backbone) stay quantizable.
    convs = [n for n in names if ops[n] == "Conv"]
    assert convs == ["/model.22/dfl/conv/Conv"]
    assert all(n.startswith("/model.22/") for n in names)


def _transposed(tmp: Path) -> Path:
    """The same detector with its output transposed to [batch, anchors, 4 + classes] (YOLOv5-style)."""
    model = onnx.load(str(yolo_model_path()))
    out = model.graph.output[0]
    model.graph.node.append(onnx.helper.make_node("Transpose", [out.name], ["transposed"], perm=[0, 2, 1],
                                                  name="to_anchors_first"))
    model.graph.output.remove(out)
    model.graph.output.append(onnx.helper.make_tensor_value_info("transposed", onnx.TensorProto.FLOAT,
                                                                         ["batch", "anchors", 22]))
    path = tmp / "transposed.onnx"
    onnx.save(model, str(path))
    return path


def test_a_graph_of_another_layout_or_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"is \[1, 2100, 22\] on a 320x320 input, not \[batch, 4 \+ classes"):
        check_detector(_transposed(tmp_path), OnnxDetectorModel(path=_transposed(tmp_path)), "model")
    with pytest.raises(UserError, match="3 names for a model with 18 classes"):
        check_detector(yolo_model_path(), OnnxDetectorModel(path=yolo_model_path(), class_names=["a", "b", "c"]),
                       "model")


def test_data_inputs_and_calibration(od_data: Path, od_inputs: Path) -> None:
    sets = load_sets(od_data)
    assert sets["eval"]["images"].shape == (N_EVAL, 320, 320, 3)
    assert sets["calibration"]["images"].shape == (N_CALIBRATION, 320, 320, 3)
    assert str(sets["eval"]["sources"][0]) == "astronaut.png"  # whole photographs first, then crops
    eval_photos = {str(s).split("@")[0] for s in sets["eval"]["sources"]}
    calib_photos = {str(s).split("@")[0] for s in sets["calibration"]["sources"]}
    assert not eval_photos & calib_photos
    assert WORKLOAD.validate_data(od_data, None).success
    with np.load(od_inputs) as inputs:
        feeds = WORKLOAD.calibration(inputs, None)
        assert len(feeds) == N_CALIBRATION and feeds[0]["images"].shape == (1, 3, 320, 320)
        assert float(feeds[0]["images"].max()) <= 1.0


def test_the_base_scores_one_against_itself(od_inputs: Path, od_runner: Any, od_bench: BenchmarkConfig,
                                             tmp_path: Path) -> None:
    with np.load(od_inputs) as inputs:
        speed = WORKLOAD.benchmark(od_runner, inputs, od_bench)
        WORKLOAD.write_outputs(od_runner, inputs, od_bench, tmp_path)
    assert speed.latency.batch_size == 1 and speed.throughput.batch_size == 2
    quality = WORKLOAD.quality(tmp_path, tmp_path)
    assert quality.metrics["map"] == pytest.approx(1.0) and quality.retention["map50"] == pytest.approx(1.0)
    assert quality.metrics["detections_per_image"] > 0
    dets, _ = load_detections(tmp_path / DETECTIONS_FILE)
    # The astronaut's face, found in the 512x512 photograph's own pixels.
    face = dets[0].boxes[(dets[0].classes == 1) & (dets[0].scores > 0.5)]
    assert len(face) == 1 and 0 < face[0][0] < face[0][2] <= 512


def _coco_folder(tmp: Path, n: int = 8) -> tuple[Path, Path]:
    """n copies of the astronaut (resized, so they differ) and a COCO file labelling her face where the base
    finds it, scaled to each copy."""
    folder = tmp / "coco"
    folder.mkdir()
    photo = Image.open(skimage_data_dir() / "astronaut.png").convert("RGB")
    images, annotations = [], []
    for i in range(n):
        side = 256 + 32 * i
        photo.resize((side, side)).save(folder / f"{i}.png")
        s = side / 512
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": side, "height": side})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1,
                            "bbox": [172 * s, 82 * s, 102 * s, 98 * s], "iscrowd": 0})
    path = tmp / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "FACE_FEMALE"}]}))
    return folder, path


def test_labelled_data_scores_the_base_and_its_retention(od_base: BaseModelInfo, od_runner: Any,
                                                         od_bench: BenchmarkConfig, tmp_path: Path) -> None:
    folder, annotations = _coco_folder(tmp_path)
    WORKLOAD.build_data(CocoData(images=folder, annotations=annotations, n_calibration=2), tmp_path / "data",
                        od_base)
    assert WORKLOAD.validate_data(tmp_path / "data", None).success
    arrays = WORKLOAD.prepare_inputs(od_base, tmp_path / "data", od_bench)
    assert arrays["gt_image"].tolist() == list(range(6)) and set(arrays["gt_classes"].tolist()) == {1}
    (tmp_path / "m").mkdir()
    WORKLOAD.write_outputs(od_runner, arrays, od_bench, tmp_path / "m")
    quality = WORKLOAD.quality(tmp_path / "m", tmp_path / "m")
    assert quality.metrics["map50"] > 0.5, quality  # the hand-drawn box is near the face the model finds
    assert quality.retention == {"map": pytest.approx(1.0), "map50": pytest.approx(1.0)}


class Context:
    """What MLflow hands `load_context`: the artifacts' local paths and the model_config."""

    def __init__(self, artifacts: dict[str, str], model_config: dict[str, Any]) -> None:
        self.artifacts = artifacts
        self.model_config = model_config


def test_the_pyfunc_returns_boxes_in_original_pixels(od_base: BaseModelInfo, tmp_path: Path) -> None:
    folder = tmp_path / "onnx-fp32"
    folder.mkdir()
    shutil.copy2(od_base.path, folder / "model.onnx")
    CandidateRecord(name="onnx-fp32", recipe="onnx-export", framework="onnx", parent=None, options={},
                    format="onnx", runtime="onnxruntime", precision="fp32", model_file="model.onnx",
                    cache_key="test", base_sha256=od_base.sha256, build_seconds=0.0).write(folder / "candidate.json")
    cfg = read_config(od_base.path)
    served = ObjectDetectorModel()
    served.load_context(Context({"candidate": str(folder)}, {"input_size": 320, "class_names": cfg.class_names,
                                                             "threads": 1, "batch_size": 2}))
    photo = skimage_data_dir() / "astronaut.png"
    rgba = np.asarray(Image.open(photo).convert("RGBA"))
    out = served.predict(None, [str(photo), np.asarray(Image.open(photo).convert("RGB")), rgba])
    assert list(out.columns) == ["boxes", "scores", "class_ids", "class_names"] and len(out) == 3
    assert out["boxes"][0] == out["boxes"][1] == out["boxes"][2]
    assert "FACE_FEMALE" in out["class_names"][0]
    assert all(0 <= v <= 512 for box in out["boxes"][0] for v in box)
    assert all(s >= 0.25 for s in out["scores"][0])
    # The face scores 0.83: a higher served threshold drops it.
    assert served.predict(None, [str(photo)], params={"score_threshold": 0.9})["boxes"][0] == []
    with pytest.raises(ValueError, match="uint8"):
        served.predict(None, [np.zeros((8, 8, 3), np.float32)])
