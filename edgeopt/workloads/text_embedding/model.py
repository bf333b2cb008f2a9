"""The text-embedding task's PyTorch form: a Hugging Face encoder + mean pooling + L2 normalisation.

What the torch runtime runs and what the exporters (ONNX, Olive) trace. torch and transformers are
imported inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.iospec import Feed, IOSpec, TensorSpec
from edgeopt.workloads.text_embedding.embeddings import EMBEDDING_OUTPUT

if TYPE_CHECKING:
    import torch

    from edgeopt.workloads.base import TorchForm

INPUT_NAMES = ("input_ids", "attention_mask")


def text_io_spec(hidden_size: int) -> IOSpec:
    """(input_ids, attention_mask) int64 [batch, sequence] -> sentence_embedding float32 [batch, hidden]."""
    tokens = ("batch", "sequence")
    return IOSpec(
        inputs=tuple(TensorSpec(name, "int64", tokens) for name in INPUT_NAMES),
        outputs=(TensorSpec(EMBEDDING_OUTPUT, "float32", ("batch", hidden_size)),),
    )


def example_feed() -> Feed:
    """The tracing example: a padded second row, so the trace records the general attention-mask path.

    Token values do not matter to the trace; small ids fit any vocabulary.
    """
    return {
        "input_ids": np.array([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 0, 0, 0, 0, 0]], dtype=np.int64),
        "attention_mask": np.array([[1] * 8, [1, 1, 1, 0, 0, 0, 0, 0]], dtype=np.int64),
    }


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


def torch_form(model_dir: Path | str, for_export: bool = False) -> TorchForm:
    """The SentenceEncoder of a Hugging Face folder, its I/O spec and the tracing example.

    for_export: "eager" attention, the pattern onnxruntime's transformer optimizer fuses; else "sdpa".
    """
    from edgeopt.workloads.base import TorchForm

    module = sentence_encoder(model_dir, attn_implementation="eager" if for_export else "sdpa")
    hidden = getattr(getattr(module.backbone, "config", None), "hidden_size", None)
    if not isinstance(hidden, int):
        raise CandidateError(f"{model_dir}: config.json has no integer hidden_size")
    return TorchForm(module=module, io_spec=text_io_spec(hidden), example=example_feed())
