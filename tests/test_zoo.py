"""A zoo of buggy hand-written gradients: each must be diagnosed with the exact kind and tensor.

Each case plants one bug in a backprop written the way users write it (``user_grads`` below,
a one-hidden-layer network spelled out line by line; ``deep_user_grads`` for a stack), runs
the full pipeline a user meets (``gp.check_model`` with the user's gradient: the exact check,
then structural and model-aware diagnosis) and asserts the set of (kind, tensor) of the bug findings, and for
model-aware kinds the mistake named. Flat "unrolled theta" cases go through
``check_gradient`` with MATLAB-order shapes. The same code without a bug must pass with no
bug finding in every configuration.

The worked example, spelled out (case ``seed-motivating``): in a 6-4-6 network, ``gW2 =
d2.T @ a`` is 6x4 for a 4x6 W2 (``transposed``); ``e1 = d2 @ W1`` uses the 6x4 encoder where
``W2.T`` belongs, which has the same shape, so only the values are wrong
(``wrong_backprop_matrix`` on W1); and ``gW1 = d1.T @ x`` is again transposed.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradproof as gp
from gradproof.check import check_gradient
from gradproof.nn.autoencoder import Autoencoder

F = {
    "sigmoid": lambda s: 1 / (1 + np.exp(-s)),
    "tanh": np.tanh,
    "relu": lambda s: np.maximum(s, 0),
    "identity": lambda s: s,
}
SLOPE = {  # from the activation a, as users write it
    "sigmoid": lambda a: a * (1 - a),
    "tanh": lambda a: 1 - a**2,
    "relu": lambda a: (a > 0) * 1.0,
    "identity": lambda a: np.ones_like(a),
}

CONFIGS = {
    "seed": {"layers": [6, 4, 6], "bias": False},
    "bias": {"layers": [6, 4, 6]},
    "decay": {"layers": [6, 4, 6], "weight_decay": 0.1},
    "tied": {"layers": [6, 4, 6], "tied": True},
    "sparse": {"layers": [6, 4, 6], "sparsity_weight": 0.5, "sparsity_target": 0.1},
    "xent": {"layers": [6, 4, 6], "loss": "cross_entropy"},
    "tanh": {"layers": [6, 4, 6], "activation": "tanh"},
    "relu": {"layers": [6, 4, 6], "activation": "relu"},
    "mean": {"layers": [6, 4, 6], "reduction": "mean"},
    "square": {"layers": [5, 5, 5]},
    "deep": {"layers": [8, 6, 4, 6, 8]},
}


def make_case(config_id, batch=3, seed=0, **overrides):
    model = Autoencoder(**{**CONFIGS[config_id], **overrides})
    rng = np.random.default_rng(seed)
    params = {k: v + 0.2 * rng.normal(size=v.shape) for k, v in model.init_params(seed).items()}
    x = rng.uniform(0.05, 0.95, size=(batch, model.layers[0]))
    return model, params, x


def user_grads(model, p, x, bug=None):
    """A one-hidden-layer backprop as users write it, with the bug named by ``bug`` planted."""
    act, out = model.activations
    tied, lam = model.tied, model.weight_decay
    m = x.shape[0]
    W1 = p["W1"]
    W2 = W1.T if tied else p["W2"]
    b1, b2 = p.get("b1", 0.0), p.get("b2", 0.0)
    s1 = x @ W1 + b1
    a = F[act](s1)  # (m, h)
    s2 = a @ W2 + b2
    z = F[out](s2)  # (m, v)

    if model.loss_name == "cross_entropy":
        d2 = (z - x) * z * (1 - z) if bug == "squared_delta" else z - x
    elif bug == "output_slope_missing":
        d2 = z - x
    elif bug == "output_slope_from_s":
        d2 = (z - x) * SLOPE[out](s2)
    elif bug == "sign":
        d2 = (x - z) * SLOPE[out](z)
    elif bug == "factor_2":
        d2 = 2 * (z - x) * SLOPE[out](z)
    else:
        d2 = (z - x) * SLOPE[out](z)  # (m, v)
    if model.reduction == "mean" and bug != "missing_mean":
        d2 = d2 / m

    gW2 = d2.T @ a if bug in ("motivating", "transposed_W2") else a.T @ d2  # (h, v) like W2
    gb2 = d2[-1] if bug == "bias_last" else d2.sum(axis=0)
    if bug in ("motivating", "mirror"):
        e1 = d2 @ W1
    elif bug == "untransposed":
        e1 = d2 @ W2
    else:
        e1 = d2 @ W2.T  # (m, h)
    sparse = 0.0
    if model.sparsity_weight:
        rho, rho_hat = model.sparsity_target, a.mean(axis=0)
        sparse = model.sparsity_weight / m * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))
    if bug not in ("sparsity_missing", "sparsity_outside"):
        e1 = e1 + sparse
    slope = {
        "hidden_slope_from_s": lambda: SLOPE[act](s1),
        "hidden_slope_twice": lambda: SLOPE[act](a) ** 2,
        "hidden_slope_missing": lambda: 1.0,
        "sigmoid_slope": lambda: a * (1 - a),
    }.get(bug, lambda: SLOPE[act](a))()
    d1 = e1 * slope
    if bug == "sparsity_outside":
        d1 = d1 + sparse
    gW1 = d1.T @ x if bug == "motivating" else x.T @ d1  # (v, h) like W1
    gb1 = d1[-1] if bug == "bias_last" else d1.sum(axis=0)

    if tied:
        encoder_use, decoder_use = gW1, gW2.T
        gW1 = {"tied_encoder_only": encoder_use, "tied_decoder_only": decoder_use}.get(
            bug, encoder_use + decoder_use
        )
    if lam and bug != "decay_missing":
        gW1 = gW1 + lam * W1
        gW2 = gW2 + lam * W2
    if lam and bug == "decay_on_biases":
        gb1, gb2 = gb1 + lam * b1, gb2 + lam * b2
    if bug == "zero_b2":
        gb2 = np.zeros_like(gb2)
    grads = {"W1": gW1} if tied else {"W1": gW1, "W2": gW2}
    if model.bias:
        grads.update(b1=gb1, b2=gb2)
    if bug == "swapped":
        grads["W1"], grads["W2"] = grads["W2"], grads["W1"]
    return grads


def deep_user_grads(model, p, x, bug=None):
    """An untied sigmoid stack's backprop as a loop, with ``bug`` planted in every layer."""
    n = model.n_layers
    acts = [x]
    for k in range(1, n + 1):
        acts.append(F["sigmoid"](acts[-1] @ p[f"W{k}"] + p[f"b{k}"]))
    z = acts[-1]
    delta = (z - x) * SLOPE["sigmoid"](z)
    grads = {}
    for k in range(n, 0, -1):
        grads[f"W{k}"] = acts[k - 1].T @ delta
        grads[f"b{k}"] = delta.sum(axis=0)
        if k > 1:
            back = p[f"W{n + 1 - k}"] if bug == "mirror" else p[f"W{k}"].T
            slope = 1.0 if bug == "hidden_slope_missing" else SLOPE["sigmoid"](acts[k - 1])
            delta = (delta @ back) * slope
    return grads


WAD, WBM = "wrong_activation_derivative", "wrong_backprop_matrix"


def _all(kind, *tensors):
    return {(kind, t) for t in tensors}


# (case id, config, bug, batch, expected bug findings, mistake named for model-aware kinds)
ZOO = [
    ("seed-motivating", "seed", "motivating", 1,
     {("transposed", "W1"), (WBM, "W1"), ("transposed", "W2")}, "backprop_through_mirror_weight"),
    ("seed-mirror", "seed", "mirror", 3, _all(WBM, "W1"), "backprop_through_mirror_weight"),
    ("seed-hidden-slope-from-s", "seed", "hidden_slope_from_s", 3, _all(WAD, "W1"),
     "hidden_slope_of_pre_activation"),
    ("seed-hidden-slope-twice", "seed", "hidden_slope_twice", 3, _all(WAD, "W1"), "hidden_slope_twice"),
    ("seed-hidden-slope-missing", "seed", "hidden_slope_missing", 3, _all(WAD, "W1"), "hidden_slope_missing"),
    ("seed-output-slope-missing", "seed", "output_slope_missing", 3, _all(WAD, "W1", "W2"),
     "output_slope_missing"),
    ("seed-output-slope-from-s", "seed", "output_slope_from_s", 3, _all(WAD, "W1", "W2"),
     "output_slope_of_pre_activation"),
    ("seed-sign", "seed", "sign", 3, _all("sign_flipped", "W1", "W2"), None),
    ("seed-factor-2", "seed", "factor_2", 3, _all("scaled", "W1", "W2"), None),
    ("bias-last-example", "bias", "bias_last", 3, _all("partial", "b1", "b2"), "bias_not_summed"),
    ("bias-zero-b2", "bias", "zero_b2", 3, _all("zero", "b2"), None),
    ("bias-transposed-W2", "bias", "transposed_W2", 3, _all("transposed", "W2"), None),
    ("decay-missing", "decay", "decay_missing", 3, _all("missing_l2", "W1", "W2"), None),
    ("decay-on-biases", "decay", "decay_on_biases", 3, _all("missing_l2", "b1", "b2"),
     "weight_decay_on_biases"),
    ("tied-encoder-only", "tied", "tied_encoder_only", 3, _all("mismatch", "W1"), "tied_encoder_use_only"),
    ("tied-decoder-only", "tied", "tied_decoder_only", 3, _all("mismatch", "W1"), "tied_decoder_use_only"),
    ("tied-hidden-slope-missing", "tied", "hidden_slope_missing", 3, _all(WAD, "W1", "b1"),
     "hidden_slope_missing"),
    ("sparse-term-missing", "sparse", "sparsity_missing", 3, _all("mismatch", "W1", "b1"), "sparsity_missing"),
    ("sparse-outside-slope", "sparse", "sparsity_outside", 3, _all(WAD, "W1", "b1"), "sparsity_outside_slope"),
    ("xent-squared-delta", "xent", "squared_delta", 3, _all(WAD, "W1", "b1", "W2", "b2"),
     "squared_delta_with_cross_entropy"),
    ("tanh-slope-from-s", "tanh", "hidden_slope_from_s", 3, _all(WAD, "W1", "b1"),
     "hidden_slope_of_pre_activation"),
    ("tanh-sigmoid-slope", "tanh", "sigmoid_slope", 3, _all(WAD, "W1", "b1"), "hidden_slope_of_sigmoid"),
    ("relu-slope-missing", "relu", "hidden_slope_missing", 3, _all(WAD, "W1", "b1"), "hidden_slope_missing"),
    ("relu-sigmoid-slope", "relu", "sigmoid_slope", 3, _all(WAD, "W1", "b1"), "hidden_slope_of_sigmoid"),
    ("mean-missing-1/m", "mean", "missing_mean", 4, _all("scaled", "W1", "b1", "W2", "b2"), None),
    ("square-untransposed", "square", "untransposed", 3, _all(WBM, "W1", "b1"), "backprop_untransposed"),
    ("square-mirror", "square", "mirror", 3, _all(WBM, "W1", "b1"), "backprop_through_mirror_weight"),
    ("square-transposed-W2", "square", "transposed_W2", 3, _all("transposed", "W2"), "transposed_outer_product"),
    ("square-swapped", "square", "swapped", 3, {("swapped", "W1", "W2")}, None),
    ("deep-mirror", "deep", "mirror", 3, _all(WBM, "W1", "b1", "W2", "b2", "W3", "b3"),
     "backprop_through_mirror_weight"),
    ("deep-hidden-slope-missing", "deep", "hidden_slope_missing", 3,
     _all(WAD, "W1", "b1", "W2", "b2", "W3", "b3"), "hidden_slope_missing"),
]

MODEL_AWARE = {WAD, WBM}


def bug_findings(report):
    return {(f.kind, *f.tensors) for f in report.findings if f.is_bug}


def _grads(model, params, x, bug):
    backprop = deep_user_grads if model.n_layers > 2 else user_grads
    return backprop(model, params, x, bug)


@pytest.mark.parametrize(
    "config_id, bug, batch, expected, mistake",
    [pytest.param(*case[1:], id=case[0]) for case in ZOO],
)
def test_zoo_case_is_diagnosed_exactly(config_id, bug, batch, expected, mistake):
    model, params, x = make_case(config_id, batch)
    report = gp.check_model(model, params, x, grad=_grads(model, params, x, bug))
    assert not report.passed
    assert bug_findings(report) == expected
    if mistake is not None:
        named = {f.details.get("mistake") for f in report.findings if f.is_bug}
        assert mistake in named
    for finding in report.findings:
        if finding.kind in MODEL_AWARE:
            assert finding.details["numpy"] and finding.details["matlab"]


@pytest.mark.parametrize("config_id", list(CONFIGS))
def test_the_same_code_without_the_bug_passes_with_no_bug_finding(config_id):
    model, params, x = make_case(config_id, batch=3)
    report = gp.check_model(model, params, x, grad=_grads(model, params, x, None))
    assert report.passed, str(report)
    assert bug_findings(report) == set()


# ------------------------------------------------------------- flat "unrolled theta" cases


def flat_case(config_id):
    """A MATLAB-style flat theta = [W1(:); W2(:)] (column-major) of a network without biases,
    the map back to named weights, the shapes, and the right gradient."""
    model, params, x = make_case(config_id, bias=False)
    shapes = {"W1": params["W1"].shape, "W2": params["W2"].shape}
    sizes = [int(np.prod(s)) for s in shapes.values()]

    def unflatten(theta):
        w1, w2 = np.split(theta, [sizes[0]])
        return {"W1": w1.reshape(shapes["W1"], order="F"), "W2": w2.reshape(shapes["W2"], order="F")}

    theta = np.concatenate([params["W1"].ravel(order="F"), params["W2"].ravel(order="F")])
    grads = user_grads(model, params, x)
    return model, x, theta, shapes, unflatten, grads


def _flat_report(config_id, unroll):
    model, x, theta, shapes, unflatten, grads = flat_case(config_id)
    grad_vector = unroll(grads)
    return check_gradient(lambda t: model.loss(unflatten(t), x), grad_vector, theta,
                          shapes=shapes, order="F")


FLAT_ZOO = [
    # np.ravel() is C order: the user unrolled the gradient in the other order than theta.
    ("flat-unrolled-in-C", "seed", lambda g: np.concatenate([g["W1"].ravel(), g["W2"].ravel()]),
     _all("unroll_order", "W1", "W2")),
    ("flat-square-unrolled-in-C", "square", lambda g: np.concatenate([g["W1"].ravel(), g["W2"].ravel()]),
     _all("transposed", "W1", "W2")),
    ("flat-square-segments-swapped", "square",
     lambda g: np.concatenate([g["W2"].ravel(order="F"), g["W1"].ravel(order="F")]),
     {("swapped", "W1", "W2")}),
]


@pytest.mark.parametrize(
    "config_id, unroll, expected", [pytest.param(*case[1:], id=case[0]) for case in FLAT_ZOO]
)
def test_flat_zoo_case_is_diagnosed_exactly(config_id, unroll, expected):
    report = _flat_report(config_id, unroll)
    assert not report.passed
    assert bug_findings(report) == expected


def test_a_flat_gradient_unrolled_like_theta_passes():
    report = _flat_report("seed", lambda g: np.concatenate([g["W1"].ravel(order="F"), g["W2"].ravel(order="F")]))
    assert report.passed, str(report)


def test_the_zoo_is_large_and_covers_every_configuration_kind():
    assert len(ZOO) + len(FLAT_ZOO) >= 25
    assert {case[1] for case in ZOO} == set(CONFIGS)
