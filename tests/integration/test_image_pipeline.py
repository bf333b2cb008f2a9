"""The image-classification pipeline end to end: EfficientNet-Lite0 on the photographs scikit-image ships.

One reduced run of the shipped `effnet` namespace through the Prefect flow; the champion is then loaded
by a separate client process from the registry, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.integration.conftest import ROOT, write_params

pytestmark = pytest.mark.integration

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
FP32_FORMS = ("onnx-fp32", "ort-opt-fp32", "ov-fp32")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict, object]]:
    from flows.optimize import optimize

    tmp = tmp_path_factory.mktemp("image-run")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["output_dir"] = str(tmp / "outputs")
    raw["tracking"] = {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_root": str(tmp / "mlruns"),
                       "experiment": "integration-images"}
    p = raw["pipelines"]["effnet"]
    p["data"].update(n_eval=128, n_calibration=32)
    p["benchmark"].update(min_iterations=8, min_time_s=0.3, warmup_iterations=2, throughput_batch_size=4,
                          timeout_s=600, rounds=2, extra_rounds=0)
    p["gates"]["min_speedup"] = 0.01  # the champion test needs a promotion, not a real speed-up here
    raw["pipelines"] = {"effnet": p}
    params_path = write_params(tmp, raw)
    (outcome,) = optimize(str(params_path), ["effnet"])
    yield tmp, raw, outcome
    mlflow.set_tracking_uri(None)


def _rows(outcome: object) -> dict[str, object]:
    return {r.name: r for r in outcome.selection.candidates}  # type: ignore[attr-defined]


def test_every_candidate_is_measured_or_fails_with_its_reason(image_run: tuple[Path, dict, object]) -> None:
    _, raw, outcome = image_run
    rows = _rows(outcome)
    assert set(rows) == {c["name"] for c in raw["pipelines"]["effnet"]["candidates"]}
    for name, r in rows.items():
        assert r.status in {"ok", "failed", "skipped"}, name
        if r.status != "ok":
            assert r.error, f"{name} is {r.status} without a reason"
    assert rows["torch-fp32"].status == "ok" and rows["onnx-fp32"].status == "ok"


def test_fp32_forms_agree_with_the_pytorch_baseline(image_run: tuple[Path, dict, object]) -> None:
    rows = _rows(image_run[2])
    for name in FP32_FORMS:
        q = rows[name].quality
        assert rows[name].status == "ok", rows[name].error
        assert q.metrics["top1_agreement"] >= 0.98, (name, q.metrics)
        assert q.metrics["top5_overlap"] >= 0.98, (name, q.metrics)


def test_int8_candidates_are_smaller_and_the_best_keeps_the_decisive_answers(
        image_run: tuple[Path, dict, object]) -> None:
    rows = _rows(image_run[2])
    base = rows["onnx-fp32"].measurement.size_mb
    int8 = [r for n, r in rows.items() if r.status == "ok" and r.precision == "int8"]
    assert int8, "no INT8 candidate was measured"
    for r in int8:
        assert r.measurement.size_mb < 0.5 * base, (r.name, r.measurement.size_mb, base)
        assert r.quality.metrics["decisive_top1_agreement"] >= r.quality.metrics["top1_agreement"] - 0.1, r.name
    # Where the base is decisive (top-1 p >= 0.5), the best INT8 variant gives the same class (the full run
    # measures 0.99 for ORT's static QDQ over every op type; NNCF's default PTQ keeps less, see the closing note).
    best = max(int8, key=lambda r: r.quality.metrics["decisive_top1_agreement"])
    assert best.quality.metrics["decisive_top1_agreement"] >= 0.9, {r.name: r.quality.metrics for r in int8}


def test_the_champion_classifies_images_from_a_separate_client(image_run: tuple[Path, dict, object]) -> None:
    tmp, raw, outcome = image_run
    promo = outcome.promotion  # type: ignore[attr-defined]
    if promo is None or not promo.promoted:
        pytest.fail(f"nothing was promoted: {outcome.selection.reason}")  # type: ignore[attr-defined]
    from edgeopt.workloads.image_classification.images import skimage_data_dir

    chelsea = str(skimage_data_dir() / "chelsea.png")
    client = f"""
import json, sys
import mlflow
import numpy as np
from PIL import Image
model = mlflow.pyfunc.load_model("models:/{promo.model_name}@{promo.alias}")
by_path = model.predict([{chelsea!r}])
pixels = np.asarray(Image.open({chelsea!r}).convert("RGB"))
by_array = model.predict([pixels])
print(json.dumps({{"path": int(by_path["class_index"][0]), "array": int(by_array["class_index"][0])}}))
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": raw["tracking"]["uri"]}
    done = subprocess.run([sys.executable, "-c", client], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["path"] in CAT_CLASSES and got["array"] in CAT_CLASSES, got
