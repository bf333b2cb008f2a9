"""The promoted image-classification pyfunc: a real candidate folder of the bundled EfficientNet-Lite0, served
through the runtime registry; direct calls, then MLflow's own save/load (models from code) and the load check."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.config import Params
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import CandidateRecord
from edgeopt.workloads.image_classification.images import read_rgb, skimage_data_dir
from edgeopt.workloads.image_classification.serving import ImageClassifierModel
from edgeopt.workloads.image_classification.workload import WORKLOAD
from tests.workloads.image_classification.ic_helpers import CATS, ESPRESSO, pipeline, register_test_runtime

pytest.importorskip("torch")
PHOTO = skimage_data_dir()


class Context:
    """What MLflow hands `load_context`: the artifacts' local paths and the model_config."""

    def __init__(self, artifacts: dict[str, str], model_config: dict[str, Any]) -> None:
        self.artifacts = artifacts
        self.model_config = model_config


@pytest.fixture(scope="module")
def candidate(ic_base: BaseModelInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base folder as a built candidate: its files and candidate.json naming the runtime that serves it."""
    runtime = register_test_runtime()
    folder = tmp_path_factory.mktemp("candidate") / "torch-fp32"
    shutil.copytree(ic_base.path, folder)
    CandidateRecord(name="torch-fp32", recipe="torch-eager", framework="torch", parent=None, options={},
                    format="hf", runtime=runtime, precision="fp32", model_file="model.safetensors",
                    details={"task": "image-classification"}, cache_key="test", base_sha256=ic_base.sha256,
                    build_seconds=0.0).write(folder / "candidate.json")
    return folder


@pytest.fixture(scope="module")
def model_config(ic_base: BaseModelInfo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cfg = Params.model_validate(pipeline(tmp_path_factory.mktemp("params"))).pipelines["ic"]
    return WORKLOAD.serving_config(cfg, ic_base)


def test_serving_config_is_the_measured_preprocessing(model_config: dict[str, Any], ic_base: BaseModelInfo) -> None:
    assert model_config == {"image_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                            "crop_fraction": 0.875, "batch_size": 8, "threads": 2}
    assert WORKLOAD.serving_artifacts(ic_base) == {}
    assert WORKLOAD.python_model().name == "serving_code.py" and WORKLOAD.python_model().is_file()


def test_the_pyfunc_predicts_chelsea_as_a_cat(candidate: Path, model_config: dict[str, Any]) -> None:
    import pandas as pd

    model = ImageClassifierModel()
    model.load_context(Context({"candidate": str(candidate)}, model_config))

    by_path = model.predict(None, str(PHOTO / "chelsea.png"))
    assert isinstance(by_path, pd.DataFrame) and len(by_path) == 1
    row = by_path.iloc[0]
    assert row["class_index"] in CATS
    assert row["top5_indices"][0] == row["class_index"] and len(row["top5_indices"]) == 5
    probs = row["top5_probabilities"]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert row["probability"] == probs[0]

    chelsea = np.asarray(read_rgb(PHOTO / "chelsea.png"))  # HWC uint8, 300 x 451
    assert chelsea.dtype == np.uint8 and chelsea.shape == (300, 451, 3)
    assert model.predict(None, chelsea).iloc[0]["class_index"] in CATS

    both = model.predict(None, [PHOTO / "coffee.png", chelsea])
    assert both["class_index"].tolist()[0] == ESPRESSO and both["class_index"].tolist()[1] in CATS
    frame = model.predict(None, pd.DataFrame({"image": [str(PHOTO / "coffee.png")]}))
    assert frame["class_index"].tolist() == [ESPRESSO]
    with pytest.raises(ValueError, match="uint8"):
        model.predict(None, chelsea.astype(np.float32))


def test_the_registered_form_passes_the_load_check(candidate: Path, model_config: dict[str, Any], ic_data: Path,
                                                   ic_measured: tuple[Path, Path], tmp_path: Path) -> None:
    """MLflow saves the serving code as source and loads it back by running it: the load check promotion runs."""
    import mlflow.pyfunc

    mlflow.pyfunc.save_model(path=str(tmp_path / "model"), python_model=str(WORKLOAD.python_model()),
                             artifacts={"candidate": str(candidate)}, model_config=model_config, pip_requirements=[])
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    ok, detail = WORKLOAD.load_check(loaded, ic_data, ic_measured[0])
    assert ok, detail
    assert detail == "top-1 of 8/8 evaluation images equals the measured argmax"
    assert loaded.predict([np.asarray(read_rgb(PHOTO / "chelsea.png"))])["class_index"].tolist()[0] in CATS
