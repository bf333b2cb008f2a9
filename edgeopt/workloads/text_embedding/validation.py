"""Great Expectations suites of the text-embedding evaluation data (retrieval pairs, sentences, calibration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.errors import UserError
from edgeopt.io.jsonl import read_jsonl
from edgeopt.validation import BLANK, ValidationReport, validate
from edgeopt.workloads.text_embedding.data import CALIBRATION_FILE, RETRIEVAL_FILE, SENTENCES_FILE

MIN_PAIRS = 10
MAX_PAIRS = 100_000
MAX_QUERY_CHARS = 2_000
MAX_DOCUMENT_CHARS = 100_000
MIN_SENTENCES = 8
MAX_SENTENCE_CHARS = 1_000

DATASETS = {
    "retrieval": (RETRIEVAL_FILE, ["id", "query", "document"]),
    "sentences": (SENTENCES_FILE, ["text"]),
    "calibration": (CALIBRATION_FILE, ["text"]),
}



def _suites(max_pairs: int, forbidden_calibration: list[str]) -> dict[str, list[Any]]:
    import great_expectations.expectations as gxe

    def text_column(col: str, max_chars: int) -> list[Any]:
        return [
            gxe.ExpectColumnValuesToNotBeNull(column=col),
            gxe.ExpectColumnValuesToBeOfType(column=col, type_="str"),
            gxe.ExpectColumnValueLengthsToBeBetween(column=col, min_value=1, max_value=max_chars),
            gxe.ExpectColumnValuesToNotMatchRegex(column=col, regex=BLANK),
        ]

    return {
        "retrieval": [
            gxe.ExpectTableRowCountToBeBetween(min_value=MIN_PAIRS, max_value=max_pairs),
            gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            *text_column("query", MAX_QUERY_CHARS),
            *text_column("document", MAX_DOCUMENT_CHARS),
        ],
        "sentences": [
            gxe.ExpectTableRowCountToBeBetween(min_value=MIN_SENTENCES, max_value=None),
            *text_column("text", MAX_SENTENCE_CHARS),
        ],
        "calibration": [
            gxe.ExpectTableRowCountToBeBetween(min_value=MIN_SENTENCES, max_value=None),
            *text_column("text", MAX_SENTENCE_CHARS),
            # Calibration must never see evaluation text: no fidelity sentence, no query.
            gxe.ExpectColumnValuesToNotBeInSet(column="text", value_set=forbidden_calibration),
        ],
    }



def _frames(data_dir: Path) -> dict[str, Any]:
    import pandas as pd

    missing = [name for name, _ in DATASETS.values() if not (data_dir / name).is_file()]
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: evaluation data folder not found (build the data first)")
    if missing:
        raise UserError(f"{data_dir}: evaluation data incomplete, missing {', '.join(missing)}")
    frames = {}
    for key, (name, columns) in DATASETS.items():
        df = pd.DataFrame(read_jsonl(data_dir / name))
        # An absent key becomes an all-null column, so the not-null expectation names it.
        df = df.reindex(columns=[*columns, *(c for c in df.columns if c not in columns)])
        for col in columns:
            if df[col].isna().all():  # an absent key: object dtype, so only not-null reports it
                df[col] = df[col].astype(object)
        frames[key] = df
    return frames


def validate_eval_data(data_dir: Path, report_path: Path | None = None, *, max_pairs: int = MAX_PAIRS
                       ) -> ValidationReport:
    """Run the GX suites on `data_dir`; raises UserError only if the files are missing/unreadable."""
    data_dir = Path(data_dir)
    frames = _frames(data_dir)
    forbidden = sorted({str(v) for v in frames["sentences"]["text"].dropna()}
                       | {str(v) for v in frames["retrieval"]["query"].dropna()})
    return validate(frames, _suites(max_pairs, forbidden), data_dir, report_path)
