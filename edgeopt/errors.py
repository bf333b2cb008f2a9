"""Errors that are the user's to fix: the CLI prints them as one line, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input (params, model, data, paths). The message names the problem."""


class CandidateError(Exception):
    """A candidate could not be built or measured; the run goes on without it."""


def short_error(exc: BaseException, limit: int = 300) -> str:
    """One line for CandidateError: library messages can be pages long."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
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
