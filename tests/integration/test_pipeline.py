"""The real pipeline on the real model: MLflow lineage, gates, champion alias, pyfunc, caching."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from tests.integration.conftest import PipelineRun, reduced_params, write_params

pytestmark = pytest.mark.integration

LINEAGE_TAGS = ("edgeopt.base_sha256", "edgeopt.dataset_digest", "edgeopt.parent_candidate",
                "edgeopt.git_commit", "edgeopt.version.onnxruntime", "edgeopt.version.openvino",
                "edgeopt.cache_key")


def _client(run: PipelineRun) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(run.tracking_uri)
    return mlflow.MlflowClient()


def test_every_candidate_is_a_child_run_with_lineage(pipeline_run: PipelineRun) -> None:
    outcome = pipeline_run.outcomes[0]
    assert outcome.status == "completed"
    client = _client(pipeline_run)
    parent = client.get_run(outcome.mlflow_run_id)
    # The evaluation set is the parent's logged input, with its digest.
    inputs = parent.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == parent.data.tags["edgeopt.dataset_digest"][:36]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {r.data.tags["edgeopt.candidate"]: r for r in children}
    expected = {r.name for r in outcome.selection.candidates}
    assert set(by_name) == expected
    for name, run in by_name.items():
        if name == "broken-static":
            continue
        assert run.info.status == "FINISHED", name
        for tag in LINEAGE_TAGS:
            assert run.data.tags.get(tag), f"{name} lacks {tag}"
        assert run.data.tags["edgeopt.base_sha256"] == parent.data.tags["edgeopt.base_sha256"]
        assert run.data.metrics["latency_p50_ms"] > 0
        assert 0 < run.data.metrics["cosine"] <= 1.0001
    assert by_name["ort-int8-dynamic"].data.tags["edgeopt.parent_candidate"] == "ort-opt-fp32"
    assert by_name["torch-fp32"].data.tags["edgeopt.parent_candidate"] == "base"


def test_a_failing_candidate_is_a_failed_run_and_the_rest_go_on(pipeline_run: PipelineRun) -> None:
    sel = pipeline_run.outcomes[0].selection
    broken = next(r for r in sel.candidates if r.name == "broken-static")
    assert broken.status == "failed" and "openvino-ir" in (broken.error or "")
    run = _client(pipeline_run).get_run(broken.mlflow_run_id)
    assert run.info.status == "FAILED"
    assert "openvino-ir" in run.data.tags["edgeopt.error"]
    assert sum(r.status == "ok" for r in sel.candidates) >= 8


def test_fp32_exports_agree_with_the_baseline(pipeline_run: PipelineRun) -> None:
    rows = {r.name: r for r in pipeline_run.outcomes[0].selection.candidates}
    for name in ("onnx-fp32", "ort-opt-fp32", "ov-fp32"):
        assert rows[name].quality.metrics["cosine"] > 0.9999, name
    for name in ("ort-int8-dynamic", "nncf-int8-ptq", "nncf-int8-weights"):
        assert rows[name].quality.metrics["cosine"] > 0.95, name
        assert rows[name].measurement.size_mb < 0.5 * rows["torch-fp32"].measurement.size_mb, name


def test_champion_alias_sits_on_a_gated_frontier_candidate(pipeline_run: PipelineRun) -> None:
    outcome = pipeline_run.outcomes[0]
    sel, promo = outcome.selection, outcome.promotion
    assert sel.pick is not None and promo.promoted, promo.reason
    pick = next(r for r in sel.candidates if r.name == sel.pick)
    assert pick.passed_gates and sel.pick in sel.frontier
    client = _client(pipeline_run)
    version = client.get_model_version_by_alias(promo.model_name, promo.alias)
    assert str(version.version) == promo.version
    assert version.tags["candidate"] == sel.pick
    assert version.run_id == pick.mlflow_run_id


def test_champion_pyfunc_embeds_text(pipeline_run: PipelineRun) -> None:
    promo = pipeline_run.outcomes[0].promotion
    _client(pipeline_run)
    model = mlflow.pyfunc.load_model(f"models:/{promo.model_name}@{promo.alias}")
    texts = ["How do I open a file in Python?", "Files are opened with the built-in open() function.",
             "The weather is sunny today."]
    emb = np.asarray(model.predict(texts))
    assert emb.shape == (3, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    # Behaviour, not just shape: the related pair is closer than the unrelated one.
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_selection_and_metrics_files_are_written(pipeline_run: PipelineRun) -> None:
    out = pipeline_run.root / "outputs" / "minilm"
    sel = json.loads((out / "selection.json").read_text())
    assert sel["pick"] == pipeline_run.outcomes[0].selection.pick
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pick"] == sel["pick"] and "torch-fp32" in metrics


def test_rerun_reuses_finished_work(pipeline_run: PipelineRun) -> None:
    from flows.optimize import optimize

    cands = pipeline_run.root / "outputs" / "minilm" / "candidates"
    before = {p.name: (p / "candidate.json").stat().st_mtime_ns for p in cands.iterdir()}
    outcomes = optimize(str(pipeline_run.params_path), ["minilm"], promote=False)
    after = {p.name: (p / "candidate.json").stat().st_mtime_ns for p in cands.iterdir()}
    assert after == before  # nothing rebuilt
    first = {r.name: r.measurement for r in pipeline_run.outcomes[0].selection.candidates if r.measurement}
    again = {r.name: r.measurement for r in outcomes[0].selection.candidates if r.measurement}
    assert first and all(not m.reused for m in first.values())
    # The whole session came from the cache, not a new benchmark (its speed is a bench/ row), marked reused.
    assert all(m.reused for m in again.values())
    assert {n: m.model_copy(update={"reused": False}) for n, m in again.items()} == first
    assert len({m.session for m in again.values()}) == 1


def test_failed_expectation_stops_the_run(tmp_path) -> None:
    """Data the loader accepts but an expectation rejects (a 2,500-character query)."""
    from flows.optimize import optimize

    def document(i: int) -> str:
        return " ".join(f"Sentence {k} of topic {i} explains how files and streams work." for k in range(4))

    rows = [{"id": str(i), "query": f"question number {i} about files", "document": document(i)}
            for i in range(20)]
    rows[3]["query"] = "why " * 625
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    raw = reduced_params(tmp_path, data={"kind": "jsonl", "path": str(data), "fidelity_sentences": 8})
    state = optimize(str(write_params(tmp_path, raw)), ["minilm"], return_state=True)
    assert state.is_failed()
    assert "expect_column_value_lengths_to_be_between(retrieval.query)" in state.message
    assert not (tmp_path / "outputs" / "minilm" / "candidates").exists()
    mlflow.set_tracking_uri(raw["tracking"]["uri"])
    assert mlflow.MlflowClient().search_registered_models() == []


def test_every_candidate_runs_with_its_probed_runtime_settings(pipeline_run: PipelineRun) -> None:
    """The runtime settings search (edgeopt.tuning): probed once per candidate, its rounds run with the pick,
    the pick is recorded in the candidate's lineage and travels with the promoted model."""
    from edgeopt.results import Measurement

    outcome = pipeline_run.outcomes[0]
    client = _client(pipeline_run)
    measured = [r for r in outcome.selection.candidates if r.status == "ok"]
    searched = 0
    for row in measured:
        m = row.measurement
        tuning = m.tuning
        assert tuning and tuning["chosen"] == m.runtime_settings, row.name
        probes = tuning["probes"]
        if probes:  # onnxruntime, openvino, torch: the default and one change at a time
            searched += 1
            assert probes[0]["label"] == "default" and probes[0]["settings"] == tuning["default"]
            assert len(probes) >= 2 and tuning["passes"] >= 2
            chosen = next(p for p in probes if p["settings"] == tuning["chosen"])
            assert chosen["verdict"] in ("default", "faster")
            for p in probes[1:]:
                assert p["verdict"] in ("faster", "noise", "slower", "changes outputs", "failed"), p
                if p["verdict"] in ("faster", "noise", "slower"):
                    lo, hi = p["speedup_ci"]
                    assert lo <= p["speedup"] <= hi
        # Every round of it ran with the same settings.
        rounds = pipeline_run.root / "outputs" / "minilm" / "measurements" / row.name / "rounds"
        on_disk = [Measurement.model_validate_json((d / "measurement.json").read_text()).runtime_settings
                   for d in rounds.iterdir() if d.name.isdigit()]
        assert on_disk and all(s == m.runtime_settings for s in on_disk), row.name
        run = client.get_run(row.mlflow_run_id)
        for key, value in m.runtime_settings.items():
            assert run.data.params[f"runtime_setting.{key}"] == str(value)
    assert searched >= 6  # every ONNX Runtime / OpenVINO / torch candidate
    promo = outcome.promotion
    pick = next(r for r in measured if r.name == outcome.selection.pick)
    model = mlflow.pyfunc.load_model(f"models:/{promo.model_name}@{promo.alias}")
    assert model.model_config["runtime_settings"] == pick.measurement.runtime_settings
    version = client.get_model_version_by_alias(promo.model_name, promo.alias)
    assert json.loads(version.tags["edgeopt.runtime_settings"]) == pick.measurement.runtime_settings
