"""The onnx-model pipeline end to end: nudenet's YOLOv8n detector (any ONNX graph, no task knowledge) on seeded
synthetic feeds, through the Prefect flow, with a reduced candidate list and timing budget.

The champion is then loaded from the registry by alias and must return the named tensors it was measured with.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest

from tests.integration.conftest import write_params
from tests.workloads.onnx_model.om_helpers import nudenet_model

pytestmark = pytest.mark.integration

NAME = "om"
MODEL_NAME = "nudenet-320n-edge"
FP32 = ("onnx-fp32", "ort-opt-fp32", "ov-fp32")
CANDIDATES = [
    {"name": "onnx-fp32", "recipe": "onnx-export"},
    {"name": "ort-opt-fp32", "recipe": "ort-graph-optimize", "parent": "onnx-fp32"},
    {"name": "ort-int8-dynamic", "recipe": "ort-dynamic-int8", "parent": "onnx-fp32"},
    {"name": "ov-fp32", "recipe": "ov-convert", "parent": "onnx-fp32"},
    {"name": "nncf-int8-ptq", "recipe": "nncf-ptq-int8", "parent": "ov-fp32"},
]


@pytest.fixture(scope="module")
def om_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict, Any]]:
    from flows.optimize import optimize

    tmp = tmp_path_factory.mktemp("onnx-model-run")
    raw = {
        "output_dir": str(tmp / "outputs"),
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_root": str(tmp / "mlruns"),
                     "experiment": "integration-onnx-model"},
        "pipelines": {NAME: {
            "task": "onnx-model",
            "model": {"kind": "onnx", "path": str(nudenet_model())},
            "data": {"kind": "synthetic", "dims": {"batch": 1, "height": 320, "width": 320},
                     "ranges": {"images": [0.0, 1.0]}, "n_eval": 8, "n_calibration": 8, "seed": 0},
            "candidates": CANDIDATES,
            "benchmark": {"threads": 2, "batch_size": 1, "throughput_batch_size": 2, "warmup_iterations": 1,
                          "min_iterations": 4, "min_time_s": 0.2, "timeout_s": 600, "rounds": 2, "extra_rounds": 0},
            # Loose gates: this run proves the plumbing, not a speed-up on a shared CI machine.
            "gates": {"min_quality_retention": 0.5, "min_speedup": 0.01, "min_footprint_reduction": -10},
            "selection": {"baseline": "onnx-fp32", "quality_metrics": ["min_cosine"],
                          "pick": {"by": "latency_p50_ms", "min_quality_retention": 0.5}},
            "registry": {"model_name": MODEL_NAME},
        }},
    }
    (outcome,) = optimize(str(write_params(tmp, raw)), [NAME])
    yield tmp, raw, outcome
    mlflow.set_tracking_uri(None)


def _rows(outcome: Any) -> dict[str, Any]:
    return {r.name: r for r in outcome.selection.candidates}


def test_the_candidate_table(om_run: tuple[Path, dict, Any]) -> None:
    _, _, outcome = om_run
    rows = _rows(outcome)
    assert set(rows) == {c["name"] for c in CANDIDATES}
    for name, r in rows.items():
        assert r.status in {"ok", "failed"}, (name, r.status, r.error)
        if r.status != "ok":
            assert r.error and "\n" not in r.error, name  # FAILED with the library's one-line reason
    for name in FP32:
        assert rows[name].status == "ok", rows[name].error
        assert rows[name].quality.metrics["min_cosine"] >= 0.9999, (name, rows[name].quality.metrics)
    assert rows["onnx-fp32"].quality.metrics["max_abs_error"] == 0.0  # the baseline against itself
    int8 = [r for r in rows.values() if r.status == "ok" and r.precision == "int8"]
    assert int8, {n: r.error for n, r in rows.items()}
    for r in int8:
        assert r.measurement.size_mb < 0.6 * rows["onnx-fp32"].measurement.size_mb, r.name


def test_quality_is_recorded_per_output(om_run: tuple[Path, dict, Any]) -> None:
    tmp, _, outcome = om_run
    for r in _rows(outcome).values():
        if r.status != "ok":
            continue
        m = r.quality.metrics
        assert {"cosine.output0", "rel_l2.output0", "max_abs.output0", "snr_db.output0"} <= set(m), r.name
        assert m["min_cosine"] == m["cosine.output0"] and "min_argmax_agreement" not in m  # a detector: no argmax
        assert r.quality_retention == m["min_cosine"]
        run = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}").get_run(r.mlflow_run_id)
        assert run.data.metrics["cosine.output0"] == pytest.approx(m["cosine.output0"])


def test_the_champion_serves_named_tensors(om_run: tuple[Path, dict, Any]) -> None:
    tmp, raw, outcome = om_run
    promo = outcome.promotion
    if promo is None or not promo.promoted:
        pytest.fail(f"nothing was promoted: {outcome.selection.reason}")
    from edgeopt.workloads.onnx_model.data import feed_of, load_data
    from edgeopt.workloads.onnx_model.workload import read_outputs

    ws = tmp / "outputs" / NAME
    data = load_data(ws / "data")
    measured = read_outputs(ws / "measurements" / promo.candidate)
    mlflow.set_tracking_uri(raw["tracking"]["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    for i in (0, 3):
        got = model.predict(feed_of(data.eval, i))
        assert isinstance(got, dict) and set(got) == {"output0"}
        want = measured["output0"][i]
        assert got["output0"].shape == want.shape == (1, 22, 2100)
        np.testing.assert_allclose(got["output0"], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
