"""A tiny progress channel: stages report steps; the CLI draws them (rich), tests ignore them."""

from __future__ import annotations

from collections.abc import Callable

ProgressSink = Callable[[str, int, int, str], None]  # (stage, done, total, label)

_sink: ProgressSink | None = None


def set_sink(sink: ProgressSink | None) -> None:
    global _sink
    _sink = sink


def report(stage: str, done: int, total: int, label: str = "") -> None:
    if _sink is not None:
        _sink(stage, done, total, label)
