"""A network's passes reused: the gradient from a forward pass already made, the forward pass
of inputs already validated, and the identification's pass at the given point.

Spec: ``Network.loss_and_grad_from(params, cache, t)`` on ``evaluate``'s pass is
``loss_and_grad`` bit for bit (and so matches the autograd oracle), and only reads the pass;
``forward_validated`` is ``forward``'s pass; the identified network's kept pass at the given
point gives the gradient ``loss_and_grad`` gives there; ``match_gradient(copy=False)`` reads
the user's float64 gradient through views that cannot be written.
"""

from __future__ import annotations

import numpy as np
import pytest
from autograd import grad as autograd_grad
from hypothesis import example, given, settings
from hypothesis import strategies as st

import user_networks as users
from gradproof.identify import canonical_point, identify_problem, read_problem
from gradproof.nn import Network
from gradproof.params import parse_params
from oracle import random_params, rel_err
from test_network import (
    COURSE_CLASSIFIER,
    TIED_SPARSE_AUTOENCODER,
    networks,
    oracle_objective,
    oracle_targets,
    random_targets,
)


def copied(cache) -> list[np.ndarray]:
    return [a.copy() for a in (*cache.activations, *cache.pre_activations)]


def drawn(options: dict, batch: int, seed: int):
    """The network of ``options``, random parameters, a batch of inputs and its targets."""
    net = Network(**options)
    rng = np.random.default_rng(seed)
    params = random_params(net.param_shapes(), rng)
    x = rng.random((batch, net.layers[0]))
    return net, params, x, random_targets(net, batch, rng)


@settings(max_examples=80, deadline=None)
@given(options=networks(), batch=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
@example(options=COURSE_CLASSIFIER, batch=5, seed=0)
@example(options=TIED_SPARSE_AUTOENCODER, batch=4, seed=3)
def test_the_gradient_from_a_pass_already_made_is_loss_and_grads(options, batch, seed):
    net, params, x, y = drawn(options, batch, seed)
    J, cache, t = net.evaluate(params, x, y)
    before = copied(cache)

    J_from, grads = net.loss_and_grad_from(net.validate_params(params), cache, t)

    J_direct, direct = net.loss_and_grad(params, x, y)
    assert J_from == J == J_direct
    for name, g in grads.items():
        assert np.array_equal(g, direct[name]), name
    # only read: a caller may keep the pass
    for kept, now in zip(before, copied(cache)):
        assert np.array_equal(kept, now)
    # and so, like loss_and_grad, the oracle's gradient
    expected_t = oracle_targets(net, x, y)
    expected = autograd_grad(lambda p: oracle_objective(net, p, x, expected_t))(params)
    for name, g in grads.items():
        assert rel_err(g, expected[name]) <= 1e-10, name


@settings(max_examples=40, deadline=None)
@given(options=networks(), batch=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_the_forward_pass_of_validated_inputs_is_forwards(options, batch, seed):
    net, params, x, _ = drawn(options, batch, seed)

    cache = net.forward_validated(net.validate_params(params), net.validate_input(x))

    _, expected = net.forward(params, x)
    for got, want in zip(copied(cache), copied(expected)):
        assert np.array_equal(got, want)


IDENTIFIED = {
    "course classifier": users.course_classifier,
    "numpy softmax classifier": users.numpy_softmax_classifier,
    "tied sparse autoencoder": lambda: users.sparse_autoencoder(tied=True),
    "MATLAB autoencoder, examples as columns": users.matlab_autoencoder,
}


@pytest.mark.parametrize("make", IDENTIFIED.values(), ids=IDENTIFIED.keys())
def test_the_identifications_pass_at_the_given_point_gives_the_gradient_there(make):
    user = make()
    problem = read_problem(user.loss, user.params, user.x, user.y)
    identified = identify_problem(problem).model
    net, given = identified.network, identified.given

    J, grads = net.loss_and_grad_from(given.params, given.cache, given.t)

    params, x_rows, y = canonical_point(identified, problem, user.params)
    J_direct, direct = net.loss_and_grad(params, x_rows, y)
    assert J == J_direct
    for name, g in grads.items():
        assert np.array_equal(g, direct[name]), name


def test_a_gradient_read_without_a_copy_is_a_read_only_view_of_the_users_arrays():
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(4, 3)), "b1": rng.normal(size=3),
              "W2": rng.normal(size=(3, 2))}
    layout, _ = parse_params(params)
    grad = {"W1": rng.normal(size=(3, 4)),  # transposed: read back through the transpose
            "b1": rng.normal(size=3).astype(np.float32), "W2": rng.normal(size=(3, 2))}

    viewed, transposed, dtypes, _ = layout.match_gradient(grad, copy=False)

    copies = layout.match_gradient(grad)[0]
    assert transposed == ["W1"]
    assert dtypes["b1"] == np.float32
    for name, tensor in viewed.items():
        assert tensor.dtype == np.float64
        assert np.array_equal(tensor, copies[name])
        assert not tensor.flags.writeable
        with pytest.raises(ValueError):
            tensor[...] = 0.0
    assert np.shares_memory(viewed["W2"], grad["W2"])
    assert np.shares_memory(viewed["W1"], grad["W1"])
    assert grad["W2"].flags.writeable  # the user's own arrays stay as they were
