"""Great Expectations suites of the causal-lm evaluation data: held-out text, its token windows and the
reference's log-probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.errors import UserError
from edgeopt.io.jsonl import read_jsonl
from edgeopt.validation import BLANK, ValidationReport, validate
from edgeopt.workloads.causal_lm.text_windows import load_manifest

MAX_LOGSUMEXP_ERROR = 0.01  # stored float16 log-probs must still describe normalised distributions


def _frames(data_dir: Path) -> dict[str, Any]:
    import hashlib

    import numpy as np
    import pandas as pd

    from edgeopt.workloads.causal_lm.text_windows import (
        CALIBRATION_TEXT,
        CALIBRATION_WINDOWS_FILE,
        EVAL_TEXT,
        WINDOWS_FILE,
        load_reference,
        load_tokens,
        paragraphs,
    )

    def windows(rows: list[dict[str, Any]], tokens: Any) -> Any:
        df = pd.DataFrame(rows).reindex(columns=["window", "start_token", "n_tokens", "text"])
        if len(df) != len(tokens):
            raise UserError(f"{data_dir}: {len(df)} window rows but {len(tokens)} token windows")
        df["n_tokens"] = [len(t) for t in tokens]
        df["min_id"] = [int(t.min()) for t in tokens]
        df["max_id"] = [int(t.max()) for t in tokens]
        df["fingerprint"] = [hashlib.sha256(t.tobytes()).hexdigest() for t in tokens]
        return df

    for name in (EVAL_TEXT, CALIBRATION_TEXT, WINDOWS_FILE, CALIBRATION_WINDOWS_FILE):
        if not (data_dir / name).is_file():
            raise UserError(f"{data_dir}: evaluation data incomplete, missing {name}")
    eval_tokens, calib_tokens = load_tokens(data_dir)
    reference = load_reference(data_dir)
    ref_rows = []
    for i, lp in enumerate(reference):
        lp32 = np.asarray(lp, dtype=np.float32)
        finite = bool(np.isfinite(lp32).all())
        lse = np.log(np.exp(lp32.astype(np.float64)).sum(axis=-1)) if finite else np.array([np.inf])
        ref_rows.append({"window": i, "positions": lp32.shape[0], "vocab": lp32.shape[1], "finite": finite,
                         "logsumexp_abs": float(np.abs(lse).max())})
    return {
        "windows": windows(read_jsonl(data_dir / WINDOWS_FILE), eval_tokens),
        "calibration": windows(read_jsonl(data_dir / CALIBRATION_WINDOWS_FILE), calib_tokens),
        "calibration_text": pd.DataFrame({"text": paragraphs((data_dir / CALIBRATION_TEXT).read_text())}),
        "eval_text": pd.DataFrame({"text": paragraphs((data_dir / EVAL_TEXT).read_text())}),
        "reference": pd.DataFrame(ref_rows),
    }


def _suites(frames: dict[str, Any], manifest: dict[str, Any]) -> dict[str, list[Any]]:
    import great_expectations.expectations as gxe

    n, t, vocab = manifest["windows"], manifest["window_tokens"], manifest["vocab_size"]

    def token_columns() -> list[Any]:  # fresh instances: an expectation belongs to one suite
        return [
            gxe.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=t, max_value=t),
            gxe.ExpectColumnValuesToBeBetween(column="min_id", min_value=0, max_value=None),
            gxe.ExpectColumnValuesToBeBetween(column="max_id", min_value=None, max_value=vocab - 1),
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=BLANK),
        ]

    eval_fingerprints = sorted(set(frames["windows"]["fingerprint"]))
    eval_paragraphs = sorted(set(frames["eval_text"]["text"]))
    return {
        "windows": [
            gxe.ExpectTableRowCountToBeBetween(min_value=n, max_value=n),
            gxe.ExpectColumnValuesToBeUnique(column="window"),
            gxe.ExpectColumnValuesToBeUnique(column="fingerprint"),
            *token_columns(),
        ],
        "calibration": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1, max_value=None),
            *token_columns(),
            # Calibration (imatrix) must never see evaluation text.
            gxe.ExpectColumnValuesToNotBeInSet(column="fingerprint", value_set=eval_fingerprints),
        ],
        "calibration_text": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1, max_value=None),
            gxe.ExpectColumnValuesToNotBeInSet(column="text", value_set=eval_paragraphs),
        ],
        "eval_text": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1, max_value=None),
            gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=BLANK),
        ],
        "reference": [
            gxe.ExpectTableRowCountToBeBetween(min_value=n, max_value=n),
            gxe.ExpectColumnValuesToBeBetween(column="positions", min_value=t, max_value=t),
            gxe.ExpectColumnValuesToBeBetween(column="vocab", min_value=vocab, max_value=vocab),
            gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
            gxe.ExpectColumnValuesToBeBetween(column="logsumexp_abs", min_value=0, max_value=MAX_LOGSUMEXP_ERROR),
        ],
    }


def validate_text_windows(data_dir: Path, report_path: Path | None = None) -> ValidationReport:
    """Run the GX suites on a text-windows folder; raises UserError only if files are missing/unreadable."""
    data_dir = Path(data_dir)
    frames = _frames(data_dir)
    return validate(frames, _suites(frames, load_manifest(data_dir)), data_dir, report_path)
