"""Real ONNX artifacts of the onnx-model tests, and pipeline settings.

- `mixed_model`: a small graph the test makes itself with onnx.helper: a float input, int64 token ids and a bool
  mask in; class scores (2-D float) and an int64 count of the mask out. The ids index an embedding table (Gather)
  and the mask selects the tokens that are summed, so any change to an integer or boolean value changes the output.
- `nudenet_model`: the YOLOv8n detector nudenet ships (`images` float [batch, 3, height, width] in, `output0`
  [batch, 22, anchors] out).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

VOCAB, EMBED, HIDDEN, CLASSES, SEQ = 50, 8, 16, 5, 6


def mixed_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> Any:
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Gather", ["table", "token_ids"], ["emb"]),  # [b, seq, embed]
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["pooled"], keepdims=0),  # [b, embed]
        helper.make_node("MatMul", ["features", "w1"], ["h1"]),
        helper.make_node("MatMul", ["pooled", "w2"], ["h2"]),
        helper.make_node("Add", ["h1", "h2"], ["h12"]),
        helper.make_node("Add", ["h12", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w3"], ["z"]),
        helper.make_node("Add", ["z", "b3"], ["logits"]),
        helper.make_node("Cast", ["mask"], ["maski"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["maski", "axis1"], ["count"], keepdims=0),  # [b]
    ]
    graph = helper.make_graph(
        nodes, "mixed",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", EMBED]),
                helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES]),
                 helper.make_tensor_value_info("count", TensorProto.INT64, ["batch"])],
        initializer=[weight("table", VOCAB, EMBED), weight("w1", EMBED, HIDDEN), weight("w2", EMBED, HIDDEN),
                     weight("b1", HIDDEN), weight("w3", HIDDEN, CLASSES), weight("b3", CLASSES),
                     numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
                     numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeopt-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def mixed_reference(features: np.ndarray, token_ids: np.ndarray, mask: np.ndarray, path: Path) -> dict[str, Any]:
    """The graph's outputs computed in numpy from its own weights (what every runtime must approximate)."""
    import onnx
    from onnx import numpy_helper

    w = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    pooled = (w["table"][token_ids] * mask[..., None].astype(np.float32)).sum(axis=1)
    h = np.maximum(features @ w["w1"] + pooled @ w["w2"] + w["b1"], 0)
    return {"logits": h @ w["w3"] + w["b3"], "count": mask.astype(np.int64).sum(axis=1)}


def mixed_synthetic(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"kind": "synthetic", "dims": {"batch": 1, "seq": SEQ},
                           "ranges": {"features": [-1.0, 1.0], "token_ids": [0, VOCAB - 1], "mask": [0, 1]},
                           "n_eval": 12, "n_calibration": 8, "seed": 3}
    raw.update(changes)
    return raw


def nudenet_model() -> Path:
    spec = importlib.util.find_spec("nudenet")
    assert spec is not None and spec.submodule_search_locations, "the nudenet package is not installed"
    return Path(spec.submodule_search_locations[0]) / "320n.onnx"


def pipeline(tmp: Path, model: Path, data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A minimal onnx-model pipeline (params.yaml form) with its outputs under tmp."""
    raw: dict[str, Any] = {
        "task": "onnx-model",
        "model": {"kind": "onnx", "path": str(model)},
        "data": data,
        "candidates": [{"name": "onnx-fp32", "recipe": "onnx-export"}],
        "selection": {"baseline": "onnx-fp32", "quality_metrics": ["min_cosine"]},
        "registry": {"model_name": "om-test"},
        "benchmark": {"throughput_batch_size": 4, "warmup_iterations": 1, "min_iterations": 2, "min_time_s": 0.0},
    }
    raw.update(changes)
    return {"output_dir": str(tmp / "outputs"), "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"},
            "pipelines": {"om": raw}}
