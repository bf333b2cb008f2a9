"""The text-embedding task's MLX form: a BERT encoder re-implemented in mlx.core/mlx.nn.

Embeddings -> encoder layers -> mean pooling over real tokens -> L2 norm, with parameter names that mirror
Hugging Face's BERT, so a checkpoint's safetensors load as they are. It is a re-implementation of one
architecture: any other encoder is refused with the reason. Imported only where an MLX form is asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from pydantic import BaseModel, ConfigDict

from edgeopt.errors import CandidateError
from edgeopt.iospec import IOSpec
from edgeopt.workloads.text_embedding.model import text_io_spec

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
# Candidate folders of the first mlx-convert carry no config.json: the BERT shape is under "bert" in this file.
LEGACY_CONFIG = "mlx_config.json"
# HF BERT tensors the encoder does not use (pooler head, the position-id buffer).
_UNUSED_PREFIXES = ("pooler.", "embeddings.position_ids")


class BertShape(BaseModel):
    """The fields of a Hugging Face BertConfig this encoder uses."""

    model_config = ConfigDict(extra="ignore")

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    position_embedding_type: str = "absolute"
    model_type: str = "bert"


def check_supported(shape: BertShape) -> None:
    problems = []
    if shape.model_type != "bert":
        problems.append(f"model_type {shape.model_type!r}")
    if shape.hidden_act != "gelu":
        problems.append(f"hidden_act {shape.hidden_act!r}")
    if shape.position_embedding_type != "absolute":
        problems.append(f"position_embedding_type {shape.position_embedding_type!r}")
    if shape.hidden_size % shape.num_attention_heads:
        problems.append("hidden_size not divisible by num_attention_heads")
    if problems:
        raise CandidateError(f"the MLX form supports plain BERT encoders only, not {', '.join(problems)}")


def read_shape(model_dir: Path) -> BertShape:
    """The BERT shape of a Hugging Face folder (config.json), or of an early mlx-convert candidate folder."""
    path = model_dir / HF_CONFIG
    try:
        if path.is_file() or not (model_dir / LEGACY_CONFIG).is_file():
            return BertShape.model_validate_json(path.read_text())
        return BertShape.model_validate(json.loads((model_dir / LEGACY_CONFIG).read_text())["bert"])
    except (OSError, ValueError, KeyError) as exc:
        raise CandidateError(f"cannot read the BERT config of {model_dir}: {exc}") from exc


class SelfAttention(nn.Module):
    def __init__(self, h: int) -> None:
        super().__init__()
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)


class Dense(nn.Module):
    """HF's "*.output": dense + residual LayerNorm."""

    def __init__(self, n_in: int, h: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, h)
        self.LayerNorm = nn.LayerNorm(h, eps=eps)


class Attention(nn.Module):
    def __init__(self, h: int, eps: float) -> None:
        super().__init__()
        self.self = SelfAttention(h)
        self.output = Dense(h, h, eps)


class Intermediate(nn.Module):
    def __init__(self, h: int, n: int) -> None:
        super().__init__()
        self.dense = nn.Linear(h, n)


class Layer(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        h, eps = shape.hidden_size, shape.layer_norm_eps
        self.heads = shape.num_attention_heads
        self.attention = Attention(h, eps)
        self.intermediate = Intermediate(h, shape.intermediate_size)
        self.output = Dense(shape.intermediate_size, h, eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        b, n, h = x.shape
        heads = self.heads
        sa = self.attention.self

        def split(t: mx.array) -> mx.array:
            return t.reshape(b, n, heads, h // heads).transpose(0, 2, 1, 3)

        ctx = mx.fast.scaled_dot_product_attention(
            split(sa.query(x)), split(sa.key(x)), split(sa.value(x)), scale=(h // heads) ** -0.5, mask=mask
        )
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, n, h)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(ctx))
        # nn.gelu is the exact (erf) GELU, as HF's "gelu".
        y = self.output.dense(nn.gelu(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + y)


class Embeddings(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        h = shape.hidden_size
        self.word_embeddings = nn.Embedding(shape.vocab_size, h)
        self.position_embeddings = nn.Embedding(shape.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=shape.layer_norm_eps)


class Encoder(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.layer = [Layer(shape) for _ in range(shape.num_hidden_layers)]


class SentenceBert(nn.Module):
    """(input_ids, attention_mask) int32 [batch, sequence] -> L2-normalised mean-pooled float32 [batch, hidden]."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.embeddings = Embeddings(shape)
        self.encoder = Encoder(shape)

    def __call__(self, input_ids: mx.array, attention_mask: mx.array) -> mx.array:
        e = self.embeddings
        n = input_ids.shape[1]
        # Single-segment input: every token has token type 0.
        x = e.word_embeddings(input_ids) + e.position_embeddings(mx.arange(n)) + e.token_type_embeddings(
            mx.zeros((1, n), dtype=mx.int32)
        )
        x = e.LayerNorm(x)
        keep = attention_mask.astype(mx.bool_)
        mask = keep[:, None, None, :]  # boolean: padded keys get no attention
        for layer in self.encoder.layer:
            x = layer(x, mask)
        # Mean pooling over real tokens, then L2 norm, in float32 whatever the model dtype.
        w = keep.astype(mx.float32)[:, :, None]
        pooled = (x.astype(mx.float32) * w).sum(axis=1) / mx.maximum(w.sum(axis=1), 1e-9)
        return pooled / mx.maximum(mx.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def hf_weights(model_dir: Path) -> dict[str, Any]:
    """The checkpoint's encoder tensors, keyed as SentenceBert's parameters."""
    path = model_dir / HF_WEIGHTS
    if not path.is_file():
        raise CandidateError(f"the MLX form needs {path} (single-file safetensors weights)")
    raw = mx.load(str(path))
    if not isinstance(raw, dict):
        raise CandidateError(f"{path} did not load as a dict of tensors")
    weights = {}
    for name, value in raw.items():
        key = name.removeprefix("bert.")  # BertFor* checkpoints nest the encoder under "bert."
        if not key.startswith(_UNUSED_PREFIXES):
            weights[key] = value
    return weights


def mlx_module(model_dir: Path, weights: bool = True) -> tuple[SentenceBert, IOSpec]:
    """The MLX sentence encoder of a BERT folder and its I/O spec (the torch form's names and dtypes).

    weights: load the folder's Hugging Face weights, strictly (every encoder tensor, with HF's shape);
    False: the architecture only, for a caller that loads converted MLX weights itself.
    """
    model_dir = Path(model_dir)
    shape = read_shape(model_dir)
    check_supported(shape)
    model = SentenceBert(shape)
    if weights:
        try:
            model.load_weights(list(hf_weights(model_dir).items()), strict=True)
        except ValueError as exc:  # mlx names the missing, unexpected or mis-shaped tensor
            raise CandidateError(f"the weights of {model_dir} do not fit the MLX BERT: {exc}") from exc
    return model, text_io_spec(shape.hidden_size)
