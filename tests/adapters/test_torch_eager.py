"""torch-eager recipe and torch runtime on the real MiniLM model (no mocks)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgeopt.adapters.torch_eager import sentence_encoder
from edgeopt.errors import CandidateError
from edgeopt.recipes import (
    BaseModelInfo,
    BuildContext,
    BuildOutput,
    NoOptions,
    get_recipe,
    get_runtime,
)

THREADS = 2


def _ctx(base: BaseModelInfo, out: Path) -> BuildContext:
    return BuildContext(base=base, parent=None, out_dir=out, options=NoOptions(), calibration={}, threads=THREADS)


@pytest.fixture(scope="module")
def built(base: BaseModelInfo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildOutput]:
    out = tmp_path_factory.mktemp("torch-eager")
    return out, get_recipe("torch-eager").build(_ctx(base, out))


@pytest.fixture(scope="module")
def embeddings(built: tuple[Path, BuildOutput], tokens: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    out, output = built
    runner = get_runtime(output.runtime)(out, output.model_file, output.details, THREADS)
    return runner.encode(*tokens)


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
    built: tuple[Path, BuildOutput], tokens: tuple[np.ndarray, np.ndarray], embeddings: np.ndarray
) -> None:
    out, output = built
    runner = get_runtime("torch")(out, output.model_file, output.details, THREADS)
    ids, mask = tokens
    shortest = int(mask.sum(1).argmin())
    n = int(mask[shortest].sum())
    alone = runner.encode(ids[shortest : shortest + 1, :n], mask[shortest : shortest + 1, :n])
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
        get_runtime("torch")(src, "pytorch_model.bin", {}, THREADS)
    # Even asked for the folder directly, the encoder refuses .bin weights instead of loading them.
    with pytest.raises(CandidateError):
        sentence_encoder(src)
    assert not marker.exists()


def test_recipe_declaration() -> None:
    recipe = get_recipe("torch-eager")
    assert (recipe.framework, recipe.accepts, recipe.options_model) == ("torch", ("base",), NoOptions)
    with pytest.raises(ValidationError):
        NoOptions(threads=3)  # type: ignore[call-arg]


def test_import_is_cheap() -> None:
    code = (
        "import sys, edgeopt.adapters.torch_eager\n"
        "heavy = {'torch', 'transformers', 'onnx', 'onnxruntime'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
