"""One-sided slopes: the evidence that settles a probe whose central difference crossed a kink.

Contract: pure functions on the one-sided slopes of the same probes at steps s, s/2 and s/4.
``side(...)`` reads one side's (forward or backward) as a ``Side``: whether
they follow a smooth function (their error linear in the step), and the slope extrapolated to
a zero step with its error estimate. ``judge(...)`` turns both sides into a ``Judgement``.

Why one-sided: a central difference averages the two sides, so a kink anywhere within its step
(a ReLU pre-activation at 0 or 1e-9 from it) spoils it at every step larger than the kink's
distance. The side whose steps cross no kink is smooth, and its slope is the derivative there.
A side is smooth when its one-sided slopes n(s) = J' + a·s + b·s² change linearly as the step
halves: d₂ = n(s/2) - n(s/4) is about d₁/2, d₁ = n(s) - n(s/2); the remaining curvature
|d₁/2 - d₂| = 3|b|s²/16 is about 1.5 times the truncation left in the extrapolated slope
2·n(s/4) - n(s/2) = J' - b·s²/8, which makes it the estimate. A side that crosses a kink at
distance t < s/4 has n(s) ≈ c + K/s instead, where |d₁/2 - d₂| is three times |d₁|/2.

A probe then

* passes when one smooth side matches the analytic value (at a kink at the point a
  hand-written gradient takes one side's slope, e.g. relu'(0) = 0);
* fails when both sides are smooth, agree with each other (no kink within the step) and
  disagree with the analytic value by more than the spread of every extrapolated one-sided
  slope measured (which bounds what kinks crossed on both sides, hidden in rounding, could
  explain: several units at their kink at once can put a correct gradient outside both
  slopes nearest the point, by up to what the slopes further out differ by), and no step
  showed the slope change at the point (both sides smooth and ``POINT_GAP`` times their
  estimates apart): several units at their kink there at once can put a correct gradient
  outside both slopes, and close to them (stress seed 316's W1[25, 10]: 1.1e-4 and 0.99e-4
  from its sides, which differ by 1.9e-5 against estimates of 2.3e-6 and 3e-7, within their
  tolerances);
* is otherwise left to a smaller step or excluded with a ``kink`` note: with both sides smooth
  and different, the kink is at the point, where several units at 0 at once make a correct
  gradient lie anywhere, even outside both one-sided slopes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradproof.finite_diff import Rule


# A side is smooth while |d₁/2 - d₂| stays within this fraction of |d₁|/2: about (3/4)(b/a)s
# for a smooth function at a small step, 3 across a kink at a distance t < s/4.
SMOOTH_CURVE = 0.5

# Two smooth sides further apart than this many times their error estimates have different
# slopes: the slope changes at the point itself, even where their tolerances overlap.
POINT_GAP = 2.0


@dataclass(frozen=True)
class Side:
    """One side's one-sided slopes at s, s/2, s/4, read as a smooth function's.

    Attributes
    ----------
    smooth : ndarray of bool
        The errors change linearly with the step (within rounding): no kink on this side.
    error : ndarray
        The extrapolated one-sided slope minus the analytic value.
    estimate : ndarray
        The error estimate of ``error``: the remaining curvature plus rounding.
    """

    smooth: np.ndarray
    error: np.ndarray
    estimate: np.ndarray


def side(n1: np.ndarray, n2: np.ndarray, n4: np.ndarray, analytic: np.ndarray,
         rounding: np.ndarray, safety: float) -> Side:
    """Read one side's one-sided slopes n(s), n(s/2), n(s/4) (see the module docstring).

    Slopes, not their errors n - a: the loss alone has or has not a kink, while a wrong
    gradient's error along a stored direction changes from step to step with that direction's
    rounding (see ``finite_diff.richardson``). ``analytic`` is the value compared with, and
    ``rounding`` the rounding of n(s) (each n(s/k) has k times as much): twice the central
    difference's, since a one-sided difference divides two loss values' noise by s, not 2s.
    """
    d1, d2 = n1 - n2, n2 - n4
    curve = np.abs(d1 / 2 - d2)
    # The rounding of d1/2 - d2 = n1/2 - 1.5 n2 + n4 and of 2 n4 - n2.
    curve_rounding = (0.5 + 1.5 * 2 + 4) * rounding
    smooth = curve <= SMOOTH_CURVE * np.abs(d1) / 2 + safety * curve_rounding
    return Side(smooth, 2 * n4 - n2 - analytic, curve + (2 * 4 + 2) * rounding)


@dataclass(frozen=True)
class Judgement:
    """What the one-sided slopes say of each probe."""

    passed: np.ndarray  # a smooth side matches where a kink was seen, resolving the earlier error
    failed: np.ndarray  # both sides smooth, agreeing with each other, not with the analytic
    at_point: np.ndarray  # both sides smooth but different: a kink at the point itself
    point: np.ndarray  # this step or an earlier one showed the slope change at the point
    kink: np.ndarray  # the sides differ, or one is not smooth: a kink within the step
    blind: np.ndarray  # neither side's tolerance resolves the earlier error: no smaller step will
    kept: np.ndarray  # no kink seen at all: the sharper central difference's verdict stands
    error: np.ndarray  # the side that decided (the sharper one where neither did)
    estimate: np.ndarray
    tolerance: np.ndarray


def judge(analytic: np.ndarray, spread: np.ndarray, forward: Side, backward: Side,
          previous: np.ndarray, kinked: np.ndarray, rounding_g: np.ndarray,
          rule: Rule, point: np.ndarray) -> Judgement:
    """Decide probes from both sides' slopes. ``spread`` is the range of all extrapolated
    one-sided slopes measured for each probe (at every step tried); ``point``: an earlier step
    showed the slope change at the point; ``previous`` the smallest |error| measured before: a
    tolerance that cannot tell it from zero makes a match vacuous; ``kinked``: a kink was seen
    before. Without a kink a central difference, whose truncation is a step's square, not a
    step, is the sharper measurement: a one-sided match does not overrule it."""
    sides = []
    for s in (forward, backward):
        tolerance = rule.tolerance(s.estimate, rounding_g, analytic, analytic + s.error)
        match = s.smooth & (np.abs(s.error) <= tolerance) & (tolerance < previous)
        sides.append((s, tolerance, match))
    (f, f_tol, f_match), (b, b_tol, b_match) = sides
    both = f.smooth & b.smooth
    agree = both & (np.abs(f.error - b.error) <= f_tol + b_tol)
    kink = kinked | ~agree
    passed = (f_match | b_match) & kink
    # Kinks crossed on both sides can leave each side looking smooth within rounding (a float32
    # loss crosses many within one step) while the slope at the point differs from theirs by
    # up to the spread of the slopes: a failure must stand clear of it.
    point = point | both & (np.abs(f.error - b.error) > POINT_GAP * (f.estimate + b.estimate))
    failed = ~passed & agree & ~point & (np.abs(f.error) > f_tol + spread) & (
        np.abs(b.error) > b_tol + spread
    )
    # The deciding side: the matching one, else the one with the smaller tolerance.
    use_f = f_match | ~b_match & (f_tol <= b_tol)
    return Judgement(
        passed,
        failed,
        both & (~agree | point) & ~passed,
        point,
        ~agree,
        (f_tol >= previous) & (b_tol >= previous),
        ~kink & ~failed,
        np.where(use_f, f.error, b.error),
        np.where(use_f, f.estimate, b.estimate),
        np.where(use_f, f_tol, b_tol),
    )
