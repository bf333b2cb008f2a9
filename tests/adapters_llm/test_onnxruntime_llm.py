"""ONNX Runtime causal-LM recipes (FP32 export with past/present KV tensors, MatMulNBits INT4) and runtime on
the real SmolLM2-135M, against Hugging Face float32 logits and greedy tokens on the same windows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edgeopt.adapters.causal_lm_common import GraphConst, GraphOp, weight_reads
from edgeopt.errors import CandidateError
from edgeopt.recipes import BuildContext, FeedList, ParentArtifact, all_recipes, get_recipe, get_runtime

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

THREADS = 2


def _fp32(scored: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return scored("ort-fp32", "ort-causal-lm-export", {})


def test_recipes_registered_for_causal_lm_only() -> None:
    recipes = all_recipes()
    assert recipes["ort-causal-lm-export"].accepts == ("base", "hf")
    assert recipes["ort-matmulnbits-int4"].accepts == ("onnx-llm",)
    for name in ("ort-causal-lm-export", "ort-matmulnbits-int4"):
        assert recipes[name].tasks == ("causal-lm",)


def test_fp32_export_matches_hf_and_decodes_greedily(scored: Callable[..., dict[str, Any]],
                                                     hf_greedy: tuple[np.ndarray, list[int]]) -> None:
    fp32 = _fp32(scored)
    assert fp32["out"].format == "onnx-llm" and fp32["out"].precision == "fp32"
    # Measured: KLD ~1e-11, top-1 1.0.
    assert fp32["top1"] >= 0.99
    assert fp32["kld"] < 1e-5
    runner = fp32["runner"]
    info = runner.runtime_info()
    assert info["intra_op_threads"] == THREADS and info["kv_cache"] == "f32"
    prompt, hf_tokens = hf_greedy
    gen = runner.generate(prompt, len(hf_tokens))
    assert len(gen.token_ids) == len(hf_tokens) and len(gen.decode_s) == len(hf_tokens) - 1
    assert gen.ttft_s > 0 and all(t > 0 for t in gen.decode_s)
    assert gen.token_ids[:8] == hf_tokens[:8]
    assert runner.generate(prompt, 1).token_ids == gen.token_ids[:1]  # fresh state every call


def test_matmulnbits_int4_shrinks_the_model_and_stays_usable(scored: Callable[..., dict[str, Any]],
                                                             hf_greedy: tuple[np.ndarray, list[int]]) -> None:
    fp32 = _fp32(scored)
    int4 = scored("ort-int4", "ort-matmulnbits-int4", {}, "ort-fp32")
    ops = int4["out"].details["ops"]
    # Every linear layer of the 30 blocks (7 each) plus the output projection; the embedding table too.
    assert ops["MatMulNBits"] == 7 * fp32["out"].details["n_layers"] + 1
    assert ops["GatherBlockQuantized"] == 1
    assert int4["out"].precision == "int4-weights"
    assert int4["mb"] < 0.2 * fp32["mb"]
    # Measured on these windows: KLD ~0.45, top-1 ~0.6 (the weights are themselves Q4_1-rounded).
    assert fp32["kld"] < int4["kld"] < 1.0
    assert int4["top1"] > 0.5
    prompt, hf_tokens = hf_greedy
    assert len(int4["runner"].generate(prompt, len(hf_tokens)).token_ids) == len(hf_tokens)


def test_options_are_validated() -> None:
    opts = get_recipe("ort-matmulnbits-int4").options_model
    for bad in ({"block_size": 8}, {"accuracy_level": 5}, {"bits": 8}):
        with pytest.raises(ValidationError):
            opts.model_validate(bad)
    with pytest.raises(ValidationError):
        get_recipe("ort-causal-lm-export").options_model.model_validate({"opset": 21})


def _tiny_matmul_onnx(path: Path, opset: int) -> None:
    """A one-MatMul ONNX model with a constant weight: enough for the quantizer's own checks."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"], name="mm")],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 64])],
        [weight],
    )
    # IR version 8: what opset 17 shipped with (onnx's newest may be ahead of onnxruntime's).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.save_model(model, str(path))


def test_int4_refuses_wrong_parents(llm_base: Any, tmp_path: Path) -> None:
    recipe = get_recipe("ort-matmulnbits-int4")
    _tiny_matmul_onnx(tmp_path / "model.onnx", opset=17)

    def build(parent: ParentArtifact | None, **opts: Any) -> Any:
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        return recipe.build(BuildContext(base=llm_base, parent=parent, out_dir=out,
                                         options=recipe.options_model(**opts), calibration=FeedList(), threads=THREADS))

    with pytest.raises(CandidateError, match="onnx-llm"):
        build(None)
    with pytest.raises(CandidateError, match="onnx-llm"):  # an encoder ONNX is not an LLM parent
        build(ParentArtifact(name="enc", dir=tmp_path, format="onnx", model_file="model.onnx"))
    llm_parent = ParentArtifact(name="old", dir=tmp_path, format="onnx-llm", model_file="model.onnx")
    with pytest.raises(CandidateError, match="opset >= 18"):
        build(llm_parent)
    # Without the embedding table, an opset-17 parent quantizes.
    out = build(llm_parent, quantize_embeddings=False)
    assert out.details["ops"] == {"MatMulNBits": 1}


def test_runtime_needs_the_kv_cache_interface(tmp_path: Path) -> None:
    _tiny_matmul_onnx(tmp_path / "model.onnx", opset=17)
    with pytest.raises(CandidateError, match="input"):
        get_runtime("onnxruntime-causal-lm")(tmp_path, "model.onnx", {}, THREADS)
    with pytest.raises(CandidateError, match="not found"):
        get_runtime("onnxruntime-causal-lm")(tmp_path, "missing.onnx", {}, THREADS)


def _hf_reference(hf_dir: Path) -> dict[str, int]:
    """What the HF folder implies per decoded token in fp32: every stored tensor once (a tied embedding is
    stored once and read as the output head), its matrix elements, and the f32 KV bytes per position."""
    import json

    from safetensors import safe_open

    cfg = json.loads((hf_dir / "config.json").read_text())
    with safe_open(str(hf_dir / "model.safetensors"), framework="np") as f:
        shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert cfg["tie_word_embeddings"] and "lm_head.weight" not in shapes  # SmolLM2: tied
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return {
        "weight_bytes": 4 * sum(int(np.prod(s)) for s in shapes.values()),
        "matmul_params": sum(int(np.prod(s)) for s in shapes.values() if len(s) > 1),
        "kv_bytes_per_position": cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * head_dim * 4,
    }


def test_weight_reads_of_a_matmulnbits_graph() -> None:
    """ONNX-like: a block-quantized embedding lookup, one MatMulNBits (packed B counted as its N x K matrix,
    fp32 scales, no zero point: an empty optional input), and a float output head fed through a Cast."""
    n, k, v = 16, 64, 100
    consts = [
        GraphConst("embed_q", v * k // 2, v * k), GraphConst("embed_scales", v * k // 32 * 4, v * k // 32),
        GraphConst("B", n * k // 2, n * k), GraphConst("scales", n * k // 32 * 4, n * k // 32),
        GraphConst("head", v * n * 4, v * n),
    ]
    ops = [
        GraphOp("lookup", "GatherBlockQuantized", ("embed_q", "input_ids", "embed_scales"), ("x",)),
        GraphOp("proj", "MatMulNBits", ("x", "B", "scales", ""), ("y",)),
        GraphOp("cast", "Cast", ("head",), ("head_f",)),
        GraphOp("lm_head", "MatMul", ("y", "head_f"), ("logits",)),
    ]
    assert weight_reads(consts, ops) == (n * k // 2 + n * k // 8 + v * n * 4, n * k + v * n)


def test_roofline_from_the_onnx_graphs(scored: Callable[..., dict[str, Any]], hf_dir: Path) -> None:
    ref = _hf_reference(hf_dir)
    fp32 = _fp32(scored)
    int4 = scored("ort-int4", "ort-matmulnbits-int4", {}, "ort-fp32")
    roofs = {"fp32": fp32["runner"].roofline(), "int4": int4["runner"].roofline()}
    print({k: {"weight_mb": r["weight_bytes"] / 1e6, **r} for k, r in roofs.items()})
    # The export stores the tied embedding twice (the lookup table and the head's transposed copy); only the
    # head is read per token, so the fp32 graph reads what the HF weights weigh.
    assert abs(roofs["fp32"]["weight_bytes"] / ref["weight_bytes"] - 1) < 0.01
    for r in roofs.values():
        assert abs(r["matmul_params"] / ref["matmul_params"] - 1) < 1e-3
        assert r["kv_bytes_per_position"] == ref["kv_bytes_per_position"]
    # Every matrix (head included) as 4-bit symmetric blocks with one fp32 scale each; the int4 embedding
    # table is a lookup.
    details = int4["out"].details
    assert details["is_symmetric"] and details["quantize_lm_head"]
    bytes_per_param = 0.5 + 4 / details["block_size"]
    assert abs(roofs["int4"]["weight_bytes"] / (ref["matmul_params"] * bytes_per_param) - 1) < 0.02



def _stored_bytes(init: Any) -> int:
    """An initializer's data as stored in the file: its raw bytes, or its typed values' size."""
    from onnx import numpy_helper

    return len(init.raw_data) if init.raw_data else int(numpy_helper.to_array(init).nbytes)


def test_roofline_reads_the_graph_skeleton_not_the_weights(scored: Callable[..., dict[str, Any]]) -> None:
    """The roofline is sized from the skeleton (onnx_skeleton): every initializer's name, shape and type, none
    of its data, and the bytes they add up to are the bytes stored in the file."""
    import onnx

    from edgeopt.adapters.onnxruntime_llm import _tensor_size, onnx_skeleton

    for c in (_fp32(scored), scored("ort-int4", "ort-matmulnbits-int4", {}, "ort-fp32")):
        path = c["dir"] / c["out"].model_file
        skeleton, full = onnx_skeleton(path), onnx.load(str(path))
        assert len(skeleton.graph.node) == len(full.graph.node)
        assert [(i.name, list(i.dims), i.data_type) for i in skeleton.graph.initializer] == [
            (i.name, list(i.dims), i.data_type) for i in full.graph.initializer]
        assert not any(i.raw_data or i.float_data or i.int64_data for i in skeleton.graph.initializer)
        stored = sum(_stored_bytes(i) for i in full.graph.initializer)
        assert sum(_tensor_size(i.dims, i.data_type)[0] for i in skeleton.graph.initializer) == stored
        assert len(skeleton.SerializeToString()) < 4_000_000  # ~1.3 MB of graph, against 103 / 653 MB files
        del full
        # The fp32 graph reads every stored weight but the embedding table (the lookup; the tied head is its
        # transposed copy) and a few bytes of shape constants.
        if c["out"].precision == "fp32":
            table = next(i for i in skeleton.graph.initializer if list(i.dims) == [49152, 576])
            roof = c["runner"].roofline()["weight_bytes"]
            assert 0 <= roof - (stored - _tensor_size(table.dims, table.data_type)[0]) < 100_000


def _model_with_every_tensor_kind(path: Path, external: bool) -> Any:
    """Initializers as raw bytes and as typed values, a Constant node and a Constant inside an If branch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((4, 4), np.float32)))
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["t"], value=numpy_helper.from_array(np.ones(5, np.float32)))],
        "branch", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [5])])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["x"]), helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
         const, helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(np.random.default_rng(0).random((64, 32), dtype=np.float32), "W"),
         numpy_helper.from_array(np.random.default_rng(1).random((100, 64), dtype=np.float32), "E"),
         helper.make_tensor("idx", TensorProto.INT64, [3], [1, 2, 3])],  # int64_data, not raw_data
    )
    model = helper.make_model(graph)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return model


@pytest.mark.parametrize("external", [False, True])
def test_onnx_skeleton_of_every_tensor_kind(tmp_path: Path, external: bool) -> None:
    from edgeopt.adapters.onnxruntime_llm import _graph_description, onnx_skeleton

    path = tmp_path / "model.onnx"
    model = _model_with_every_tensor_kind(path, external)
    skeleton = onnx_skeleton(path)
    assert [(i.name, list(i.dims), i.data_type) for i in skeleton.graph.initializer] == [
        ("W", [64, 32], 1), ("E", [100, 64], 1), ("idx", [3], 7)]
    assert not any(i.raw_data or i.int64_data for i in skeleton.graph.initializer)
    # onnx moves raw_data tensors to the side file, not typed values (idx).
    assert [bool(i.external_data) for i in skeleton.graph.initializer] == [external, external, False]
    value = skeleton.graph.node[2].attribute[0].t
    assert list(value.dims) == [4, 4] and not value.raw_data
    assert list(skeleton.graph.node[3].attribute[0].g.node[0].attribute[0].t.dims) == [5]
    # W read by the MatMul (64 x 32 fp32); the table E only looked up; the Constants are consumed by no op.
    assert weight_reads(*_graph_description(skeleton)) == (64 * 32 * 4, 64 * 32)
    assert _graph_description(skeleton) == _graph_description(model)
    path.write_bytes(path.read_bytes()[:-7])  # cut inside the last field
    with pytest.raises(ValueError, match="truncated"):
        onnx_skeleton(path)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        onnx_skeleton(tmp_path / "empty.onnx")


def test_onnx_skeleton_does_not_raise_the_peak_rss(tmp_path: Path) -> None:
    """In a fresh process, sizing a model with 256 MB of inline weights leaves its peak RSS where it was
    (onnx.load(path, load_external_data=False) adds twice the weights: the file's bytes and the parsed proto)."""
    import subprocess
    import sys

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = tmp_path / "big.onnx"
    weights = [numpy_helper.from_array(np.full((4096, 4096), i, dtype=np.float32), f"w{i}") for i in range(4)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"]) for i in range(4)], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 4096]) for i in range(4)], weights)
    onnx.save_model(helper.make_model(graph), str(path))
    del weights, graph
    script = (
        "import sys\n"
        "def hwm():\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024\n"
        "from edgeopt.adapters.causal_lm_common import weight_reads\n"
        "from edgeopt.adapters.onnxruntime_llm import _graph_description, onnx_skeleton\n"
        "before = hwm()\n"
        "print(weight_reads(*_graph_description(onnx_skeleton(sys.argv[1])))[0], hwm() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    weight_bytes, growth_mb = out.stdout.split()
    assert int(weight_bytes) == 4 * 4096 * 4096 * 4
    assert float(growth_mb) < 8, f"sizing the model raised the peak RSS by {growth_mb} MB"
