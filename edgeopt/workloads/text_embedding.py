"""text-embedding: sentence embeddings. Speed is batch-1 latency plus a throughput batch;
quality is cosine to the baseline on a fidelity sample and retrieval recall/MRR retention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import columns as col
from edgeopt.config import BenchmarkConfig, DataSource, ModelSource, PipelineConfig
from edgeopt.data import EvalDataSummary
from edgeopt.errors import UserError
from edgeopt.metrics import mean_cosine, retention, retrieval_metrics
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import Quality
from edgeopt.sources import SourceFacts
from edgeopt.timing import stats, timed_loop
from edgeopt.workloads import Speed, Workload

QUALITY_SETS = ("fidelity", "queries", "documents")
EMBEDDINGS_FILE = "embeddings.npz"
LOAD_CHECK_MIN_COSINE = 0.98


def encode_all(runner: Any, ids: np.ndarray, mask: np.ndarray, batch: int) -> np.ndarray:
    parts = [runner.encode(ids[i : i + batch], mask[i : i + batch]) for i in range(0, len(ids), batch)]
    return np.concatenate(parts).astype(np.float32)


class TextEmbedding(Workload):
    task = "text-embedding"
    default_quality_metrics = ("cosine", "recall@10", "mrr")
    metric_names = ("cosine", "recall@1", "recall@10", "mrr")
    columns = (*col.LATENCY, *col.FOOTPRINT, col.Column("cosine", col.measured(".4f", col.metric("cosine"))),
               col.Column("R@10 ret", col.measured(".3f", col.retention("recall@10"))),
               col.Column("MRR ret", col.measured(".3f", col.retention("mrr"))))

    def preflight(self, cfg: PipelineConfig, source: SourceFacts, project_root: Path) -> None:
        """A Hugging Face source must be an encoder the installed transformers can load with AutoModel."""
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

    def materialize_base(self, source: ModelSource, dest: Path, project_root: Path) -> BaseModelInfo:
        from edgeopt.base_model import materialize_files

        return materialize_files(source, dest, self.task, project_root)

    def build_data(self, source: DataSource, out_dir: Path, base: BaseModelInfo | None) -> EvalDataSummary:
        from edgeopt.data import build_eval_data

        return build_eval_data(source, out_dir)

    def dataset_rows(self, data_dir: Path) -> list[dict[str, Any]]:
        from edgeopt.data import load_retrieval

        return [p._asdict() for p in load_retrieval(data_dir)]

    def describe_data(self, n_pairs: int, n_items: int) -> str:
        return f"{n_pairs} pairs, {n_items} sentences"

    def tokenize(self, tokenizer_dir: Path, data_dir: Path, bench: BenchmarkConfig) -> dict[str, np.ndarray]:
        from transformers import AutoTokenizer

        from edgeopt.data import load_calibration, load_retrieval, load_sentences

        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
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

    def calibration(self, inputs: Any) -> dict[str, np.ndarray]:
        return {"input_ids": inputs["calibration_input_ids"], "attention_mask": inputs["calibration_attention_mask"]}

    def benchmark(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path | None = None) -> Speed:
        ids, mask = inputs["bench_input_ids"], inputs["bench_attention_mask"]
        b1, tb = bench.batch_size, bench.throughput_batch_size
        lat = timed_loop(lambda: runner.encode(ids[:b1], mask[:b1]),
                         bench.warmup_iterations, bench.min_iterations, bench.min_time_s)
        thr = timed_loop(lambda: runner.encode(ids[:tb], mask[:tb]),
                         max(1, bench.warmup_iterations // 2), max(3, bench.min_iterations // 4), bench.min_time_s)
        thr_stats = stats(thr, tb)
        return Speed(latency=stats(lat, b1), throughput=thr_stats,
                     throughput_items_per_s=tb / (thr_stats.mean_ms / 1000.0))

    def write_outputs(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path) -> None:
        embeddings = {
            name: encode_all(runner, inputs[f"{name}_input_ids"], inputs[f"{name}_attention_mask"],
                             bench.quality_batch_size)
            for name in QUALITY_SETS
        }
        np.savez(out_dir / EMBEDDINGS_FILE, **embeddings)

    def quality(self, candidate_dir: Path, baseline_dir: Path) -> Quality:
        cand, base = np.load(candidate_dir / EMBEDDINGS_FILE), np.load(baseline_dir / EMBEDDINGS_FILE)
        base_retrieval = retrieval_metrics(base["queries"], base["documents"])
        cand_retrieval = retrieval_metrics(cand["queries"], cand["documents"])
        cosine = mean_cosine(base["fidelity"], cand["fidelity"])
        return Quality(
            metrics={"cosine": cosine, **cand_retrieval},
            # Cosine is already relative to the baseline, so it is its own retention.
            retention={"cosine": cosine, **retention(cand_retrieval, base_retrieval)},
        )

    def python_model(self) -> Path:
        from edgeopt.serving_code import code_file

        return code_file("text_embedding")  # edgeopt.serving.TextEmbeddingModel

    def load_check(self, model: Any, data_dir: Path, measurement_dir: Path) -> tuple[bool, str]:
        """The registered model must reproduce the candidate's measured embeddings."""
        from edgeopt.data import load_sentences

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
