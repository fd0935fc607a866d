"""Spec for the family's catalogue of mistakes, walked whole: every mistake is named by
``gp.check_network`` on a network in the numpy layout (``W1`` (n_in, n_out), vector biases,
examples as rows) and in the MATLAB course's (``Theta1`` (n_out, n_in + 1) with the bias as
column 1; examples as columns and no biases for a tied stack), and the right gradient in the
same layout gets no bug finding.

The user's loss is the autograd oracle's formula (``oracle_objective``) read through the user's
layout; the right gradient is autograd's; the wrong one is the mistake's variant backward pass
mapped into the layout, as the user's code would return it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from autograd import grad as autograd_grad

import gradproof as gp
from gradproof.layouts import Layout, from_canonical, to_canonical
from gradproof.network_mistakes import NETWORK_MISTAKES, fix_fields
from gradproof.nn import Network
from gradproof.nn.activations import ACTIVATIONS
from oracle import random_params
from test_network import oracle_objective, oracle_targets, random_targets

CLASSIFIER = dict(layers=[6, 4, 3], output="sigmoid", loss_name="cross_entropy",
                  target="labels", label_base=1, reduction="mean", weight_decay=1.5,
                  decay_mean=True)
SOFTMAX = dict(layers=[6, 5, 5, 3], activation=["tanh", "sigmoid"], output="softmax",
               loss_name="softmax_cross_entropy", target="labels", reduction="mean")
AUTOENCODER = dict(layers=[6, 4, 6], target="input", reduction="mean")
SPARSE = dict(layers=[6, 3, 6], target="input", reduction="mean", sparsity_weight=0.5,
              sparsity_target=0.2)
TIED = dict(layers=[6, 3, 6], target="input", tied=True, bias=False)
# PyTorch's MSELoss: the mean over every entry of the output
REGRESSION = dict(layers=[6, 4, 3], activation="tanh", output="identity", squared_half=False,
                  target="one_hot", reduction="mean", mean_outputs=True)

# Each mistake on a network it applies to.
CONFIGS = {
    "backprop_through_mirror_weight": AUTOENCODER,
    "backprop_untransposed": SOFTMAX,
    "slope_of_activation": CLASSIFIER,
    "slope_formula_of_pre_activation": CLASSIFIER,
    "slope_missing": CLASSIFIER,
    "squared_error_slope_missing": AUTOENCODER,
    "output_slope_of_activation": AUTOENCODER,
    "slope_of_activation_everywhere": AUTOENCODER,
    "cross_entropy_slope_again": CLASSIFIER,
    "softmax_without_target": SOFTMAX,
    "mean_twice": CLASSIFIER,
    "mean_never": CLASSIFIER,
    "outputs_mean_never": REGRESSION,
    "decay_on_biases": CLASSIFIER,
    "decay_of_gradient": CLASSIFIER,
    "decay_halved": CLASSIFIER,
    "decay_doubled": CLASSIFIER,
    "sparsity_missing": SPARSE,
    "tied_decoder_path_missing": TIED,
    "tied_encoder_path_missing": TIED,
    "labels_off_by_one": CLASSIFIER,
    "labels_off_by_one_down": CLASSIFIER,
}


def _layout(kind: str, net: Network) -> Layout:
    if kind == "numpy":
        return Layout(biases="vector" if net.bias else "absent")
    stored = tuple(net.param_shapes())
    if net.bias:
        stored = tuple(name for name in stored if name.startswith("W"))
        return Layout(weights="out_in", biases="augmented", stored=stored,
                      names=tuple(f"Theta{name[1:]}" for name in stored))
    return Layout(examples="columns", weights="out_in", biases="absent", stored=stored,
                  names=tuple(f"Theta{name[1:]}" for name in stored))


def _user_case(options: dict, kind: str, seed: int = 5):
    """The user's parameters, data, loss and right gradient for ``options`` in ``kind``."""
    net = Network(**options)
    layout = _layout(kind, net)
    rng = np.random.default_rng(seed)
    x = rng.random((9, net.layers[0]))
    y = random_targets(net, 9, rng)
    params = random_params(net.param_shapes(), rng)
    t = oracle_targets(net, x, y)
    user_x = x if layout.examples == "rows" else x.T

    def loss(p):
        return float(oracle_objective(net, to_canonical(layout, net, p), x, t))

    right = from_canonical(layout, net, autograd_grad(
        lambda q: oracle_objective(net, q, x, t))(params))
    return net, layout, params, x, y, user_x, loss, right


def test_every_mistake_of_the_catalogue_has_a_case():
    assert set(CONFIGS) == set(NETWORK_MISTAKES)


@pytest.mark.parametrize("kind", ["numpy", "matlab"])
@pytest.mark.parametrize("mistake", list(CONFIGS))
def test_each_mistake_is_named_in_both_layouts(mistake, kind):
    net, layout, params, x, y, user_x, loss, _ = _user_case(CONFIGS[mistake], kind)
    entry = NETWORK_MISTAKES[mistake]
    assert entry.applies(net)
    wrong = from_canonical(layout, net, entry.gradient(net, params, x, y))
    report = gp.check_network(loss, wrong, from_canonical(layout, net, params), user_x, y)
    assert not report.passed
    named = [f for f in report.findings if f.details.get("mistake") == mistake]
    assert named, str(report)
    assert named[0].kind == entry.kind
    user_names = set(layout.names or net.param_shapes())
    assert named[0].tensor in user_names
    if kind == "matlab":  # the user's names and MATLAB's operators, never numpy's
        line = named[0].details["matlab"]
        assert "@" not in line and ".T" not in line and not re.search(r"\bW\d", line), line


CASES = {"classifier": CLASSIFIER, "softmax": SOFTMAX, "autoencoder": AUTOENCODER,
         "sparse": SPARSE, "tied": TIED, "regression": REGRESSION}


@pytest.mark.parametrize("kind", ["numpy", "matlab"])
@pytest.mark.parametrize("options", list(CASES.values()), ids=list(CASES))
def test_a_right_gradient_gets_no_bug_finding(options, kind):
    net, layout, params, x, y, user_x, loss, right = _user_case(options, kind)
    report = gp.check_network(loss, right, from_canonical(layout, net, params), user_x, y)
    assert report.passed, str(report)
    assert not [f for f in report.findings if f.is_bug]


def test_every_hidden_activation_has_a_slope_in_the_fix_lines():
    for name in ACTIVATIONS:
        net = Network([4, 3, 2], activation=name, target="labels")
        numpy_fields, matlab_fields = fix_fields(net, Layout(), {"W1": "W1"}, "W1")
        for fields in (numpy_fields, matlab_fields):
            if name == "identity":
                assert fields["slope"] == ""
            else:
                assert "z2" in fields["slope"] or "a2" in fields["slope"], name


def test_a_decayed_bias_vector_is_fixed_on_the_bias_line():
    net, layout, params, x, y, user_x, loss, _ = _user_case(CLASSIFIER, "numpy")
    wrong = from_canonical(layout, net, NETWORK_MISTAKES["decay_on_biases"].gradient(
        net, params, x, y))
    report = gp.check_network(loss, wrong, from_canonical(layout, net, params), user_x, y)
    finding = next(f for f in report.findings if f.details.get("mistake") == "decay_on_biases")
    assert finding.tensor.startswith("b")
    assert finding.details["numpy"].startswith(f"grad_{finding.tensor} = d")
    assert "sum(d" in finding.details["matlab"] and "lambda" not in finding.details["matlab"]


def _two_layer_softmax(bug: str):
    """A hand-written two-layer ReLU softmax classifier with L2 `reg * sum W**2`, as people
    write it, with ``bug`` planted in its own backward pass (not gradproof's variants)."""
    rng = np.random.default_rng(3)
    n, d, h, c = 30, 8, 6, 4
    x, y = rng.normal(size=(n, d)), rng.integers(0, c, n)
    params = {"W1": 0.3 * rng.normal(size=(d, h)), "b1": 0.1 * rng.normal(size=h),
              "W2": 0.3 * rng.normal(size=(h, c)), "b2": np.zeros(c)}
    reg = 0.05

    def loss_and_grad(p):
        hidden = np.maximum(0, x @ p["W1"] + p["b1"])
        scores = hidden @ p["W2"] + p["b2"]
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        loss = -np.log(probs[np.arange(n), y]).mean() + reg * (
            np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
        d_scores = probs.copy()
        d_scores[np.arange(n), y] -= 1
        d_scores /= n
        decay = reg if bug == "decay_halved" else 2 * reg
        d_hidden = d_scores @ p["W2"].T
        if bug != "slope_missing":
            d_hidden[hidden <= 0] = 0
        return loss, {"W1": x.T @ d_hidden + decay * p["W1"], "b1": d_hidden.sum(axis=0),
                      "W2": hidden.T @ d_scores + decay * p["W2"], "b2": d_scores.sum(axis=0)}

    return loss_and_grad, params, x, y


@pytest.mark.parametrize("bug,tensors", [("decay_halved", {"W1", "W2"}),
                                         ("slope_missing", {"W1", "b1"})])
def test_hand_written_bugs_of_a_relu_softmax_classifier_are_named(bug, tensors):
    loss_and_grad, params, x, y = _two_layer_softmax(bug)
    report = gp.check_network(loss_and_grad, None, params, x, y)
    assert not report.passed
    named = {f.tensor for f in report.findings if f.details.get("mistake") == bug}
    assert named == tensors, str(report)


def test_the_hand_written_relu_softmax_classifier_passes_when_right():
    loss_and_grad, params, x, y = _two_layer_softmax("none")
    report = gp.check_network(loss_and_grad, None, params, x, y)
    assert report.passed and not [f for f in report.findings if f.is_bug], str(report)


def test_a_squared_error_regression_with_the_cross_entropy_delta_is_named():
    """Sigmoid outputs, 1/2 squared error averaged over examples as columns, and `a - y` as
    the output delta, written by hand."""
    rng = np.random.default_rng(4)
    x, t = rng.random((5, 20)), rng.random((3, 20))
    params = {"W1": rng.normal(size=(4, 5)), "b1": rng.normal(size=(4, 1)),
              "W2": rng.normal(size=(3, 4)), "b2": rng.normal(size=(3, 1))}
    sigmoid = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731

    def loss_and_grad(p):
        a2 = sigmoid(p["W1"] @ x + p["b1"])
        a3 = sigmoid(p["W2"] @ a2 + p["b2"])
        d3 = (a3 - t) / 20  # the bug: no a3 * (1 - a3)
        d2 = (p["W2"].T @ d3) * a2 * (1 - a2)
        return 0.5 * np.sum((a3 - t) ** 2) / 20, {
            "W1": d2 @ x.T, "b1": d2.sum(axis=1, keepdims=True),
            "W2": d3 @ a2.T, "b2": d3.sum(axis=1, keepdims=True)}

    report = gp.check_network(loss_and_grad, None, params, x, t)
    assert "targets as columns of y" in str(report)
    named = [f for f in report.findings if f.details.get("mistake") == "squared_error_slope_missing"]
    assert named and {f.tensor for f in named} >= {"W2", "b2"}, str(report)
    assert "a3 * (1 - a3)" in named[0].details["numpy"] or "sigmoid_gradient" in named[0].details["numpy"]


def test_a_layer_loop_with_the_slope_of_the_activation_is_named_at_every_layer():
    """Parameters as lists of (n_out, n_in) weights and (n, 1) biases, examples as columns,
    and the slope `s(z) * (1 - s(z))` fed the activation at every layer of the loop, the
    output's included: the output's tensors and the hidden layer's each get the line to fix."""
    rng = np.random.default_rng(2)
    sizes, n = [6, 5, 3], 12
    weights = [rng.normal(size=(b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(size=(b, 1)) for b in sizes[1:]]
    x, t = rng.random((6, n)), np.eye(3)[:, rng.integers(0, 3, n)]
    sigmoid = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731
    slope = lambda s: sigmoid(s) * (1 - sigmoid(s))  # noqa: E731

    def loss_and_grad(p):
        activations = [x]
        for w, b in zip(p[:2], p[2:]):
            activations.append(sigmoid(w @ activations[-1] + b))
        delta = (activations[-1] - t) * slope(activations[-1]) / n  # the bug: at a, not z
        grads = [None] * 4
        for k in (1, 0):
            grads[k], grads[2 + k] = delta @ activations[k].T, delta.sum(axis=1, keepdims=True)
            delta = (p[k].T @ delta) * slope(activations[k])  # the same bug
        return 0.5 * np.sum((activations[-1] - t) ** 2) / n, grads

    report = gp.check_network(loss_and_grad, None, weights + biases, x, t)
    named = {f.tensor: f.details["mistake"] for f in report.findings if "mistake" in f.details}
    assert named == {"[1]": "output_slope_of_activation", "[3]": "output_slope_of_activation",
                     "[0]": "slope_of_activation_everywhere",
                     "[2]": "slope_of_activation_everywhere"}, str(report)


def test_a_binary_classifier_with_row_biases_gets_its_mistake_on_every_tensor():
    """Biases as (1, n) rows, labels as an (m, 1) column, tanh hidden, sigmoid output and the
    cross-entropy averaged: the output delta multiplied by the slope again is named on every
    tensor, the one-entry output bias included (a variant's prediction matched to rounding)."""
    rng = np.random.default_rng(5)
    m = 50
    x, y = rng.normal(size=(m, 4)), (rng.random((m, 1)) > 0.5).astype(float)
    params = {"W1": 0.5 * rng.normal(size=(4, 6)), "b1": np.zeros((1, 6)),
              "W2": 0.5 * rng.normal(size=(6, 1)), "b2": np.zeros((1, 1))}

    def loss_and_grad(p):
        h = np.tanh(x @ p["W1"] + p["b1"])
        a = 1 / (1 + np.exp(-(h @ p["W2"] + p["b2"])))
        loss = -np.mean(y * np.log(a) + (1 - y) * np.log(1 - a))
        d2 = (a - y) / m * a * (1 - a)  # the bug: the cross-entropy's delta is (a - y) / m
        d1 = d2 @ p["W2"].T * (1 - h ** 2)
        return loss, {"W1": x.T @ d1, "b1": d1.sum(axis=0, keepdims=True),
                      "W2": h.T @ d2, "b2": d2.sum(axis=0, keepdims=True)}

    report = gp.check_network(loss_and_grad, None, params, x, y)
    assert "biases as (1, n) rows" in str(report)
    named = {f.tensor for f in report.findings
             if f.details.get("mistake") == "cross_entropy_slope_again"}
    assert named == {"W1", "b1", "W2", "b2"}, str(report)
