"""One `edgeopt` run per output folder: a second one waits for the lock, then refuses with one line.

`flock_within` is also the machine's benchmark slot (`edgeopt.orchestration.machine_lock`).

A kernel file lock (flock): released when its holder dies, so a killed run never leaves it held.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from edgeopt.errors import BusyError

LOCK_FILE = ".edgeopt-run.lock"


def flock_within(handle: IO[str], wait_s: float, poll_s: float = 0.2) -> bool:
    """Take an exclusive flock on an open file, retrying for up to `wait_s`; False if it stays held."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)


@contextmanager
def run_lock(output_dir: Path, wait_s: float, what: str) -> Iterator[None]:
    """Hold the output folder's run lock for `what` (e.g. "edgeopt run"); raise BusyError after `wait_s`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    with path.open("a+") as handle:
        if not flock_within(handle, wait_s):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BusyError(f"{output_dir} is in use by {holder}; wait for it to finish, or raise "
                            f"orchestration.workspace_lock_wait_s to wait (now {wait_s:g} s)")
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{what} (pid {os.getpid()})\n")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
