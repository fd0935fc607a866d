"""Spec for ``gradproof.identify`` and ``gp.check_network``: the model found from the user's
own loss, the user's gradient checked against it, and the mistake named in the user's names.

The user networks (``user_networks``) are written from the math of the course and textbook
formulations, not with gradproof. Hypothesis draws members of the family in random layouts;
the identified network's gradient, mapped back to the user's layout, must equal autograd's
gradient of the user's loss (the oracle) to 1e-8.
"""

from __future__ import annotations

import numpy as np
import pytest
from autograd import grad as autograd_grad
from hypothesis import given, settings
from hypothesis import strategies as st

import gradproof as gp
from gradproof.errors import InputError
from gradproof.identify import UserPoint, given_model, identify, read_problem
from gradproof.layouts import Layout, from_canonical, to_canonical
from gradproof.network_mistakes import Deviation, NETWORK_MISTAKES, variant_backprop
from gradproof.nn import Network
from gradproof.report import FINDING_KINDS, Finding
from oracle import random_params, rel_err
from test_network import networks, oracle_objective, oracle_targets, random_targets
from user_networks import (
    course_classifier,
    deep_classifier,
    matlab_autoencoder,
    numpy_softmax_classifier,
    sparse_autoencoder,
)

# ----- identification of the users' networks -------------------------------------------------


def test_course_classifier_is_identified_in_matlab_terms():
    user = course_classifier(lam=3.0)
    found = identify(user.loss, user.params, user.x, user.y).model
    net = found.network
    assert (list(net.layers), net.activation, net.output, net.loss_name) == (
        [20, 8, 4], ("sigmoid",), "sigmoid", "cross_entropy")
    assert (net.reduction, net.target, net.label_base, net.decay_biases) == (
        "mean", "labels", 1, False)
    assert net.weight_decay == pytest.approx(3.0, rel=1e-9)
    assert (found.layout.weights, found.layout.biases) == ("out_in", "augmented")
    assert "Theta1[:, 1:]" in found.description and "lambda = 3" in found.description


def test_numpy_classifier_is_identified():
    user = numpy_softmax_classifier(lam=0.3)
    net = identify(user.loss, user.params, user.x, user.y).model.network
    assert (net.activation, net.output, net.target, net.label_base) == (
        ("tanh",), "softmax", "labels", 0)
    # lam/2 * sum W**2 on a mean loss: lambda/(2m) with lambda = 0.3 * m
    assert net.weight_decay / user.x.shape[0] == pytest.approx(0.3, rel=1e-9)


def test_sparse_autoencoder_constants_are_recovered():
    user = sparse_autoencoder(lam=1e-3, beta=3.0, rho=0.1)
    net = identify(user.loss, user.params, user.x).model.network
    assert net.target == "input" and net.squared_half and net.reduction == "mean"
    assert net.sparsity_weight == pytest.approx(3.0, rel=1e-6)
    assert net.sparsity_target == pytest.approx(0.1, rel=1e-6)
    assert net.weight_decay / user.x.shape[0] == pytest.approx(1e-3, rel=1e-6)


def test_hidden_layers_with_different_activations_are_identified():
    user = deep_classifier()
    net = identify(user.loss, user.params, user.x, user.y).model.network
    assert (list(net.layers), net.activation, net.output) == (
        [6, 5, 5, 3], ("relu", "tanh"), "softmax")


def test_matlab_autoencoder_with_examples_as_columns_is_identified():
    user = matlab_autoencoder()
    found = identify(user.loss, user.params, user.x).model
    assert found.network.target == "input" and found.network.reduction == "mean"
    assert (found.layout.examples, found.layout.weights, found.layout.biases) == (
        "columns", "out_in", "augmented")


def test_tied_autoencoder_is_identified_from_one_weight():
    user = sparse_autoencoder(tied=True)
    net = identify(user.loss, user.params, user.x).model.network
    assert net.tied and list(net.layers) == [10, 4, 10] and not net.bias


def test_flat_theta_unrolled_like_matlab_is_identified():
    user = course_classifier()
    shapes = {"Theta1": user.params["Theta1"].shape, "Theta2": user.params["Theta2"].shape}
    theta = np.concatenate([user.params["Theta1"].ravel(order="F"),
                            user.params["Theta2"].ravel(order="F")])

    def unrolled(t):
        t1 = t[: 8 * 21].reshape(shapes["Theta1"], order="F")
        return {"Theta1": t1, "Theta2": t[8 * 21:].reshape(shapes["Theta2"], order="F")}

    found = identify(lambda t: user.loss(unrolled(t)), theta, user.x, user.y,
                     shapes=shapes, order="F").model
    assert found.layout.container == "flat" and found.layout.order == "F"


def test_a_loss_outside_the_family_names_the_closest_and_why():
    user = numpy_softmax_classifier()

    def l1_decay(p):  # an L1 penalty is not in the family
        return user.loss(p) + 0.1 * sum(np.abs(p[k]).sum() for k in ("W1", "W2"))

    outcome = identify(l1_decay, user.params, user.x, user.y)
    assert outcome.model is None and outcome.tried > 0
    assert "closest" in outcome.closest and "rejected" in outcome.closest


def test_the_closest_to_a_leaky_relu_classifier_is_a_softmax_classifier_without_fitted_terms():
    """A leaky ReLU (outside the family) makes the loss a little larger than any ReLU or
    sigmoid member's data term, which no penalty can take back down: such members are still
    contenders for the closest, and fitted constants must earn their place, so that the
    closest is not a squared error bent towards the values by a fitted sparsity term."""
    rng = np.random.default_rng(7)
    m = 30
    x, y = rng.normal(size=(m, 5)), rng.integers(0, 3, m)
    params = {"W1": 0.5 * rng.normal(size=(5, 7)), "b1": np.zeros(7),
              "W2": 0.5 * rng.normal(size=(7, 3)), "b2": np.zeros(3)}

    def leaky_relu_classifier(p):
        s1 = x @ p["W1"] + p["b1"]
        s2 = np.where(s1 > 0, s1, 0.1 * s1) @ p["W2"] + p["b2"]
        log_probs = s2 - s2.max(axis=1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
        return -log_probs[np.arange(m), y].mean()

    outcome = identify(leaky_relu_classifier, params, x, y)
    assert outcome.model is None
    assert "softmax cross-entropy over 3 classes" in outcome.closest, outcome.closest
    assert "sparsity" not in outcome.closest and "no weight decay" in outcome.closest


# ----- the oracle: identified members of the family, any layout --------------------------------

LAYOUTS = [
    Layout(),
    Layout(weights="out_in", biases="augmented"),
    Layout(examples="columns", weights="out_in", biases="column"),
    Layout(container="list"),
]


# Derandomized: the fixed draws keep the run repeatable; a case found by free exploration that
# fails is pinned below as a known limit.
@settings(max_examples=25, deadline=None, derandomize=True)
@given(options=networks(), layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**32 - 1))
def test_identified_gradient_equals_autograd_of_the_users_loss(options, layout, seed):
    # Sparsity as drawn (rho is polished to rounding); one activation for every hidden layer,
    # the code layer's (sparsity needs it): the mixes, searched only where no uniform member
    # fits, are the deep classifier's test.
    hidden = options["activation"]
    if hidden:
        code = int(np.argmin(options["layers"][1:-1]))
        options["activation"] = [hidden[code]] * len(hidden)
    net = Network(**options)
    if layout.biases == "augmented" and (net.tied or not net.bias):
        layout = Layout()
    if not net.bias:
        layout = Layout(biases="absent", container=layout.container)
    rng = np.random.default_rng(seed)
    batch = 7  # wider than any drawn layer: examples as rows and as columns never coincide
    x = rng.normal(size=(batch, net.layers[0]))
    if net.loss_name == "cross_entropy" and net.target == "input":
        x = rng.random((batch, net.layers[0]))
    y = random_targets(net, batch, rng)
    params = random_params(net.param_shapes(), rng)
    t = oracle_targets(net, x, y)
    user_x = x if layout.examples == "rows" else x.T

    def user_loss(p):
        return oracle_objective(net, to_canonical(layout, net, p), x, t)

    user_params = from_canonical(layout, net, params)
    found = identify(user_loss, user_params, user_x, y).model
    assert found is not None
    canonical = to_canonical(found.layout, found.network, user_params)
    x_rows = user_x if found.layout.examples == "rows" else user_x.T
    grads = found.network.loss_and_grad(canonical, x_rows, y)[1]
    ours = gp.params.parse_params(from_canonical(found.layout, found.network, grads))[1]
    flat_oracle = autograd_grad(lambda q: oracle_objective(net, q, x, t))(params)
    theirs = gp.params.parse_params(from_canonical(layout, net, flat_oracle))[1]
    assert rel_err(ours, theirs) < 1e-8


@pytest.mark.parametrize("options", [
    dict(layers=[5, 4, 3], output="softmax", loss_name="softmax_cross_entropy",
         target="labels", reduction="mean", weight_decay=0.2),
    dict(layers=[6, 3, 6], tied=True, sparsity_weight=1.0, sparsity_target=0.2,
         weight_decay=0.1),
    dict(layers=[4, 3, 2], activation="tanh", output="sigmoid", loss_name="cross_entropy",
         target="labels", label_base=1, reduction="mean"),
], ids=["softmax", "tied-sparse", "tanh-ce"])
def test_variant_backprop_without_deviation_is_the_networks_gradient(options):
    net = Network(**options)
    rng = np.random.default_rng(3)
    x = rng.random((6, net.layers[0]))
    y = random_targets(net, 6, rng)
    params = random_params(net.param_shapes(), rng)
    expected = autograd_grad(lambda q: oracle_objective(net, q, x, oracle_targets(net, x, y)))(
        params)
    got = variant_backprop(net, params, x, y, Deviation())
    for name in params:
        assert rel_err(got[name], expected[name]) < 1e-10, name


# ----- check_network: the verdict and the mistake named -----------------------------------


USERS = {"course": course_classifier, "numpy": numpy_softmax_classifier,
         "sparse-ae": sparse_autoencoder, "tied-ae": lambda: sparse_autoencoder(tied=True),
         "matlab-ae": matlab_autoencoder, "deep": deep_classifier}


@pytest.mark.parametrize("make", USERS.values(), ids=USERS.keys())
def test_a_right_gradient_passes_with_the_model_in_the_report(make):
    user = make()
    report = gp.check_network(user.loss, user.grad, user.params, user.x, user.y)
    assert report.passed, str(report)
    assert report.mode == "network"
    assert report.to_dict()["model"]["identified"] is True
    assert [t.name for t in report.tensors] == list(user.params)


PLANTED = [(name, bug) for name, make in USERS.items() for bug in make().bugs]


@pytest.mark.parametrize("name, bug", PLANTED, ids=[f"{n}-{b}" for n, b in PLANTED])
def test_each_planted_mistake_is_named(name, bug):
    user = USERS[name]()
    report = gp.check_network(user.loss, lambda p: user.grad(p, bug), user.params, user.x,
                              user.y)
    assert not report.passed
    named = {f.details.get("mistake") for f in report.findings}
    assert bug in named, str(report)
    finding = next(f for f in report.findings if f.details.get("mistake") == bug)
    assert finding.kind == NETWORK_MISTAKES[bug].kind
    assert finding.tensor in user.params  # the user's own name
    assert finding.details["numpy"] and finding.details["matlab"]


def test_matlab_fix_line_speaks_of_theta_and_skips_the_bias_column():
    user = course_classifier()
    report = gp.check_network(user.loss, lambda p: user.grad(p, "decay_on_biases"),
                              user.params, user.x, user.y)
    finding = report.findings_of("missing_l2")[0]
    assert "Theta1(:, 2:end)" in finding.details["matlab"]


def test_transposed_gradient_is_found_structurally():
    user = numpy_softmax_classifier()
    report = gp.check_network(user.loss, lambda p: user.grad(p, "transposed"), user.params,
                              user.x, user.y)
    assert [f.kind for f in report.findings if f.is_bug] == ["transposed"]


def test_an_unidentified_loss_falls_back_to_check_gradient():
    user = numpy_softmax_classifier()

    def l1_decay(p):
        return user.loss(p) + 0.1 * sum(np.abs(p[k]).sum() for k in ("W1", "W2"))

    def l1_grad(p):
        g = user.grad(p)
        return {k: g[k] + (0.1 * np.sign(p[k]) if k.startswith("W") else 0) for k in g}

    report = gp.check_network(l1_decay, l1_grad, user.params, user.x, user.y)
    black_box = gp.check_gradient(l1_decay, l1_grad, user.params)
    assert report.passed == black_box.passed is True
    assert report.model["identified"] is False and "closest" in report.model["closest"]
    wrong = gp.check_network(l1_decay, user.grad, user.params, user.x, user.y)
    assert not wrong.passed


def _softmax_classifier_and_model():
    """The numpy softmax classifier (lambda 0.3) and the network its loss computes."""
    user = numpy_softmax_classifier(lam=0.3)
    net = Network([12, 7, 5], activation="tanh", output="softmax",
                  loss_name="softmax_cross_entropy", target="labels", reduction="mean",
                  weight_decay=0.3 * user.x.shape[0], decay_mean=True)
    return user, net


def test_model_given_skips_identification_and_must_compute_the_loss():
    user, net = _softmax_classifier_and_model()
    report = gp.check_network(user.loss, user.grad, user.params, user.x, user.y, model=net)
    assert report.passed
    with pytest.raises(InputError, match="does not compute your loss"):
        gp.check_network(user.loss, user.grad, user.params, user.x, user.y,
                         model=Network([12, 7, 5], activation="tanh", output="softmax",
                                       loss_name="softmax_cross_entropy", target="labels"))


def test_a_loss_with_many_is_asked_for_all_points_at_once():
    user = course_classifier()
    calls = []

    class Batched:
        """A loss evaluated elsewhere (Octave): each call of ``many`` is one exchange."""

        def __call__(self, params):
            raise AssertionError("identification asks many() when the loss has it")

        def many(self, points):
            calls.append(len(points))
            return [user.loss(p) for p in points]

    found = identify(Batched(), user.params, user.x, user.y).model
    assert found is not None and found.network.label_base == 1
    assert calls == [5 + 1]  # the given point twice and 4 points near it, in one call


def test_points_where_the_loss_is_not_finite_are_asked_again_nearer():
    user = course_classifier()
    start = np.concatenate([v.ravel() for v in user.params.values()])
    calls = []

    class FarIsInfinite:
        def __call__(self, params):
            raise AssertionError("identification asks many() when the loss has it")

        def many(self, points):
            distance = [np.linalg.norm(np.concatenate([v.ravel() for v in p.values()]) - start)
                        for p in points]
            # the first time, the two points farthest out are beyond where the loss is finite
            far = set(np.argsort(distance)[-2:]) if not calls else set()
            calls.append(len(points))
            return [np.inf if i in far else user.loss(p) for i, p in enumerate(points)]

    found = identify(FarIsInfinite(), user.params, user.x, user.y).model
    assert found is not None
    assert calls == [6, 2]  # the two asked again at half the distance, together


def test_a_point_where_the_network_loss_is_not_finite_never_matches():
    # The identification's points are not scanned for NaN and Inf: a point where the network's
    # loss is NaN must count as a mismatch, not vanish in max(worst, nan).
    user, net = _softmax_classifier_and_model()
    problem = read_problem(user.loss, user.params, user.x, user.y)
    assert given_model(problem, net, None).residual < 1e-12
    overflowed = {name: np.full_like(value, np.nan) for name, value in user.params.items()}
    problem.points[1] = UserPoint(overflowed, problem.points[1].value)
    with pytest.raises(InputError, match="does not compute your loss"):
        given_model(problem, net, None)


# ----- bad input ----------------------------------------------------------------------------


def test_labels_outside_the_classes():
    user = course_classifier()
    with pytest.raises(InputError, match="outside the 4 classes"):
        gp.check_network(user.loss, user.grad, user.params, user.x, user.y + 5)


def test_labels_that_are_not_integers():
    user = course_classifier()
    with pytest.raises(InputError, match="integer class labels"):
        gp.check_network(user.loss, user.grad, user.params, user.x, user.y + 0.5)


def test_data_whose_shape_fits_no_layout():
    user = course_classifier()
    with pytest.raises(InputError, match="fit no network"):
        gp.check_network(user.loss, user.grad, user.params, user.x[:, :-1], user.y)


def test_a_loss_not_finite_at_the_point():
    user = course_classifier()
    with pytest.raises(InputError, match="not finite"):
        gp.check_network(lambda p: float("nan"), user.grad, user.params, user.x, user.y)


def test_a_nondeterministic_loss():
    user = course_classifier()
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="nondeterministic"):
        gp.check_network(lambda p: user.loss(p) + rng.normal() * 1e-3, user.grad,
                         user.params, user.x, user.y)


def test_shapes_that_fit_several_layouts_equally_well():
    # x = I and one square weight without biases: f(x @ W) and f(x @ W.T) are the same loss.
    x = np.eye(3)
    w = np.random.default_rng(0).normal(size=(3, 3))

    def loss(p):
        return float(0.5 * np.sum((1 / (1 + np.exp(-(x @ p["W"]))) - x) ** 2))

    with pytest.raises(InputError, match="several layouts|layouts that compute") as err:
        gp.check_network(loss, lambda p: p["W"], {"W": w}, x)
    assert "model= and layout=" in str(err.value)


# ----- vocabulary ---------------------------------------------------------------------------


def test_missing_term_is_a_bug_and_convention_is_not():
    assert {"missing_term", "convention"} <= set(FINDING_KINDS)
    assert Finding("missing_term", ("W1",), "m").is_bug
    assert not Finding("convention", ("W1",), "m").is_bug


def test_check_network_is_exported():
    assert gp.check_network.__module__ == "gradproof.network_check"


def test_a_degenerate_linear_tied_network_is_identified():
    # The oracle's -[x log z + (1-x) log(1-z)] and the network's softplus(s) - x s differ by
    # 3e-9 of |J| here: their terms cancel, so the match is held to the terms' size, not |J|.
    options = {
        "layers": [1, 1, 4, 1, 1], "activation": ["identity"] * 3, "output": "sigmoid",
        "loss_name": "cross_entropy", "squared_half": False, "reduction": "mean",
        "target": "input", "label_base": 0, "bias": False, "tied": True, "weight_decay": 0.0,
        "decay_half": False, "decay_mean": False, "decay_biases": False,
        "sparsity_weight": 0.0, "sparsity_target": 0.5,
    }
    inner = test_identified_gradient_equals_autograd_of_the_users_loss.hypothesis.inner_test
    inner(options, Layout(), 4)
