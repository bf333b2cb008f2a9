"""A Hugging Face `LlamaForCausalLM` folder from a llama-architecture GGUF (no conversion script needed).

llama.cpp's converter permutes the rows of attn_q / attn_k (interleaved vs. half-split rotary layout); this
module undoes that. Weights are dequantized to float32, so the folder reproduces the GGUF's own numbers.
The tokenizer is rebuilt by transformers from the GGUF tokenizer metadata (`gguf_file=`; needs no accelerate).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgeopt.errors import UserError
from edgeopt.io.atomic import atomic_dir

LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")


def hf_tensor_name(gguf_name: str) -> str:
    """HF LlamaForCausalLM parameter name for a llama GGUF tensor name."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _BLOCK.match(gguf_name)
    if m is None or m.group(2) not in LAYER_NAMES:
        raise UserError(f"GGUF tensor {gguf_name!r} has no LlamaForCausalLM counterpart")
    return f"model.layers.{m.group(1)}.{LAYER_NAMES[m.group(2)]}.weight"


def unpermute_qk(w: Any, n_head: int) -> Any:
    """Undo llama.cpp's Q/K row permutation: rows (head, pair, half) -> (head, half, pair)."""
    rest = w.shape[1:]
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def llama_hparams(reader: Any) -> dict[str, Any]:
    """Model hyper-parameters from a llama GGUF's key-value fields."""
    f = reader.fields
    arch = f["general.architecture"].contents()
    if arch != "llama":
        raise UserError(f"only llama-architecture GGUFs can be exported, not {arch!r}")

    def get(key: str, default: Any = None) -> Any:
        return f[key].contents() if key in f else default

    n_head = int(get("llama.attention.head_count"))
    return {
        "n_layer": int(get("llama.block_count")),
        "n_embd": int(get("llama.embedding_length")),
        "n_ff": int(get("llama.feed_forward_length")),
        "n_head": n_head,
        "n_head_kv": int(get("llama.attention.head_count_kv", n_head)),
        "n_ctx": int(get("llama.context_length", 2048)),
        "rope_theta": float(get("llama.rope.freq_base", 10000.0)),
        "rms_eps": float(get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "n_vocab": len(f["tokenizer.ggml.tokens"].contents()),
        "bos": get("tokenizer.ggml.bos_token_id"),
        "eos": get("tokenizer.ggml.eos_token_id"),
        "pad": get("tokenizer.ggml.padding_token_id"),
        "has_rope_scaling": "llama.rope.scaling.type" in f,
        "tokenizer_pre": get("tokenizer.ggml.pre"),
    }


def hf_config(hp: dict[str, Any], tied: bool) -> dict[str, Any]:
    """config.json contents, readable by transformers 4.5x (rope_theta) and 5.x (rope_parameters)."""
    if hp["has_rope_scaling"]:
        raise UserError("GGUFs with rope scaling are not supported by this exporter")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": hp["n_vocab"],
        "hidden_size": hp["n_embd"],
        "intermediate_size": hp["n_ff"],
        "num_hidden_layers": hp["n_layer"],
        "num_attention_heads": hp["n_head"],
        "num_key_value_heads": hp["n_head_kv"],
        "head_dim": hp["n_embd"] // hp["n_head"],
        "hidden_act": "silu",
        "max_position_embeddings": hp["n_ctx"],
        "rms_norm_eps": hp["rms_eps"],
        "rope_theta": hp["rope_theta"],
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": hp["rope_theta"]},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "bos_token_id": hp["bos"],
        "eos_token_id": hp["eos"],
        "pad_token_id": hp["pad"],
        "torch_dtype": "float32",
        "use_cache": True,
    }


def hf_state_dict(reader: Any, hp: dict[str, Any]) -> dict[str, Any]:
    """float32 numpy arrays under HF names, Q/K un-permuted. No lm_head when the GGUF ties embeddings."""
    import gguf
    import numpy as np

    state: dict[str, Any] = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        w = w.reshape(tuple(int(d) for d in reversed(t.shape)))
        if t.name.endswith(".attn_q.weight"):
            w = unpermute_qk(w, hp["n_head"])
        elif t.name.endswith(".attn_k.weight"):
            w = unpermute_qk(w, hp["n_head_kv"])
        state[hf_tensor_name(t.name)] = np.ascontiguousarray(w)
    return state


def _fix_pre_tokenizer(tok: Any, pre: str | None) -> None:
    """Pre-tokenizers transformers' GGUF converter does not know (it falls back to plain GPT-2 splitting).

    llama.cpp's "smollm" pre-tokenizer splits every digit on its own before the GPT-2 regex, as the original
    SmolLM tokenizer.json does (Digits + ByteLevel). Without it, " 2" after a newline tokenizes differently.
    """
    from tokenizers import pre_tokenizers

    if pre == "smollm":
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )


def _save_tokenizer(src_gguf: Path, out: Path, n_ctx: int, pre: str | None) -> None:
    """Tokenizer rebuilt from the GGUF's tokenizer.ggml.* fields, saved as tokenizer.json + config."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src_gguf.parent, gguf_file=src_gguf.name, local_files_only=True)
    _fix_pre_tokenizer(tok, pre)
    tok.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("is_local", "local_files_only"):  # load-time flags, not tokenizer properties
        cfg.pop(key, None)
    # transformers 5 writes its own class name; the fast-tokenizer name loads in both 4.5x and 5.x.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["model_max_length"] = n_ctx
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def gguf_to_hf_folder(src_gguf: Path, out_dir: Path) -> Path:
    """Write out_dir: config.json, model.safetensors (float32), tokenizer files, gguf_source.json.

    Loads offline with `LlamaForCausalLM.from_pretrained(out_dir)` / `AutoTokenizer.from_pretrained(out_dir)`.
    The folder is built next to out_dir and swapped in only when complete.
    """
    import gguf
    from safetensors.numpy import save_file

    from edgeopt.workloads.causal_lm.gguf_reference import tensor_type_histogram

    if not src_gguf.is_file():
        raise UserError(f"GGUF not found: {src_gguf}")
    reader = gguf.GGUFReader(src_gguf)
    hp = llama_hparams(reader)
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    with atomic_dir(out_dir) as tmp:
        save_file(hf_state_dict(reader, hp), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(hp, tied), indent=2) + "\n")
        gen = {"bos_token_id": hp["bos"], "eos_token_id": hp["eos"], "pad_token_id": hp["pad"]}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        _save_tokenizer(src_gguf, tmp, hp["n_ctx"], hp["tokenizer_pre"])
        source = {"gguf": str(src_gguf), "tensor_types": tensor_type_histogram(src_gguf), "qk_unpermuted": True}
        (tmp / "gguf_source.json").write_text(json.dumps(source, indent=2) + "\n")
    return out_dir
