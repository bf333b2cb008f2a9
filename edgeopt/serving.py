"""The promoted model as an MLflow pyfunc: text in; L2-normalised embeddings or generated text out.

MLflow has no flavour for OpenVINO IR, and its ONNX flavour takes token tensors, not text, so
every runtime is wrapped the same way: the candidate folder and the tokenizer are artifacts and
the runtime adapter that measured the candidate also serves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np


class TextEmbeddingModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from transformers import AutoTokenizer

        from edgeopt.environment import quiet_offline_defaults
        from edgeopt.recipes import get_runtime
        from edgeopt.results import CandidateRecord

        quiet_offline_defaults()
        candidate = Path(context.artifacts["candidate"])
        record = CandidateRecord.model_validate_json((candidate / "candidate.json").read_text())
        cfg = context.model_config or {}
        self.max_length = int(cfg.get("max_length", 128))
        self.batch_size = int(cfg.get("batch_size", 32))
        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["tokenizer"])
        self.runner = get_runtime(record.runtime)(candidate, record.model_file, record.details,
                                                  int(cfg.get("threads", 2)))

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> np.ndarray:
        texts = _texts(model_input)
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i : i + self.batch_size], padding="longest", truncation=True,
                                 max_length=self.max_length, return_tensors="np")
            out.append(self.runner.encode(enc["input_ids"].astype(np.int64),
                                          enc["attention_mask"].astype(np.int64)))
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, str):
        return [model_input]
    try:
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            col = "text" if "text" in model_input.columns else model_input.columns[0]
            return [str(t) for t in model_input[col].tolist()]
        if isinstance(model_input, pd.Series):
            return [str(t) for t in model_input.tolist()]
    except ImportError:  # pragma: no cover
        pass
    return [str(t) for t in model_input]


class TextGenerationModel(mlflow.pyfunc.PythonModel):
    """Prompt strings in, greedy continuations out (causal-lm), through the runtime that was measured.

    A GGUF pick is served by llama.cpp from its own file; the tokenizer artifact turns text into the same
    token ids the measurement used. Generation stops at the first end-of-sequence token or after
    `max_new_tokens` (params, else model_config, else 32).
    """

    def load_context(self, context: Any) -> None:
        import json

        from transformers import AutoTokenizer

        from edgeopt.environment import quiet_offline_defaults
        from edgeopt.recipes import get_runtime
        from edgeopt.results import CandidateRecord
        from edgeopt.workloads.causal_lm import DEFAULT_MAX_NEW_TOKENS

        quiet_offline_defaults()
        candidate = Path(context.artifacts["candidate"])
        record = CandidateRecord.model_validate_json((candidate / "candidate.json").read_text())
        cfg = context.model_config or {}
        self.max_new_tokens = int(cfg.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["tokenizer"], local_files_only=True)
        eos = {self.tokenizer.eos_token_id}
        gen_config = candidate / "generation_config.json"
        if gen_config.is_file():  # HF models may list several end tokens
            value = json.loads(gen_config.read_text()).get("eos_token_id")
            eos |= set(value) if isinstance(value, list) else {value}
        self.eos_ids = {int(t) for t in eos if t is not None}
        self.runner = get_runtime(record.runtime)(candidate, record.model_file, record.details,
                                                  int(cfg.get("threads", 2)))

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        from edgeopt.workloads.causal_lm import encode_prompt, until_eos

        n = int((params or {}).get("max_new_tokens", self.max_new_tokens))
        out = []
        for text in _texts(model_input):
            gen = self.runner.generate(encode_prompt(self.tokenizer, text), n)
            out.append(str(self.tokenizer.decode(until_eos(gen.token_ids, self.eos_ids), skip_special_tokens=True)))
        return out
