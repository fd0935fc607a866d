"""Test helpers: assert in a test suite that a hand-written gradient is right.

    from gradproof.testing import assert_gradient_ok

    def test_my_layer_gradient():
        assert_gradient_ok(loss, grad, params)

On failure the AssertionError (a ``GradientMismatch``) carries the whole report: the table,
the diagnosis and the tolerance used, so the test log says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradproof.check import check_gradient
from gradproof.report import GradReport


def assert_gradient_ok(
    loss: Callable[..., Any], grad: Any, params: Any, **options: Any
) -> GradReport:
    """Check a gradient and raise unless it is right.

    Parameters
    ----------
    loss, grad, params, **options
        As for ``gradproof.check_gradient``.

    Returns
    -------
    GradReport
        The report of the passing check (for further assertions).

    Raises
    ------
    GradientMismatch
        An ``AssertionError`` whose message is the report, when the check fails or was
        interrupted.
    InputError
        When the inputs cannot be checked (see ``check_gradient``).
    """
    report = check_gradient(loss, grad, params, **options)
    report.assert_ok()
    return report
