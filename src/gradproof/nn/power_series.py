"""Truncated power series, the arithmetic of the activations' and losses' shift series.

Contract: a series is an array ``c`` of shape (order + 1, *shape) standing for
``Σ_k c[k] v^k`` entry by entry, truncated after ``v^order``. ``product`` and ``compose`` are
its arithmetic; ``expm1``, ``log1p``, ``reciprocal_one_plus`` and ``tanh_of_shift`` are the
scalar series of ``e^v - 1``, ``log(1 + y)``, ``1 / (1 + y)`` and ``tanh v``, which
``with_axes`` shapes to broadcast against the arrays of a base point.
"""

from __future__ import annotations

import math

import numpy as np


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


def expm1(order: int) -> list[float]:
    """e^v - 1 = Σ_{k>=1} v^k / k!"""
    return [0.0] + [1.0 / math.factorial(k) for k in range(1, order + 1)]


def log1p(order: int) -> list[float]:
    """log(1 + y) = Σ_{n>=1} (-1)^(n+1) y^n / n"""
    return [0.0] + [(-1.0) ** (n + 1) / n for n in range(1, order + 1)]


def reciprocal_one_plus(order: int) -> list[float]:
    """1 / (1 + y) = Σ_n (-y)^n"""
    return [(-1.0) ** n for n in range(order + 1)]


def tanh_of_shift(order: int) -> np.ndarray:
    """tanh v = E / (2 + E) with E = e^(2v) - 1, as a scalar series."""
    half = np.asarray([c * 2.0**k / 2 for k, c in enumerate(expm1(order))])  # E / 2
    return product(half, compose(reciprocal_one_plus(order), half))


def with_axes(coefficients: list[float] | np.ndarray, ndim: int) -> np.ndarray:
    """A scalar series as float64, shaped to broadcast against arrays of ``ndim`` dimensions."""
    return np.asarray(coefficients, dtype=np.float64).reshape((-1,) + (1,) * ndim)
