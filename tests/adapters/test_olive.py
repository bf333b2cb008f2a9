"""Microsoft Olive as a candidate builder: real Olive runs on the real MiniLM model, reduced budget.

One fixed pass list (conversion -> ORT fusion -> dynamic INT8), one OpenVINO conversion, and one
small Olive search (2 points); every output is run by this project's runtimes and compared with
torch-eager. Olive's input model is the task's PyTorch form (`torch_form(for_export=True)`), its
io_config the form's I/O spec. Measured on these sentences: the per-channel dynamic INT8 workflow 0.991 min cosine,
Olive's default per-tensor 0.943; the OpenVINO IR (FP16 weights) 0.99999.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edgeopt.errors import CandidateError
from edgeopt.iospec import IOSpec
from edgeopt.recipes import (
    BaseModelInfo,
    BuildContext,
    BuildOutput,
    Calibration,
    ParentArtifact,
    get_recipe,
    get_runtime,
)
from edgeopt.workloads.text_embedding import embeddings

pytest.importorskip("olive", reason="the Olive recipes declare Requirements(modules=('olive',))")

THREADS = 2


@pytest.fixture(scope="module")
def build(base: BaseModelInfo, calibration_feeds: Calibration, tmp_path_factory: pytest.TempPathFactory) -> Any:
    def _build(recipe_name: str, base_model: BaseModelInfo | None = None, **options: Any) -> tuple[Path, BuildOutput]:
        recipe = get_recipe(recipe_name)
        out = tmp_path_factory.mktemp(recipe_name) / "candidate"
        out.mkdir()
        output = recipe.build(BuildContext(base=base_model or base, parent=None, out_dir=out,
                                           options=recipe.options_model(**options), calibration=calibration_feeds,
                                           threads=THREADS))
        assert (out / output.model_file).is_file()
        return out, output

    return _build


def encode(folder: Path, output: BuildOutput, tokens: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    runner = get_runtime(output.runtime)(folder, output.model_file, output.details, THREADS)
    assert output.io_spec is not None and runner.io_spec == IOSpec.from_dict(output.io_spec)
    return embeddings.encode(runner, *tokens)


def min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())


def test_fixed_workflow_dynamic_int8(build: Any, tokens: tuple[np.ndarray, np.ndarray], reference: np.ndarray) -> None:
    import onnx

    def olive_files_in_cwd() -> set[str]:  # only Olive's names: other processes may write here too
        return {p.name for p in Path.cwd().iterdir() if "olive" in p.name.lower()}

    cwd_before = olive_files_in_cwd()
    folder, out = build("olive-workflow", pass_options={"dynamic_quantization": {"per_channel": True}})
    assert (out.format, out.runtime, out.precision, out.model_file) == ("onnx", "onnxruntime", "int8", "model.onnx")
    # Olive's own records travel with the candidate (the pipeline logs the folder to MLflow).
    assert sorted(p.name for p in (folder / "olive").iterdir()) == ["footprint.json", "run_history.txt",
                                                                    "workflow.json"]
    footprint = json.loads((folder / "olive" / "footprint.json").read_text())
    # Lineage: the executed passes in order, with Olive's full config of each.
    d = out.details
    assert d["pass_list"] == ["conversion", "transformers_optimization", "dynamic_quantization"]
    assert [p["type"] for p in d["passes"]] == ["onnxconversion", "orttransformersoptimization",
                                                "onnxdynamicquantization"]
    assert d["passes"][0]["config"]["target_opset"] == 17
    assert d["passes"][1]["config"]["num_heads"] == 12 and d["passes"][1]["config"]["hidden_size"] == 384
    assert d["passes"][2]["config"]["per_channel"] is True
    assert d["olive_model_id"] in footprint and all(p["model_id"] in footprint for p in d["passes"])
    assert d["quantized_ops"].get("QAttention") == 6  # the fused attention got quantized, one per layer
    graph = onnx.load(str(folder / out.model_file)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["sentence_embedding"]
    # The I/O spec of the output, and Olive's io_config, are the task form's.
    spec = IOSpec.from_dict(out.io_spec or {})
    assert spec.input_names == ("input_ids", "attention_mask") and spec.output_names == ("sentence_embedding",)
    assert spec.dynamic_axes()["input_ids"] == {0: "batch", 1: "sequence"}
    workflow = json.loads((folder / "olive" / "workflow.json").read_text())
    assert workflow["input_model"]["io_config"] == {
        "input_names": ["input_ids", "attention_mask"],
        "input_types": ["int64", "int64"],
        "output_names": ["sentence_embedding"],
        "dynamic_axes": {"input_ids": {"0": "batch", "1": "sequence"},
                         "attention_mask": {"0": "batch", "1": "sequence"}, "sentence_embedding": {"0": "batch"}},
    }
    assert d["task"] == "text-embedding" and "SentenceEncoder" in d["input_model"]
    assert min_cos(encode(folder, out, tokens), reference) >= 0.98
    # Olive's cache and outputs live in a temporary folder, not in the working directory.
    assert olive_files_in_cwd() == cwd_before


def test_openvino_conversion_pass(build: Any, tokens: tuple[np.ndarray, np.ndarray], reference: np.ndarray) -> None:
    folder, out = build("olive-workflow", passes=["openvino_conversion"])
    assert (out.format, out.runtime, out.model_file) == ("openvino-ir", "openvino", "model.xml")
    assert out.precision == "fp16" and out.details["inference_precision"] == "f32"  # FP16 weights, FP32 compute
    assert (folder / "model.bin").is_file()
    assert out.details["passes"][0]["config"]["compress_to_fp16"] is True
    # OpenVINO names the traced output "42"; the candidate's IR carries the form's names instead.
    spec = IOSpec.from_dict(out.io_spec or {})
    assert spec.input_names == ("input_ids", "attention_mask") and spec.output_names == ("sentence_embedding",)
    assert spec.input("input_ids").shape == ("batch", "sequence")
    assert min_cos(encode(folder, out, tokens), reference) >= 0.999


def test_openvino_quantization_with_calibration_files(build: Any, tokens: tuple[np.ndarray, np.ndarray],
                                                      reference: np.ndarray) -> None:
    """Olive's NNCF pass: the task's calibration feeds (fixed benchmark shape) as raw files per input name."""
    folder, out = build("olive-workflow", passes=["openvino_conversion", "openvino_quantization"],
                        calibration_samples=8)
    assert (out.format, out.runtime, out.precision) == ("openvino-ir", "openvino", "int8")
    assert out.details["calibration_samples"] == 8
    workflow = json.loads((folder / "olive" / "workflow.json").read_text())
    params = workflow["data_configs"][0]["load_dataset_config"]["params"]
    assert params["input_names"] == ["input_ids", "attention_mask"]
    assert params["input_shapes"] == [[1, 32], [1, 32]] and params["input_types"] == ["int64", "int64"]
    quantization = workflow["passes"]["openvino_quantization"]
    assert quantization["data_config"] == "edgeopt_calibration"
    assert quantization["model_type"] == "TRANSFORMER"  # the form has attention modules
    assert min_cos(encode(folder, out, tokens), reference) >= 0.9


def test_olive_search_keeps_olives_best(build: Any, tokens: tuple[np.ndarray, np.ndarray],
                                        reference: np.ndarray) -> None:
    fixed = {"reduce_range": False, "quant_preprocess": True, "calibrate_method": "MinMax",
             "activation_symmetric": False, "precision": "int8"}
    folder, out = build("olive-optimize", quant_modes=["dynamic"], fixed=fixed, calibration_samples=8,
                        eval_samples=8, latency_repeats=3)
    assert (out.format, out.runtime, out.precision) == ("onnx", "onnxruntime", "int8")
    search = out.details["search"]
    assert search["quantized_points_evaluated"] == 2  # per_channel True/False: the only free parameter
    assert (search["calibration_samples"], search["eval_samples"]) == (8, 8)
    olive_dir = folder / "olive"
    footprint = json.loads((olive_dir / "footprint.json").read_text())
    frontier = json.loads((olive_dir / "pareto_frontier_footprint.json").read_text())
    assert set(frontier) == set(search["pareto_frontier"]) and set(frontier) <= set(footprint)

    def latency(node: dict[str, Any]) -> float:
        return float(node["metrics"]["value"]["latency-p50"]["value"])

    # Olive's pick (rank_by latency): the lowest p50 among its frontier, with its metrics recorded.
    chosen = out.details["olive_model_id"]
    assert chosen in frontier
    assert latency(footprint[chosen]) == min(latency(n) for n in frontier.values())
    assert out.details["olive_metrics"]["latency-p50"] == pytest.approx(latency(footprint[chosen]))
    assert 0.5 < out.details["olive_metrics"]["fidelity-accuracy_score"] <= 1.0
    assert out.details["passes"][-1]["config"]["quant_mode"] == "dynamic"
    assert min_cos(encode(folder, out, tokens), reference) >= 0.9


def test_options_are_checked(build: Any, hf_dir: Path, tmp_path: Path) -> None:
    options = get_recipe("olive-workflow").options_model
    for bad in (
        {"passes": ["openvino_quantization"]},  # OpenVINO passes start with the conversion
        {"passes": ["dynamic_quantization", "conversion"]},  # conversion comes first
        {"passes": ["conversion", "openvino_quantization"]},  # mixes ONNX and OpenVINO passes
        {"passes": ["conversion", "dynamic_quantization", "static_quantization"]},
        {"passes": ["conversion", "conversion"]},
        {"pass_options": {"static_quantization": {"per_channel": True}}},  # pass not in the list
        {"passes": ["conversion", "no_such_pass"]},
    ):
        with pytest.raises(ValidationError):
            options(**bad)
    with pytest.raises(ValidationError):
        get_recipe("olive-optimize").options_model(quant_modes=[])
    # The fixed workflow serves any task with a PyTorch form; the search is a sentence-encoder search.
    assert get_recipe("olive-workflow").tasks == ()
    assert get_recipe("olive-optimize").tasks == ("text-embedding",)
    # A Hugging Face base goes through the PyTorch form: a list without a conversion cannot start there.
    with pytest.raises(CandidateError, match="needs an ONNX model"):
        build("olive-workflow", passes=["dynamic_quantization"])
    onnx_base = BaseModelInfo(path=tmp_path / "m.onnx", format="onnx", tokenizer_dir=hf_dir, sha256="x",
                              task="text-embedding")
    with pytest.raises(CandidateError, match="reading the ONNX input"):
        build("olive-workflow", base_model=onnx_base)


def test_workflow_from_an_onnx_parent(build: Any, calibration_feeds: Calibration, base: BaseModelInfo,
                                      tokens: tuple[np.ndarray, np.ndarray], reference: np.ndarray,
                                      tmp_path: Path) -> None:
    """An ONNX model is Olive's ONNXModel input: the graph's I/O spec, and no conversion pass."""
    parent_dir, exported = build("onnx-export")
    recipe = get_recipe("olive-workflow")
    out = tmp_path / "candidate"
    out.mkdir()
    parent = ParentArtifact(name="onnx-fp32", dir=parent_dir, format="onnx", model_file=exported.model_file)
    output = recipe.build(BuildContext(
        base=base, parent=parent, out_dir=out, calibration=calibration_feeds, threads=THREADS,
        options=recipe.options_model(passes=["conversion", "dynamic_quantization"],
                                     pass_options={"dynamic_quantization": {"per_channel": True}})))
    assert (output.format, output.precision) == ("onnx", "int8")
    assert output.details["pass_list"] == ["dynamic_quantization"]
    assert output.details["skipped_passes"] == {"conversion": "the input is already ONNX"}
    assert output.details["input_model"] == f"ONNXModel: {exported.model_file}"
    workflow = json.loads((out / "olive" / "workflow.json").read_text())
    assert workflow["input_model"]["type"] == "ONNXModel"
    assert IOSpec.from_dict(output.io_spec or {}) == IOSpec.from_dict(exported.io_spec or {})
    assert min_cos(encode(out, output, tokens), reference) >= 0.98
