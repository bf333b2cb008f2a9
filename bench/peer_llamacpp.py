"""Peer measurement for row 8: llama-cpp-python's own greedy loop on one of our GGUF files, timed by wall clock.

Run as a child of run_bench.py (a fresh process, like our measurement):
    python bench/peer_llamacpp.py MODEL.gguf INPUTS.npz THREADS DECODE_TOKENS RUNS KV_CACHE N_CTX WARMUP

Loads the model with the settings our llama.cpp runtime times with (N_CTX context, batch and ubatch 512, THREADS
threads for prompt and decode, the K and V cache stored as KV_CACHE, e.g. f32), then lets `Llama.generate`
(top_k=1: greedy) produce DECODE_TOKENS tokens after the same prompt our harness uses (`bench_prompt_ids`),
RUNS times after WARMUP warm-up generations. `time.perf_counter` around the loop, as our harness does around its
own: time to first token = the call to the first token (prompt eval + first sample); each decode step = one
token to the next (eval of one token + sampling), DECODE_TOKENS - 1 of them, the same count as ours.

llama.cpp's internal counters (`llama_perf_context`: time inside llama_decode, as llama.cpp counts it) are read
after each generation and reported for reference only: they are not wall time around the loop.

Prints one JSON line with the per-run series (seconds) and the counters.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv: list[str]) -> int:
    import llama_cpp
    from llama_cpp import Llama

    model, inputs, threads, n_decode, runs = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    kv_cache, n_ctx, warmup = argv[5], int(argv[6]), int(argv[7])
    if n_decode < 2:
        raise SystemExit("DECODE_TOKENS must be >= 2 (one decode step at least)")
    prompt = [int(t) for t in np.load(inputs, allow_pickle=False)["bench_prompt_ids"]]
    kv_type = getattr(llama_cpp, f"GGML_TYPE_{kv_cache.upper()}")
    llm = Llama(model, n_ctx=max(n_ctx, len(prompt) + n_decode), n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, type_k=kv_type, type_v=kv_type, verbose=False, no_perf=False)
    out: dict[str, list] = {"step_s": [], "decode_s": [], "ttft_s": [], "perf_decode_tok_s": [],
                            "perf_prompt_tok_s": []}
    perf = None
    for i in range(warmup + runs):
        llm.reset()  # no prefix reuse: the whole prompt is evaluated every run, as ours does
        llama_cpp.llama_perf_context_reset(llm.ctx)
        marks: list[float] = []
        start = time.perf_counter()
        gen = llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True)
        for _tok in gen:
            marks.append(time.perf_counter())
            if len(marks) >= n_decode:
                break
        gen.close()
        perf = llama_cpp.llama_perf_context(llm.ctx)
        if i < warmup:
            continue
        steps = np.diff(marks)
        out["step_s"].append([float(s) for s in steps])
        out["decode_s"].append(float(steps.sum()))
        out["ttft_s"].append(marks[0] - start)
        out["perf_decode_tok_s"].append(perf.n_eval / perf.t_eval_ms * 1e3 if perf.t_eval_ms else float("nan"))
        out["perf_prompt_tok_s"].append(perf.n_p_eval / perf.t_p_eval_ms * 1e3 if perf.t_p_eval_ms else float("nan"))
    print(json.dumps({**out, "runs": runs, "warmup": warmup, "decode_steps": n_decode - 1, "kv_cache": kv_cache,
                      "n_ctx": llm.n_ctx(), "threads": threads, "prompt_tokens": len(prompt),
                      "n_eval_per_run": int(perf.n_eval) if perf else 0,
                      "n_p_eval_per_run": int(perf.n_p_eval) if perf else 0}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
