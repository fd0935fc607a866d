"""The Taylor-remainder test: a gradient check with no step size to choose.

Contract: ``taylor(spec, context, rng) -> TaylorResult`` evaluates the loss along one random
unit direction v of a tensor (see ``probes.unit_direction``) for h = 1, 1/2, 1/4 ... and fits
the order of the remainder r(h) = J(θ+hv) - J(θ) - g·(hv) with ``finite_diff.taylor_fit``:
2 when g is right, 1 when it is wrong, whatever the scale of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradproof.finite_diff import ROUNDING_GROWTH, TaylorFit, taylor_fit
from gradproof.params import TensorSpec
from gradproof.engine.probes import Context, unit_direction

# Steps 2^0, 2^-1, ... at most this many; stop after this many unusable ones in a row.
TAYLOR_MAX_STEPS = 40
TAYLOR_PATIENCE = 3

# A wrong slope leaves a remainder that shrinks like h at the smallest steps clear of rounding
# (order 1, up to 2 where the h² term adds). One that shrinks more slowly over the three
# smallest (an order below this), or changes sign among them, lies beyond the Taylor regime (a
# kink or saturation further than the smallest usable step, the steps below it lost in
# rounding) and says nothing about the slope at the point. A wrong slope whose h² term
# opposes it reads below this order only where its smallest usable step is within a factor 3
# to 8 of the crossover (where h·δ = h²·c), an error within a few times what the direction
# resolves.
SLOPE_ORDER = 0.6


@dataclass(frozen=True)
class TaylorResult:
    """The Taylor test of one tensor along one direction."""

    fit: TaylorFit
    analytic: float  # g·v
    kink: bool  # order 1 on this side, order 2 on the other: g is the other side's slope
    passed: bool
    steps: int  # loss evaluations spent
    direction: np.ndarray  # v, over the tensor's entries in their unrolling order
    entries: bool = False  # the kink was shown by the entries' own one-sided slopes
    shapeless: bool = False  # the remainder is not shaped like a wrong slope's (SLOPE_ORDER)
    beyond: bool = False  # shapeless, and the entries, measured on their own, all agree


def taylor(spec: TensorSpec, context: Context, rng: np.random.Generator) -> TaylorResult:
    """The remainder r(h) = J(θ+hv) - J(θ) - g·(hv) for h = 1, 1/2, 1/4 ... along a random
    unit direction v (see ``unit_direction``): it shrinks like h² when g is right and like h
    when it is wrong.

    An order below 1.5, over the fit and over its three smallest steps, is checked on the
    other side (-v). A wrong slope makes the linear part of the remainder odd: r(-h) ≈ -r(h).
    A kink at θ makes it even instead: order 2 on one side when g is the other side's slope,
    or remainders of the same sign on both sides when g lies between the one-sided slopes (a
    ReLU at 0 in several coordinates). Either is a ``kink``, not a failure.
    """
    support = np.arange(spec.offset, spec.offset + spec.size)
    v = unit_direction(context.center[support], rng)
    fit, remainders, used = _taylor_side(spec, support, v, context)
    analytic = float(context.gradient[support] @ v)
    smallest = _smallest_order(fit, remainders)
    passed = fit.order is None or fit.order >= 1.5 or smallest is not None and smallest >= 1.5
    kink = False
    if not passed:
        other, mirrored, more = _taylor_side(spec, support, -v, context)
        used += more
        k = min(fit.last, mirrored.size - 1)
        even = bool(np.sign(remainders[k]) == np.sign(mirrored[k]))
        kink = other.order is None or other.order >= 1.5 or even
        passed = kink
    shapeless = smallest is not None and smallest < SLOPE_ORDER
    return TaylorResult(fit, analytic, kink, passed, used, v, shapeless=shapeless)


def _smallest_order(fit: TaylorFit, remainders: np.ndarray) -> float | None:
    """The order over the three smallest usable steps alone (None with fewer; -inf where
    the remainder changes sign among them): a wrong slope shows there as order 1 above all,
    while the whole fit's larger steps may reach past a kink or saturation (a float32 loss
    has few usable steps) and read 1.4 for a right one."""
    if fit.points < 3:
        return None
    smallest = remainders[fit.last - 2 : fit.last + 1]
    if np.ptp(np.sign(smallest)) > 0:
        return -np.inf
    # Steps halve: |r| ~ h^p gives |r(4h)| / |r(h)| = 4^p.
    return float(np.log(abs(smallest[0] / smallest[2])) / np.log(4.0))


def _taylor_side(
    spec: TensorSpec, support: np.ndarray, v: np.ndarray, context: Context
) -> tuple[TaylorFit, np.ndarray, int]:
    """Remainders along v for decreasing steps, their fit, and the evaluations spent."""
    objective = context.objective
    dtype = objective.buffer.dtype
    center = context.center[support]
    g = context.gradient[support]
    weight = ROUNDING_GROWTH * context.eps_grad[spec.name] * (np.abs(g) + context.gmax[spec.name])
    margin = context.rule.safety
    steps, remainders, floors = [], [], []
    objective.plan(TAYLOR_MAX_STEPS)
    misses, seen = 0, False
    for k in range(TAYLOR_MAX_STEPS):
        h = 2.0**-k
        point = (center + h * v).astype(dtype)
        d = point.astype(np.float64) - center
        value = objective.at(
            support, point, f"at the parameters moved {h:g} along a random direction of {spec.name}"
        )
        objective.report_progress()
        remainder = value - context.j0 - float(g @ d)
        floor = 2 * context.noise + float(weight @ np.abs(d))
        steps.append(h)
        remainders.append(remainder if np.isfinite(value) else np.nan)
        floors.append(floor)
        if np.isfinite(remainder) and abs(remainder) > margin * floor:
            seen, misses = True, 0
        elif seen:
            misses += 1
            if misses >= TAYLOR_PATIENCE:
                break
    remainders = np.array(remainders)
    fit = taylor_fit(np.array(steps), remainders, np.array(floors), margin)
    return fit, remainders, len(steps)
