"""Peer measurement for row 8: llama.cpp's own performance counters on one of our GGUF files.

Run as a child of run_bench.py (a fresh process, like our measurement):
    python bench/peer_llamacpp.py MODEL.gguf INPUTS.npz THREADS DECODE_TOKENS RUNS
Loads the model the way llama.cpp is deployed (its default F16 KV cache, batch 512), lets llama-cpp-python's
own greedy loop (`Llama.generate`, top_k=1) generate DECODE_TOKENS after the same prompt our harness uses,
and reads `llama_perf_context` (time inside llama_decode, as llama.cpp counts it) after each generation.
Prints one JSON line: the median prompt and decode tok/s over RUNS (after one warm-up).
"""

from __future__ import annotations

import json
import statistics
import sys

import numpy as np


def main(argv: list[str]) -> int:
    import llama_cpp
    from llama_cpp import Llama

    model, inputs, threads, n_decode, runs = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    prompt = [int(t) for t in np.load(inputs, allow_pickle=False)["bench_prompt_ids"]]
    llm = Llama(model, n_ctx=len(prompt) + n_decode + 8, n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False, no_perf=False)
    prompt_rates, decode_rates = [], []
    for i in range(runs + 1):
        llm.reset()
        llama_cpp.llama_perf_context_reset(llm.ctx)
        for n, _tok in enumerate(llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True), 1):
            if n >= n_decode:
                break
        perf = llama_cpp.llama_perf_context(llm.ctx)
        if i == 0:
            continue  # warm-up
        prompt_rates.append(perf.n_p_eval / perf.t_p_eval_ms * 1e3)
        decode_rates.append(perf.n_eval / perf.t_eval_ms * 1e3)
    print(json.dumps({"prompt_tok_s": statistics.median(prompt_rates),
                      "decode_tok_s": statistics.median(decode_rates), "runs": runs,
                      "n_eval_per_run": int(perf.n_eval), "n_p_eval_per_run": int(perf.n_p_eval)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
