"""The independent oracle and what the specs that compare a network with it share.

The Autoencoder objective is written from the math with autograd: it never calls gradproof's
forward or backward code and reads only the model's options. Used by the tests and by
bench/stress.py to confirm gradients in float64.
"""

from __future__ import annotations

import math

import autograd.numpy as anp
import numpy as np
from autograd import grad as autograd_grad

from gradproof.nn import Autoencoder

ORACLE_ACTIVATIONS = {
    "sigmoid": lambda s: anp.exp(-anp.logaddexp(0.0, -s)),  # no overflow, accurate at both ends
    "tanh": anp.tanh,
    # slope 0 at the kink, as the model's relu derivative read from its output
    "relu": lambda s: anp.where(s > 0, s, 0.0),
    "identity": lambda s: s,
}


def random_params(shapes: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random parameters for ``shapes``, named ``W...`` (weights) or otherwise (biases)."""
    # Variance-preserving weights keep pre-activations moderate, so that saturated sigmoids
    # do not make 1 - σ(s) (and with it the oracle itself) inaccurate.
    return {
        name: rng.uniform(-1, 1, shape) * math.sqrt(3 / shape[0])
        if name.startswith("W") else rng.uniform(-0.5, 0.5, shape)
        for name, shape in shapes.items()
    }


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest entry error relative to the largest expected entry."""
    err = float(np.max(np.abs(np.asarray(actual) - expected)))
    scale = float(np.max(np.abs(expected)))
    return err / scale if scale > 0 else err


def oracle_objective(model: Autoencoder, params: dict, x: np.ndarray):
    """The Autoencoder objective written from the math with autograd.numpy."""
    n = model.n_layers
    a, code, s = x, None, None
    for k in range(1, n + 1):
        w = params[f"W{n + 1 - k}"].T if model.tied and k > n // 2 else params[f"W{k}"]
        s = anp.dot(a, w) + (params[f"b{k}"] if model.bias else 0.0)
        a = ORACLE_ACTIVATIONS[model.activations[k - 1]](s)
        if k == model.code_layer:
            code = a
    if model.loss_name == "squared":
        data = 0.5 * anp.sum((a - x) ** 2)
    else:
        data = anp.sum(anp.logaddexp(0.0, s) - x * s)
    total = data / x.shape[0] if model.reduction == "mean" else data
    total = total + 0.5 * model.weight_decay * sum(
        anp.sum(params[k] ** 2) for k in params if k.startswith("W")
    )
    if model.sparsity_weight:
        rho, rho_hat = model.sparsity_target, anp.mean(code, axis=0)
        kl = rho * anp.log(rho / rho_hat) + (1 - rho) * anp.log((1 - rho) / (1 - rho_hat))
        total = total + model.sparsity_weight * anp.sum(kl)
    return total


def oracle_gradient(model: Autoencoder, params: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """The float64 gradient at the float64 values of ``params`` and ``x``."""
    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x64 = np.asarray(x, dtype=np.float64)
    return autograd_grad(lambda p: oracle_objective(model, p, x64))(p64)


def oracle_error(grads: dict, truth: dict) -> float:
    """The largest error of any tensor, relative to that tensor's largest true entry, or to
    1e-12 of the largest entry of all where a whole tensor's gradient is smaller (the
    backprop flushes dJ/ds below about 1e-30 to 0 on purpose); inf where the oracle itself
    is not finite: it confirms nothing there."""
    worst = 0.0
    overall = max(float(np.max(np.abs(t), initial=0.0)) for t in truth.values())
    for name, g in grads.items():
        if not np.all(np.isfinite(truth[name])):
            return float("inf")
        scale = max(float(np.max(np.abs(truth[name]), initial=0.0)), 1e-12 * overall)
        err = float(np.max(np.abs(np.asarray(g, np.float64) - truth[name]), initial=0.0))
        worst = max(worst, err / scale if scale > 0 else err)
    return worst
