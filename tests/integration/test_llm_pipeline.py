"""The causal-lm pipeline on the real SmolLM2-135M through the same Prefect flow as the encoder.

Reduced budget: 4 windows of 128 tokens, short generations, four candidates (torch FP32 baseline, GGUF F16,
Q8_0, Q4_0). Quality is asserted, speed is not (the machine is shared): the speed-up gate is disabled here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.integration.conftest import ROOT, PipelineRun, write_params

pytestmark = pytest.mark.integration

CANDIDATES = ("torch-fp32", "gguf-f16", "gguf-q8_0", "gguf-q4_0")


def llm_params(tmp: Path) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["output_dir"] = str(tmp / "outputs")
    raw["tracking"] = {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_root": str(tmp / "mlruns"),
                       "experiment": "integration-llm"}
    p = raw["pipelines"]["smollm2"]
    p["data"].update(windows=4, window_tokens=128)
    p["benchmark"].update(prompt_tokens=64, decode_tokens=8, warmup_iterations=1, min_iterations=2,
                          min_time_s=0, timeout_s=900, rounds=2, extra_rounds=0)
    p["candidates"] = [c for c in p["candidates"] if c["name"] in CANDIDATES]
    p["gates"]["min_speedup"] = 0.01  # speed is not asserted on a shared machine
    return raw


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineRun]:
    pytest.importorskip("llama_cpp")
    from flows.optimize import optimize

    tmp = tmp_path_factory.mktemp("llm-run")
    raw = llm_params(tmp)
    params_path = write_params(tmp, raw)
    outcomes = optimize(str(params_path), ["smollm2"])
    yield PipelineRun(tmp, params_path, outcomes, raw["tracking"]["uri"])
    mlflow.set_tracking_uri(None)


def _rows(run: PipelineRun) -> dict:
    return {r.name: r for r in run.outcomes[0].selection.candidates}


def test_every_candidate_is_measured_with_llm_metrics(llm_run: PipelineRun) -> None:
    assert llm_run.outcomes[0].status == "completed", llm_run.outcomes[0].message
    rows = _rows(llm_run)
    assert set(rows) == set(CANDIDATES)
    for name, r in rows.items():
        assert r.status == "ok", f"{name}: {r.error}"
        assert set(r.quality.metrics) == {"ppl", "ppl_ratio", "kld", "top1"}
        x = r.measurement.extra
        assert x["prompt_tok_s"] > 0 and x["decode_tok_s"] > 0 and x["ttft_ms"] > 0, name
        assert r.measurement.throughput_items_per_s == pytest.approx(x["decode_tok_s"])
        assert x["roof_fraction"] > 0 and x["copy_bandwidth_gbs"] > 0, name
    # Bytes per token follow the weights: F32 torch > F16 > Q8_0 > Q4_0.
    per_token = [rows[n].measurement.extra["bytes_per_token_mb"] for n in CANDIDATES]
    assert per_token == sorted(per_token, reverse=True)


def test_quality_orders_the_quantization_levels(llm_run: PipelineRun) -> None:
    rows = _rows(llm_run)
    kld = {n: rows[n].quality.metrics["kld"] for n in CANDIDATES}
    # torch FP32 (HF export) against llama.cpp's F32 reference: only float noise and the float16 storage.
    assert kld["torch-fp32"] < 1e-5 and rows["torch-fp32"].quality.metrics["top1"] >= 0.99
    assert kld["gguf-f16"] < 2e-4  # F16 weights from Q4_1 values: nearly lossless
    assert kld["gguf-f16"] < kld["gguf-q8_0"] < kld["gguf-q4_0"]
    assert rows["gguf-q8_0"].quality.metrics["ppl_ratio"] < rows["gguf-q4_0"].quality.metrics["ppl_ratio"]
    manifest = json.loads((llm_run.root / "outputs" / "smollm2" / "data" / "text_windows.json").read_text())
    assert manifest["reference"]["kv_cache"] == "F32"
    assert rows["torch-fp32"].quality.metrics["ppl"] == pytest.approx(manifest["reference"]["perplexity"], rel=1e-3)


def test_llm_gates_apply_their_own_bounds(llm_run: PipelineRun) -> None:
    rows = _rows(llm_run)
    q4 = {g.name: g for g in rows["gguf-q4_0"].gates}
    assert not q4["max_kld"].passed and q4["max_kld"].threshold == 0.05
    assert not rows["gguf-q4_0"].passed_gates
    assert {g.name for g in rows["gguf-q8_0"].gates} >= {"max_kld", "max_ppl_ratio", "quality_retention"}
    assert rows["gguf-q8_0"].passed_gates


def test_lineage_records_the_q4_1_origin(llm_run: PipelineRun) -> None:
    mlflow.set_tracking_uri(llm_run.tracking_uri)
    client = mlflow.MlflowClient()
    row = _rows(llm_run)["gguf-q8_0"]
    run = client.get_run(row.mlflow_run_id)
    assert run.data.tags["edgeopt.parent_candidate"] == "base"
    assert run.data.metrics["decode_tok_s"] > 0 and run.data.metrics["kld"] == pytest.approx(row.quality.metrics["kld"])
    record = json.loads((llm_run.root / "outputs" / "smollm2" / "candidates" / "gguf-q8_0" / "candidate.json")
                        .read_text())
    assert record["details"]["base"]["source_file_type"] == "MOSTLY_Q4_1"
    assert record["details"]["source_tensor_types"] == {"F32": 272}  # quantized from the F32 reference
    assert record["details"]["tensor_types"]["Q8_0"] >= 200


def test_champion_is_a_text_generating_pyfunc(llm_run: PipelineRun) -> None:
    outcome = llm_run.outcomes[0]
    sel, promo = outcome.selection, outcome.promotion
    assert promo.promoted, promo.reason
    assert sel.pick in {"gguf-f16", "gguf-q8_0"} and sel.pick in sel.frontier
    mlflow.set_tracking_uri(llm_run.tracking_uri)
    version = mlflow.MlflowClient().get_model_version_by_alias("smollm2-edge", "champion")
    assert version.tags["candidate"] == sel.pick and "reproduced" in version.tags["edgeopt.load_check"]
    model = mlflow.pyfunc.load_model("models:/smollm2-edge@champion")
    prompts = ["The Python for statement iterates over", "A dictionary maps"]
    out = model.predict(prompts)
    assert len(out) == 2 and all(isinstance(t, str) and t.strip() for t in out)
    assert model.predict(prompts[:1]) == out[:1]  # greedy: the same continuation every time
