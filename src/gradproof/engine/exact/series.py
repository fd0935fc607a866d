"""Power series of an output term's change in its pre-activation shift, for the exact check.

Contract: ``output_series(activation, loss, x, z, s, order)`` returns ``(coefficients, bound)``
for every output entry, or None where no series form is known (a kink, an unknown loss):
``coefficients`` has shape (order + 1, *shape) and ``Σ_k coefficients[k] v^k`` is the change
``ℓ(s + v) - ℓ(s)`` of the entry's data term when its pre-activation ``s`` moves by ``v``,
up to a remainder below ``bound |v|^(order+1) / (1 - |v|)`` for ``|v| < 1``.
``shift_series(activation, s, order)`` is the same for an activation's own change
``g(s + v) - g(s)`` (None for a kink), which changes by at most ``LIPSCHITZ[activation] |v|``
on the unit disc; ``product`` and ``compose`` are the truncated-series arithmetic.

Why. When one hidden unit of the last hidden layer moves by ``t``, output ``j`` moves by
``v_j = t W[c, j]``, so the example's data term changes by
``Σ_j ℓ_j(s_j + t W[c, j]) - ℓ_j(s_j) = Σ_k t^k Σ_j e_k[j] W[c, j]^k``: one matrix product per
power gives the coefficients of every (example, hidden unit) pair at once, after which each
perturbed point costs ``order`` multiply-adds instead of a pass over the outputs.

The series are not derivatives of the model: each comes from an exact identity of the forward
definition (for the sigmoid ``σ(s + v) - σ(s) = σ(s)σ(-s) M / (1 + σ(s) M)`` with
``M = e^v - 1``; for tanh ``tanh(s + v) - tanh(s) = τ sech²(s) / (1 + tanh(s) τ)`` with
``τ = tanh v``; for the cross-entropy ``softplus(s + v) - softplus(s) = log1p(σ(s) M)``), with
the library series of exp, log1p, tanh and 1/(1 + y) composed in truncated-series arithmetic.
Only the base point's forward values (``σ(±s)``, ``tanh s``, ``cosh s``) enter.

Remainder (Cauchy's estimate). Each change is analytic in ``v`` on the closed unit disc, where
its modulus is at most ``M``; then ``|e_k| <= M`` for every ``k`` and the tail after ``order``
is at most ``M |v|^(order+1) / (1 - |v|)``. On ``|v| <= 1`` the segment from ``s`` to
``s + v`` stays where ``|Im w| <= 1``, and there ``|σ'(w)| = 1 / |(1 + e^-w)(1 + e^w)| <= 1``
(both factors have real part at least 1, since ``cos 1 > 0``) and ``|tanh'(w)| = 1 / |cosh w|²
<= 1 / cos²(1) < 3.5`` (``|cosh(u + iy)|² = sinh²u + cos²y``): an activation changes by at
most ``D = LIPSCHITZ[activation]`` (1, 3.5; 1 for the identity). The squared error's change
``Δz (r + Δz / 2)`` is then at most ``D (|r| + D / 2)``; the cross-entropy's ``log1p(σ(s) M) - x v`` is at most
``3.2 + |x|`` (``1 + σ(s) M`` has real part at least ``e^-1 cos 1 > 0.19`` and modulus at most
``e``, so its log is within ``1.7 + π/2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gradproof.nn.activations import ACTIVATIONS

# Bound of |log1p(σ(s) M)| over the unit disc, before the linear term -x v.
_SOFTPLUS_BOUND = 3.2


def product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The truncated product of two series of the same order (Cauchy product)."""
    out = np.zeros(np.broadcast_shapes(a.shape, b.shape))
    for k in range(len(out)):
        for i in range(k + 1):
            out[k] += a[i] * b[k - i]
    return out


def compose(outer: list[float] | np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``Σ_n outer[n] inner^n`` for a series ``inner`` with no constant term.

    ``outer`` holds scalars, or arrays broadcastable against ``inner[0]`` (one outer series per
    entry). Since ``inner^n`` starts at the power ``n``, its products skip the known zeros:
    about ``K³ / 6`` multiply-adds for ``K = order`` where Horner's rule on full products
    takes ``K³ / 2``.
    """
    order = len(inner) - 1
    out = np.zeros(inner.shape)
    out[0] = outer[0]
    power = inner  # inner^n, whose coefficients below n are zero
    for n in range(1, order + 1):
        if n > 1:
            previous, power = power, np.zeros(inner.shape)
            for k in range(n, order + 1):
                for i in range(n - 1, k):  # previous[i] is zero below n - 1, inner[0] is zero
                    power[k] += previous[i] * inner[k - i]
        for k in range(n, order + 1):
            out[k] += outer[n] * power[k]
    return out


def _scalar(coefficients: list[float]) -> np.ndarray:
    return np.asarray(coefficients, dtype=np.float64)


def _expm1(order: int) -> list[float]:
    """e^v - 1 = Σ_{k>=1} v^k / k!"""
    return [0.0] + [1.0 / math.factorial(k) for k in range(1, order + 1)]


def _log1p(order: int) -> list[float]:
    """log(1 + y) = Σ_{n>=1} (-1)^(n+1) y^n / n"""
    return [0.0] + [(-1.0) ** (n + 1) / n for n in range(1, order + 1)]


def _reciprocal_one_plus(order: int) -> list[float]:
    """1 / (1 + y) = Σ_n (-y)^n"""
    return [(-1.0) ** n for n in range(order + 1)]


def _tanh_of_shift(order: int) -> np.ndarray:
    """tanh v = E / (2 + E) with E = e^(2v) - 1, as a scalar series."""
    half = _scalar([c * 2.0**k / 2 for k, c in enumerate(_expm1(order))])  # E / 2
    return product(half, compose(_reciprocal_one_plus(order), half))


def _with_axes(coefficients: np.ndarray, ndim: int) -> np.ndarray:
    """A scalar series reshaped to broadcast against arrays of ``ndim`` dimensions."""
    return coefficients.reshape((-1,) + (1,) * ndim)


def _sigmoid_shift(s: np.ndarray, order: int) -> np.ndarray:
    # σ(s + v) - σ(s) = σ(s)σ(-s) M / (1 + σ(s) M), M = e^v - 1: σ(-s) from -s, not 1 - σ(s),
    # which loses its relative accuracy where σ(s) is near 1.
    sigmoid = ACTIVATIONS["sigmoid"].forward
    z, one_minus = sigmoid(s), sigmoid(-s)
    m = _with_axes(_scalar(_expm1(order)), s.ndim)
    denominator = compose(_reciprocal_one_plus(order), z * m)
    return product(z * one_minus * m, denominator)


def _tanh_shift(s: np.ndarray, order: int) -> np.ndarray:
    # tanh(s + v) - tanh(s) = τ sech²(s) / (1 + tanh(s) τ), τ = tanh v.
    tau = _with_axes(_tanh_of_shift(order), s.ndim)
    with np.errstate(over="ignore"):  # cosh s = inf: sech² = 0, the limit
        sech2 = 1.0 / np.cosh(s) ** 2
    denominator = compose(_reciprocal_one_plus(order), np.tanh(s) * tau)
    return product(sech2 * tau, denominator)


def _identity_shift(s: np.ndarray, order: int) -> np.ndarray:
    out = np.zeros((order + 1,) + s.shape)
    out[1] = 1.0
    return out


_SHIFTS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "sigmoid": _sigmoid_shift,
    "tanh": _tanh_shift,
    "identity": _identity_shift,
}

# Bounds of |g'(s + v)| over the unit disc |v| <= 1, so that |g(s + v) - g(s)| <= L |v| there
# (module docstring); the activations with a shift series.
LIPSCHITZ: dict[str, float] = {"sigmoid": 1.0, "tanh": 3.5, "identity": 1.0}


def shift_series(activation: str, s: np.ndarray, order: int) -> np.ndarray | None:
    """The series of ``g(s + v) - g(s)`` in ``v`` for each entry of ``s``, (order + 1, *shape);
    None for an activation with a kink. The series converges on the unit disc, where the
    change is at most ``LIPSCHITZ[activation] |v|``."""
    if activation not in _SHIFTS:
        return None
    return _SHIFTS[activation](s, order)


def output_series(activation: str, loss: str, x: np.ndarray, z: np.ndarray, s: np.ndarray,
                  order: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The series of each output entry's data-term change in its pre-activation shift.

    Parameters
    ----------
    activation, loss : str
        The output activation and the loss, by their registry names.
    x, z, s : ndarray, shape (batch, n_visible)
        Targets, outputs and output pre-activations at the base point.
    order : int
        The highest power kept.

    Returns
    -------
    (coefficients, bound) or None
        ``coefficients`` (order + 1, batch, n_visible), with ``coefficients[0] = 0``; ``bound``
        (batch, n_visible), the modulus bound ``M`` of the remainder (module docstring). None
        for an output activation with a kink or a loss without a series here.
    """
    if loss == "cross_entropy" and activation == "sigmoid":
        m = _with_axes(_scalar(_expm1(order)), s.ndim)
        coefficients = compose(_log1p(order), ACTIVATIONS["sigmoid"].forward(s) * m)
        coefficients[1] -= x
        return coefficients, _SOFTPLUS_BOUND + np.abs(x)
    if loss != "squared" or activation not in _SHIFTS:
        return None
    shift = shift_series(activation, s, order)  # Δz
    residual = z - x
    coefficients = product(shift, shift) * 0.5
    coefficients += residual * shift
    bound = LIPSCHITZ[activation]  # |Δz| on the unit disc
    return coefficients, bound * (np.abs(residual) + bound / 2)
