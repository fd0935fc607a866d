"""Spec: a tied weight's step stays where its decoder use is linear in the step.

The encoder use of a tied weight ``W[r, c]`` moves the input ``a_{p-1}[c]`` that its decoder
use multiplies, so the decoder's pre-activation moves by ``h (a_{p-1}[c] + Δ) + θ Δ``; its
part ``h Δ`` is quadratic in the step. With every value about 1e-9 the input-scaled step was
about 1e4 to 6e4, that part of order 1, and correct gradients failed. The step limit
(``tied_steps``) keeps ``Δ`` within ``cbrt(eps)`` of ``|a_{p-1}[c]|`` or the step at the
classic ``cbrt(eps) max(1, |θ|)``; its first-order ``Δ`` comes from the diagonal of a
Jacobian, checked here against the autograd oracle.
"""

from __future__ import annotations

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import elementwise_grad
from oracle import ORACLE_ACTIVATIONS, oracle_error, oracle_gradient

import gradproof as gp
from gradproof.engine.exact.evaluator import entry_steps
from gradproof.engine.exact.local_delta import EPS, LocalDifferences
from gradproof.engine.exact.tied_steps import decoder_input_slopes

STACKS = {
    "2": [6, 5, 6],
    "4": [7, 5, 3, 5, 7],
    "6": [8, 6, 5, 3, 5, 6, 8],
}


def _oracle_forward(model: gp.Autoencoder, params: dict, a: anp.ndarray, start: int,
                    stop: int) -> anp.ndarray:
    """a_stop from a_{start-1}, written from the math (tied decoders as the encoder's W.T)."""
    n = model.n_layers
    for k in range(start, stop + 1):
        w = params[f"W{n + 1 - k}"].T if k > n // 2 else params[f"W{k}"]
        a = ORACLE_ACTIVATIONS[model.activations[k - 1]](anp.dot(a, w) + params[f"b{k}"])
    return a


def _tied_model(layers: list[int], activations: list[str], seed: int, scale: float = 1.0
                ) -> tuple[gp.Autoencoder, dict, np.ndarray]:
    """A tied stack with random parameters; its biases and inputs ``scale`` times their size."""
    rng = np.random.default_rng(seed)
    model = gp.Autoencoder(layers=layers, activation=activations, tied=True,
                           output_activation="identity")
    params = {name: value if name.startswith("W") else scale * rng.normal(size=value.shape)
              for name, value in model.init_params(seed).items()}
    return model, params, scale * rng.uniform(0, 1, (3, layers[0]))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("depth", list(STACKS))
def test_decoder_input_slopes_match_the_oracle(depth, seed):
    layers = STACKS[depth]
    names = ["tanh", "sigmoid", "identity"]
    activations = [names[(seed + k) % 3] for k in range(len(layers) - 2)]
    model, params, x = _tied_model(layers, activations, seed)
    base = LocalDifferences(model, params, x)
    n = model.n_layers
    for layer in range(1, n // 2 + 1):
        partner = n + 1 - layer
        below = _oracle_forward(model, params, x, 1, layer - 1)
        w = params[f"W{layer}"]
        s = np.dot(below, w) + params[f"b{layer}"]  # (batch, n_k): the encoder's pre-activations
        record = ORACLE_ACTIVATIONS[model.activations[layer - 1]]
        # Examples are independent: the diagonal of each example's Jacobian, unit by unit.
        # (Where the two layers meet at the code, the forward from a_k to a_{p-1} is empty.)
        expected = np.column_stack([
            elementwise_grad(lambda v, c=c: _oracle_forward(
                model, params, record(v), layer + 1, partner - 1)[:, c])(s)[:, c]
            for c in range(s.shape[1])
        ])
        np.testing.assert_allclose(decoder_input_slopes(base, layer), expected,
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("scale", [1e-9, 1e-6, 1.0], ids=lambda s: f"{s:g}")
@pytest.mark.parametrize("depth", ["2", "4"])
@pytest.mark.parametrize("activation", ["tanh", "identity", "sigmoid"])
def test_the_step_keeps_the_decoder_input_put(activation, depth, scale):
    # At the step taken, each example's decoder input moves (measured by a forward pass) by at
    # most cbrt(eps) of itself, or the step is no longer than the classic one: the decoder's
    # pre-activation moves by h (a + Δ) + θ Δ, its quadratic part h Δ within cbrt(eps) of the
    # larger linear one.
    layers = STACKS[depth]
    model, params, x = _tied_model(layers, [activation] * (len(layers) - 2), 3, scale)
    base = LocalDifferences(model, params, x)
    n = model.n_layers
    for layer in range(1, n // 2 + 1):
        name, partner = f"W{layer}", n + 1 - layer
        theta = params[name]
        steps = entry_steps(base, name).reshape(theta.shape)
        before = _oracle_forward(model, params, x, 1, partner - 1)  # (batch, n_k)
        for (r, c), h in np.ndenumerate(steps):
            moved = {**params, name: theta.copy()}
            moved[name][r, c] += h
            delta = np.abs(_oracle_forward(model, moved, x, 1, partner - 1)[:, c] - before[:, c])
            classic = h <= np.cbrt(EPS) * max(1.0, abs(theta[r, c])) * (1 + 1e-12)
            put = np.all(delta <= 1.01 * np.cbrt(EPS) * np.abs(before[:, c]) + 1e-300)
            assert classic or put, (name, r, c, h, float(np.max(delta / np.abs(before[:, c]))))


def _tiny_inputs_case(layers: list[int], activation: str, scale: float, seed: int
                      ) -> tuple[gp.Autoencoder, dict, np.ndarray]:
    """A tied stack with an identity output, biases about 1e-9 and inputs of about ``scale``:
    every value tiny, and each tied weight's encoder input nonzero."""
    rng = np.random.default_rng(seed)
    model = gp.Autoencoder(layers=layers, activation=activation, output_activation="identity",
                           tied=True, reduction="mean")
    params = {k: v if k.startswith("W") else 1e-9 * rng.normal(size=v.shape)
              for k, v in model.init_params(seed).items()}
    return model, params, scale * np.abs(rng.normal(size=(2, layers[0])))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [1e-9, 1e-6], ids=lambda s: f"{s:g}")
@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
@pytest.mark.parametrize("layers", [[16, 8, 16], [16, 8, 4, 8, 16]], ids=["2", "4"])
def test_tied_stacks_on_tiny_inputs_pass(layers, activation, scale, seed):
    # Before the step limit, 7 of these 36 correct gradients failed (the relu two-layer
    # stacks at both scales, a deeper relu stack at 1e-6): a step of about 1e3 to 1e4 moved
    # each hidden unit by cbrt(eps), across its kink at 1e-9, and the smaller steps after it
    # still carried the quadratic part's truncation; 28 more passed only because their
    # stated threshold was above 1e-4 of a tied weight's largest entry.
    model, params, x = _tiny_inputs_case(layers, activation, scale, seed)
    _, grads = model.loss_and_grad(params, x)
    assert oracle_error(grads, oracle_gradient(model, params, x)) < 1e-10
    report = gp.check_model(model, params, x)
    assert report.passed, [t.name for t in report.tensors if not t.passed]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("activation", ["tanh", "identity"])
@pytest.mark.parametrize("layers", [[16, 8, 16], [16, 8, 4, 8, 16]], ids=["2", "4"])
def test_tied_stacks_on_tiny_inputs_still_catch_an_error(layers, activation, seed):
    # Each tied weight's stated threshold is below 1e-4 of its largest entry (3e7 to 2e8 times
    # it before the step limit), and an error of 1e-4 in that entry is caught.
    model, params, x = _tiny_inputs_case(layers, activation, 1e-9, seed)
    _, grads = model.loss_and_grad(params, x)
    report = gp.check_model(model, params, x)
    for name in (k for k in params if k.startswith("W")):
        assert report.tensor(name).detectable_relative < 1e-4, name
        wrong = {**grads, name: grads[name].copy()}
        wrong[name].flat[np.argmax(np.abs(grads[name]))] *= 1 + 1e-4
        assert not gp.check_model(model, params, x, grad=wrong).tensor(name).passed, name
