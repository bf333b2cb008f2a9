"""The bundled EfficientNet-Lite0 on scikit-image's shipped photographs, and its safetensors base folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import UserError
from edgeopt.workloads.image_classification.images import (
    center_crop,
    expand,
    load_image_folder,
    preprocess,
    read_rgb,
    skimage_data_dir,
)
from edgeopt.workloads.image_classification.model import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    bundled_efficientnet_lite0,
    export_base_folder,
    load_base_folder,
)

torch = pytest.importorskip("torch")

CATS = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
PARAMETERS = 4_652_008
TENSORS = 296


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return bundled_efficientnet_lite0()


def logits(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(preprocess(batch))).numpy()


def whole_photo(name: str) -> np.ndarray:
    """The shared README's preprocessing input: the whole photograph resized to 224x224 RGB."""
    return center_crop(read_rgb(skimage_data_dir() / name), 224, crop_fraction=None)


def test_bundled_model_has_every_weight_and_is_in_eval_mode(model: torch.nn.Module) -> None:
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS
    assert len(model.state_dict()) == TENSORS


def test_predicts_the_shipped_photographs(model: torch.nn.Module) -> None:
    names = ["chelsea.png", "coffee.png", "motorcycle_left.png"]
    out = logits(model, np.stack([whole_photo(n) for n in names]))
    assert out.shape == (3, 1000)
    top1 = out.argmax(axis=1).tolist()
    assert top1[0] in CATS
    assert top1 == [285, 967, 665]  # Egyptian cat, espresso, moped


def test_an_image_folder_center_crop_is_still_the_cat(model: torch.nn.Module, tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    shutil.copy(skimage_data_dir() / "chelsea.png", tmp_path / "cat" / "chelsea.png")
    images, labels, _ = load_image_folder(tmp_path, {"cat": 285})
    assert int(logits(model, images).argmax()) in CATS
    assert labels.tolist() == [285]


def test_base_folder_round_trip_gives_identical_logits(model: torch.nn.Module, tmp_path: Path) -> None:
    summary = export_base_folder(tmp_path / "base", model)
    base = tmp_path / "base"
    assert sorted(p.name for p in base.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert json.loads((base / CONFIG_FILE).read_text()) == {
        "architecture": "efficientnet-lite0", "num_classes": 1000, "image_size": 224, "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5], "input_name": "pixel_values", "layout": "NCHW", "labels": "imagenet-1k",
    }
    assert summary["parameters"] == PARAMETERS
    assert summary["tensors"] == TENSORS
    assert summary["sha256"] == hashlib.sha256((base / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert export_base_folder(tmp_path / "again", model)["sha256"] == summary["sha256"]  # deterministic file

    loaded = load_base_folder(base)
    assert not loaded.training
    batch = expand([whole_photo("coffee.png"), whole_photo("astronaut.png")], 6, seed=3)
    delta = np.abs(logits(loaded, batch) - logits(model, batch)).max()
    assert delta < 1e-5


def test_base_folder_problems_are_one_line_user_errors(model: torch.nn.Module, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    base = tmp_path / "base"
    export_base_folder(base, model)

    config = json.loads((base / CONFIG_FILE).read_text())
    (base / CONFIG_FILE).write_text(json.dumps({**config, "colour": "rgb"}))
    with pytest.raises(UserError, match="invalid base-folder config") as err:
        load_base_folder(base)
    assert "\n" not in str(err.value)
    (base / CONFIG_FILE).write_text(json.dumps(config))

    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "_fc.bias"}
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(base / WEIGHTS_FILE))
    with pytest.raises(UserError) as err:
        load_base_folder(base)
    message = str(err.value)
    assert "missing _fc.bias" in message and "unexpected extra.weight" in message and "\n" not in message

    (base / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="corrupt safetensors"):
        load_base_folder(base)
