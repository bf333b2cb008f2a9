"""The image-classification workload end to end without the pipeline, on real artifacts: the bundled
EfficientNet-Lite0, crops of scikit-image's photographs, a real labelled image folder, a tiny Hugging Face
classifier and a tiny ONNX classifier built here (nothing downloaded, nothing mocked)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.recipes import BaseModelInfo
from edgeopt.taskspec import HFFolderModel, get_task
from edgeopt.workloads.base import get_workload
from edgeopt.workloads.image_classification import (
    BundledModel,
    ImageFolderData,
    OnnxClassifierModel,
    PhotographsData,
)
from edgeopt.workloads.image_classification.base_model import preprocessing_of
from edgeopt.workloads.image_classification.images import (
    center_crop,
    expand,
    preprocess,
    read_rgb,
    skimage_data_dir,
)
from edgeopt.workloads.image_classification.logits import as_logits, logits
from edgeopt.workloads.image_classification.workload import LOGITS_FILE, WORKLOAD
from tests.workloads.image_classification.conftest import N_CALIBRATION, N_EVAL
from tests.workloads.image_classification.ic_helpers import (
    CATS,
    ESPRESSO,
    OrtRunner,
    ProbabilitiesRunner,
    TorchFormRunner,
    tiny_hf,
)

torch = pytest.importorskip("torch")
PHOTO = skimage_data_dir()


def whole_photo(name: str, size: int = 224) -> np.ndarray:
    return center_crop(read_rgb(PHOTO / name), size, crop_fraction=None)


def test_the_task_is_discovered_with_its_source_kinds() -> None:
    task = get_task("image-classification")
    assert task.family == "tensor"
    assert task.model_kinds == ("bundled", "hf", "onnx")
    assert task.data_kinds == ("skimage-photographs", "image-folder")
    assert task.parse_model(None) == BundledModel()
    assert task.parse_data(None) == PhotographsData(n_eval=512, n_calibration=64, seed=0)
    assert task.parse_model({"kind": "onnx", "path": "m.onnx", "image_size": 256}).image_size == 256
    with pytest.raises(ValueError, match="n_calibration"):
        task.parse_data({"kind": "skimage-photographs", "n_calibration": 2})
    workload = get_workload("image-classification")
    assert workload is WORKLOAD and workload.default_quality_metrics == task.quality_metrics
    assert set(workload.default_quality_metrics) <= set(workload.metric_names)


def test_the_bundled_base_folder(ic_base: BaseModelInfo) -> None:
    assert ic_base.format == "hf" and ic_base.tokenizer_dir is None and ic_base.task == "image-classification"
    assert sorted(p.name for p in Path(ic_base.path).iterdir()) == ["config.json", "model.safetensors"]
    pre = preprocessing_of(ic_base.path)
    assert (pre.image_size, pre.mean, pre.std, pre.input_name, pre.num_classes) == \
        (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "pixel_values", 1000)


def test_torch_form_classifies_the_shipped_photographs(ic_base: BaseModelInfo) -> None:
    form = WORKLOAD.torch_form(ic_base.path)
    (inp,), (out,) = form.io_spec.inputs, form.io_spec.outputs
    assert (inp.name, inp.dtype, inp.shape) == ("pixel_values", "float32", ("batch", 3, 224, 224))
    assert (out.name, out.dtype, out.shape) == ("logits", "float32", ("batch", 1000))
    assert form.example["pixel_values"].shape == (1, 3, 224, 224) and form.example["pixel_values"].dtype == np.float32
    assert not form.module.training
    pixels = preprocess(np.stack([whole_photo("chelsea.png"), whole_photo("coffee.png")]))
    with torch.inference_mode():
        scores = form.module(torch.from_numpy(pixels)).numpy()
        one = form.module(torch.from_numpy(form.example["pixel_values"])).numpy()
    assert scores.shape == (2, 1000) and scores.dtype == np.float32 and one.shape == (1, 1000)  # dynamic batch
    cat, espresso = scores.argmax(axis=1).tolist()
    assert cat in CATS
    assert espresso == ESPRESSO


def test_data_inputs_and_calibration(ic_data: Path, ic_inputs: dict[str, np.ndarray], ic_runner: TorchFormRunner,
                                     ic_bench: BenchmarkConfig) -> None:
    report = WORKLOAD.validate_data(ic_data, ic_data.parent / "reports" / "validation.json")
    assert report.success, report.failed
    rows = WORKLOAD.dataset_rows(ic_data)
    assert len(rows) == N_EVAL and {"index", "source", "sha256", "box", "flip"} <= set(rows[0])
    assert WORKLOAD.describe_data(0, N_EVAL) == f"{N_EVAL} evaluation images"

    assert set(ic_inputs) == {"eval_pixels", "calibration_pixels", "bench_pixels"}  # no labels: photographs
    assert ic_inputs["eval_pixels"].shape == (N_EVAL, 3, 224, 224)
    assert ic_inputs["calibration_pixels"].shape == (N_CALIBRATION, 3, 224, 224)
    assert ic_inputs["bench_pixels"].shape == (ic_bench.throughput_batch_size, 3, 224, 224)
    assert all(a.dtype == np.float32 for a in ic_inputs.values())
    assert -1.0 <= ic_inputs["eval_pixels"].min() < ic_inputs["eval_pixels"].max() <= 1.0  # (x/255 - 0.5) / 0.5

    feeds = WORKLOAD.calibration(ic_inputs, ic_runner.io_spec)
    assert len(feeds) == N_CALIBRATION
    assert all(list(f) == ["pixel_values"] and f["pixel_values"].shape == (1, 3, 224, 224) for f in feeds)
    np.testing.assert_array_equal(np.concatenate([f["pixel_values"] for f in feeds]), ic_inputs["calibration_pixels"])
    eval_rows = {r.tobytes() for r in ic_inputs["eval_pixels"]}
    assert not any(f["pixel_values"][0].tobytes() in eval_rows for f in feeds)  # never an evaluation input
    assert list(WORKLOAD.calibration(ic_inputs, None)[0]) == ["pixel_values"]


def test_benchmark_times_batch_one_and_the_throughput_batch(ic_runner: TorchFormRunner,
                                                            ic_inputs: dict[str, np.ndarray],
                                                            ic_bench: BenchmarkConfig) -> None:
    speed = WORKLOAD.benchmark(ic_runner, ic_inputs, ic_bench)
    assert speed.latency.batch_size == 1 and speed.throughput.batch_size == 4
    assert speed.latency.iterations >= 2 and speed.latency.p50_ms > 0
    # Items/s is the median over throughput batches of each batch's own rate; the raw series are kept.
    rates = [4 / d for d in speed.samples["throughput_s"]]
    assert speed.throughput_items_per_s == pytest.approx(float(np.median(rates)))
    assert len(speed.samples["latency_s"]) == speed.latency.iterations
    assert speed.samples["items_per_s"] == pytest.approx(rates)


def test_the_baseline_agrees_perfectly_with_itself(ic_measured: tuple[Path, Path]) -> None:
    first, second = ic_measured
    with np.load(first / LOGITS_FILE) as saved:
        assert saved["logits"].shape == (N_EVAL, 1000) and saved["logits"].dtype == np.float32
        assert "labels" not in saved.files
    q = WORKLOAD.quality(second, first)
    assert q.metrics == {"decisive_top1_agreement": 1.0, "top1_agreement": 1.0, "top5_overlap": 1.0,
                         "softmax_kld": 0.0}
    assert q.retention == {"decisive_top1_agreement": 1.0, "top1_agreement": 1.0, "top5_overlap": 1.0}
    assert set(q.metrics) | set(q.retention) <= set(WORKLOAD.metric_names)


def test_probability_outputs_are_compared_as_their_log(ic_root: Path, ic_runner: TorchFormRunner,
                                                       ic_inputs: dict[str, np.ndarray], ic_bench: BenchmarkConfig,
                                                       ic_measured: tuple[Path, Path]) -> None:
    out = ic_root / "measure-probabilities"
    out.mkdir()
    WORKLOAD.write_outputs(ProbabilitiesRunner(ic_runner), ic_inputs, ic_bench, out)
    q = WORKLOAD.quality(out, ic_measured[0])
    assert q.metrics["top1_agreement"] == 1.0 and q.metrics["top5_overlap"] == 1.0
    assert q.metrics["softmax_kld"] < 1e-5
    rows = np.full((3, 4), 0.25, dtype=np.float32)
    np.testing.assert_allclose(as_logits(rows), np.log(rows))
    not_a_distribution = np.array([[0.25, 0.25, 0.25, 0.2]], dtype=np.float32)
    np.testing.assert_array_equal(as_logits(not_a_distribution), not_a_distribution)
    assert as_logits(np.ones((2, 5, 1, 1))).shape == (2, 5)


def _folder(root: Path, n_per_class: int) -> tuple[Path, Path]:
    """A real labelled image folder: PNG crops of chelsea (cat) and coffee (espresso), and its class map."""
    from PIL import Image

    folder = root / "images"
    for cls, photo, seed in (("cat", "chelsea.png", 1), ("espresso", "coffee.png", 2)):
        (folder / cls).mkdir(parents=True)
        for i, img in enumerate(expand([whole_photo(photo, 320)], n_per_class, seed=seed, size=256)):
            Image.fromarray(img).save(folder / cls / f"{i:03d}.png")
    classes = root / "classes.json"
    classes.write_text(json.dumps({"cat": 285, "espresso": ESPRESSO}))
    return folder, classes


def test_an_image_folder_gives_accuracy_and_its_retention(tmp_path: Path, ic_base: BaseModelInfo,
                                                          ic_runner: TorchFormRunner,
                                                          ic_bench: BenchmarkConfig) -> None:
    folder, classes = _folder(tmp_path, 20)
    source = ImageFolderData(path=folder, classes=classes, n_calibration=8)
    summary = WORKLOAD.build_data(source, tmp_path / "data", ic_base)
    assert (summary.kind, summary.n_sentences, summary.n_calibration) == ("image-folder", 32, 8)
    assert WORKLOAD.validate_data(tmp_path / "data", None).success
    inputs = WORKLOAD.prepare_inputs(ic_base, tmp_path / "data", ic_bench)
    assert sorted(set(inputs["eval_labels"].tolist())) == [285, ESPRESSO]
    rows = WORKLOAD.dataset_rows(tmp_path / "data")
    assert {r["label"] for r in rows} == {285, ESPRESSO} and rows[0]["source"].endswith(".png")
    out = tmp_path / "measured"
    out.mkdir()
    WORKLOAD.write_outputs(ic_runner, inputs, ic_bench, out)
    q = WORKLOAD.quality(out, out)
    assert set(q.metrics) == {"decisive_top1_agreement", "top1_agreement", "top5_overlap", "softmax_kld",
                              "top1_accuracy", "top5_accuracy"}
    assert q.retention == {"decisive_top1_agreement": 1.0, "top1_agreement": 1.0, "top5_overlap": 1.0,
                           "top1_accuracy": 1.0, "top5_accuracy": 1.0}
    # Crops of an Egyptian cat and of an espresso: the model knows both.
    assert q.metrics["top5_accuracy"] >= q.metrics["top1_accuracy"] >= 0.5
    print(f"image folder: top-1 accuracy {q.metrics['top1_accuracy']:.3f}, top-5 {q.metrics['top5_accuracy']:.3f}")


def _tiny_onnx(path: Path, size: int = 32, classes: int = 10, batch: int | str = 1) -> Path:
    """A real (tiny) ONNX classifier: 1x1 conv, global average pool, flatten: images [batch, 3, size, size]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(classes, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["scores"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return path


def test_an_onnx_classifier_with_its_declared_preprocessing(tmp_path: Path, ic_bench: BenchmarkConfig) -> None:
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    source = OnnxClassifierModel(path=model, image_size=32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    facts = source.inspect(tmp_path, "pipelines.ic.model")
    assert facts.formats == ("onnx",)
    assert facts.details == {"input_name": "images", "layout": "NCHW", "input_shape": [1, 3, 32, 32],
                             "num_classes": 10}
    base = WORKLOAD.materialize_base(source, tmp_path / "base", tmp_path)
    assert base.format == "onnx" and base.path == tmp_path / "base" / "model.onnx"
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == ["config.json", "model.onnx"]
    pre = preprocessing_of(base.path)
    assert (pre.image_size, pre.mean, pre.std, pre.input_name) == (32, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "images")

    WORKLOAD.build_data(PhotographsData(n_eval=32, n_calibration=8), tmp_path / "data", base)
    inputs = WORKLOAD.prepare_inputs(base, tmp_path / "data", ic_bench)
    assert inputs["eval_pixels"].shape == (32, 3, 32, 32)
    runner = OrtRunner(base.path)
    feeds = WORKLOAD.calibration(inputs, runner.io_spec)
    assert list(feeds[0]) == ["images"] and feeds[0]["images"].shape == (1, 3, 32, 32)
    scores = logits(runner, inputs["eval_pixels"][:3])  # a static batch of 1: run image by image
    assert scores.shape == (3, 10) and runner.batches == [1, 1, 1]
    (tmp_path / "out").mkdir()
    WORKLOAD.write_outputs(runner, inputs, ic_bench, tmp_path / "out")
    assert WORKLOAD.quality(tmp_path / "out", tmp_path / "out").metrics["top1_agreement"] == 1.0


def test_a_hugging_face_classifier_folder(tmp_path: Path) -> None:
    from transformers import AutoImageProcessor

    src = tiny_hf(tmp_path / "hf")
    facts = HFFolderModel(path=src).inspect(tmp_path, "pipelines.ic.model")
    base = WORKLOAD.materialize_base(HFFolderModel(path=src), tmp_path / "base", tmp_path)
    assert base.format == "hf" and base.details["architecture"] == "ResNetForImageClassification"
    assert (Path(base.path) / "preprocessor_config.json").is_file() and facts.hf_config is not None
    pre = preprocessing_of(base.path)
    assert (pre.image_size, pre.num_classes) == (64, 7)

    # Our preprocessing is the image processor's own.
    image = whole_photo("chelsea.png", 64)
    theirs = AutoImageProcessor.from_pretrained(str(base.path))(images=[image], return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(preprocess(image[None], pre.mean, pre.std), theirs, atol=1e-5)

    form = WORKLOAD.torch_form(base.path)
    assert form.io_spec.inputs[0].shape == ("batch", 3, 64, 64) and form.io_spec.outputs[0].shape == ("batch", 7)
    with torch.inference_mode():
        direct = form.module(torch.from_numpy(theirs)).numpy()
    assert direct.shape == (1, 7) and np.isfinite(direct).all()
    exported = WORKLOAD.torch_form(base.path, for_export=True)
    with torch.inference_mode():
        np.testing.assert_allclose(exported.module(torch.from_numpy(theirs)).numpy(), direct, atol=1e-5)
