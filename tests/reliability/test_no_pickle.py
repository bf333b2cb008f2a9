"""No pickles in the registry: a champion loads, in a process where unpickling raises, from source alone.

The promoted pyfunc is logged as models-from-code (the `serving_code.py` of the task's package), so the
registry holds no python_model.pkl and loading executes that file instead of unpickling an object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest

from edgeopt.promotion import log_served_model, promote
from edgeopt.workloads.base import get_workload
from tests.reliability.conftest import FaultRun

# Its own registered model: the registry of `fault_run` ("reliability-edge") belongs to test_promotion.py,
# which expects no champion before its own promotions.
MODEL_NAME = "reliability-edge-no-pickle"
TEXTS = ["How do I open a file for reading?", "The for statement iterates over the items of a sequence."]
PROMPTS = ["The Python for statement iterates over", "A dictionary maps"]
PICKLE_SUFFIXES = {".pkl", ".pickle", ".cloudpickle", ".joblib"}

# Loads a model URI with pickle.load/loads/Unpickler and cloudpickle.load/loads raising (replaced before mlflow is
# imported), predicts, and writes the prediction without pickle: embeddings as .npy, generated text as JSON.
LOADER = textwrap.dedent('''
    import pickle
    import sys


    class PickleRefused(RuntimeError):
        pass


    def refuse(*args, **kwargs):
        raise PickleRefused("unpickling is disabled in this process")


    class RefusingUnpickler(pickle.Unpickler):
        def __init__(self, *args, **kwargs):
            refuse()


    pickle.load = pickle.loads = pickle._load = pickle._loads = refuse
    pickle.Unpickler = RefusingUnpickler  # (pickle._Unpickler stays: dill copies its dispatch table at import)
    try:
        import cloudpickle
    except ImportError:
        pass
    else:
        cloudpickle.load = cloudpickle.loads = refuse
    try:
        pickle.loads(pickle.dumps(1))
    except PickleRefused:
        pass
    else:
        sys.exit("the pickle guard is not in place")

    import json

    import numpy as np

    import mlflow.pyfunc

    uri, texts, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    model = mlflow.pyfunc.load_model(uri)
    pred = model.predict(texts)
    if isinstance(pred, np.ndarray):
        np.save(out, pred, allow_pickle=False)
        print(json.dumps({"shape": list(pred.shape)}))
    else:
        with open(out, "w") as f:
            json.dump([str(t) for t in pred], f)
        print(json.dumps({"shape": [len(pred)]}))
''')


def load_without_pickle(tracking_uri: str, model_uri: str, texts: list[str], tmp: Path,
                        out_name: str) -> tuple[Path, list[int]]:
    """Load and predict `texts` in a fresh process that cannot unpickle; (prediction file, its shape)."""
    script = tmp / "load_without_pickle.py"
    script.write_text(LOADER)
    out = tmp / out_name
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    proc = subprocess.run([sys.executable, str(script), model_uri, json.dumps(texts), str(out)], cwd=tmp,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"loading {model_uri} without pickle failed:\n{proc.stderr[-4000:]}"
    shape = json.loads(proc.stdout.strip().splitlines()[-1])["shape"]
    return out, shape


def model_files(name: str, alias: str, dst: Path) -> Path:
    """The folder of the logged model behind name@alias: under a local artifact root as is, else downloaded."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(name, alias)
    location = client.get_model_version_download_uri(name, version.version)
    if location.startswith("file:"):
        return Path(local_file_uri_to_path(location))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@{alias}", dst_path=str(dst)))


def assert_no_pickle_in_model(name: str, alias: str, dst: Path) -> None:
    """The logged model's files hold no pickle, and its pyfunc flavour is a code model."""
    root = model_files(name, alias, dst)
    assert (root / "MLmodel").is_file(), root
    pickles = [str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES]
    assert not pickles, f"pickles in {name}@{alias}: {pickles}"
    flavor = mlflow.models.Model.load(str(root / "MLmodel")).flavors["python_function"]
    assert "python_model" not in flavor, flavor  # the key of a cloudpickled PythonModel
    assert flavor.get("model_code_path"), flavor
    assert (root / Path(flavor["model_code_path"]).name).is_file()
    assert {"candidate", "tokenizer"} <= set(flavor.get("artifacts", {})), flavor


def test_the_promoted_embedding_champion_loads_without_unpickling(fault_run: FaultRun, tmp_path: Path) -> None:
    from edgeopt.workloads.text_embedding.workload import EMBEDDINGS_FILE

    sel = fault_run.selection
    assert sel.pick is not None, sel.reason
    ctx, client = fault_run.ctx, fault_run.client()
    cfg = ctx.cfg.model_copy(update={"registry": ctx.cfg.registry.model_copy(update={"model_name": MODEL_NAME})})
    run_id = client.create_run(fault_run.run.experiment_id, run_name="no-pickle").info.run_id
    result = promote(sel, cfg, get_workload(cfg.task), ctx.ws.candidate_dir(sel.pick),
                     fault_run.prepared.base(), run_id, ctx.ws.data_dir, ctx.ws.measurement_dir(sel.pick))
    assert result.promoted, result.reason
    uri = f"models:/{MODEL_NAME}@{cfg.registry.alias}"

    assert_no_pickle_in_model(MODEL_NAME, cfg.registry.alias, tmp_path / "model")
    out, shape = load_without_pickle(fault_run.tracking_uri, uri, TEXTS, tmp_path, "embeddings.npy")
    dim = np.load(ctx.ws.measurement_dir(sel.pick) / EMBEDDINGS_FILE)["fidelity"].shape[1]
    assert shape == [len(TEXTS), dim]
    there = np.load(out, allow_pickle=False)
    here = np.asarray(mlflow.pyfunc.load_model(uri).predict(TEXTS))
    assert there.shape == here.shape == (len(TEXTS), dim)
    cos = np.sum(there * here, axis=1) / (np.linalg.norm(there, axis=1) * np.linalg.norm(here, axis=1))
    assert np.all(cos >= 0.98), cos


@pytest.fixture
def llm_candidate(tmp_path: Path) -> tuple[Path, Path]:
    """A llama.cpp candidate folder: the bundled SmolLM2 dequantized to F16 (a few seconds), its tokenizer."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from edgeopt.results import CandidateRecord
    from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf, dequantize_gguf
    from edgeopt.workloads.causal_lm.reference_model import _tokenizer_from_gguf

    src = bundled_smollm2_gguf()
    cand, tok = tmp_path / "candidate", tmp_path / "tokenizer"
    cand.mkdir()
    dequantize_gguf(src, cand / "model.gguf", "f16")
    CandidateRecord(name="gguf-f16", recipe="gguf-dequantize", framework="llama.cpp", parent=None, options={},
                    format="gguf", runtime="llamacpp", precision="f16", model_file="model.gguf",
                    cache_key="test", base_sha256="test", build_seconds=0.0).write(cand / "candidate.json")
    _tokenizer_from_gguf(src, tok)
    return cand, tok


def test_the_causal_lm_pyfunc_loads_without_unpickling(llm_candidate: tuple[Path, Path], tmp_path: Path) -> None:
    """The text-generation code model, logged as promote() logs it (no pipeline run: a hand-made candidate)."""
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    try:
        client = mlflow.MlflowClient()
        experiment = client.create_experiment("no-pickle-llm", artifact_location=(tmp_path / "mlruns").as_uri())
        cand, tok = llm_candidate
        with mlflow.start_run(experiment_id=experiment):
            info = log_served_model(get_workload("causal-lm"), cand, {"tokenizer": tok},
                                    model_config={"threads": 2, "max_new_tokens": 8},
                                    metadata={"candidate": "gguf-f16", "recipe": "gguf-dequantize",
                                              "runtime": "llamacpp"})
        version = mlflow.register_model(info.model_uri, "no-pickle-llm")
        client.set_registered_model_alias("no-pickle-llm", "champion", version.version)
        uri = "models:/no-pickle-llm@champion"

        assert_no_pickle_in_model("no-pickle-llm", "champion", tmp_path / "model")
        out, shape = load_without_pickle(tracking_uri, uri, PROMPTS, tmp_path, "generated.json")
        there = json.loads(out.read_text())
        assert shape == [len(PROMPTS)] and all(isinstance(t, str) and t.strip() for t in there), there
        here = mlflow.pyfunc.load_model(uri)
        assert here.predict(PROMPTS) == there  # greedy: the same continuations
        # CausalLM.load_check reads the served tokenizer through unwrap_python_model(): still the serving class.
        assert type(here.unwrap_python_model()).__name__ == "TextGenerationModel"
    finally:
        mlflow.set_tracking_uri(None)
