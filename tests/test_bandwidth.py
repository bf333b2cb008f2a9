"""Copy-bandwidth measurement and its per-machine cache (small buffers: the value is not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from edgeopt.bandwidth import CACHE_FILE, copy_bandwidth, machine_fingerprint, measure_copy_bandwidth


def test_measures_a_positive_bandwidth_with_one_and_two_threads() -> None:
    for threads in (1, 2):
        assert measure_copy_bandwidth(threads, buffer_mb=8, repeats=2) > 1e8  # > 0.1 GB/s on anything


def test_measured_once_per_machine_and_thread_count(tmp_path: Path) -> None:
    first = copy_bandwidth(tmp_path, 1, buffer_mb=8)
    cached = json.loads((tmp_path / CACHE_FILE).read_text())
    assert cached == first and first["fingerprint"] == machine_fingerprint(1)
    # A planted value proves the second call reads the cache instead of measuring again.
    (tmp_path / CACHE_FILE).write_text(json.dumps({**cached, "bytes_per_s": 1234.0}))
    assert copy_bandwidth(tmp_path, 1, buffer_mb=8)["bytes_per_s"] == 1234.0
    # Another thread count (or another machine) is a different fingerprint: measured afresh.
    other = copy_bandwidth(tmp_path, 2, buffer_mb=8)
    assert other["fingerprint"]["threads"] == 2 and other["bytes_per_s"] != 1234.0


def test_a_corrupt_cache_is_measured_over(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE).write_text("{not json")
    assert copy_bandwidth(tmp_path, 1, buffer_mb=8)["bytes_per_s"] > 0
    assert json.loads((tmp_path / CACHE_FILE).read_text())["fingerprint"] == machine_fingerprint(1)


def test_buffers_do_not_count_towards_the_callers_peak_rss(tmp_path: Path) -> None:
    """The measurement runs in a child: a benchmark that asks for it keeps its own peak RSS."""
    import subprocess
    import sys

    code = ("from pathlib import Path; from edgeopt.bandwidth import copy_bandwidth; "
            f"copy_bandwidth(Path({str(tmp_path)!r}), 1, buffer_mb=256); "
            "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) < 200 * 1024  # KiB; 2 x 256 MiB of buffers in-process would be > 512 MiB
    assert (tmp_path / CACHE_FILE).is_file()
