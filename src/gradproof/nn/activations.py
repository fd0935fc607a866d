"""Activation functions, keyed by the name users type.

Contract: ``Activation.forward(s) -> a`` maps a pre-activation array to the activation, keeping
its dtype; ``Activation.derivative(a) -> da/ds`` returns the elementwise derivative computed
FROM THE OUTPUT ``a``. Backprop caches outputs anyway, and for these four functions the
derivative is a cheap expression of the output, so no pre-activation has to be kept or
re-evaluated. ``init_scale`` is the factor on the uniform init range sqrt(6/(fan_in+fan_out)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit

ArrayFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Activation:
    """One elementwise activation function and its derivative.

    Parameters
    ----------
    name : str
        The user-facing name (the key in ``ACTIVATIONS``).
    forward : callable
        ``forward(s) -> a``, elementwise, same shape and dtype as ``s``.
    derivative : callable
        ``derivative(a) -> da/ds``, elementwise, from the output ``a = forward(s)``.
    init_scale : float
        Factor on the Glorot-uniform range sqrt(6/(fan_in+fan_out)) for weights feeding this
        activation (4 for the sigmoid, whose slope at 0 is 1/4).
    """

    name: str
    forward: ArrayFn
    derivative: ArrayFn
    init_scale: float = 1.0


def _sigmoid(s: np.ndarray) -> np.ndarray:
    # expit never overflows and keeps float32 as float32.
    return expit(s)


def _sigmoid_derivative(a: np.ndarray) -> np.ndarray:
    # σ'(s) = σ(s)(1 - σ(s)) = a(1 - a)
    return a * (1 - a)


def _tanh_derivative(a: np.ndarray) -> np.ndarray:
    # tanh'(s) = 1 - tanh(s)^2 = 1 - a^2
    return 1 - a * a


def _relu(s: np.ndarray) -> np.ndarray:
    return np.maximum(s, 0)


def _relu_derivative(a: np.ndarray) -> np.ndarray:
    # 1 where s > 0, which is where a > 0; the kink at s = 0 gets slope 0.
    return np.greater(a, 0).astype(a.dtype)


def _identity(s: np.ndarray) -> np.ndarray:
    # No copy: nothing downstream writes into an activation.
    return s


def _identity_derivative(a: np.ndarray) -> np.ndarray:
    return np.ones_like(a)


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_derivative, init_scale=4.0),
    "tanh": Activation("tanh", np.tanh, _tanh_derivative),
    "relu": Activation("relu", _relu, _relu_derivative),
    "identity": Activation("identity", _identity, _identity_derivative),
}
