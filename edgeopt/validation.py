"""Great Expectations (GX Core 1.x): the runner every task's suite goes through, and its report.

A task package turns its evaluation data folder into pandas frames and expectation lists; `validate`
runs them in one ephemeral context (a pandas data source, an asset, a whole-dataframe batch definition,
a suite and a validation definition per frame). Nothing is written to disk by GX; the report is ours
(`ValidationReport`, written atomically).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from edgeopt.errors import UserError
from edgeopt.results import Record

BLANK = r"^\s*$"  # a blank or whitespace-only string


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


def run_suites(frames: dict[str, Any], suites: dict[str, list[Any]], data_dir: str, start: float) -> ValidationReport:
    """Run each dataset's expectations on its pandas frame in an ephemeral GX context; never raises on
    bad data: every expectation's outcome is in the report, the failed ones named in `failed`.

    Shared by every task's suite (each task package builds its frames and expectations).
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


def validate(frames: dict[str, Any], suites: dict[str, list[Any]], data_dir: Path,
             report_path: Path | None = None) -> ValidationReport:
    """Run a task's suites on its frames and write the report (when a path is given)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    report = run_suites(frames, suites, str(data_dir), time.perf_counter())
    if report_path is not None:
        report.write(Path(report_path))
    return report


def require_valid(report: ValidationReport) -> None:
    """Raise UserError naming every failed expectation."""
    if not report.success:
        failed = report.failed or ["(no expectation results)"]
        raise UserError(f"data validation failed: {', '.join(failed)}")
