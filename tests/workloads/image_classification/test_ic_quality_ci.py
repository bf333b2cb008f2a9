"""Confidence intervals of the image-classification quality metrics, bootstrapped over the evaluation images, on
real outputs: the bundled EfficientNet-Lite0 on crops of scikit-image's photographs (and on a real labelled image
folder), against the same network with seeded noise added to its logits (a worse candidate on the same pixels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.iospec import Feed
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import Quality
from edgeopt.workloads.image_classification import ImageFolderData
from edgeopt.workloads.image_classification.images import center_crop, expand, read_rgb, skimage_data_dir
from edgeopt.workloads.image_classification.quality import per_sample_scores
from edgeopt.workloads.image_classification.workload import AGREEMENT, LOGITS_FILE, WORKLOAD
from tests.workloads.image_classification.ic_helpers import ESPRESSO, TorchFormRunner

pytest.importorskip("torch")
SIGMA = 3.0  # EfficientNet-Lite0's logits span ~20 on these photographs: enough to flip some decisive answers


class NoisyLogits:
    """The runner with seeded Gaussian noise added to its class logits."""

    def __init__(self, inner: Any, sigma: float) -> None:
        self.inner, self.sigma, self.io_spec = inner, sigma, inner.io_spec
        self.rng = np.random.default_rng(0)

    def run(self, feed: Feed) -> Feed:
        return {k: (v + self.rng.normal(0.0, self.sigma, v.shape)).astype(np.float32)
                for k, v in self.inner.run(feed).items()}


def _holds_its_points(q: Quality) -> None:
    for k, (low, high) in q.ci.items():
        assert low <= q.metrics[k] <= high, (k, q.ci[k], q.metrics[k])
    for k, (low, high) in q.retention_ci.items():
        assert low <= q.retention[k] <= high, (k, q.retention_ci[k], q.retention[k])


@pytest.fixture(scope="module")
def noisy(ic_root: Path, ic_runner: TorchFormRunner, ic_inputs: dict[str, np.ndarray],
          ic_bench: BenchmarkConfig) -> Path:
    out = ic_root / "measure-noisy"
    out.mkdir()
    WORKLOAD.write_outputs(NoisyLogits(ic_runner, SIGMA), ic_inputs, ic_bench, out)
    return out


def test_the_baseline_against_itself(ic_measured: tuple[Path, Path]) -> None:
    first, second = ic_measured
    q = WORKLOAD.quality(second, first)
    _holds_its_points(q)
    assert set(q.ci) == set(q.metrics) and set(q.retention_ci) == set(q.retention) == set(AGREEMENT)
    # Identical logits: every image agrees, so every interval is the point itself.
    assert q.retention_ci == {k: (1.0, 1.0) for k in AGREEMENT} and q.ci["softmax_kld"] == (0.0, 0.0)


def test_a_noisy_candidate_gets_lower_retention_intervals(ic_measured: tuple[Path, Path], noisy: Path) -> None:
    base = ic_measured[0]
    same, worse = WORKLOAD.quality(ic_measured[1], base), WORKLOAD.quality(noisy, base)
    _holds_its_points(worse)
    assert set(worse.ci) == set(worse.metrics) and set(worse.retention_ci) == set(AGREEMENT)
    for k in (*AGREEMENT, "softmax_kld"):
        low, high = worse.ci[k]
        assert low < high, k  # the noise flips some images' answers and not others
    for k in AGREEMENT:
        assert worse.retention_ci[k][1] < same.retention_ci[k][0], (k, worse.retention_ci[k], same.retention_ci[k])
    assert worse.ci["softmax_kld"][0] > same.ci["softmax_kld"][1]


def test_the_intervals_are_of_the_per_image_means(ic_measured: tuple[Path, Path], noisy: Path) -> None:
    """The reported points are the means of the per-image values the intervals are bootstrapped from."""
    with np.load(ic_measured[0] / LOGITS_FILE) as b, np.load(noisy / LOGITS_FILE) as c:
        per = per_sample_scores(b["logits"], c["logits"])
    q = WORKLOAD.quality(noisy, ic_measured[0])
    assert {k: float(np.mean(v)) for k, v in per.items()} == pytest.approx(q.metrics, rel=1e-12)


def _labelled_folder(root: Path, n_per_class: int) -> tuple[Path, Path]:
    """A real labelled image folder: crops of chelsea (a cat, labelled Egyptian cat) and coffee (espresso)."""
    from PIL import Image

    folder = root / "images"
    for cls, photo, seed in (("cat", "chelsea.png", 1), ("espresso", "coffee.png", 2)):
        (folder / cls).mkdir(parents=True)
        whole = center_crop(read_rgb(skimage_data_dir() / photo), 320, crop_fraction=None)
        for i, img in enumerate(expand([whole], n_per_class, seed=seed, size=256)):
            Image.fromarray(img).save(folder / cls / f"{i:03d}.png")
    classes = root / "classes.json"
    classes.write_text(json.dumps({"cat": 285, "espresso": ESPRESSO}))
    return folder, classes


def test_accuracy_retention_is_paired_per_image(tmp_path: Path, ic_base: BaseModelInfo, ic_runner: TorchFormRunner,
                                                ic_bench: BenchmarkConfig) -> None:
    folder, classes = _labelled_folder(tmp_path, 20)
    WORKLOAD.build_data(ImageFolderData(path=folder, classes=classes, n_calibration=8), tmp_path / "data", ic_base)
    inputs = WORKLOAD.prepare_inputs(ic_base, tmp_path / "data", ic_bench)
    base, worse_dir = tmp_path / "base", tmp_path / "noisy"
    for out, runner in ((base, ic_runner), (worse_dir, NoisyLogits(ic_runner, SIGMA))):
        out.mkdir()
        WORKLOAD.write_outputs(runner, inputs, ic_bench, out)
    same, worse = WORKLOAD.quality(base, base), WORKLOAD.quality(worse_dir, base)
    for q in (same, worse):
        _holds_its_points(q)
        assert {"top1_accuracy", "top5_accuracy"} <= set(q.ci) and set(q.retention_ci) == set(q.retention)
    # Identical outputs: each image's hit is the baseline's, so every resample's ratio is exactly 1.
    assert same.retention_ci["top1_accuracy"] == same.retention_ci["top5_accuracy"] == (1.0, 1.0)
    # The base recognises every crop; the noise costs some images their hit and not others.
    assert same.ci["top1_accuracy"] == (1.0, 1.0)
    for k in ("top1_accuracy", "top5_accuracy"):
        low, high = worse.ci[k]
        assert low < worse.metrics[k] < high, k
        assert worse.retention_ci[k][1] < same.retention_ci[k][0], (k, worse.retention_ci[k])
