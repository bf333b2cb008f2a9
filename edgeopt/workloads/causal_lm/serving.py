"""The promoted causal-lm pyfunc: prompt strings in, greedy continuations out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

from edgeopt.serving import load_candidate_runner, text_inputs
from edgeopt.workloads.causal_lm.workload import DEFAULT_MAX_NEW_TOKENS, encode_prompt, until_eos


class TextGenerationModel(mlflow.pyfunc.PythonModel):
    """Prompt strings in, greedy continuations out (causal-lm), through the runtime that was measured.

    A GGUF pick is served by llama.cpp from its own file; the tokenizer artifact turns text into the same
    token ids the measurement used. Generation stops at the first end-of-sequence token or after
    `max_new_tokens` (params, else model_config, else 32).
    """

    def load_context(self, context: Any) -> None:
        import json

        from transformers import AutoTokenizer

        self.runner, _, cfg = load_candidate_runner(context)
        candidate = Path(context.artifacts["candidate"])
        self.max_new_tokens = int(cfg.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["tokenizer"], local_files_only=True)
        eos = {self.tokenizer.eos_token_id}
        gen_config = candidate / "generation_config.json"
        if gen_config.is_file():  # HF models may list several end tokens
            value = json.loads(gen_config.read_text()).get("eos_token_id")
            eos |= set(value) if isinstance(value, list) else {value}
        self.eos_ids = {int(t) for t in eos if t is not None}

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        n = int((params or {}).get("max_new_tokens", self.max_new_tokens))
        out = []
        for text in text_inputs(model_input):
            gen = self.runner.generate(encode_prompt(self.tokenizer, text), n)
            out.append(str(self.tokenizer.decode(until_eos(gen.token_ids, self.eos_ids), skip_special_tokens=True)))
        return out
