"""Shared real artifacts of the onnx-model tests: the mixed-dtype graph the tests make, its base folder, seeded
synthetic feeds and the inputs every candidate would see."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.recipes import BaseModelInfo
from edgeopt.workloads.onnx_model import OnnxGraphModel, SyntheticFeeds
from edgeopt.workloads.onnx_model.workload import WORKLOAD
from tests.workloads.onnx_model.om_helpers import mixed_model, mixed_synthetic


@pytest.fixture(scope="session")
def om_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-model")


@pytest.fixture(scope="session")
def mixed_onnx(om_root: Path) -> Path:
    return mixed_model(om_root / "src" / "mixed.onnx")


@pytest.fixture(scope="session")
def om_base(om_root: Path, mixed_onnx: Path) -> BaseModelInfo:
    return WORKLOAD.materialize_base(OnnxGraphModel(path=mixed_onnx), om_root / "base", om_root)


@pytest.fixture(scope="session")
def om_bench() -> BenchmarkConfig:
    return BenchmarkConfig(batch_size=1, throughput_batch_size=4, warmup_iterations=1, min_iterations=2,
                           min_time_s=0.0)


@pytest.fixture(scope="session")
def om_data(om_root: Path, om_base: BaseModelInfo) -> Path:
    WORKLOAD.build_data(SyntheticFeeds.model_validate(mixed_synthetic()), om_root / "data", om_base)
    return om_root / "data"


@pytest.fixture(scope="session")
def om_inputs(om_base: BaseModelInfo, om_data: Path, om_bench: BenchmarkConfig) -> dict[str, np.ndarray]:
    return WORKLOAD.prepare_inputs(om_base, om_data, om_bench)
