"""The feeds of an onnx-model pipeline: the graph's I/O spec, the user's or synthesised samples, the data folder.

A sample is one model call: one array per graph input, at the input's full rank (a model with a batch axis
gets batch-sized samples, e.g. [1, 3, 320, 320]). A set of samples is stored per input as one array with a
leading sample axis, [n, *sample_shape], in the dtype the graph declares; nothing is cast, so integer and
boolean inputs reach every runtime (and every calibrator) exactly as given.

The data folder (`build_data`): `eval.npz` and `calibration.npz` (key `x<i>` for the graph's i-th input, so
any input name works, even one np.savez would take as its own keyword) and `manifest.json` (input names,
dtypes, sample shapes, counts, the seed and the graph's I/O spec, which the validation suite checks against).
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.errors import CandidateError, UserError, one_line
from edgeopt.io.atomic import atomic_dir
from edgeopt.iospec import IOSpec, TensorSpec

EVAL_FILE = "eval.npz"
CALIBRATION_FILE = "calibration.npz"
MANIFEST_FILE = "manifest.json"
FILES = (EVAL_FILE, CALIBRATION_FILE, MANIFEST_FILE)
SETS = {"eval": EVAL_FILE, "calibration": CALIBRATION_FILE}
DEFAULT_CALIBRATION_FRACTION = 0.25
RESAMPLE_ATTEMPTS = 20  # synthesis: redraws of calibration samples that repeat an evaluation sample

Samples = dict[str, np.ndarray]  # input name -> [n, *sample_shape]


class InputInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: str
    sample_shape: list[int]


class Manifest(BaseModel):
    """`manifest.json` of the data folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    source: str
    seed: int
    inputs: list[InputInfo]
    n_eval: int
    n_calibration: int
    io_spec: dict[str, Any] | None = None  # the base graph's (None: built in preflight, before the base)


# -- the graph ------------------------------------------------------------------------------------


def graph_spec(path: Path, where: str = "model") -> IOSpec:
    """The I/O spec the ONNX file declares (inputs: graph inputs that are not initializers); UserError for a
    graph without inputs, or with a tensor type this pipeline cannot feed or read."""
    import onnx

    from edgeopt.adapters.onnxruntime import onnx_io_spec

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise UserError(f"{where}.path: cannot read ONNX file {path}: {one_line(err)}") from None
    try:
        spec = onnx_io_spec(model)
    except CandidateError as err:
        raise UserError(f"{where}: {path.name}: {err}") from None
    if not spec.inputs or not spec.outputs:
        raise UserError(f"{where}: {path.name} has {len(spec.inputs)} input(s) and {len(spec.outputs)} output(s); "
                        f"onnx-model needs at least one of each")
    return spec


def symbolic_dims(spec: IOSpec) -> list[str]:
    """The symbolic dimension names of the inputs, in order of first appearance."""
    out: list[str] = []
    for t in spec.inputs:
        out += [d for d in t.shape if isinstance(d, str) and d not in out]
    return out


def is_float(dtype: str | np.dtype) -> bool:
    return bool(np.issubdtype(np.dtype(dtype), np.floating))


# -- samples --------------------------------------------------------------------------------------


def sample_hashes(samples: Samples, names: list[str]) -> list[str]:
    """sha256 of each sample: every input's dtype, shape and bytes, in input order."""
    n = count(samples)
    out = []
    for i in range(n):
        h = hashlib.sha256()
        for name in names:
            a = np.ascontiguousarray(samples[name][i])
            h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        out.append(h.hexdigest())
    return out


def count(samples: Samples) -> int:
    return len(next(iter(samples.values()))) if samples else 0


def take(samples: Samples, index: np.ndarray | list[int]) -> Samples:
    idx = np.asarray(index, dtype=np.int64)
    return {k: v[idx] for k, v in samples.items()}


def feed_of(samples: Samples, i: int) -> dict[str, np.ndarray]:
    """The i-th sample as a model feed (each input at its full rank)."""
    return {k: v[i] for k, v in samples.items()}


def as_samples(arrays: Mapping[str, np.ndarray], spec: IOSpec, where: str) -> Samples:
    """The user's arrays as samples of the spec's inputs; UserError naming the first problem.

    An array of the input's own rank is split on its first axis (sample i is rows i:i+1); one of rank + 1
    has a separate leading sample axis. The dtype must be the graph's exactly: casting would change what the
    model sees (an int64 id is not a float, a mask is not an int).
    """
    missing = [t.name for t in spec.inputs if t.name not in arrays]
    if missing:
        raise UserError(f"{where}: no array for input(s) {', '.join(missing)}; the model takes "
                        f"{spec.describe_inputs()} (the file has {', '.join(sorted(arrays)) or 'no arrays'})")
    extra = sorted(set(arrays) - set(spec.input_names))
    if extra:
        raise UserError(f"{where}: array(s) {', '.join(extra)} are not inputs of the model (it takes "
                        f"{', '.join(spec.input_names)})")
    out: Samples = {}
    for t in spec.inputs:
        a = np.asarray(arrays[t.name])
        if a.dtype != np.dtype(t.dtype):
            raise UserError(f"{where}: {t.name} is {a.dtype}, the model takes {t.describe()} (convert it yourself: "
                            f"the pipeline feeds inputs exactly as given)")
        rank = len(t.shape)
        if a.ndim == rank + 1:
            samples = a
        elif a.ndim == rank and rank >= 1:
            samples = a[:, None] if a.shape[0] else a.reshape(0, 1, *a.shape[1:])
        else:
            raise UserError(f"{where}: {t.name} has shape {list(a.shape)}; the model takes {t.describe()}, so "
                            f"give [samples, {', '.join(str(d) for d in t.shape)}]"
                            f"{' or the input rank split on its first axis' if rank else ''}")
        if len(samples) and (problem := t.problem(samples[0])):
            raise UserError(f"{where}: a sample of {problem}")
        out[t.name] = np.ascontiguousarray(samples)
    sizes = {k: len(v) for k, v in out.items()}
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{k}: {n}" for k, n in sizes.items())
        raise UserError(f"{where}: the inputs have different numbers of samples ({shown})")
    if count(out) == 0:
        raise UserError(f"{where}: no samples (the leading axis is empty)")
    return out


def read_npz(path: Path, where: str) -> dict[str, np.ndarray]:
    """Every array of a user's .npz (no pickled objects); UserError for a missing or unreadable file."""
    if not path.is_file():
        raise UserError(f"{where}: not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # a plain .npy array
            raise UserError(f"{where}: {path} is a single array; give an .npz with one array per input name")
        with loaded as f:
            return {k: np.asarray(f[k]) for k in f.files}
    except UserError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"{where}: cannot read {path} as .npz: {one_line(err)}") from None


def load_npz_samples(path: Path, spec: IOSpec | None, where: str) -> Samples:
    """A user's feeds file as samples; without a spec (preflight's data build) only the file is checked."""
    arrays = read_npz(path, where)
    if spec is not None:
        return as_samples(arrays, spec, where)
    if not arrays:
        raise UserError(f"{where}: {path} holds no arrays")
    sizes = {k: (len(v) if v.ndim else 0) for k, v in arrays.items()}
    if len(set(sizes.values())) > 1 or 0 in sizes.values():
        raise UserError(f"{where}: every array needs the same, non-zero number of samples on its first axis "
                        f"({', '.join(f'{k}: {n}' for k, n in sizes.items())})")
    return {k: np.ascontiguousarray(v) for k, v in arrays.items()}


def split_calibration(samples: Samples, fraction: float, seed: int, names: list[str],
                      where: str) -> tuple[Samples, Samples]:
    """(evaluation, calibration): a seeded `fraction` of the samples held out for calibration (at least one, and at
    least one left to evaluate); a held-out sample equal to an evaluation sample is dropped (the sets are disjoint)."""
    n = count(samples)
    if n < 2:
        raise UserError(f"{where}: {n} sample(s) cannot be split into evaluation and calibration; give at least 2, "
                        f"or a calibration_path")
    n_cal = min(n - 1, max(1, round(n * fraction)))
    order = np.random.default_rng(seed).permutation(n)
    evaluation = take(samples, np.sort(order[n_cal:]))
    calibration = take(samples, np.sort(order[:n_cal]))
    seen = set(sample_hashes(evaluation, names))
    keep = [i for i, h in enumerate(sample_hashes(calibration, names)) if h not in seen]
    if not keep:
        raise UserError(f"{where}: every calibration sample repeats an evaluation sample; give distinct samples")
    return evaluation, take(calibration, keep)


# -- synthesis ------------------------------------------------------------------------------------


def sample_shapes(spec: IOSpec, dims: Mapping[str, int], where: str) -> dict[str, tuple[int, ...]]:
    """Each input's concrete shape; UserError for a symbolic dimension without a declared size, or a declared
    one no input has (a typo would otherwise be ignored)."""
    symbols = symbolic_dims(spec)
    for t in spec.inputs:
        for d in t.shape:
            if isinstance(d, str) and d not in dims:
                raise UserError(f"{where}.dims: input {t.name} {t.describe()} has the symbolic dimension {d!r} "
                                f"without a size; declare it (dims: {{{d}: <size>}})")
    unknown = [d for d in dims if d not in symbols]
    if unknown:
        raise UserError(f"{where}.dims: {', '.join(unknown)} is not a symbolic dimension of the model's inputs "
                        f"({', '.join(symbols) or 'it has none'})")
    return {t.name: tuple(int(dims[d]) if isinstance(d, str) else int(d) for d in t.shape) for t in spec.inputs}


def check_ranges(spec: IOSpec, ranges: Mapping[str, tuple[float, float]], where: str) -> None:
    """Every float or integer input has a range (integers: integral bounds its dtype holds); booleans may."""
    unknown = [n for n in ranges if n not in spec.input_names]
    if unknown:
        raise UserError(f"{where}.ranges: {', '.join(unknown)} is not an input of the model "
                        f"(it takes {', '.join(spec.input_names)})")
    for t in spec.inputs:
        dtype = np.dtype(t.dtype)
        if t.name not in ranges:
            if dtype != np.bool_:
                raise UserError(f"{where}.ranges: no value range for input {t.name} {t.describe()}; "
                                f"declare one (ranges: {{{t.name}: [lo, hi]}})")
            continue
        lo, hi = ranges[t.name]
        if dtype == np.bool_ or np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype) if dtype != np.bool_ else None
            bounds = (0, 1) if info is None else (int(info.min), int(info.max))
            if not (float(lo).is_integer() and float(hi).is_integer()) or lo < bounds[0] or hi > bounds[1]:
                raise UserError(f"{where}.ranges.{t.name}: [{lo:g}, {hi:g}] must be whole numbers within "
                                f"{t.dtype}'s [{bounds[0]}, {bounds[1]}] (the input is {t.describe()})")


def _draw(t: TensorSpec, shape: tuple[int, ...], n: int, rng: np.random.Generator,
          value_range: tuple[float, float] | None) -> np.ndarray:
    dtype = np.dtype(t.dtype)
    full = (n, *shape)
    if dtype == np.bool_:
        if value_range is None:
            return np.ones(full, dtype=np.bool_)
        return rng.integers(int(value_range[0]), int(value_range[1]), size=full, endpoint=True).astype(np.bool_)
    assert value_range is not None  # check_ranges
    lo, hi = value_range
    if np.issubdtype(dtype, np.integer):
        return rng.integers(int(lo), int(hi), size=full, endpoint=True, dtype=dtype)
    return rng.uniform(lo, hi, size=full).astype(dtype)


def synthesize(spec: IOSpec, dims: Mapping[str, int], ranges: Mapping[str, tuple[float, float]], n_eval: int,
               n_calibration: int, seed: int, where: str = "data") -> tuple[Samples, Samples]:
    """(evaluation, calibration) samples drawn from seeded streams (the calibration stream is another one); a
    calibration sample equal to an evaluation sample is redrawn, so the sets are disjoint."""
    shapes = sample_shapes(spec, dims, where)
    check_ranges(spec, ranges, where)

    def draw(n: int, rng: np.random.Generator) -> Samples:
        return {t.name: _draw(t, shapes[t.name], n, rng, ranges.get(t.name)) for t in spec.inputs}

    names = list(spec.input_names)
    evaluation = draw(n_eval, np.random.default_rng([seed, 0]))
    seen = set(sample_hashes(evaluation, names))
    rng = np.random.default_rng([seed, 1])
    calibration = draw(n_calibration, rng)
    for _ in range(RESAMPLE_ATTEMPTS):
        clash = [i for i, h in enumerate(sample_hashes(calibration, names)) if h in seen]
        if not clash:
            return evaluation, calibration
        fresh = draw(len(clash), rng)
        for name in names:
            calibration[name][clash] = fresh[name]
    raise UserError(f"{where}: the declared ranges allow too few distinct feeds for a calibration set disjoint "
                    f"from the {n_eval} evaluation samples; widen data.ranges or lower n_eval/n_calibration")


# -- the data folder ------------------------------------------------------------------------------


def _save(path: Path, samples: Samples, names: list[str]) -> None:
    arrays: dict[str, Any] = {f"x{i}": samples[name] for i, name in enumerate(names)}
    with path.open("wb") as f:
        np.savez(f, **arrays)


def write_data(out_dir: Path, evaluation: Samples, calibration: Samples, *, kind: str, source: str, seed: int,
               spec: IOSpec | None) -> Manifest:
    """Publish the data folder atomically (a finished folder or none)."""
    names = list(spec.input_names) if spec is not None else sorted(evaluation)
    manifest = Manifest(
        kind=kind, source=source, seed=seed,
        inputs=[InputInfo(name=n, dtype=str(evaluation[n].dtype), sample_shape=list(evaluation[n].shape[1:]))
                for n in names],
        n_eval=count(evaluation), n_calibration=count(calibration),
        io_spec=spec.to_dict() if spec is not None else None,
    )
    with atomic_dir(Path(out_dir)) as tmp:
        _save(tmp / EVAL_FILE, evaluation, names)
        _save(tmp / CALIBRATION_FILE, calibration, names)
        (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def read_manifest(data_dir: Path) -> Manifest:
    path = Path(data_dir) / MANIFEST_FILE
    try:
        return Manifest.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found: run the prepare stage first") from None
    except ValueError as err:
        raise UserError(f"{path}: invalid data manifest ({one_line(err)})") from None


@dataclass(frozen=True)
class DataSets:
    manifest: Manifest
    eval: Samples
    calibration: Samples

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.manifest.inputs]


def load_data(data_dir: Path) -> DataSets:
    """The data folder `write_data` published; UserError if a file is missing or unreadable."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    sets: dict[str, Samples] = {}
    for key, file in SETS.items():
        arrays = read_npz(data_dir / file, f"{data_dir.name}/{file}")
        try:
            sets[key] = {info.name: arrays[f"x{i}"] for i, info in enumerate(manifest.inputs)}
        except KeyError as err:
            raise UserError(f"{data_dir / file}: no array {err} for an input the manifest lists") from None
    return DataSets(manifest=manifest, eval=sets["eval"], calibration=sets["calibration"])


def data_digest(data_dir: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode())
        h.update((Path(data_dir) / name).read_bytes())
    return h.hexdigest()

