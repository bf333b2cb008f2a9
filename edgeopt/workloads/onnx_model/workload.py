"""onnx-model: any ONNX graph's named tensors in and out. Speed is one call on `benchmark.batch_size` samples plus a
throughput batch; quality is every output's closeness to the FP32 base's on the same evaluation samples.

Every candidate sees the same samples (`inputs.npz`: `eval.x<i>` / `calibration.x<i>` for the base graph's i-th
input, whose name is `names[i]`), fed by name in the graph's own dtypes. Samples are batched for speed by
concatenating them on the first axis where the graph allows it (every input's and output's first axis is the same
symbolic dimension), else called one after another; quality always runs one sample per call, the feeds exactly
as the data folder holds them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import columns as col
from edgeopt.config import BenchmarkConfig, PipelineConfig
from edgeopt.errors import CandidateError, UserError
from edgeopt.io.atomic import atomic_dir, atomic_file
from edgeopt.iospec import Feed, IOSpec
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import EvalDataSummary, Quality
from edgeopt.sources import SourceFacts
from edgeopt.taskspec import SourceKind
from edgeopt.validation import ValidationReport
from edgeopt.workloads.base import Speed, TorchForm, Workload, batch_speed
from edgeopt.workloads.onnx_model import NpzFeeds, OnnxGraphModel, SyntheticFeeds
from edgeopt.workloads.onnx_model.data import (
    DEFAULT_CALIBRATION_FRACTION,
    FILES,
    Samples,
    check_ranges,
    count,
    data_digest,
    feed_of,
    graph_spec,
    load_data,
    load_npz_samples,
    sample_hashes,
    sample_shapes,
    split_calibration,
    synthesize,
    write_data,
)
from edgeopt.workloads.onnx_model.quality import (
    PER_OUTPUT,
    compare_output,
    looks_like_class_scores,
    per_sample,
    quality_intervals,
    summarize,
)

ONNX_FILE = "model.onnx"
OUTPUTS_FILE = "outputs.npz"  # names [k]; v<j>: output j of every sample, flattened and concatenated; s<j>: shapes
NAMES = "names"
SUMMARY_METRICS = ("min_cosine", "max_rel_l2", "max_abs_error", "min_snr_db", "min_argmax_agreement")
# Relative to the base already (1 = identical): their own retention.
RETAINED = ("min_cosine", "min_argmax_agreement")
ARGMAX = "min_argmax_agreement"
# The served model's outputs for a measured sample may differ from the measured ones only by float noise.
LOAD_CHECK_RTOL = 1e-4
_NOT_IN_KEYS = re.compile(r"[^A-Za-z0-9_.\- /:]")  # characters MLflow refuses in a metric key


def _key(metric: str, output: str) -> str:
    """`<metric>.<output>`, the output name reduced to what MLflow allows in a metric key."""
    return f"{metric}.{_NOT_IN_KEYS.sub('_', output)}"


def _sets(inputs: Any) -> tuple[list[str], Samples, Samples]:
    """(input names, evaluation samples, calibration samples) of the saved inputs (np.load's NpzFile, or a dict)."""
    names = [str(n) for n in np.asarray(inputs[NAMES])]
    return (names, {n: np.asarray(inputs[f"eval.x{i}"]) for i, n in enumerate(names)},
            {n: np.asarray(inputs[f"calibration.x{i}"]) for i, n in enumerate(names)})


def batchable(spec: IOSpec) -> bool:
    """Whether samples concatenate into one call: every input's and output's first axis is one symbolic dimension."""
    first = {t.shape[0] if t.shape else None for t in (*spec.inputs, *spec.outputs)}
    return len(first) == 1 and isinstance(next(iter(first)), str)


def batch_call(runner: Any, samples: Samples, start: int, k: int) -> Callable[[], Any]:
    """One request of k samples (cycling through the set): one call on their concatenation where the graph
    batches, else k calls in a row."""
    n = count(samples)
    picked = [(start + i) % n for i in range(k)]
    if k == 1 or not batchable(runner.io_spec):
        feeds = [feed_of(samples, i) for i in picked]
        return lambda: [runner.run(f) for f in feeds]
    feed = {name: np.concatenate([v[i] for i in picked]) for name, v in samples.items()}
    return lambda: runner.run(feed)


def class_score_outputs(spec: IOSpec) -> list[str]:
    return [t.name for t in spec.outputs
            if looks_like_class_scores(len(t.shape), t.dtype, t.shape[1] if len(t.shape) == 2 and
                                       isinstance(t.shape[1], int) else None)]


class OnnxModelWorkload(Workload):
    task = "onnx-model"
    default_quality_metrics = ("min_cosine",)
    metric_names = SUMMARY_METRICS
    columns = (*col.LATENCY, *col.FOOTPRINT,
               col.Column("min cos", col.measured(".5f", col.metric("min_cosine"))),
               col.Column("max rel L2", col.measured(".4f", col.metric("max_rel_l2"))),
               col.Column("max |err|", col.measured(".3g", col.metric("max_abs_error"))),
               col.Column("min SNR dB", col.measured(".1f", col.metric("min_snr_db"))),
               col.Column("argmax agr", col.measured(".4f", col.metric("min_argmax_agreement"))))

    # -- checks before anything starts ----------------------------------------------------------

    def preflight(self, cfg: PipelineConfig, source: SourceFacts, project_root: Path) -> None:
        """The feeds against the graph: an npz's names, dtypes and shapes (and enough samples to split off a
        calibration set), or synthetic feeds' sizes for every symbolic dimension and ranges for every input; argmax
        agreement asked of a graph without a class-score output."""
        if source.path is None:
            raise UserError("model: onnx-model needs an ONNX file (model.kind onnx)")
        spec = IOSpec.from_dict(source.details["io_spec"]) if "io_spec" in source.details \
            else graph_spec(source.path)
        data = cfg.data.with_paths_under(project_root)
        if isinstance(data, SyntheticFeeds):
            sample_shapes(spec, data.dims, "data")
            check_ranges(spec, data.ranges, "data")
        elif isinstance(data, NpzFeeds):
            samples = load_npz_samples(data.path, spec, "data.path")
            if data.calibration_path is not None:
                load_npz_samples(data.calibration_path, spec, "data.calibration_path")
            else:
                split_calibration(samples, data.calibration_fraction or DEFAULT_CALIBRATION_FRACTION, data.seed,
                                  list(spec.input_names), "data.path")
        named = [*cfg.selection.quality_metrics, *cfg.gates.max_metrics]
        if ARGMAX in named and not class_score_outputs(spec):
            raise UserError(f"selection.quality_metrics: {ARGMAX} needs an output that looks like class scores "
                            f"(2-D float); the model's outputs are "
                            f"{', '.join(f'{t.name}: {t.describe()}' for t in spec.outputs)}")

    # -- the base model and the data ------------------------------------------------------------

    def materialize_base(self, source: SourceKind, dest: Path, project_root: Path) -> BaseModelInfo:
        """The user's graph copied to `model.onnx` (with any external-data files beside it), unchanged."""
        from edgeopt.base_model import check_onnx_file
        from edgeopt.lineage import sha256_tree
        from edgeopt.taskspec import resolve

        if not isinstance(source, OnnxGraphModel):  # the task's kinds are closed: config validation stops others
            raise UserError(f"model.kind {source.kind!r} does not fit task {self.task}")
        src = resolve(source.path, project_root)
        check_onnx_file(src)
        spec = graph_spec(src)
        dest = Path(dest)
        with atomic_dir(dest) as tmp:
            shutil.copy2(src, tmp / ONNX_FILE)
            for rel in _external_files(src):
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src.parent / rel, target)
            digest = sha256_tree(tmp)
        details = {"source": source.kind, "inputs": [t.to_dict() for t in spec.inputs],
                   "outputs": [t.to_dict() for t in spec.outputs]}
        return BaseModelInfo(path=dest / ONNX_FILE, format="onnx", sha256=digest, task=self.task, tokenizer_dir=None,
                             details=details)

    def build_data(self, source: SourceKind, out_dir: Path, base: BaseModelInfo | None) -> EvalDataSummary:
        """The evaluation and calibration samples against the base graph's spec (in preflight, without the base,
        only an npz file itself is checked)."""
        spec = graph_spec(base.path) if base is not None else None
        if isinstance(source, SyntheticFeeds):
            if spec is None:
                raise UserError("data.kind synthetic: the feeds are made from the model's graph; build them with it")
            evaluation, calibration = synthesize(spec, source.dims, source.ranges, source.n_eval,
                                                 source.n_calibration, source.seed)
            origin = f"synthetic (seed {source.seed})"
        elif isinstance(source, NpzFeeds):
            evaluation = load_npz_samples(source.path, spec, "data.path")
            if source.calibration_path is not None:
                calibration = load_npz_samples(source.calibration_path, spec, "data.calibration_path")
            else:
                names = list(spec.input_names) if spec is not None else sorted(evaluation)
                evaluation, calibration = split_calibration(
                    evaluation, source.calibration_fraction or DEFAULT_CALIBRATION_FRACTION, source.seed, names,
                    "data.path")
            origin = str(source.path)
        else:
            raise UserError(f"data.kind {source.kind!r} does not fit task {self.task}")
        manifest = write_data(out_dir, evaluation, calibration, kind=source.kind, source=origin,
                              seed=getattr(source, "seed", 0), spec=spec)
        return EvalDataSummary(kind=source.kind, source=origin, seed=manifest.seed, n_pairs=0,
                               n_sentences=manifest.n_eval, n_calibration=manifest.n_calibration, files=list(FILES),
                               sha256=data_digest(out_dir))

    def validate_data(self, data_dir: Path, report_path: Path | None) -> ValidationReport:
        from edgeopt.workloads.onnx_model.validation import validate_feed_data

        return validate_feed_data(data_dir, report_path)

    def dataset_rows(self, data_dir: Path) -> list[dict[str, Any]]:
        """One row per evaluation sample: its index, the sha256 of the whole feed, and each input's shape."""
        data = load_data(data_dir)
        rows: list[dict[str, Any]] = []
        for i, digest in enumerate(sample_hashes(data.eval, data.names)):
            row: dict[str, Any] = {"index": i, "sha256": digest}
            for name in data.names:
                row[f"shape:{name}"] = "x".join(str(d) for d in data.eval[name][i].shape)
            rows.append(row)
        return rows

    def describe_data(self, n_pairs: int, n_items: int) -> str:
        return f"{n_items} evaluation samples"

    # -- inputs and calibration -------------------------------------------------------------------

    def prepare_inputs(self, base: BaseModelInfo, data_dir: Path, bench: BenchmarkConfig) -> dict[str, np.ndarray]:
        """The data folder's samples under the base graph's input order, in the graph's dtypes (as stored)."""
        spec = graph_spec(base.path)
        data = load_data(data_dir)
        if data.names != list(spec.input_names):
            raise UserError(f"{data_dir}: the data was built for inputs {', '.join(data.names)}, the model takes "
                            f"{', '.join(spec.input_names)}: run the prepare stage again")
        arrays: dict[str, np.ndarray] = {NAMES: np.asarray(data.names, dtype=np.str_)}
        for i, name in enumerate(data.names):
            arrays[f"eval.x{i}"] = data.eval[name]
            arrays[f"calibration.x{i}"] = data.calibration[name]
        return arrays

    def calibration(self, inputs: Any, spec: IOSpec | None, own_length: bool = False) -> list[Feed]:
        """One calibration sample per feed, keyed by the quantized model's input names, exactly as stored: integer
        and boolean inputs reach the calibrator untouched. Samples are at their own shapes already."""
        names, _, samples = _sets(inputs)
        wanted = list(spec.input_names) if spec is not None else names
        missing = [n for n in wanted if n not in samples]
        if missing:
            raise CandidateError(f"the model being quantized takes input(s) {', '.join(missing)}, which the base "
                                 f"graph's calibration samples do not have")
        return [{n: samples[n][i] for n in wanted} for i in range(count(samples))]

    def torch_form(self, model_dir: Path, for_export: bool = False) -> TorchForm:
        raise CandidateError("task 'onnx-model' has no PyTorch form: the base is an ONNX graph (its baseline is "
                             "onnx-export, which copies it)")

    # -- measurement (child process) and quality (parent) ------------------------------------------

    def batch_call(self, runner: Any, inputs: Any, n: int) -> Callable[[], object]:
        _, samples, _ = _sets(inputs)
        return batch_call(runner, samples, 0, n)

    def benchmark(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path | None = None) -> Speed:
        return batch_speed(lambda n: self.batch_call(runner, inputs, n), bench,
                           extra={"batched": float(batchable(runner.io_spec))})

    def write_outputs(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path) -> None:
        """Every output of every evaluation sample, one call per sample."""
        _, samples, _ = _sets(inputs)
        names = list(runner.io_spec.output_names)
        values: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for i in range(count(samples)):
            out = runner.run(feed_of(samples, i))
            for n in names:
                values[n].append(np.asarray(out[n]))
        arrays: dict[str, Any] = {NAMES: np.asarray(names, dtype=np.str_)}
        for j, n in enumerate(names):
            arrays[f"v{j}"] = np.concatenate([v.ravel() for v in values[n]])
            arrays[f"s{j}"] = np.asarray([v.shape for v in values[n]], dtype=np.int64).reshape(len(values[n]), -1)
        with atomic_file(Path(out_dir) / OUTPUTS_FILE) as tmp, tmp.open("wb") as f:
            np.savez(f, **arrays)

    def quality(self, candidate_dir: Path, baseline_dir: Path) -> Quality:
        """Per output `<metric>.<output>` (cosine, rel_l2, max_abs, snr_db, argmax_agreement of class scores), and
        the weakest output's (`min_cosine`, `max_rel_l2`, `max_abs_error`, `min_snr_db`, `min_argmax_agreement`).
        Cosine and argmax agreement are relative to the base already: their own retention. Lower-is-better ones
        are gated with gates.max_metrics. Cosine and argmax agreement get bootstrap CIs over the samples."""
        base, cand = read_outputs(Path(baseline_dir)), read_outputs(Path(candidate_dir))
        missing = [n for n in base if n not in cand]
        if missing:
            raise CandidateError(f"the candidate has no output(s) {', '.join(missing)} (it has {', '.join(cand)})")
        per_output: dict[str, dict[str, float]] = {}
        samples_of: dict[str, dict[str, np.ndarray]] = {}  # each output's per-sample values, for the CIs
        try:
            for name, samples in base.items():
                first = samples[0]
                classes = looks_like_class_scores(first.ndim, first.dtype, first.shape[1] if first.ndim == 2 else None)
                per_output[name] = compare_output(samples, cand[name], classes)
                samples_of[name] = per_sample(samples, cand[name], classes)
        except ValueError as err:
            raise CandidateError(f"cannot compare output {name} with the baseline's: {err}") from None
        metrics = summarize(per_output)
        for name, scores in per_output.items():
            metrics.update({_key(m, name): scores[m] for m in PER_OUTPUT if m in scores})
        ci, retention_ci = quality_intervals(samples_of, metrics, _key, RETAINED)
        return Quality(metrics=metrics, retention={k: metrics[k] for k in RETAINED if k in metrics}, ci=ci,
                       retention_ci=retention_ci)

    # -- serving ----------------------------------------------------------------------------------

    def python_model(self) -> Path:
        return Path(__file__).with_name("serving_code.py")

    def serving_artifacts(self, base: BaseModelInfo) -> dict[str, Path]:
        return {}

    def serving_config(self, cfg: PipelineConfig, base: BaseModelInfo) -> dict[str, Any]:
        return {"threads": cfg.benchmark.threads, "io_spec": graph_spec(base.path).to_dict()}

    def load_check(self, model: Any, data_dir: Path, measurement_dir: Path) -> tuple[bool, str]:
        """The registered model's outputs for the first evaluation sample must be the measured ones."""
        data = load_data(data_dir)
        expected = {n: v[0] for n, v in read_outputs(Path(measurement_dir)).items()}
        try:
            got = model.predict(feed_of(data.eval, 0))
        except Exception as err:
            return False, f"predict failed on the first evaluation sample: {' '.join(str(err).split())[:200]}"
        for name, want in expected.items():
            value = np.asarray(got.get(name)) if isinstance(got, dict) and name in got else None
            if value is None or value.shape != want.shape:
                shape = None if value is None else list(value.shape)
                return False, f"output {name}: got {shape}, measured {list(want.shape)}"
            scale = float(np.abs(want.astype(np.float64)).max()) if want.size else 0.0
            if not np.allclose(value.astype(np.float64), want.astype(np.float64), rtol=LOAD_CHECK_RTOL,
                               atol=LOAD_CHECK_RTOL * scale + 1e-7, equal_nan=True):
                return False, f"output {name} of the first evaluation sample differs from the measured one"
        return True, f"{len(expected)} output(s) of the first evaluation sample equal the measured ones"


def read_outputs(measurement_dir: Path) -> dict[str, list[np.ndarray]]:
    """What `write_outputs` saved: each output's arrays, one per evaluation sample."""
    path = measurement_dir / OUTPUTS_FILE
    with np.load(path, allow_pickle=False) as f:
        names = [str(n) for n in f[NAMES]]
        out: dict[str, list[np.ndarray]] = {}
        for j, name in enumerate(names):
            flat, shapes = f[f"v{j}"], f[f"s{j}"]
            sizes = [int(np.prod(s)) for s in shapes]
            parts = np.split(flat, np.cumsum(sizes)[:-1]) if sizes else []
            out[name] = [p.reshape(tuple(int(d) for d in s)) for p, s in zip(parts, shapes, strict=True)]
    return out


def _external_files(path: Path) -> list[str]:
    """Relative locations of the graph's external tensor data."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    out: set[str] = set()
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            out.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(out)


WORKLOAD = OnnxModelWorkload()
