"""Shared real artifacts of the object-detection tests: the YOLOv8n export nudenet ships (320x320, 18 classes),
its base folder, a small letterboxed evaluation set from scikit-image's photographs, and the inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.recipes import BaseModelInfo, get_runtime
from edgeopt.workloads.object_detection import OnnxDetectorModel, PhotographsData
from edgeopt.workloads.object_detection.workload import WORKLOAD

N_EVAL, N_CALIBRATION = 12, 6


def yolo_model_path() -> Path:
    """nudenet's 320n.onnx, found without importing nudenet (its import needs OpenCV, which is not installed)."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the nudenet package (the YOLOv8n test model) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "320n.onnx"


@pytest.fixture(scope="session")
def od_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("object-detection")


@pytest.fixture(scope="session")
def od_source() -> OnnxDetectorModel:
    return OnnxDetectorModel(path=yolo_model_path())


@pytest.fixture(scope="session")
def od_base(od_root: Path, od_source: OnnxDetectorModel) -> BaseModelInfo:
    return WORKLOAD.materialize_base(od_source, od_root / "base", od_root)


@pytest.fixture(scope="session")
def od_bench() -> BenchmarkConfig:
    return BenchmarkConfig(batch_size=1, throughput_batch_size=2, quality_batch_size=4, warmup_iterations=1,
                           min_iterations=2, min_time_s=0.0)


@pytest.fixture(scope="session")
def od_data(od_root: Path, od_base: BaseModelInfo) -> Path:
    WORKLOAD.build_data(PhotographsData(n_eval=N_EVAL, n_calibration=N_CALIBRATION), od_root / "data", od_base)
    return od_root / "data"


@pytest.fixture(scope="session")
def od_inputs(od_root: Path, od_base: BaseModelInfo, od_data: Path, od_bench: BenchmarkConfig) -> Path:
    path = od_root / "inputs.npz"
    np.savez(path, **WORKLOAD.prepare_inputs(od_base, od_data, od_bench))
    return path


@pytest.fixture(scope="session")
def od_runner(od_base: BaseModelInfo) -> object:
    return get_runtime("onnxruntime")(od_base.path.parent, od_base.path.name, {}, 1)


def yolo_build_inputs(tmp: Path) -> tuple[BaseModelInfo, object, np.ndarray]:
    """For recipe tests: the detector's base folder under tmp, its task's calibration (8 letterboxed calibration
    crops, through the workload as in the pipeline), and the astronaut letterboxed for the detector."""
    from PIL import Image

    from edgeopt.imaging import skimage_data_dir
    from edgeopt.recipes import WorkloadCalibration
    from edgeopt.workloads.object_detection.boxes import letterbox
    from edgeopt.workloads.object_detection.images import build_photograph_images, load_sets

    base = WORKLOAD.materialize_base(OnnxDetectorModel(path=yolo_model_path()), tmp / "base", tmp)
    build_photograph_images(tmp / "data", 8, 8, 0, 320)
    images = load_sets(tmp / "data")["calibration"]["images"]
    calibration = WorkloadCalibration(WORKLOAD, {"calibration_images": images})
    astronaut, _ = letterbox(Image.open(skimage_data_dir() / "astronaut.png").convert("RGB"), 320)
    return base, calibration, astronaut[None]
