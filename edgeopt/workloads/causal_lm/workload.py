"""causal-lm: text generation. One quality harness and one speed harness for every runtime.

Quality: every candidate predicts the same token windows of held-out text (built and scored by the reference
model once, in the prepare stage). The measurement child compares each window's next-token distribution with
the reference's right away, so no candidate's full logits (windows x tokens x 49k vocab) are ever written:

- perplexity of the window text (tokens 1..T-1 of each window given those before them);
- mean KL(reference || candidate) over every position, in nats;
- top-1 agreement: how often the candidate's most likely next token is the reference's.

Speed: greedy generation of `decode_tokens` after a `prompt_tokens` prompt, `min_iterations` times after
`warmup_iterations`: prompt-processing tok/s and time to first token from the prompt pass, decode tok/s
from the rest. `Speed.latency` is per decoded token, so the gates' speed-up is the decode speed-up.
Decode is set against the memory-bandwidth roof: copy bandwidth / bytes read per token (weights plus the
KV cache at the mean context), for runners that report their `roofline()`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import columns as col
from edgeopt.config import BenchmarkConfig, PipelineConfig
from edgeopt.errors import CandidateError, UserError
from edgeopt.iospec import Feed, IOSpec
from edgeopt.recipes import BaseModelInfo, Generation
from edgeopt.results import EvalDataSummary, Quality
from edgeopt.sources import SourceFacts
from edgeopt.taskspec import SourceKind
from edgeopt.timing import stats
from edgeopt.validation import ValidationReport
from edgeopt.workloads.base import Speed, Workload
from edgeopt.workloads.causal_lm import TextWindowsData

QUALITY_FILE = "quality.json"
POSITIONS_FILE = "positions.npz"
GENERATION_FILE = "generation.json"
DEFAULT_MAX_NEW_TOKENS = 32  # the served model's default, and the load check's probe length
# The runtime settings probe ranks settings on short generations; the rounds then time the chosen one in full.
PROBE_PROMPT_TOKENS = 64
PROBE_DECODE_TOKENS = 32


def encode_prompt(tokenizer: Any, text: str) -> np.ndarray:
    """Prompt token ids as the served model makes them (the tokenizer's own special-token rule)."""
    return np.asarray(tokenizer(text)["input_ids"], dtype=np.int64)


def until_eos(token_ids: list[int], eos: set[int]) -> list[int]:
    """Generated ids up to (not including) the first end-of-sequence token."""
    out = []
    for t in token_ids:
        if t in eos:
            break
        out.append(t)
    return out


def roof(bandwidth_bytes_s: float, roofline: dict[str, int], mean_context: float,
         decode_tok_s: float) -> dict[str, float]:
    """Decode speed against the memory-bandwidth roof and the arithmetic it achieves."""
    bytes_per_token = roofline["weight_bytes"] + roofline["kv_bytes_per_position"] * mean_context
    roof_tok_s = bandwidth_bytes_s / bytes_per_token
    return {
        "copy_bandwidth_gbs": bandwidth_bytes_s / 1e9,
        "bytes_per_token_mb": bytes_per_token / 1e6,
        "roof_tok_s": roof_tok_s,
        "roof_fraction": decode_tok_s / roof_tok_s,
        # Compute side: two flops per matrix parameter per token (one multiply-add).
        "decode_gflops": decode_tok_s * 2 * roofline["matmul_params"] / 1e9,
    }


def window_scores(logits: np.ndarray, ref_logprobs: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per-position KL(ref || cand), NLL of the next token, and whether the argmax tokens agree."""
    from edgeopt.workloads.causal_lm.quality import log_softmax

    t = len(ids)
    if logits.shape != ref_logprobs.shape:
        raise CandidateError(f"logits shape {logits.shape} differs from the reference's {ref_logprobs.shape}")
    lp_c = log_softmax(logits)
    lp_r = log_softmax(np.asarray(ref_logprobs, dtype=np.float32))  # renormalises the float16 storage
    kld = (np.exp(lp_r) * (lp_r - lp_c)).sum(axis=-1)
    nll = -lp_c[np.arange(t - 1), ids[1:]]
    nll_ref = -lp_r[np.arange(t - 1), ids[1:]]
    top1 = lp_c.argmax(axis=-1) == lp_r.argmax(axis=-1)
    return {"kld": kld, "nll": nll, "nll_ref": nll_ref, "top1": top1, "argmax": lp_c.argmax(axis=-1)}


class CausalLM(Workload):
    task = "causal-lm"
    default_quality_metrics = ("top1", "ppl")
    metric_names = ("ppl", "ppl_ratio", "kld", "top1")
    columns = (*col.FOOTPRINT, col.Column("PPL", col.measured(".3f", col.metric("ppl"))),
               col.Column("KLD", col.measured(".2e", col.metric("kld"))),
               col.Column("top-1", col.measured(".3f", col.metric("top1"))),
               col.Column("prompt tok/s", col.measured(".0f", col.extra("prompt_tok_s"))),
               col.Column("decode tok/s", col.measured(".1f", col.items_per_s)),
               col.Column("TTFT ms", col.measured(".0f", col.extra("ttft_ms"))),
               col.Column("roof %", col.measured(".0f", col.extra("roof_fraction", 100.0))))

    def preflight(self, cfg: PipelineConfig, source: SourceFacts, project_root: Path) -> None:
        """A causal LM architecture, and held-out text long enough for the windows asked for."""
        from edgeopt.base_model import check_tokenizer
        from edgeopt.workloads.causal_lm.text_windows import check_text_windows

        if source.gguf is None and source.tokenizer_dir is None:
            raise UserError(f"model: no tokenizer in {source.path} (causal-lm needs the tokenizer files)")
        if source.tokenizer_dir is not None:
            check_tokenizer(source.tokenizer_dir)

        if source.hf_config is not None:
            from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

            archs = [str(a) for a in source.hf_config.get("architectures") or []]
            known = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
            if not any(a in known for a in archs):
                raise UserError(f"model: {', '.join(archs) or 'no architectures in config.json'} is not a causal "
                                f"language model the installed transformers can run (e.g. LlamaForCausalLM)")
        data = cfg.data
        if isinstance(data, TextWindowsData):
            if isinstance(data.source, Path) and not data.source.is_absolute():
                data = data.model_copy(update={"source": project_root / data.source})
            check_text_windows(data, source.gguf, source.tokenizer_dir)

    def materialize_base(self, source: SourceKind, dest: Path, project_root: Path) -> BaseModelInfo:
        """A reference GGUF + HF folder + tokenizer, cached by the source's hash."""
        from edgeopt.workloads.causal_lm.reference_model import materialize_causal_lm

        return materialize_causal_lm(source, dest, project_root)

    def build_data(self, source: SourceKind, out_dir: Path, base: BaseModelInfo | None) -> EvalDataSummary:
        """Text windows are tokenized by the base model and scored by it once, so `base` is needed."""
        from edgeopt.workloads.causal_lm.text_windows import build_text_windows

        if not isinstance(source, TextWindowsData):
            raise UserError(f"data.kind {source.kind!r} does not fit task {self.task}")
        if base is None:  # preflight: the text's length was checked with the model's tokenizer
            raise UserError("text-windows evaluation data needs the base model (its tokenizer and reference)")
        return build_text_windows(source, out_dir, base)

    def dataset_rows(self, data_dir: Path) -> list[dict[str, Any]]:
        from edgeopt.io.jsonl import read_jsonl
        from edgeopt.workloads.causal_lm.text_windows import WINDOWS_FILE

        return read_jsonl(Path(data_dir) / WINDOWS_FILE)

    def describe_data(self, n_pairs: int, n_items: int) -> str:
        return f"{n_items} evaluation windows"

    def validate_data(self, data_dir: Path, report_path: Path | None) -> ValidationReport:
        from edgeopt.workloads.causal_lm.validation import validate_text_windows

        return validate_text_windows(data_dir, report_path)

    def prepare_inputs(self, base: BaseModelInfo, data_dir: Path, bench: BenchmarkConfig) -> dict[str, np.ndarray]:
        from transformers import AutoTokenizer

        from edgeopt.workloads.causal_lm.text_windows import load_reference, load_tokens, probe_text

        if bench.decode_tokens < 2:
            raise UserError("benchmark.decode_tokens must be at least 2 for causal-lm (one prompt pass + decode)")
        eval_ids, calibration = load_tokens(data_dir)
        # Any real text does for timing; the calibration stream is consecutive text.
        stream = np.concatenate([calibration.ravel(), eval_ids.ravel()])
        tok = AutoTokenizer.from_pretrained(str(base.tokenizer_dir), local_files_only=True)
        return {
            "eval_input_ids": eval_ids,
            "reference_logprobs": np.asarray(load_reference(data_dir, mmap=False)),
            "calibration_input_ids": calibration,
            "bench_prompt_ids": np.resize(stream, bench.prompt_tokens).astype(np.int64),
            "probe_prompt_ids": encode_prompt(tok, probe_text(data_dir)),
        }

    def calibration(self, inputs: Any, spec: IOSpec | None, own_length: bool = False) -> list[Feed]:
        """One calibration window per feed (consecutive held-out text, disjoint from the evaluation windows)."""
        ids = np.asarray(inputs["calibration_input_ids"], dtype=np.int64)
        return [{"input_ids": w[None, :], "attention_mask": np.ones((1, len(w)), dtype=np.int64)} for w in ids]

    def probe(self, runner: Any, inputs: Any, bench: BenchmarkConfig) -> tuple[list[float], Any] | None:
        """Per-token decode times of short greedy generations from a short prompt, and the tokens of the last."""
        prompt = inputs["bench_prompt_ids"][:PROBE_PROMPT_TOKENS]
        n = min(bench.decode_tokens, PROBE_DECODE_TOKENS)
        tuning = bench.tuning
        for _ in range(tuning.warmup_iterations):
            runner.generate(prompt, n)
        per_token: list[float] = []
        start = time.perf_counter()
        last: list[int] = []
        while len(per_token) < tuning.min_iterations or time.perf_counter() - start < tuning.min_time_s:
            generation = runner.generate(prompt, n)
            per_token.extend(generation.decode_s)
            last = list(generation.token_ids)
        return per_token, np.asarray(last, dtype=np.int64)

    def benchmark(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path | None = None) -> Speed:
        prompt = inputs["bench_prompt_ids"]
        n = bench.decode_tokens
        for _ in range(bench.warmup_iterations):
            runner.generate(prompt, n)
        runs: list[Generation] = []
        start = time.perf_counter()
        while len(runs) < max(1, bench.min_iterations) or time.perf_counter() - start < bench.min_time_s:
            runs.append(runner.generate(prompt, n))
        per_token = [d for r in runs for d in r.decode_s]
        decode_tok_s = float(np.median([len(r.decode_s) / sum(r.decode_s) for r in runs]))
        extra = {
            "prompt_tokens": float(len(prompt)),
            "decode_tokens": float(n),
            "prompt_tok_s": float(np.median([len(prompt) / r.ttft_s for r in runs])),
            "ttft_ms": float(np.median([r.ttft_s for r in runs]) * 1000),
            "decode_tok_s": decode_tok_s,
        }
        roofline = getattr(runner, "roofline", None)
        if callable(roofline) and out_dir is not None:
            from edgeopt.bandwidth import copy_bandwidth

            # Cached per machine next to the pipeline's measurements (measured once, ~2 s).
            bandwidth = copy_bandwidth(Path(out_dir).parent, bench.threads)["bytes_per_s"]
            extra.update(roof(bandwidth, roofline(), len(prompt) + n / 2, decode_tok_s))
        return Speed(
            latency=stats(per_token, 1),
            throughput=stats([sum(r.decode_s) for r in runs], len(runs[0].decode_s)),
            throughput_items_per_s=decode_tok_s,
            extra=extra,
            # Per-token decode times pool across rounds; per-generation rates are one sample per generation.
            samples={"latency_s": per_token, "throughput_s": [sum(r.decode_s) for r in runs],
                     "items_per_s": [len(r.decode_s) / sum(r.decode_s) for r in runs],
                     "decode_tok_s": [len(r.decode_s) / sum(r.decode_s) for r in runs],
                     "prompt_tok_s": [len(prompt) / r.ttft_s for r in runs],
                     "ttft_ms": [r.ttft_s * 1000 for r in runs]},
        )

    def write_outputs(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path) -> None:
        windows = inputs["eval_input_ids"]
        reference = inputs["reference_logprobs"]  # loaded once: an npz member is read whole on every access
        per: dict[str, list[np.ndarray]] = {"kld": [], "nll": [], "nll_ref": [], "top1": [], "argmax": []}
        for ids, ref in zip(windows, reference, strict=True):
            logits = np.asarray(runner.logits(ids), dtype=np.float32)
            if not np.all(np.isfinite(logits)):
                raise CandidateError("the runtime returned non-finite logits")
            for k, v in window_scores(logits, ref, ids).items():
                per[k].append(v)
        arrays = {k: np.stack(v) for k, v in per.items()}
        np.savez(out_dir / POSITIONS_FILE, kld=arrays["kld"].astype(np.float32),
                 nll=arrays["nll"].astype(np.float32), top1=arrays["top1"], argmax=arrays["argmax"].astype(np.int32))
        summary = {
            "windows": int(windows.shape[0]), "window_tokens": int(windows.shape[1]),
            "ppl": math.exp(float(arrays["nll"].mean())),
            "ppl_reference": math.exp(float(arrays["nll_ref"].mean())),
            "kld": float(arrays["kld"].mean()),
            "kld_p99": float(np.quantile(arrays["kld"], 0.99)),
            "top1": float(arrays["top1"].mean()),
        }
        (out_dir / QUALITY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        # A fixed greedy continuation: what the registered model must reproduce before it is aliased.
        probe = inputs["probe_prompt_ids"]
        gen = runner.generate(probe, DEFAULT_MAX_NEW_TOKENS)
        (out_dir / GENERATION_FILE).write_text(json.dumps(
            {"prompt_ids": [int(t) for t in probe], "token_ids": [int(t) for t in gen.token_ids]}) + "\n")

    def quality(self, candidate_dir: Path, baseline_dir: Path) -> Quality:
        cand = json.loads((candidate_dir / QUALITY_FILE).read_text())
        base = json.loads((baseline_dir / QUALITY_FILE).read_text())
        ppl_ratio = cand["ppl"] / base["ppl"]
        metrics = {"ppl": cand["ppl"], "ppl_ratio": ppl_ratio, "kld": cand["kld"], "top1": cand["top1"]}
        # top1 is already relative to the reference. exp(-KLD) is the geometric-mean ratio of the
        # candidate's to the reference's probability on the reference's own distribution.
        kept = {"top1": cand["top1"], "ppl": 1.0 / ppl_ratio, "ppl_ratio": 1.0 / ppl_ratio,
                "kld": math.exp(-cand["kld"])}
        # Bootstrap CIs over the evaluation windows, from the per-position scores the child saved.
        from edgeopt.workloads.causal_lm.quality import quality_intervals, window_means

        ci, kept_ci = quality_intervals(window_means(candidate_dir / POSITIONS_FILE),
                                        window_means(baseline_dir / POSITIONS_FILE), metrics, kept)
        return Quality(metrics=metrics, retention=kept, ci=ci, retention_ci=kept_ci)

    def python_model(self) -> Path:
        return Path(__file__).with_name("serving_code.py")

    def load_check(self, model: Any, data_dir: Path, measurement_dir: Path) -> tuple[bool, str]:
        """The registered model must continue the probe prompt exactly as the measured candidate did."""
        from edgeopt.workloads.causal_lm.text_windows import probe_text

        expected = json.loads((measurement_dir / GENERATION_FILE).read_text())
        served = model.unwrap_python_model()
        prompt = probe_text(data_dir)
        if encode_prompt(served.tokenizer, prompt).tolist() != expected["prompt_ids"]:
            return False, "the served tokenizer encodes the probe prompt differently from the measured inputs"
        got = model.predict([prompt])
        want = served.tokenizer.decode(until_eos(expected["token_ids"], served.eos_ids), skip_special_tokens=True)
        if len(got) != 1 or got[0] != want:
            return False, f"generated {got[:1]!r}, the measured candidate generated {want!r}"
        return bool(want.strip()), f"greedy continuation of the probe prompt reproduced ({len(want)} chars)"


WORKLOAD = CausalLM()
