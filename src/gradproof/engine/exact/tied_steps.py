"""How far a tied weight's step may go: its encoder use moves the input its decoder use multiplies.

Contract: ``tied_step_limit(base, name) -> limit`` gives, for the tied weight ``name`` of the
base point of a ``local_delta.LocalDifferences`` (its cached float64 forward pass), the
largest step of each entry (shaped like the weight) for which the central difference keeps
the truncation the step rule intends. ``evaluator.entry_steps`` takes the smaller of it and
the input-scaled step.

Why. A tied weight ``W[r, c]`` of layer k enters the encoder as ``θ a_{k-1}[r]`` (unit c of
layer k) and the decoder layer ``p = n + 1 - k`` as ``θ a_{p-1}[c]`` (unit r). The scaled
step (``h = cbrt(eps) max(1, |θ c|) / c``, with ``c`` the larger input) moves each use's
pre-activation by about ``cbrt(eps)``, which keeps it linear in ``h`` only while the inputs
stay put; but the encoder use moves the decoder's input, by ``Δ ≈ h a_{k-1}[r] D`` with
``D = ∂a_{p-1}[c] / ∂s_k[c]`` (``f'_k`` where the two layers meet at the code), so the
decoder's pre-activation moves by ``h a_{p-1}[c] + θ Δ + h Δ``, and the last term,
``h² a_{k-1}[r] D``, is quadratic in the step. Where every value is about 1e-9 (an all-zero
image, tiny biases) the scaled step is about ``cbrt(eps) / 1e-9`` and that term about
``h cbrt(eps)``, of order 1, while the loss's slope is as small as the values: the central
difference's truncation then dwarfs the gradient, and at 2h the term moves the decoder four
times as far, into the activation's bend, where the two differences no longer differ as
``h²``: Richardson's estimate missed most of the truncation and correct gradients of tied
tanh stacks failed (bench/README.md has the case and its numbers).

The limit keeps the quadratic term within ``cbrt(eps)`` of the larger linear term, which is
either the decoder's own, ``h |a_{p-1}[c]|``, or the encoder's passed on, ``|θ| Δ``: so
``Δ <= cbrt(eps) |a_{p-1}[c]|`` (the decoder's input stays put to the rule's own relative
accuracy, the premise of the scaled step) or ``h <= cbrt(eps) |θ|``; and it is never below
``cbrt(eps) max(1, |θ|)``, the classic step in θ itself. Over a batch, the smallest room
``|a_{p-1}[c]| / |D|`` of the examples against the largest ``|a_{k-1}[r]|``: a bound that holds
for every example. An input of exactly zero (most MNIST pixels) or a unit with ``D = 0`` (a
relu unit off) has no quadratic term and no limit. At normal values the limit binds only
where a decoder input is small against its slope (a tanh or relu unit near zero) and the
scaled step is longer than the classic one (a faint pixel): the step is then the classic
one, or a little longer.
"""

from __future__ import annotations

import numpy as np

from gradproof.engine.exact.local_delta import EPS, LocalDifferences
from gradproof.nn.activations import ACTIVATIONS


def tied_step_limit(base: LocalDifferences, name: str) -> np.ndarray:
    """The largest step of each entry of the tied weight ``name`` (see the module docstring).

    Parameters
    ----------
    base : LocalDifferences
        The base point, its forward pass cached.
    name : str
        A tied weight of ``base.model``.

    Returns
    -------
    ndarray, shape like the weight, (layers[k-1], layers[k])
    """
    layer, partner = base.tied_layers(name)
    slope = np.abs(decoder_input_slopes(base, layer))  # (batch, n_k)
    room = np.divide(np.abs(base.acts[partner - 1]), slope, out=np.full_like(slope, np.inf),
                     where=slope > 0).min(axis=0)  # (n_k,): |a_{p-1}[c]| / |D|
    encoder_input = np.abs(base.acts[layer - 1]).max(axis=0)[:, None]  # (n_{k-1}, 1)
    theta = base.params[name]
    limit = np.divide(room, encoder_input, out=np.full(theta.shape, np.inf),
                      where=encoder_input > 0)
    np.maximum(limit, np.abs(theta), out=limit)
    np.maximum(limit, 1.0, out=limit)
    limit *= np.cbrt(EPS)
    return limit


def decoder_input_slopes(base: LocalDifferences, layer: int) -> np.ndarray:
    """``∂a_{p-1}[b, c] / ∂s_k[b, c]`` for every example b and unit c of layer ``k = layer``,
    ``p = n + 1 - k`` its tied partner: how the decoder's input c follows the encoder's unit c.

    The diagonal of the Jacobian ``diag(f'_k) W_{k+1} ... W_{p-1} diag(f'_{p-1})``, split at
    the code layer m into ``∂a_m/∂s_k`` and ``∂a_{p-1}/∂a_m``: each half is built from the
    code layer outwards, so every product stays ``(batch, n_j, n_m)`` wide, the code layer
    being the narrowest.

    Returns
    -------
    ndarray, shape (batch, layers[k])
    """
    n = base.n_layers
    middle, partner = n // 2, n + 1 - layer
    slopes = {k: ACTIVATIONS[base.model.activations[k - 1]].derivative(base.acts[k])
              for k in range(layer, partner)}  # f'_k, (batch, n_k)
    if layer == middle:
        return slopes[middle]
    weights = base.weights  # W_k is weights[k - 1], (n_{k-1}, n_k)
    into = weights[middle - 1] * slopes[middle][:, None, :]  # (batch, n_{m-1}, n_m)
    for k in range(middle - 1, layer, -1):
        into = weights[k - 1] @ (slopes[k][:, :, None] * into)  # (batch, n_{k-1}, n_m)
    into *= slopes[layer][:, :, None]  # ∂a_m/∂s_k, (batch, n_k, n_m)
    out = weights[middle] * slopes[middle + 1][:, None, :]  # (batch, n_m, n_{m+1})
    for k in range(middle + 2, partner):
        out = (out @ weights[k - 1]) * slopes[k][:, None, :]  # (batch, n_m, n_k)
    return np.einsum("bcj,bjc->bc", into, out)  # ∂a_{p-1}/∂a_m is (batch, n_m, n_k)
