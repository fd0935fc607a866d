"""Reconstruction losses and batch reductions, keyed by the name users type.

Contract: ``Loss.value(x, z, s) -> float`` is the data term summed over pixels and examples,
for targets ``x``, outputs ``z`` and output pre-activations ``s`` (all (batch, n_visible));
``Loss.delta(x, z, s, activation) -> dJ/ds`` is its gradient with respect to the output
pre-activation, a fresh array the caller may overwrite. ``REDUCTIONS[name](batch_size)`` is the
factor applied to the data term (and to its gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gradproof.nn.activations import Activation


@dataclass(frozen=True)
class Loss:
    """A data term and its gradient with respect to the output pre-activation.

    Parameters
    ----------
    name : str
        The user-facing name (the key in ``LOSSES``).
    value : callable
        ``value(x, z, s) -> float``, summed over all entries.
    delta : callable
        ``delta(x, z, s, activation) -> ndarray`` of shape (batch, n_visible): dJ/ds.
    output_activation : str or None
        The output activation this loss requires, or None when any will do.
    """

    name: str
    value: Callable[[np.ndarray, np.ndarray, np.ndarray], float]
    delta: Callable[[np.ndarray, np.ndarray, np.ndarray, Activation], np.ndarray]
    output_activation: str | None = None


def _squared_value(x: np.ndarray, z: np.ndarray, s: np.ndarray) -> float:
    r = (z - x).ravel()  # (batch * n_visible,)
    return 0.5 * float(np.dot(r, r))


def _squared_delta(x: np.ndarray, z: np.ndarray, s: np.ndarray, act: Activation) -> np.ndarray:
    # dJ/ds = (z - x) * f'(s), with f' taken from the output z.
    d_s = z - x  # (batch, n_visible)
    d_s *= act.derivative(z)
    return d_s


def _cross_entropy_value(x: np.ndarray, z: np.ndarray, s: np.ndarray) -> float:
    # With z = σ(s): -[x log z + (1-x) log(1-z)] = softplus(s) - x s, and
    # softplus(s) = log(1 + e^s) = logaddexp(0, s) never overflows, even where z rounds to 0 or 1.
    return float(np.sum(np.logaddexp(0, s) - x * s))


def _cross_entropy_delta(
    x: np.ndarray, z: np.ndarray, s: np.ndarray, act: Activation
) -> np.ndarray:
    # d/ds [softplus(s) - x s] = σ(s) - x = z - x: the sigmoid's slope cancels.
    return z - x  # (batch, n_visible)


LOSSES: dict[str, Loss] = {
    "squared": Loss("squared", _squared_value, _squared_delta),
    "cross_entropy": Loss(
        "cross_entropy", _cross_entropy_value, _cross_entropy_delta, output_activation="sigmoid"
    ),
}


def _sum_factor(batch_size: int) -> float:
    return 1.0


def _mean_factor(batch_size: int) -> float:
    return 1.0 / batch_size


REDUCTIONS: dict[str, Callable[[int], float]] = {
    "sum": _sum_factor,
    "mean": _mean_factor,
}
