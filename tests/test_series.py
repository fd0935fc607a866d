"""Spec for the output series of the exact check (the records' ``series``) and their use.

The series must be the change of each output's data term to rounding, checked against an
independent oracle: the same forward definitions evaluated in 50-digit decimal arithmetic.
Beyond small shifts, the truncation must stay under the stated remainder bound. In
``LocalDifferences`` the series path must give the central differences of direct evaluation
(within its rounding estimate), be closer to the 50-digit truth than direct evaluation, and
fall back to direct evaluation wherever its bound does not allow it.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
import pytest
from autograd import grad as autograd_grad
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import oracle_objective  # the autograd oracle of every configuration

from gradproof.nn import ACTIVATIONS, LOSSES, Autoencoder
from gradproof.check import check_model
from gradproof.engine.exact.evaluator import entry_steps
from gradproof.engine.exact.local_delta import SERIES_ORDER, LocalDifferences
from gradproof.nn.power_series import compose, product

SUPPORTED = [("sigmoid", "squared"), ("tanh", "squared"), ("identity", "squared"),
             ("sigmoid", "cross_entropy")]
DIGITS = 50


def _exp(v: Decimal) -> Decimal:
    return v.exp()


DECIMAL_ACTIVATIONS = {
    "sigmoid": lambda u: 1 / (1 + _exp(-u)),
    "tanh": lambda u: (_exp(2 * u) - 1) / (_exp(2 * u) + 1),
    "identity": lambda u: u,
}


def decimal_change(activation: str, loss: str, s: float, x: float, v: float | Decimal
                   ) -> Decimal:
    """ℓ(s + v) - ℓ(s) in 50-digit arithmetic, from the forward definitions."""
    with localcontext() as context:
        context.prec = DIGITS
        s_, x_, v_ = Decimal(s), Decimal(x), Decimal(v)
        if loss == "cross_entropy":  # softplus(s) - x s
            def term(u):
                return (1 + _exp(u)).ln() - x_ * u
        else:
            def term(u):
                return (DECIMAL_ACTIVATIONS[activation](u) - x_) ** 2 / 2
        return term(s_ + v_) - term(s_)


def output_series(activation: str, loss: str, x: np.ndarray, z: np.ndarray, s: np.ndarray,
                  order: int) -> tuple[np.ndarray, np.ndarray] | None:
    return LOSSES[loss].series(ACTIVATIONS[activation], x, z, s, order)


def evaluate(coefficients: np.ndarray, v: float) -> np.ndarray:
    return sum(coefficients[k] * v**k for k in range(len(coefficients)))


@pytest.mark.parametrize("activation, loss", SUPPORTED)
def test_series_equal_the_50_digit_change_to_rounding(activation, loss):
    rng = np.random.default_rng(3)
    s = np.concatenate([rng.normal(0, 3, 12), [-30.0, -8.0, 0.0, 8.0, 30.0]])[None, :]
    x = rng.uniform(0, 1, s.shape)
    z = ACTIVATIONS[activation].forward(s)
    coefficients, _ = output_series(activation, loss, x, z, s, SERIES_ORDER)
    for v in (1e-9, -2e-6, 3e-5, -1e-3):
        got = evaluate(coefficients, v)[0]
        for j in range(s.shape[1]):
            truth = float(decimal_change(activation, loss, s[0, j], x[0, j], v))
            assert abs(got[j] - truth) <= 1e-14 * abs(truth) + 1e-300, (j, v, got[j], truth)


@pytest.mark.parametrize("activation, loss", SUPPORTED)
def test_truncation_stays_under_the_remainder_bound(activation, loss):
    rng = np.random.default_rng(4)
    s = rng.normal(0, 2, (1, 15))
    x = rng.uniform(0, 1, s.shape)
    z = ACTIVATIONS[activation].forward(s)
    for order in (2, 4, SERIES_ORDER):
        coefficients, bound = output_series(activation, loss, x, z, s, order)
        for v in (0.05, -0.2, 0.5, -0.9):
            got = evaluate(coefficients, v)[0]
            tail = bound[0] * abs(v) ** (order + 1) / (1 - abs(v))
            for j in range(s.shape[1]):
                truth = float(decimal_change(activation, loss, s[0, j], x[0, j], v))
                assert abs(got[j] - truth) <= tail[j] + 1e-14 * abs(truth), (order, v, j)


@settings(max_examples=60, deadline=None)
@given(s=st.floats(-1000, 1000), x=st.floats(0, 1),
       pair=st.sampled_from(SUPPORTED))
def test_series_are_finite_for_any_pre_activation(s, x, pair):
    activation, loss = pair
    s_, x_ = np.array([[s]]), np.array([[x]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no warning escapes
        coefficients, bound = output_series(activation, loss, x_, ACTIVATIONS[activation]
                                            .forward(s_), s_, SERIES_ORDER)
    assert np.isfinite(coefficients).all() and np.isfinite(bound).all()
    assert coefficients[0, 0, 0] == 0.0


def test_no_series_where_there_is_a_kink_or_no_form():
    s = x = np.zeros((1, 3))
    assert output_series("relu", "squared", x, s, s, SERIES_ORDER) is None
    assert output_series("tanh", "cross_entropy", x, s, s, SERIES_ORDER) is None


def test_series_arithmetic_against_known_expansions():
    # (1 + v)^2 = 1 + 2v + v^2; e^(log1p v) - 1 = v, via compose with a scalar series.
    one_plus = np.array([1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(product(one_plus, one_plus), [1.0, 2.0, 1.0, 0.0])
    log1p = np.array([0.0, 1.0, -1 / 2, 1 / 3, -1 / 4, 1 / 5])
    expm1 = [0.0, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120]
    np.testing.assert_allclose(compose(expm1, log1p), [0, 1, 0, 0, 0, 0], atol=1e-16)


# ----- the series inside LocalDifferences ------------------------------------------------------

N = 9
CONFIGS = {
    "seed": dict(layers=[N, 5, N]),
    "tanh": dict(layers=[N, 5, N], activation="relu", output_activation="tanh"),
    "identity": dict(layers=[N, 5, N], output_activation="identity", weight_decay=0.1),
    "cross_entropy": dict(layers=[N, 5, N], loss="cross_entropy", reduction="mean"),
    "tied": dict(layers=[N, 5, N], tied=True, sparsity_weight=0.4),
    "deep": dict(layers=[N, 6, 3, 6, N], activation="tanh"),
    "deep_sigmoid": dict(layers=[N, 6, 4, 6, N], loss="cross_entropy", weight_decay=0.2),
    "deep_tied": dict(layers=[N, 6, 3, 6, N], tied=True, activation="identity"),
}


def make_case(config: dict, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    model = Autoencoder(**config)
    params = model.init_params(seed)
    x = rng.integers(0, 6, size=(batch, N)) / 5.0
    return model, params, x


def hidden_tensors(model: Autoencoder) -> list[str]:
    """The tensors whose entries move one hidden unit (tied weights move two)."""
    names = []
    for k in range(1, model.n_layers):
        names += [f"b{k}"] if model.bias else []
        names += [] if model.tied else [f"W{k}"]
    return names


@pytest.mark.parametrize("config", list(CONFIGS), ids=str)
def test_series_path_gives_the_direct_differences_within_their_rounding(config):
    model, params, x = make_case(CONFIGS[config], 4)
    series = LocalDifferences(model, params, x)
    direct = LocalDifferences(model, params, x, series=False)
    for k in range(1, model.n_layers):
        assert series._series_table(k) is not None
    assert hidden_tensors(model)
    for name in hidden_tensors(model):
        index = np.arange(params[name].size)
        for factor in (1.0, 2.0, 1000.0):
            steps = factor * entry_steps(series, name)
            a, b = series.differences(name, index, steps), direct.differences(name, index, steps)
            assert np.all(np.abs(a.central - b.central) <= b.rounding + 1e-300), (name, factor)
            assert np.all(a.rounding >= 0)


def test_series_units_equal_the_50_digit_change_closer_than_direct_evaluation():
    # One unit: hidden unit c of example b moves by t, output j by t W2[c, j]. The truth is
    # Σ_j ℓ(s_j + t W2[c, j]) - ℓ(s_j) in 50 digits, from the engine's base point.
    model, params, x = make_case(CONFIGS["seed"], 2, seed=7)
    engine = LocalDifferences(model, params, x)
    example, col = np.array([0, 0, 1, 1]), np.array([0, 3, 1, 4])
    t = np.array([[2e-6, -7e-7, 3e-6, 1e-5], [-2e-6, 6e-7, -3.1e-6, -9e-6]])  # (2, U)
    sides = np.empty_like(t)
    usable, estimate, _ = engine._series_table(1).evaluate(example, col, t, sides,
                                                           np.full(t.shape[1], np.inf))
    assert usable.all()
    direct = np.stack([engine._dense(1, int(b), np.array([c]), t[:, [u]], None)[0][:, 0]
                       for u, (b, c) in enumerate(zip(example, col))], axis=1)
    s, w2 = engine.pres[2], params["W2"]
    errors = {"series": [], "direct": []}
    for u, (b, c) in enumerate(zip(example, col)):
        central = 0.0
        for side in range(2):
            truth = float(sum(
                decimal_change("sigmoid", "squared", s[b, j], x[b, j],
                               Decimal(t[side, u]) * Decimal(w2[c, j]))
                for j in range(N)
            ))
            errors["series"].append(abs(sides[side, u] - truth) / abs(truth))
            errors["direct"].append(abs(direct[side, u] - truth) / abs(truth))
            central += (sides[side, u] - truth) * (1 if side == 0 else -1)
        # The unit's error estimate covers the error of its central difference, and is far
        # tighter than the bound the direct path needs.
        assert abs(central) <= estimate[u] < engine._layer_rounding[1][b] / 100
    assert max(errors["series"]) < 1e-13
    assert max(errors["series"]) < max(errors["direct"])


def test_units_beyond_the_series_reach_are_evaluated_directly():
    # Output weights of 1e6: a step moves the outputs by far more than the series' reach.
    model, params, x = make_case(CONFIGS["seed"], 3)
    params["W2"] = params["W2"] * 1e6
    series = LocalDifferences(model, params, x)
    direct = LocalDifferences(model, params, x, series=False)
    index = np.arange(params["W1"].size)
    steps = entry_steps(series, "W1")
    a, b = series.differences("W1", index, steps), direct.differences("W1", index, steps)
    np.testing.assert_array_equal(a.plus, b.plus)
    np.testing.assert_array_equal(a.minus, b.minus)


@pytest.mark.parametrize("config", ["deep", "deep_sigmoid"], ids=str)
def test_deep_series_differences_are_within_their_estimate_of_autograd(config):
    # The series followed through several layers: against the independent oracle, every
    # hidden entry's central difference is within its error estimate (rounding, the series'
    # tail, and Richardson's truncation estimate), as check_model's verdicts use it.
    model, params, x = make_case(CONFIGS[config], 3, seed=5)
    engine = LocalDifferences(model, params, x)
    truth = autograd_grad(lambda p: oracle_objective(model, p, x))(params)
    for name in hidden_tensors(model):
        h = entry_steps(engine, name)
        index = np.arange(h.size)
        first, second = engine.differences(name, index, h), engine.differences(name, index, 2 * h)
        numeric = first.central / (2 * h)
        estimate = first.rounding / (2 * h) + np.abs(numeric - second.central / (4 * h)) / 3
        error = np.abs(numeric - truth[name].ravel())
        assert np.all(error <= 10 * estimate + 1e-12 * np.abs(truth[name]).max()), name


def test_a_later_code_layer_or_relu_layer_keeps_the_direct_path():
    for config in (dict(layers=[N, 6, 3, 6, N], sparsity_weight=0.3),
                   dict(layers=[N, 6, 3, 6, N], activation="relu")):
        model, params, x = make_case(config, 2)
        engine = LocalDifferences(model, params, x)
        assert engine._series_table(1) is None
        assert engine._series_table(3) is not None


def test_check_model_verdicts_are_the_same_with_and_without_the_series():
    model, params, x = make_case(CONFIGS["seed"], 3)
    _, grads = model.loss_and_grad(params, x)
    wrong = dict(grads, W1=grads["W1"] * 1.5)
    for grad in (grads, wrong):
        with_series = check_model(model, params, x, grad=grad)
        without = check_model(model, params, x, grad=grad, series=False)
        assert [t.passed for t in with_series.tensors] == [t.passed for t in without.tensors]
        assert [f.kind for f in with_series.findings] == [f.kind for f in without.findings]
    assert not check_model(model, params, x, grad=wrong).passed


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_a_saturated_hidden_unit_passes_its_own_gradient(activation):
    # Unit 0's activation rounds to the same value at s ± d (Δt = 0) while its true change and
    # its analytic gradient are tiny but not zero: its error estimate must still cover that.
    model = Autoencoder(layers=[N, 5, N], activation=activation, output_activation="tanh")
    params = model.init_params(2)
    params["b1"][0] = 40.0
    x = np.random.default_rng(2).uniform(0, 1, (3, N))
    engine = LocalDifferences(model, params, x)
    index = np.arange(params["b1"].size)
    local = engine.differences("b1", index, entry_steps(engine, "b1"))
    assert local.central[0] == 0.0 and local.rounding[0] > 0
    report = check_model(model, params, x)
    assert report.passed, str(report)


def test_a_float64_backprop_through_saturated_outputs_is_not_called_wrong():
    # Outputs near 1: the backprop's 1 - z keeps few correct digits, so the model's own
    # hidden gradients are off by up to about 1e-6 relative; the exact differences see that,
    # and the verdict must still pass what is the best float64 backprop can do.
    model = Autoencoder(layers=[N, 5, N], activation="relu", reduction="mean")
    params = model.init_params(3)
    params["b2"][:] = 23.0  # z = 1 - 1e-10
    x = np.random.default_rng(3).uniform(0, 1, (6, N))
    _, grads = model.loss_and_grad(params, x)
    engine = LocalDifferences(model, params, x)
    h = entry_steps(engine, "W1")
    numeric = engine.differences("W1", np.arange(h.size), h).central / (2 * h)
    relative = np.abs(numeric - grads["W1"].ravel()) / np.abs(grads["W1"]).max()
    assert relative.max() > 1e-12  # the backprop's own rounding shows
    assert check_model(model, params, x).passed
