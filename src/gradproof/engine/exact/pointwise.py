"""Forward-only, elementwise pieces of the autoencoder objective, for local differences.

Contract: ``PointwiseLoss.value(x, z, s, out=None) -> array`` is the data term of each output
entry, so that ``value(x, z, s).sum()`` is ``LOSSES[name].value(x, z, s)`` (written into
``out``, a buffer of the broadcast shape that is none of the arguments, when given, so that hot
loops can reuse their buffers); ``PointwiseLoss.magnitude``
bounds the size of the intermediate quantities its evaluation rounds, entry by entry (so that
``eps * magnitude`` bounds its rounding error). ``PointwiseLoss.row_change(r, dz, out)``, where a
loss has one, gives ``Σ_j [ℓ(z_j + dz_j) - ℓ(z_j)]`` per row of output changes ``dz`` directly
from the base residual ``r = z - x``: an identity exact in real arithmetic, so the hot loop never
forms two loss values to subtract them. ``kl_divergence(rho, rho_hat)`` is the sparsity
penalty of each code unit. Nothing here is a derivative: the exact check evaluates these at
perturbed points and takes differences, so it stays independent of the backprop it checks.

The registry in ``gradproof.nn.losses`` sums over all entries, which a difference of local
terms cannot use; these are written from the same definitions, and the tests pin their sums to
the registry's values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class PointwiseFn(Protocol):
    def __call__(self, x: np.ndarray, z: np.ndarray, s: np.ndarray,
                 out: np.ndarray | None = None) -> np.ndarray: ...


class RowChangeFn(Protocol):
    def __call__(self, residual: np.ndarray, dz: np.ndarray,
                 out: np.ndarray | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class PointwiseLoss:
    """The data term of one output entry, and the scale of its rounding error.

    Parameters
    ----------
    name : str
        The key in ``gradproof.nn.losses.LOSSES`` this mirrors.
    value : callable
        ``value(x, z, s, out=None) -> array`` of the broadcast shape of targets ``x``, outputs
        ``z`` and output pre-activations ``s``.
    magnitude : callable
        ``magnitude(x, z, s) -> array``: a bound on the intermediate values of ``value``.
    row_change : callable or None
        ``row_change(residual, dz, out=None) -> array``: for the base residual ``z - x``
        (n_out,) and output changes ``dz`` (rows, n_out), the change of the summed data term of
        each row (rows,). None where the loss is not a function of ``z`` alone.
    """

    name: str
    value: PointwiseFn
    magnitude: PointwiseFn
    row_change: RowChangeFn | None = None


def _squared(x: np.ndarray, z: np.ndarray, s: np.ndarray,
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


def _cross_entropy(x: np.ndarray, z: np.ndarray, s: np.ndarray,
                   out: np.ndarray | None = None) -> np.ndarray:
    # -[x log σ(s) + (1-x) log(1-σ(s))] = softplus(s) - x*s, finite even where σ(s) rounds to 0
    # or 1; softplus(s) = max(s, 0) + log1p(e^-|s|) never overflows (and is twice as fast as
    # numpy's logaddexp).
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


POINTWISE_LOSSES: dict[str, PointwiseLoss] = {
    "squared": PointwiseLoss("squared", _squared, _squared_magnitude, _squared_row_change),
    "cross_entropy": PointwiseLoss("cross_entropy", _cross_entropy, _cross_entropy_magnitude),
}

def _sigmoid_of_negated(v: np.ndarray) -> np.ndarray:
    # σ(s) = 1 / (1 + e^-s) from v = -s, in place: the arithmetic of the registry's sigmoid
    # (negation is exact, so the values are the same bits) without its negation pass.
    with np.errstate(over="ignore"):  # e^-s = inf where s < -709: 1 / inf = 0, the limit
        np.exp(v, out=v)
    v += 1.0
    return np.divide(1.0, v, out=v)


# Activations that can be evaluated in place from the negated pre-activation, which a hot loop
# can form at no cost (in the same matrix product as the pre-activation itself).
NEGATED_FORWARDS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid_of_negated,
}

# Activations with a kink: name -> the pre-activation where the slope jumps. A central
# difference whose two points straddle it measures a chord, not a derivative.
KINKS: dict[str, float] = {"relu": 0.0}


def kl_divergence(rho: float, rho_hat: np.ndarray) -> np.ndarray:
    """KL(rho || rho_hat) of Bernoulli means, entry by entry, for rho_hat in (0, 1)."""
    return rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))


def kl_magnitude(rho: float, rho_hat: np.ndarray) -> np.ndarray:
    """A bound on the intermediate values of ``kl_divergence`` (its two log terms)."""
    first = np.abs(rho * np.log(rho / rho_hat))
    return first + np.abs((1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
