"""Specs for gradproof.finite_diff: every difference carries an error estimate that bounds it.

The setting, spelled out once: a scalar function f, a point x, a step h and a claimed
derivative a. ``central`` turns f(x±h) into the error numeric - a (with rounding estimate
2·noise/width); ``richardson`` adds f(x±2h) and returns the extrapolated error with its
estimate. With a = f'(x) exactly, the extrapolated error must lie within the rule's tolerance
of zero: the tests use the estimate as the tolerance, never a constant of their own.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gradproof.finite_diff import (
    Rule,
    between_slopes,
    central,
    first_verdict,
    noise_level,
    relative_error,
    richardson,
    step_sizes,
    taylor_fit,
)

EPS = np.finfo(np.float64).eps

# name -> (f, f')
FUNCTIONS = {
    "exp": (np.exp, np.exp),
    "sin": (np.sin, np.cos),
    "log1p_sq": (lambda x: np.log1p(x**2), lambda x: 2 * x / (1 + x**2)),
    "cube": (lambda x: x**3, lambda x: 3 * x**2),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
}


def differences(f, x, h, a, noise=None):
    """Central differences of f at x with step h, for the claimed derivative a."""
    x, h, a = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, h, a))
    j0 = float(f(x)[0])
    noise = EPS * abs(j0) if noise is None else noise
    return central(f(x + h), f(x - h), j0, a * h, -a * h, 2 * h, noise, EPS), noise


def test_step_is_cbrt_eps_times_the_scale():
    h = step_sizes(np.array([0.0, 0.5, -3.0]), EPS)
    np.testing.assert_allclose(h, np.cbrt(EPS) * np.array([1.0, 1.0, 3.0]))


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(FUNCTIONS)), x=st.floats(-2.0, 2.0))
@example(name="cube", x=0.0)
def test_richardson_error_lies_within_its_own_estimate(name, x):
    f, df = FUNCTIONS[name]
    h = step_sizes(np.array([x]), EPS)
    first, noise = differences(f, x, h, df(x))
    second, _ = differences(f, x, 2 * h, df(x), noise)
    extra = richardson(first, second, noise, safety=10.0)
    rule = Rule()
    tolerance = rule.tolerance(extra.estimate, 0.0, first.analytic, first.analytic + extra.error)
    assert abs(extra.error[0]) <= tolerance[0]


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["exp", "sin", "cube", "tanh"]), x=st.floats(0.2, 1.5))
def test_a_smooth_function_is_no_kink(name, x):
    # Away from inflection points (J'' = 0, where every 5-point test sees only high orders).
    f, df = FUNCTIONS[name]
    h = step_sizes(np.array([x]), EPS)
    first, noise = differences(f, x, h, df(x))
    second, _ = differences(f, x, 2 * h, df(x), noise)
    assert not richardson(first, second, noise, safety=10.0).kink[0]


@pytest.mark.parametrize("name", ["exp", "sin", "cube", "tanh"])
def test_a_wrong_derivative_whose_direction_rounds_differently_at_2h_is_no_kink(name):
    # Along a many-entry direction the stored step differs from the nominal one by rounding,
    # and differently at h and 2h: the analytic side moves (here by 1e-8 relative) while the
    # loss is smooth. A derivative 3000x too large makes that drift large in the error.
    f, df = FUNCTIONS[name]
    x = 0.7
    h = step_sizes(np.array([x]), EPS)
    wrong = 3000 * df(x)
    first, noise = differences(f, x, h, wrong)
    second, _ = differences(f, x, 2 * h, wrong * (1 + 1e-8), noise)
    assert not richardson(first, second, noise, safety=10.0).kink[0]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_richardson_removes_the_h2_truncation_and_estimates_it(name):
    f, df = FUNCTIONS[name]
    x, h = 0.7, 1e-2  # a step far too large: truncation dominates
    first, noise = differences(f, x, h, df(x))
    second, _ = differences(f, x, 2 * h, df(x), noise)
    extra = richardson(first, second, noise, safety=10.0)
    # The truncation estimate is the size of the first error, and extrapolation removes it.
    assert abs(extra.error[0]) < abs(first.error[0]) / 100 or abs(first.error[0]) < 1e-12
    assert 0.5 * abs(first.error[0]) <= extra.estimate[0] <= 2 * abs(first.error[0]) + 1e-12


def test_first_step_decides_a_right_and_a_clearly_wrong_derivative():
    x = np.array([0.3, 0.3])
    h = step_sizes(x, EPS)
    first, _ = differences(np.exp, x, h, np.exp(x) * np.array([1.0, 1.01]))
    passed, failed, tolerance = first_verdict(first, np.zeros(2), Rule())
    assert passed.tolist() == [True, False]
    assert failed.tolist() == [False, True]
    assert tolerance[0] > 0


@settings(max_examples=40, deadline=None)
@given(offset=st.floats(-0.9, 0.9))
@example(offset=0.0)
def test_a_kink_within_the_step_breaks_the_second_difference_scaling(offset):
    h = 1e-3
    kink = 0.5 + offset * h  # |x - kink| crosses zero within one step of x = 0.5
    f = lambda x: np.abs(x - kink)  # noqa: E731 - a one-line test function
    first, noise = differences(f, 0.5, h, 1.0)
    second, _ = differences(f, 0.5, 2 * h, 1.0, noise)
    assert richardson(first, second, noise, safety=10.0).kink[0]


def test_at_a_kink_a_subgradient_lies_between_the_one_sided_slopes():
    relu = lambda x: np.maximum(x, 0.0)  # noqa: E731
    h = 1e-6
    for a, between in ((0.0, True), (1.0, True), (0.5, True), (1.5, False), (-0.2, False)):
        small, _ = differences(relu, 0.0, h, a)
        assert between_slopes(small, np.array([1e-9]))[0] == between, a


def test_noise_level_recovers_added_noise_and_ignores_smooth_variation():
    rng = np.random.default_rng(0)
    t = np.linspace(-1, 1, 9) * 1e-6
    sigma = 1e-9
    estimates = [noise_level(np.exp(1 + t) + rng.normal(scale=sigma, size=9)) for _ in range(50)]
    assert sigma / 3 < np.median(estimates) < 3 * sigma
    assert noise_level(1 + 2 * t + 3 * t**2) < 1e-15
    assert noise_level(np.array([1.0, np.nan] * 5)) == 0.0


def test_rule_default_scales_the_estimate_and_classic_uses_rtol_atol():
    default = Rule(safety=10.0)
    np.testing.assert_allclose(default.tolerance(np.array([1e-8]), 1e-9, 1.0, 1.0), [1.1e-7])
    classic = Rule(rtol=1e-3, atol=1e-6)
    assert classic.classic
    np.testing.assert_allclose(
        classic.tolerance(np.array([5.0]), 0.0, np.array([2.0]), np.array([-3.0])), [3.001e-3]
    )
    assert "1e-06 + 0.001" in classic.describe()


def test_relative_error_is_the_classic_definition():
    analytic, numeric = np.array([1.0, 0.0, 2.0]), np.array([1.1, 0.0, -2.0])
    error, scale = np.abs(analytic - numeric), np.maximum(np.abs(analytic), np.abs(numeric))
    np.testing.assert_allclose(relative_error(error, scale), [0.1 / 1.1, 0.0, 2.0])


def taylor_series(delta, curvature, steps, noise, seed=0):
    """Remainders δ·h + c·h² plus rounding noise of the given deviation."""
    rng = np.random.default_rng(seed)
    return delta * steps + curvature * steps**2 + rng.normal(scale=noise, size=steps.size)


def test_taylor_fit_finds_order_two_for_a_right_gradient():
    steps = 2.0 ** -np.arange(30)
    floor = np.full(30, 1e-15)
    fit = taylor_fit(steps, taylor_series(0.0, 0.7, steps, noise=1e-16), floor, margin=10.0)
    assert fit.order == pytest.approx(2.0, abs=0.1)
    assert abs(fit.derivative_error) < 1e-6


def test_taylor_fit_finds_order_one_and_the_slope_error_for_a_wrong_gradient():
    steps = 2.0 ** -np.arange(40)
    floor = np.full(40, 1e-15)
    fit = taylor_fit(steps, taylor_series(-1e-4, 0.7, steps, noise=1e-16), floor, margin=10.0)
    assert fit.order == pytest.approx(1.0, abs=0.1)
    # The slope error comes with its own rounding bound, which must cover it.
    assert abs(fit.derivative_error - -1e-4) <= fit.bound < 1e-4


def test_taylor_fit_of_a_remainder_at_rounding_level_has_no_order():
    steps = 2.0 ** -np.arange(10)
    fit = taylor_fit(steps, np.full(10, 1e-17), np.full(10, 1e-16), margin=10.0)
    assert fit.order is None and fit.points == 0
    assert math.isfinite(fit.bound)
