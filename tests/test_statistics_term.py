"""Normalisation layers whose backward treats a statistic as a constant (a batch or layer
norm's mean or variance, a softmax's normalising sum, a log-softmax's log-sum-exp), checked by
``gp.check_vjp``: the missing paths are named (``missing_term``, with the axes), and other
mistakes are not."""

from __future__ import annotations

import numpy as np
import pytest

import gradproof as gp
from gradproof.statistics_term import directional_slope, statistic_axes

EPS = 1e-5


def _norm_forward(axes):
    def forward(x, gamma, beta):
        mu = x.mean(axis=axes, keepdims=True)
        std = np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + EPS)
        xhat = (x - mu) / std
        return gamma * xhat + beta, (xhat, gamma, std)
    return forward


def _norm_backward(axes, bug=None):
    def backward(dout, cache):
        xhat, gamma, std = cache
        params_axes = tuple(a for a in range(dout.ndim) if gamma.shape[a] == 1)
        dgamma = (dout * xhat).sum(axis=params_axes, keepdims=True)
        dbeta = dout.sum(axis=params_axes, keepdims=True)
        dxhat = dout * gamma * (gamma if bug == "gamma_twice" else 1.0)
        mean_term = 0.0 if bug in ("no_mean", "no_statistics") else dxhat.mean(axis=axes,
                                                                                keepdims=True)
        var_term = 0.0 if bug in ("no_variance", "no_statistics") else xhat * (
            dxhat * xhat).mean(axis=axes, keepdims=True)
        dx = (dxhat - mean_term - var_term) / std
        return dx * (1.1 if bug == "scaled" else 1.0), dgamma, dbeta
    return backward


def _case(shape, axes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, size=shape)
    param_shape = tuple(1 if a in axes else n for a, n in enumerate(shape))
    if axes == (1,) or axes == (1, 2, 3):  # a layer norm's gamma is per feature
        param_shape = tuple(1 if a == 0 else n for a, n in enumerate(shape))
    return x, rng.normal(size=param_shape), rng.normal(size=param_shape)


def _statistics_findings(report):
    return [f for f in report.findings if f.kind == "missing_term" and "axes" in f.details]


CASES = [((8, 5), (0,)), ((6, 7), (1,)), ((4, 3, 2, 3), (0, 2, 3))]


@pytest.mark.parametrize("shape,axes", CASES)
@pytest.mark.parametrize("bug,paths", [("no_statistics", "mean and variance"),
                                       ("no_variance", "variance"), ("no_mean", "mean")])
def test_a_backward_that_treats_the_statistics_as_constants_is_named(shape, axes, bug, paths):
    x, gamma, beta = _case(shape, axes)
    report = gp.check_vjp(_norm_forward(axes), _norm_backward(axes, bug), (x, gamma, beta))
    assert not report.passed
    found = _statistics_findings(report)
    assert len(found) == 1 and found[0].tensors == ("x",), str(report)
    assert tuple(found[0].details["axes"]) == axes and found[0].details["paths"] == paths
    assert not [f for f in report.findings if f.is_bug and f is not found[0]], str(report)


@pytest.mark.parametrize("shape,axes", CASES)
def test_the_right_backward_passes_without_a_finding(shape, axes):
    x, gamma, beta = _case(shape, axes, seed=3)
    report = gp.check_vjp(_norm_forward(axes), _norm_backward(axes), (x, gamma, beta))
    assert report.passed, str(report)
    assert not _statistics_findings(report)


@pytest.mark.parametrize("bug", ["gamma_twice", "scaled"])
def test_other_mistakes_in_a_batch_norm_are_not_called_missing_statistics(bug):
    x, gamma, beta = _case((8, 5), (0,), seed=1)
    report = gp.check_vjp(_norm_forward((0,)), _norm_backward((0,), bug), (x, gamma, beta))
    assert not report.passed
    assert not _statistics_findings(report), str(report)


def test_a_centring_layer_without_the_mean_path():
    def forward(x):
        return x - x.mean(axis=1, keepdims=True)

    def backward(dout, x):
        return dout  # bug: the mean's path, - dout.mean(axis=1, keepdims=True), is missing

    x = np.random.default_rng(2).normal(size=(5, 6))
    report = gp.check_vjp(forward, backward, x)
    (found,) = _statistics_findings(report)
    assert found.details == {"axes": [1], "paths": "mean"}
    assert "dx = g - g.mean(axis=1, keepdims=True)" in found.fix


@pytest.mark.parametrize("seed", range(5))
def test_directional_slope_matches_the_analytic_derivative(seed):
    rng = np.random.default_rng(seed)
    x, u, d = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    value = lambda v: float(np.sum(u * np.sin(v) * v))  # noqa: E731
    exact = float(np.sum(u * (np.cos(x) * x + np.sin(x)) * d))
    assert abs(directional_slope(value, x, d) - exact) <= 1e-9 * max(1.0, abs(exact))


def test_statistic_axes_of_an_image_batch():
    assert statistic_axes(2) == [(0,), (1,)]
    assert (0, 2, 3) in statistic_axes(4) and (1, 2, 3) in statistic_axes(4)
    assert (2, 3) in statistic_axes(4)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("bug", [None, "no_sum", "doubled"])
def test_a_softmax_layer_without_the_normalising_sum(axis, bug):
    def forward(x):
        y = _softmax(x, axis)
        return y, y

    def backward(dout, y):
        if bug == "no_sum":
            return y * dout
        right = y * (dout - (dout * y).sum(axis=axis, keepdims=True))
        return 2 * right if bug == "doubled" else right

    x = np.random.default_rng(4).normal(size=(5, 6))
    report = gp.check_vjp(forward, backward, x, cache=True)
    assert report.passed == (bug is None), str(report)
    found = _statistics_findings(report)
    if bug == "no_sum":
        assert len(found) == 1 and found[0].details == {"axes": [axis], "paths": "softmax"}
        assert f"(dout * y).sum(axis={axis}, keepdims=True)" in found[0].fix
    else:
        assert not found, str(report)


def test_a_log_softmax_layer_without_the_log_sum_exp():
    def forward(x):
        s = x - x.max(axis=1, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=1, keepdims=True))

    def backward(dout, x):
        return dout  # bug: - softmax(x) * dout.sum(axis=1, keepdims=True) is missing

    x = np.random.default_rng(5).normal(size=(4, 7))
    report = gp.check_vjp(forward, backward, x)
    (found,) = _statistics_findings(report)
    assert found.details == {"axes": [1], "paths": "log_softmax"}
    assert not [f for f in report.findings if f.is_bug and f is not found]
