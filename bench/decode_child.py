"""Run one candidate's timed generation a few times (for a py-spy profile of decode).

    python bench/decode_child.py CANDIDATE_DIR INPUTS.npz THREADS DECODE_TOKENS RUNS
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    from edgeopt.recipes import get_runtime
    from edgeopt.results import CandidateRecord

    cand, inputs, threads, n, runs = Path(argv[0]), argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    record = CandidateRecord.model_validate_json((cand / "candidate.json").read_text())
    runner = get_runtime(record.runtime)(cand, record.model_file, record.details, threads)
    prompt = np.load(inputs, allow_pickle=False)["bench_prompt_ids"]
    for _ in range(runs):
        runner.generate(prompt, n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
