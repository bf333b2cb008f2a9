"""Evaluation token windows and next-token logits from llama.cpp (GGUF) and transformers (HF folder).

Both functions return float32 arrays [n_windows, seq, vocab]; position t holds the logits after tokens 0..t.
Every window is evaluated from an empty KV cache, with no BOS added (this tokenizer's add_bos_token is false).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

TokenWindows = npt.NDArray[np.int64]
Logits = npt.NDArray[np.float32]


def offline_text() -> str:
    """Plain English/Python prose that ships with CPython (pydoc's topic help), in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def llamacpp_tokenize(gguf_path: Path, text: str) -> list[int]:
    """Token ids from the GGUF's own tokenizer (vocab only is loaded), no BOS, special tokens as plain text."""
    from llama_cpp import Llama

    vocab = Llama(str(gguf_path), vocab_only=True, verbose=False)
    try:
        return list(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    finally:
        vocab.close()


def token_windows(gguf_path: Path, n_windows: int, seq_len: int, text: str | None = None) -> TokenWindows:
    """The first n_windows consecutive, non-overlapping seq_len-token windows of text (default offline_text())."""
    text = offline_text() if text is None else text
    need = n_windows * seq_len
    chars = need * 8  # tokenize only a prefix: English/code averages ~4 chars per token here
    while True:
        ids = llamacpp_tokenize(gguf_path, text[:chars])
        if len(ids) > need or chars >= len(text):
            break
        chars *= 2
    if len(ids) < need:
        raise ValueError(f"text gives {len(ids)} tokens, fewer than {n_windows} x {seq_len}")
    return np.asarray(ids[:need], dtype=np.int64).reshape(n_windows, seq_len)


def llamacpp_logits(
    gguf_path: Path, windows: TokenWindows, threads: int = 2, kv_cache: Literal["f16", "f32"] = "f16"
) -> Logits:
    """Logits for every position of every window, one llama.cpp decode per window (n_ctx = window length).

    kv_cache="f16" is llama.cpp's default (what a deployment runs); "f32" removes the KV rounding, which is
    what separates llama.cpp from an F32 transformers run (max |Δlogit| 0.03 with f16, 1e-4 with f32).
    """
    import llama_cpp
    from llama_cpp import Llama

    kv_type = {"f16": llama_cpp.GGML_TYPE_F16, "f32": llama_cpp.GGML_TYPE_F32}[kv_cache]
    n_windows, seq = windows.shape
    llm = Llama(
        str(gguf_path),
        n_ctx=seq,
        n_batch=seq,
        n_ubatch=seq,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=True,
        type_k=kv_type,
        type_v=kv_type,
        verbose=False,
    )
    try:
        out = np.empty((n_windows, seq, llm.n_vocab()), dtype=np.float32)
        for i, window in enumerate(windows):
            llm.reset()
            llm.eval([int(t) for t in window])
            out[i] = llm.scores[:seq]
        return out
    finally:
        llm.close()


def hf_logits(hf_dir: Path, windows: TokenWindows, threads: int | None = 2, batch_size: int = 4) -> Logits:
    """Logits from `AutoModelForCausalLM` in float32 on CPU, batch_size windows per forward pass."""
    import torch
    from transformers import AutoModelForCausalLM

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True).float().eval()
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(windows), batch_size):
                ids = torch.from_numpy(np.ascontiguousarray(windows[start : start + batch_size]))
                chunks.append(model(input_ids=ids).logits.float().numpy())
        return np.concatenate(chunks).astype(np.float32, copy=False)
    finally:
        torch.set_num_threads(previous_threads)
