"""Spec for ``gradproof.nn.Network``: the feed-forward family, its loss and hand-written gradient.

The oracle is a direct transcription of the objective in ``autograd.numpy`` (forward pass,
data term, penalties), written from the formulas, not from the network's code; autograd
differentiates it. Options and their combinations are drawn by hypothesis (depth, widths,
activations, output and loss, reduction, decay form, sparsity, tied weights, target and label
base) and must agree with it to 1e-10 relative to the largest entry, in float64.
"""

from __future__ import annotations

import math

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad as autograd_grad
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gradproof as gp
from gradproof.errors import InputError
from gradproof.nn import ACTIVATIONS, REDUCTIONS, Autoencoder, Network
from oracle import ORACLE_ACTIVATIONS, random_params, rel_err

# ----- the oracle ---------------------------------------------------------------------------

def oracle_log_softmax(s):
    top = anp.max(s, axis=1, keepdims=True)
    return s - top - anp.log(anp.sum(anp.exp(s - top), axis=1, keepdims=True))


def oracle_targets(net: Network, x: np.ndarray, y) -> np.ndarray:
    if net.target == "input":
        return x
    if net.target == "one_hot":
        return np.asarray(y, dtype=float)
    classes = max(net.layers[-1], 2)
    t = np.zeros((len(y), classes))
    t[np.arange(len(y)), np.asarray(y).ravel().astype(int) - net.label_base] = 1.0
    return t[:, 1:] if net.layers[-1] == 1 else t


def oracle_objective(net: Network, params, x, t):
    n = len(net.layers) - 1
    a, code = x, None
    for k in range(1, n + 1):
        w = params[f"W{n + 1 - k}"].T if net.tied and k > n // 2 else params[f"W{k}"]
        s = anp.dot(a, w) + (params[f"b{k}"] if net.bias else 0.0)
        name = net.activation[k - 1] if k < n else net.output
        a = s if name == "softmax" else ORACLE_ACTIVATIONS[name](s)
        if k < n and net.layers[k] == min(net.layers[1:-1]) and code is None:
            code = a
    m = x.shape[0]
    if net.loss_name == "squared":
        data = (0.5 if net.squared_half else 1.0) * anp.sum((a - t) ** 2)
    elif net.loss_name == "cross_entropy":
        data = -anp.sum(t * anp.log(a) + (1 - t) * anp.log(1 - a))
    else:
        data = -anp.sum(t * oracle_log_softmax(a))
    total = data / m if net.reduction == "mean" else data
    total = total / a.shape[1] if net.mean_outputs else total
    decayed = [p for name, p in params.items() if name.startswith("W") or net.decay_biases]
    if net.weight_decay:
        factor = net.weight_decay * (0.5 if net.decay_half else 1.0)
        factor = factor / m if net.decay_mean else factor
        total = total + factor * sum(anp.sum(p ** 2) for p in decayed)
    if net.sparsity_weight:
        rho, rho_hat = net.sparsity_target, anp.mean(code, axis=0)
        kl = rho * anp.log(rho / rho_hat) + (1 - rho) * anp.log((1 - rho) / (1 - rho_hat))
        total = total + net.sparsity_weight * anp.sum(kl)
    return total


def random_targets(net: Network, batch: int, rng: np.random.Generator):
    if net.target == "input":
        return None
    if net.target == "one_hot":
        if net.loss_name == "squared":
            return rng.normal(size=(batch, net.layers[-1]))
        if net.loss_name == "cross_entropy":
            return rng.random((batch, net.layers[-1]))
        return np.eye(net.layers[-1])[rng.integers(0, net.layers[-1], batch)]
    return rng.integers(0, max(net.layers[-1], 2), batch) + net.label_base


# ----- hypothesis strategy: every option, valid combinations only ---------------------------

widths = st.integers(1, 6)
act_names = st.sampled_from(sorted(ACTIVATIONS))


@st.composite
def networks(draw) -> dict:
    target = draw(st.sampled_from(["input", "labels", "one_hot"]))
    tied = target == "input" and draw(st.booleans())
    n_in = draw(widths)
    if tied:
        half = draw(st.lists(widths, min_size=1, max_size=2))
        layers = [n_in, *half, *half[::-1][1:], n_in]
    else:
        hidden_sizes = draw(st.lists(widths, min_size=0, max_size=2))
        n_out = n_in if target == "input" else draw(widths)
        layers = [n_in, *hidden_sizes, n_out]
    hidden = draw(st.lists(act_names, min_size=len(layers) - 2, max_size=len(layers) - 2))
    loss_name = draw(st.sampled_from(["squared", "cross_entropy", "softmax_cross_entropy"]))
    if loss_name == "softmax_cross_entropy" and layers[-1] < 2 or (
        loss_name == "softmax_cross_entropy" and target == "input"
    ):
        loss_name = "cross_entropy"
    output = {"cross_entropy": "sigmoid", "softmax_cross_entropy": "softmax"}.get(
        loss_name, draw(act_names)
    )
    code = None if len(layers) < 3 else 1 + int(np.argmin(layers[1:-1]))
    sparse = code is not None and hidden[code - 1] == "sigmoid"
    return dict(
        layers=layers, activation=hidden, output=output, loss_name=loss_name,
        squared_half=draw(st.booleans()), reduction=draw(st.sampled_from(sorted(REDUCTIONS))),
        mean_outputs=loss_name != "softmax_cross_entropy" and draw(st.booleans()),
        target=target, label_base=draw(st.sampled_from([0, 1])), bias=draw(st.booleans()),
        tied=tied, weight_decay=draw(st.sampled_from([0.0, 0.05, 1.3])),
        decay_half=draw(st.booleans()), decay_mean=draw(st.booleans()),
        decay_biases=draw(st.booleans()),
        sparsity_weight=draw(st.sampled_from([0.0, 0.4, 2.0])) if sparse else 0.0,
        sparsity_target=draw(st.floats(0.02, 0.98)),
    )


# The classic course classifier: 1-based labels, sigmoid outputs, cross-entropy summed over the
# classes and averaged over the examples, lambda/(2m) * sum of the weights squared.
COURSE_CLASSIFIER = dict(
    layers=[6, 4, 3], activation="sigmoid", output="sigmoid", loss_name="cross_entropy",
    reduction="mean", target="labels", label_base=1, weight_decay=1.0, decay_mean=True,
)
SOFTMAX_REGRESSION = dict(
    layers=[5, 4], output="softmax", loss_name="softmax_cross_entropy", target="labels",
    weight_decay=0.1, decay_half=False, decay_biases=True,
)
LOGISTIC_REGRESSION = dict(
    layers=[3, 1], output="sigmoid", loss_name="cross_entropy", target="labels",
    reduction="mean",
)
TIED_SPARSE_AUTOENCODER = dict(
    layers=[6, 3, 6], activation="sigmoid", output="identity", squared_half=False, tied=True,
    weight_decay=0.2, sparsity_weight=1.5, sparsity_target=0.2,
)
DEEP_ONE_HOT_SOFTMAX = dict(
    layers=[4, 5, 3, 3], activation=["relu", "tanh"], output="softmax",
    loss_name="softmax_cross_entropy", target="one_hot", bias=False, reduction="mean",
)


@settings(max_examples=120, deadline=None)
@given(options=networks(), batch=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
@example(options=COURSE_CLASSIFIER, batch=5, seed=0)
@example(options=SOFTMAX_REGRESSION, batch=4, seed=1)
@example(options=LOGISTIC_REGRESSION, batch=3, seed=2)
@example(options=TIED_SPARSE_AUTOENCODER, batch=4, seed=3)
@example(options=DEEP_ONE_HOT_SOFTMAX, batch=2, seed=4)
def test_loss_and_grad_match_autograd(options, batch, seed):
    net = Network(**options)
    rng = np.random.default_rng(seed)
    params = random_params(net.param_shapes(), rng)
    x = rng.random((batch, net.layers[0]))
    y = random_targets(net, batch, rng)

    J, grads = net.loss_and_grad(params, x, y)

    t = oracle_targets(net, x, y)
    expected_J = oracle_objective(net, params, x, t)
    expected = autograd_grad(lambda p: oracle_objective(net, p, x, t))(params)
    assert abs(J - expected_J) <= 1e-10 * abs(expected_J)
    assert net.loss(params, x, y) == J
    assert list(grads) == list(net.param_shapes())
    for name, g in grads.items():
        assert g.shape == params[name].shape, name
        assert rel_err(g, expected[name]) <= 1e-10, name


def test_worked_example_softmax_regression_by_hand():
    # One example, two classes, W = 0 and b = 0: z = (1/2, 1/2), J = log 2;
    # dJ/ds = z - t = (-1/2, 1/2) for the label 0, dJ/dW = x^T dJ/ds, dJ/db = dJ/ds.
    net = Network(layers=[2, 2], output="softmax", loss_name="softmax_cross_entropy",
                  target="labels")
    params = {"W1": np.zeros((2, 2)), "b1": np.zeros(2)}
    J, grads = net.loss_and_grad(params, np.array([[1.0, 2.0]]), np.array([0]))
    assert J == pytest.approx(math.log(2))
    np.testing.assert_allclose(grads["W1"], [[-0.5, 0.5], [-1.0, 1.0]])
    np.testing.assert_allclose(grads["b1"], [-0.5, 0.5])


# ----- the bridge: Autoencoder is one configuration of Network ------------------------------

AUTOENCODER_OPTIONS = {
    "seed": dict(layers=[6, 4, 6]),
    "deep-mixed": dict(layers=[6, 4, 3, 5, 6], activation=["tanh", "relu", "sigmoid"],
                       output_activation="identity"),
    "tied": dict(layers=[6, 4, 2, 4, 6], activation="tanh", tied=True),
    "cross-entropy": dict(layers=[5, 3, 5], loss="cross_entropy"),
    "mean": dict(layers=[5, 3, 5], reduction="mean"),
    "no-bias": dict(layers=[5, 3, 5], bias=False),
    "decay": dict(layers=[5, 3, 5], weight_decay=0.7),
    "sparse": dict(layers=[5, 3, 2, 3, 5], sparsity_weight=1.2, sparsity_target=0.2),
    "all": dict(layers=[6, 3, 6], loss="cross_entropy", reduction="mean", tied=True,
                bias=False, weight_decay=0.3, sparsity_weight=0.5, sparsity_target=0.1),
}


def network_like(model: Autoencoder) -> Network:
    config = model.config()
    return Network(
        layers=config["layers"], activation=config["activation"],
        output=config["output_activation"], loss_name=config["loss"],
        reduction=config["reduction"], bias=config["bias"], tied=config["tied"],
        weight_decay=config["weight_decay"], sparsity_weight=config["sparsity_weight"],
        sparsity_target=config["sparsity_target"],
    )


@pytest.mark.parametrize("options", AUTOENCODER_OPTIONS.values(), ids=AUTOENCODER_OPTIONS.keys())
def test_network_configured_like_an_autoencoder_computes_the_same(options):
    model = Autoencoder(**options)
    net = network_like(model)
    assert net.param_shapes() == model.param_shapes()
    rng = np.random.default_rng(7)
    params = random_params(model.param_shapes(), rng)
    x = rng.random((4, model.layers[0]))

    J, grads = net.loss_and_grad(params, x)
    expected_J, expected = model.loss_and_grad(params, x)

    assert J == pytest.approx(expected_J, rel=1e-13)
    for name in expected:
        assert rel_err(grads[name], expected[name]) <= 1e-13, name


@pytest.mark.parametrize("options", AUTOENCODER_OPTIONS.values(), ids=AUTOENCODER_OPTIONS.keys())
def test_an_autoencoder_runs_the_network_its_options_map_to(options):
    model = Autoencoder(**options)
    assert model.network == network_like(model)
    rng = np.random.default_rng(8)
    params = random_params(model.param_shapes(), rng)
    x = rng.random((3, model.layers[0]))
    J, grads = model.loss_and_grad(params, x)
    expected_J, expected = model.network.loss_and_grad(params, x)
    assert J == expected_J and model.loss(params, x) == model.network.loss(params, x)
    for name in expected:
        np.testing.assert_array_equal(grads[name], expected[name], err_msg=name)


def test_init_params_draws_what_the_autoencoder_draws():
    model = Autoencoder(layers=[6, 4, 6], activation="tanh")
    net = network_like(model)
    for name, value in model.init_params(3).items():
        np.testing.assert_array_equal(net.init_params(3)[name], value)


# ----- the checker agrees with the network's own gradient -----------------------------------

@pytest.mark.parametrize(
    "options",
    [COURSE_CLASSIFIER, SOFTMAX_REGRESSION, TIED_SPARSE_AUTOENCODER],
    ids=["course-classifier", "softmax-regression", "tied-sparse"],
)
def test_check_gradient_passes_on_the_networks_gradient(options):
    net = Network(**options)
    rng = np.random.default_rng(11)
    params = random_params(net.param_shapes(), rng)
    x = rng.random((5, net.layers[0]))
    y = random_targets(net, 5, rng)

    report = gp.check_gradient(lambda p: net.loss(p, x, y),
                               lambda p: net.loss_and_grad(p, x, y)[1], params)

    assert report.passed, str(report)


# ----- configuration and bad input ----------------------------------------------------------

def test_network_is_exported():
    assert gp.Network is Network


def test_configuration_is_plain_data_and_rebuilds():
    net = Network(**COURSE_CLASSIFIER)
    assert Network(**net.config()) == net
    assert net.activation == ("sigmoid",)
    with pytest.raises(AttributeError):
        net.layers = (1, 2)  # frozen


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(layers=[4]), "layers must hold at least 2"),
        (dict(layers=[4, 0, 4]), "layers must hold at least 2 positive"),
        (dict(layers=[4, 3, 4], output="softplus"), "output must be one of: 'sigmoid'"),
        (dict(layers=[4, 3, 4], loss_name="hinge"), "loss_name must be one of"),
        (dict(layers=[4, 3, 4], reduction="median"), "reduction must be one of: 'sum', 'mean'"),
        (dict(layers=[4, 3, 4], target="labels", label_base=2), "label_base must be one of: 0, 1"),
        (dict(layers=[4, 3, 4], label_base=True), "label_base must be one of"),
        (dict(layers=[4, 3, 4], weight_decay=-1.0), "weight_decay must be >= 0"),
        (dict(layers=[4, 3, 4], tied="yes"), "tied must be True or False"),
        (dict(layers=[4, 3, 4], activation=["tanh", "relu"]), "one name per hidden layer"),
        (dict(layers=[4, 3, 4], output="softmax"), "go together"),
        (dict(layers=[4, 3, 4], loss_name="cross_entropy", output="tanh"),
         "loss_name 'cross_entropy' needs output 'sigmoid'"),
        (dict(layers=[4, 3, 2]), "target 'input'"),
        (dict(layers=[4, 3, 2, 4], tied=True), "tied weights need a symmetric"),
        (dict(layers=[4, 1], target="labels", output="softmax",
              loss_name="softmax_cross_entropy"), "at least 2 classes"),
        (dict(layers=[4, 4], sparsity_weight=1.0), "needs a hidden layer"),
        (dict(layers=[4, 3, 4], activation="relu", sparsity_weight=1.0), "sigmoid hidden layer"),
        (dict(layers=[4, 3, 4], dtype="float16"), "unknown dtype"),
        (dict(layers=[4, 3, 4], mean_outputs="yes"), "mean_outputs must be True or False"),
        (dict(layers=[4, 3], target="labels", output="softmax",
              loss_name="softmax_cross_entropy", mean_outputs=True),
         "mean_outputs averages a data term summed over the outputs"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_options_name_the_option_and_its_allowed_values(options, match):
    with pytest.raises(InputError, match=match):
        Network(**options)


CLASSIFIER = Network(layers=[4, 3, 3], target="labels", label_base=1, loss_name="cross_entropy")


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.ones((2, 4)), np.array([1, 4]), r"labels from 1 to 3 .*got 4 at y\[1\]"),
        (np.ones((2, 4)), np.array([0, 1]), r"got 0 at y\[0\]"),
        (np.ones((2, 4)), np.array([1.0, 2.5]), "integer class labels"),
        (np.ones((2, 4)), np.array(["a", "b"]), "integer class labels"),
        (np.ones((2, 4)), np.array([1, 2, 3]), r"one class label per example, shape \(2,\)"),
        (np.ones((2, 4)), None, "needs y"),
        (np.ones((2, 5)), np.array([1, 2]), r"shape \(batch, 4\).*column of ones"),
        (np.ones((4, 2)), np.array([1, 2]), "examples as columns"),
        (np.ones(4), np.array([1]), r"shape \(batch, 4\)"),
        (np.array([[1.0, np.nan, 0, 0]]), np.array([1]), "non-finite"),
    ],
    ids=["label-too-big", "label-zero-1-based", "fractional", "strings", "count", "no-y",
         "augmented-x", "columns-x", "vector-x", "nan-x"],
)
def test_bad_data_gets_a_clear_message(x, y, match):
    params = CLASSIFIER.init_params(0)
    with pytest.raises(InputError, match=match):
        CLASSIFIER.loss_and_grad(params, x, y)


def test_labels_as_a_matlab_column_and_as_whole_floats_are_accepted():
    params = CLASSIFIER.init_params(0)
    x = np.random.default_rng(0).random((3, 4))
    reference = CLASSIFIER.loss(params, x, np.array([1, 3, 2]))
    assert CLASSIFIER.loss(params, x, np.array([[1.0], [3.0], [2.0]])) == reference


@pytest.mark.parametrize(
    ("net", "y", "match"),
    [
        (Network(layers=[3, 3]), np.ones((2, 3)), "y must not be given"),
        (Network(layers=[3, 2], target="one_hot", output="sigmoid", loss_name="cross_entropy"),
         np.full((2, 2), 2.0), r"targets in \[0, 1\]"),
        (Network(layers=[3, 2], target="one_hot"), np.ones((2, 3)), r"shape \(2, 2\)"),
    ],
    ids=["autoencoder-with-y", "cross-entropy-target-range", "one-hot-shape"],
)
def test_bad_targets_get_a_clear_message(net, y, match):
    with pytest.raises(InputError, match=match):
        net.loss(net.init_params(0), np.ones((2, 3)), y)


def test_params_that_do_not_fit_name_the_missing_and_the_extra():
    net = Network(layers=[3, 2, 3], tied=False)
    params = net.init_params(0)
    params["Theta1"] = params.pop("W1")
    with pytest.raises(InputError, match="missing W1; extra Theta1"):
        net.loss(params, np.ones((1, 3)))


def test_float32_network_computes_in_float32_close_to_float64():
    options = dict(COURSE_CLASSIFIER)
    net64, net32 = Network(**options), Network(**options, dtype="float32")
    rng = np.random.default_rng(2)
    params = random_params(net64.param_shapes(), rng)
    x, y = rng.random((5, 6)), rng.integers(1, 4, 5)
    J64, grads64 = net64.loss_and_grad(params, x, y)
    J32, grads32 = net32.loss_and_grad(params, x, y)
    assert J32 == pytest.approx(J64, rel=1e-5)
    for name, g in grads32.items():
        assert g.dtype == np.float32
        assert rel_err(g, grads64[name]) <= 1e-5, name
