"""Reconstruction losses, batch reductions and the sparsity penalty, keyed by the name users type.

Contract, for targets ``x``, outputs ``z`` and output pre-activations ``s`` (all
(batch, n_visible)): ``Loss.value(x, z, s) -> float`` is the data term summed over pixels and
examples, NaN or infinite wherever an entry of ``x`` is (``Autoencoder.loss`` screens its input
through it); ``Loss.value_and_delta(x, z, s, activation, out=None, scratch=None) -> (value, d_s)``
returns the same value together with ``d_s = dJ/ds``, its gradient with respect to the output
pre-activation, from work the two share (the residual ``z - x``). ``d_s`` goes into ``out``
when one is given and is a fresh array otherwise; either way the caller may overwrite it.
``scratch``, an array shaped like ``z`` (or None), holds an intermediate. The two functions
compute the value by the same operations, so they agree bit for bit.
``REDUCTIONS[name](batch_size)`` is the factor applied to the data term (and to its gradient).
``kl_divergence(rho, rho_hat)`` is the sparsity penalty of each code unit.

One record holds each loss, with the forward-only, elementwise forms the exact check evaluates
at perturbed points (``entries``, ``row_change``, ``series``) and the rounding bound it uses
(``magnitude``): nothing there is a derivative, so the check stays independent of the backprop
it checks. ``entries`` is written from the same definition as ``value`` but by other operations
(``value`` sums with one dot product), so the two agree to rounding, not bit for bit; the tests
pin their sums together.

The output series are exact identities of the forward definitions: for the squared error
``Δz (r + Δz / 2)`` with ``Δz`` the output activation's shift series and ``r = z - x``; for the
cross-entropy of a sigmoid ``softplus(s + v) - softplus(s) - x v = log1p(σ(s) M) - x v`` with
``M = e^v - 1``. Their remainder bounds (Cauchy's estimate, see ``gradproof.nn.activations``):
the squared error's change is at most ``D (|r| + D / 2)`` on the unit disc, with
``D = ShiftSeries.lipschitz``; the cross-entropy's at most ``3.2 + |x|`` (``1 + σ(s) M`` has
real part at least ``e^-1 cos 1 > 0.19`` and modulus at most ``e``, so its log is within
``1.7 + π/2``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gradproof.nn.activations import Activation
from gradproof.nn.power_series import compose, expm1, log1p, product, with_axes

# Bound of |log1p(σ(s) M)| over the unit disc, before the linear term -x v.
_SOFTPLUS_BOUND = 3.2


class ValueAndDelta(Protocol):
    def __call__(
        self, x: np.ndarray, z: np.ndarray, s: np.ndarray, act: Activation,
        out: np.ndarray | None = None, scratch: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray]: ...


class EntriesFn(Protocol):
    def __call__(self, x: np.ndarray, z: np.ndarray, s: np.ndarray,
                 out: np.ndarray | None = None) -> np.ndarray: ...


class RowChangeFn(Protocol):
    def __call__(self, residual: np.ndarray, dz: np.ndarray,
                 out: np.ndarray | None = None) -> np.ndarray: ...


class OutputSeriesFn(Protocol):
    def __call__(self, activation: Activation, x: np.ndarray, z: np.ndarray, s: np.ndarray,
                 order: int) -> tuple[np.ndarray, np.ndarray] | None: ...


@dataclass(frozen=True, kw_only=True)
class Loss:
    """A data term, its gradient, and the elementwise forms and bounds the exact check uses.

    Parameters
    ----------
    name : str
        The user-facing name (the key in ``LOSSES``).
    value : callable
        ``value(x, z, s) -> float``, summed over all entries; not finite where an entry of
        ``x`` is not, for finite ``z`` and ``s``.
    value_and_delta : callable
        ``value_and_delta(x, z, s, activation, out=None, scratch=None) -> (value, d_s)``: the
        value and dJ/ds, shape (batch, n_visible).
    output_activation : str or None
        The output activation this loss requires, or None when any will do.
    entries : callable
        ``entries(x, z, s, out=None) -> array``: the data term of each entry, of the broadcast
        shape of ``x``, ``z`` and ``s``, summing to ``value``; written into ``out`` (a buffer
        of that shape that is none of the arguments) when given, so hot loops reuse buffers.
    magnitude : callable
        ``magnitude(x, z, s) -> array``: a bound on the intermediate values ``entries``
        rounds, entry by entry (so that ``eps * magnitude`` bounds its rounding error).
    row_change : callable or None
        ``row_change(residual, dz, out=None) -> array``: for the base residual ``z - x``
        (n_out,) and output changes ``dz`` (rows, n_out), ``Σ_j [ℓ(z_j + dz_j) - ℓ(z_j)]``
        per row (rows,), by an identity exact in real arithmetic, so that no two loss values
        are subtracted. None where the loss is not a function of ``z - x`` alone.
    series : callable or None
        ``series(activation, x, z, s, order) -> (coefficients, bound) or None``: each entry's
        change ``ℓ(s + v) - ℓ(s)`` in its pre-activation shift ``v`` as a power series,
        coefficients (order + 1, *shape) with ``coefficients[0] = 0``, and the modulus bound
        ``M`` (*shape) of its remainder, at most ``M |v|^(order+1) / (1 - |v|)`` for
        ``|v| < 1``; None (from the function) where the output activation has no series, or
        (as the field) for a loss without one.
    """

    name: str
    value: Callable[[np.ndarray, np.ndarray, np.ndarray], float]
    value_and_delta: ValueAndDelta
    output_activation: str | None
    entries: EntriesFn
    magnitude: EntriesFn
    row_change: RowChangeFn | None
    series: OutputSeriesFn | None


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


def _squared_entries(x: np.ndarray, z: np.ndarray, s: np.ndarray,
                     out: np.ndarray | None = None) -> np.ndarray:
    r = np.subtract(z, x, out=out)
    np.square(r, out=r)
    r *= 0.5
    return r


def _squared_magnitude(x: np.ndarray, z: np.ndarray, s: np.ndarray,
                       out: np.ndarray | None = None) -> np.ndarray:
    # z carries one rounding of size eps*|z|, which reaches 0.5*(z-x)^2 as eps*|z|*|z-x|.
    r = np.abs(z - x)
    return r * (0.5 * r + np.abs(z))


def _squared_row_change(residual: np.ndarray, dz: np.ndarray,
                        out: np.ndarray | None = None) -> np.ndarray:
    # ½(r + dz)² - ½r² = dz (r + dz/2), exactly: a matrix-vector product and a row-wise dot
    # in place of four elementwise passes and a difference of two squares.
    total = np.matmul(dz, residual, out=out)  # (rows,)
    total += 0.5 * np.einsum("ij,ij->i", dz, dz)
    return total


def _squared_series(activation: Activation, x: np.ndarray, z: np.ndarray, s: np.ndarray,
                    order: int) -> tuple[np.ndarray, np.ndarray] | None:
    if activation.series is None:
        return None
    shift = activation.series.coefficients(s, order)  # Δz
    residual = z - x
    coefficients = product(shift, shift) * 0.5
    coefficients += residual * shift
    bound = activation.series.lipschitz  # |Δz| on the unit disc
    return coefficients, bound * (np.abs(residual) + bound / 2)


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


def _cross_entropy_entries(x: np.ndarray, z: np.ndarray, s: np.ndarray,
                           out: np.ndarray | None = None) -> np.ndarray:
    # softplus(s) - x*s as in the value, with softplus(s) = max(s, 0) + log1p(e^-|s|): it
    # never overflows either, and is twice as fast as numpy's logaddexp.
    r = np.abs(s, out=out)
    np.negative(r, out=r)
    np.exp(r, out=r)
    np.log1p(r, out=r)
    r += np.maximum(s, 0.0)
    r -= x * s
    return r


def _cross_entropy_magnitude(x: np.ndarray, z: np.ndarray, s: np.ndarray,
                             out: np.ndarray | None = None) -> np.ndarray:
    return np.logaddexp(0.0, s) + np.abs(x * s)


def _cross_entropy_series(activation: Activation, x: np.ndarray, z: np.ndarray, s: np.ndarray,
                          order: int) -> tuple[np.ndarray, np.ndarray] | None:
    if activation.name != "sigmoid":  # the softplus form holds for a sigmoid output only
        return None
    # softplus(s + v) - softplus(s) = log1p(σ(s) M), M = e^v - 1; less x v.
    m = with_axes(expm1(order), s.ndim)
    coefficients = compose(log1p(order), activation.forward(s) * m)
    coefficients[1] -= x
    return coefficients, _SOFTPLUS_BOUND + np.abs(x)


LOSSES: dict[str, Loss] = {
    "squared": Loss(
        name="squared", value=_squared_value, value_and_delta=_squared_value_and_delta,
        output_activation=None, entries=_squared_entries, magnitude=_squared_magnitude,
        row_change=_squared_row_change, series=_squared_series,
    ),
    "cross_entropy": Loss(
        name="cross_entropy", value=_cross_entropy_value,
        value_and_delta=_cross_entropy_value_and_delta, output_activation="sigmoid",
        entries=_cross_entropy_entries, magnitude=_cross_entropy_magnitude, row_change=None,
        series=_cross_entropy_series,
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


def kl_divergence(rho: float, rho_hat: np.ndarray) -> np.ndarray:
    """KL(rho || rho_hat) of Bernoulli means, entry by entry, for rho_hat in (0, 1)."""
    return rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))


def kl_slope(rho: float, rho_hat: np.ndarray) -> np.ndarray:
    """d KL(rho || rho_hat) / d rho_hat = -rho / rho_hat + (1 - rho) / (1 - rho_hat)."""
    return (1 - rho) / (1 - rho_hat) - rho / rho_hat


def kl_magnitude(rho: float, rho_hat: np.ndarray) -> np.ndarray:
    """A bound on the intermediate values of ``kl_divergence`` (its two log terms), for the
    rounding bound of the exact check."""
    first = np.abs(rho * np.log(rho / rho_hat))
    return first + np.abs((1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
