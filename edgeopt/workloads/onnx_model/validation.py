"""Great Expectations (GX Core 1.x) checks on the onnx-model evaluation and calibration feeds.

Each set becomes a pandas frame with one row per (sample, input): the input's name, its dtype and the graph's,
whether the sample's shape fits the graph's declaration, how many values are not finite, and the sha256 of the
whole sample. The suites (through the core runner, `edgeopt.validation.run_suites`): the names are exactly the
graph's inputs, each dtype is the declared one, each shape fits, every value is finite, and no calibration
sample is an evaluation sample.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.iospec import IOSpec
from edgeopt.validation import ValidationReport, run_suites
from edgeopt.workloads.onnx_model.data import Samples, load_data, sample_hashes

COLUMNS = ["sample", "input", "dtype", "expected_dtype", "shape", "shape_fits", "nonfinite", "sha256"]


def feed_frame(samples: Samples, spec: IOSpec) -> Any:
    """pandas frame, one row per sample and input; `expected_dtype` is None and `shape_fits` False for an array
    the graph has no input for."""
    import pandas as pd

    names = list(samples)
    hashes = sample_hashes(samples, names)
    declared = {t.name: t for t in spec.inputs}
    rows = []
    for i, digest in enumerate(hashes):
        for name in names:
            value = np.asarray(samples[name][i])
            t = declared.get(name)
            numeric = np.issubdtype(value.dtype, np.number)
            rows.append({
                "sample": i, "input": name, "dtype": str(value.dtype),
                "expected_dtype": t.dtype if t is not None else None,
                "shape": "x".join(str(d) for d in value.shape),
                "shape_fits": t is not None and t.problem(value) is None,
                "nonfinite": int(value.size - np.isfinite(value).sum()) if numeric else 0,
                "sha256": digest,
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def _suites(frames: dict[str, Any], spec: IOSpec) -> dict[str, list[Any]]:
    import great_expectations.expectations as gxe

    names = list(spec.input_names)

    def feed_columns() -> list[Any]:  # fresh instances: an expectation belongs to one suite
        return [
            gxe.ExpectTableRowCountToBeBetween(min_value=len(names), max_value=None),
            gxe.ExpectColumnDistinctValuesToEqualSet(column="input", value_set=names),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="dtype", column_B="expected_dtype"),
            gxe.ExpectColumnValuesToBeInSet(column="shape_fits", value_set=[True]),
            gxe.ExpectColumnValuesToBeBetween(column="nonfinite", min_value=0, max_value=0),
        ]

    eval_hashes = sorted(set(frames["eval"]["sha256"]))
    return {
        "eval": feed_columns(),
        # Calibration must never see an evaluation feed.
        "calibration": [*feed_columns(), gxe.ExpectColumnValuesToNotBeInSet(column="sha256", value_set=eval_hashes)],
    }


def validate_feeds(evaluation: Samples, calibration: Samples, spec: IOSpec, *, data_dir: str = "",
                   report_path: Path | None = None) -> ValidationReport:
    """Run the suites on the two sets against the graph's spec; never raises on bad data."""
    frames = {"eval": feed_frame(evaluation, spec), "calibration": feed_frame(calibration, spec)}
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    report = run_suites(frames, _suites(frames, spec), data_dir, time.perf_counter())
    if report_path is not None:
        report.write(Path(report_path))
    return report


def validate_feed_data(data_dir: Path, report_path: Path | None = None) -> ValidationReport:
    """The suites on the folder `data.write_data` published, against the graph spec in its manifest (without one,
    the folder's own input list: names and dtypes are then checked for consistency only)."""
    from edgeopt.iospec import TensorSpec

    data = load_data(data_dir)
    if data.manifest.io_spec is not None:
        spec = IOSpec.from_dict(data.manifest.io_spec)
    else:
        spec = IOSpec(inputs=tuple(TensorSpec(i.name, i.dtype, tuple(i.sample_shape)) for i in data.manifest.inputs),
                      outputs=())
    return validate_feeds(data.eval, data.calibration, spec, data_dir=str(data_dir), report_path=report_path)
