"""``gradproof.testing.assert_gradient_ok`` inside a user's own pytest suite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gradproof.errors import GradientMismatch
from gradproof.testing import assert_gradient_ok

USER_TESTS = textwrap.dedent(
    """
    import numpy as np
    from gradproof.testing import assert_gradient_ok

    def loss(params):
        return float(np.sum(np.sin(params["w"])))

    def test_right():
        assert_gradient_ok(loss, lambda p: {"w": np.cos(p["w"])}, {"w": np.linspace(0, 1, 4)})

    def test_wrong_gradient():
        assert_gradient_ok(loss, lambda p: {"w": 2 * np.cos(p["w"])}, {"w": np.linspace(0, 1, 4)})
    """
)


def sine_case():
    params = {"w": np.linspace(0.0, 1.0, 5)}
    return (lambda p: float(np.sum(np.sin(p["w"])))), params


def test_a_right_gradient_returns_the_passing_report():
    loss, params = sine_case()
    assert assert_gradient_ok(loss, lambda p: {"w": np.cos(p["w"])}, params).passed


def test_a_wrong_gradient_raises_an_assertion_error_carrying_the_report():
    loss, params = sine_case()
    with pytest.raises(GradientMismatch) as error:
        assert_gradient_ok(loss, lambda p: {"w": -np.cos(p["w"])}, params)
    assert isinstance(error.value, AssertionError)
    assert "[sign_flipped] w" in str(error.value)


def test_under_pytest_a_failure_shows_the_users_test_and_no_gradproof_frames(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
    )
    out = done.stdout
    assert done.returncode == 1 and "1 failed, 1 passed" in out
    assert "test_user.py:12: GradientMismatch" in out  # the user's own line ends the traceback
    assert "[scaled] w" in out  # with the report in the message
    frames = [line for line in out.splitlines() if line.endswith(("Error", "Mismatch")) and ".py:" in line]
    assert frames == ["test_user.py:12: GradientMismatch"]
    assert "gradproof/testing.py" not in out and "gradproof/report.py" not in out
