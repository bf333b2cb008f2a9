"""Wall time spent inside stage functions, so orchestration/tracking overhead can be measured.

A caller (the benchmark) resets the clock, runs a pipeline, and compares the total wall time
with the sum recorded here. Recording is thread-safe: Prefect runs tasks in worker threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_spent: dict[str, float] = {}


@contextmanager
def stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        with _lock:
            _spent[name] = _spent.get(name, 0.0) + time.perf_counter() - start


def reset() -> None:
    with _lock:
        _spent.clear()


def spent() -> dict[str, float]:
    with _lock:
        return dict(_spent)
