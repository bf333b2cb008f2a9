"""Evaluation data of a causal-lm pipeline: held-out text, its token windows and the reference's predictions.

`build_text_windows` writes one folder (the prepare stage's DVC output, so it is versioned):

    eval.txt                   held-out evaluation text (paragraphs joined by blank lines)
    calibration.txt            disjoint text for calibration (imatrix), no paragraph of it is in eval.txt
    tokens.npz                 eval [windows, window_tokens] and calibration [m, window_tokens] int64 token ids
    windows.jsonl              one row per eval window: index, token offset, decoded text (validation, MLflow)
    calibration_windows.jsonl  the same for the calibration windows
    reference_logprobs.npy     float16 [windows, window_tokens, vocab] next-token log-probabilities of the reference
    text_windows.json          manifest: settings, tokenizer, reference runtime and perplexity, cache key

The reference's log-probabilities are computed once here, so every candidate is scored against the same
numbers. They are stored as log-softmax in float16, not as raw logits: near log p = 0, where the probability
mass is, float16 keeps 11 significant bits; measured on 4 x 256 windows the storage adds a KLD of 3e-7 (the F16
GGUF's own KLD is 4e-6). Raw float16 logits (|logit| up to ~40) would add ~4e-5.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import UserError
from edgeopt.io.atomic import atomic_dir
from edgeopt.io.jsonl import write_jsonl
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import EvalDataSummary
from edgeopt.workloads.causal_lm import TextWindowsData

EVAL_TEXT = "eval.txt"
CALIBRATION_TEXT = "calibration.txt"
TOKENS_FILE = "tokens.npz"
WINDOWS_FILE = "windows.jsonl"
CALIBRATION_WINDOWS_FILE = "calibration_windows.jsonl"
REFERENCE_FILE = "reference_logprobs.npy"
MANIFEST = "text_windows.json"
FILES = (EVAL_TEXT, CALIBRATION_TEXT, TOKENS_FILE, WINDOWS_FILE, CALIBRATION_WINDOWS_FILE, REFERENCE_FILE)

N_CALIBRATION_WINDOWS = 8
CHARS_PER_TOKEN = 6  # a generous estimate for English prose and code: decides how much text calibration takes
DATA_VERSION = "1"  # bump when the windows or the reference change for the same settings
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")


def is_text_windows(data_dir: Path) -> bool:
    return (Path(data_dir) / MANIFEST).is_file()


def paragraphs(text: str) -> list[str]:
    """Non-blank blocks of text between blank lines, trailing whitespace removed."""
    return [p.rstrip() for p in PARAGRAPH_BREAK.split(text) if p.strip()]


def _units(source: TextWindowsData) -> tuple[list[list[str]], str]:
    """Units of text (a pydoc topic, or a paragraph of the user's file) as paragraph lists, and their origin."""
    if source.source == "pydoc-topics":
        from pydoc_data.topics import topics

        return [paragraphs(topics[k]) for k in sorted(topics)], f"pydoc_data.topics (CPython {sys.version.split()[0]})"
    path = Path(source.source)
    if not path.is_file():
        raise UserError(f"{path}: text file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    units = [[p] for p in paragraphs(text)]
    if not units:
        raise UserError(f"{path}: the text file is empty")
    return units, str(path)


def split_text(units: list[list[str]], calibration_chars: int, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle whole units; calibration takes units until it has `calibration_chars`, evaluation the rest.

    Paragraphs are deduplicated (pydoc topics repeat sections), and no calibration paragraph is ever
    evaluation text.
    """
    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    calibration: list[str] = []
    seen: set[str] = set()
    size = 0
    rest = []
    for i in order:
        if size < calibration_chars:
            for p in units[i]:
                if p not in seen:
                    seen.add(p)
                    calibration.append(p)
                    size += len(p)
        else:
            rest.append(i)
    evaluation = []
    for i in rest:
        for p in units[i]:
            if p not in seen:
                seen.add(p)
                evaluation.append(p)
    return evaluation, calibration


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence stderr for native code that prints there: file descriptor 2, and Python's sys.stderr,
    which llama-cpp-python's log callback writes to."""
    import io
    from contextlib import redirect_stderr

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _Tokenizer:
    """The reference's own tokenizer: llama.cpp's (from the GGUF) when there is one, else transformers'."""

    def __init__(self, gguf: Path | None, tokenizer_dir: Path | None) -> None:
        self.gguf = gguf
        if self.gguf is not None:
            from llama_cpp import Llama

            with _native_stderr_silenced():  # llama.cpp logs context warnings to fd 2 even when not verbose
                self._vocab = Llama(str(self.gguf), vocab_only=True, verbose=False)
            self.name = "llama.cpp (reference.gguf)"
            self.vocab_size = int(self._vocab.n_vocab())
        else:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
            self.name = "transformers (tokenizer/)"
            self.vocab_size = len(self._tok)

    def encode(self, text: str) -> list[int]:
        # No BOS and special tokens as plain text: windows are cut from the middle of a token stream.
        if self.gguf is not None:
            return list(self._vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: np.ndarray) -> str:
        if self.gguf is not None:
            return self._vocab.detokenize([int(i) for i in ids]).decode("utf-8", errors="replace")
        return str(self._tok.decode([int(i) for i in ids]))

    def close(self) -> None:
        if self.gguf is not None:
            self._vocab.close()


def _reference_gguf(base: BaseModelInfo) -> Path | None:
    """The GGUF that is the reference (a GGUF source's F32 copy); an HF source's converted GGUF is not."""
    return base.variants.get("gguf") if base.format == "gguf" else None


def _reference_logits_fn(base: BaseModelInfo, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """Logits of the reference for a batch of windows, and a description of how they were computed."""
    from edgeopt.workloads.causal_lm.logits import hf_logits, llamacpp_logits

    gguf_path = _reference_gguf(base)
    if gguf_path is not None:
        # F32 weights and an F32 KV cache: the reference carries no rounding of its own.
        return (lambda w: llamacpp_logits(gguf_path, w, threads=threads, kv_cache="f32"),
                {"model": gguf_path.name, "runtime": "llama.cpp", "weights": "F32", "kv_cache": "F32"})
    hf_dir = base.variants["hf"]
    return (lambda w: hf_logits(hf_dir, w, threads=threads),
            {"model": "hf/", "runtime": "transformers", "weights": "float32", "kv_cache": "none"})


def _write_reference(path: Path, windows: np.ndarray, logits_fn: Callable[[np.ndarray], np.ndarray],
                     chunk: int = 4) -> tuple[float, int]:
    """Write float16 log-probs [N, T, V] chunk by chunk; return (reference perplexity, vocab size)."""
    from edgeopt.workloads.causal_lm.quality import log_softmax

    out = None
    nll, count = 0.0, 0
    for start in range(0, len(windows), chunk):
        part = windows[start : start + chunk]
        logits = logits_fn(part)
        if out is None:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16,
                                            shape=(len(windows), windows.shape[1], logits.shape[-1]))
        for j, (lg, ids) in enumerate(zip(logits, part, strict=True)):
            lp = log_softmax(lg)
            out[start + j] = lp.astype(np.float16)
            nll -= float(lp[np.arange(len(ids) - 1), ids[1:]].sum())
            count += len(ids) - 1
    assert out is not None
    vocab = int(out.shape[-1])
    out.flush()
    del out
    return float(np.exp(nll / count)), vocab


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode() + b"\0")
        with (folder / name).open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _summary(manifest: dict[str, Any]) -> EvalDataSummary:
    return EvalDataSummary(kind="text-windows", source=manifest["source"], seed=manifest["seed"], n_pairs=0,
                           n_sentences=manifest["windows"], n_calibration=manifest["calibration_windows"],
                           files=list(FILES), sha256=manifest["sha256"])


@dataclass(frozen=True)
class _Split:
    origin: str
    eval_text: str
    calib_text: str
    eval_ids: np.ndarray
    calib_ids: np.ndarray
    available: int  # whole evaluation windows the held-out text gives
    calibration_windows: int


def _tokenized_split(source: TextWindowsData, tok: _Tokenizer) -> _Split:
    """Split the text into evaluation and calibration parts and tokenize both; refuse too little text."""
    n, t = source.windows, source.window_tokens
    units, origin = _units(source)
    evaluation, calibration = split_text(units, N_CALIBRATION_WINDOWS * t * CHARS_PER_TOKEN, source.seed)
    eval_text, calib_text = "\n\n".join(evaluation), "\n\n".join(calibration)
    eval_ids = np.asarray(tok.encode(eval_text), dtype=np.int64)
    calib_ids = np.asarray(tok.encode(calib_text), dtype=np.int64)
    available = len(eval_ids) // t
    if available < n:
        raise UserError(f"{origin}: the held-out text gives {len(eval_ids)} tokens, fewer than "
                        f"data.windows x data.window_tokens = {n} x {t}")
    m = min(N_CALIBRATION_WINDOWS, len(calib_ids) // t)
    if m < 1:
        raise UserError(f"{origin}: too little text for a calibration window of {t} tokens")
    return _Split(origin, eval_text, calib_text, eval_ids, calib_ids, available, m)


def check_text_windows(source: TextWindowsData, gguf: Path | None, tokenizer_dir: Path | None) -> None:
    """Preflight: is the text long enough for the windows asked for, with the model's own tokenizer?
    The same split and count as `build_text_windows`, without the reference logits."""
    tok = _Tokenizer(gguf, tokenizer_dir)
    try:
        _tokenized_split(source, tok)
    finally:
        tok.close()


def build_text_windows(source: TextWindowsData, out_dir: Path, base: BaseModelInfo,
                       threads: int | None = None) -> EvalDataSummary:
    """Build (or reuse, when the settings and the reference model are unchanged) the data folder."""
    out_dir = Path(out_dir)
    key = hashlib.sha256(json.dumps([DATA_VERSION, source.model_dump(mode="json"), base.sha256],
                                    sort_keys=True).encode()).hexdigest()[:24]
    if (out_dir / MANIFEST).is_file():
        try:
            manifest = json.loads((out_dir / MANIFEST).read_text())
        except json.JSONDecodeError:
            manifest = {}
        if manifest.get("key") == key and all((out_dir / f).is_file() for f in FILES):
            return _summary(manifest)

    threads = threads or max(1, min(os.cpu_count() or 1, 8))
    n, t = source.windows, source.window_tokens
    tok = _Tokenizer(_reference_gguf(base), base.tokenizer_dir)
    try:
        split = _tokenized_split(source, tok)
        eval_text, calib_text, eval_ids, calib_ids = split.eval_text, split.calib_text, split.eval_ids, split.calib_ids
        origin, available, m = split.origin, split.available, split.calibration_windows
        # Windows spread over the whole held-out text, in text order.
        starts = sorted(random.Random(source.seed).sample(range(available), n))
        windows = np.stack([eval_ids[s * t : (s + 1) * t] for s in starts])
        calib_windows = calib_ids[: m * t].reshape(m, t)
        window_rows = [{"window": i, "start_token": s * t, "n_tokens": t, "text": tok.decode(w)}
                       for i, (s, w) in enumerate(zip(starts, windows, strict=True))]
        calib_rows = [{"window": i, "start_token": i * t, "n_tokens": t, "text": tok.decode(w)}
                      for i, w in enumerate(calib_windows)]
        tokenizer_name, vocab_size = tok.name, tok.vocab_size
    finally:
        tok.close()

    with atomic_dir(out_dir) as tmp:
        (tmp / EVAL_TEXT).write_text(eval_text + "\n", encoding="utf-8")
        (tmp / CALIBRATION_TEXT).write_text(calib_text + "\n", encoding="utf-8")
        np.savez(tmp / TOKENS_FILE, eval=windows, calibration=calib_windows)
        write_jsonl(tmp / WINDOWS_FILE, window_rows)
        write_jsonl(tmp / CALIBRATION_WINDOWS_FILE, calib_rows)
        logits_fn, how = _reference_logits_fn(base, threads)
        ppl, vocab = _write_reference(tmp / REFERENCE_FILE, windows, logits_fn)
        manifest = {
            "key": key, "kind": "text-windows", "source": origin, "seed": source.seed,
            "windows": n, "window_tokens": t, "calibration_windows": m,
            "eval_chars": len(eval_text), "calibration_chars": len(calib_text),
            "tokenizer": tokenizer_name, "tokenizer_vocab": vocab_size, "vocab_size": vocab,
            "reference": {**how, "base_sha256": base.sha256, "perplexity": ppl,
                          "stored_as": "float16 log-softmax"},
            "files": list(FILES), "sha256": _digest(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return _summary(manifest)


# -- readers (tokenize stage, validation, serving checks) ------------------------------------------------------


def load_manifest(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{data_dir}: not text-windows evaluation data (no {MANIFEST}); run the prepare stage")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def load_tokens(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(eval windows, calibration windows), int64."""
    path = Path(data_dir) / TOKENS_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing; run the prepare stage")
    with np.load(path) as z:
        return z["eval"].astype(np.int64), z["calibration"].astype(np.int64)


def load_reference(data_dir: Path, mmap: bool = True) -> np.ndarray:
    path = Path(data_dir) / REFERENCE_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing; run the prepare stage")
    return np.load(path, mmap_mode="r" if mmap else None)


def probe_text(data_dir: Path, max_chars: int = 240) -> str:
    """A fixed prompt from the held-out text: its first prose-like paragraph, cut at a word boundary."""
    text = (Path(data_dir) / EVAL_TEXT).read_text(encoding="utf-8")
    paras = paragraphs(text)
    para = next((p for p in paras if len(p) >= 40 and p[0].isalpha()), paras[0])
    para = " ".join(para.split())
    if len(para) <= max_chars:
        return para
    cut = para[:max_chars]
    return cut[: cut.rfind(" ")] if " " in cut else cut
