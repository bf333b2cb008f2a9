"""Runtime settings search: a small grid of each runtime's own settings, probed, and the winner kept (pure).

A runtime declares its settings as a default plus alternatives per setting (`SettingsSpace`). The grid is
the default and one change at a time from it (llama-bench's comma lists, kept small): a grid of n settings
with k alternatives each is 1 + n*k configurations, not their product. The probe (edgeopt.measure, one fresh
process per candidate) times every configuration in short interleaved passes, so drift hits them alike, and
checks that each gives the default's outputs: a setting that changes them changes quality and is not a
runtime setting (such choices are candidates, scored in full: an OpenVINO inference precision, a KV-cache
type). A configuration wins only when its speed-up over the default clears the noise (the conservative end
of its paired bootstrap CI above 1 + floor); otherwise the default stays. Nothing of the pipeline here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeopt import stats

Settings = dict[str, Any]


@dataclass(frozen=True)
class SettingsSpace:
    """A runtime's settings: the default (what it runs with untuned) and the values worth trying instead.

    `threads` in the default or an alternative stands for the benchmark's thread count; alternatives equal
    to the default (e.g. 1 thread when the benchmark uses 1) are dropped.
    """

    default: Mapping[str, Any]
    alternatives: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def resolve(self, value: Any, threads: int) -> Any:
        return threads if value == "threads" else value

    def default_settings(self, threads: int) -> Settings:
        return {k: self.resolve(v, threads) for k, v in self.default.items()}

    def grid(self, threads: int) -> list[Settings]:
        """The default first, then each alternative value of one setting at a time."""
        base = self.default_settings(threads)
        out = [base]
        for key, values in self.alternatives.items():
            for value in values:
                v = self.resolve(value, threads)
                if v != base.get(key):
                    variant = {**base, key: v}
                    if variant not in out:
                        out.append(variant)
        return out


# Relative L2 distance under which two configurations' outputs are the same (float reductions reordered by a
# thread count move FP32 outputs by ~1e-6; bf16 or a different kernel precision by ~1e-3).
SAME_OUTPUTS_RTOL = 1e-4


def _arrays(outputs: Any) -> list[np.ndarray]:
    if isinstance(outputs, Mapping):
        return [np.asarray(outputs[k]) for k in sorted(outputs)]
    if isinstance(outputs, tuple | list):
        return [np.asarray(o) for o in outputs]
    return [np.asarray(outputs)]


def same_outputs(a: Any, b: Any, rtol: float = SAME_OUTPUTS_RTOL) -> bool:
    """Whether two probe outputs agree: integers (token ids) exactly, floats within `rtol` relative L2."""
    xs, ys = _arrays(a), _arrays(b)
    if len(xs) != len(ys):
        return False
    for x, y in zip(xs, ys, strict=True):
        if x.shape != y.shape:
            return False
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(y.dtype, np.floating)):
            if not np.array_equal(x, y):
                return False
            continue
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        if not (np.all(np.isfinite(x64)) and np.all(np.isfinite(y64))):
            return False
        scale = max(float(np.linalg.norm(y64)), 1e-12)
        if float(np.linalg.norm(x64 - y64)) / scale > rtol:
            return False
    return True


def label(settings: Mapping[str, Any], default: Mapping[str, Any]) -> str:
    """What a configuration changes from the default, e.g. "allow_spinning=False"; "default" for none."""
    changed = [f"{k}={v}" for k, v in settings.items() if default.get(k) != v]
    return ",".join(changed) or "default"


class Probe(BaseModel):
    """One configuration's probe: its pooled p50, its speed-up over the default with a CI, and the verdict."""

    model_config = ConfigDict(extra="forbid")

    settings: Settings
    label: str
    p50_ms: float | None = None
    speedup: float | None = None  # default p50 / this p50 (>1: faster)
    speedup_ci: tuple[float, float] | None = None
    # "default" | "faster" (clears the noise) | "noise" (inside it) | "slower" | "changes outputs" | "failed"
    verdict: str
    detail: str = ""


class Tuning(BaseModel):
    """The probe of one candidate: every configuration tried and the one its measurement runs with."""

    model_config = ConfigDict(extra="forbid")

    runtime: str
    default: Settings
    chosen: Settings
    chosen_label: str = "default"
    passes: int = 0
    probes: list[Probe] = Field(default_factory=list)
    note: str = ""  # why nothing was probed (no settings, no probe, the probe failed), when so

    def summary(self) -> str:
        if not self.probes:
            return f"default ({self.note or 'not probed'})"
        best = next((p for p in self.probes if p.label == self.chosen_label), None)
        if self.chosen_label == "default" or best is None or best.speedup_ci is None:
            return f"default ({len(self.probes) - 1} alternative(s) within the noise, slower or refused)"
        lo, hi = best.speedup_ci
        return f"{self.chosen_label}: {best.speedup:.2f}x [{lo:.2f}, {hi:.2f}] over the default"


def choose(runtime: str, grid: Sequence[Settings], series: Mapping[int, Sequence[Sequence[float]]],
           outputs_equal: Mapping[int, bool], failures: Mapping[int, str], floor: float = 0.03) -> Tuning:
    """Pick a configuration from its probe passes.

    grid: the configurations, the default first (SettingsSpace.grid). series[i]: configuration i's samples
    (seconds), one sequence per interleaved pass. outputs_equal[i]: whether its outputs matched the default's.
    failures[i]: why configuration i could not run. The winner is the fastest configuration whose speed-up CI
    clears 1 + floor; with none, the default.
    """
    default = dict(grid[0])
    if 0 in failures or not series.get(0):
        raise ValueError(f"the default settings did not run: {failures.get(0, 'no samples')}")
    base = [np.asarray(s, dtype=np.float64) for s in series[0]]
    probes = [Probe(settings=default, label="default", p50_ms=1000 * stats.median(np.concatenate(base)),
                    speedup=1.0, verdict="default")]
    best_index, best_speedup = 0, 1.0
    for i, settings in enumerate(grid[1:], start=1):
        name = label(settings, default)
        if i in failures:
            probes.append(Probe(settings=dict(settings), label=name, verdict="failed", detail=failures[i]))
            continue
        alt = [np.asarray(s, dtype=np.float64) for s in series.get(i, [])]
        if not alt:
            probes.append(Probe(settings=dict(settings), label=name, verdict="failed", detail="no samples"))
            continue
        p50 = stats.median(np.concatenate(alt))
        speedup = stats.median(np.concatenate(base)) / p50
        ci = stats.rounds_ratio_ci(base, alt, stats.median)
        if not outputs_equal.get(i, False):
            verdict = "changes outputs"
        elif ci[0] > 1 + floor:
            verdict = "faster"
        elif ci[1] < 1 - floor:
            verdict = "slower"
        else:
            verdict = "noise"
        probes.append(Probe(settings=dict(settings), label=name, p50_ms=1000 * p50, speedup=speedup,
                            speedup_ci=(float(ci[0]), float(ci[1])), verdict=verdict))
        if verdict == "faster" and speedup > best_speedup:
            best_index, best_speedup = i, speedup
    chosen = dict(grid[best_index])
    return Tuning(runtime=runtime, default=default, chosen=chosen, chosen_label=label(chosen, default),
                  passes=len(base), probes=probes)
