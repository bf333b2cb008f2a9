"""py-spy profiles for the benchmarks that miss their target: where the time goes.

`sampling(path)` samples this very process (py-spy --pid, non-blocking) while a block runs;
`record_command(cmd, path)` runs a command under py-spy (its children too). Both write py-spy's raw
collapsed stacks, gzipped to `<path>.gz` (a few MB of text each otherwise; `zcat` them into any
flame-graph tool, or speedscope), and `summarize` turns them into the
few lines the report shows: the share of samples per library, innermost frame (self) and anywhere in
the stack (inclusive).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PY_SPY = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy")
RATE = "50"  # samples per second: enough for runs of seconds to minutes, negligible overhead


def available() -> bool:
    return Path(PY_SPY).is_file() or shutil.which("py-spy") is not None


@contextmanager
def sampling(path: Path, idle: bool = False) -> Iterator[None]:
    """Sample the current process (all threads) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [PY_SPY, "record", "--pid", str(os.getpid()), "--nonblocking", "-r", RATE, "-f", "raw", "-o", str(path)]
    proc = subprocess.Popen(cmd + (["--idle"] if idle else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        _gzip(path)


def stored(path: Path) -> Path:
    """Where the profile written for `path` is kept."""
    return path.with_name(path.name + ".gz")


def _gzip(path: Path) -> None:
    if path.is_file():
        stored(path).write_bytes(gzip.compress(path.read_bytes(), mtime=0))
        path.unlink()


def record_command(cmd: list[str], path: Path, cwd: Path, idle: bool = False, native: bool = False,
                   env: dict[str, str] | None = None) -> int:
    """Run cmd under py-spy (children included); returns the command's exit code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spy = [PY_SPY, "record", "--subprocesses", "-r", RATE, "-f", "raw", "-o", str(path)]
    spy += (["--idle"] if idle else []) + (["--native"] if native else [])
    code = subprocess.run([*spy, "--", *cmd], cwd=cwd, env=env, capture_output=True, text=True).returncode
    _gzip(path)
    return code


_WHERE = re.compile(r"\(([^()]*)\)$")
_BENCH_SCRIPTS = {"run_bench.py", "decode_child.py", "peer_llamacpp.py", "profiles.py"}


def library(frame: str) -> str:
    """The package, native library or area of a py-spy frame: "func (prefect/flows.py:1887)" -> prefect,
    "ggml_compute (libggml-cpu.so)" -> libggml-cpu.so; "edgeopt/tracking.py" stays a module of ours."""
    m = _WHERE.search(frame)
    if m is None or frame.startswith("process "):
        return "other"
    where = m.group(1).rsplit(":", 1)[0]
    if ".so" in where:
        return where.split(".so")[0] + ".so"
    if where.startswith("<frozen"):
        return "python import machinery"
    if "/" in where:
        top = where.split("/", 1)[0]
        return where if top in ("edgeopt", "flows", "tasks") else top
    return "bench" if where in _BENCH_SCRIPTS else "python stdlib"


def summarize(path: Path, top: int = 6, within: str | None = None) -> dict[str, object]:
    """Sample shares per library: innermost frame (where the CPU was) and inclusive (anywhere in the stack).
    `path`: as given to `sampling`/`record_command` (its stored .gz is read).
    `within`: only samples with a frame containing that text (e.g. the timed loop, not the start-up)."""
    self_: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    gz = stored(path)
    text = gzip.decompress(gz.read_bytes()).decode() if gz.is_file() else ""
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit() or (within is not None and within not in stack):
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        self_[library(frames[-1])] += count
        for lib in {library(f) for f in frames} - {"other"}:
            incl[lib] += count
    if not total:
        return {"samples": 0, "self": {}, "inclusive": {}}
    return {
        "samples": total,
        "self": {k: round(v / total, 3) for k, v in self_.most_common(top)},
        "inclusive": {k: round(v / total, 3) for k, v in incl.most_common(top + 4)},
    }


def describe(summary: dict[str, object]) -> str:
    """One line for the report."""
    if not summary.get("samples"):
        return "no samples"
    def part(d: object) -> str:
        return ", ".join(f"{k} {v:.0%}" for k, v in dict(d).items())  # type: ignore[call-overload]
    return f"{summary['samples']} samples; self: {part(summary['self'])}; inclusive: {part(summary['inclusive'])}"
