"""A dense (fully connected) layer with hand-written forward and backward passes.

Contract (row-vector convention, params a dict ``{"W": (n_in, n_out), "b": (n_out,)}`` where
``"b"`` is optional)::

    forward(params, x) -> (a, cache)            # s = x @ W + b, a = f(s)
    backward(params, cache, d_a) -> (d_x, grads)
    backward_linear(params, cache, d_s) -> (d_x, grads)

``grads`` is keyed and shaped like ``params``. ``backward`` starts from dJ/da;
``backward_linear`` starts from dJ/ds, for losses whose gradient is simplest there (the
cross-entropy of a sigmoid output). Neither writes into its arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping

import numpy as np

from gradproof.nn.activations import Activation


@dataclass(frozen=True)
class DenseCache:
    """What a dense layer's backward pass needs from its forward pass.

    Attributes
    ----------
    x : ndarray, shape (batch, n_in)
        The layer's input.
    s : ndarray, shape (batch, n_out)
        The pre-activation ``x @ W + b``.
    a : ndarray, shape (batch, n_out)
        The output ``f(s)``.
    """

    x: np.ndarray
    s: np.ndarray
    a: np.ndarray


@dataclass(frozen=True)
class Dense:
    """A dense layer ``a = f(x @ W + b)`` with activation ``f``."""

    activation: Activation

    def forward(
        self, params: Mapping[str, np.ndarray], x: np.ndarray
    ) -> tuple[np.ndarray, DenseCache]:
        """Compute the layer's output.

        Parameters
        ----------
        params : mapping
            ``"W"`` of shape (n_in, n_out) and optionally ``"b"`` of shape (n_out,).
        x : ndarray, shape (batch, n_in)

        Returns
        -------
        a : ndarray, shape (batch, n_out)
        cache : DenseCache
        """
        s = x @ params["W"]  # (batch, n_out)
        b = params.get("b")
        if b is not None:
            s += b  # in place: s is our own fresh array
        a = self.activation.forward(s)  # (batch, n_out)
        return a, DenseCache(x=x, s=s, a=a)

    def backward(
        self, params: Mapping[str, np.ndarray], cache: DenseCache, d_a: np.ndarray,
        *, need_d_x: bool = True,
    ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """Backpropagate dJ/da through the activation and the affine map.

        Parameters
        ----------
        params : mapping
            As for ``forward``.
        cache : DenseCache
            From ``forward`` with the same params.
        d_a : ndarray, shape (batch, n_out)
            dJ/da.
        need_d_x : bool
            False skips computing dJ/dx (the first layer of a network needs none).

        Returns
        -------
        d_x : ndarray of shape (batch, n_in), or None when ``need_d_x`` is False
        grads : dict
            dJ/dW and (when ``params`` has ``"b"``) dJ/db, shaped like ``params``.
        """
        d_s = d_a * self.activation.derivative(cache.a)  # (batch, n_out)
        return self.backward_linear(params, cache, d_s, need_d_x=need_d_x)

    def backward_linear(
        self, params: Mapping[str, np.ndarray], cache: DenseCache, d_s: np.ndarray,
        *, need_d_x: bool = True,
    ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """Backpropagate dJ/ds (the pre-activation gradient) through ``s = x @ W + b``.

        Parameters and returns as for ``backward``, with ``d_s`` of shape (batch, n_out).
        """
        grads = {"W": cache.x.T @ d_s}  # (n_in, n_out), like W
        if "b" in params:
            grads["b"] = d_s.sum(axis=0)  # (n_out,), like b
        d_x = d_s @ params["W"].T if need_d_x else None  # (batch, n_in), like x
        return d_x, grads
