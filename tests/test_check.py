"""Specs for gradproof.check_gradient: right gradients pass, wrong ones fail, misuse is named.

The oracle is ``autograd``: a random composition of matmul, sin, exp, tanh and log1p on random
shapes is differentiated by autograd (the correct gradient), and the planted mistakes of the
motivating user (a factor, one wrong entry, a sign, a transpose) are made from that gradient.

A worked example, spelled out once: for J(W) = sum(sin(x @ W)) the gradient is
x.T @ cos(x @ W). ``check_gradient(J, grad, {"W": W})`` moves each W[i, j] by
h = cbrt(eps)·max(1, |W[i, j]|) ≈ 6e-6 both ways, compares (J(W+h) - J(W-h))/2h with
grad[i, j], and passes when they agree within 10x the estimated finite-difference error.
"""

from __future__ import annotations

import json
import warnings

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradproof as gp
from gradproof.errors import GradientMismatch, InputError
from gradproof.testing import assert_gradient_ok

MODES = ["auto", "full", "sample", "directional", "taylor"]

ACTIVATIONS = {
    "sin": anp.sin,
    "tanh": anp.tanh,
    "exp": lambda u: anp.exp(0.5 * u),
    "log1p": lambda u: anp.log1p(u**2),
    "softplus": lambda u: anp.log1p(anp.exp(u)),
}
REDUCTIONS = {
    "half_squares": lambda z, y: 0.5 * anp.sum((z - y) ** 2),
    "sin_sum": lambda z, y: anp.sum(anp.sin(z) * y),
    "log1p_sum": lambda z, y: anp.sum(anp.log1p(z**2)),
}


def make_problem(dims, batch, activations, reduction, biases, seed):
    """(loss, autograd gradient function, params) of a random layered composition."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, dims[0]))
    y = rng.normal(size=(batch, dims[-1]))
    params = {}
    for i, has_bias in enumerate(biases):
        params[f"W{i + 1}"] = rng.normal(size=(dims[i], dims[i + 1])) / np.sqrt(dims[i])
        if has_bias:
            params[f"b{i + 1}"] = 0.5 * rng.normal(size=dims[i + 1])

    def loss(p):
        z = x
        for i, name in enumerate(activations):
            z = anp.dot(z, p[f"W{i + 1}"])
            if f"b{i + 1}" in p:
                z = z + p[f"b{i + 1}"]
            z = ACTIVATIONS[name](z)
        return REDUCTIONS[reduction](z, y)

    return loss, autograd.grad(loss), params


def seeded_problem(seed):
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 4))
    return make_problem(
        dims=[int(d) for d in rng.integers(1, 7, size=depth + 1)],
        batch=int(rng.integers(1, 6)),
        activations=[str(a) for a in rng.choice(sorted(ACTIVATIONS), size=depth)],
        reduction=str(rng.choice(sorted(REDUCTIONS))),
        biases=[bool(b) for b in rng.random(depth) < 0.5],
        seed=seed,
    )


@st.composite
def problems(draw):
    depth = draw(st.integers(1, 3))
    return make_problem(
        dims=draw(st.lists(st.integers(1, 6), min_size=depth + 1, max_size=depth + 1)),
        batch=draw(st.integers(1, 5)),
        activations=draw(
            st.lists(st.sampled_from(sorted(ACTIVATIONS)), min_size=depth, max_size=depth)
        ),
        reduction=draw(st.sampled_from(sorted(REDUCTIONS))),
        biases=draw(st.lists(st.booleans(), min_size=depth, max_size=depth)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def kinds(report):
    return [f.kind for f in report.findings]


# ------------------------------------------------------------ right and wrong


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=12, deadline=None)
@given(problem=problems())
def test_correct_gradients_of_random_compositions_pass(mode, problem):
    loss, grad, params = problem
    report = gp.check_gradient(loss, grad, params, mode=mode)
    assert report.passed, str(report)


@pytest.mark.parametrize("mode", MODES)
def test_no_false_alarm_across_200_random_correct_cases(mode):
    checked, alarms = 0, []
    for seed in range(200):
        loss, grad, params = seeded_problem(seed)
        report = gp.check_gradient(loss, grad, params, mode=mode, seed=seed)
        checked += 1
        if not report.passed:
            alarms.append((seed, kinds(report)))
    assert checked == 200
    assert alarms == []


def scaled(g, name):
    return {**g, name: 1.01 * g[name]}


def one_entry_off(g, name):
    wrong = g[name].copy()
    # Off by much more than any entry: large enough for one random direction to see it, and
    # then the largest analytic magnitude, which every sample includes.
    wrong.flat[wrong.size // 2] += 1.0 + 10 * np.abs(wrong).max()
    return {**g, name: wrong}


def sign_flipped(g, name):
    return {key: -value for key, value in g.items()}


def transposed(g, name):
    return {**g, name: g[name].T.copy()}


BUGS = {
    "scaled": scaled,
    "one_entry_off": one_entry_off,
    "sign": sign_flipped,
    "transposed": transposed,
}


def square_problem(seed):
    """A composition whose first weight is square (so a transposed gradient keeps its shape)."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 6))
    return make_problem(
        dims=[d, d, int(rng.integers(1, 5))],
        batch=int(rng.integers(2, 6)),
        activations=[str(a) for a in rng.choice(sorted(ACTIVATIONS), size=2)],
        reduction=str(rng.choice(sorted(REDUCTIONS))),
        biases=[True, False],
        seed=seed,
    )


@pytest.mark.parametrize("bug", sorted(BUGS))
@pytest.mark.parametrize("mode", MODES)
def test_wrong_gradients_fail_in_every_mode(mode, bug):
    missed = []
    for seed in range(12):
        loss, grad, params = square_problem(seed)
        g = grad(params)
        wrong = BUGS[bug](g, "W1")
        report = gp.check_gradient(loss, wrong, params, mode=mode, seed=seed)
        if report.passed:
            missed.append(seed)
        else:
            assert any(f.is_bug for f in report.findings), str(report)
    assert missed == []


def test_a_failing_tensor_is_named_and_localised():
    loss, grad, params = square_problem(3)
    wrong = one_entry_off(grad(params), "W1")
    report = gp.check_gradient(loss, wrong, params, mode="full")
    failed = [t.name for t in report.tensors if not t.passed]
    assert failed == ["W1"]
    w1 = report.tensor("W1")
    assert w1.worst_index == np.unravel_index(params["W1"].size // 2, params["W1"].shape)
    assert w1.max_abs_error > w1.tolerance > w1.error_estimate > 0 and w1.step > 0
    assert any(f.tensor == "W1" and f.is_bug for f in report.findings)


def test_without_a_diagnosis_each_failing_tensor_gets_one_mismatch(monkeypatch):
    monkeypatch.setattr("gradproof.engine.verdict.diagnose", lambda *args: [])  # no pattern fits
    loss, grad, params = square_problem(1)
    report = gp.check_gradient(loss, sign_flipped(grad(params), "W1"), params, mode="full")
    bugs = [(f.kind, f.tensor) for f in report.findings if f.is_bug]
    assert bugs == [("mismatch", t.name) for t in report.tensors if not t.passed]
    assert "worst" in report.findings[-1].message


def test_taylor_reports_the_order_of_the_remainder():
    loss, grad, params = square_problem(2)
    right = gp.check_gradient(loss, grad, params, mode="taylor")
    wrong = gp.check_gradient(loss, scaled(grad(params), "W1"), params, mode="taylor")
    assert right.tensor("W1").taylor_order == pytest.approx(2.0, abs=0.25)
    order = wrong.tensor("W1").taylor_order
    assert order == pytest.approx(1.0, abs=0.25)
    assert f"(order {order:.2f})" in str(wrong)


def test_directional_mode_costs_two_evaluations_per_direction_whatever_the_size():
    x = np.random.default_rng(0).normal(size=(3, 400))
    loss = lambda w: float(np.sum(np.sin(x @ w)))  # noqa: E731 - one-line test loss
    grad = lambda w: x.T @ np.cos(x @ w)  # noqa: E731
    w = np.random.default_rng(1).normal(size=(400, 30))
    report = gp.check_gradient(loss, grad, w, mode="directional", directions=5)
    assert report.passed and report.tensors[0].probes == 5
    # 2 per direction, plus the base point twice, the noise estimate (8) and the final look.
    assert report.loss_evaluations <= 2 * 5 + 11 + 4


# --------------------------------------------------------- the default policy


def wide_problem(seed=0):
    """8050 entries: beyond the full-check budget."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 80))
    w = rng.normal(size=(80, 100)) / 9
    b = rng.normal(size=50)

    def loss(p):
        return float(np.sum(np.tanh(x @ p["W"])[:, :50] * p["b"]))

    def grad(p):
        t = np.tanh(x @ p["W"])
        d = np.zeros_like(t)
        d[:, :50] = (1 - t[:, :50] ** 2) * p["b"]
        return {"W": x.T @ d, "b": np.sum(t[:, :50], axis=0)}

    return loss, grad, {"W": w, "b": b}


def test_auto_checks_every_entry_of_a_small_problem():
    loss, grad, params = square_problem(0)
    report = gp.check_gradient(loss, grad, params)
    assert all(t.checked == t.size for t in report.tensors)


def test_auto_probes_rows_and_columns_of_a_large_tensor_and_pins_a_wrong_entry():
    loss, grad, params = wide_problem()
    right = gp.check_gradient(loss, grad, params)
    w = right.tensor("W")
    assert right.passed, str(right)
    assert w.probes >= 80 + 100 and w.checked < w.size
    assert right.tensor("b").checked == 50
    assert right.loss_evaluations < w.size / 2
    g = grad(params)
    g["W"][17, 33] += 0.05
    wrong = gp.check_gradient(loss, g, params)
    assert not wrong.passed and wrong.tensor("b").passed
    assert wrong.tensor("W").worst_index == (17, 33)


def block_problem(transpose):
    """A 300x17 weight (17x300 transposed) whose true gradient comes from autograd."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=(17, 5))
    hidden = 0.3 * rng.normal(size=(300, 17))

    def loss(p):
        h = p["hidden"].T if transpose else p["hidden"]
        return anp.sum(anp.tanh(anp.dot(h, a)))

    params = {"hidden": hidden.T if transpose else hidden}
    return loss, autograd.grad(loss)(params), params


@pytest.mark.parametrize(("transpose", "word"), [(False, "rows"), (True, "columns")])
def test_auto_states_a_block_of_wrong_rows_as_the_block(transpose, word):
    # The quoted case: rows 200-299 of a 300x17 weight wrong were "only 9 scattered entries".
    loss, grad, params = block_problem(transpose)
    g = grad["hidden"].copy()
    block = (slice(None), slice(200, 300)) if transpose else slice(200, 300)
    g[block] *= 1.5
    report = gp.check_gradient(loss, {"hidden": g}, params)
    [finding] = report.findings_of("partial")
    assert f"only {word} 200-299 of hidden are wrong" in finding.message
    assert finding.details[word] == list(range(200, 300))
    # The follow-up is bounded: one entry per line and a second per failing line.
    assert report.tensor("hidden").checked <= 32 + 300 + 100


def test_auto_follow_up_leaves_a_right_gradient_alone():
    loss, grad, params = block_problem(False)
    report = gp.check_gradient(loss, grad, params)
    assert report.passed and report.tensor("hidden").checked == 32


@pytest.mark.parametrize(("factor", "second"), [(0.5, "scaled"), (-1.0, "sign_flipped")])
def test_a_gradient_transposed_and_halved_is_named_as_both(factor, second):
    # The quoted case: transposed and halved together came back as `mismatch`.
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 5))

    def loss(p):
        return anp.sum(anp.tanh(anp.dot(p["W"], a)))

    params = {"W": rng.normal(size=(5, 5))}
    true = autograd.grad(loss)(params)["W"]
    report = gp.check_gradient(loss, {"W": factor * true.T}, params)
    [finding] = [f for f in report.findings if f.is_bug]
    assert finding.kind == "transposed"
    assert finding.details["combination"] == ["transposed", second]
    assert finding.fix.startswith("transpose the gradient of W and ")


# --------------------------------------------------------- params structures


@pytest.mark.parametrize("order", ["C", "F"])
def test_flat_vector_with_shapes_in_either_order(order):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 6))
    shapes = {"W1": (6, 3), "b1": (3,), "W2": (3, 2)}

    def unpack(theta):
        out, at = {}, 0
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            out[name] = anp.reshape(theta[at : at + size], shape, order=order)
            at += size
        return out

    def loss(theta):
        p = unpack(theta)
        return anp.sum(anp.tanh(anp.dot(anp.tanh(anp.dot(x, p["W1"]) + p["b1"]), p["W2"])) ** 2)

    theta = rng.normal(size=6 * 3 + 3 + 3 * 2)
    grad = autograd.grad(loss)
    report = gp.check_gradient(loss, grad, theta, shapes=shapes, order=order, mode="full")
    assert report.passed, str(report)
    assert [t.name for t in report.tensors] == ["W1", "b1", "W2"]
    # The same gradient read in the other order is wrong for W1 (b1 is 1-D, W2 too small to
    # care: only W1 is unrolled differently in a way that matters).
    other = "C" if order == "F" else "F"
    g = grad(theta)
    w1 = g[:18].reshape(6, 3, order=order).ravel(order=other)
    swapped_order = np.concatenate([w1, g[18:]])
    assert not gp.check_gradient(loss, swapped_order, theta, shapes=shapes, order=order).passed


def test_nested_dicts_and_lists():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 3))
    params = {
        "enc": {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)},
        "dec": [{"W": rng.normal(size=(2, 3))}, {"b": rng.normal(size=3)}],
    }

    def loss(p):
        h = anp.tanh(anp.dot(x, p["enc"]["W"]) + p["enc"]["b"])
        return anp.sum((anp.dot(h, p["dec"][0]["W"]) + p["dec"][1]["b"] - x) ** 2)

    report = gp.check_gradient(loss, autograd.grad(loss), params)
    assert report.passed, str(report)
    assert [t.name for t in report.tensors] == ["enc.W", "enc.b", "dec[0].W", "dec[1].b"]


def test_loss_may_return_value_and_gradient():
    loss, grad, params = square_problem(6)
    report = gp.check_gradient(lambda p: (loss(p), grad(p)), None, params)
    assert report.passed


def test_one_array_params():
    x = np.random.default_rng(2).normal(size=(4, 3))
    w = np.random.default_rng(3).normal(size=(3, 2))
    report = gp.check_gradient(
        lambda w: float(np.sum(np.exp(x @ w))), lambda w: x.T @ np.exp(x @ w), w
    )
    assert report.passed and report.tensors[0].name == "params"


def test_full_mode_reuses_one_buffer_and_spends_extra_steps_only_where_undecided():
    loss, grad, params = square_problem(7)
    seen = []

    def recording(p):
        seen.append((id(p), id(p["W1"]), p["W1"].base is p["b1"].base))
        return loss(p)

    report = gp.check_gradient(recording, grad, params, mode="full")
    size = sum(v.size for v in params.values())
    assert report.passed
    assert len({s[:2] for s in seen}) == 1 and all(s[2] for s in seen)
    # Two per entry; the base point twice, 8 for the noise estimate and a last look on top.
    assert report.loss_evaluations == len(seen) <= 2 * size + 11 + 4


# ------------------------------------------------------------------ float32


def float32_problem():
    rng = np.random.default_rng(8)
    x = rng.random((30, 12))

    def loss(p):
        a = 1 / (1 + anp.exp(-(anp.dot(x.astype(p["W1"].dtype), p["W1"]) + p["b1"])))
        z = 1 / (1 + anp.exp(-anp.dot(a, p["W2"])))
        return anp.sum(0.5 * (z - x.astype(p["W1"].dtype)) ** 2)

    params = {
        "W1": rng.uniform(-1, 1, (12, 6)).astype(np.float32),
        "b1": np.zeros(6, dtype=np.float32),
        "W2": rng.uniform(-1, 1, (6, 12)).astype(np.float32),
    }
    return loss, params


@pytest.mark.parametrize("mode", MODES)
def test_float32_gradients_pass_with_a_precision_finding(mode):
    loss, params = float32_problem()
    g32 = autograd.grad(loss)(params)  # computed in float32 arithmetic
    assert all(v.dtype == np.float32 for v in g32.values())
    report = gp.check_gradient(loss, g32, params, mode=mode)
    assert report.passed, str(report)
    precision = report.findings_of("precision")
    assert {f.tensor for f in precision} == {"loss", "W1", "b1", "W2"}
    assert "float64 copy" in precision[0].message
    assert "float32" in precision[1].message
    wrong = gp.check_gradient(loss, scaled(g32, "W2"), params, mode=mode)
    assert not wrong.passed


def test_a_loss_that_refuses_float64_is_evaluated_in_float32_and_says_so():
    loss, params = float32_problem()
    g32 = autograd.grad(loss)(params)

    def strict(p):
        if p["W1"].dtype != np.float32:
            raise TypeError("expected float32 params")
        return loss(p)

    report = gp.check_gradient(strict, g32, params, mode="full")
    assert report.passed, str(report)
    message = report.findings_of("precision")[0].message
    assert "raised on a float64 copy" in message and "TypeError" in message and "resolve" in message
    assert not gp.check_gradient(strict, {k: 2 * v for k, v in g32.items()}, params).passed


def float32_autoencoder(n_visible=12, n_hidden=5):
    """A float32 Autoencoder's loss and gradient: the model rounds a float64 copy of its params
    back to float32, so the loss only resolves float32 steps."""
    model = gp.Autoencoder(n_visible, n_hidden, dtype="float32")
    x = np.random.default_rng(5).random((4, n_visible)).astype(np.float32)
    return (lambda p: model.loss(p, x)), (lambda p: model.loss_and_grad(p, x)[1]), model

def rounds_to_float32(report):
    """The loss-level precision finding says the loss was evaluated in float32, and why."""
    [note] = [f for f in report.findings_of("precision") if f.tensor == "loss"]
    return "rounds a float64 copy to float32" in note.message and note.details["evaluated_in"] == (
        "float32"
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_float32_autoencoder_passes_and_its_loss_is_evaluated_in_float32(mode):
    loss, grad, model = float32_autoencoder()
    params = model.init_params(0)
    report = gp.check_gradient(loss, grad, params, mode=mode)
    assert report.passed, str(report)
    assert rounds_to_float32(report), str(report)


@pytest.mark.parametrize("mode", ["sample", "directional"])
def test_a_float32_mnist_autoencoder_passes_with_numeric_gradients_that_are_not_zero(mode):
    # The reported case: float64-sized steps (about 6e-6) vanished in the model's float32
    # rounding, and every numeric gradient read 0.
    model = gp.Autoencoder(784, 16, dtype="float32")
    x, _ = gp.load_mnist(limit=2, dtype=np.float32)
    params = model.init_params(0)
    report = gp.check_gradient(
        lambda p: model.loss(p, x), lambda p: model.loss_and_grad(p, x)[1], params, mode=mode
    )
    assert report.passed, str(report)
    assert rounds_to_float32(report)
    assert all(t.step > 1e-3 for t in report.tensors)  # cbrt(eps32) ≈ 4.9e-3, not cbrt(eps64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bug", ["scaled", "transposed"])
def test_a_planted_bug_in_a_float32_autoencoder_still_fails(mode, bug):
    loss, grad, model = float32_autoencoder()
    params = model.init_params(0)
    plant = {
        "scaled": lambda g: {**g, "W2": 1.5 * g["W2"]},
        "transposed": lambda g: transposed(g, "W1"),
    }[bug]
    report = gp.check_gradient(loss, lambda p: plant(grad(p)), params, mode=mode)
    assert not report.passed, str(report)
    kinds = {f.kind for f in report.findings if f.is_bug}
    assert kinds & {"scaled", "transposed", "mismatch"}


def float32_numpy_problem(params_dtype):
    """A plain numpy loss that casts its params to float32 inside, and its float32 gradient."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, 4)).astype(np.float32)

    def loss(p):
        w = np.asarray(p["w"], dtype=np.float32)
        return float(np.sum(np.tanh(x @ w) ** 2))

    def grad(p):
        w = np.asarray(p["w"], dtype=np.float32)
        t = np.tanh(x @ w)  # (6, 3)
        return {"w": x.T @ (2 * t * (1 - t**2))}  # (4, 3), like w; float32

    return loss, grad, {"w": rng.normal(size=(4, 3)).astype(params_dtype)}


@pytest.mark.parametrize("mode", MODES)
def test_a_numpy_loss_that_casts_to_float32_passes_and_a_wrong_gradient_fails(mode):
    loss, grad, params = float32_numpy_problem(np.float32)
    report = gp.check_gradient(loss, grad, params, mode=mode)
    assert report.passed, str(report)
    assert rounds_to_float32(report)
    wrong = gp.check_gradient(loss, lambda p: {"w": 1.5 * grad(p)["w"]}, params, mode=mode)
    assert not wrong.passed


def test_float64_params_that_the_loss_rounds_to_its_float32_gradients_precision_pass():
    loss, grad, params = float32_numpy_problem(np.float64)
    report = gp.check_gradient(loss, grad, params, mode="full")
    assert report.passed, str(report)
    assert rounds_to_float32(report)
    assert not report.findings_of("precision")[0].message.startswith("params")


def test_a_loss_that_computes_in_float64_keeps_its_float64_copy():
    loss, params = float32_problem()
    report = gp.check_gradient(loss, autograd.grad(loss)(params), params, mode="sample")
    assert report.findings_of("precision")[0].details["evaluated_in"] == "float64"
    assert report.tensor("W1").step < 1e-4  # steps sized for float64: cbrt(eps64) ≈ 6e-6


def test_a_step_that_vanishes_in_the_losss_precision_measures_nothing_rather_than_zero():
    from gradproof.finite_diff import Rule
    from gradproof.engine.objective import Objective
    from gradproof.params import parse_params
    from gradproof.engine.blackbox import BlackBoxEvaluator
    from gradproof.engine.staging import measure
    from gradproof.engine.probes import UNKNOWN, Context, Measured, entry_probes

    loss, grad, params = float32_numpy_problem(np.float32)
    layout, flat = parse_params(params, None, "C")
    objective = Objective(loss, grad, layout, flat)
    objective.detect_rounding([np.dtype(np.float32)], np.random.default_rng(0))
    assert objective.buffer.dtype == np.float32
    gradient = layout.unroll(layout.match_gradient(grad(params))[0])
    center = objective.base.astype(np.float64)
    rounding = {"w": 0.0}, {"w": 1.0}  # eps_grad, gmax
    context = Context(objective, gradient, center, objective.j0, 0.0, Rule(), *rounding)
    spec = layout.spec("w")
    # Steps of 1e-10·max(1, |θ|), far below float32's spacing: every move rounds away.
    probes = entry_probes(spec, np.arange(spec.size), center, 1e-30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 along the way either
        result = Measured.empty(probes, context.rounding_g(probes))
        interrupted = measure([result], BlackBoxEvaluator(context), context.rule)
    assert not interrupted
    assert np.all(result.status == UNKNOWN) and np.all(np.isnan(result.numeric))


# ----------------------------------------------------------- bad input


@pytest.fixture
def sine():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(4, 5))
    params = {"W": rng.normal(size=(5, 3)), "b": rng.normal(size=3)}

    def loss(p):
        return float(np.sum(np.sin(x @ p["W"] + p["b"])))

    def grad(p):
        c = np.cos(x @ p["W"] + p["b"])
        return {"W": x.T @ c, "b": c.sum(axis=0)}

    return loss, grad, params, x


@pytest.mark.parametrize(
    ("returned", "words"),
    [
        (lambda x: np.sum(np.ones((3, 784)), axis=0), r"finite scalar.*an array of shape \(784,\)"),
        (lambda x: None, "returned None"),
        (lambda x: (1.0, 2.0, 3.0), "a tuple of 3 items"),
        (lambda x: "0.5", "a str"),
        (lambda x: 1 + 2j, "complex"),
    ],
    ids=["matlab-sum", "none", "tuple", "string", "complex"],
)
def test_a_loss_that_is_not_a_scalar_is_described(sine, returned, words):
    _, grad, params, x = sine
    with pytest.raises(InputError, match=words):
        gp.check_gradient(lambda p: returned(x), grad, params)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_loss_at_the_point_is_an_error(sine, value):
    _, grad, params, _ = sine
    with pytest.raises(InputError, match=f"returned {value} at the given parameters"):
        gp.check_gradient(lambda p: value, grad, params)


def test_a_non_finite_loss_near_the_point_names_the_entry(sine):
    loss, grad, params, _ = sine
    start = params["W"][1, 2]

    def fragile(p):
        return np.nan if p["W"][1, 2] > start + 1e-7 else loss(p)

    with pytest.raises(InputError, match=r"returned nan with W\[1, 2\] moved by \+"):
        gp.check_gradient(fragile, grad, params, mode="full")


def test_nan_in_params_names_the_tensor_and_first_index(sine):
    loss, grad, params, _ = sine
    bad = {**params, "b": np.array([0.0, np.nan, np.inf])}
    with pytest.raises(InputError, match=r"b holds nan at b\[1\] \(2 non-finite"):
        gp.check_gradient(loss, grad, bad)


def test_nan_in_the_gradient_names_the_tensor_and_first_index(sine):
    loss, grad, params, _ = sine
    g = grad(params)
    g["W"][3, 1] = np.inf
    with pytest.raises(InputError, match=r"gradient of W holds inf at W\[3, 1\]"):
        gp.check_gradient(loss, g, params)


def test_missing_and_extra_gradient_tensors_are_listed(sine):
    loss, grad, params, _ = sine
    g = grad(params)
    with pytest.raises(InputError, match=r"missing \['b'\] and has extra \['bias'\]"):
        gp.check_gradient(loss, {"W": g["W"], "bias": g["b"]}, params)


def test_a_transposed_gradient_shape_is_a_finding_and_compared_after_transposing(sine):
    loss, grad, params, _ = sine
    g = grad(params)
    report = gp.check_gradient(loss, {"W": g["W"].T, "b": g["b"]}, params)
    assert kinds(report)[0] == "transposed" and report.findings[0].tensor == "W"
    assert "shape (3, 5), the transpose of the parameter's (5, 3)" in report.findings[0].message
    # Right values, wrong shape: the tensor fails, and its reason says the values agree.
    result = report.tensor("W")
    assert not result.passed and not report.passed
    assert result.verdict == "transposed" and result.gradient_shape == (3, 5)
    assert "its values agree with" in result.reason
    entry = report.to_dict()["tensors"][0]
    assert (entry["passed"], entry["verdict"], entry["reason"]) == (False, "transposed", result.reason)
    wrong = gp.check_gradient(loss, {"W": 2 * g["W"].T, "b": g["b"]}, params)
    assert not wrong.tensor("W").passed and "its values differ from" in wrong.tensor("W").reason
    assert wrong.tensor("W").verdict == "FAIL, transposed"


def test_any_other_gradient_shape_is_an_error_with_both_shapes(sine):
    loss, grad, params, _ = sine
    g = grad(params)
    with pytest.raises(InputError, match=r"W has shape \(4, 3\); expected \(5, 3\)"):
        gp.check_gradient(loss, {"W": g["W"][:4], "b": g["b"]}, params)


def test_a_loss_that_changes_params_in_place_is_an_error(sine):
    loss, grad, params, _ = sine

    def mutating(p):
        p["W"][0, 1] += 1.0
        return loss(p)

    with pytest.raises(
        InputError, match=r"the loss changed its params argument in place: W\[0, 1\]"
    ):
        gp.check_gradient(mutating, grad, params)
    assert params["W"][0, 1] == sine[2]["W"][0, 1]


def test_a_loss_that_replaces_a_tensor_is_an_error(sine):
    loss, grad, params, _ = sine

    def replacing(p):
        p["b"] = p["b"] * 1.0
        return loss(p)

    with pytest.raises(InputError, match="replaced or removed b"):
        gp.check_gradient(replacing, grad, params)


def test_a_gradient_function_that_changes_params_is_an_error(sine):
    loss, grad, params, _ = sine

    def mutating(p):
        p["b"][2] = 0.0
        return grad(p)

    with pytest.raises(InputError, match=r"the gradient function changed .* b\[2\]"):
        gp.check_gradient(loss, mutating, params)


def test_a_nondeterministic_loss_is_a_finding_not_a_failure(sine):
    loss, grad, params, _ = sine
    rng = np.random.default_rng(0)
    report = gp.check_gradient(lambda p: loss(p) + 1e-9 * rng.random(), grad, params)
    assert "nondeterministic" in kinds(report)
    assert "two evaluations" in report.findings_of("nondeterministic")[0].message
    assert report.passed, str(report)


def test_a_loss_with_drifting_hidden_state_is_nondeterministic(sine):
    loss, grad, params, _ = sine
    calls = []

    def drifting(p):
        calls.append(1)
        return loss(p) + (1e-6 if len(calls) > 5 else 0.0)

    report = gp.check_gradient(drifting, grad, params, mode="full")
    assert "nondeterministic" in kinds(report)


def relu_problem(offset):
    """sum(relu(x @ W + b)) where one pre-activation sits `offset` away from its kink."""
    rng = np.random.default_rng(10)
    x = np.abs(rng.normal(size=(4, 5)))
    x[0] = 0.0  # the first example's pre-activations are exactly b
    params = {"W": rng.normal(size=(5, 3)), "b": np.array([offset, 1.0, 2.0])}

    def loss(p):
        return float(np.sum(np.maximum(x @ p["W"] + p["b"], 0.0)))

    def grad(p):
        on = (x @ p["W"] + p["b"] > 0).astype(float)
        return {"W": x.T @ on, "b": on.sum(axis=0)}

    return loss, grad, params


@pytest.mark.parametrize("mode", MODES)
def test_a_kink_at_the_point_is_a_finding_not_a_failure(mode):
    loss, grad, params = relu_problem(0.0)
    report = gp.check_gradient(loss, grad, params, mode=mode)
    assert report.passed, str(report)
    assert report.findings_of("kink")[0].tensor == "b"
    if mode in ("full", "auto"):
        # relu'(0) = 0 takes the left slope: the one-sided slope on that side confirms it.
        assert report.tensor("b").excluded == 0 and report.tensor("b").checked == 3
        assert report.findings_of("kink")[0].details["one_sided"] == 1
        assert "one-sided slope" in report.findings_of("kink")[0].message


def test_a_kink_within_the_step_is_rechecked_with_a_smaller_step():
    loss, grad, params = relu_problem(2e-6)  # the step, about 6e-6, crosses it
    report = gp.check_gradient(loss, grad, params, mode="full")
    assert report.passed, str(report)
    kink = report.findings_of("kink")[0]
    assert kink.details["agreed"] >= 1 and kink.details["excluded"] == 0
    assert report.tensor("b").checked == 3


@pytest.mark.parametrize("offset", [1e-9, -1e-9, 1e-7, -2e-6])
def test_a_wrong_gradient_near_a_kink_still_fails(offset):
    # Every step down to h/64³ crosses a kink 1e-9 away; the side that does not is smooth, and
    # both sides agree once the one-sided steps are below the kink's distance.
    loss, grad, params = relu_problem(offset)
    g = grad(params)
    g["b"][0] = 5.0  # outside both one-sided slopes (1 and 2)
    report = gp.check_gradient(loss, g, params, mode="full")
    assert not report.tensor("b").passed
    assert report.tensor("b").worst_index == (0,)


def test_a_value_outside_both_slopes_at_the_point_fails_once_moved_lines_part_the_kinks():
    # At the point itself a black box cannot tell this from several units at their kink at once
    # (relu(z) - relu(-z) has slope 1 on both sides, while relu'(0) = 0 gives 0), and excludes
    # it; scanned along b[0] at moved points, the one kink there shows alone, and 5 is neither
    # side's slope.
    loss, grad, params = relu_problem(0.0)
    g = grad(params)
    g["b"][0] = 5.0
    report = gp.check_gradient(loss, g, params, mode="full")
    assert report.findings_of("kink")[0].details["at_point"] == 1
    assert not report.tensor("b").passed
    (finding,) = report.findings_of("mismatch")
    assert finding.details["index"] == "[0]" and len(finding.details["jumps"]) == 1


def mean_squares_problem(seed):
    """J(x) = w·mean((x - t)²) over a (64, 48) x: smooth, its gradient 2w(x - t)/N."""
    rng = np.random.default_rng(seed)
    x, t = rng.normal(size=(64, 48)), rng.normal(size=(64, 48))
    w = 0.7697867137638703

    def loss(p):
        return w * np.mean((p["x"] - t) ** 2)

    return loss, 2 * w * (x - t) / x.size, {"x": x}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 3])
def test_a_smooth_loss_has_no_kink_whether_its_gradient_is_right_or_scaled(mode, seed):
    # Regression: with the 1/N missing, the gradient's error times the rounding of the stored
    # direction (different at each step) once passed for a kink and an unresolved probe.
    loss, right, params = mean_squares_problem(seed)
    report = gp.check_gradient(loss, {"x": right}, params, mode=mode)
    assert report.passed and "kink" not in kinds(report), str(report)
    wrong = gp.check_gradient(loss, {"x": right * right.size}, params, mode=mode)
    assert not wrong.passed
    assert "kink" not in kinds(wrong), str(wrong)
    assert wrong.tensor("x").excluded == 0
    if mode in ("auto", "full", "sample"):
        assert "scaled" in kinds(wrong), str(wrong)


def test_a_loss_that_raises_says_what_and_where(sine):
    loss, grad, params, _ = sine

    def broken(p):
        raise ZeroDivisionError("boom")

    with pytest.raises(
        InputError, match="the loss raised ZeroDivisionError: boom at the given parameters"
    ):
        gp.check_gradient(broken, grad, params)
    start = params["W"][1, 2]

    def later(p):
        if p["W"][1, 2] < start - 1e-7:
            raise ValueError("log of a negative number")
        return loss(p)

    with pytest.raises(
        InputError, match=r"raised ValueError: log of a negative number with W\[1, 2\] moved by -"
    ):
        gp.check_gradient(later, grad, params, mode="full")


def test_a_gradient_function_that_raises_is_an_input_error(sine):
    loss, _, params, _ = sine
    with pytest.raises(InputError, match="the gradient function raised KeyError"):
        gp.check_gradient(loss, lambda p: p["missing"], params)


def test_grad_none_needs_a_loss_returning_value_and_gradient(sine):
    loss, _, params, _ = sine
    with pytest.raises(InputError, match=r"must return \(value, gradient\); it returned a float"):
        gp.check_gradient(loss, None, params)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"mode": "exhaustive"}, "mode must be one of"),
        ({"samples": 0}, "samples must be an integer >= 1"),
        ({"directions": 2.5}, "directions must be an integer"),
        ({"rtol": -1.0}, "rtol must be a finite number >= 0"),
        ({"safety": 0}, "safety must be"),
        ({"progress": 3}, "progress must be a callable"),
        ({"order": "F"}, "applies only to a flat vector"),
    ],
    ids=["mode", "samples", "directions", "rtol", "safety", "progress", "order"],
)
def test_bad_options_are_input_errors(sine, options, words):
    loss, grad, params, _ = sine
    with pytest.raises(InputError, match=words):
        gp.check_gradient(loss, grad, params, **options)


def test_a_loss_that_is_not_callable_is_an_input_error(sine):
    _, grad, params, _ = sine
    with pytest.raises(InputError, match="loss must be a callable"):
        gp.check_gradient(3.0, grad, params)


# ------------------------------------------------ interrupt, progress, report


def interrupting(loss, after):
    calls = []

    def wrapped(p):
        calls.append(1)
        if len(calls) > after:
            raise KeyboardInterrupt
        return loss(p)

    return wrapped


def test_an_interrupt_returns_the_partial_report():
    loss, grad, params = wide_problem()
    report = gp.check_gradient(interrupting(loss, 300), grad, params, mode="full")
    assert report.partial and not report.passed
    assert 0 < sum(t.checked for t in report.tensors) < sum(t.size for t in report.tensors)
    assert "partial" in str(report) and report.to_dict()["partial"] is True


def test_an_interrupt_before_any_comparison_leaves_everything_unchecked(sine):
    loss, grad, params, _ = sine
    report = gp.check_gradient(interrupting(loss, 1), grad, params)
    assert report.partial and not report.passed
    assert all(t.checked == 0 for t in report.tensors)
    assert "not checked" in str(report) and "INCOMPLETE" in str(report)


def test_progress_is_reported_in_loss_evaluations(sine):
    loss, grad, params, _ = sine
    calls = []
    report = gp.check_gradient(
        loss, grad, params, mode="full", progress=lambda d, t: calls.append((d, t))
    )
    done = [d for d, _ in calls]
    assert len(calls) >= 2 and done == sorted(done)
    assert all(0 <= d <= t for d, t in calls)
    assert done[-1] >= report.loss_evaluations - 2


def test_report_to_dict_is_json_with_the_documented_keys(sine):
    loss, grad, params, _ = sine
    g = grad(params)
    data = json.loads(json.dumps(gp.check_gradient(loss, {**g, "b": -g["b"]}, params).to_dict()))
    assert data["passed"] is False
    tensor = data["tensors"][1]
    assert {
        "name",
        "shape",
        "checked",
        "max_abs_error",
        "max_rel_error",
        "passed",
        "worst_index",
        "step",
        "error_estimate",
        "tolerance",
    } <= set(tensor)
    assert tensor["name"] == "b" and tensor["shape"] == [3] and tensor["passed"] is False
    assert {"kind", "tensor", "message"} <= set(data["findings"][0])


def test_the_text_report_is_a_compact_table_not_columns_of_numbers():
    loss, grad, params = wide_problem()
    g = grad(params)
    report = gp.check_gradient(loss, {k: 3 * v for k, v in g.items()}, params, mode="full")
    text = str(report)
    assert len(text.splitlines()) <= 3 + len(report.tensors) + 2 * len(report.findings) + 1
    assert "FAILED" in text and "tolerance:" in text


def test_classic_rtol_atol_rule_replaces_the_estimate(sine):
    loss, grad, params, _ = sine
    off = scaled(grad(params), "W")
    assert not gp.check_gradient(loss, off, params).passed
    lenient = gp.check_gradient(loss, off, params, rtol=0.05, atol=1e-8)
    assert lenient.passed and "0.05" in lenient.rule
    assert not gp.check_gradient(loss, off, params, rtol=1e-3).passed


def test_assert_gradient_ok_raises_with_the_report(sine):
    loss, grad, params, _ = sine
    assert assert_gradient_ok(loss, grad, params).passed
    with pytest.raises(AssertionError) as caught:
        assert_gradient_ok(loss, sign_flipped(grad(params), "W"), params)
    assert isinstance(caught.value, GradientMismatch)
    assert "gradient check (auto): FAILED" in str(caught.value)


# ------------------------------------------------------- the motivating user


def motivating_backprop(x, *, decoder_transposed, encoder_sent_back):
    """The seed 784-200-784 sigmoid autoencoder's hand-written backprop, with the motivating
    user's two mistakes available: the decoder gradient as error_0.T @ a (784 x 200, the
    transpose of W2) and the hidden error sent back through W1 instead of W2.T."""
    sigmoid = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731

    def loss(p):
        z = sigmoid(sigmoid(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"])
        return float(np.sum(0.5 * (z - x) ** 2))

    def grad(p):
        a = sigmoid(x @ p["W1"] + p["b1"])  # (batch, 200)
        z = sigmoid(a @ p["W2"] + p["b2"])  # (batch, 784)
        error_0 = (z - x) * z * (1 - z)  # (batch, 784)
        d_w2 = error_0.T @ a if decoder_transposed else a.T @ error_0  # (784, 200) vs (200, 784)
        back = p["W1"] if encoder_sent_back else p["W2"].T  # both (784, 200)
        error_1 = (error_0 @ back) * a * (1 - a)  # (batch, 200)
        return {"W1": x.T @ error_1, "b1": error_1.sum(0), "W2": d_w2, "b2": error_0.sum(0)}

    return loss, grad


@pytest.mark.slow
def test_auto_finds_both_mistakes_of_the_motivating_user():
    rng = np.random.default_rng(0)
    x = (rng.random((10, 784)) < 0.2) * rng.random((10, 784))  # sparse like MNIST
    r = 4 * np.sqrt(6 / (200 + 784))
    params = {
        "W1": rng.uniform(-r, r, (784, 200)), "b1": np.zeros(200),
        "W2": rng.uniform(-r, r, (200, 784)), "b2": np.zeros(784),
    }
    loss, right = motivating_backprop(x, decoder_transposed=False, encoder_sent_back=False)
    assert gp.check_gradient(loss, right, params).passed
    _, wrong = motivating_backprop(x, decoder_transposed=True, encoder_sent_back=True)
    report = gp.check_gradient(loss, wrong, params)
    assert [f.tensor for f in report.findings_of("transposed")][:1] == ["W2"]
    # Right values in the wrong shape: the tensor fails as transposed, its values agree.
    w2 = report.tensor("W2")
    assert not w2.passed and w2.values_passed and w2.verdict == "transposed"
    assert not report.tensor("W1").passed and not report.tensor("b1").passed
    assert report.loss_evaluations < 10_000


def test_a_kink_note_counts_only_the_steps_that_crossed_the_kink():
    # relu(p) + p**2/2 has one kink, at p[0] = 0; the wrong gradient (twice the true one) makes
    # every other entry fail, and those confirmations at smaller steps cross no kink.
    params = np.array([0.0, 1, 2, 3, 4, -1, -2, 0.5])

    def loss(p):
        return float(np.sum(np.maximum(p, 0)) + 0.5 * np.sum(p**2))

    def wrong_grad(p):
        return 2 * ((p > 0) + p)

    report = gp.check_gradient(loss, wrong_grad, params, mode="full")
    kinks = report.findings_of("kink")
    assert len(kinks) == 1
    assert kinks[0].details["rechecked"] == 1
    assert kinks[0].message.startswith("1 finite-difference step(s)")
    assert [f.kind for f in report.findings if f.is_bug] == ["scaled"]


@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=60),  # few levels: many ties
    st.integers(1, 70),
)
def test_auto_picks_its_largest_entries_as_a_full_stable_sort_would(levels, count):
    from gradproof.engine.blackbox import _all_but, _largest

    values = np.array(levels, dtype=float) / 4
    expected = np.argsort(-values, kind="stable")[:count]
    np.testing.assert_array_equal(_largest(values, count), expected)
    np.testing.assert_array_equal(
        _all_but(values.size, expected), np.setdiff1d(np.arange(values.size), expected)
    )
