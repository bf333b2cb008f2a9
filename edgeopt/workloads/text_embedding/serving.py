"""The promoted text-embedding pyfunc: texts in, L2-normalised embeddings out."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np

from edgeopt.serving import load_candidate_runner, text_inputs
from edgeopt.workloads.text_embedding.embeddings import encode


class TextEmbeddingModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from transformers import AutoTokenizer

        self.runner, _, cfg = load_candidate_runner(context)
        self.max_length = int(cfg.get("max_length", 128))
        self.batch_size = int(cfg.get("batch_size", 32))
        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["tokenizer"])

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> np.ndarray:
        texts = text_inputs(model_input)
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i : i + self.batch_size], padding="longest", truncation=True,
                                 max_length=self.max_length, return_tensors="np")
            out.append(encode(self.runner, enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)))
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


