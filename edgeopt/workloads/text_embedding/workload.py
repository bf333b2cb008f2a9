"""text-embedding: sentence embeddings. Speed is batch-1 latency plus a throughput batch;
quality is cosine to the baseline on a fidelity sample and retrieval recall/MRR retention."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import columns as col
from edgeopt.config import BenchmarkConfig, PipelineConfig
from edgeopt.errors import CandidateError, UserError
from edgeopt.iospec import Feed, IOSpec
from edgeopt.metrics import (
    cosine_per_row,
    mean_cosine,
    mean_interval,
    present,
    ratio_interval,
    retention,
    retrieval_per_query,
)
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import EvalDataSummary, Quality
from edgeopt.sources import SourceFacts
from edgeopt.taskspec import SourceKind
from edgeopt.validation import ValidationReport
from edgeopt.workloads.base import MlxForm, Speed, TorchForm, Workload, batch_speed
from edgeopt.workloads.text_embedding import JsonlData, PydocTopicsData
from edgeopt.workloads.text_embedding.embeddings import encode, encode_all

QUALITY_SETS = ("fidelity", "queries", "documents")
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a BERT-style encoder may declare
EMBEDDINGS_FILE = "embeddings.npz"
LOAD_CHECK_MIN_COSINE = 0.98


class TextEmbedding(Workload):
    task = "text-embedding"
    default_quality_metrics = ("cosine", "recall@10", "mrr")
    metric_names = ("cosine", "recall@1", "recall@10", "mrr")
    sequence_inputs = True
    columns = (*col.LATENCY, *col.FOOTPRINT, col.Column("cosine", col.measured(".4f", col.metric("cosine"))),
               col.Column("R@10 ret", col.measured(".3f", col.retention("recall@10"))),
               col.Column("MRR ret", col.measured(".3f", col.retention("mrr"))))

    def preflight(self, cfg: PipelineConfig, source: SourceFacts, project_root: Path) -> None:
        """A tokenizer, and a Hugging Face source must be an encoder transformers can load with AutoModel."""
        from edgeopt.base_model import check_tokenizer

        if source.tokenizer_dir is None:
            raise UserError(f"model: no tokenizer in {source.path} (text-embedding needs the tokenizer files)")
        check_tokenizer(source.tokenizer_dir)
        if source.hf_config is None:
            return
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

        model_type = source.hf_config.get("model_type")
        archs = source.hf_config.get("architectures") or []
        if model_type not in CONFIG_MAPPING_NAMES:
            raise UserError(f"model: architecture {model_type!r} ({', '.join(archs) or 'no architectures'}) is "
                            f"unknown to the installed transformers; text-embedding cannot run it")
        if source.hf_config.get("is_encoder_decoder") or model_type not in MODEL_MAPPING_NAMES:
            raise UserError(f"model: architecture {model_type!r} is not an encoder that text-embedding can "
                            f"mean-pool (e.g. bert, roberta, mpnet, xlm-roberta)")

    def materialize_base(self, source: SourceKind, dest: Path, project_root: Path) -> BaseModelInfo:
        from edgeopt.workloads.text_embedding.base_model import materialize_encoder

        return materialize_encoder(source, dest, self.task, project_root)

    def build_data(self, source: SourceKind, out_dir: Path, base: BaseModelInfo | None) -> EvalDataSummary:
        from edgeopt.workloads.text_embedding.data import build_eval_data

        if not isinstance(source, PydocTopicsData | JsonlData):
            raise UserError(f"data.kind {source.kind!r} does not fit task {self.task}")
        return build_eval_data(source, out_dir)

    def validate_data(self, data_dir: Path, report_path: Path | None) -> ValidationReport:
        from edgeopt.workloads.text_embedding.validation import validate_eval_data

        return validate_eval_data(data_dir, report_path)

    def dataset_rows(self, data_dir: Path) -> list[dict[str, Any]]:
        from edgeopt.workloads.text_embedding.data import load_retrieval

        return [p._asdict() for p in load_retrieval(data_dir)]

    def describe_data(self, n_pairs: int, n_items: int) -> str:
        return f"{n_pairs} pairs, {n_items} sentences"

    def prepare_inputs(self, base: BaseModelInfo, data_dir: Path, bench: BenchmarkConfig) -> dict[str, np.ndarray]:
        """Every set tokenized once: the fidelity sentences, queries, documents, calibration, bench batch."""
        from transformers import AutoTokenizer

        from edgeopt.workloads.text_embedding.data import load_calibration, load_retrieval, load_sentences

        if base.tokenizer_dir is None:
            raise UserError("text-embedding needs the base model's tokenizer")
        tok = AutoTokenizer.from_pretrained(str(base.tokenizer_dir))
        pairs = load_retrieval(data_dir)
        if len(pairs) < bench.throughput_batch_size:
            raise UserError(f"need at least {bench.throughput_batch_size} retrieval pairs for the throughput batch")
        sets = {
            "fidelity": (load_sentences(data_dir), "longest"),
            "queries": ([p.query for p in pairs], "longest"),
            "documents": ([p.document for p in pairs], "longest"),
            # Fixed shapes: static quantizers calibrate on what the benchmark will run.
            "calibration": (load_calibration(data_dir), "max_length"),
            # Documents are long, so the benchmark batch is real tokens at the full sequence length.
            "bench": ([p.document for p in pairs][: bench.throughput_batch_size], "max_length"),
        }
        arrays: dict[str, np.ndarray] = {}
        for name, (texts, padding) in sets.items():
            enc = tok(texts, padding=padding, truncation=True, max_length=bench.sequence_length,
                      return_tensors="np")
            arrays[f"{name}_input_ids"] = enc["input_ids"].astype(np.int64)
            arrays[f"{name}_attention_mask"] = enc["attention_mask"].astype(np.int64)
        return arrays

    def calibration(self, inputs: Any, spec: IOSpec | None, own_length: bool = False) -> list[Feed]:
        """One calibration sentence per feed; token_type_ids (single segment) are zeros.

        own_length: trailing padding is dropped where the sequence axis is dynamic, so activation
        statistics come from real tokens, not from padding the model never attends to.
        """
        ids = np.asarray(inputs["calibration_input_ids"], dtype=np.int64)
        mask = np.asarray(inputs["calibration_attention_mask"], dtype=np.int64)
        names = spec.input_names if spec is not None else ("input_ids", "attention_mask")
        unknown = [n for n in names if n not in TOKEN_INPUTS]
        if unknown:
            raise CandidateError(f"the model needs input(s) text-embedding cannot supply: {', '.join(unknown)}")
        trim = own_length and spec is not None and all(len(t.shape) > 1 and t.is_dynamic(1) for t in spec.inputs)
        feeds = []
        for row_ids, row_mask in zip(ids, mask, strict=True):
            n = max(int(row_mask.nonzero()[0].max()) + 1, 1) if trim and row_mask.any() else len(row_ids)
            arrays = {"input_ids": row_ids[None, :n], "attention_mask": row_mask[None, :n],
                      "token_type_ids": np.zeros((1, n), dtype=np.int64)}
            feed = {name: arrays[name] for name in names}
            feeds.append(spec.cast(feed) if spec is not None else feed)
        return feeds

    def torch_form(self, model_dir: Path, for_export: bool = False) -> TorchForm:
        """The SentenceEncoder (BERT-style encoder + mean pooling + L2 norm) of a Hugging Face folder.

        for_export: "eager" attention, which onnxruntime's transformer optimizer fuses; else "sdpa".
        """
        from edgeopt.workloads.text_embedding.model import torch_form

        return torch_form(model_dir, for_export=for_export)

    def mlx_form(self, model_dir: Path, weights: bool = True) -> MlxForm:
        """The BERT encoder re-implemented in MLX (mean pooling + L2 norm): the torch form's tensors."""
        from edgeopt.workloads.text_embedding.mlx_model import mlx_module

        module, spec = mlx_module(Path(model_dir), weights)
        return MlxForm(module=module, io_spec=spec)

    def batch_call(self, runner: Any, inputs: Any, n: int) -> Callable[[], object]:
        ids, mask = inputs["bench_input_ids"], inputs["bench_attention_mask"]
        return lambda: encode(runner, ids[:n], mask[:n])

    def benchmark(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path | None = None) -> Speed:
        return batch_speed(lambda n: self.batch_call(runner, inputs, n), bench)

    def write_outputs(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path) -> None:
        embeddings = {
            name: encode_all(runner, inputs[f"{name}_input_ids"], inputs[f"{name}_attention_mask"],
                             bench.quality_batch_size)
            for name in QUALITY_SETS
        }
        np.savez(out_dir / EMBEDDINGS_FILE, **embeddings)

    def quality(self, candidate_dir: Path, baseline_dir: Path) -> Quality:
        """Cosine to the baseline's fidelity embeddings, recall@1/@10 and MRR with their retention; every one is a
        mean over samples (sentences, queries), so each gets a bootstrap CI, retention paired per query."""
        with np.load(candidate_dir / EMBEDDINGS_FILE) as c, np.load(baseline_dir / EMBEDDINGS_FILE) as b:
            cand, base = {k: c[k] for k in QUALITY_SETS}, {k: b[k] for k in QUALITY_SETS}
        base_per_query = retrieval_per_query(base["queries"], base["documents"])
        cand_per_query = retrieval_per_query(cand["queries"], cand["documents"])
        base_retrieval = {k: float(np.mean(v)) for k, v in base_per_query.items()}
        cand_retrieval = {k: float(np.mean(v)) for k, v in cand_per_query.items()}
        per_sentence = cosine_per_row(base["fidelity"], cand["fidelity"])
        cosine = float(np.mean(per_sentence))
        ret = {"cosine": cosine, **retention(cand_retrieval, base_retrieval)}
        # Queries are resampled with the document set fixed: each query's rank is against all documents.
        ci = present({"cosine": mean_interval(per_sentence, cosine),
                      **{k: mean_interval(v, cand_retrieval[k]) for k, v in cand_per_query.items()}})
        return Quality(
            metrics={"cosine": cosine, **cand_retrieval},
            # Cosine is already relative to the baseline (1 against itself), so it is its own retention.
            retention=ret,
            ci=ci,
            retention_ci=present({"cosine": ci.get("cosine"),
                                  **{k: ratio_interval(cand_per_query[k], base_per_query[k], point=ret[k])
                                     for k in cand_per_query}}),
        )

    def serving_config(self, cfg: PipelineConfig, base: BaseModelInfo) -> dict[str, Any]:
        return {"max_length": cfg.benchmark.sequence_length, "threads": cfg.benchmark.threads}

    def python_model(self) -> Path:
        return Path(__file__).with_name("serving_code.py")

    def load_check(self, model: Any, data_dir: Path, measurement_dir: Path) -> tuple[bool, str]:
        """The registered model must reproduce the candidate's measured embeddings."""
        from edgeopt.workloads.text_embedding.data import load_sentences

        probe = load_sentences(data_dir)[:4]
        got = np.asarray(model.predict(probe))
        expected = np.load(measurement_dir / EMBEDDINGS_FILE)["fidelity"][: len(probe)]
        if got.shape != expected.shape or not np.all(np.isfinite(got)):
            return False, f"output shape {got.shape}, expected {expected.shape}"
        cos = mean_cosine(expected, got)
        # Padding differs (per call vs per measured set) and dynamic quantization derives its
        # scales from the whole padded batch, so an int8 model moves by ~0.01; a wrong or broken
        # artifact lands far below.
        return cos > LOAD_CHECK_MIN_COSINE, f"cosine to measured embeddings {cos:.6f}"


WORKLOAD = TextEmbedding()
