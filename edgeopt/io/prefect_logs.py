"""Keep expected failures out of the console: Prefect logs every task exception with its traceback.

A candidate that fails (CandidateError) or a user mistake (UserError) already has its one line in the
run's summary, and its full story in its own log and MLflow run; the traceback of Prefect's engine
frames around it helps nobody. Unexpected exceptions keep their tracebacks.
"""

from __future__ import annotations

import logging

from edgeopt.errors import BusyError, CandidateError, InfrastructureError, UserError

EXPECTED = (CandidateError, UserError, InfrastructureError, BusyError)
ENGINE_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class ExpectedFailureFilter(logging.Filter):
    """Drops the engine's records about an expected failure (its exception, its "Finished in state
    Failed" line); the flow prints one line per failed candidate instead. Any other exception keeps
    its one-line record without the traceback: the CLI writes that to its crash log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, EXPECTED):
            return False
        if exc is not None:
            record.exc_info, record.exc_text = None, None
        if record.levelno >= logging.ERROR:
            text = record.getMessage()
            if any(f"{cls.__name__}:" in text or f"{cls.__name__}(" in text for cls in EXPECTED):
                return False
        return True


def quiet_expected_failures() -> None:
    """Install the filter once per process (idempotent)."""
    for name in ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExpectedFailureFilter) for f in logger.filters):
            logger.addFilter(ExpectedFailureFilter())
