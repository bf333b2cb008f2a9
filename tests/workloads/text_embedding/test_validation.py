"""Real Great Expectations runs on the real built evaluation data (one good run, one broken)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgeopt.errors import UserError
from edgeopt.validation import ValidationReport, require_valid
from edgeopt.workloads.text_embedding import PydocTopicsData, data
from edgeopt.workloads.text_embedding.validation import validate_eval_data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gx") / "eval"
    data.build_eval_data(PydocTopicsData(), out)
    return out


@pytest.fixture(scope="module")
def good(data_dir: Path) -> tuple[ValidationReport, Path]:
    report_path = data_dir.parent / "reports" / "validation.json"
    return validate_eval_data(data_dir, report_path), report_path


@pytest.fixture(scope="module")
def broken(data_dir: Path) -> ValidationReport:
    copy = data_dir.parent / "broken"
    shutil.copytree(data_dir, copy)
    path = copy / data.RETRIEVAL_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["id"] = rows[0]["id"]  # duplicate id
    rows[2]["query"] = ""  # empty query
    leaked = rows[5]["query"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with (copy / data.CALIBRATION_FILE).open("a") as f:  # calibration sees a query
        f.write(json.dumps({"text": leaked}) + "\n")
    return validate_eval_data(copy)


def test_valid_data_passes(good: tuple[ValidationReport, Path]) -> None:
    report, report_path = good
    assert report.success, report.failed
    assert report.failed == []
    assert report.gx_version.startswith("1.")
    labels = {o.label for o in report.results}
    for expected in (
        "expect_table_row_count_to_be_between(retrieval)",
        "expect_column_values_to_not_be_null(retrieval.query)",
        "expect_column_values_to_not_be_null(retrieval.document)",
        "expect_column_values_to_not_be_null(retrieval.id)",
        "expect_column_values_to_be_unique(retrieval.id)",
        "expect_column_value_lengths_to_be_between(retrieval.query)",
        "expect_column_value_lengths_to_be_between(retrieval.document)",
        "expect_column_values_to_not_be_null(sentences.text)",
        "expect_column_value_lengths_to_be_between(sentences.text)",
        "expect_table_row_count_to_be_between(sentences)",
        "expect_table_row_count_to_be_between(calibration)",
        "expect_column_values_to_not_be_in_set(calibration.text)",
    ):
        assert expected in labels
    row_count = next(o for o in report.results if o.label == "expect_table_row_count_to_be_between(retrieval)")
    assert row_count.observed == len(data.load_retrieval(Path(report.data_dir)))
    saved = ValidationReport.model_validate_json(report_path.read_text())
    assert saved == report
    require_valid(report)  # no exception


def test_broken_copy_fails_naming_expectations(broken: ValidationReport) -> None:
    assert not broken.success
    assert set(broken.failed) == {
        "expect_column_values_to_be_unique(retrieval.id)",
        "expect_column_value_lengths_to_be_between(retrieval.query)",
        "expect_column_values_to_not_match_regex(retrieval.query)",
        "expect_column_values_to_not_be_in_set(calibration.text)",
    }
    unique = next(o for o in broken.results if o.label == "expect_column_values_to_be_unique(retrieval.id)")
    assert unique.observed["unexpected_count"] == 2
    with pytest.raises(UserError) as err:
        require_valid(broken)
    message = str(err.value)
    assert message.startswith("data validation failed: ")
    assert "expect_column_values_to_be_unique(retrieval.id)" in message
    assert "expect_column_value_lengths_to_be_between(retrieval.query)" in message


def test_missing_files_are_user_errors(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        validate_eval_data(tmp_path / "absent")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(data_dir / data.RETRIEVAL_FILE, partial)
    with pytest.raises(UserError, match=r"missing sentences\.jsonl, calibration\.jsonl"):
        validate_eval_data(partial)
