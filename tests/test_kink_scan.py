"""Entries at exact kinks with the gradient given as arrays: the scan along the entry at moved
points (``engine/kink_scan.py``), on losses whose kinks are placed by hand.

The loss is f(θ) = g₀·θ + ½ θ·Qθ + Σ_h c_h relu(a_h·θ) at θ = 0, where every hyperplane
a_h·θ = 0 passes through the point: along entry 0 the kinks of all units are stacked at t = 0.
Worked example (the first case): one unit, a_0 = [1, 0.3, -0.2, ...], c = 2: along w[0] the
slope is g₀[0] on the left and g₀[0] + 2 on the right, and a correct gradient is one of those
two (relu'(0) = 0 or 1); 1e-3 above the left slope is neither. The gradients come from the
autograd oracle, with relu'(0) = 0 (``z > 0``) or 1 (``z >= 0``).
"""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import gradproof as gp

SIZE = 6


def _problem(rows: list[list[float]], weights: list[float], seed: int = 0):
    """The loss, its oracle gradients under both relu'(0) conventions, and the point."""
    rng = np.random.default_rng(seed)
    a = np.zeros((len(rows), SIZE))
    for k, row in enumerate(rows):
        a[k, : len(row)] = row
        a[k, len(row):] = rng.uniform(-1, 1, SIZE - len(row))  # every unit moves off its kink
    c = np.array(weights)
    g0 = rng.uniform(-1, 1, SIZE)
    q = rng.uniform(-1, 1, (SIZE, SIZE))
    q = q @ q.T

    def loss_with(at_zero_on: bool):
        def loss(params):
            w = params["w"]
            z = anp.dot(a, w)
            on = z >= 0 if at_zero_on else z > 0
            return anp.dot(g0, w) + 0.5 * anp.dot(w, anp.dot(q, w)) + anp.dot(
                c, anp.where(on, z, 0.0))
        return loss

    params = {"w": np.zeros(SIZE)}
    grads = {on: autograd.grad(loss_with(on))(params) for on in (False, True)}
    return loss_with(False), grads, params


def _scanned(report: gp.GradReport) -> int:
    return sum(f.details.get("scanned", 0) for f in report.findings if f.kind == "kink")


def _check(loss, grad, params) -> gp.GradReport:
    return gp.check_gradient(loss, grad, params, mode="full", seed=0)


CASES = {
    # One unit: the values a correct gradient takes are the two sides' slopes.
    "one": ([[1.0, 0.3, -0.2]], [2.0]),
    # Two units moving the same way along w[0], one with a falling slope.
    "same-way": ([[1.0, 0.5], [0.7, -0.4]], [1.5, -2.0]),
    # Two units moving both ways (relu(t) + relu(-t) = |t| along w[0]).
    "both-ways": ([[1.0, 0.5], [-1.0, 0.8]], [1.0, 1.0]),
    # Opposing units that nearly cancel along w[0] (relu(t) - 0.8 relu(-t): sides 0.8 and 1
    # above g₀[0]): the correct gradient lies outside both, as in stress seeds 57 and 79.
    # (Where they cancel exactly the loss is linear along w[0] and no step shows a kink.)
    "cancel": ([[1.0, 0.5], [-1.0, -0.6]], [1.0, -0.8]),
    # Three units, one of them moving the other way: a correct value outside both sides.
    "outside": ([[1.0, 0.2], [0.5, -0.7], [-0.8, 0.4]], [1.2, -0.9, 0.6]),
}


@pytest.mark.parametrize("convention", [False, True], ids=["relu0=0", "relu0=1"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_correct_gradient_passes_with_its_kink_entries_scanned(case, convention):
    loss, grads, params = _problem(*CASES[case])
    report = _check(loss, grads[convention], params)
    assert report.passed, str(report)
    assert _scanned(report) >= 1


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("offset", [1e-3, -0.3, 0.37], ids=["near", "outside", "far"])
def test_a_value_no_correct_gradient_takes_fails_naming_the_entry(case, offset):
    loss, grads, params = _problem(*CASES[case])
    wrong = {"w": grads[False]["w"].copy()}
    wrong["w"][0] += offset
    report = _check(loss, wrong, params)
    assert not report.passed
    blamed = [f for f in report.findings if f.is_bug]
    assert any(f.tensors == ("w",) for f in blamed), str(report)


def test_a_value_inside_the_sides_fails_with_the_values_a_correct_gradient_takes():
    # One unit: sides g0[0] and g0[0] + 2; 1e-3 above the left one lies between them, where
    # the one-sided slopes alone accept a kink.
    loss, grads, params = _problem(*CASES["one"])
    wrong = {"w": grads[False]["w"].copy()}
    wrong["w"][0] += 1e-3
    report = _check(loss, wrong, params)
    (finding,) = [f for f in report.findings if f.kind == "mismatch"]
    assert finding.details["index"] == "[0]"
    left = grads[False]["w"][0]
    # Either side, or halfway (relu'(0) = 1/2).
    assert np.allclose(sorted(finding.details["values"]), [left, left + 1.0, left + 2.0],
                       atol=1e-6)
    assert len(finding.details["jumps"]) == 1


def test_float32_losses_and_callable_gradients_are_not_scanned():
    loss, grads, params = _problem(*CASES["one"])
    wrong = {"w": grads[False]["w"].copy()}
    wrong["w"][0] += 1e-3

    def float32_loss(p):
        return float(np.float32(loss({"w": np.asarray(p["w"], dtype=np.float32)})))

    as_float32 = {"w": params["w"].astype(np.float32)}
    report = _check(float32_loss, {"w": wrong["w"].astype(np.float32)}, as_float32)
    assert _scanned(report) == 0
    assert not any("jumps" in f.details for f in report.findings)
    # A callable gradient is checked at the moved point itself (``moved_point.py``).
    report = _check(loss, lambda p: wrong, params)
    assert not any("jumps" in f.details for f in report.findings)


def test_a_loss_that_fails_near_the_point_stops_the_scan_with_a_note():
    loss, grads, params = _problem(*CASES["one"])
    calls = {"n": 0}

    def fragile(p):
        calls["n"] += 1
        if calls["n"] > 400:  # past the check's own evaluations, inside the scan
            raise RuntimeError("solver diverged")
        return loss(p)

    report = _check(fragile, grads[False], params)
    assert report.passed
    assert any("solver diverged" in f.message for f in report.findings_of("kink")), str(report)


@pytest.mark.parametrize("moving", [True, False], ids=["abs-of-a-unit", "abs-of-the-entry"])
def test_an_abs_kink_with_sign_0_equal_0_passes(moving):
    # |a·θ| with sign(0) = 0 (np.sign, torch.abs's backward): the midpoint of its two slopes,
    # half its jump. A unit's kink moves off t = 0 on the moved lines; |w[0]| alone stays there.
    rng = np.random.default_rng(3)
    a = rng.uniform(-1, 1, SIZE) if moving else np.eye(SIZE)[0]
    a[0] = 1.0
    g0 = rng.uniform(-1, 1, SIZE)

    def loss(params):
        w = params["w"]
        return anp.dot(g0, w) + 0.5 * anp.dot(w, w) + 1.5 * anp.abs(anp.dot(a, w))

    params = {"w": np.zeros(SIZE)}
    grad = {"w": g0 + params["w"] + 1.5 * np.sign(a @ params["w"]) * a}
    np.testing.assert_allclose(grad["w"], g0)  # at the kink: the midpoint
    report = _check(loss, grad, params)
    assert report.passed, str(report)
    # A unit's kink allows its sides and their midpoint; the entry's own, anything between its
    # sides (pieces written with conventions of their own, as in test_unverified): a wrong
    # value must leave them.
    wrong = {"w": grad["w"].copy()}
    wrong["w"][0] += 0.2 if moving else 2.0
    assert not _check(loss, wrong, params).passed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_leaky_relu_slope_outside_both_sides_at_its_kink_fails_and_says_where(seed):
    # A leaky relu unit at its kink: the slope of the activation there may be alpha (left), 1
    # (right) or between; (z > 0) + alpha * (z < 0) gives 0, below both.
    alpha = 0.1
    rng = np.random.default_rng(seed)
    a = np.concatenate([[1.0], rng.uniform(-1, 1, SIZE - 1)])
    g0 = rng.uniform(-1, 1, SIZE)

    def leaky(at_zero_right: bool):
        def loss(params):
            z = anp.dot(a, params["w"])
            right = z >= 0 if at_zero_right else z > 0
            return anp.dot(g0, params["w"]) + 2.0 * anp.where(right, z, alpha * z)
        return loss

    params = {"w": np.zeros(SIZE)}
    for at_zero_right in (False, True):  # alpha at 0, then 1 at 0: both correct
        grad = autograd.grad(leaky(at_zero_right))(params)
        assert _check(leaky(False), grad, params).passed
    zero_at_kink = {"w": g0 + 2.0 * 0.0 * a}  # the slope 0 at z = 0
    report = _check(leaky(False), zero_at_kink, params)
    assert not report.passed
    (mismatch,) = [f for f in report.findings if f.kind == "mismatch"]
    assert mismatch.tensors == ("w",) and "(z > 0) + alpha * (z < 0)" in mismatch.fix
    (note,) = [f for f in report.findings if f.kind == "kink"]
    assert "could not be verified" not in note.message
    assert "no correct gradient takes" in note.message
