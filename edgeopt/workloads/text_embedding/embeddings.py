"""Token arrays in, sentence embeddings out, through any named-tensor runtime.

The one place the task's pre- and post-processing lives: the feed a BERT-style graph declares
(token_type_ids are zeros for single sentences), and, for a graph that returns token states
(`last_hidden_state` of a user's ONNX export), mean pooling over real tokens; then L2 normalisation,
which is idempotent for graphs that already pool and normalise (the project's own exports).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.iospec import Feed, IOSpec

EMBEDDING_OUTPUT = "sentence_embedding"  # the output name of the project's own exports


def token_feed(spec: IOSpec, input_ids: np.ndarray, attention_mask: np.ndarray) -> Feed:
    """The inputs `spec` declares, from token ids and mask, each in its declared dtype."""
    available = {"input_ids": input_ids, "attention_mask": attention_mask}
    feed: Feed = {}
    for t in spec.inputs:
        if t.name in available:
            feed[t.name] = np.ascontiguousarray(available[t.name], dtype=np.dtype(t.dtype))
        elif t.name == "token_type_ids":
            feed[t.name] = np.zeros(np.shape(input_ids), dtype=np.dtype(t.dtype))
        else:
            raise CandidateError(f"the model needs an input text-embedding cannot supply: {t.name!r}")
    return feed


def embedding_output(spec: IOSpec) -> str:
    return EMBEDDING_OUTPUT if EMBEDDING_OUTPUT in spec.output_names else spec.output_names[0]


def pool(out: np.ndarray, attention_mask: np.ndarray, name: str) -> np.ndarray:
    """[batch, dim] embeddings, or [batch, tokens, dim] states mean-pooled over real tokens; L2-normalised."""
    out = np.asarray(out, dtype=np.float32)
    if out.ndim == 3:
        mask = np.asarray(attention_mask, dtype=np.float32)[:, :, None]
        out = (out * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    elif out.ndim != 2:
        raise CandidateError(f"unexpected output rank {out.ndim} from {name!r}")
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    return (out / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)


def encode(runner: Any, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """L2-normalised sentence embeddings, float32 [batch, dim], from any TensorRunner."""
    spec: IOSpec = runner.io_spec
    name = embedding_output(spec)
    out = runner.run(token_feed(spec, input_ids, attention_mask))[name]
    return pool(out, attention_mask, name)


def encode_all(runner: Any, ids: np.ndarray, mask: np.ndarray, batch: int) -> np.ndarray:
    parts = [encode(runner, ids[i : i + batch], mask[i : i + batch]) for i in range(0, len(ids), batch)]
    return np.concatenate(parts).astype(np.float32)
