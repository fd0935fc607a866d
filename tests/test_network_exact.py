"""Spec for ``check_network``'s finite-difference evidence on autoencoders: the exact engine.

A member of the family that is an autoencoder in ``Autoencoder``'s form
(``Network.as_autoencoder``) is checked entry by entry by ``check_model``'s exact engine, in
the user's layout and names; other members keep the black-box evidence. The conversion must
keep the objective and its gradient: the Autoencoder's loss and backprop equal the Network's
on hypothesis-drawn configurations.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gradproof as gp
from gradproof.layouts import Layout, from_canonical, to_canonical
from gradproof.nn.network import Network
from user_networks import sparse_autoencoder


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@st.composite
def autoencoder_networks(draw):
    n = draw(st.integers(2, 6))
    hidden = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    if draw(st.booleans()):  # a symmetric stack may tie its weights
        hidden = hidden + hidden[-2::-1]
        tied = draw(st.booleans())
    else:
        tied = False
    activation = draw(st.sampled_from(["sigmoid", "tanh", "relu", "identity"]))
    loss_name = draw(st.sampled_from(["squared", "cross_entropy"]))
    output = "sigmoid" if loss_name == "cross_entropy" else draw(
        st.sampled_from(["sigmoid", "tanh", "identity"]))
    sparse = activation == "sigmoid" and draw(st.booleans())
    return Network(
        [n, *hidden, n], activation=activation, output=output, loss_name=loss_name,
        reduction=draw(st.sampled_from(["sum", "mean"])), bias=draw(st.booleans()), tied=tied,
        weight_decay=draw(st.sampled_from([0.0, 0.3])), decay_half=draw(st.booleans()),
        decay_mean=draw(st.booleans()),
        sparsity_weight=0.5 if sparse else 0.0, sparsity_target=0.2,
    )


@given(autoencoder_networks(), st.integers(0, 2**16))
@example(Network([4, 3, 4]), 0)
@settings(max_examples=40, deadline=None)
def test_as_autoencoder_keeps_the_objective_and_its_gradient(net, seed):
    rng = np.random.default_rng(seed)
    params = net.init_params(rng)
    x = rng.random((3, net.layers[0])) * 0.9 + 0.05  # inside (0, 1) for the cross-entropy
    model = net.as_autoencoder(batch=3)
    assert model is not None
    j_net, g_net = net.loss_and_grad(params, x)
    j_ae, g_ae = model.loss_and_grad(params, x)
    assert j_ae == pytest.approx(j_net, rel=1e-12, abs=1e-14)
    assert list(g_ae) == list(g_net)
    for name in g_net:
        assert rel_err(g_ae[name], g_net[name]) < 1e-12, name


NOT_AUTOENCODERS = {
    "classifier": dict(layers=[5, 3, 2], output="softmax", loss_name="softmax_cross_entropy",
                       target="labels"),
    "squared error without 1/2": dict(layers=[4, 2, 4], squared_half=False),
    "decay on biases": dict(layers=[4, 2, 4], weight_decay=0.1, decay_biases=True),
}


@pytest.mark.parametrize("options", NOT_AUTOENCODERS.values(), ids=NOT_AUTOENCODERS.keys())
def test_members_outside_the_autoencoder_form_have_none(options):
    assert Network(**options).as_autoencoder(batch=10) is None


def matlab_autoencoder():
    """An autoencoder stored as a MATLAB course stores it: examples as columns, weights
    (n_out, n_in) with the bias as column 1, ``J = 1/2 sum (z - x)^2 / m``."""
    net = Network([6, 3, 6], reduction="mean")
    layout = Layout(examples="columns", weights="out_in", biases="augmented")
    rng = np.random.default_rng(4)
    x = rng.random((20, 6))  # (m, n): the network's rows; the user holds x.T
    params = net.init_params(rng)
    params["b1"], params["b2"] = rng.normal(size=3) * 0.1, rng.normal(size=6) * 0.1
    user = from_canonical(layout, net, params)

    def loss(p):
        return net.loss(to_canonical(layout, net, p), x)

    def grad(p):
        return from_canonical(layout, net, net.loss_and_grad(to_canonical(layout, net, p), x)[1])

    return user, x.T, loss, grad


def test_an_autoencoder_in_matlab_layout_is_checked_exactly_in_the_users_names():
    user, x_user, loss, grad = matlab_autoencoder()
    report = gp.check_network(loss, grad, user, x_user)
    assert report.passed, str(report)
    assert "finite differences (exact)" in report.rule
    assert [(t.name, t.checked) for t in report.tensors] == [
        (name, value.size) for name, value in user.items()
    ]


def test_one_wrong_entry_of_an_augmented_weight_fails_its_tensor_only():
    user, x_user, loss, grad = matlab_autoencoder()

    def one_wrong(p):
        g = grad(p)
        g["W2"] = g["W2"].copy()
        g["W2"][2, 0] += 1e-4  # the bias column of the decoder
        return g

    report = gp.check_network(loss, one_wrong, user, x_user)
    assert not report.passed
    assert [t.name for t in report.tensors if not t.passed] == ["W2"]
    assert report.tensor("W2").worst_index == (2, 0)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_a_sparse_autoencoder_is_checked_by_the_exact_engine(tied):
    user = sparse_autoencoder(tied=tied)
    report = gp.check_network(user.loss, user.grad, user.params, user.x)
    assert report.passed, str(report)
    assert "finite differences (exact)" in report.rule
    assert all(t.checked == user.params[t.name].size for t in report.tensors)
    missing = gp.check_network(user.loss, lambda p: user.grad(p, "sparsity_missing"),
                               user.params, user.x)
    assert not missing.passed
    assert "mismatch" not in {f.kind for f in missing.findings}


def test_a_classifier_keeps_the_black_box_evidence():
    net = Network([5, 3, 2], output="softmax", loss_name="softmax_cross_entropy",
                  target="labels")
    rng = np.random.default_rng(1)
    x, y = rng.random((8, 5)), rng.integers(0, 2, 8)
    params = net.init_params(rng)
    report = gp.check_network(lambda p: net.loss(p, x, y),
                              lambda p: net.loss_and_grad(p, x, y)[1], params, x, y)
    assert report.passed, str(report)
    assert "finite differences (exact)" not in report.rule


# ----- check_model on a Network ------------------------------------------------------------


NETWORKS = {
    "seed form": dict(layers=[7, 3, 7]),
    "tanh, mean, decay over m": dict(layers=[6, 4, 6], activation="tanh", output="identity",
                                     reduction="mean", weight_decay=0.2, decay_mean=True),
    "cross-entropy, tied, sparse": dict(layers=[8, 3, 8], loss_name="cross_entropy", tied=True,
                                        bias=False, sparsity_weight=0.4, sparsity_target=0.1),
    "deep relu, decay without 1/2": dict(layers=[6, 5, 3, 5, 6], activation="relu",
                                         weight_decay=0.05, decay_half=False),
}


@pytest.mark.parametrize("options", NETWORKS.values(), ids=NETWORKS.keys())
def test_check_model_takes_a_network_in_autoencoder_form(options):
    net = Network(**options)
    rng = np.random.default_rng(3)
    params, x = net.init_params(rng), rng.random((5, net.layers[0])) * 0.9 + 0.05
    grads = net.loss_and_grad(params, x)[1]
    report = gp.check_model(net, params, x, grad=grads)
    assert report.passed, str(report)
    assert all(t.checked == params[t.name].size for t in report.tensors)
    planted = dict(grads, W1=grads["W1"] * 1.01)  # a factor that a rounding cannot explain
    wrong = gp.check_model(net, params, x, grad=planted)
    assert [t.name for t in wrong.tensors if not t.passed] == ["W1"]


def test_check_model_refuses_a_classifier_and_names_check_network():
    net = Network([5, 3, 2], output="softmax", loss_name="softmax_cross_entropy",
                  target="labels")
    with pytest.raises(gp.InputError, match="check_network"):
        gp.check_model(net, net.init_params(0), np.ones((4, 5)), np.array([0, 1, 1, 0]))


def test_check_model_refuses_targets_for_an_autoencoder():
    model = gp.Autoencoder(6, 3)
    with pytest.raises(gp.InputError, match="y=None"):
        gp.check_model(model, model.init_params(0), np.ones((2, 6)), np.ones((2, 6)))


def test_a_float32_gradient_gets_its_precision_allowance():
    user = sparse_autoencoder()

    def grad32(p):
        return {name: g.astype(np.float32) for name, g in user.grad(p).items()}

    report = gp.check_network(user.loss, grad32, user.params, user.x)
    assert report.passed, str(report)
    assert "finite differences (exact)" in report.rule
    # the float32 allowance is stated; the decay's form may add a convention note, no bug
    assert "precision" in {f.kind for f in report.findings}
    assert not [f for f in report.findings if f.is_bug], str(report)


def test_a_loss_rounded_in_float32_keeps_the_black_box_evidence():
    # float32 parameters: the user's decay term is summed in float32, so the loss agrees with
    # the identified network to about 1e-10 only, and lambda is known no better than that.
    user = sparse_autoencoder()
    params = {name: p.astype(np.float32) for name, p in user.params.items()}
    report = gp.check_network(user.loss, user.grad, params, user.x)
    assert report.model["residual"] > 1e-13
    assert "finite differences (exact)" not in report.rule
    assert report.passed, str(report)


@pytest.mark.parametrize(("option", "value"), [("subscripts", "fortran"), ("flat_name", "1x")])
def test_naming_options_are_refused_before_the_exact_path_uses_them(option, value):
    user = sparse_autoencoder()
    with pytest.raises(gp.InputError, match=f"{option} must be"):
        gp.check_network(user.loss, user.grad, user.params, user.x, **{option: value})
