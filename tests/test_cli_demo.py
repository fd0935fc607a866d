"""Specs for `gradproof demo`: the motivating case end to end on the first MNIST image.

The demo runs the real 784-200-784 network; ``run_demo`` is called once for the structured
checks and ``main(["demo"])`` once for the printed text and the exit code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradproof.cli import main
from gradproof.cli.demo import (
    EXPECTED,
    SHOWN_LINES,
    _json,
    corrected_backprop,
    run_demo,
    users_backprop,
)


@pytest.fixture(scope="module")
def demo():
    return run_demo(seed=0)


def bug_findings(report):
    return {(f.kind, f.tensor) for f in report.findings if f.is_bug}


def test_the_users_gradients_have_the_shapes_that_hide_the_bugs():
    rng = np.random.default_rng(0)
    encoder, decoder, x = rng.normal(size=(784, 200)), rng.normal(size=(200, 784)), rng.random((1, 784))
    buggy, fixed = users_backprop(encoder, decoder, x), corrected_backprop(encoder, decoder, x)
    assert buggy["W2"].shape == (784, 200) and buggy["W1"].shape == (200, 784)
    np.testing.assert_allclose(buggy["W2"].T, fixed["W2"])  # bug 1 is only a transpose
    assert not np.allclose(buggy["W1"].T, fixed["W1"])  # bug 2 changes the values


def test_the_buggy_backprop_is_diagnosed_with_both_bugs(demo):
    report = demo["buggy"]
    assert not report.passed
    assert set(EXPECTED) <= bug_findings(report)
    assert bug_findings(report) == {("transposed", "W1"), ("wrong_backprop_matrix", "W1"), ("transposed", "W2")}


def test_the_advice_does_not_fix_the_check(demo):
    assert not demo["advice"].passed
    assert ("wrong_backprop_matrix", "W1") in bug_findings(demo["advice"])


def test_the_corrected_backprop_passes_every_entry(demo):
    report = demo["corrected"]
    assert report.passed and bug_findings(report) == set()
    assert all(t.checked == t.size for t in report.tensors)
    assert sum(t.checked for t in report.tensors) == 2 * 784 * 200


def test_the_users_printout_looks_like_noise(demo):
    lines = demo["comparison"]
    assert len(lines) == SHOWN_LINES and lines[0]["index"] == 784 * 200 + 1
    relative = [line["diff"] / abs(line["numerical"]) for line in lines]
    # Same magnitudes, but most lines disagree well beyond any step-size effect.
    assert sum(r > 0.05 for r in relative) >= SHOWN_LINES - 2
    assert all(0.02 < abs(line["analytic"] / line["numerical"]) < 50 for line in lines)


def test_the_json_form_is_one_object_with_every_report(demo):
    data = json.loads(json.dumps(_json(demo)))
    assert data["as_designed"] is True
    assert data["buggy"]["passed"] is False and data["corrected"]["passed"] is True
    assert {"tensors", "findings"} <= set(data["advice"])


def test_demo_prints_each_stage_and_exits_0(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for words in ("156801:", "<=>", "[transposed] decoder (W2)", "[wrong_backprop_matrix] encoder (W1)",
                  "fix (MATLAB):", "only on z", "PASSED", "ran as designed"):
        assert words in out


def test_demo_fix_lines_are_the_users_own_lines(capsys):
    # The user's names for the tensors and for the local quantities (error_0, error_1, a):
    # the fix lines read as the corrected code the demo shows last.
    assert main(["demo"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "fix (numpy): gDecoder = a.T @ error_0" in out
    assert "fix (MATLAB): error_1 = (error_0 * decoder') .* a .* (1 - a);" in out
