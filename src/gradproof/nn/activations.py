"""Activation functions, keyed by the name users type.

Contract: ``Activation.forward(s, out=None) -> a`` maps a pre-activation array to the
activation, keeping its dtype; ``Activation.derivative(a, out=None) -> da/ds`` returns the
elementwise derivative computed FROM THE OUTPUT ``a``. Backprop caches outputs anyway, and for
these four functions the derivative is a cheap expression of the output, so no pre-activation
has to be kept or re-evaluated. Both write into ``out`` (an array shaped like their argument)
when one is given, as numpy ufuncs do, so a train loop can reuse its buffers; ``out`` must not
be the argument itself. ``init_scale`` is the factor on the uniform init range
sqrt(6/(fan_in+fan_out)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class ArrayFn(Protocol):
    def __call__(self, arr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class Activation:
    """One elementwise activation function and its derivative.

    Parameters
    ----------
    name : str
        The user-facing name (the key in ``ACTIVATIONS``).
    forward : callable
        ``forward(s, out=None) -> a``, elementwise, same shape and dtype as ``s``.
    derivative : callable
        ``derivative(a, out=None) -> da/ds``, elementwise, from the output ``a = forward(s)``.
    init_scale : float
        Factor on the Glorot-uniform range sqrt(6/(fan_in+fan_out)) for weights feeding this
        activation (4 for the sigmoid, whose slope at 0 is 1/4).
    derivative_rounding : float
        How far ``derivative(a)`` can be off, in units of the arithmetic's eps, absolute, when
        ``a`` itself was rounded: about 1 for the sigmoid (a(1 - a)) and 2 for tanh (1 - a²),
        0 for exact derivatives. Where a unit saturates the derivative is tiny and this error
        is not, so a low-precision backprop's error there scales with dJ/da, not with the
        gradient (``check_model`` bounds it so).
    """

    name: str
    forward: ArrayFn
    derivative: ArrayFn
    init_scale: float = 1.0
    derivative_rounding: float = 0.0


def _sigmoid(s: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    # σ(s) = 1 / (1 + e^-s), the formula of scipy's expit, built from numpy's vectorised exp:
    # about 5x faster than expit on float32. Where e^-s overflows (s < -88 in float32) it is
    # inf and 1 / inf = 0, the right limit, so the overflow warning says nothing.
    a = np.negative(s, out=out)
    with np.errstate(over="ignore"):
        np.exp(a, out=a)
    a += 1
    # divide(1, a) rounds exactly as reciprocal(a) (both are one IEEE division) but runs
    # vectorised: 13 instead of 15 us on a float32 batch of 100 x 784.
    return np.divide(1.0, a, out=a)


def _sigmoid_derivative(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    # σ'(s) = σ(s)(1 - σ(s)) = a(1 - a)
    d = np.subtract(1, a, out=out)
    d *= a
    return d


def _tanh(s: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.tanh(s, out=out)


def _tanh_derivative(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    # tanh'(s) = 1 - tanh(s)^2 = 1 - a^2
    d = np.multiply(a, a, out=out)
    return np.subtract(1, d, out=d)


def _relu(s: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.maximum(s, 0, out=out)


def _relu_derivative(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    # 1 where s > 0, which is where a > 0; the kink at s = 0 gets slope 0.
    if out is None:
        return np.greater(a, 0).astype(a.dtype)
    return np.greater(a, 0, out=out)  # the ufunc casts its booleans to out's dtype


def _identity(s: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return s  # no copy: nothing downstream writes into an activation
    np.copyto(out, s)
    return out


def _identity_derivative(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return np.ones_like(a)
    out.fill(1)
    return out


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(
        "sigmoid", _sigmoid, _sigmoid_derivative, init_scale=4.0, derivative_rounding=1.0
    ),
    "tanh": Activation("tanh", _tanh, _tanh_derivative, derivative_rounding=2.0),
    "relu": Activation("relu", _relu, _relu_derivative),
    "identity": Activation("identity", _identity, _identity_derivative),
}
