"""Run one candidate's build or measurement in a child process, with a timeout and a memory limit.

A segfault, abort, hang or runaway allocation in a framework's native code then takes down the
child only: the parent kills the child's process group and fails that one candidate with the
reason and the tail of the child's log.

The memory limit is on resident memory (RSS, summed over the child's process tree), polled by
the parent, which kills the group when it goes over. RLIMIT_AS is not used: it caps *virtual*
size, and runtimes reserve far more address space than they touch (here the torch runtime has
VmPeak 1.3 GB for 0.5 GB RSS and fails to mmap its weights under a 1 GB RLIMIT_AS). Polling can
miss an allocation made between two polls, so the child also sets RLIMIT_DATA (private writable
memory, which tracks RSS closely: 0.9-1.3x here) to twice the limit as a hard backstop; hitting
it is a MemoryError inside the child.

The child dies with its parent (PR_SET_PDEATHSIG): a flow killed with SIGKILL leaves no build
running on behind its back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.io.atomic import write_text_atomic

POLL_S = 0.25  # RSS poll interval; cheap (/proc/<pid>/statm), so it does not disturb a benchmark
TREE_REFRESH_POLLS = 8  # re-list the child's descendants every this many polls (a /proc scan)
DATA_LIMIT_FACTOR = 2  # RLIMIT_DATA backstop, as a multiple of the RSS limit
TAIL_LINES = 15
ENV_CHILD = "EDGEOPT_ISOLATED_CHILD"  # set in children, so tests and tools can tell them apart


@dataclass(frozen=True)
class ChildRun:
    """How a child ended (when it was not killed for a limit: that raises)."""

    returncode: int
    peak_rss_mb: float
    seconds: float


# -- parent side ---------------------------------------------------------------------------


def plugin_modules(objects: Iterable[object]) -> list[str]:
    """Modules defining these recipe/runtime callables that the registry does not import itself.

    A child process starts with only the built-in adapters registered; a recipe registered by
    another module (a plugin, a test) is found in the child by importing that module there too.
    """
    from edgeopt.recipes import ADAPTER_MODULES

    out: list[str] = []
    for obj in objects:
        name = getattr(obj, "__module__", None)
        if not name or name in ADAPTER_MODULES or name in out:
            continue
        if name == "__main__":
            raise CandidateError(f"{getattr(obj, '__qualname__', obj)} is defined in __main__; define it in an "
                                 "importable module so an isolated child process can load it")
        out.append(name)
    return out


def _import_roots(modules: Iterable[str]) -> list[str]:
    """sys.path entries that make these (already imported) modules importable in a child."""
    roots = []
    for name in modules:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            root = str(Path(file).resolve().parents[name.count(".")])
            if root not in roots:
                roots.append(root)
    return roots


def child_env(extra: Mapping[str, str] | None = None, plugins: Iterable[str] = ()) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    # Unbuffered, so a crash loses no log lines; faulthandler prints the Python stack on SIGSEGV/SIGABRT.
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1", ENV_CHILD: "1"})
    roots = _import_roots(plugins)
    if roots:
        env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _kill_group(pid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# Process groups of the build/measure children now running, so that an interrupt (SIGTERM, Ctrl-C)
# stops them at once: they run in their own sessions, which a terminal's Ctrl-C does not reach, and
# the worker threads waiting on them would otherwise keep the process alive until they finish.
_live_groups: set[int] = set()
# Set by an interrupt: a worker thread that had not yet started its child when the interrupt killed
# the others must not start it afterwards (leaving the task runner waits for that thread, which
# would then build, and publish, the candidate after all).
_interrupted = threading.Event()


def kill_children() -> int:
    """Kill every running child's process group; returns how many there were."""
    groups = list(_live_groups)
    for pgid in groups:
        _kill_group(pgid)
    return len(groups)


def interrupt_children() -> int:
    """An interrupt: kill every running child and start no new one in this process."""
    _interrupted.set()
    return kill_children()


def allow_children() -> None:
    """Start children again (a new run in this process)."""
    _interrupted.clear()


def interrupted() -> bool:
    return _interrupted.is_set()


def _tree_rss(members: list[Any]) -> int:
    total = 0
    for p in members:
        with suppress(Exception):  # psutil.NoSuchProcess / AccessDenied: it exited between two polls
            total += p.memory_info().rss
    return total


def log_tail(log: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    # Progress bars rewrite one line with \r: keep only what the last rewrite shows.
    rows = [r for r in (ln.rsplit("\r", 1)[-1] for ln in text.split("\n")) if r.strip()]
    return "\n".join(r[:500] for r in rows[-lines:])


def exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (the system may have run out of memory)" if returncode == -signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {returncode}"


def failure(what: str, summary: str, log: Path) -> CandidateError:
    """One summary line naming the problem and the log, then the log's last lines."""
    tail = log_tail(log)
    text = f"{what} {summary} (log: {log})"
    return CandidateError(f"{text}\n--- last lines of {log.name} ---\n{tail}" if tail else text)


def run_child(
    module: str, spec: Mapping[str, Any], *, log: Path, timeout_s: float, memory_limit_mb: int | None,
    what: str, env: Mapping[str, str] | None = None, plugins: Iterable[str] = (),
) -> ChildRun:
    """Run `python -m <module> <spec json>` in its own session, output to `log`.

    Raises CandidateError when the child outlives `timeout_s` or its tree's RSS exceeds
    `memory_limit_mb` (the whole process group is killed). Any other ending is returned.
    """
    import psutil

    plugins = list(plugins)
    payload = {**spec, "parent_pid": os.getpid(), "memory_limit_mb": memory_limit_mb, "plugins": plugins}
    limit = memory_limit_mb * 1024 * 1024 if memory_limit_mb else None
    if interrupted():
        raise CandidateError(f"{what} not started: the run was interrupted")
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    peak = 0
    with log.open("w") as logf:
        # start_new_session: the child leads its own process group, so a kill reaches every
        # process it started; no preexec_fn, which is unsafe in threaded parents (Prefect, Dask).
        proc = subprocess.Popen(
            [sys.executable, "-m", module, json.dumps(payload)], stdin=subprocess.DEVNULL, stdout=logf,
            stderr=subprocess.STDOUT, env=child_env(env, plugins), start_new_session=True,
        )
        _live_groups.add(proc.pid)
        if interrupted():  # the interrupt came between the check above and the add: it missed this one
            _kill_group(proc.pid)
        try:
            root = psutil.Process(proc.pid)
            members = [root]
            polls = 0
            while True:
                try:
                    returncode = proc.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                polls += 1
                if polls % TREE_REFRESH_POLLS == 0:
                    try:
                        members = [root, *root.children(recursive=True)]
                    except psutil.NoSuchProcess:
                        members = [root]
                rss = _tree_rss(members)
                peak = max(peak, rss)
                if limit is not None and rss > limit:
                    _kill_group(proc.pid)
                    proc.wait()
                    raise failure(what, f"exceeded the memory limit of {memory_limit_mb} MB "
                                        f"(resident {rss / 2**20:.0f} MB); killed", log)
                if time.monotonic() - started > timeout_s:
                    _kill_group(proc.pid)
                    proc.wait()
                    raise failure(what, f"timed out after {timeout_s:g} s; killed", log)
        finally:
            # Also on KeyboardInterrupt, and for anything the child left running in its group.
            _kill_group(proc.pid)
            if proc.poll() is None:
                proc.wait()
            _live_groups.discard(proc.pid)
    return ChildRun(returncode=returncode, peak_rss_mb=peak / 2**20, seconds=time.monotonic() - started)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on a local file: one builder per candidate and workspace.

    The kernel drops it when the holder dies, so a killed run never leaves it held.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- child side ----------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def setup_child(spec: Mapping[str, Any]) -> None:
    """First thing in a child: die with the parent, set the memory backstop, load plugins."""
    import importlib
    import resource

    from edgeopt.environment import quiet_offline_defaults

    _die_with_parent(int(spec["parent_pid"]))
    limit_mb = spec.get("memory_limit_mb")
    if limit_mb:
        cap = int(limit_mb) * DATA_LIMIT_FACTOR * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    quiet_offline_defaults()
    for name in spec.get("plugins", ()):
        importlib.import_module(name)


def error_text(err: BaseException, spec: Mapping[str, Any]) -> str:
    """One line naming a child's failure; a refused allocation names the memory backstop."""
    text = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, MemoryError) and spec.get("memory_limit_mb"):
        cap = int(spec["memory_limit_mb"]) * DATA_LIMIT_FACTOR
        text += f" (an allocation was refused: the data limit is {cap} MB, twice the memory limit)"
    return text


def write_json(path: Path, obj: Any) -> None:
    """Atomically: a reader never sees half a file."""
    write_text_atomic(path, json.dumps(obj, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# -- isolated build ------------------------------------------------------------------------


BUILD_MODULE = "edgeopt.isolation"


def build_spec(
    recipe: str, options: Mapping[str, Any], base: Any, parent: Any, out_dir: Path, inputs: Path, task: str,
    threads: int, result: Path,
) -> dict[str, Any]:
    """What the child needs to rebuild the recipe's BuildContext (everything is JSON)."""
    return {
        "recipe": recipe, "options": dict(options), "task": task, "threads": threads,
        "base": {**{k: str(v) for k, v in asdict(base).items() if k not in ("variants", "details") and v is not None},
                 "variants": {k: str(v) for k, v in base.variants.items()}, "details": base.details},
        "parent": {k: str(v) for k, v in asdict(parent).items()} if parent is not None else None,
        "out_dir": str(out_dir), "inputs": str(inputs), "result": str(result),
    }


def build_isolated(
    recipe: Any, options: Mapping[str, Any], base: Any, parent: Any, out_dir: Path, inputs: Path, task: str,
    threads: int, *, log: Path, timeout_s: float, memory_limit_mb: int | None, env: Mapping[str, str] | None = None,
) -> Any:
    """Run `recipe.build` in a child process; return its BuildOutput or raise CandidateError."""
    from edgeopt.recipes import BuildOutput

    result = out_dir.parent / "result.json"
    result.unlink(missing_ok=True)
    spec = build_spec(recipe.name, options, base, parent, out_dir, inputs, task, threads, result)
    run = run_child(BUILD_MODULE, spec, log=log, timeout_s=timeout_s, memory_limit_mb=memory_limit_mb,
                    what="build", env=env, plugins=plugin_modules([recipe.build]))
    try:
        outcome = json.loads(result.read_text())
    except (OSError, ValueError):
        outcome = {}
    if "error" in outcome:  # the recipe failed cleanly and said why
        raise CandidateError(f"{outcome['error']} (log: {log})")
    if run.returncode != 0:
        raise failure("build", f"crashed: {exit_text(run.returncode)}", log)
    if "output" not in outcome:
        raise failure("build", "ended without writing its result", log)
    return BuildOutput(**outcome["output"])


def _build(spec: Mapping[str, Any]) -> int:
    from edgeopt.recipes import BaseModelInfo, BuildContext, ParentArtifact, WorkloadCalibration, get_recipe
    from edgeopt.workloads.base import get_workload

    result = Path(spec["result"])
    base = dict(spec["base"])
    parent = spec["parent"]
    recipe = get_recipe(spec["recipe"])
    data = np.load(spec["inputs"], allow_pickle=False)
    try:
        output = recipe.build(BuildContext(
            base=BaseModelInfo(path=Path(base["path"]), format=base["format"], sha256=base["sha256"], task=base["task"],
                               tokenizer_dir=Path(base["tokenizer_dir"]) if base.get("tokenizer_dir") else None,
                               variants={k: Path(v) for k, v in base.get("variants", {}).items()},
                               details=base.get("details", {})),
            parent=ParentArtifact(name=parent["name"], dir=Path(parent["dir"]), format=parent["format"],
                                  model_file=parent["model_file"]) if parent else None,
            out_dir=Path(spec["out_dir"]),
            options=recipe.options_model.model_validate(spec["options"]),
            calibration=WorkloadCalibration(get_workload(spec["task"]), data),
            threads=int(spec["threads"]),
        ))
    except CandidateError as err:
        traceback.print_exc()
        write_json(result, {"error": str(err)})
        return 3
    except Exception as err:  # a framework's own failure: the parent fails this candidate only
        traceback.print_exc()
        write_json(result, {"error": error_text(err, spec)})
        return 3
    write_json(result, {"output": asdict(output)})
    return 0


def _main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    setup_child(spec)
    return _build(spec)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
