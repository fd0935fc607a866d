"""A forward pass that also tells whether its weights and biases are finite, mostly from its own
products.

Contract: ``screened_forward(layers, layer_params, x) -> (activations, pre_activations,
finite)`` runs the dense ``layers`` (each with its ``{"W", "b"}`` from ``layer_params``, in
order) on ``x`` (batch, n_in) and returns what ``Dense.forward`` gives layer by layer,
``[x, a1, ..., an]`` and ``[s1, ..., sn]``, with ``finite`` False wherever a weight or a bias
holds a NaN or an infinity. It never raises on a NaN or an infinity, and says nothing about
``x``. ``finite`` may also be False for finite parameters whose sums overflow: it is a reason to
scan the parameters (``checked_params``), not a verdict.

Why: a black-box gradient check calls a loss thousands of times, and a max and a min of each
weight (the scan ``checked_params`` makes) read every weight twice more beside the product
that reads it once: on the seed network and one image they were a large share of each call.
Here the forward pass's own products do most of the screening, and a screen of its own is
needed only for the weight rows whose inputs are zero in every example.

Why it is sound. Layer k computes ``s = a @ W + b``. In IEEE arithmetic a NaN or an infinity
stays non-finite through every product with a nonzero finite number and through every sum it
enters (an infinity plus a finite number is that infinity, opposite infinities give NaN, NaN
plus anything is NaN), so ``s`` is finite only if ``b`` is and every row ``W[i]`` whose input
``a[:, i]`` is nonzero in some example is; no BLAS can leave out a nonzero multiplier and stay
correct. The rows whose input is zero in every example (most pixels of an MNIST batch) are
another matter: ``0 * inf`` is NaN, but a BLAS may skip a zero multiplier (the reference BLAS
once did). Those rows get their own product, ``idle @ W`` with ``idle`` 1 exactly where the
input is always zero: a multiplier of 1 leaves each of them in a column sum. The inputs of
the first layer are the caller's to check (``x``); a later layer's are finite wherever the
earlier ``s`` were, since the activations map finite numbers to finite numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from gradproof.nn.layers import Dense


def screened_forward(
    layers: Sequence[Dense], layer_params: Sequence[Mapping[str, np.ndarray]], x: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    """Run ``layers`` on ``x`` and screen their parameters for NaN and Inf on the way.

    Parameters
    ----------
    layers : sequence of Dense
    layer_params : sequence of dict
        Layer k's ``{"W": (n_in, n_out), "b": (n_out,)}`` (``"b"`` optional), in order.
    x : ndarray, shape (batch, n_in)

    Returns
    -------
    activations : list of ndarray
        ``[x, a1, ..., an]``, ``a_k`` of shape (batch, n_k).
    pre_activations : list of ndarray
        ``[s1, ..., sn]``.
    finite : bool
        True only if every weight and bias is finite (see the module docstring); False also
        where sums of finite parameters overflow.
    """
    activations, pre_activations, finite = [x], [], True
    a = x
    for layer, params in zip(layers, layer_params):
        idle = ~a.any(axis=0)  # (n_in,): inputs that are zero in every example
        a, cache = layer.forward(params, a)  # (batch, n_k)
        finite = finite and bool(np.isfinite(cache.s).all())
        if finite and idle.any():
            screen = idle.astype(a.dtype) @ params["W"]  # (n_k,): the idle rows' column sums
            finite = bool(np.isfinite(screen).all())
        activations.append(a)
        pre_activations.append(cache.s)
    return activations, pre_activations, finite
