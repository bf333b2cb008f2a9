"""Great Expectations (GX Core 1.x) checks on the evaluation data folder built by `edgeopt.data`.

One ephemeral context, one pandas data source with an asset per file (retrieval, sentences,
calibration), a whole-dataframe batch definition, a suite and a validation definition each.
Nothing is written to disk by GX; the report is ours (`ValidationReport`, written atomically).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from edgeopt.data import CALIBRATION_FILE, RETRIEVAL_FILE, SENTENCES_FILE, read_jsonl
from edgeopt.errors import UserError
from edgeopt.llm.text_windows import is_text_windows, load_manifest
from edgeopt.results import Record

MIN_PAIRS = 10
MAX_PAIRS = 100_000
MAX_QUERY_CHARS = 2_000
MAX_DOCUMENT_CHARS = 100_000
MIN_SENTENCES = 8
MAX_SENTENCE_CHARS = 1_000
BLANK = r"^\s*$"

DATASETS = {
    "retrieval": (RETRIEVAL_FILE, ["id", "query", "document"]),
    "sentences": (SENTENCES_FILE, ["text"]),
    "calibration": (CALIBRATION_FILE, ["text"]),
}


class ExpectationOutcome(Record):
    dataset: str
    expectation: str  # GX expectation type, e.g. expect_column_values_to_be_unique
    column: str | None = None
    success: bool
    observed: Any = None  # observed_value, or unexpected count and a few examples
    error: str | None = None  # set when GX raised while evaluating the expectation

    @property
    def label(self) -> str:
        target = f"{self.dataset}.{self.column}" if self.column else self.dataset
        return f"{self.expectation}({target})"


class ValidationReport(Record):
    data_dir: str
    success: bool
    gx_version: str
    seconds: float
    results: list[ExpectationOutcome]
    failed: list[str]


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


# -- causal-lm text windows: held-out text, its token windows and the reference's log-probabilities ----------

MAX_LOGSUMEXP_ERROR = 0.01  # stored float16 log-probs must still describe normalised distributions


def _text_window_frames(data_dir: Path) -> dict[str, Any]:
    import hashlib

    import numpy as np
    import pandas as pd

    from edgeopt.llm.text_windows import (
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


def _text_window_suites(frames: dict[str, Any], manifest: dict[str, Any]) -> dict[str, list[Any]]:
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


def _clip(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN: a missing value
        return None
    if isinstance(value, str) and len(value) > 80:
        return value[:77] + "..."
    return value


def _observed(result: dict[str, Any]) -> Any:
    if not result:
        return None
    if "observed_value" in result:
        return _clip(result["observed_value"])
    if "unexpected_count" in result:
        examples = [_clip(v) for v in (result.get("partial_unexpected_list") or [])[:3]]
        out: dict[str, Any] = {"unexpected_count": result["unexpected_count"]}
        if examples:
            out["examples"] = examples
        return out
    return None


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


def run_suites(frames: dict[str, Any], suites: dict[str, list[Any]], data_dir: str, start: float) -> ValidationReport:
    """Run each dataset's expectations on its pandas frame in an ephemeral GX context; never raises on
    bad data: every expectation's outcome is in the report, the failed ones named in `failed`.

    Shared by every task's suite (text here, images in the image-classification package).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm in pipeline logs
    source = context.data_sources.add_pandas(name="edgeopt_eval_data")
    outcomes: list[ExpectationOutcome] = []
    for key, expectations in suites.items():
        asset = source.add_dataframe_asset(name=key)
        batch_definition = asset.add_batch_definition_whole_dataframe(f"{key}_all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{key}_suite"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{key}_validation", data=batch_definition, suite=suite)
        )
        run = definition.run(batch_parameters={"dataframe": frames[key]}, result_format="BASIC")
        for r in run.results:
            config = r.expectation_config
            exc = r.exception_info or {}
            raised = bool(exc.get("raised_exception")) if isinstance(exc, dict) else False
            outcomes.append(
                ExpectationOutcome(
                    dataset=key,
                    expectation=config.type if config is not None else "unknown",
                    column=config.kwargs.get("column") if config is not None else None,
                    success=bool(r.success),
                    observed=_observed(r.result or {}),
                    error=str(exc.get("exception_message"))[:200] if raised else None,
                )
            )
    failed = [o.label for o in outcomes if not o.success]
    return ValidationReport(data_dir=data_dir, success=not failed, gx_version=gx.__version__,
                            seconds=round(time.perf_counter() - start, 3), results=outcomes, failed=failed)


def validate_eval_data(
    data_dir: Path, report_path: Path | None = None, *, max_pairs: int = MAX_PAIRS
) -> ValidationReport:
    """Run the GX suites on `data_dir`; raises UserError only if the files are missing/unreadable."""
    data_dir = Path(data_dir)
    text_windows = is_text_windows(data_dir)
    frames = _text_window_frames(data_dir) if text_windows else _frames(data_dir)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    start = time.perf_counter()
    if text_windows:
        suites = _text_window_suites(frames, load_manifest(data_dir))
    else:
        forbidden = sorted({str(v) for v in frames["sentences"]["text"].dropna()}
                           | {str(v) for v in frames["retrieval"]["query"].dropna()})
        suites = _suites(max_pairs, forbidden)
    report = run_suites(frames, suites, str(data_dir), start)
    if report_path is not None:
        report.write(Path(report_path))
    return report


def require_valid(report: ValidationReport) -> None:
    """Raise UserError naming every failed expectation."""
    if not report.success:
        failed = report.failed or ["(no expectation results)"]
        raise UserError(f"data validation failed: {', '.join(failed)}")
