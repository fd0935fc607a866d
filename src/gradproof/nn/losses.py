"""Reconstruction losses and batch reductions, keyed by the name users type.

Contract, for targets ``x``, outputs ``z`` and output pre-activations ``s`` (all
(batch, n_visible)): ``Loss.value(x, z, s) -> float`` is the data term summed over pixels and
examples; ``Loss.value_and_delta(x, z, s, activation, out=None, scratch=None) -> (value, d_s)``
returns the same value together with ``d_s = dJ/ds``, its gradient with respect to the output
pre-activation, from work the two share (the residual ``z - x``). ``d_s`` goes into ``out``
when one is given and is a fresh array otherwise; either way the caller may overwrite it.
``scratch``, an array shaped like ``z`` (or None), holds an intermediate. The two functions
compute the value by the same operations, so they agree bit for bit.
``REDUCTIONS[name](batch_size)`` is the factor applied to the data term (and to its gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gradproof.nn.activations import Activation


class ValueAndDelta(Protocol):
    def __call__(
        self, x: np.ndarray, z: np.ndarray, s: np.ndarray, act: Activation,
        out: np.ndarray | None = None, scratch: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray]: ...


@dataclass(frozen=True)
class Loss:
    """A data term and its gradient with respect to the output pre-activation.

    Parameters
    ----------
    name : str
        The user-facing name (the key in ``LOSSES``).
    value : callable
        ``value(x, z, s) -> float``, summed over all entries.
    value_and_delta : callable
        ``value_and_delta(x, z, s, activation, out=None, scratch=None) -> (value, d_s)``: the
        value and dJ/ds, shape (batch, n_visible).
    output_activation : str or None
        The output activation this loss requires, or None when any will do.
    """

    name: str
    value: Callable[[np.ndarray, np.ndarray, np.ndarray], float]
    value_and_delta: ValueAndDelta
    output_activation: str | None = None


def _half_sum_of_squares(r: np.ndarray) -> float:
    flat = r.ravel()  # (batch * n_visible,), a view of the contiguous residual
    return 0.5 * float(np.dot(flat, flat))


def _squared_value(x: np.ndarray, z: np.ndarray, s: np.ndarray) -> float:
    return _half_sum_of_squares(z - x)


def _squared_value_and_delta(
    x: np.ndarray, z: np.ndarray, s: np.ndarray, act: Activation,
    out: np.ndarray | None = None, scratch: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    d_s = np.subtract(z, x, out=out)  # (batch, n_visible): the residual, read by both
    value = _half_sum_of_squares(d_s)
    d_s *= act.derivative(z, out=scratch)  # dJ/ds = (z - x) * f'(s), with f' from the output z
    return value, d_s


def _cross_entropy_value(x: np.ndarray, z: np.ndarray, s: np.ndarray) -> float:
    # With z = σ(s): -[x log z + (1-x) log(1-z)] = softplus(s) - x s, and
    # softplus(s) = log(1 + e^s) = logaddexp(0, s) never overflows, even where z rounds to 0 or 1.
    return float(np.sum(np.logaddexp(0, s) - x * s))


def _cross_entropy_value_and_delta(
    x: np.ndarray, z: np.ndarray, s: np.ndarray, act: Activation,
    out: np.ndarray | None = None, scratch: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    # d/ds [softplus(s) - x s] = σ(s) - x = z - x: the sigmoid's slope cancels.
    return _cross_entropy_value(x, z, s), np.subtract(z, x, out=out)  # (batch, n_visible)


LOSSES: dict[str, Loss] = {
    "squared": Loss("squared", _squared_value, _squared_value_and_delta),
    "cross_entropy": Loss(
        "cross_entropy", _cross_entropy_value, _cross_entropy_value_and_delta,
        output_activation="sigmoid",
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
