"""The rounding a low-precision backprop of an Autoencoder carries beyond its sums.

Contract: ``derivative_rounding(base) -> {name: array}`` gives, for the base point of a
``local_delta.LocalDifferences`` (its cached float64 forward pass), per gradient entry (shaped
like the parameter) and in units of the backprop's eps, the error it gets from its rounded
forward values and from activation derivatives computed from rounded outputs.
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

One weight-sized array per weight, made once: |W|, squared in place and kept for the backward
pass, which then writes into it the one product that holds both error terms of the weight's
gradient, square-rooted in place. Every fresh array of a large tensor faults in its memory
page by page, which made this estimate a large share of a one-image check.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gradproof.engine.exact.local_delta import LocalDifferences
from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.losses import LOSSES, kl_slope


def derivative_rounding(base: LocalDifferences,
                        allocate: Callable[..., np.ndarray] = np.empty) -> dict[str, np.ndarray]:
    """Per gradient entry, in units of eps: the error of the backprop's rounded forward values
    and derivatives (see the module docstring).

    Parameters
    ----------
    base : LocalDifferences
        The base point of the float64 twin of the model checked, its forward pass cached.
    allocate : callable
        ``np.empty``'s signature: where the weight-sized arrays come from (the exact engine
        lends arrays kept between checks).

    Returns
    -------
    dict of ndarray
        One array per parameter, shaped like it.
    """
    model, acts, n = base.model, base.acts, base.n_layers
    records = [ACTIVATIONS[name] for name in model.activations]
    # Squared forward errors of each layer's output, (batch, n_k); the input is exact (None).
    forward: list[np.ndarray | None] = [None]
    squared_weights = []  # W_k**2, (n_{k-1}, n_k), for the backward pass
    for k in range(1, n + 1):
        weight = base.weights[k - 1]
        w_square = np.abs(weight, out=allocate(weight.shape))  # |W_k| now, W_k**2 below
        size = np.abs(acts[k - 1]) @ w_square  # (batch, n_k): the magnitudes summed
        if base.biases[k - 1] is not None:
            size += np.abs(base.biases[k - 1])
        np.square(w_square, out=w_square)
        squared_weights.append(w_square)
        error = size**2 if forward[k - 1] is None else forward[k - 1] @ w_square + size**2
        error *= records[k - 1].derivative(acts[k]) ** 2
        forward.append(error + acts[k] ** 2)
    factor = base.data_factor
    # The squared error's dJ/dz is z - x, then times f'(z); a loss tied to its output
    # activation (the cross-entropy of a sigmoid) has dJ/ds = z - x and no f' at all.
    own = LOSSES[model.loss_name].output_activation is None
    d_a = factor * (acts[n] - acts[0])  # (batch, n_L) dJ/da_L
    slope = records[-1].derivative(acts[n]) if own else np.ones_like(d_a)
    d_s = d_a * slope
    square = factor**2 * forward[n] * slope**2  # squared errors of dJ/ds_k, (batch, n_k)
    if own:
        square += (records[-1].derivative_rounding * d_a) ** 2
    squares: dict[str, np.ndarray] = {}
    for k in range(n, 0, -1):
        name, transposed = model._weight_of[k - 1]
        w_square = squared_weights[k - 1]
        # The error carried back to layer k - 1 reads W_k**2 for the last time: the weight's
        # own product then goes into its array instead of a fresh one.
        carried = square @ w_square.T if k > 1 else None  # (batch, n_{k-1})
        # (n_{k-1}, n_k), like layer k's weight: a.T @ dJ/ds with both factors' errors, the
        # two terms as one product over the batch stacked twice (no input error at layer 1)
        inputs, errors = acts[k - 1] ** 2, square
        if forward[k - 1] is not None:
            inputs = np.concatenate((inputs, forward[k - 1]))  # (2 batch, n_{k-1})
            errors = np.concatenate((errors, d_s**2))  # (2 batch, n_k)
        if len(inputs) == 1:
            # One term per entry: the same product, without matmul's loop for a sum of one
            # term (an outer product, which numpy does not hand to BLAS: 3x slower here).
            np.multiply(inputs.T, errors, out=w_square)
        else:
            np.matmul(inputs.T, errors, out=w_square)
        if transposed:
            w_square = w_square.T
        if name in squares:
            squares[name] += w_square
        else:
            squares[name] = w_square
        if model.bias:
            squares[f"b{k}"] = square.sum(axis=0)
        if k == 1:
            break
        d_a = d_s @ base.weights[k - 1].T  # (batch, n_{k-1}) dJ/da_{k-1}
        if k - 1 == base.code_layer:
            # d/da of beta * sum_j KL(rho || rho_hat_j), rho_hat_j = mean_b a_bj
            d_a += (model.sparsity_weight / base.batch) * kl_slope(model.sparsity_target,
                                                                   base.rho_hat)
        record = records[k - 2]
        slope = record.derivative(acts[k - 1])
        square = carried * slope**2 + (
            record.derivative_rounding * d_a
        ) ** 2
        d_s = d_a * slope
    return {name: np.sqrt(squares[name], out=squares[name]) for name in model.param_shapes()}
