"""Test-only recipes and runtimes that crash, hang, or eat memory: fault injection for isolation tests.

Tests call `register()`/`unregister()`. The isolated build/measure children import this module
by name (the pipeline passes them the module of a recipe's build function), and there it
registers itself on import.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Any

from edgeopt.isolation import ENV_CHILD
from edgeopt.recipes import BuildContext, BuildOutput, NoOptions, Recipe, all_recipes, register_recipe, register_runtime

CHUNK = 64 * 2**20
SAFETY_CAP = 6 * 2**30  # never grow past this even if nothing stops us (shared machine)


def _grow_until_killed() -> None:
    """Touch memory 64 MB at a time, slowly enough for the parent's RSS poll to see it grow."""
    hog = []
    while len(hog) * CHUNK < SAFETY_CAP:
        hog.append(bytearray(b"\1") * CHUNK)
        time.sleep(0.05)
    raise RuntimeError("grew to the safety cap without being killed")


def _marker(ctx: BuildContext, runtime: str) -> BuildOutput:
    (ctx.out_dir / "model.bin").write_bytes(b"not a model")
    return BuildOutput(format="fault", runtime=runtime, precision="fp32", model_file="model.bin")


def _abort(ctx: BuildContext) -> BuildOutput:
    print("fault-abort: calling abort()", flush=True)
    os.abort()


def _segfault(ctx: BuildContext) -> BuildOutput:
    print("fault-segfault: dereferencing NULL", flush=True)
    ctypes.string_at(0)
    raise AssertionError("unreachable")


def _exit(ctx: BuildContext) -> BuildOutput:
    os._exit(7)


def _sigkill(ctx: BuildContext) -> BuildOutput:
    """What the kernel's OOM killer does to a process."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def _raise(ctx: BuildContext) -> BuildOutput:
    raise RuntimeError("injected framework failure")


def _hang(ctx: BuildContext) -> BuildOutput:
    print("fault-hang: sleeping forever", flush=True)
    while True:
        time.sleep(60)


def _oom(ctx: BuildContext) -> BuildOutput:
    _grow_until_killed()
    raise AssertionError("unreachable")


def _huge_alloc(ctx: BuildContext) -> BuildOutput:
    bytearray(16 * 2**30)  # one allocation far past any limit: the RLIMIT_DATA backstop refuses it
    raise AssertionError("unreachable")


def _escape(ctx: BuildContext) -> BuildOutput:
    (ctx.out_dir / "model.bin").write_bytes(b"x")
    return BuildOutput(format="fault", runtime="fault-abort", precision="fp32", model_file="../../../../etc/hostname")


def _symlink_out(ctx: BuildContext) -> BuildOutput:
    (ctx.out_dir / "model.bin").write_bytes(b"x")
    (ctx.out_dir / "tokenizer.json").symlink_to("/etc/hostname")
    return BuildOutput(format="fault", runtime="fault-abort", precision="fp32", model_file="model.bin")


BUILDS = {
    "fault-abort": _abort, "fault-segfault": _segfault, "fault-exit": _exit, "fault-sigkill": _sigkill,
    "fault-raise": _raise,
    "fault-hang": _hang, "fault-oom": _oom, "fault-huge-alloc": _huge_alloc, "fault-escape": _escape,
    "fault-symlink": _symlink_out,
    "fault-measure-abort": lambda ctx: _marker(ctx, "fault-abort"),
    "fault-measure-oom": lambda ctx: _marker(ctx, "fault-oom"),
}


def _runtime_abort(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int) -> Any:
    print("fault runtime: calling abort() while loading", flush=True)
    os.abort()


def _runtime_oom(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int) -> Any:
    _grow_until_killed()


RUNTIMES = {"fault-abort": _runtime_abort, "fault-oom": _runtime_oom}


def register() -> None:
    known = all_recipes()
    for name, build in BUILDS.items():
        if name not in known:
            register_recipe(Recipe(name=name, framework="fault-injection", options_model=NoOptions,
                                   accepts=("base",), build=build, description="test-only fault"))
    for name, loader in RUNTIMES.items():
        register_runtime(name)(loader)


def unregister() -> None:
    """Take the faults out of the registry again, so no other test sees them."""
    from edgeopt import recipes

    for name in BUILDS:
        recipes._RECIPES.pop(name, None)
    for name in RUNTIMES:
        recipes._RUNTIMES.pop(name, None)


if os.environ.get(ENV_CHILD):  # an isolated build/measure child: the test registered these in its parent
    register()
