"""EfficientNet-Lite0 ported to mlx.nn, built by mlx-convert from the real bundled base folder and run by the one
mlx runtime, against the task's PyTorch form on real photographs.

Measured (32 evaluation crops of the shipped photographs; max |logit| 11.5): FP32 max |Δlogit| 1.7e-5, top-1
32/32; FP16 max |Δlogit| 0.048, top-1 32/32. The tolerances below leave a wide margin for kernel differences
and still catch a wrong padding, stride, fold or layout (each moves logits by whole units).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.errors import CandidateError
from edgeopt.iospec import IOSpec
from edgeopt.lineage import tree_size_bytes
from edgeopt.recipes import BaseModelInfo, BuildContext, BuildOutput, FeedList, get_recipe, get_runtime
from edgeopt.workloads.image_classification.images import center_crop, preprocess, read_rgb, skimage_data_dir
from edgeopt.workloads.image_classification.logits import logits_all
from tests.workloads.image_classification.ic_helpers import ESPRESSO, TorchFormRunner, tiny_hf

pytest.importorskip("mlx.core", reason="mlx-convert declares Requirements(modules=('mlx',))")

THREADS = 2
PHOTOS = ("chelsea.png", "coffee.png", "motorcycle_left.png")  # Egyptian cat 285, espresso 967, moped 665
N_CROPS = 3  # evaluation crops besides the whole photographs (MLX runs on one core: ~0.3 s an image)
FP32_MAX_ABS = 1e-3  # measured 1.7e-5
FP16_MAX_ABS = 0.25  # measured 0.048


def build(base: BaseModelInfo, out: Path, **options: Any) -> BuildOutput:
    recipe = get_recipe("mlx-convert")
    out.mkdir(parents=True)
    return recipe.build(BuildContext(base=base, parent=None, out_dir=out, options=recipe.options_model(**options),
                                     calibration=FeedList(), threads=THREADS))


def runner(folder: Path, output: BuildOutput) -> Any:
    return get_runtime(output.runtime)(folder, output.model_file, output.details, THREADS)


@pytest.fixture(scope="module")
def pixels(ic_inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The whole photographs (the README's preprocessing) and a few of the task's evaluation crops."""
    photos = preprocess(np.stack([center_crop(read_rgb(skimage_data_dir() / n), 224, crop_fraction=None)
                                  for n in PHOTOS]))
    return np.concatenate([photos, ic_inputs["eval_pixels"][:N_CROPS]]).astype(np.float32)


@pytest.fixture(scope="module")
def torch_logits(ic_runner: TorchFormRunner, pixels: np.ndarray) -> np.ndarray:
    return logits_all(ic_runner, pixels, len(pixels))


@pytest.fixture(scope="module")
def fp32(ic_base: BaseModelInfo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildOutput]:
    out = tmp_path_factory.mktemp("mlx-ic") / "fp32"
    return out, build(ic_base, out)


def test_fp32_matches_the_pytorch_form(fp32: tuple[Path, BuildOutput], pixels: np.ndarray,
                                       torch_logits: np.ndarray) -> None:
    folder, output = fp32
    assert (output.format, output.runtime, output.precision) == ("mlx", "mlx", "fp32")
    assert output.details["task"] == "image-classification"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "mlx_config.json", "weights.safetensors"]
    # 49 convolutions (weight + folded bias) and the classifier: no BatchNorm tensors are left.
    assert output.details["tensors"] == 100
    got = logits_all(runner(folder, output), pixels, 4)
    assert got.shape == torch_logits.shape == (len(pixels), 1000) and got.dtype == np.float32
    assert got[: len(PHOTOS)].argmax(axis=1).tolist() == [285, ESPRESSO, 665]
    np.testing.assert_array_equal(got.argmax(axis=1), torch_logits.argmax(axis=1))
    assert np.abs(got - torch_logits).max() < FP32_MAX_ABS


def test_fp16_keeps_the_answers(ic_base: BaseModelInfo, fp32: tuple[Path, BuildOutput], pixels: np.ndarray,
                                torch_logits: np.ndarray, tmp_path: Path) -> None:
    output = build(ic_base, tmp_path / "fp16", dtype="fp16")
    assert output.precision == "fp16"
    assert tree_size_bytes(tmp_path / "fp16") < 0.55 * tree_size_bytes(fp32[0])
    n = len(PHOTOS)  # FP16 convolutions are the slowest path of MLX's CPU build: the photographs only
    got = logits_all(runner(tmp_path / "fp16", output), pixels[:n], n)
    np.testing.assert_array_equal(got.argmax(axis=1), torch_logits[:n].argmax(axis=1))
    delta = np.abs(got - torch_logits[:n]).max()
    assert 0 < delta < FP16_MAX_ABS  # not bit-equal to FP32: the weights really are half precision


def test_the_runtime_takes_and_returns_named_tensors(fp32: tuple[Path, BuildOutput], pixels: np.ndarray,
                                                     ic_runner: TorchFormRunner) -> None:
    folder, output = fp32
    mlx = runner(folder, output)
    assert mlx.io_spec == IOSpec.from_dict(output.io_spec or {}) == ic_runner.io_spec
    assert mlx.io_spec.input_names == ("pixel_values",) and mlx.io_spec.output_names == ("logits",)
    assert mlx.io_spec.dynamic_axes() == {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
    out = mlx.run({"pixel_values": pixels[:2]})
    assert list(out) == ["logits"] and out["logits"].shape == (2, 1000) and out["logits"].dtype == np.float32
    with pytest.raises(CandidateError, match="pixel_values"):
        mlx.run({"images": pixels[:1]})
    with pytest.raises(CandidateError, match="size 112"):
        mlx.run({"pixel_values": pixels[:1, :, :112, :112]})
    info = mlx.runtime_info()
    assert info["task"] == "image-classification" and info["inputs"] == ["pixel_values"]


def test_what_mlx_cannot_do_fails_with_the_reason(ic_base: BaseModelInfo, tmp_path: Path) -> None:
    # nn.quantize packs Linear/Embedding only: quantizing a CNN would leave 72% of its weights float.
    with pytest.raises(CandidateError, match=r"no quantized convolution\); 49 Conv layers hold 72%"):
        build(ic_base, tmp_path / "int8", quantize_bits=8)
    hf = BaseModelInfo(path=tiny_hf(tmp_path / "resnet"), format="hf", sha256="x", task="image-classification")
    with pytest.raises(CandidateError, match="no MLX form for ResNetForImageClassification"):
        build(hf, tmp_path / "resnet-mlx")
