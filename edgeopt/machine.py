"""The machine a measurement ran on, and how busy it was: read from /proc (Linux), platform elsewhere.

`identity()` is what a measurement records (CPU model, ISA flags, cores, memory, kernel) and
`fingerprint()` hashes it: a cached measurement is reused only on the same fingerprint. `load()` samples
the CPU use of the whole machine and the run queue just before a round, while the parent waits idle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from datetime import UTC, datetime
from typing import Any

# Busy CPUs (outside the measured process, which has not started yet) above which a round counts as loaded.
BUSY_CPUS_LIMIT = 0.35
LOAD_SAMPLE_S = 0.5


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _mem_total_kb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def identity() -> dict[str, Any]:
    """CPU model, ISA flags, cores, memory and kernel: what makes timings of two machines comparable."""
    flags = sorted(_cpuinfo_field("flags").split())
    return {
        "cpu_model": _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown",
        "cpu_flags": flags,
        "cores": os.cpu_count() or 0,
        "mem_total_kb": _mem_total_kb(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "system": platform.system(),
    }


def fingerprint(machine: dict[str, Any]) -> str:
    """A short stable hash of `identity()`'s result."""
    return hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:16]


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _run_queue() -> float:
    """Runnable tasks right now (/proc/loadavg's 4th field, minus this reader itself)."""
    try:
        with open("/proc/loadavg") as f:
            parts = f.read().split()
        return max(0.0, float(parts[3].split("/")[0]) - 1)
    except (OSError, ValueError, IndexError):
        return 0.0


def load(sample_s: float = LOAD_SAMPLE_S) -> dict[str, float]:
    """The machine's load over `sample_s`: busy CPUs (0..cores), the run queue and the 1-minute load average."""
    before = _cpu_times()
    time.sleep(sample_s)
    after = _cpu_times()
    out: dict[str, float] = {"run_queue": _run_queue()}
    if before and after and after[1] > before[1]:
        cores = os.cpu_count() or 1
        out["busy_cpus"] = round(cores * (after[0] - before[0]) / (after[1] - before[1]), 3)
    with contextlib.suppress(OSError):
        out["loadavg_1m"] = os.getloadavg()[0]
    return out


def under_load(sample: dict[str, float], limit: float = BUSY_CPUS_LIMIT) -> bool:
    """Whether other work was using the CPUs before a round (the parent itself waits idle).

    Read from the CPU use over the sample window; the run queue is one instantaneous count (a server's
    thread waking up shows as 1 or 2 while the CPUs stay idle: measured), so it decides only where
    /proc/stat gave no CPU use.
    """
    if "busy_cpus" in sample:
        return sample["busy_cpus"] > limit
    return sample.get("run_queue", 0.0) >= 1


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
