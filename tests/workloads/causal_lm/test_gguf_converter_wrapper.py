"""The converter wrapper's own logic: which outtype keeps a checkpoint's numbers, which line is the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeopt.workloads.causal_lm.hf_to_gguf import checkpoint_outtype, meaningful_line


def _checkpoint(path: Path, **dtypes: str) -> Path:
    import torch
    from safetensors.torch import save_file

    path.mkdir()
    tensors = {name: torch.zeros(4, 4, dtype=getattr(torch, dtype)) for name, dtype in dtypes.items()}
    tensors["norm.weight"] = torch.zeros(4, dtype=torch.float32)  # 1-D: F32 in every checkpoint, never decides
    save_file(tensors, str(path / "model.safetensors"))
    return path


@pytest.mark.parametrize(("dtypes", "outtype"), [
    ({"a": "float32", "b": "float32"}, "f32"),
    ({"a": "bfloat16", "b": "bfloat16"}, "bf16"),
    ({"a": "float16"}, "f16"),
    ({"a": "bfloat16", "b": "float32"}, "f32"),  # mixed: the widest, so nothing is rounded
    ({"a": "bfloat16", "b": "float16"}, "f32"),  # neither 16-bit type holds the other's values
])
def test_outtype_keeps_the_checkpoints_numbers(tmp_path: Path, dtypes: dict[str, str], outtype: str) -> None:
    assert checkpoint_outtype(_checkpoint(tmp_path / "m", **dtypes)) == outtype


def test_the_reason_is_the_converters_last_meaningful_line() -> None:
    unsupported = ("INFO:hf-to-gguf:Loading model: opt\nINFO:hf-to-gguf:Model architecture: OPTForCausalLM\n"
                   "ERROR:hf-to-gguf:Model OPTForCausalLM is not supported\n")
    assert meaningful_line(unsupported) == "Model OPTForCausalLM is not supported"
    traceback = ('Traceback (most recent call last):\n  File "convert_hf_to_gguf.py", line 312, in <module>\n'
                 '    main()\n    ^^^^^^\nKeyError: \'num_attention_heads\'\n')
    assert meaningful_line(traceback) == "KeyError: 'num_attention_heads'"
    progress = "INFO:hf-to-gguf:Exporting model...\nWriting:   0%|  | 0.00/269M\rWriting: 100%|##| 269M/269M\n"
    assert meaningful_line(progress) == "Exporting model..."
    assert meaningful_line("\n\n") == "no output"
