"""The rounding a low-precision backprop of an Autoencoder carries beyond its sums.

Contract: ``derivative_rounding(model, params, x) -> {name: array}`` gives, per gradient entry
(shaped like the parameter) and in units of the backprop's eps, the error it gets from its
rounded forward values and from activation derivatives computed from rounded outputs.
``check_model`` adds it to each entry's gradient rounding, so that a float32 backprop's
allowance covers its real rounding where units saturate.

Forward, each pre-activation sum carries rounding of about eps times the magnitudes summed
(|a| @ |W| + |b|) and each activation eps |a|, passed on through |f'| and |W|. Backward, f'(a)
is off by up to ``Activation.derivative_rounding`` eps (absolute), so dJ/ds = dJ/da f'(a) is
off by that times |dJ/da|; these errors travel back like dJ/ds itself, and a weight's gradient
a.T @ dJ/ds also gets its input's error times dJ/ds. The roundings are independent, so they are
added in quadrature, as ``local_delta`` adds the rounding of its terms. Where units saturate,
f' is tiny and |dJ/da| is not (a saturated tanh's 1 - a² is exactly 0 in float32): there the
gradient's own rounding allowance alone was measured 23 times too small, and with this term a
float32 backprop stays within a few times its allowance (bench/README.md, the stress run's
``--rounding`` table).
"""

from __future__ import annotations

import numpy as np

from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.autoencoder import Autoencoder
from gradproof.nn.losses import LOSSES, REDUCTIONS


def derivative_rounding(model: Autoencoder, params: dict[str, np.ndarray],
                        x: np.ndarray) -> dict[str, np.ndarray]:
    """Per gradient entry, in units of eps: the error of the backprop's rounded forward values
    and derivatives (see the module docstring).

    Parameters
    ----------
    model : Autoencoder
        The float64 twin of the model checked.
    params, x : dict of ndarray, ndarray
        Its float64 point.

    Returns
    -------
    dict of ndarray
        One array per parameter, shaped like it.
    """
    _, cache = model.forward(params, x)
    acts = cache.activations
    n, batch = model.n_layers, x.shape[0]
    weights = model.weights(params)
    records = [ACTIVATIONS[name] for name in model.activations]
    # Squared forward errors of each layer's output, (batch, n_k); the input is exact.
    forward = [np.zeros_like(x)]
    for k in range(1, n + 1):
        w = weights[k - 1]
        size = np.abs(acts[k - 1]) @ np.abs(w) + (np.abs(params[f"b{k}"]) if model.bias else 0)
        slope = records[k - 1].derivative(acts[k])
        forward.append((forward[k - 1] @ w**2 + size**2) * slope**2 + acts[k] ** 2)
    factor = REDUCTIONS[model.reduction](batch)
    # The squared error's dJ/dz is z - x, then times f'(z); a loss tied to its output
    # activation (the cross-entropy of a sigmoid) has dJ/ds = z - x and no f' at all.
    own = LOSSES[model.loss_name].output_activation is None
    d_a = factor * (acts[n] - x)  # (batch, n_L) dJ/da_L
    slope = records[-1].derivative(acts[n]) if own else np.ones_like(d_a)
    d_s = d_a * slope
    square = factor**2 * forward[n] * slope**2  # squared errors of dJ/ds_k, (batch, n_k)
    if own:
        square += (records[-1].derivative_rounding * d_a) ** 2
    squares: dict[str, np.ndarray] = {}
    for k in range(n, 0, -1):
        name, transposed = model._weight_of[k - 1]
        # (n_{k-1}, n_k), like layer k's weight: a.T @ dJ/ds with both factors' errors
        w_square = (acts[k - 1] ** 2).T @ square + forward[k - 1].T @ d_s**2
        squares[name] = squares.get(name, 0.0) + (w_square.T if transposed else w_square)
        if model.bias:
            squares[f"b{k}"] = square.sum(axis=0)
        if k == 1:
            break
        d_a = d_s @ weights[k - 1].T  # (batch, n_{k-1}) dJ/da_{k-1}
        if k - 1 == model.code_layer and model.sparsity_weight:
            d_a = d_a + model._sparsity_grad(cache, batch)
        record = records[k - 2]
        slope = record.derivative(acts[k - 1])
        square = (square @ (weights[k - 1] ** 2).T) * slope**2 + (
            record.derivative_rounding * d_a
        ) ** 2
        d_s = d_a * slope
    return {name: np.sqrt(squares[name]) for name in model.param_shapes()}
