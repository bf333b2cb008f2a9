"""Real Great Expectations runs on the real built image-classification evaluation data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import UserError
from edgeopt.validation import ValidationReport, require_valid
from edgeopt.workloads.image_classification.images import build_eval_images, load_eval_images
from edgeopt.workloads.image_classification.validation import validate_image_arrays, validate_image_data

LEAK = "expect_column_values_to_not_be_in_set(calibration.sha256)"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gx-images") / "images"
    build_eval_images(out, n_eval=48, n_calibration=12, seed=0)
    return out


@pytest.fixture(scope="module")
def arrays(data_dir: Path) -> dict[str, np.ndarray]:
    return load_eval_images(data_dir)


def test_the_suite_passes_on_the_built_data(data_dir: Path) -> None:
    report_path = data_dir.parent / "reports" / "validation.json"
    report = validate_image_data(data_dir, report_path)
    assert isinstance(report, ValidationReport)
    assert report.success and report.failed == [], report.failed
    assert {o.dataset for o in report.results} == {"eval", "calibration"}
    assert LEAK in {o.label for o in report.results}  # the disjointness check ran, and passed
    require_valid(report)
    assert json.loads(report_path.read_text())["success"] is True


def test_an_evaluation_image_in_calibration_is_named(arrays: dict[str, np.ndarray]) -> None:
    calibration = arrays["calibration"].copy()
    calibration[4] = arrays["eval"][17]
    report = validate_image_arrays(arrays["eval"], calibration)
    assert report.failed == [LEAK]
    leak = next(o for o in report.results if o.label == LEAK)
    assert leak.observed["unexpected_count"] == 1
    with pytest.raises(UserError, match=r"calibration\.sha256"):
        require_valid(report)


def test_wrong_shape_dtype_count_or_a_constant_image_are_named(arrays: dict[str, np.ndarray]) -> None:
    constant = arrays["calibration"].copy()
    constant[0] = 128
    report = validate_image_arrays(arrays["eval"][:, :200, :, :].astype(np.float32), constant, min_eval=64)
    assert set(report.failed) == {
        "expect_table_row_count_to_be_between(eval)",  # 48 < 64
        "expect_column_values_to_be_between(eval.height)",
        "expect_column_values_to_be_in_set(eval.dtype)",
        "expect_column_values_to_be_between(calibration.span)",
    }
    gray = validate_image_arrays(arrays["eval"][..., 0], arrays["calibration"])
    assert set(gray.failed) == {"expect_column_values_to_be_between(eval.ndim)",
                                "expect_column_values_to_be_between(eval.channels)"}


def test_missing_data_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"eval\.npz"):
        validate_image_data(tmp_path)
