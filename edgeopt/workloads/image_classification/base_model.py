"""The image-classification base model in its three forms, and the preprocessing each one declares.

- bundled: EfficientNet-Lite0 exported to `model.safetensors` + `config.json` (`model.BaseFolderConfig`);
- hf:      a Hugging Face image-classification folder (config.json, safetensors weights,
           preprocessor_config.json), copied as is; transformers' `AutoModelForImageClassification` runs it;
- onnx:    the user's graph copied to `model.onnx`, with the preprocessing params.yaml declares written
           beside it as `config.json` (`Preprocessing`).

Every form reduces to one `Preprocessing`: RGB resized to image_size x image_size, then
(x / 255 - mean) / std per channel, fed as float32 in the graph's layout. Everything is published with
`atomic_dir`: a finished base folder or none.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeopt.errors import UserError, one_line
from edgeopt.imaging import onnx_image_input, value_dims
from edgeopt.io.atomic import atomic_dir
from edgeopt.workloads.image_classification.model import CONFIG_FILE, BaseFolderConfig, read_base_config

if TYPE_CHECKING:
    from edgeopt.recipes import BaseModelInfo
    from edgeopt.taskspec import SourceKind
    from edgeopt.workloads.image_classification import OnnxClassifierModel

PREPROCESSOR_FILE = "preprocessor_config.json"  # Hugging Face image processor
ONNX_FILE = "model.onnx"
HF_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", PREPROCESSOR_FILE)
DEFAULT_INPUT = "pixel_values"


class Preprocessing(BaseModel):
    """What every form of the base model expects: also the `config.json` written beside an ONNX base."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(ge=16, le=2048)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_name: str = DEFAULT_INPUT
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    num_classes: int | None = None  # None: not known from the files (a dynamic ONNX output)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not valid JSON ({one_line(err)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object")
    return raw


def is_hf_config(config: dict[str, Any]) -> bool:
    """A Hugging Face config.json (model_type), as opposed to the bundled form's own config."""
    return "model_type" in config


# -- Hugging Face folders -------------------------------------------------------------------------


def hf_num_classes(config: dict[str, Any]) -> int | None:
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    n = config.get("num_labels")
    return int(n) if isinstance(n, int) else None


def hf_preprocessing(folder: Path) -> Preprocessing:
    """The image processor's resize / rescale / normalize steps as one Preprocessing.

    size: `crop_size` when the processor center-crops, else `size` ({"height", "width"}, {"shortest_edge"}
    or an int); a non-square input is refused. A rescale factor r other than 1/255 (or no rescaling: r = 1)
    is folded into mean and std: (x * r - m) / s == (x / 255 - m / (255 r)) / (s / (255 r)).
    """
    path = folder / PREPROCESSOR_FILE
    if not path.is_file():
        raise UserError(f"{folder}: no {PREPROCESSOR_FILE} (an image-classification Hugging Face folder needs "
                        f"its image processor's settings)")
    raw = _read_json(path)
    size = raw.get("crop_size") if raw.get("do_center_crop") and raw.get("crop_size") else raw.get("size")
    if isinstance(size, dict):
        height = size.get("height", size.get("shortest_edge"))
        width = size.get("width", height)
    else:
        height = width = size
    if not isinstance(height, int) or not isinstance(width, int):
        raise UserError(f"{path}: no usable image size (size / crop_size: {size!r})")
    if height != width:
        raise UserError(f"{path}: non-square input {height}x{width} is not supported (image-classification "
                        f"feeds square images)")
    rescale = float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else 1.0
    if raw.get("do_normalize", True):
        mean, std = raw.get("image_mean", (0.5, 0.5, 0.5)), raw.get("image_std", (0.5, 0.5, 0.5))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean = [mean] * 3 if isinstance(mean, int | float) else mean  # some processors give one value for all
    std = [std] * 3 if isinstance(std, int | float) else std
    fold = 255.0 * rescale
    try:
        config = _read_json(folder / "config.json")
        return Preprocessing(image_size=height, mean=tuple(float(m) / fold for m in mean),
                             std=tuple(float(s) / fold for s in std), num_classes=hf_num_classes(config))
    except (ValidationError, TypeError, ValueError) as err:
        raise UserError(f"{path}: unusable image_mean / image_std / size ({one_line(err)})") from None


def check_hf_classifier(folder: Path, config: dict[str, Any] | None = None) -> str:
    """The folder is an image classifier the installed transformers can build; its architecture's name."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    config = config if config is not None else _read_json(folder / "config.json")
    model_type = config.get("model_type")
    archs = [str(a) for a in config.get("architectures") or []]
    if model_type not in CONFIG_MAPPING_NAMES:
        raise UserError(f"model: architecture {model_type!r} ({', '.join(archs) or 'no architectures'}) is unknown "
                        f"to the installed transformers; image-classification cannot run it")
    known: set[str] = set()
    for names in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.values():  # a name, or a tuple of names
        known.update([names] if isinstance(names, str) else names)
    if model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES or (archs and not set(archs) & known):
        raise UserError(f"model: {', '.join(archs) or model_type} is not an image classifier transformers can load "
                        f"with AutoModelForImageClassification (e.g. ViTForImageClassification, "
                        f"ResNetForImageClassification)")
    channels = config.get("num_channels", 3)
    if channels != 3:
        raise UserError(f"model: {', '.join(archs) or model_type} takes {channels}-channel images; "
                        f"image-classification feeds RGB (3 channels)")
    hf_preprocessing(folder)
    return archs[0] if archs else str(model_type)


# -- ONNX graphs ----------------------------------------------------------------------------------


def onnx_pixel_input(path: Path, source: OnnxClassifierModel, where: str) -> dict[str, Any]:
    """Check the graph's pixel input against the declared preprocessing; its name, layout, shape and classes.

    One UserError line for: no or several candidate inputs, a rank other than 4, no 3-channel axis, a
    non-float input, or a static height/width other than `image_size`.
    """
    import onnx

    model, chosen, dims, shown = onnx_image_input(path, source.input_name, where, "image-classification")
    if len(dims) != 4:
        raise UserError(f"{where}: input {shown} of {path.name} is not a [batch, 3, height, width] image tensor")
    elem = chosen.type.tensor_type.elem_type
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        raise UserError(f"{where}: input {shown} of {path.name} is {onnx.TensorProto.DataType.Name(elem)}; "
                        f"image-classification feeds float pixels")
    if dims[1] == 3:
        layout, spatial = "NCHW", dims[2:4]
    elif dims[3] == 3:
        layout, spatial = "NHWC", dims[1:3]
    elif isinstance(dims[1], str):
        layout, spatial = "NCHW", dims[2:4]
    else:
        raise UserError(f"{where}: input {shown} of {path.name} has no 3-channel (RGB) axis")
    static = [d for d in spatial if isinstance(d, int)]
    if any(d != source.image_size for d in static):
        raise UserError(f"{where}.image_size: {source.image_size} does not match the graph's input {shown} "
                        f"({'x'.join(str(d) for d in spatial)} {layout})")
    num_classes = None
    if model.graph.output:
        out = value_dims(model.graph.output[0])
        if len(out) >= 2 and isinstance(out[1], int) and out[1] > 0:
            num_classes = out[1]
    return {"input_name": chosen.name, "layout": layout, "input_shape": dims, "num_classes": num_classes}


def _external_files(path: Path) -> list[str]:
    """Relative locations of the graph's external tensor data."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tensors = [*model.graph.initializer]
    for node in model.graph.node:
        for attr in node.attribute:
            tensors.extend([attr.t, *attr.tensors] if attr.HasField("t") else attr.tensors)
    out: set[str] = set()
    for tensor in tensors:
        if onnx.external_data_helper.uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    out.add(entry.value)
    return sorted(out)


# -- any base folder --------------------------------------------------------------------------------


def preprocessing_of(base_path: Path) -> Preprocessing:
    """The preprocessing of a materialized base (a folder, or the ONNX file inside one)."""
    base_path = Path(base_path)
    if base_path.is_file():  # model.onnx, with the declared preprocessing beside it
        raw = _read_json(base_path.parent / CONFIG_FILE)
        try:
            return Preprocessing.model_validate(raw)
        except ValidationError as err:
            raise UserError(f"{base_path.parent / CONFIG_FILE}: invalid preprocessing ({one_line(err)})") from None
    config = _read_json(base_path / CONFIG_FILE)
    if is_hf_config(config):
        return hf_preprocessing(base_path)
    cfg = read_base_config(base_path)
    return Preprocessing(image_size=cfg.image_size, mean=cfg.mean, std=cfg.std, input_name=cfg.input_name,
                         num_classes=cfg.num_classes)


def materialize(source: SourceKind, dest: Path, task: str, project_root: Path) -> BaseModelInfo:
    """Write the base folder for `source` into `dest` (replaced atomically)."""
    from edgeopt.base_model import check_hf_folder, check_onnx_file
    from edgeopt.lineage import sha256_tree
    from edgeopt.recipes import BaseModelInfo
    from edgeopt.taskspec import HFFolderModel, resolve
    from edgeopt.workloads.image_classification import BundledModel, OnnxClassifierModel
    from edgeopt.workloads.image_classification.model import export_base_folder

    dest = Path(dest)
    details: dict[str, Any] = {"source": source.kind}
    with atomic_dir(dest) as tmp:
        if isinstance(source, BundledModel):
            summary = export_base_folder(tmp)
            details.update(architecture=summary["architecture"], parameters=summary["parameters"],
                           num_classes=BaseFolderConfig().num_classes)
            fmt, model_path = "hf", dest
        elif isinstance(source, HFFolderModel):
            src = resolve(source.path, project_root)
            check_hf_folder(src)
            details["architecture"] = check_hf_classifier(src)
            for pattern in HF_FILES:
                for f in sorted(src.glob(pattern)):
                    if f.is_file():
                        shutil.copy2(f, tmp / f.name)
            details["num_classes"] = hf_preprocessing(tmp).num_classes
            fmt, model_path = "hf", dest
        elif isinstance(source, OnnxClassifierModel):
            src = resolve(source.path, project_root)
            check_onnx_file(src)
            graph = onnx_pixel_input(src, source, "model")
            shutil.copy2(src, tmp / ONNX_FILE)
            for rel in _external_files(src):
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src.parent / rel, target)
            pre = Preprocessing(image_size=source.image_size, mean=source.mean, std=source.std,
                                input_name=graph["input_name"], layout=graph["layout"],
                                num_classes=graph["num_classes"])
            (tmp / CONFIG_FILE).write_text(json.dumps(pre.model_dump(mode="json"), indent=2) + "\n")
            details.update(num_classes=graph["num_classes"], input_shape=graph["input_shape"])
            fmt, model_path = "onnx", dest / ONNX_FILE
        else:  # the task's kinds are closed: config validation never lets another through
            raise UserError(f"model.kind {source.kind!r} does not fit task {task}")
        digest = sha256_tree(tmp)
    return BaseModelInfo(path=model_path, format=fmt, sha256=digest, task=task, tokenizer_dir=None,
                         details=details)


# -- the PyTorch form -------------------------------------------------------------------------------------


def torch_module(model_dir: Path, for_export: bool = False) -> tuple[Any, str, int, int]:
    """(module: float32 pixels [batch, 3, H, W] -> float32 logits [batch, classes], input name, H (= W), classes)
    of a bundled-form or Hugging Face folder, in eval mode. Loads safetensors only; nothing is downloaded.

    for_export: a Hugging Face model is built with eager attention (plain MatMul/Softmax, which every
    exporter and graph optimizer handles); EfficientNet-Lite's ReLU6 needs no export variant.
    """
    import torch

    from edgeopt.workloads.image_classification.model import load_base_folder

    model_dir = Path(model_dir)
    config = _read_json(model_dir / CONFIG_FILE)
    if not is_hf_config(config):
        cfg = read_base_config(model_dir)
        return load_base_folder(model_dir), cfg.input_name, cfg.image_size, cfg.num_classes

    from transformers import AutoModelForImageClassification

    class Logits(torch.nn.Module):
        def __init__(self, backbone: torch.nn.Module) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.backbone(pixel_values=pixel_values).logits.to(torch.float32)

    def load(**kwargs: Any) -> torch.nn.Module:
        model, info = AutoModelForImageClassification.from_pretrained(
            str(model_dir), use_safetensors=True, local_files_only=True, dtype=torch.float32,
            output_loading_info=True, **kwargs)
        # transformers initialises missing weights at random with only a warning: a silently wrong model.
        missing = sorted(info.get("missing_keys") or []) + sorted(str(k) for k in info.get("mismatched_keys") or [])
        if missing:
            raise UserError(f"{model_dir}: the weights do not fit {type(model).__name__} (missing or mismatched: "
                            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
        loaded: torch.nn.Module = model
        return loaded

    if for_export:
        try:
            backbone = load(attn_implementation="eager")
        except (ValueError, TypeError):  # an architecture without selectable attention: its only one
            backbone = load()
    else:
        backbone = load()
    # The candidate folder of a recipe may lack the image processor: then the config's own size (ViT-style
    # configs carry image_size), else 224.
    if (model_dir / PREPROCESSOR_FILE).is_file():
        size = hf_preprocessing(model_dir).image_size
    else:
        raw = config.get("image_size", 224)
        size = int(raw[0] if isinstance(raw, list | tuple) else raw)
    hf_config: Any = backbone.config
    classes = hf_num_classes(config) or int(hf_config.num_labels)
    return Logits(backbone).eval(), DEFAULT_INPUT, size, classes
