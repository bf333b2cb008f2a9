"""The measure stage for one candidate: a fresh, isolated subprocess, reused while its measurement key holds."""

from __future__ import annotations

from pathlib import Path

from edgeopt.io.atomic import write_text_atomic
from edgeopt.isolation import file_lock
from edgeopt.measure import measure_in_subprocess
from edgeopt.pipeline.context import ModelInputs, PipelineContext
from edgeopt.pipeline.planning import stable_hash
from edgeopt.results import CandidateRecord, Measurement


def measurement_key(ctx: PipelineContext, record: CandidateRecord, inputs: ModelInputs) -> str:
    """What a measurement depends on: the built artifact (its cache key), the inputs and the benchmark settings."""
    return stable_hash(record.cache_key, inputs.digest, ctx.cfg.benchmark.model_dump())[:20]


def measurement_present(ctx: PipelineContext, name: str, key: str) -> bool:
    """Whether `measurements/<name>` holds a complete measurement made under this key."""
    out = ctx.ws.measurement_dir(name)
    key_file = out / "key.txt"
    return key_file.is_file() and key_file.read_text() == key and (out / "measurement.json").is_file()


def measure_candidate(ctx: PipelineContext, record: CandidateRecord, inputs: ModelInputs) -> Measurement:
    """Measure in a fresh, isolated subprocess; reuse a measurement of the same artifact, inputs and settings.

    `key.txt` is the commit marker: removed before measuring, written (atomically) only after a
    complete measurement, so a measurement killed half-way is never reused.
    """
    ws = ctx.ws
    out = ws.measurement_dir(record.name)
    key = measurement_key(ctx, record, inputs)
    key_file = out / "key.txt"
    if measurement_present(ctx, record.name, key):
        return Measurement.model_validate_json((out / "measurement.json").read_text())
    # Keyed by the folder: a measurement target (its own measurements/) does not wait on the host's.
    with file_lock(ws.root / ".locks" / f"measure-{record.name}-{stable_hash(str(out))[:8]}.lock"):
        if measurement_present(ctx, record.name, key):
            return Measurement.model_validate_json((out / "measurement.json").read_text())
        key_file.unlink(missing_ok=True)
        m = measure_in_subprocess(ctx.cfg.task, ws.candidate_dir(record.name), ws.confine(Path(inputs.path)),
                                  ctx.cfg.benchmark, out, memory_limit_mb=ctx.params.isolation.memory_limit_mb)
        write_text_atomic(key_file, key)
    return m
