"""PyTorch eager for causal LMs: the FP32 baseline candidate, run with transformers' KV cache.

The recipe copies the base model's Hugging Face form (for the bundled GGUF: the LlamaForCausalLM exported
from the F32 reference). torch and transformers are imported inside functions.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.recipes import (
    BuildContext,
    BuildOutput,
    Generation,
    NoOptions,
    Recipe,
    Requirements,
    register_recipe,
    register_runtime,
)

RUNTIME = "torch-causal-lm"
_WEIGHTS = "model.safetensors"
_SHARD_INDEX = "model.safetensors.index.json"
_CONFIGS = ("config.json", "generation_config.json")


def _base_hf(ctx: BuildContext) -> Path:
    if ctx.parent is not None:
        raise CandidateError("torch-causal-lm builds from the base model only")
    hf = ctx.base.variants.get("hf") or (ctx.base.path if ctx.base.format == "hf" else None)
    if hf is None:
        reason = ctx.base.details.get("hf_unavailable", "no Hugging Face form was exported")
        raise CandidateError(f"torch-causal-lm: the base model has no Hugging Face form: {reason}")
    return Path(hf)


def _build_torch_causal_lm(ctx: BuildContext) -> BuildOutput:
    src = _base_hf(ctx)
    if (src / _WEIGHTS).is_file():
        weights, model_file = [_WEIGHTS], _WEIGHTS
    elif (src / _SHARD_INDEX).is_file():
        weights = [_SHARD_INDEX, *sorted(p.name for p in src.glob("model-*.safetensors"))]
        model_file = _SHARD_INDEX
    else:
        raise CandidateError(f"{src} has no safetensors weights (pickled weights are never loaded)")
    files = [f for f in _CONFIGS if (src / f).is_file()] + weights
    for name in files:
        shutil.copy2(src / name, ctx.out_dir / name)
    base_lineage = {k: ctx.base.details[k] for k in ("source", "source_file_type", "reference", "hf_export")
                    if k in ctx.base.details}
    return BuildOutput(format="hf", runtime=RUNTIME, precision="fp32", model_file=model_file,
                       details={"files": files, "attention": "sdpa", "kv_cache": "transformers DynamicCache, f32",
                                "base": base_lineage})


register_recipe(
    Recipe(
        name="torch-causal-lm",
        framework="torch",
        options_model=NoOptions,
        accepts=("base",),
        base_formats=("hf",),
        build=_build_torch_causal_lm,
        description="The base causal LM in PyTorch eager, FP32, greedy decoding with a KV cache (baseline).",
        requires=Requirements(modules=("torch", "transformers")),
        families=("generation",),
        tasks=("causal-lm",),
    )
)


class TorchCausalLMRunner:
    def __init__(self, model_dir: Path, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self._torch = torch
        self._threads = threads
        torch.set_num_threads(threads)
        try:
            self._model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), use_safetensors=True, dtype=torch.float32, attn_implementation="sdpa",
                local_files_only=True,
            ).eval()
        except Exception as exc:  # transformers raises many types (OSError, ValueError, ...)
            raise CandidateError(f"cannot load causal LM from {model_dir}: {exc}") from exc

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        torch = self._torch
        torch.set_num_threads(self._threads)
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64))[None]
        with torch.inference_mode():
            return self._model(input_ids=ids).logits[0].float().numpy()

    def generate(self, prompt_ids: np.ndarray, max_new_tokens: int) -> Generation:
        from edgeopt.adapters.causal_lm_common import timed_greedy

        torch = self._torch
        torch.set_num_threads(self._threads)
        state: dict[str, Any] = {}

        def prefill(ids: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = self._model(input_ids=torch.from_numpy(ids)[None], use_cache=True, logits_to_keep=1)
            state["past"] = out.past_key_values
            return out.logits[0, -1].numpy()

        def step(token: int, _pos: int) -> np.ndarray:
            with torch.inference_mode():
                out = self._model(input_ids=torch.tensor([[token]]), past_key_values=state["past"], use_cache=True)
            state["past"] = out.past_key_values
            return out.logits[0, -1].numpy()

        return timed_greedy(prefill, step, np.asarray(prompt_ids, dtype=np.int64), max_new_tokens)

    def roofline(self) -> dict[str, int]:
        """FP32 weights read once per token (a tied embedding once, as the output head) and the f32 KV cache."""
        model = self._model
        cfg = model.config.get_text_config()
        seen: dict[int, Any] = {p.data_ptr(): p for p in model.parameters()}
        weight_bytes = sum(p.numel() * p.element_size() for p in seen.values())
        matmul = sum(p.numel() for p in seen.values() if p.dim() > 1)
        embed = model.get_input_embeddings().weight
        if not getattr(cfg, "tie_word_embeddings", False):
            weight_bytes -= embed.numel() * embed.element_size()
            matmul -= embed.numel()
        n_heads = int(cfg.num_attention_heads)
        n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
        kv = int(cfg.num_hidden_layers) * 2 * n_kv * head_dim * 4
        return {"weight_bytes": int(weight_bytes), "kv_bytes_per_position": kv, "matmul_params": int(matmul)}

    def runtime_info(self) -> dict[str, Any]:
        import transformers

        return {"torch": self._torch.__version__, "transformers": transformers.__version__,
                "threads": self._torch.get_num_threads(), "dtype": "float32", "attention": "sdpa",
                "kv_cache": "f32"}  # transformers' DynamicCache holds K/V in the model's dtype


@register_runtime(RUNTIME)
def load_torch_causal_lm(candidate_dir: Path, model_file: str, details: dict[str, Any],
                         threads: int) -> TorchCausalLMRunner:
    if not (Path(candidate_dir) / model_file).is_file():
        raise CandidateError(f"{Path(candidate_dir) / model_file} does not exist")
    return TorchCausalLMRunner(Path(candidate_dir), threads)
