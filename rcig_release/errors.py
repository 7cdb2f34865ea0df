"""Domain exceptions. The CLI maps each to an exit code and prints its message as one line.

Messages must name the problem (a path, a key, a count) but never print private data: no pixel
values, no array contents.
"""


class RcigReleaseError(Exception):
    """Base class of every error the CLI turns into a one-line message."""

    exit_code = 1


class InputError(RcigReleaseError, ValueError):
    """Bad user input: a missing or corrupt file, an invalid option, a refused overwrite (exit 2)."""

    exit_code = 2


class PolicyFailure(RcigReleaseError):
    """A release policy rule or the release safety check failed (exit 3)."""

    exit_code = 3


class DpViolation(RcigReleaseError):
    """A DP run whose audit's empirical ε lower bound exceeds the proven ε (exit 4): a bug in the
    mechanism or its accounting, or a broken assumption, never a privacy result."""

    exit_code = 4
