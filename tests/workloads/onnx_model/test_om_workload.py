"""The onnx-model workload on real runtimes: the base graph copied as the baseline, the same samples in, integer
and boolean inputs untouched through ORT static INT8 calibration, per-output quality, and the served form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.config import BenchmarkConfig
from edgeopt.errors import CandidateError
from edgeopt.recipes import BaseModelInfo, BuildContext, ParentArtifact, WorkloadCalibration, get_recipe, get_runtime
from edgeopt.workloads.onnx_model.data import load_data
from edgeopt.workloads.onnx_model.serving import named_feed
from edgeopt.workloads.onnx_model.workload import WORKLOAD, batchable, read_outputs
from tests.workloads.onnx_model.om_helpers import mixed_reference

THREADS = 1


def _build(recipe_name: str, base: BaseModelInfo, parent: ParentArtifact | None, out: Path, inputs: Any,
           **options: Any) -> ParentArtifact:
    recipe = get_recipe(recipe_name)
    out.mkdir(parents=True)
    ctx = BuildContext(base=base, parent=parent, out_dir=out, options=recipe.options_model(**options),
                       calibration=WorkloadCalibration(WORKLOAD, inputs), threads=THREADS)
    built = recipe.build(ctx)
    return ParentArtifact(recipe_name, out, built.format, built.model_file)


def _runner(artifact: ParentArtifact) -> Any:
    return get_runtime("onnxruntime")(artifact.dir, artifact.model_file, {}, THREADS)


@pytest.fixture(scope="module")
def fp32(om_root: Path, om_base: BaseModelInfo, om_inputs: dict) -> ParentArtifact:
    return _build("onnx-export", om_base, None, om_root / "cand" / "onnx-fp32", om_inputs)


@pytest.fixture(scope="module")
def static_int8(om_root: Path, om_base: BaseModelInfo, om_inputs: dict, fp32: ParentArtifact) -> ParentArtifact:
    return _build("ort-static-int8", om_base, fp32, om_root / "cand" / "ort-int8-static", om_inputs, op_types=[])


def _measure(artifact: ParentArtifact, inputs: dict, bench: BenchmarkConfig, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    WORKLOAD.write_outputs(_runner(artifact), inputs, bench, out)
    return out


def test_inputs_keep_the_graph_dtypes(om_inputs: dict, om_data: Path) -> None:
    assert [str(n) for n in om_inputs["names"]] == ["features", "token_ids", "mask"]
    assert om_inputs["eval.x1"].dtype == np.int64 and om_inputs["eval.x2"].dtype == np.bool_
    assert np.array_equal(om_inputs["eval.x1"], load_data(om_data).eval["token_ids"])
    feeds = WORKLOAD.calibration(om_inputs, None)
    assert len(feeds) == 8 and feeds[0]["token_ids"].shape == (1, 6) and feeds[0]["mask"].dtype == np.bool_
    with pytest.raises(CandidateError, match="no PyTorch form"):
        WORKLOAD.torch_form(Path("."))


def test_the_baseline_is_the_graph_itself(fp32: ParentArtifact, om_base: BaseModelInfo, om_inputs: dict,
                                          om_bench: BenchmarkConfig, om_root: Path) -> None:
    assert (fp32.dir / fp32.model_file).read_bytes() == om_base.path.read_bytes()
    runner = _runner(fp32)
    assert batchable(runner.io_spec)
    speed = WORKLOAD.benchmark(runner, om_inputs, om_bench)
    assert speed.latency.batch_size == 1 and speed.throughput.batch_size == 4 and speed.extra["batched"] == 1.0
    out = _measure(fp32, om_inputs, om_bench, om_root / "m" / "fp32")
    saved = read_outputs(out)
    ev = {"features": om_inputs["eval.x0"], "token_ids": om_inputs["eval.x1"], "mask": om_inputs["eval.x2"]}
    for i in range(3):
        ref = mixed_reference(ev["features"][i], ev["token_ids"][i], ev["mask"][i], om_base.path)
        np.testing.assert_allclose(saved["logits"][i], ref["logits"], rtol=1e-5, atol=1e-5)
        assert np.array_equal(saved["count"][i], ref["count"]) and saved["count"][i].dtype == np.int64
    q = WORKLOAD.quality(out, out)
    assert q.metrics["min_cosine"] == 1.0 and q.metrics["max_abs_error"] == 0.0
    assert q.retention == {"min_cosine": 1.0, "min_argmax_agreement": 1.0}
    assert {"cosine.logits", "snr_db.count", "argmax_agreement.logits"} <= set(q.metrics)
    assert "argmax_agreement.count" not in q.metrics  # a 1-D integer output is no class score


def test_static_int8_calibrates_on_integers_untouched(static_int8: ParentArtifact, fp32: ParentArtifact,
                                                      om_inputs: dict, om_bench: BenchmarkConfig,
                                                      om_root: Path) -> None:
    import onnx

    model = onnx.load(str(static_int8.dir / static_int8.model_file))
    declared = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert declared == {"features": onnx.TensorProto.FLOAT, "token_ids": onnx.TensorProto.INT64,
                        "mask": onnx.TensorProto.BOOL}
    quantized = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantized, "nothing was quantized"
    # No integer or boolean tensor is quantized: they reach Gather/Cast as they came in.
    assert not {i for n in quantized for i in n.input} & {"token_ids", "mask", "maski", "count"}
    gather = next(n for n in model.graph.node if n.op_type == "Gather")
    assert gather.input[1] == "token_ids"
    base = _measure(fp32, om_inputs, om_bench, om_root / "m" / "fp32-b")
    cand = _measure(static_int8, om_inputs, om_bench, om_root / "m" / "int8")
    q = WORKLOAD.quality(cand, base)
    assert q.metrics["max_abs.count"] == 0.0 and q.metrics["cosine.count"] == 1.0  # the integer path is exact
    assert 0.9 < q.metrics["cosine.logits"] < 1.0 and q.metrics["max_abs.logits"] > 0.0
    assert q.metrics["min_cosine"] == q.metrics["cosine.logits"]  # the gate reads the weakest output


def test_a_candidate_without_an_output_fails_its_comparison(om_root: Path, om_inputs: dict, fp32: ParentArtifact,
                                                             om_bench: BenchmarkConfig) -> None:
    base = _measure(fp32, om_inputs, om_bench, om_root / "m" / "fp32-c")
    out = om_root / "m" / "short"
    out.mkdir(parents=True)
    np.savez(out / "outputs.npz", names=np.asarray(["logits"]), v0=np.zeros(5, np.float32), s0=np.asarray([[1, 5]]))
    with pytest.raises(CandidateError, match="no output"):
        WORKLOAD.quality(out, base)


def test_served_feeds_keep_integers_and_refuse_floats_for_them() -> None:
    dtypes = {"features": "float32", "token_ids": "int64", "mask": "bool"}
    feed = named_feed({"features": [[0.5] * 8], "token_ids": [[1, 2, 3]], "mask": [[True, False, True]]}, dtypes)
    assert feed["features"].dtype == np.float32 and feed["token_ids"].tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError, match="float array is not converted"):
        named_feed({"features": [[0.5] * 8], "token_ids": [[1.0, 2.0]], "mask": [[True]]}, dtypes)
    with pytest.raises(ValueError, match="missing input"):
        named_feed({"features": [[0.5] * 8]}, dtypes)
