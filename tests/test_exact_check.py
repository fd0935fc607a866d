"""Spec for check_model and its engine, gradproof.engine.exact.local_delta.

Every local difference must be the true central difference of the model's objective: on random
entries of every configuration it agrees with the black box (the whole loss recomputed by
``model.loss`` with one entry moved by the same step, in float64) to 1e-9 of the tensor's
scale, beyond the black box's own rounding. Its error estimate must hold against an independent
oracle (autograd), and the check built on it must pass correct gradients and fail wrong ones
with the right finding.

A worked tiny example, for orientation: layers [2, 1, 2], W1 = [[1], [0]], x = [[1, 0]], no
biases, W2 = [[0, 0]]. Moving W1[1, 0] changes nothing (its pixel is 0), so its difference is
exactly 0 and costs nothing. Moving W1[0, 0] by ±h moves the hidden pre-activation s = 1 to
1 ± h; the hidden unit changes by t = σ(1 ± h) - σ(1), which reaches the outputs through W2
(zero here), so the data term does not change either: the local difference is exactly 0, while
a black-box difference of two totals would show rounding noise of size eps * J / h.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from autograd import grad as autograd_grad
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import oracle_objective

import gradproof as gp
from gradproof.errors import InputError
from gradproof.nn import ACTIVATIONS, LOSSES, Autoencoder
from gradproof.check import MIN_CHUNK_BYTES, check_model
from gradproof.engine.exact.evaluator import entry_steps
from gradproof.engine.exact.local_delta import EPS, LocalDifferences
from gradproof.nn.losses import kl_divergence

N = 7  # visible units of the test networks

CONFIGS = {
    "seed": dict(layers=[N, 4, N]),
    "no_bias": dict(layers=[N, 4, N], bias=False),
    "tied": dict(layers=[N, 4, N], tied=True),
    "tanh": dict(layers=[N, 4, N], activation="tanh", output_activation="tanh"),
    "relu": dict(layers=[N, 4, N], activation="relu", output_activation="identity"),
    "identity": dict(layers=[N, 4, N], activation="identity"),
    "cross_entropy": dict(layers=[N, 4, N], loss="cross_entropy"),
    "decay": dict(layers=[N, 4, N], weight_decay=0.3),
    "sparse": dict(layers=[N, 4, N], sparsity_weight=0.7, sparsity_target=0.1),
    "mean": dict(layers=[N, 4, N], reduction="mean"),
    "deep": dict(layers=[N, 5, 3, 5, N]),
    "deep_tied": dict(layers=[N, 5, 3, 5, N], tied=True, activation="tanh"),
    "deep_all": dict(layers=[N, 5, 3, 5, N], tied=True, weight_decay=0.2, sparsity_weight=0.5,
                     loss="cross_entropy", reduction="mean", bias=False),
}
BATCHES = [1, 4]
ACTIVATION_NAMES = list(ACTIVATIONS)


@st.composite
def model_configs(draw) -> dict:
    """Any valid combination of options, on random small widths (N visible units)."""
    tied = draw(st.booleans())
    hidden = draw(st.lists(st.integers(1, 6), min_size=1, max_size=2))
    # Tied stacks are mirrored around their middle layer: [N, 4, N], [N, 5, 3, 5, N].
    layers = [N, *hidden, *hidden[-2::-1], N] if tied else [N, *hidden, N]
    loss = draw(st.sampled_from(sorted(LOSSES)))
    config = dict(
        layers=layers, tied=tied, loss=loss,
        activation=draw(st.sampled_from(ACTIVATION_NAMES)),
        output_activation=(
            "sigmoid" if loss == "cross_entropy" else draw(st.sampled_from(ACTIVATION_NAMES))
        ),
        bias=draw(st.booleans()), reduction=draw(st.sampled_from(["sum", "mean"])),
        weight_decay=draw(st.sampled_from([0.0, 0.2])),
    )
    if config["activation"] == "sigmoid" and draw(st.booleans()):
        config["sparsity_weight"] = 0.5
    return config


def make_case(config: dict, batch: int, seed: int = 0):
    """A model, parameters with nonzero biases, and inputs with exact zeros and repeats."""
    rng = np.random.default_rng(seed)
    model = Autoencoder(**config)
    params = model.init_params(seed)
    for name in params:
        if name.startswith("b"):
            params[name] = rng.uniform(-0.5, 0.5, params[name].shape)
    # Pixel-like inputs: a fifth exactly zero, values on 8 levels so that some repeat.
    x = rng.integers(1, 9, size=(batch, N)) / 8.0
    x[rng.random(x.shape) < 0.2] = 0.0
    return model, params, x


def black_box(model, params, x, name, index, steps) -> np.ndarray:
    """(J(θ + h e) - J(θ - h e)) / 2h with the whole loss recomputed, one entry at a time."""
    out = []
    for i, h in zip(index, steps):
        moved = {k: v.copy() for k, v in params.items()}
        moved[name].flat[i] += h
        j_plus = model.loss(moved, x)
        moved[name].flat[i] -= 2 * h
        out.append((j_plus - model.loss(moved, x)) / (2 * h))
    return np.array(out)


def random_entries(size: int, rng: np.random.Generator, count: int = 12) -> np.ndarray:
    return np.sort(rng.choice(size, size=min(size, count), replace=False))


# ----- the engine: true central differences ---------------------------------------------------


@pytest.mark.parametrize("factor", [1, 1000], ids=lambda f: f"step{f}h")
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch{b}")
@pytest.mark.parametrize("config", list(CONFIGS), ids=str)
def test_local_differences_equal_black_box_central_differences(config, batch, factor):
    # At 1000 h the truncation (about 1e-5 relative) would show any linearisation.
    model, params, x = make_case(CONFIGS[config], batch)
    engine = LocalDifferences(model, params, x)
    j = model.loss(params, x)
    rng = np.random.default_rng(1)
    for name, value in params.items():
        steps = factor * entry_steps(engine, name)
        index = random_entries(value.size, rng)
        local = engine.differences(name, index, steps[index]).central / (2 * steps[index])
        reference = black_box(model, params, x, name, index, steps[index])
        # 1e-9 of the tensor's scale, beyond the black box's own rounding (eps*|J| per value).
        scale = max(np.max(np.abs(reference)), 1e-3)
        allowed = 1e-9 * scale + 4 * EPS * abs(j) / (2 * steps[index])
        assert np.all(np.abs(local - reference) <= allowed), (name, local - reference, allowed)


@pytest.mark.parametrize("config", ["seed", "tied", "sparse", "deep_all"], ids=str)
def test_one_sided_changes_equal_black_box(config):
    model, params, x = make_case(CONFIGS[config], 3)
    engine = LocalDifferences(model, params, x)
    j0 = model.loss(params, x)
    for name, value in params.items():
        index = np.arange(value.size)
        h = np.full(index.size, 1e-3)
        d = engine.differences(name, index, h)
        for i in index:
            moved = {k: v.copy() for k, v in params.items()}
            moved[name].flat[i] += 1e-3
            plus = model.loss(moved, x) - j0
            moved[name].flat[i] -= 2e-3
            minus = model.loss(moved, x) - j0
            assert d.plus[i] == pytest.approx(plus, rel=1e-9, abs=1e-14 * abs(j0))
            assert d.minus[i] == pytest.approx(minus, rel=1e-9, abs=1e-14 * abs(j0))


@pytest.mark.parametrize("config", ["seed", "deep", "sparse", "tied"], ids=str)
def test_shared_units_give_the_same_values_as_entries_alone(config):
    # Many entries at once share units (equal shifts); one at a time, nothing is shared.
    model, params, x = make_case(CONFIGS[config], 4)
    engine = LocalDifferences(model, params, x)
    for name, value in params.items():
        steps = entry_steps(engine, name)
        index = np.arange(value.size)
        together = engine.differences(name, index, steps).central
        alone = [engine.differences(name, index[i:i + 1], steps[i:i + 1]).central[0] for i in index]
        np.testing.assert_array_equal(together, alone)


def test_the_worked_example():
    model = Autoencoder(layers=[2, 1, 2], bias=False)
    params = {"W1": np.array([[1.0], [0.0]]), "W2": np.array([[0.0, 0.0]])}
    x = np.array([[1.0, 0.0]])
    engine = LocalDifferences(model, params, x)
    assert engine.objective() == pytest.approx(0.25, rel=1e-15)  # 0.5 * ((0.5-1)^2 + 0.5^2)
    w1 = engine.differences("W1", np.arange(2), np.full(2, 1e-5))
    assert np.all(w1.plus == 0) and np.all(w1.minus == 0)  # exactly: nothing reaches the loss
    w2 = engine.differences("W2", np.arange(2), np.full(2, 1e-5))
    # dJ/dW2[0, j] = a1 * (z_j - x_j) * z_j (1 - z_j), with a1 = σ(1) and z = (0.5, 0.5)
    a1 = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(w2.central / 2e-5, a1 * np.array([-0.5, 0.5]) * 0.25, rtol=1e-9)


def test_an_entry_whose_inputs_are_all_zero_changes_only_the_weight_decay():
    model, params, x = make_case(dict(layers=[N, 4, N], weight_decay=0.25), 3)
    x[:, 2] = 0.0  # pixel 2 is dark in every example: W1[2, :] reaches nothing
    engine = LocalDifferences(model, params, x)
    index = 2 * 4 + np.arange(4)  # W1[2, 0..3]
    h = np.full(4, 1e-3)
    d = engine.differences("W1", index, h)
    # (λ/2)((θ+h)² - (θ-h)²) = 2λθh exactly
    np.testing.assert_allclose(d.central, 2 * 0.25 * params["W1"][2] * h, rtol=1e-14)


@settings(max_examples=40, deadline=None)
@given(config=model_configs(), batch=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_numeric_gradient_is_within_its_error_estimate_of_autograd(config, batch, seed):
    model, params, x = make_case(config, batch, seed)
    engine = LocalDifferences(model, params, x)
    truth = autograd_grad(lambda p: oracle_objective(model, p, x))(params)
    for name, value in params.items():
        h = entry_steps(engine, name)
        index = np.arange(value.size)
        first = engine.differences(name, index, h)
        second = engine.differences(name, index, 2 * h)
        numeric = first.central / (2 * h)
        # Richardson: the h and 2h errors differ by 3ch², so |N(h) - N(2h)|/3 estimates truncation.
        estimate = first.rounding / (2 * h) + np.abs(numeric - second.central / (4 * h)) / 3
        smooth = ~(first.kink | second.kink)
        error = np.abs(numeric - truth[name].ravel())
        floor = 1e-12 * np.max(np.abs(truth[name]), initial=0.0)
        # Within the rule's default safety factor (10) times the estimate, as the verdicts use it.
        assert np.all((error <= 10 * estimate + floor)[smooth]), (name, error, estimate)


@pytest.mark.parametrize("loss", list(LOSSES), ids=str)
def test_loss_entries_add_up_to_the_registry_value(loss):
    rng = np.random.default_rng(2)
    x, s = rng.random((3, 5)), rng.normal(scale=3, size=(3, 5))
    s[0, :2] = [-60.0, 60.0]  # saturated outputs: softplus must neither overflow nor lose them
    z = 1 / (1 + np.exp(-s))
    values = LOSSES[loss].entries(x, z, s)
    assert values.shape == (3, 5)
    assert np.all(np.isfinite(values))
    assert values.sum() == pytest.approx(LOSSES[loss].value(x, z, s), rel=1e-13)
    out = np.empty((3, 5))
    assert LOSSES[loss].entries(x, z, s, out=out) is out
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize(
    "loss", [name for name, loss in LOSSES.items() if loss.row_change], ids=str
)
def test_row_change_is_the_change_of_the_summed_loss(loss):
    # Oracle: the difference of the two sums in exact rational arithmetic.
    rng = np.random.default_rng(3)
    x = rng.random(6)
    z = 1 / (1 + np.exp(-rng.normal(scale=3, size=6)))
    dz = rng.normal(size=(4, 6)) * np.array([[1e-9], [1e-6], [1e-3], [0.3]])
    def half_square(value: Fraction) -> Fraction:
        return value * value / 2

    exact = np.array([
        float(sum(
            half_square(Fraction(zj) + Fraction(dj) - Fraction(xj))
            - half_square(Fraction(zj) - Fraction(xj))
            for zj, dj, xj in zip(z, row, x)
        ))
        for row in dz
    ])
    out = np.empty(4)
    got = LOSSES[loss].row_change(z - x, dz, out=out)
    assert got is out
    # A few roundings of each product and of the sum: no difference of two sums is formed.
    allowed = 8 * EPS * (np.abs(dz) * (np.abs(z - x) + np.abs(dz))).sum(axis=1)
    assert np.all(np.abs(got - exact) <= allowed)


@pytest.mark.parametrize("config", ["seed", "tied", "sparse"], ids=str)
def test_hot_output_path_gives_the_generic_paths_values(config, monkeypatch):
    # Without the output series, which would take these units off both paths.
    model, params, x = make_case(CONFIGS[config], 4)
    fast = LocalDifferences(model, params, x, series=False)
    without = replace(ACTIVATIONS["sigmoid"], negated_forward=None)
    monkeypatch.setitem(ACTIVATIONS, "sigmoid", without)
    generic = LocalDifferences(model, params, x, series=False)
    assert fast._negated_output is not None and generic._negated_output is None
    for name in ("W1", "b1"):
        index = np.arange(params[name].size)
        steps = entry_steps(fast, name)
        a, b = fast.differences(name, index, steps), generic.differences(name, index, steps)
        np.testing.assert_allclose(a.plus, b.plus, rtol=1e-12, atol=1e-18)
        np.testing.assert_allclose(a.minus, b.minus, rtol=1e-12, atol=1e-18)
        np.testing.assert_array_equal(a.rounding, b.rounding)


def test_a_local_objective_that_drifts_from_the_model_is_caught(monkeypatch):
    # If the elementwise loss ever stopped matching the registry's, no check may run on it.
    squared = LOSSES["squared"]
    doubled = replace(squared, entries=lambda x, z, s, out=None: 2 * squared.entries(x, z, s))
    monkeypatch.setitem(LOSSES, "squared", doubled)
    model, params, x = make_case(CONFIGS["seed"], 2)
    with pytest.raises(RuntimeError, match="no longer matches"):
        check_model(model, params, x)


def test_local_objective_is_the_model_objective():
    model, params, x = make_case(CONFIGS["deep_all"], 4)
    local = LocalDifferences(model, params, x).objective()
    assert local == pytest.approx(model.loss(params, x), rel=1e-13)
    rho_hat = np.array([0.2, 0.5])
    expected = 0.1 * np.log(0.1 / rho_hat) + 0.9 * np.log(0.9 / (1 - rho_hat))
    np.testing.assert_allclose(kl_divergence(0.1, rho_hat), expected, rtol=1e-15)


# ----- check_model --------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch{b}")
@pytest.mark.parametrize("config", list(CONFIGS), ids=str)
def test_check_model_passes_the_models_own_gradient(config, batch):
    model, params, x = make_case(CONFIGS[config], batch)
    report = gp.check_model(model, params, x)
    assert report.passed, str(report)
    assert report.mode == "exact"
    assert [t.name for t in report.tensors] == list(model.param_shapes())
    for t in report.tensors:
        assert t.checked + t.excluded == t.size


@settings(max_examples=30, deadline=None)
@given(config=model_configs(), batch=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_check_model_never_fails_the_models_own_gradient(config, batch, seed):
    model, params, x = make_case(config, batch, seed)
    report = check_model(model, params, x)
    assert report.passed, str(report)


def test_check_model_fails_a_scaled_gradient_with_a_scaled_finding():
    model, params, x = make_case(CONFIGS["seed"], 3)
    _, grads = model.loss_and_grad(params, x)
    grads["W1"] = 2 * grads["W1"]
    report = check_model(model, params, x, grad=grads)
    assert not report.passed
    assert not report.tensor("W1").passed
    assert all(report.tensor(name).passed for name in ("b1", "W2", "b2"))
    assert [f.tensor for f in report.findings_of("scaled")] == ["W1"]


def test_a_wrong_backprop_of_the_model_itself_is_diagnosed_too(monkeypatch):
    # Without grad=, check_model judges the model's own backprop; were it wrong, the
    # diagnosis recomputes that gradient for the model-aware step.
    model, params, x = make_case(CONFIGS["seed"], 3)
    right = Autoencoder.loss_and_grad

    def halved_decoder(self, params, x):
        value, grads = right(self, params, x)
        return value, dict(grads, W2=grads["W2"] / 2)

    monkeypatch.setattr(Autoencoder, "loss_and_grad", halved_decoder)
    report = check_model(model, params, x)
    assert not report.tensor("W2").passed
    assert [(f.kind, f.tensor) for f in report.findings if f.is_bug] == [("scaled", "W2")]


def test_check_model_pins_down_one_wrong_entry():
    model, params, x = make_case(CONFIGS["seed"], 3)
    _, grads = model.loss_and_grad(params, x)
    grads["W2"][2, 5] += 1e-4
    report = check_model(model, params, x, grad=grads)
    result = report.tensor("W2")
    assert not result.passed
    assert result.worst_index == (2, 5)
    assert result.max_abs_error == pytest.approx(1e-4, rel=1e-4)


def test_check_model_explains_the_motivating_users_two_bugs():
    # The seed user's code, no biases: the decoder gradient built as error.T @ a (the
    # transpose of W2's shape) and the hidden error sent back through the encoder W1 instead
    # of the decoder's transpose W2.T.
    model = Autoencoder(layers=[N, 4, N], bias=False)
    params = model.init_params(3)
    x = np.random.default_rng(3).random((4, N))
    a = 1 / (1 + np.exp(-(x @ params["W1"])))
    z = 1 / (1 + np.exp(-(a @ params["W2"])))
    error_out = (z - x) * z * (1 - z)  # (batch, n_visible)
    error_hidden = (error_out @ params["W1"]) * a * (1 - a)  # should be error_out @ W2.T
    user = {"W1": x.T @ error_hidden, "W2": error_out.T @ a}  # W2's is (n_visible, n_hidden)
    report = gp.check_model(model, params, x, grad=user)
    assert not report.passed
    # Right values once transposed back, but a wrong shape never passes.
    assert report.tensor("W2").verdict == "transposed" and not report.tensor("W2").passed
    assert "its values agree with" in report.tensor("W2").reason
    assert not report.tensor("W1").passed
    assert [f.tensor for f in report.findings_of("transposed")] == ["W2"]
    [backprop] = report.findings_of("wrong_backprop_matrix")
    assert backprop.tensor == "W1"
    assert backprop.details["mistake"] == "backprop_through_mirror_weight"
    assert {(f.kind, f.tensor) for f in report.findings if f.is_bug} == {
        ("transposed", "W2"), ("wrong_backprop_matrix", "W1")
    }


def test_float32_model_is_checked_in_float64_with_precision_findings():
    model, params, x = make_case(dict(CONFIGS["seed"], dtype="float32"), 3)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    report = check_model(model, params, x)
    assert report.passed, str(report)
    precision = report.findings_of("precision")
    assert {f.tensor for f in precision} == {"loss", "W1", "b1", "W2", "b2"}
    assert "float64" in precision[0].message


def test_relu_kink_at_the_point_is_excluded_not_failed():
    model = Autoencoder(layers=[N, 4, N], activation="relu")
    params = model.init_params(4)  # zero biases
    x = np.random.default_rng(4).random((2, N))
    x[1] = 0.0  # the second example's hidden pre-activations are exactly 0: a kink at the point
    report = check_model(model, params, x)
    assert report.passed, str(report)
    assert [f.tensor for f in report.findings_of("kink")] == ["b1"]
    assert report.tensor("b1").excluded > 0
    assert report.tensor("b1").checked + report.tensor("b1").excluded == params["b1"].size


def test_interrupt_returns_a_partial_report():
    model, params, x = make_case(CONFIGS["seed"], 2)
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if len(calls) == 2:
            raise KeyboardInterrupt

    report = check_model(model, params, x, progress=progress)
    assert report.partial
    assert not report.passed
    assert report.tensor("W1").checked > 0
    assert report.tensor("W2").checked == 0


def test_progress_counts_perturbed_points_up_to_the_total():
    model, params, x = make_case(CONFIGS["deep"], 3)
    calls = []
    report = check_model(model, params, x, progress=lambda done, total: calls.append((done, total)))
    done = [c[0] for c in calls]
    assert done == sorted(done)
    assert calls[-1][0] == calls[-1][1]
    assert calls[-1][0] >= 2 * sum(t.size for t in report.tensors)


@pytest.mark.parametrize("config", ["seed", "deep_all"], ids=str)
def test_chunks_do_not_change_the_result(config):
    layers = [24, 12, 6, 12, 24] if "deep" in config else [24, 12, 24]
    model = Autoencoder(**dict(CONFIGS[config], layers=layers))
    params = model.init_params(5)
    x = np.random.default_rng(5).integers(0, 4, size=(5, 24)) / 3.0
    base = check_model(model, params, x)
    other = check_model(model, params, x, max_chunk_bytes=MIN_CHUNK_BYTES)
    assert [t.to_dict() for t in other.tensors] == [t.to_dict() for t in base.tensors]


def test_local_sums_beat_a_difference_of_totals_on_one_mnist_image():
    # The point of the local sums: on the seed network and a real image, the numeric gradient
    # is far closer to the truth than a black-box difference of two totals can be.
    images, _ = gp.load_mnist(limit=1)
    model = Autoencoder(784, 12)
    params = model.init_params(0)
    truth = autograd_grad(lambda p: oracle_objective(model, p, images))(params)
    engine = LocalDifferences(model, params, images)
    h = entry_steps(engine, "W2")
    numeric = engine.differences("W2", np.arange(h.size), h).central / (2 * h)
    relative = np.max(np.abs(numeric - truth["W2"].ravel())) / np.max(np.abs(truth["W2"]))
    scale = np.max(np.abs(truth["W2"]))
    naive_rounding = EPS * model.loss(params, images) / (2 * np.max(h)) / scale
    assert relative < 1e-9
    assert relative < naive_rounding


# ----- bad input ----------------------------------------------------------------------------


@pytest.fixture
def seed_case():
    return make_case(CONFIGS["seed"], 2)


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(model="not a model"), ["Autoencoder", "check_gradient"]),
        (dict(params={"W1": np.zeros((N, 4))}), ["missing", "b1"]),
        (dict(x=np.zeros((2, N + 1))), ["x", "shape"]),
        (dict(grad="not a dict"), ["grad", "dict"]),
        (dict(grad={"W1": np.zeros((N, 4))}), ["missing"]),
        (dict(grad="wrong shape"), ["W2", "shape", "(5, 5)"]),
        (dict(max_chunk_bytes=10), ["max_chunk_bytes", str(MIN_CHUNK_BYTES)]),
        (dict(max_chunk_bytes=True), ["max_chunk_bytes"]),
        (dict(series="yes"), ["series", "True or False"]),
        (dict(progress="yes"), ["progress", "callable"]),
        (dict(rtol=-1.0), ["rtol"]),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else None,
)
def test_bad_input_raises_input_error_naming_it(seed_case, change, words):
    model, params, x = seed_case
    kwargs = dict(model=model, params=params, x=x)
    kwargs.update(change)
    if kwargs.get("grad") == "wrong shape":
        _, grads = model.loss_and_grad(params, x)
        kwargs["grad"] = dict(grads, W2=np.zeros((5, 5)))
    with pytest.raises(InputError) as info:
        check_model(kwargs.pop("model"), kwargs.pop("params"), kwargs.pop("x"), **kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("scale", [1e80, 1e200])
def test_a_diverged_network_is_refused_not_passed(scale):
    # Weights that blew up in training: the objective is finite (1e160) or overflows to inf;
    # either way the error estimates cannot be formed, and a silent pass would be a lie.
    model = Autoencoder(layers=[N, 4, N], output_activation="identity")
    params = model.init_params(0)
    params["W2"] = params["W2"] * scale
    x = np.ones((2, N))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing leaks before the refusal
        with pytest.raises(InputError) as info:
            check_model(model, params, x)
    assert "objective" in str(info.value) and "check_gradient" in str(info.value)


def test_step_moves_every_pre_activation_by_about_cbrt_eps():
    model, params, x = make_case(CONFIGS["seed"], 1)
    engine = LocalDifferences(model, params, x)
    h = entry_steps(engine, "W1").reshape(N, 4)
    lit = x[0] > 0
    shifts = h[lit] * x[0][lit][:, None]
    expected = np.cbrt(EPS) * np.maximum(1, np.abs(params["W1"][lit] * x[0][lit][:, None]))
    np.testing.assert_allclose(shifts, expected, rtol=1e-15)
    # An entry no input reaches keeps the plain rule of check_gradient.
    plain = np.cbrt(EPS) * np.maximum(1, np.abs(params["W1"][~lit]))
    np.testing.assert_allclose(h[~lit], plain, rtol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_failing_tensor_the_catalogue_cannot_explain_still_gets_a_finding(seed):
    # A float32 gradient off by 1e-4 of its largest entry in one entry fails the exact check,
    # but is within the model-aware diagnosis's own float32 tolerance: the structural
    # diagnosis of the measurements must still say where it fails.
    model = Autoencoder(n_visible=20, n_hidden=6, dtype="float32")
    params = model.init_params(seed)
    x = np.random.default_rng(seed).random((3, 20)).astype(np.float32)
    grad = {name: g.copy() for name, g in model.loss_and_grad(params, x)[1].items()}
    grad["W1"][2, 3] += 1e-4 * np.abs(grad["W1"]).max()
    report = gp.check_model(model, params, x, grad=grad)
    assert [t.name for t in report.tensors if not t.passed] == ["W1"]
    assert [f.kind for f in report.findings if f.is_bug and "W1" in f.tensors] == ["partial"]
