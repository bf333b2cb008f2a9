"""Bad image-classification input is one clear UserError line from the real preflight, before anything is
written: an image folder without images, a file that is not an image, a class folder missing from the class map,
an ONNX graph of another size than declared, a Hugging Face model that is not an image classifier, ..."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.config import Params
from edgeopt.errors import UserError
from edgeopt.pipeline.context import PipelineContext
from edgeopt.preflight import preflight
from edgeopt.workloads.image_classification.images import expand, read_rgb, skimage_data_dir
from tests.workloads.image_classification.ic_helpers import pipeline, tiny_hf

PHOTO = skimage_data_dir()


def _check(tmp: Path, **changes: Any) -> str:
    """The one-line message preflight raises; the output folder was not created."""
    ctx = PipelineContext(Params.model_validate(pipeline(tmp, **changes)), "ic", tmp)
    with pytest.raises(UserError) as err:
        preflight(ctx)
    message = str(err.value)
    assert message and "\n" not in message and "Traceback" not in message
    assert not (tmp / "outputs").exists()
    return message


def _folder(tmp: Path, n: int = 40) -> tuple[Path, Path]:
    """A class-per-subfolder folder of n real PNG crops (two classes) and its class map."""
    from PIL import Image

    folder = tmp / "images"
    for cls, photo in (("cat", "chelsea.png"), ("espresso", "coffee.png")):
        (folder / cls).mkdir(parents=True)
        for i, img in enumerate(expand([np.asarray(read_rgb(PHOTO / photo))], n // 2, seed=4, size=64)):
            Image.fromarray(img).save(folder / cls / f"{i:03d}.png")
    classes = tmp / "classes.json"
    classes.write_text(json.dumps({"cat": 285, "espresso": 967}))
    return folder, classes


def _folder_data(folder: Path, classes: Path) -> dict[str, Any]:
    return {"kind": "image-folder", "path": str(folder), "classes": str(classes), "n_calibration": 8}


def test_good_inputs_pass(tmp_path: Path) -> None:
    ctx = PipelineContext(Params.model_validate(pipeline(tmp_path)), "ic", tmp_path)
    assert preflight(ctx).formats == ("hf",)
    folder, classes = _folder(tmp_path)
    ctx = PipelineContext(Params.model_validate(pipeline(tmp_path, data=_folder_data(folder, classes))), "ic",
                          tmp_path)
    preflight(ctx)
    hf = tiny_hf(tmp_path / "hf")
    ctx = PipelineContext(Params.model_validate(pipeline(tmp_path, model={"kind": "hf", "path": str(hf)})), "ic",
                          tmp_path)
    assert preflight(ctx).hf_config["architectures"] == ["ResNetForImageClassification"]
    assert not (tmp_path / "outputs").exists()


def test_image_folder_problems(tmp_path: Path) -> None:
    folder, classes = _folder(tmp_path)
    data = _folder_data(folder, classes)

    (folder / "dog").mkdir()
    classes.write_text(json.dumps({"cat": 285, "dog": 207, "espresso": 967}))
    message = _check(tmp_path, data=data)
    assert "dog" in message and "empty class folder" in message
    shutil.rmtree(folder / "dog")

    (folder / "cat" / "notes.jpg").write_text("this is not a JPEG")
    message = _check(tmp_path, data=data)
    assert "notes.jpg" in message and "not an image" in message
    (folder / "cat" / "notes.jpg").unlink()

    classes.write_text(json.dumps({"espresso": 967}))
    assert "class folder 'cat' is not in the class map" in _check(tmp_path, data=data)
    classes.write_text(json.dumps({"cat": 285, "espresso": 1000}))
    assert "class 'espresso' maps to 1000, but the model has 1000 classes" in _check(tmp_path, data=data)
    classes.write_text("{not json")
    assert "class map is not valid JSON" in _check(tmp_path, data=data)
    classes.write_text(json.dumps({"cat": 285, "espresso": 967}))

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no class folders" in _check(tmp_path, data={**data, "path": str(empty)})
    assert "need at least 48" in _check(tmp_path, data={**data, "n_calibration": 16})  # 40 images


def test_accuracy_needs_labels_and_the_benchmark_batch_needs_images(tmp_path: Path) -> None:
    message = _check(tmp_path, selection={"baseline": "torch-fp32", "quality_metrics": ["top1_accuracy"]})
    assert "top1_accuracy needs labelled images" in message
    message = _check(tmp_path, data={"kind": "skimage-photographs", "n_eval": 32},
                     benchmark={"throughput_batch_size": 64})
    assert "fewer than the benchmark batch (64)" in message


def _onnx(path: Path, shape: list[int | str], dtype: int | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((10, 3, 1, 1), dtype=np.float32), "w")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["scores"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", dtype or TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [shape[0], 10])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return path


# An ONNX base: the baseline starts from the graph itself.
ONNX_BASELINE = {"candidates": [{"name": "onnx-fp32", "recipe": "onnx-export"}], "selection": {"baseline": "onnx-fp32"}}


def test_onnx_size_and_input_problems(tmp_path: Path) -> None:
    from onnx import TensorProto

    model = _onnx(tmp_path / "m.onnx", ["batch", 3, 224, 224])
    ctx = PipelineContext(Params.model_validate(
        pipeline(tmp_path, model={"kind": "onnx", "path": str(model), "image_size": 224}, **ONNX_BASELINE)),
        "ic", tmp_path)
    assert preflight(ctx).details["input_name"] == "images"

    message = _check(tmp_path, model={"kind": "onnx", "path": str(model), "image_size": 256}, **ONNX_BASELINE)
    assert message == ("pipelines.ic.model.image_size: 256 does not match the graph's input images "
                       "[batch, 3, 224, 224] (224x224 NCHW)")
    message = _check(tmp_path, **ONNX_BASELINE,
                     model={"kind": "onnx", "path": str(model), "image_size": 224, "input_name": "x"})
    assert "'x' is not an input of m.onnx" in message
    flat = _onnx(tmp_path / "flat.onnx", [1, 3 * 224 * 224])
    assert "is not a [batch, 3, height, width] image tensor" in _check(
        tmp_path, model={"kind": "onnx", "path": str(flat), "image_size": 224}, **ONNX_BASELINE)
    ints = _onnx(tmp_path / "ints.onnx", [1, 3, 224, 224], TensorProto.UINT8)
    assert "is UINT8; image-classification feeds float pixels" in _check(
        tmp_path, model={"kind": "onnx", "path": str(ints), "image_size": 224}, **ONNX_BASELINE)
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    assert "broken.onnx" in _check(tmp_path, model={"kind": "onnx", "path": str(tmp_path / "broken.onnx")},
                                  **ONNX_BASELINE)


def _hf_folder(tmp: Path, config: dict[str, Any], preprocessor: dict[str, Any] | None) -> Path:
    from safetensors.numpy import save_file

    folder = tmp / "hf"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(folder / "model.safetensors"))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def test_hugging_face_folders_that_are_not_image_classifiers(tmp_path: Path) -> None:
    vit = {"size": {"height": 224, "width": 224}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    bert = _hf_folder(tmp_path, {"model_type": "bert", "architectures": ["BertModel"]}, vit)
    message = _check(tmp_path, model={"kind": "hf", "path": str(bert)})
    assert message.startswith("model: BertModel is not an image classifier transformers can load")
    unknown = _hf_folder(tmp_path, {"model_type": "no-such-net", "architectures": ["NoSuchNet"]}, vit)
    assert "'no-such-net' (NoSuchNet) is unknown to the installed transformers" in _check(
        tmp_path, model={"kind": "hf", "path": str(unknown)})
    resnet = {"model_type": "resnet", "architectures": ["ResNetForImageClassification"]}
    no_processor = _hf_folder(tmp_path, resnet, None)
    (no_processor / "preprocessor_config.json").unlink(missing_ok=True)
    assert "no preprocessor_config.json" in _check(tmp_path, model={"kind": "hf", "path": str(no_processor)})
    wide = _hf_folder(tmp_path, resnet, {**vit, "size": {"height": 224, "width": 320}})
    assert "non-square input 224x320" in _check(tmp_path, model={"kind": "hf", "path": str(wide)})
    # A real image classifier's config, but weights that are not its own: refused, not randomly initialised.
    wrong = _hf_folder(tmp_path, {**resnet, "num_labels": 3, "embedding_size": 8, "hidden_sizes": [8, 16],
                                  "depths": [1, 1]}, vit)
    message = _check(tmp_path, model={"kind": "hf", "path": str(wrong)})
    assert "the weights do not fit ResNetForImageClassification (missing or mismatched: classifier" in message
