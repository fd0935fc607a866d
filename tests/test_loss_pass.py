"""Spec for ``Autoencoder.loss``'s own forward pass (``nn.screened.ScreenedPass``): the same
values, errors and warnings as the plain layer walk, over the whole family.

``loss`` runs a pass made once for the parameter arrays it is given, with one floating-point
error state and one finiteness test for all its layers; ``loss_and_grad`` runs the plain layer
walk (``Dense.forward``, each activation with its own error state). The two must agree bit for
bit on every option, in float64 and float32, with saturated units and with parameters changed
in place between calls, and ``loss`` must refuse the same non-finite values by the same names
and warn of the same overflows. (The gradients themselves are held to the autograd oracle in
test_autoencoder.py; ``loss`` computes none.)
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gradproof.errors import InputError
from gradproof.nn import Autoencoder
from gradproof.nn.screened import screened_forward
from test_autoencoder import cases

DTYPES = ("float64", "float32")

# Weight scales: the variance-preserving init's, and ones that saturate most units (in float32
# from |s| of about 17 on, where the sigmoid's exp overflows).
SCALES = (1.0, 40.0, 1e3)


def model_params_x(case, dtype: str, scale: float):
    kwargs, batch, seed = case
    model = Autoencoder(**kwargs, dtype=dtype)
    rng = np.random.default_rng(seed)
    params = {name: (value * scale).astype(dtype)
              for name, value in model.init_params(rng).items()}
    pixels = rng.uniform(0, 1, (batch, model.n_visible))
    x = (pixels * (rng.uniform(0, 1, pixels.shape) < 0.3)).astype(dtype)  # mostly zeros
    return model, params, x


def outcome(call) -> tuple[object, list[str]]:
    """What ``call`` gives: its value, or its InputError's message; and its warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: object = call()
        except InputError as err:
            result = str(err)
    return result, [str(w.message) for w in caught]


@settings(max_examples=60, deadline=None)
@given(case=cases(), dtype=st.sampled_from(DTYPES), scale=st.sampled_from(SCALES))
@example(case=(dict(layers=[784, 200, 784], bias=False), 1, 0), dtype="float64", scale=1.0)
@example(case=(dict(layers=[6, 3, 6], sparsity_weight=0.4), 3, 1), dtype="float32", scale=40.0)
def test_the_loss_is_the_plain_layer_walks_bit_for_bit(case, dtype, scale):
    model, params, x = model_params_x(case, dtype, scale)

    def plain():
        return model.loss_and_grad(params, x)[0]

    # A value (or, where every example saturates a code unit of a sparse model, the refusal
    # of an infinite penalty), with the same warnings: none, saturation included.
    assert outcome(lambda: model.loss(params, x)) == outcome(plain)
    # The same dict of the same arrays with new values written into them: the kept pass
    # reads them afresh.
    rng = np.random.default_rng(case[2])
    for value in params.values():
        value *= rng.uniform(0.5, 1.5, value.shape).astype(dtype)
    assert outcome(lambda: model.loss(params, x)) == outcome(plain)


@settings(max_examples=40, deadline=None)
@given(case=cases(), dtype=st.sampled_from(DTYPES), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       where=st.integers(0, 2**32 - 1))
def test_a_non_finite_value_is_refused_by_name_in_either_dtype(case, dtype, bad, where):
    model, params, x = model_params_x(case, dtype, 1.0)
    rng = np.random.default_rng(where)
    model.loss(params, x)  # the pass is kept for these arrays: the bad value comes in place
    name = str(rng.choice(list(params)))
    entry = tuple(int(rng.integers(n)) for n in params[name].shape)
    params[name][entry] = bad
    with pytest.raises(InputError, match=f"parameter {name} has non-finite values"):
        model.loss(params, x)
    params[name][entry] = 0.0
    x[tuple(int(rng.integers(n)) for n in x.shape)] = bad
    with pytest.raises(InputError, match="x has non-finite values"):
        model.loss(params, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_product_that_overflows_is_warned_of_as_by_the_plain_walk(dtype):
    # Finite parameters whose products overflow: not refused, and numpy's warning comes
    # through as it does from loss_and_grad's layer walk.
    model = Autoencoder(layers=[4, 3, 4], activation="identity", output_activation="identity",
                        bias=False, dtype=dtype)
    params = model.init_params(seed=0)
    params["W1"][:] = np.finfo(dtype).max / 4
    x = np.ones((1, 4), dtype)
    value, caught = outcome(lambda: model.loss(params, x))
    plain, plain_caught = outcome(lambda: model.loss_and_grad(params, x)[0])
    assert "overflow encountered in matmul" in caught
    assert "overflow encountered in matmul" in plain_caught
    np.testing.assert_equal(value, plain)


@pytest.mark.parametrize("seed", range(4))
def test_finite_pre_activations_whose_squares_overflow_the_screen_change_nothing(seed):
    # In float32 the screen's sums of squares overflow past |s| of about 1e19: it reports
    # "not finite" for finite parameters, and loss must then scan, find them finite and give
    # the plain walk's value, warning of nothing.
    model = Autoencoder(layers=[12, 5, 12], dtype="float32")
    rng = np.random.default_rng(seed)
    params = {name: value.astype("float32") for name, value in model.init_params(rng).items()}
    params["W1"] = (params["W1"] * 1e21).astype("float32")  # hidden units saturate, finite
    x = rng.uniform(0, 1, (3, 12)).astype("float32")
    layers = [model.network._layer_params(params, k) for k in (1, 2)]
    assert not screened_forward(model.network._dense, layers, x)[2]  # the screen trips
    value, caught = outcome(lambda: model.loss(params, x))
    assert not caught
    assert np.isfinite(value) and value == model.loss_and_grad(params, x)[0]
