"""text-embedding: sentence embeddings. Speed is batch-1 latency plus a throughput batch;
quality is cosine to the baseline on a fidelity sample and retrieval recall/MRR retention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.config import BenchmarkConfig
from edgeopt.metrics import mean_cosine, retention, retrieval_metrics
from edgeopt.results import Quality
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

    def tokenize(self, tokenizer_dir: Path, data_dir: Path, bench: BenchmarkConfig) -> dict[str, np.ndarray]:
        from transformers import AutoTokenizer

        from edgeopt.data import load_calibration, load_retrieval, load_sentences
        from edgeopt.errors import UserError

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

    def python_model(self) -> Any:
        from edgeopt.serving import TextEmbeddingModel

        return TextEmbeddingModel()

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
