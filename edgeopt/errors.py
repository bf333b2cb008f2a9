"""Errors that are the user's to fix: the CLI prints them as one line, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum


class ExitCode(IntEnum):
    """What `edgeopt` exits with (README, "Exit codes"); deployments and `dvc repro` see the same."""

    OK = 0  # the run completed: promoted, or nothing passed the gates (said in one line)
    INTERNAL = 1  # an internal failure, or infrastructure (orchestrator, tracking store) unavailable
    USER = 2  # a user mistake: params, model, data, paths
    NOT_COMPARED = 3  # the baseline could not be measured, or no candidate could be compared with it
    BUSY = 75  # another run holds the output folder (EX_TEMPFAIL: try again later)
    INTERRUPTED = 130  # Ctrl-C / SIGTERM: children stopped, runs marked KILLED


class UserError(Exception):
    """Bad input (params, model, data, paths). The message names the problem."""


class InfrastructureError(Exception):
    """Something the run depends on (orchestrator, tracking store) is unavailable: not the user's input,
    not a bug. The CLI prints it as one line and exits with ExitCode.INTERNAL."""


class BusyError(Exception):
    """Another run holds the workspace: exit ExitCode.BUSY, try again later."""


class CandidateError(Exception):
    """A candidate could not be built or measured; the run goes on without it."""


def short_error(exc: BaseException, limit: int = 300) -> str:
    """One line for CandidateError: library messages can be pages long."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, for a UserError (its type's name where it has no message)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def library_errors(what: str) -> Iterator[None]:
    """Turn any library failure into a CandidateError: the pipeline marks the candidate FAILED."""
    try:
        yield
    except CandidateError:
        raise
    except Exception as exc:  # frameworks raise anything from RuntimeError to bare Exception
        raise CandidateError(f"{what} failed: {short_error(exc)}") from exc
