"""PyTorch eager: the FP32 reference candidate, and the sentence-embedding module other exporters trace.

torch and transformers are imported inside functions so importing this module only registers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.recipes import (
    BuildContext,
    BuildOutput,
    NoOptions,
    Recipe,
    register_recipe,
    register_runtime,
)

if TYPE_CHECKING:
    import torch

# Files of a Hugging Face folder that define the model itself (the tokenizer lives in base.tokenizer_dir).
_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.safetensors"
_SHARD_INDEX = "model.safetensors.index.json"


def sentence_encoder(hf_dir: Path | str, attn_implementation: str = "sdpa") -> torch.nn.Module:
    """Build a module mapping (input_ids, attention_mask) to L2-normalised mean-pooled embeddings.

    attn_implementation: "sdpa" is fastest in eager torch; "eager" exports to the plain
    MatMul/Softmax pattern that onnxruntime's transformer optimizer fuses into Attention.
    """
    # Defined here so that torch is imported only when a model is actually built.
    import torch
    from transformers import AutoModel

    class SentenceEncoder(torch.nn.Module):
        def __init__(self, backbone: torch.nn.Module) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # token_type_ids are all zeros for single sentences; passing them explicitly keeps
            # them out of the exported graph's inputs.
            token_type_ids = torch.zeros_like(input_ids)
            hidden = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            pooled = summed / counts
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1).to(torch.float32)

    try:
        # use_safetensors=True: refuse pickled .bin weights, loading must never unpickle.
        backbone = AutoModel.from_pretrained(
            str(hf_dir),
            use_safetensors=True,
            dtype=torch.float32,
            attn_implementation=attn_implementation,
            local_files_only=True,
        )
    except Exception as exc:  # transformers raises many types (OSError, ValueError, ...)
        raise CandidateError(f"cannot load Hugging Face model from {hf_dir}: {exc}") from exc
    return SentenceEncoder(backbone).eval()


def _build_torch_eager(ctx: BuildContext) -> BuildOutput:
    if ctx.parent is not None:
        raise CandidateError("torch-eager builds from the base model only")
    if ctx.base.format != "hf":
        raise CandidateError(f"torch-eager needs a Hugging Face base model, got format {ctx.base.format!r}")
    src = Path(ctx.base.path)
    if not (src / _CONFIG_FILE).is_file():
        raise CandidateError(f"{src} has no {_CONFIG_FILE}")
    if (src / _WEIGHTS_FILE).is_file():
        weights = [_WEIGHTS_FILE]
        model_file = _WEIGHTS_FILE
    elif (src / _SHARD_INDEX).is_file():
        weights = [_SHARD_INDEX, *sorted(p.name for p in src.glob("model-*.safetensors"))]
        model_file = _SHARD_INDEX
    else:
        raise CandidateError(f"{src} has no safetensors weights (pickled .bin weights are not loaded)")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    for name in [_CONFIG_FILE, *weights]:
        shutil.copy2(src / name, ctx.out_dir / name)
    return BuildOutput(
        format="hf",
        runtime="torch",
        precision="fp32",
        model_file=model_file,
        details={"files": [_CONFIG_FILE, *weights]},
    )


register_recipe(
    Recipe(
        name="torch-eager",
        framework="torch",
        options_model=NoOptions,
        accepts=("base",),
        base_formats=("hf",),
        build=_build_torch_eager,
        description="The base Hugging Face model run as-is in PyTorch eager (FP32 reference).",
    )
)


class TorchRunner:
    """Runs a SentenceEncoder under inference_mode with a fixed thread count."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        import torch

        self._torch = torch
        self._threads = threads
        torch.set_num_threads(threads)
        self._model = sentence_encoder(model_dir)

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        # Set per call too: another adapter in the same process may have changed it.
        torch.set_num_threads(self._threads)
        with torch.inference_mode():
            out = self._model(
                torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64)),
            )
        return out.numpy().astype(np.float32, copy=False)

    def runtime_info(self) -> dict[str, Any]:
        torch = self._torch
        return {"torch": torch.__version__, "threads": torch.get_num_threads()}


@register_runtime("torch")
def load_torch(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int) -> TorchRunner:
    # model_file names the safetensors weights; transformers finds them (and config.json) in the folder.
    if not model_file.endswith((".safetensors", _SHARD_INDEX)):
        raise CandidateError(f"the torch runtime loads safetensors weights only, not {model_file!r}")
    if not (Path(candidate_dir) / model_file).is_file():
        raise CandidateError(f"{Path(candidate_dir) / model_file} does not exist")
    return TorchRunner(Path(candidate_dir), threads)
