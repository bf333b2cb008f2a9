"""The onnx-model Great Expectations suite: good feeds pass; wrong names, dtypes, shapes, non-finite values and a
calibration sample repeated from evaluation are each named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import UserError
from edgeopt.validation import require_valid
from edgeopt.workloads.onnx_model.data import Samples, graph_spec, synthesize
from edgeopt.workloads.onnx_model.validation import validate_feeds
from edgeopt.workloads.onnx_model.workload import WORKLOAD
from tests.workloads.onnx_model.om_helpers import SEQ, VOCAB

RANGES = {"features": (-1.0, 1.0), "token_ids": (0.0, VOCAB - 1.0), "mask": (0.0, 1.0)}


@pytest.fixture(scope="module")
def feeds(mixed_onnx: Path) -> tuple[Samples, Samples]:
    return synthesize(graph_spec(mixed_onnx), {"batch": 1, "seq": SEQ}, RANGES, 6, 4, seed=0)


def test_the_built_data_folder_passes(om_data: Path, tmp_path: Path) -> None:
    report = WORKLOAD.validate_data(om_data, tmp_path / "report.json")
    assert report.success, report.failed
    assert (tmp_path / "report.json").is_file() and len(report.results) == 11


def test_bad_feeds_are_named(mixed_onnx: Path, feeds: tuple[Samples, Samples]) -> None:
    spec = graph_spec(mixed_onnx)
    ev, cal = feeds
    broken_ev = {**ev, "features": ev["features"].copy()}
    broken_ev["features"][2, 0, 3] = np.nan
    renamed = {("ids" if k == "token_ids" else k): v for k, v in ev.items()}
    cases = {
        "nonfinite": (broken_ev, cal, "expect_column_values_to_be_between(eval.nonfinite)"),
        "names": (renamed, cal, "expect_column_distinct_values_to_equal_set(eval.input)"),
        "dtype": (ev, {**cal, "token_ids": cal["token_ids"].astype(np.int32)},
                  "expect_column_pair_values_to_be_equal(calibration)"),
        "shape": ({**ev, "features": ev["features"][:, :, :4]}, cal,
                  "expect_column_values_to_be_in_set(eval.shape_fits)"),
        "disjoint": (ev, {k: np.concatenate([v[:1], ev[k][:1]]) for k, v in cal.items()},
                     "expect_column_values_to_not_be_in_set(calibration.sha256)"),
    }
    assert validate_feeds(ev, cal, spec).success
    for case, (e, c, label) in cases.items():
        report = validate_feeds(e, c, spec)
        assert not report.success and label in report.failed, (case, report.failed)
        with pytest.raises(UserError, match="data validation failed"):
            require_valid(report)
