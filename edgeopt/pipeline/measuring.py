"""The measure stage: rounds of fresh, isolated subprocesses, grouped in a measuring session.

A session is one set of candidates (names and measurement keys, the baseline among them) measured
together: every round of every candidate in it ran in passes interleaved with the others, so their
comparisons share the machine's state. A run whose set is the same as the last session's continues it:
committed rounds are reused (a killed run resumes where it stopped, and a finished session is reused
whole, marked `reused`); any other set starts a new session, so a candidate is never compared with a
baseline measured in another run.

On disk, under `measurements/`:
- `session.json`: the session's key and id, whether it finished, and the candidates that failed;
- `<name>/rounds/<i>/`: round i (`measurement.json` with raw samples, `measure.log`), committed by
  `key.txt` (the measurement key and session id, written only after a complete round);
- `<name>/`: the quality outputs (written by the candidate's first round) and, when the session ends,
  the pooled `measurement.json` and its `key.txt`.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from edgeopt import machine
from edgeopt.errors import CandidateError
from edgeopt.io.atomic import write_text_atomic
from edgeopt.isolation import file_lock
from edgeopt.measure import HARNESS_VERSION, MEASUREMENT_FILE, TUNING_FILE, measure_in_subprocess, tune_in_subprocess
from edgeopt.pipeline.context import ModelInputs, PipelineContext
from edgeopt.pipeline.planning import stable_hash
from edgeopt.results import CandidateRecord, Measurement
from edgeopt.rounds import combine
from edgeopt.tuning import Tuning

SESSION_FILE = "session.json"


def measurement_key(ctx: PipelineContext, record: CandidateRecord, inputs: ModelInputs) -> str:
    """What a measurement depends on: the built artifact (its cache key), the inputs, the benchmark
    settings, the harness version and the machine (its fingerprint)."""
    return stable_hash(record.cache_key, inputs.digest, ctx.cfg.benchmark.model_dump(), HARNESS_VERSION,
                       machine.fingerprint(machine.identity()))[:20]


class Session:
    """The measuring session of one pipeline's candidates (see the module docstring)."""

    def __init__(self, ctx: PipelineContext, keys: dict[str, str]) -> None:
        self.ctx = ctx
        self.keys = dict(keys)
        self.root = ctx.ws.root / "measurements"
        self.key = stable_hash(sorted(self.keys.items()))[:20]
        state = self._read()
        if state.get("key") == self.key:
            self.id: str = state["id"]
            self.complete: bool = bool(state.get("complete"))
            self.failed: dict[str, str] = dict(state.get("failed", {}))
        else:
            self.id, self.complete, self.failed = uuid.uuid4().hex[:12], False, {}
            for name in self.keys:  # another session's rounds: never reused, so not kept to be mistaken
                shutil.rmtree(ctx.ws.measurement_dir(name) / "rounds", ignore_errors=True)
            self._write()

    def _read(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.root / SESSION_FILE).read_text())
            return state
        except (OSError, ValueError):
            return {}

    def _write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.root / SESSION_FILE, json.dumps(
            {"key": self.key, "id": self.id, "complete": self.complete, "failed": self.failed,
             "candidates": self.keys, "harness_version": HARNESS_VERSION}, indent=2) + "\n")

    def round_dir(self, name: str, index: int) -> Path:
        return self.ctx.ws.measurement_dir(name) / "rounds" / str(index)

    def tuning_dir(self, name: str) -> Path:
        """The runtime settings probe of `name` (beside its rounds: cleared with them by a new session)."""
        return self.ctx.ws.measurement_dir(name) / "rounds" / "tuning"

    def _marker(self, name: str) -> str:
        return f"{self.keys[name]} {self.id}"

    def committed_round(self, name: str, index: int) -> Measurement | None:
        """Round `index` of `name`, if this session committed it."""
        out = self.round_dir(name, index)
        marker = out / "key.txt"
        if not (marker.is_file() and marker.read_text() == self._marker(name) and (out / MEASUREMENT_FILE).is_file()):
            return None
        return Measurement.model_validate_json((out / MEASUREMENT_FILE).read_text())

    def committed_rounds(self, name: str) -> list[Measurement]:
        rounds_dir = self.ctx.ws.measurement_dir(name) / "rounds"
        indices = sorted(int(p.name) for p in rounds_dir.iterdir() if p.name.isdigit()) if rounds_dir.is_dir() else []
        found = [self.committed_round(name, i) for i in indices]
        return [m for m in found if m is not None]

    def fail(self, name: str, message: str) -> None:
        self.failed[name] = message
        self._write()

    def finish(self, measurements: dict[str, Measurement]) -> None:
        """Write each candidate's pooled measurement and close the session: a re-run reuses it whole."""
        for name, m in measurements.items():
            out = self.ctx.ws.measurement_dir(name)
            m.write(out / MEASUREMENT_FILE)
            write_text_atomic(out / "key.txt", self._marker(name))
        self.complete = True
        self._write()

    def reused(self) -> tuple[dict[str, Measurement], dict[str, str]] | None:
        """A finished session's pooled measurements (marked reused) and failures, or None."""
        if not self.complete:
            return None
        out: dict[str, Measurement] = {}
        for name in self.keys:
            if name in self.failed:
                continue
            folder = self.ctx.ws.measurement_dir(name)
            marker = folder / "key.txt"
            if not (marker.is_file() and marker.read_text() == self._marker(name)):
                return None
            m = Measurement.model_validate_json((folder / MEASUREMENT_FILE).read_text())
            out[name] = m.model_copy(update={"reused": True})
        return out, dict(self.failed)


def measure_round(ctx: PipelineContext, session: Session, record: CandidateRecord, inputs: ModelInputs,
                  index: int, write_outputs: bool) -> Measurement:
    """Round `index` of one candidate: the session's committed one, or a new fresh-process measurement.

    The machine's benchmark slot is held around the subprocess (one measurement per machine, whichever of
    the CLI, `dvc repro`, Prefect or `make bench` runs it), and the machine's load is sampled just before.
    """
    from edgeopt.orchestration import benchmark_slot

    done = session.committed_round(record.name, index)
    if done is not None:
        return done.model_copy(update={"reused": True})
    ws = ctx.ws
    out = session.round_dir(record.name, index)
    orch = ctx.params.orchestration
    with benchmark_slot(orch.benchmark_concurrency_limit, orch.benchmark_wait_s, f"{ctx.namespace}/{record.name}"), \
            file_lock(ws.root / ".locks" / f"measure-{record.name}-{stable_hash(str(out))[:8]}.lock"):
        tuning = tuned_settings(ctx, session, record, inputs)
        (out / "key.txt").unlink(missing_ok=True)
        load = machine.load()
        m = measure_in_subprocess(ctx.cfg.task, ws.candidate_dir(record.name), ws.confine(Path(inputs.path)),
                                  ctx.cfg.benchmark, out, memory_limit_mb=ctx.params.isolation.memory_limit_mb,
                                  round_index=index, write_outputs=write_outputs,
                                  outputs_dir=ws.measurement_dir(record.name),
                                  settings=tuning.chosen if tuning else None)
        rounds = [r.model_copy(update={"load": load, "under_load": machine.under_load(load)}) for r in m.rounds]
        m = m.model_copy(update={"rounds": rounds, "session": session.id,
                                 "tuning": tuning.model_dump(mode="json") if tuning else {}})
        m.write(out / MEASUREMENT_FILE)
        write_text_atomic(out / "key.txt", session._marker(record.name))
    return m


def tuned_settings(ctx: PipelineContext, session: Session, record: CandidateRecord,
                   inputs: ModelInputs) -> Tuning | None:
    """The candidate's runtime settings for this session: probed once (edgeopt.tuning) before its first round
    and committed with the session, so every round of it runs with the same ones; None: tuning is off.

    A probe that fails (a crash, the memory limit with every configuration loaded) leaves the default settings,
    with the reason: the rounds then say whether the candidate itself runs."""
    if not ctx.cfg.benchmark.tuning.enabled:
        return None
    out = session.tuning_dir(record.name)
    marker = out / "key.txt"
    if marker.is_file() and marker.read_text() == session._marker(record.name) and (out / TUNING_FILE).is_file():
        return Tuning.model_validate_json((out / TUNING_FILE).read_text())
    marker.unlink(missing_ok=True)
    try:
        tuning = tune_in_subprocess(ctx.cfg.task, ctx.ws.candidate_dir(record.name), ctx.ws.confine(Path(inputs.path)),
                                    ctx.cfg.benchmark, out, memory_limit_mb=ctx.params.isolation.memory_limit_mb)
    except CandidateError as err:
        tuning = Tuning(runtime=record.runtime, default={}, chosen={}, note=f"probe failed: {err}")
        write_text_atomic(out / TUNING_FILE, tuning.model_dump_json(indent=2))
    write_text_atomic(marker, session._marker(record.name))
    return tuning


def pooled(parts: list[Measurement], session: Session) -> Measurement:
    """A candidate's rounds pooled, stamped with the session."""
    return combine(parts).model_copy(update={"session": session.id, "reused": all(p.reused for p in parts)})


def measurement_present(ctx: PipelineContext, name: str, key: str) -> bool:
    """Whether `measurements/<name>` holds a pooled measurement made under this key (any session)."""
    marker = ctx.ws.measurement_dir(name) / "key.txt"
    return marker.is_file() and marker.read_text().split(" ")[0] == key and \
        (ctx.ws.measurement_dir(name) / MEASUREMENT_FILE).is_file()

