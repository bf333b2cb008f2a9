"""torch-eager recipe and torch runtime on the real MiniLM model (no mocks)."""

from __future__ import annotations

import pickle
import subprocess
import sys
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
    FeedList,
    NoOptions,
    get_recipe,
    get_runtime,
)
from edgeopt.workloads.base import get_workload
from edgeopt.workloads.text_embedding.embeddings import encode
from edgeopt.workloads.text_embedding.model import sentence_encoder

THREADS = 2
MINILM_SPEC = {
    "inputs": [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
        {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"]},
    ],
    "outputs": [{"name": "sentence_embedding", "dtype": "float32", "shape": ["batch", 384]}],
}


def _ctx(base: BaseModelInfo, out: Path) -> BuildContext:
    return BuildContext(base=base, parent=None, out_dir=out, options=NoOptions(), calibration=FeedList(),
                        threads=THREADS)


def _runner(built: tuple[Path, BuildOutput]) -> Any:
    out, output = built
    return get_runtime(output.runtime)(out, output.model_file, output.details, THREADS)


@pytest.fixture(scope="module")
def built(base: BaseModelInfo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildOutput]:
    out = tmp_path_factory.mktemp("torch-eager")
    return out, get_recipe("torch-eager").build(_ctx(base, out))


@pytest.fixture(scope="module")
def runner(built: tuple[Path, BuildOutput]) -> Any:
    return _runner(built)


@pytest.fixture(scope="module")
def embeddings(runner: Any, tokens: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return encode(runner, *tokens)


@pytest.fixture(scope="module")
def reference(hf_dir: Path, tokens: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Independent of the adapter: plain transformers forward, pooling and normalisation in numpy."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(hf_dir)).eval()
    ids, mask = tokens
    with torch.inference_mode():
        hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    h = hidden.last_hidden_state.numpy()
    m = mask[:, :, None].astype(np.float32)
    pooled = (h * m).sum(1) / m.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_build_copies_config_and_weights(built: tuple[Path, BuildOutput], hf_dir: Path) -> None:
    out, output = built
    assert (output.format, output.runtime, output.precision, output.model_file) == (
        "hf",
        "torch",
        "fp32",
        "model.safetensors",
    )
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == (hf_dir / "model.safetensors").read_bytes()
    # The runtime takes its module from the task recorded here.
    assert output.details == {"files": ["config.json", "model.safetensors"], "task": "text-embedding"}


def test_build_records_the_io_spec(built: tuple[Path, BuildOutput], runner: Any) -> None:
    _, output = built
    assert output.io_spec == MINILM_SPEC
    assert runner.io_spec == IOSpec.from_dict(MINILM_SPEC)
    assert runner.io_spec.dynamic_axes() == {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "sentence_embedding": {0: "batch"},
    }
    assert runner.runtime_info()["inputs"] == ["input_ids", "attention_mask"]


def test_run_maps_named_tensors(runner: Any, tokens: tuple[np.ndarray, np.ndarray], embeddings: np.ndarray) -> None:
    ids, mask = tokens
    # int32 in, as another tokenizer might give: cast to the declared int64; extra names are ignored.
    out = runner.run({"attention_mask": mask.astype(np.int32), "input_ids": ids.astype(np.int32),
                      "token_type_ids": np.zeros_like(ids)})
    assert list(out) == ["sentence_embedding"]
    assert out["sentence_embedding"].dtype == np.float32 and out["sentence_embedding"].shape == (len(ids), 384)
    np.testing.assert_allclose(out["sentence_embedding"], embeddings, atol=1e-6)
    with pytest.raises(CandidateError, match="attention_mask"):
        runner.run({"input_ids": ids})
    with pytest.raises(CandidateError, match="rank"):
        runner.run({"input_ids": ids[0], "attention_mask": mask[0]})


def test_torch_form_attention_for_export(hf_dir: Path) -> None:
    workload = get_workload("text-embedding")
    run, export = workload.torch_form(hf_dir), workload.torch_form(hf_dir, for_export=True)
    assert run.module.backbone.config._attn_implementation == "sdpa"
    assert export.module.backbone.config._attn_implementation == "eager"
    assert run.io_spec == export.io_spec == IOSpec.from_dict(MINILM_SPEC)
    # The tracing example: batch 2 with a padded row, so the trace sees the masked path.
    assert list(export.example) == ["input_ids", "attention_mask"]
    assert export.example["attention_mask"].tolist() == [[1] * 8, [1, 1, 1, 0, 0, 0, 0, 0]]
    assert export.io_spec.feed_problem(export.example) is None


def test_runtime_takes_the_module_of_the_recorded_task(
    built: tuple[Path, BuildOutput], tokens: tuple[np.ndarray, np.ndarray], embeddings: np.ndarray
) -> None:
    out, output = built
    with pytest.raises(CandidateError, match="no PyTorch form"):
        get_runtime("torch")(out, output.model_file, {"task": "causal-lm"}, THREADS)
    with pytest.raises(CandidateError, match="task"):
        get_runtime("torch")(out, output.model_file, {"task": ""}, THREADS)
    # A candidate from before tasks were recorded (details without one) ran the sentence encoder: it still does.
    legacy = get_runtime("torch")(out, output.model_file, {"files": output.details["files"]}, THREADS)
    assert legacy.io_spec == IOSpec.from_dict(MINILM_SPEC)
    np.testing.assert_allclose(encode(legacy, *tokens), embeddings, atol=1e-6)


def test_embeddings_match_plain_transformers(sentences: list[str], embeddings: np.ndarray,
                                             reference: np.ndarray) -> None:
    assert embeddings.shape == (len(sentences), 384)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert (embeddings * reference).sum(1).min() >= 0.99999


def test_embeddings_are_semantic(embeddings: np.ndarray) -> None:
    sims = embeddings @ embeddings.T
    # The two music sentences are each other's nearest neighbour.
    assert int(np.argsort(sims[0])[-2]) == 1
    assert sims[0, 1] > sims[0, 3] + 0.3


def test_padding_does_not_change_embedding(
    runner: Any, tokens: tuple[np.ndarray, np.ndarray], embeddings: np.ndarray
) -> None:
    ids, mask = tokens
    shortest = int(mask.sum(1).argmin())
    n = int(mask[shortest].sum())
    alone = encode(runner, ids[shortest : shortest + 1, :n], mask[shortest : shortest + 1, :n])
    assert float(alone[0] @ embeddings[shortest]) >= 0.99999


def test_rejects_non_hf_base(base: BaseModelInfo, tmp_path: Path) -> None:
    onnx_base = BaseModelInfo(
        path=tmp_path / "model.onnx", format="onnx", tokenizer_dir=base.tokenizer_dir, sha256="x", task="t"
    )
    with pytest.raises(CandidateError, match="Hugging Face"):
        get_recipe("torch-eager").build(_ctx(onnx_base, tmp_path / "out"))


class _Payload:
    """Unpickling this creates a marker file: proof that something ran pickle.load on it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_never_unpickles(base: BaseModelInfo, tmp_path: Path) -> None:
    src = tmp_path / "pickled"
    src.mkdir()
    marker = tmp_path / "unpickled"
    (src / "config.json").write_bytes((base.path / "config.json").read_bytes())
    (src / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    pickled = BaseModelInfo(path=src, format="hf", tokenizer_dir=base.tokenizer_dir, sha256="x", task="t")
    with pytest.raises(CandidateError, match="safetensors"):
        get_recipe("torch-eager").build(_ctx(pickled, tmp_path / "out"))
    with pytest.raises(CandidateError, match="safetensors"):
        get_runtime("torch")(src, "pytorch_model.bin", {"task": "text-embedding"}, THREADS)
    # Even asked for the folder directly, the encoder refuses .bin weights instead of loading them.
    with pytest.raises(CandidateError):
        sentence_encoder(src)
    assert not marker.exists()


def test_recipe_declaration() -> None:
    recipe = get_recipe("torch-eager")
    assert (recipe.framework, recipe.accepts, recipe.options_model) == ("torch", ("base",), NoOptions)
    # Any tensor task with a PyTorch form; generation models have their own runtime.
    assert (recipe.families, recipe.tasks) == (("tensor",), ())
    with pytest.raises(ValidationError):
        NoOptions(threads=3)  # type: ignore[call-arg]


def test_import_is_cheap() -> None:
    code = (
        "import sys, edgeopt.adapters.torch_eager, edgeopt.workloads.text_embedding.model\n"
        "heavy = {'torch', 'transformers', 'onnx', 'onnxruntime'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
