"""Specs for gradproof.mistakes: the catalogue, its independent backprop, and diagnose_model.

The independent backward pass (``reference_gradient``) is held to ``autograd`` on randomised
configurations; each mistake must change the gradient exactly where it applies and be named
when a gradient equals it; correct gradients get no finding.
"""

from __future__ import annotations

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad as autograd_grad
from hypothesis import given, settings
from hypothesis import strategies as st

import gradproof as gp
from gradproof.errors import InputError
from gradproof.mistakes import (
    MISTAKES,
    Flaws,
    applicable_mistakes,
    diagnose_model,
    flawed_backprop,
    reference_gradient,
    rounding_tolerance,
)
from gradproof.nn.autoencoder import Autoencoder
from gradproof.report import FINDING_KINDS

# ----------------------------------------------------------------- the autograd oracle

_AG_ACTIVATIONS = {
    "sigmoid": lambda s: 1 / (1 + anp.exp(-s)),
    "tanh": anp.tanh,
    "relu": lambda s: anp.maximum(s, 0),
    "identity": lambda s: s,
}


def oracle_loss(config, params, x):
    """The objective of an Autoencoder config, written directly in autograd.numpy."""
    layers, tied = config["layers"], config.get("tied", False)
    n = len(layers) - 1
    hidden = config.get("activation", "sigmoid")
    acts = [hidden] * (n - 1) + [config.get("output_activation", "sigmoid")]
    code = 1 + int(np.argmin(layers[1:-1]))
    a, s, code_a = x, None, None
    for k in range(1, n + 1):
        w = params[f"W{n + 1 - k}"].T if tied and k > n // 2 else params[f"W{k}"]
        s = a @ w
        if config.get("bias", True):
            s = s + params[f"b{k}"]
        a = _AG_ACTIVATIONS[acts[k - 1]](s)
        if k == code:
            code_a = a
    if config.get("loss", "squared") == "squared":
        data = 0.5 * anp.sum((a - x) ** 2)
    else:
        data = anp.sum(anp.logaddexp(0, s) - x * s)
    if config.get("reduction", "sum") == "mean":
        data = data / x.shape[0]
    decay = config.get("weight_decay", 0.0)
    total = data + decay / 2 * sum(anp.sum(v**2) for k, v in params.items() if k[0] == "W")
    beta = config.get("sparsity_weight", 0.0)
    if beta:
        rho, rho_hat = config.get("sparsity_target", 0.05), anp.mean(code_a, axis=0)
        total = total + beta * anp.sum(
            rho * anp.log(rho / rho_hat) + (1 - rho) * anp.log((1 - rho) / (1 - rho_hat))
        )
    return total


def perturbed_params(model, seed):
    """Seed init plus noise, so that biases are non-zero and nothing is symmetric."""
    rng = np.random.default_rng(seed)
    return {k: v + 0.2 * rng.normal(size=v.shape) for k, v in model.init_params(seed).items()}


@st.composite
def configs(draw):
    layers = draw(st.sampled_from([[5, 3, 5], [4, 4, 4], [6, 4, 3, 4, 6], [3, 5, 3]]))
    activation = draw(st.sampled_from(["sigmoid", "tanh", "relu", "identity"]))
    loss = draw(st.sampled_from(["squared", "cross_entropy"]))
    output = "sigmoid" if loss == "cross_entropy" else draw(st.sampled_from(["sigmoid", "tanh", "identity"]))
    sparse = activation == "sigmoid" and draw(st.booleans())
    return {
        "layers": layers,
        "activation": activation,
        "output_activation": output,
        "loss": loss,
        "reduction": draw(st.sampled_from(["sum", "mean"])),
        "bias": draw(st.booleans()),
        "tied": len(layers) % 2 == 1 and draw(st.booleans()),
        "weight_decay": draw(st.sampled_from([0.0, 0.3])),
        "sparsity_weight": 0.4 if sparse else 0.0,
        "sparsity_target": 0.2,
    }


@settings(max_examples=40, deadline=None)
@given(config=configs(), batch=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_reference_gradient_matches_autograd(config, batch, seed):
    model = Autoencoder(**config)
    params = perturbed_params(model, seed)
    x = np.random.default_rng(seed + 1).random((batch, model.layers[0]))
    expected = autograd_grad(lambda p: oracle_loss(config, p, x))(params)
    got = reference_gradient(model, params, x)
    assert set(got) == set(params)
    for name in params:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_reference_gradient_is_float64_for_a_float32_model():
    model = Autoencoder(layers=[4, 3, 4], dtype="float32")
    params = model.init_params(0)
    x = np.random.default_rng(0).random((2, 4)).astype(np.float32)
    grads = reference_gradient(model, params, x)
    assert all(g.dtype == np.float64 for g in grads.values())


# ---------------------------------------------------------------------- the catalogue


def test_catalogue_has_at_least_twelve_mistakes_with_valid_kinds_and_both_fix_lines():
    assert len(MISTAKES) >= 12
    model = Autoencoder(layers=[6, 4, 6], tied=False, sparsity_weight=0.1)
    for mistake_id, mistake in MISTAKES.items():
        assert mistake.id == mistake_id
        assert mistake.kind in FINDING_KINDS and mistake.kind not in ("kink", "precision")
        numpy_line, matlab_line = mistake.fix_lines(model, "W1")
        assert numpy_line and matlab_line and numpy_line != matlab_line
        assert ".T" in numpy_line or "sum(" in numpy_line or "z - x" in numpy_line


def test_the_motivating_users_mistake_is_wrong_backprop_matrix():
    mistake = MISTAKES["backprop_through_mirror_weight"]
    assert mistake.kind == "wrong_backprop_matrix"
    numpy_line, matlab_line = mistake.fix_lines(Autoencoder(layers=[6, 4, 6], bias=False), "W1")
    assert numpy_line.startswith("d_s1 = (d_s2 @ W2.T) * a1 * (1 - a1)")
    assert matlab_line == "d_s1 = (d_s2 * W2') .* a1 .* (1 - a1);"


# Configurations and the mistakes that must NOT be offered for them (they cannot change it).
NOT_APPLICABLE = [
    ({"layers": [6, 4, 6], "activation": "relu"}, ["hidden_slope_of_pre_activation", "hidden_slope_twice"]),
    ({"layers": [6, 4, 6], "activation": "identity"}, ["hidden_slope_missing", "hidden_slope_twice"]),
    ({"layers": [6, 4, 6], "output_activation": "identity"}, ["output_slope_missing", "output_slope_twice"]),
    ({"layers": [6, 4, 6], "loss": "cross_entropy"}, ["output_slope_missing", "output_slope_of_pre_activation"]),
    ({"layers": [6, 4, 6]}, ["backprop_untransposed", "squared_delta_with_cross_entropy", "sparsity_missing",
                             "weight_decay_on_biases", "tied_encoder_use_only", "hidden_slope_of_sigmoid"]),
    ({"layers": [6, 4, 6], "tied": True}, ["backprop_through_mirror_weight", "transposed_outer_product"]),
    ({"layers": [6, 4, 6], "bias": False, "weight_decay": 0.1}, ["bias_not_summed", "weight_decay_on_biases"]),
]


@pytest.mark.parametrize("config, absent", NOT_APPLICABLE, ids=lambda v: str(v)[:40])
def test_mistakes_that_cannot_change_a_configuration_are_not_offered(config, absent):
    offered = applicable_mistakes(Autoencoder(**config))
    assert not set(absent) & set(offered)


# Hidden activation -> the slope mistakes that change its gradient: relu's 0/1 slope squared is
# itself and reads the same from s as from a; the identity's slope is 1 everywhere; the
# sigmoid's own formula is right for the sigmoid. Derived from the activation records alone.
SLOPE_MISTAKES = {
    "sigmoid": {"hidden_slope_of_pre_activation", "hidden_slope_twice", "hidden_slope_missing"},
    "tanh": {"hidden_slope_of_pre_activation", "hidden_slope_twice", "hidden_slope_missing",
             "hidden_slope_of_sigmoid"},
    "relu": {"hidden_slope_missing", "hidden_slope_of_sigmoid"},
    "identity": {"hidden_slope_of_sigmoid"},
}


@pytest.mark.parametrize("activation", list(SLOPE_MISTAKES), ids=str)
def test_exactly_the_slope_mistakes_that_change_an_activation_are_offered(activation):
    offered = applicable_mistakes(Autoencoder(layers=[6, 4, 6], activation=activation))
    assert {m for m in offered if m.startswith("hidden_slope")} == SLOPE_MISTAKES[activation]


@pytest.mark.parametrize("mistake_id", ["hidden_slope_of_pre_activation", "hidden_slope_twice"])
def test_a_mistake_not_offered_for_relu_indeed_changes_nothing(mistake_id):
    model = Autoencoder(layers=[6, 4, 6], activation="relu")
    params = perturbed_params(model, 3)
    x = np.random.default_rng(3).random((3, 6))
    wrong, right = MISTAKES[mistake_id].gradient(model, params, x), reference_gradient(model, params, x)
    for name in params:
        np.testing.assert_array_equal(wrong[name], right[name])


# Every applicable mistake, on configurations that cover every one, diagnoses as itself.
SELF_CONFIGS = {
    "seed": {"layers": [6, 4, 6]},
    "square_tanh": {"layers": [5, 5, 5], "activation": "tanh"},
    "relu_mean": {"layers": [6, 4, 6], "activation": "relu", "reduction": "mean"},
    "cross_entropy": {"layers": [6, 4, 6], "loss": "cross_entropy"},
    "sparse_decay": {"layers": [6, 4, 6], "sparsity_weight": 0.3, "weight_decay": 0.2},
    "tied_decay": {"layers": [6, 4, 6], "tied": True, "weight_decay": 0.1},
    "deep_tied": {"layers": [8, 6, 4, 6, 8], "tied": True, "activation": "tanh", "output_activation": "identity"},
}
SELF_CASES = [
    pytest.param(config_id, mistake_id, id=f"{config_id}-{mistake_id}")
    for config_id, config in SELF_CONFIGS.items()
    for mistake_id in applicable_mistakes(Autoencoder(**config))
]


def _diagnose_exactly(model, params, x, grads):
    reference = reference_gradient(model, params, x)
    tolerance = {k: rounding_tolerance(reference[k], grads[k]) for k in reference}
    return diagnose_model(model, params, x, grads, reference, tolerance)


@pytest.mark.parametrize("config_id, mistake_id", SELF_CASES)
def test_each_applicable_mistake_is_named_on_every_tensor_it_changes(config_id, mistake_id):
    model = Autoencoder(**SELF_CONFIGS[config_id])
    params = perturbed_params(model, 5)
    x = np.random.default_rng(5).random((3, model.layers[0]))
    mistake = MISTAKES[mistake_id]
    wrong = mistake.gradient(model, params, x)
    reference = reference_gradient(model, params, x)
    changed = {
        name for name in params
        if wrong[name].shape != reference[name].shape or not np.allclose(wrong[name], reference[name])
    }
    assert changed, "an applicable mistake must change some tensor"
    findings = _diagnose_exactly(model, params, x, wrong)
    named = {f.tensor for f in findings if f.details.get("mistake") == mistake_id
             or mistake_id in f.details.get("alternatives", [])}
    assert named == changed
    assert all(f.kind == mistake.kind for f in findings if f.details.get("mistake") == mistake_id)
    assert not [f for f in findings if f.kind == "mismatch" and "mistake" not in f.details]


@pytest.mark.parametrize("config_id", list(SELF_CONFIGS))
def test_a_correct_gradient_gets_no_finding(config_id):
    model = Autoencoder(**SELF_CONFIGS[config_id])
    params = perturbed_params(model, 7)
    x = np.random.default_rng(7).random((3, model.layers[0]))
    _, right = model.loss_and_grad(params, x)
    assert _diagnose_exactly(model, params, x, right) == []


# ----------------------------------------------------------------------- diagnose_model


@pytest.fixture
def seed_case():
    model = Autoencoder(layers=[6, 4, 6], bias=False)
    params = perturbed_params(model, 11)
    x = np.random.default_rng(11).random((2, 6))
    return model, params, x


def test_a_model_aware_finding_carries_the_mistake_and_both_fix_lines(seed_case):
    model, params, x = seed_case
    wrong = MISTAKES["hidden_slope_missing"].gradient(model, params, x)
    (finding,) = _diagnose_exactly(model, params, x, wrong)
    assert (finding.kind, finding.tensor) == ("wrong_activation_derivative", "W1")
    assert finding.details["mistake"] == "hidden_slope_missing"
    assert finding.details["numpy"] in finding.fix and finding.details["matlab"] in finding.fix
    assert "derivative" in finding.message


def test_a_transposed_shape_is_reported_and_transposed_back_before_matching(seed_case):
    model, params, x = seed_case
    wrong = flawed_backprop(model, params, x, Flaws(back_weight="mirror", transposed_outer=True))
    assert wrong["W1"].shape == (4, 6)
    kinds = {(f.kind, f.tensor) for f in _diagnose_exactly(model, params, x, wrong)}
    assert kinds == {("transposed", "W1"), ("wrong_backprop_matrix", "W1"), ("transposed", "W2")}


def test_structural_findings_still_come_through(seed_case):
    model, params, x = seed_case
    right = reference_gradient(model, params, x)
    halved = {"W1": right["W1"], "W2": right["W2"] / 2}
    (finding,) = _diagnose_exactly(model, params, x, halved)
    assert (finding.kind, finding.tensor) == ("scaled", "W2")
    assert "mistake" not in finding.details


def test_a_model_aware_match_takes_precedence_over_a_generic_mismatch():
    model = Autoencoder(layers=[6, 4, 6], sparsity_weight=0.5)
    params = perturbed_params(model, 2)
    x = np.random.default_rng(2).random((4, 6))
    wrong = MISTAKES["sparsity_missing"].gradient(model, params, x)
    findings = _diagnose_exactly(model, params, x, wrong)
    assert {(f.tensor, f.details.get("mistake")) for f in findings} == {
        ("W1", "sparsity_missing"), ("b1", "sparsity_missing")
    }


def test_unknown_numeric_entries_are_left_out_of_the_match(seed_case):
    model, params, x = seed_case
    wrong = MISTAKES["backprop_through_mirror_weight"].gradient(model, params, x)
    reference = reference_gradient(model, params, x)
    numeric = {k: v.copy() for k, v in reference.items()}
    numeric["W1"][::2] = np.nan  # a sampled check knows half the rows
    tolerance = {k: rounding_tolerance(reference[k], wrong[k]) for k in reference}
    findings = diagnose_model(model, params, x, wrong, numeric, tolerance)
    assert [(f.kind, f.tensor) for f in findings] == [("wrong_backprop_matrix", "W1")]


def test_gradient_of_an_unknown_tensor_is_an_input_error(seed_case):
    model, params, x = seed_case
    with pytest.raises(InputError, match="W9.*not a parameter"):
        diagnose_model(model, params, x, {"W9": np.zeros((6, 4))}, {"W9": np.zeros((6, 4))}, {"W9": 1e-8})


def test_gradient_of_a_wrong_shape_is_an_input_error(seed_case):
    model, params, x = seed_case
    with pytest.raises(InputError, match=r"W1 has shape \(5, 4\); expected \(6, 4\)"):
        diagnose_model(model, params, x, {"W1": np.zeros((5, 4))}, {"W1": np.zeros((6, 4))}, {"W1": 1e-8})


@pytest.mark.parametrize("option", [{"back_weight": "sideways"}, {"hidden_slope": "half"}, {"tied_uses": "none"}])
def test_unknown_flaws_are_input_errors(option):
    with pytest.raises(InputError, match=f"Flaws.{next(iter(option))} must be one of"):
        Flaws(**option)


def test_rounding_tolerance_follows_the_users_precision():
    reference = np.array([1.0, -2.0, 0.0])
    wide = rounding_tolerance(reference, reference.astype(np.float32))
    tight = rounding_tolerance(reference, reference)
    assert np.all(wide > 1e3 * tight)
    assert tight[2] > 0  # an entry that is zero still gets the tensor-scale part
    assert np.all(tight < 1e-7)


def test_check_model_names_the_mistakes_of_a_small_motivating_case(seed_case):
    model, params, x = seed_case
    x = x[:1]
    wrong = flawed_backprop(model, params, x, Flaws(back_weight="mirror", transposed_outer=True))
    report = gp.check_model(model, params, x, grad=wrong)
    assert not report.passed
    bugs = {(f.kind, f.tensor) for f in report.findings if f.is_bug}
    assert bugs == {("transposed", "W1"), ("wrong_backprop_matrix", "W1"), ("transposed", "W2")}
    right = gp.check_model(model, params, x, grad=reference_gradient(model, params, x))
    assert right.passed and not [f for f in right.findings if f.is_bug]


# --------------------------------------------------------- fix lines in the user's orientation


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("columns", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("out_in", [False, True], ids=["in_out", "out_in"])
def test_fix_lines_compute_the_right_arrays_as_the_user_holds_them(columns, out_in, tied):
    """Each corrected numpy line, evaluated on the user's arrays (examples as columns: every
    activation and error transposed; weights stored (n_out, n_in): each W transposed), gives
    the true quantity in the user's orientation, by the autograd oracle."""
    from gradproof.mistakes import Orientation, where_text

    config = {"layers": [5, 3, 5], "bias": False, "tied": tied}
    model = Autoencoder.from_config({**Autoencoder(5, 3).config(), **config})
    rng = np.random.default_rng(7)
    params = {k: rng.normal(size=s) for k, s in model.param_shapes().items()}
    x = rng.random((4, 5))
    W1 = params["W1"]
    W2 = W1.T if tied else params["W2"]
    a1 = 1 / (1 + np.exp(-(x @ W1)))  # (m, n1)
    z = 1 / (1 + np.exp(-(a1 @ W2)))  # (m, n2)
    d_s2 = (z - x) * z * (1 - z)
    d_s1 = (d_s2 @ W2.T) * a1 * (1 - a1)
    true = autograd_grad(lambda p: oracle_loss(config, p, x))(params)

    def user(array):
        return array.T if columns else array

    arrays = {"x": user(x), "a1": user(a1), "z": user(z), "d_s2": user(d_s2), "d_s1": user(d_s1)}
    arrays.update({k: v.T if out_in else v for k, v in params.items()})
    orientation = Orientation(columns=columns, out_in=out_in)
    hidden, _ = MISTAKES["hidden_slope_missing"].fix_lines(model, "W1", orientation)
    lhs, rhs = (side.strip() for side in hidden.split("#")[0].split("="))
    assert lhs == "d_s1"
    np.testing.assert_allclose(eval(rhs, {}, arrays), arrays["d_s1"], rtol=1e-12)
    outer_id = "tied_encoder_use_only" if tied else "transposed_outer_product"
    for name in model.param_shapes():
        line, _ = MISTAKES[outer_id].fix_lines(model, name, orientation)
        rhs = line.split("#")[0].split("=", 1)[1]
        want = true[name].T if out_in else true[name]
        np.testing.assert_allclose(eval(rhs, {}, arrays), want, rtol=1e-12)
    forward = {(False, False): "x @ W1", (False, True): "x @ W1.T",
               (True, False): "W1.T @ x", (True, True): "W1 @ x"}[columns, out_in]
    assert f"a1: layer 1's activation, sigmoid({forward})" in where_text(model, hidden, orientation)


@pytest.mark.parametrize("columns", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("out_in", [False, True], ids=["in_out", "out_in"])
def test_the_sparsity_fix_line_computes_the_hidden_error_with_its_where_text(columns, out_in):
    """The sparsity term's fix line, with beta, rho and rho_hat as its where-text defines
    them (rho_hat's shape differs when examples are columns), gives the hidden error whose
    outer product with the input is the true gradient of W1, by the autograd oracle."""
    from gradproof.mistakes import Orientation, where_text

    config = {"layers": [5, 3, 5], "bias": False, "sparsity_weight": 0.7, "sparsity_target": 0.2}
    model = Autoencoder.from_config({**Autoencoder(5, 3).config(), **config})
    rng = np.random.default_rng(11)
    params = {k: rng.normal(size=s) for k, s in model.param_shapes().items()}
    x = rng.random((6, 5))
    a1 = 1 / (1 + np.exp(-(x @ params["W1"])))
    z = 1 / (1 + np.exp(-(a1 @ params["W2"])))
    d_s2 = (z - x) * z * (1 - z)
    true = autograd_grad(lambda p: oracle_loss(config, p, x))(params)

    def user(array):
        return array.T if columns else array

    arrays = {"x": user(x), "a1": user(a1), "z": user(z), "d_s2": user(d_s2), "m": x.shape[0],
              **{k: v.T if out_in else v for k, v in params.items()}}
    orientation = Orientation(columns=columns, out_in=out_in)
    line, _ = MISTAKES["sparsity_missing"].fix_lines(model, "W1", orientation)
    meanings = dict(part.split(": ", 1) for part in where_text(model, line, orientation).split("; "))
    assert meanings["beta"] == "the sparsity weight (0.7)"
    assert meanings["rho"] == "the sparsity target (0.2)"
    arrays.update(beta=0.7, rho=0.2, rho_hat=eval(meanings["rho_hat"].partition("examples, ")[2], {}, arrays))
    lhs, rhs = (side.strip() for side in line.split("#")[0].split("=", 1))
    assert lhs == "d_s1"
    d_s1 = eval(rhs, {}, arrays)
    rows = d_s1.T if columns else d_s1
    np.testing.assert_allclose(x.T @ rows, true["W1"], rtol=1e-12)
