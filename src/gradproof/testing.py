"""Test helpers: assert in a test suite that a hand-written gradient is right.

    from gradproof.testing import assert_gradient_ok

    def test_my_layer_gradient():
        assert_gradient_ok(loss, grad, params)

On failure the AssertionError (a ``GradientMismatch``) carries the whole report: the table,
the diagnosis and the tolerance used, so the test log says what is wrong. Under pytest the
traceback ends at the user's own test: gradproof's frames are hidden (``__tracebackhide__``).
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
    __tracebackhide__ = True  # pytest shows the user's test line, not gradproof's frames
    report = check_gradient(loss, grad, params, **options)
    report.assert_ok()
    return report
