"""This machine's memory copy bandwidth, measured once and cached in the output folder.

Decoding one token of an LLM reads every weight (and the KV cache) once, so tokens/s can never exceed
bandwidth / bytes read per token: the roof the causal-lm workload reports decode speed against. The figure
follows STREAM's "copy" convention: bytes read plus bytes written per second, best of a few repeats, on
buffers far larger than any CPU cache, split across the benchmark's threads (numpy releases the GIL while
copying).
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import machine
from edgeopt.io.atomic import write_text_atomic

CACHE_FILE = "machine-bandwidth.json"
BUFFER_MB = 256  # per side; L3 caches are tens of MB at most
REPEATS = 5


def machine_fingerprint(threads: int) -> dict[str, Any]:
    """What makes a cached figure belong to this machine (and this thread count)."""
    ident = machine.identity()
    return {"host": socket.gethostname(), "machine": ident["machine"], "cpu": ident["cpu_model"],
            "cpus": ident["cores"], "mem_total_kb": ident["mem_total_kb"], "threads": threads}


def measure_copy_bandwidth(threads: int = 1, buffer_mb: int = BUFFER_MB, repeats: int = REPEATS) -> float:
    """Bytes per second (read + written) of a large array copy, best of `repeats`."""
    n = buffer_mb * (1 << 20) // 8
    src = np.ones(n, dtype=np.float64)  # written once, so every page is really mapped
    dst = np.zeros_like(src)
    bounds = np.linspace(0, n, max(1, threads) + 1, dtype=np.int64)
    parts = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    def copy(part: tuple[int, int]) -> None:
        np.copyto(dst[part[0] : part[1]], src[part[0] : part[1]])

    best = float("inf")
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        list(pool.map(copy, parts))  # warm-up: faults in the destination pages
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(copy, parts))
            best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def _measure_in_child(threads: int, buffer_mb: int) -> float:
    """Measure in a fresh interpreter: the caller is usually a benchmark whose peak RSS is being read, and
    the buffers (2 x buffer_mb) must not count towards it."""
    proc = subprocess.run([sys.executable, "-m", "edgeopt.bandwidth", str(threads), str(buffer_mb)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"bandwidth measurement failed: {proc.stderr.strip()[-300:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def copy_bandwidth(cache_dir: Path, threads: int, buffer_mb: int = BUFFER_MB) -> dict[str, Any]:
    """The cached measurement for this machine and thread count, measuring (and caching) it if needed.

    Returns {"bytes_per_s", "measured_at", "fingerprint", ...}.
    """
    path = Path(cache_dir) / CACHE_FILE
    fingerprint = machine_fingerprint(threads)
    try:
        cached = json.loads(path.read_text())
        if cached.get("fingerprint") == fingerprint and cached.get("bytes_per_s", 0) > 0:
            return dict(cached)
    except (OSError, json.JSONDecodeError):
        pass
    result = {
        "bytes_per_s": _measure_in_child(threads, buffer_mb),
        "method": f"numpy copy of {buffer_mb} MiB float64, {threads} thread(s), best of {REPEATS}; "
                  "bytes read + written (STREAM copy convention)",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint": fingerprint,
    }
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(measure_copy_bandwidth(int(sys.argv[1]), int(sys.argv[2])))
