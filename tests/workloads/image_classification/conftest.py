"""Shared real artifacts of the image-classification tests: the bundled EfficientNet-Lite0 base folder, a small
evaluation set cut from scikit-image's photographs, and the inputs every candidate would see."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.recipes import BaseModelInfo
from edgeopt.workloads.image_classification import BundledModel, PhotographsData
from edgeopt.workloads.image_classification.workload import WORKLOAD
from tests.workloads.image_classification.ic_helpers import TorchFormRunner

N_EVAL, N_CALIBRATION = 32, 8


@pytest.fixture(scope="session")
def ic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-classification")


@pytest.fixture(scope="session")
def ic_base(ic_root: Path) -> BaseModelInfo:
    return WORKLOAD.materialize_base(BundledModel(), ic_root / "base", ic_root)


@pytest.fixture(scope="session")
def ic_bench() -> BenchmarkConfig:
    return BenchmarkConfig(batch_size=1, throughput_batch_size=4, quality_batch_size=8, warmup_iterations=1,
                           min_iterations=2, min_time_s=0.0)


@pytest.fixture(scope="session")
def ic_data(ic_root: Path, ic_base: BaseModelInfo) -> Path:
    WORKLOAD.build_data(PhotographsData(n_eval=N_EVAL, n_calibration=N_CALIBRATION, seed=0), ic_root / "data", ic_base)
    return ic_root / "data"


@pytest.fixture(scope="session")
def ic_inputs(ic_base: BaseModelInfo, ic_data: Path, ic_bench: BenchmarkConfig) -> dict[str, np.ndarray]:
    return WORKLOAD.prepare_inputs(ic_base, ic_data, ic_bench)


@pytest.fixture(scope="session")
def ic_runner(ic_base: BaseModelInfo) -> TorchFormRunner:
    return TorchFormRunner(ic_base.path)


@pytest.fixture(scope="session")
def ic_measured(ic_root: Path, ic_runner: TorchFormRunner, ic_inputs: dict[str, np.ndarray],
                ic_bench: BenchmarkConfig) -> tuple[Path, Path]:
    """The baseline's outputs, written twice (two measurements of the same runner)."""
    first, second = ic_root / "measure-a", ic_root / "measure-b"
    for out in (first, second):
        out.mkdir()
        WORKLOAD.write_outputs(ic_runner, ic_inputs, ic_bench, out)
    return first, second
