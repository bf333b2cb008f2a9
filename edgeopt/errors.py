"""Errors that are the user's to fix: the CLI prints them as one line, never a traceback."""


class UserError(Exception):
    """Bad input (params, model, data, paths). The message names the problem."""


class CandidateError(Exception):
    """A candidate could not be built or measured; the run goes on without it."""
