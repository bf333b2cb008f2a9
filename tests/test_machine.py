"""The machine a measurement records, and the load check before each round."""

from __future__ import annotations

import subprocess
import sys
import time

from edgeopt import machine


def test_identity_names_cpu_cores_memory_kernel_and_its_fingerprint_is_stable() -> None:
    ident = machine.identity()
    assert ident["cores"] >= 1 and ident["mem_total_kb"] > 0 and ident["kernel"]
    assert ident["cpu_model"] != "unknown"
    assert "avx2" in ident["cpu_flags"] or ident["machine"] != "x86_64"  # every machine of this kind has AVX2
    assert machine.fingerprint(ident) == machine.fingerprint(machine.identity())
    other = {**ident, "cpu_flags": [f for f in ident["cpu_flags"] if f != "avx2"]}
    assert machine.fingerprint(other) != machine.fingerprint(ident)  # an AVX2-less machine is another machine


def test_a_busy_core_is_seen_as_load() -> None:
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        time.sleep(0.5)  # let it start spinning
        sample = machine.load(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert sample["busy_cpus"] >= 0.7  # one process spinning on one core (of two, or more)
    assert machine.under_load(sample)


def test_under_load_reads_busy_cpus_and_the_run_queue_only_without_them() -> None:
    assert not machine.under_load({"busy_cpus": 0.05, "run_queue": 0.0})
    assert machine.under_load({"busy_cpus": 1.0, "run_queue": 0.0})
    # A momentary runnable thread on idle CPUs is not load (seen before rounds on a quiet machine).
    assert not machine.under_load({"busy_cpus": 0.06, "run_queue": 1.0})
    assert machine.under_load({"run_queue": 2.0})
