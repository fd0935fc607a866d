"""Exceptions raised by gradproof.

Every error names the thing that is wrong (a tensor, a file, a shape) and what was expected.
``InputError`` and its subclasses are what the CLI turns into exit code 2; ``GradientMismatch``
is what ``GradReport.assert_ok()`` raises when a check fails.
"""

from __future__ import annotations


class GradproofError(Exception):
    """Base class of every error gradproof raises on purpose."""


class InputError(GradproofError, ValueError):
    """Bad input from the user: a parameter, an option, a shape or a value."""


class DataError(InputError):
    """A data file (IDX, .npz, .mat, checkpoint) is missing, malformed or inconsistent."""


class TrainingDiverged(GradproofError):
    """Training met a NaN or Inf loss; the last good checkpoint is kept."""


class GradientMismatch(GradproofError, AssertionError):
    """A gradient check failed; the message is the full report with its findings."""
