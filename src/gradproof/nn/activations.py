"""Activation functions, keyed by the name users type: one record holds all gradproof knows.

Contract: ``Activation.forward(s, out=None) -> a`` maps a pre-activation array to the
activation, keeping its dtype; ``Activation.derivative(a, out=None) -> da/ds`` returns the
elementwise derivative computed FROM THE OUTPUT ``a``. Backprop caches outputs anyway, and for
these four functions the derivative is a cheap expression of the output, so no pre-activation
has to be kept or re-evaluated. Both write into ``out`` (an array shaped like their argument)
when one is given, as numpy ufuncs do, so a train loop can reuse its buffers; ``out`` must not
be the argument itself. ``init_scale`` is the factor on the uniform init range
sqrt(6/(fan_in+fan_out)).

The other fields are what the exact check and the diagnosis read: where the slope jumps
(``kink``), the change ``g(s + v) - g(s)`` as a power series with the bound of its remainder
(``series``), an in-place evaluation from the negated pre-activation (``negated_forward``) and
the slope as a fix line writes it (``slope_text``), and how far the derivative taken from a
rounded output can be off (``derivative_rounding``, which ``check_model`` allows a float32
backprop). Each is stated in every record, ``None``
where the activation has no such thing, so that adding an activation is one edit here and a
forgotten fact is an error, not a silently skipped kink.

The shift series are exact identities of the forward definitions, not derivatives of the
model: ``σ(s + v) - σ(s) = σ(s)σ(-s) M / (1 + σ(s) M)`` with ``M = e^v - 1``, and
``tanh(s + v) - tanh(s) = τ sech²(s) / (1 + tanh(s) τ)`` with ``τ = tanh v``, composed from the
library series of ``gradproof.nn.power_series``; only the base point's forward values enter.
Their bound (Cauchy's estimate): each change is analytic in ``v`` on the closed unit disc. On
``|v| <= 1`` the segment from ``s`` to ``s + v`` stays where ``|Im w| <= 1``, and there
``|σ'(w)| = 1 / |(1 + e^-w)(1 + e^w)| <= 1`` (both factors have real part at least 1, since
``cos 1 > 0``) and ``|tanh'(w)| = 1 / |cosh w|² <= 1 / cos²(1) < 3.5``
(``|cosh(u + iy)|² = sinh²u + cos²y``): an activation changes by at most
``ShiftSeries.lipschitz`` times ``|v|`` there (1, 3.5; 1 for the identity).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gradproof.nn.power_series import (
    compose,
    expm1,
    product,
    reciprocal_one_plus,
    tanh_of_shift,
    with_axes,
)


class ArrayFn(Protocol):
    def __call__(self, arr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class ShiftSeries:
    """``g(s + v) - g(s)`` as a power series in the shift ``v``, and its remainder's bound.

    Parameters
    ----------
    coefficients : callable
        ``coefficients(s, order) -> c`` of shape (order + 1, *s.shape) (float64): for each
        entry of ``s``, ``Σ_k c[k] v^k`` is the change of the activation, truncated after
        ``v^order``; the series converges on the unit disc ``|v| < 1``.
    lipschitz : float
        A bound of ``|g'(w)|`` on the strip ``|Im w| <= 1``, so that the change is at most
        ``lipschitz * |v|`` on the unit disc (the module docstring says why).
    """

    coefficients: Callable[[np.ndarray, int], np.ndarray]
    lipschitz: float


@dataclass(frozen=True, kw_only=True)
class Activation:
    """One elementwise activation function: its math, and what the checker and diagnosis use.

    Parameters
    ----------
    name : str
        The user-facing name (the key in ``ACTIVATIONS``).
    forward : callable
        ``forward(s, out=None) -> a``, elementwise, same shape and dtype as ``s``.
    derivative : callable
        ``derivative(a, out=None) -> da/ds``, elementwise, from the output ``a = forward(s)``.
    kink : float or None
        The pre-activation where the slope jumps (a central difference whose two points
        straddle it measures a chord, not a derivative); None for a smooth activation.
    series : ShiftSeries or None
        The change in a pre-activation shift as a power series; None where no series holds
        (across a kink).
    bare_forward : callable
        ``bare_forward(s) -> forward(s)``, bit for bit the values of ``forward`` (never
        written into ``s``), without the floating-point error state ``forward`` sets for
        itself (the sigmoid's exp overflows, harmlessly, where ``s`` is below about -709 in
        float64): for a pass that a gradient check calls thousands of times, which sets
        ``np.errstate(over="ignore")`` once around all its layers (an ``errstate`` costs
        about as much as a small layer's arithmetic).
    negated_forward : callable or None
        ``negated_forward(v) -> forward(-v)``, in place in ``v`` and bit for bit the values of
        ``forward``, for hot loops that get the negated pre-activation at no cost (in the same
        matrix product); None where there is no cheaper way than negating.
    slope_text : (str, str)
        The slope from the output as a fix line writes it, in numpy and in MATLAB notation,
        ``{a}`` standing for the activation's variable; ``""`` for a slope of 1.
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
    bare_forward: Callable[[np.ndarray], np.ndarray]
    kink: float | None
    series: ShiftSeries | None
    negated_forward: Callable[[np.ndarray], np.ndarray] | None
    slope_text: tuple[str, str]
    derivative_rounding: float
    init_scale: float = 1.0


def _bare_sigmoid_of_negated(v: np.ndarray) -> np.ndarray:
    # σ(s) = 1 / (1 + e^-s) from v = -s, in place: the formula of scipy's expit, built from
    # numpy's vectorised exp (about 5x faster than expit on float32). Where e^-s overflows
    # (s < -88 in float32) it is inf and 1 / inf = 0, the right limit, so the overflow warning
    # says nothing: the caller ignores it.
    np.exp(v, out=v)
    v += 1  # neither this nor the division can overflow: v >= 1 here, or inf, or NaN
    # divide(1, v) rounds exactly as reciprocal(v) (both are one IEEE division) but runs
    # vectorised.
    return np.divide(1.0, v, out=v)


def _sigmoid_of_negated(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _bare_sigmoid_of_negated(v)


def _sigmoid(s: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return _sigmoid_of_negated(np.negative(s, out=out))  # negation is exact: the same bits


def _bare_sigmoid(s: np.ndarray) -> np.ndarray:
    return _bare_sigmoid_of_negated(np.negative(s))


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


def _sigmoid_shift(s: np.ndarray, order: int) -> np.ndarray:
    # σ(s + v) - σ(s) = σ(s)σ(-s) M / (1 + σ(s) M), M = e^v - 1: σ(-s) from -s, not 1 - σ(s),
    # which loses its relative accuracy where σ(s) is near 1.
    z, one_minus = _sigmoid(s), _sigmoid(-s)
    m = with_axes(expm1(order), s.ndim)
    denominator = compose(reciprocal_one_plus(order), z * m)
    return product(z * one_minus * m, denominator)


def _tanh_shift(s: np.ndarray, order: int) -> np.ndarray:
    # tanh(s + v) - tanh(s) = τ sech²(s) / (1 + tanh(s) τ), τ = tanh v.
    tau = with_axes(tanh_of_shift(order), s.ndim)
    with np.errstate(over="ignore"):  # cosh s = inf: sech² = 0, the limit
        sech2 = 1.0 / np.cosh(s) ** 2
    denominator = compose(reciprocal_one_plus(order), np.tanh(s) * tau)
    return product(sech2 * tau, denominator)


def _identity_shift(s: np.ndarray, order: int) -> np.ndarray:
    out = np.zeros((order + 1,) + s.shape)
    out[1] = 1.0
    return out


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(
        name="sigmoid", forward=_sigmoid, derivative=_sigmoid_derivative,
        bare_forward=_bare_sigmoid, kink=None,
        series=ShiftSeries(_sigmoid_shift, lipschitz=1.0), negated_forward=_sigmoid_of_negated,
        slope_text=("{a} * (1 - {a})", "{a} .* (1 - {a})"), derivative_rounding=1.0,
        init_scale=4.0,
    ),
    "tanh": Activation(
        name="tanh", forward=_tanh, derivative=_tanh_derivative, bare_forward=_tanh,
        kink=None,
        series=ShiftSeries(_tanh_shift, lipschitz=3.5), negated_forward=None,
        slope_text=("(1 - {a} ** 2)", "(1 - {a} .^ 2)"), derivative_rounding=2.0,
    ),
    "relu": Activation(
        name="relu", forward=_relu, derivative=_relu_derivative, bare_forward=_relu,
        kink=0.0,
        series=None, negated_forward=None, slope_text=("({a} > 0)", "({a} > 0)"),
        derivative_rounding=0.0,
    ),
    "identity": Activation(
        name="identity", forward=_identity, derivative=_identity_derivative,
        bare_forward=_identity, kink=None,
        series=ShiftSeries(_identity_shift, lipschitz=1.0), negated_forward=None,
        slope_text=("", ""), derivative_rounding=0.0,
    ),
}
