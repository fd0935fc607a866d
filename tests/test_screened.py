"""Spec for the screened forward pass behind ``Autoencoder.loss`` (``gradproof.nn.screened``).

``loss`` no longer scans every parameter for NaN and Inf before its forward pass; the pass
screens them itself, from its own products and a product of the weight rows whose inputs are
all zero. These tests hold it to
what the scan promised: a NaN or an infinity in any entry of any parameter, whatever the
inputs (all-zero ones included, where a product need not multiply a weight at all), is
refused with an InputError naming the parameter; finite parameters whose sums overflow are
not refused; and the values are the plain forward pass's, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradproof.errors import InputError
from gradproof.nn import Autoencoder
from gradproof.nn import screened
from gradproof.nn.layers import DenseCache
from gradproof.nn.screened import _kind, screened_forward, zeros_keep_nan

MODELS = {
    "seed": dict(layers=[7, 4, 7]),
    "no-bias": dict(layers=[7, 4, 7], bias=False),
    "tied-deep": dict(layers=[6, 5, 3, 5, 6], tied=True, activation=["tanh", "sigmoid", "tanh"]),
    "relu-identity": dict(layers=[5, 6, 3, 5], activation="relu", output_activation="identity"),
    "sparse-mean": dict(layers=[6, 3, 6], sparsity_weight=0.5, reduction="mean",
                        weight_decay=0.1),
}

INPUTS = {
    "zeros": lambda rng, shape: np.zeros(shape),
    "sparse": lambda rng, shape: rng.uniform(0, 1, shape) * (rng.uniform(0, 1, shape) < 0.2),
    "dense": lambda rng, shape: rng.normal(size=shape),
}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("options", list(MODELS))
def test_a_non_finite_entry_anywhere_is_refused_by_name(options, inputs, bad):
    model = Autoencoder(**MODELS[options])
    rng = np.random.default_rng(len(options) * 7 + len(inputs))
    for batch in (1, 3):
        x = INPUTS[inputs](rng, (batch, model.n_visible))
        for name, shape in model.param_shapes().items():
            params = model.init_params(seed=batch)
            params[name][np.unravel_index(rng.integers(np.prod(shape)), shape)] = bad
            with pytest.raises(InputError, match=f"parameter {name} has non-finite values"):
                model.loss(params, x)



def objective(model, params, cache, x):
    """The objective from an unscreened forward pass, as the network computes it."""
    net = model.network
    return net._total(params, cache, net._data_value(cache, x))

def test_the_first_non_finite_parameter_is_named_and_then_x():
    model = Autoencoder(layers=[4, 3, 4])
    params = model.init_params(seed=0)
    params["b2"][1] = np.nan
    params["W1"][3, 0] = np.inf
    x = np.full((2, 4), np.nan)
    with pytest.raises(InputError, match="parameter W1"):  # W1 comes before b2, x after both
        model.loss(params, x)
    with pytest.raises(InputError, match="x has non-finite values"):
        model.loss(model.init_params(seed=0), x)


def test_finite_parameters_whose_sums_overflow_are_not_refused():
    model = Autoencoder(layers=[4, 3, 4], output_activation="identity")
    params = model.init_params(seed=0)
    params["b2"] = np.full(4, 1e308)
    params["W2"][:, 2] = 1e308  # the column sum overflows; every entry is finite
    x = np.zeros((1, 4))
    with np.errstate(over="ignore"):  # the overflow is the point here
        _, cache = model.forward(params, x)  # the unscreened pass, which scans first
        assert model.loss(params, x) == objective(model, params, cache, x) == np.inf


@pytest.mark.parametrize("options", list(MODELS))
def test_the_screened_pass_computes_the_plain_forward_pass(options):
    model = Autoencoder(**MODELS[options])
    rng = np.random.default_rng(3)
    params = model.init_params(seed=rng)
    x = rng.uniform(0, 1, (3, model.n_visible))
    z, cache = model.forward(params, x)
    layer_params = [model.network._layer_params(params, k) for k in range(1, model.n_layers + 1)]
    activations, pre_activations, finite = screened_forward(model.network._dense, layer_params, x)
    assert finite
    assert activations[0] is x
    for mine, plain in zip(activations + pre_activations,
                           cache.activations + cache.pre_activations):
        np.testing.assert_array_equal(mine, plain)
    assert model.loss(params, x) == objective(model, params, cache, x)


def test_the_screen_sees_a_weight_that_zero_inputs_never_multiply():
    model = Autoencoder(layers=[5, 2, 5], bias=False)
    params = model.init_params(seed=0)
    params["W1"][4, 1] = np.inf  # pixel 4 is 0 in every example: x @ W1 need not touch it
    x = np.zeros((2, 5))
    x[:, :4] = 1.0
    layer_params = [model.network._layer_params(params, k) for k in (1, 2)]
    with np.errstate(invalid="ignore"):
        *_, finite = screened_forward(model.network._dense, layer_params, x)
    assert not finite


def skipping_product(a, w):
    """A product that leaves out every zero multiplier, as the reference BLAS once did:
    correct for finite weights, blind to a NaN that only zero inputs multiply."""
    out = np.zeros((a.shape[0], w.shape[1]), dtype=np.result_type(a, w))
    for row, inputs in enumerate(a):
        used = np.flatnonzero(inputs)
        out[row] = inputs[used] @ w[used]
    return out


def skipping_all_zero_product(a, w):
    """A product that returns zeros at once for an all-zero input, and multiplies otherwise."""
    return np.zeros((a.shape[0], w.shape[1])) if not a.any() else a @ w


@pytest.mark.parametrize("product", [skipping_product, skipping_all_zero_product],
                         ids=["one-by-one", "all-zero"])
def test_the_probe_finds_a_product_that_skips_zero_multipliers(product):
    kinds = (((3, 8), np.dtype(np.float64), "C"), ((8, 5), np.dtype(np.float64), "F"))
    assert not zeros_keep_nan(*kinds, product)
    assert zeros_keep_nan(*kinds, lambda a, w: np.einsum("ij,jk->ik", a, w))  # every term summed


def test_an_operand_of_no_measured_kind_is_always_screened():
    strided = np.zeros((4, 10))[:, ::2]  # neither C- nor Fortran-contiguous
    assert _kind(strided) is None
    assert not zeros_keep_nan(None, _kind(np.zeros((5, 3))))


@pytest.mark.parametrize("measured", [False, True], ids=["skips-measured", "skips-unmeasured"])
def test_where_the_product_skips_zeros_the_idle_rows_get_their_own_screen(monkeypatch, measured):
    # What the probe says decides whether the idle rows are screened: with a skipping product
    # measured as such the NaN is found; told (wrongly) that the product keeps it, it is not.
    model = Autoencoder(layers=[5, 2, 5], bias=False)
    params = model.init_params(seed=0)
    params["W1"][4, 1] = np.nan  # pixel 4 is 0 in every example
    x = np.zeros((2, 5))
    x[:, :4] = 1.0
    monkeypatch.setattr(screened, "zeros_keep_nan", lambda *kinds: measured)
    layer_params = [model.network._layer_params(params, k) for k in (1, 2)]
    *_, finite = screened_forward(model.network._dense, layer_params, x, skipping_product)
    assert finite is measured
