"""The ONNX detector: its checks, its base folder, and the head nodes static INT8 must keep in float.

A base folder is the user's graph as `model.onnx` (weights inline) and `config.json` (`DetectorConfig`: the input
name and size, the number of classes and their names). `check_detector` reads the graph and runs it once on a
blank input with ONNX Runtime, so a graph whose output is not [batch, 4 + classes, anchors] is refused before
anything is built, whatever its declared (often symbolic) output shape says.

`head_float_nodes` finds the nodes of the YOLO head whose outputs mix very different ranges, which one 8-bit
scale per tensor cannot hold: the final Concat of boxes (0..input size) with class scores (0..1) rounds every
score to 0 once quantized. It walks back from the graph's outputs through the post-processing (Concat, Sigmoid,
the DFL Softmax and its Conv, the Mul/Add/Sub/Div of box decoding and the reshapes between them) and stops at
the head's own convolutions, which quantize well.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeopt.errors import UserError, one_line
from edgeopt.imaging import onnx_image_input
from edgeopt.io.atomic import atomic_dir

if TYPE_CHECKING:
    import onnx

    from edgeopt.recipes import BaseModelInfo
    from edgeopt.workloads.object_detection import OnnxDetectorModel

ONNX_FILE = "model.onnx"
CONFIG_FILE = "config.json"
# The head's post-processing: what the walk from the outputs passes through (and keeps in float).
HEAD_OPS = frozenset({"Concat", "Sigmoid", "Softmax", "Mul", "Add", "Sub", "Div",
                      "Reshape", "Transpose", "Slice", "Split", "Unsqueeze", "Squeeze"})


class DetectorConfig(BaseModel):
    """`config.json` of a detector base folder: what the workload feeds and how it reads the output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_name: str
    input_size: int = Field(ge=32, le=4096)
    num_classes: int = Field(ge=1)
    anchors: int = Field(ge=1)  # at input_size
    class_names: list[str] | None = None
    layout: str = "NCHW"


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _metadata_size(meta: dict[str, str]) -> int | None:
    """Ultralytics' `imgsz` metadata ("[320, 320]"), when square."""
    try:
        raw = ast.literal_eval(meta.get("imgsz", ""))
    except (ValueError, SyntaxError):
        return None
    if isinstance(raw, list | tuple) and len(raw) == 2 and raw[0] == raw[1] and isinstance(raw[0], int):
        return raw[0]
    return raw if isinstance(raw, int) else None


def _metadata_names(meta: dict[str, str], n: int) -> list[str] | None:
    """Ultralytics' `names` metadata ("{0: 'person', ...}") as a list, when it names exactly n classes."""
    try:
        raw = ast.literal_eval(meta.get("names", ""))
    except (ValueError, SyntaxError):
        return None
    if isinstance(raw, dict) and sorted(raw) == list(range(n)):
        return [str(raw[i]) for i in range(n)]
    return None


def _probe(path: Path, name: str, dtype: int, size: int, where: str) -> tuple[int, ...]:
    """The real output shape for one blank input of size x size (what the declared shape may leave symbolic)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    x = np.zeros((1, 3, size, size), dtype=onnx.helper.tensor_dtype_to_np_dtype(dtype))
    try:
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in session.get_outputs()]
        return tuple(np.shape(session.run(outputs[:1], {name: x})[0]))
    except Exception as err:
        raise UserError(f"{where}: {path.name} does not run on a {size}x{size} input in onnxruntime "
                        f"({one_line(err)})") from None


def check_detector(path: Path, source: OnnxDetectorModel, where: str) -> DetectorConfig:
    """The detector's configuration, checked: one float [batch, 3, H, W] input (the declared or graph's square
    size) and a first output [batch, 4 + classes, anchors] when run. UserError, one line, otherwise."""
    import onnx

    model, chosen, dims, shown = onnx_image_input(path, source.input_name, where, "object-detection")
    elem = chosen.type.tensor_type.elem_type
    if len(dims) != 4 or dims[1] != 3:
        raise UserError(f"{where}: input {shown} of {path.name} is not a [batch, 3, height, width] image tensor")
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        raise UserError(f"{where}: input {shown} of {path.name} is {onnx.TensorProto.DataType.Name(elem)}; "
                        f"object-detection feeds float pixels")
    static = [d for d in dims[2:] if isinstance(d, int)]
    meta = _metadata(model)
    size = source.input_size or (static[0] if static else None) or _metadata_size(meta)
    if size is None:
        raise UserError(f"{where}.input_size: {path.name} has a dynamic input {shown} and no imgsz metadata; "
                        f"set the square size it runs at")
    if any(d != size for d in static):
        raise UserError(f"{where}.input_size: {size} does not match the graph's input {shown}")
    shape = _probe(path, chosen.name, elem, size, where)
    output = model.graph.output[0].name if model.graph.output else "?"
    if len(shape) != 3 or shape[1] < 5 or shape[2] <= shape[1]:
        raise UserError(f"{where}: output {output} of {path.name} is {list(shape)} on a {size}x{size} input, not "
                        f"[batch, 4 + classes, anchors] (the Ultralytics YOLO export layout)")
    n_classes = int(shape[1]) - 4
    names_given = source.class_names
    if names_given is not None and len(names_given) != n_classes:
        raise UserError(f"{where}.class_names: {len(names_given)} names for a model with {n_classes} classes")
    return DetectorConfig(input_name=chosen.name, input_size=size, num_classes=n_classes, anchors=int(shape[2]),
                          class_names=names_given or _metadata_names(meta, n_classes))


def materialize(source: OnnxDetectorModel, dest: Path, task: str, project_root: Path) -> BaseModelInfo:
    """Write `model.onnx` (weights inline) and `config.json` into `dest` (replaced atomically)."""
    import onnx

    from edgeopt.base_model import check_onnx_file
    from edgeopt.lineage import sha256_tree
    from edgeopt.recipes import BaseModelInfo
    from edgeopt.taskspec import resolve

    src = resolve(source.path, project_root)
    check_onnx_file(src)
    cfg = check_detector(src, source, "model")
    with atomic_dir(Path(dest)) as tmp:
        # Loading resolves external data; saving inline makes one self-contained file to version and build from.
        onnx.save_model(onnx.load(str(src)), str(tmp / ONNX_FILE), save_as_external_data=False)
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
        digest = sha256_tree(tmp)
    details = {"source": source.kind, "num_classes": cfg.num_classes, "input_size": cfg.input_size,
               "anchors": cfg.anchors, "class_names": cfg.class_names is not None}
    return BaseModelInfo(path=Path(dest) / ONNX_FILE, format="onnx", sha256=digest, task=task, details=details)


def read_config(base_path: Path) -> DetectorConfig:
    """The `config.json` beside a materialized base's model.onnx."""
    path = Path(base_path).parent / CONFIG_FILE if Path(base_path).is_file() else Path(base_path) / CONFIG_FILE
    try:
        return DetectorConfig.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found (an object-detection base folder needs its {CONFIG_FILE})") from None
    except (OSError, ValidationError) as err:
        raise UserError(f"{path}: invalid detector config ({one_line(err)})") from None


def head_float_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the head's post-processing nodes, from the outputs back to the head's convolutions.

    A Conv is kept (and walked through) only when its input comes from a Softmax: the DFL's fixed 1x1 conv
    that takes the expectation over the box-distribution bins. Nodes without a name cannot be excluded by
    name and are passed over (their inputs are still walked).
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    constants = {t.name for t in model.graph.initializer}
    found: list[str] = []
    seen: set[int] = set()
    pending = [o.name for o in model.graph.output]
    while pending:
        node = producer.get(pending.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "Conv":
            source = producer.get(node.input[0]) if node.input else None
            if source is None or source.op_type != "Softmax":
                continue
        elif node.op_type not in HEAD_OPS:
            continue
        if node.name:
            found.append(node.name)
        pending.extend(i for i in node.input if i and i not in constants)
    return found
