"""Entries behind many kinks at once, judged together on circles around the point
(``engine/kink_cones.py``, wired in ``engine/kink_scan.py``), on losses whose kinks are placed
by hand.

The loss is f(θ) = g₀·θ + ½ θ·Qθ + Σ_h c_h relu(a_h·θ) at θ = 0: every unit sits at its kink
at the point, each entry of θ moves all of them, and along any one entry the values a correct
gradient takes (the left slope plus any part of each jump) fill everything between the
one-sided slopes. Worked example: with 10 units and 12 entries, a correct gradient is
g₀ + Σ_h r_h c_h a_h for r in [0, 1]^10, a 10-dimensional set in 12 dimensions; the same
gradient with 1e-3 added to one entry lies off it, and the circles say so. The gradients come
from the autograd oracle, with relu'(0) = 0, 1, 1/2 or a mix of them unit by unit.
"""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import gradproof as gp
from gradproof.engine.kink_cones import judge_cones, one_entry

SIZE = 12
UNITS = 10


def _problem(seed: int, units: int = UNITS, size: int = SIZE, offsets=None, nested: bool = False):
    """The loss (relu'(0) per unit as ``at_zero``: 0, 1 or 0.5 each), a function giving its
    oracle gradient at the point for given conventions, and the point."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (units, size))
    c = rng.choice([-1, 1], units) * rng.uniform(0.3, 2.0, units)
    g0 = rng.uniform(-1, 1, size)
    q = rng.uniform(-1, 1, (size, size))
    q = q @ q.T / size
    shift = np.zeros(units) if offsets is None else np.asarray(offsets, dtype=float)

    def loss_with(at_zero):
        slope = anp.array(at_zero, dtype=float)

        def relu(z, at):
            # relu'(0) = at: z where z > 0, and at·z across the kink at exactly 0.
            return anp.where(z > 0, z, 0.0) + anp.where(z == 0, at * z, 0.0)

        def loss(params):
            w = params["w"]
            z = anp.dot(a, w) + shift
            out = relu(z, slope)
            if nested:
                # The second unit is fed by the first: both sit at their kink at the point.
                out = anp.concatenate((out[:1], relu(z[1:2] + 0.7 * out[:1], slope[1:2]),
                                       out[2:]))
            return anp.dot(g0, w) + 0.5 * anp.dot(w, anp.dot(q, w)) + anp.dot(c, out)
        return loss

    params = {"w": np.zeros(size)}

    def gradient(at_zero):
        return autograd.grad(loss_with(at_zero))(params)["w"]

    return loss_with(np.zeros(units)), gradient, params


def _judge(loss, value, seed=0):
    size = value.size

    def moved(v):
        return loss({"w": v})
    return judge_cones(moved, np.ones(size), np.arange(size), value, 1e-16, 1e-5, 200_000,
                       np.random.default_rng(seed))


CONVENTIONS = {
    "relu0=0": lambda units, rng: np.zeros(units),
    "relu0=1": lambda units, rng: np.ones(units),
    "relu0=1/2": lambda units, rng: np.full(units, 0.5),
    "mixed": lambda units, rng: rng.choice([0.0, 0.5, 1.0], units),
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_a_correct_gradient_under_any_convention_lies_inside(seed, convention):
    loss, gradient, _ = _problem(seed)
    value = gradient(CONVENTIONS[convention](UNITS, np.random.default_rng(seed)))
    verdict = _judge(loss, value, seed)
    assert verdict.inside, verdict
    assert verdict.crossings == UNITS


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("size", [1e-3, -3e-4])
def test_one_wrong_entry_lies_outside_and_is_named(seed, size):
    loss, gradient, _ = _problem(seed)
    value = gradient(np.zeros(UNITS))
    entry = seed % SIZE
    value[entry] += size
    verdict = _judge(loss, value, seed)
    assert verdict.inside is False, verdict
    # The departure is explained by that entry alone: the least change that does it undoes
    # the error, or part of it where the entry's own kinks' range takes the rest.
    explained = one_entry(verdict, value)
    assert explained is not None and explained[0] == entry
    assert np.sign(explained[1]) == -np.sign(size)
    assert np.max(verdict.tolerance) < abs(explained[1]) <= 1.05 * abs(size)


def test_the_tolerance_is_far_below_the_errors_looked_for():
    loss, gradient, _ = _problem(7)
    verdict = _judge(loss, gradient(np.ones(UNITS)), 7)
    assert verdict.inside and np.max(verdict.tolerance) < 1e-5


@pytest.mark.parametrize("seed", range(3))
def test_units_near_their_kink_but_not_at_it_raise_no_false_alarm(seed):
    # Half the units sit 1e-9 to 1e-6 off their kink: the circles cross them twice or not at
    # all, and the correct gradient takes their own side's derivative.
    rng = np.random.default_rng(100 + seed)
    offsets = np.where(rng.random(UNITS) < 0.5, 0.0,
                       rng.choice([-1, 1], UNITS) * 10.0 ** rng.uniform(-9, -6, UNITS))
    loss, gradient, _ = _problem(seed, offsets=offsets)
    verdict = _judge(loss, gradient(np.zeros(UNITS)), seed)
    assert verdict.inside is not False, verdict


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("convention", ["relu0=0", "relu0=1"])
def test_a_unit_at_its_kink_fed_by_another_raises_no_false_alarm(seed, convention):
    # Nested units are no hyperplanes: the jumps a circle sees depend on the order it meets
    # them in, and two circles that disagree on them never fail a gradient.
    loss, gradient, _ = _problem(seed, nested=True)
    verdict = _judge(loss, gradient(CONVENTIONS[convention](UNITS, None)), seed)
    assert verdict.inside is not False, verdict


def test_a_loss_that_is_not_finite_near_the_point_tells_nothing():
    loss, gradient, _ = _problem(0)

    def overflowing(params):
        return np.inf if params["w"][0] > 0 else loss(params)
    verdict = _judge(overflowing, gradient(np.zeros(UNITS)))
    assert verdict.inside is None


# ----- through check_gradient --------------------------------------------------------------


def _check(loss, grad, params) -> gp.GradReport:
    return gp.check_gradient(loss, grad, params, mode="full", seed=0)


@pytest.mark.parametrize("convention", ["relu0=0", "relu0=1", "mixed"])
def test_check_gradient_verifies_a_correct_gradient_at_many_kinks(convention):
    # (With relu'(0) = 1/2 everywhere central differences agree at once: nothing to judge.)
    loss, gradient, params = _problem(3)
    report = _check(loss, {"w": gradient(CONVENTIONS[convention](UNITS,
                                                                  np.random.default_rng(3)))},
                    params)
    assert report.passed, str(report)
    note = next(f for f in report.findings_of("kink") if f.tensors == ("w",))
    assert note.details.get("kinks") == UNITS, str(report)
    assert "checked together on half circles" in note.message


@pytest.mark.parametrize("entry", [0, 5, 11])
def test_check_gradient_fails_one_wrong_entry_at_many_kinks_and_names_it(entry):
    loss, gradient, params = _problem(5)
    wrong = gradient(np.zeros(UNITS))
    wrong[entry] += 1e-3
    report = _check(loss, {"w": wrong}, params)
    assert not report.passed, str(report)
    (mismatch,) = [f for f in report.findings if f.kind == "mismatch"]
    assert mismatch.tensors == ("w",)
    assert mismatch.details["index"] == f"[{entry}]", str(report)
    assert "(z > 0) + alpha * (z < 0)" in mismatch.fix


def test_the_circles_count_in_the_reported_evaluations():
    loss, gradient, params = _problem(3)
    calls = {"n": 0}

    def counted(p):
        calls["n"] += 1
        return loss(p)
    report = _check(counted, {"w": gradient(np.zeros(UNITS))}, params)
    assert report.tensor("w").verified, str(report)
    assert report.loss_evaluations == calls["n"]


def test_the_circles_stop_at_their_budget():
    loss, gradient, _ = _problem(1)
    value = gradient(np.zeros(UNITS))

    def moved(v):
        return loss({"w": v})
    verdict = judge_cones(moved, np.ones(SIZE), np.arange(SIZE), value, 1e-16, 1e-5, 500,
                          np.random.default_rng(0))
    assert verdict.inside is None and verdict.evaluations <= 500


def test_a_loss_that_fails_on_a_circle_stops_with_a_note_and_no_verdict():
    loss, gradient, params = _problem(3)

    def fragile(p):
        # Every entry moved by more than 1e-9 at once: only a point on a circle around the
        # point (about 1e-5 each), or a moved line of the scans after it, is so.
        if np.all(np.abs(p["w"]) > 1e-9):
            raise RuntimeError("solver diverged")
        return loss(p)

    report = _check(fragile, {"w": gradient(np.zeros(UNITS))}, params)
    assert report.passed and not report.tensor("w").verified, str(report)
    assert any("solver diverged" in f.message for f in report.findings_of("kink")), str(report)
