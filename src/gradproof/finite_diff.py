"""Finite differences that carry their own error estimates.

Pure functions on arrays of loss values; no loss is called here. A *probe* differentiates the
loss J along one direction: J is evaluated at θ + d₊ and θ + d₋ (d₋ ≈ -d₊, the displacements
as actually stored, after rounding), and ``width`` is the length of d₊ - d₋ along the probe's
direction. Then

    numeric  = (J(θ+d₊) - J(θ+d₋)) / width
    analytic = g·(d₊ - d₋) / width

are the same directional derivative, exactly for the points the loss saw, up to

* truncation, about h²·J'''/6 for a central difference of half-width h, estimated from a
  second difference at 2h (Richardson: the two errors differ by 3·c·h²);
* rounding, about 2·noise_J / width, where noise_J is the loss's own rounding noise (at least
  eps·|J| for each value used, more when measured so by ``noise_level`` or when the loss is
  nondeterministic);
* the analytic gradient's own rounding, about ``ROUNDING_GROWTH``·eps_g·Σ(|g| + max|g|)·|v|.

Steps follow the classic balance of truncation O(h²) against rounding O(eps/h):
h = cbrt(eps)·max(1, |θ|). A comparison passes when |numeric - analytic| is within
``Rule.safety`` times the sum of these estimates (or the user's classic rtol / atol rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Allowance for error growth in the sums that make a gradient entry: a gradient computed in
# precision eps is off by a few eps times the magnitudes summed into it, which a black-box check
# cannot see; the tensor's largest gradient stands in for them. Measured at most 3 for float32
# autoencoder gradients (batches up to 200) against float64.
ROUNDING_GROWTH = 8.0

# "Clearly wrong" at the first step: the disagreement exceeds the rounding tolerance plus the
# one-sided slope difference (curvature or a kink) this many times over.
CLEAR_FACTOR = 100.0

# Differences of J at θ, θ±h, θ±2h that vanish to high order for a smooth function are at
# least half the second difference s(h) when a kink lies within the step (see `richardson`).
KINK_DEPARTURE = 0.5

# How much smaller each step is when an unsure entry (a kink, a loss varying within one step)
# is checked again.
KINK_SHRINK = 64.0

# ECnoise: highest difference order, and the orders whose estimates are pooled.
_NOISE_ORDERS = range(3, 7)
NOISE_POINTS = 9


def step_sizes(x: np.ndarray, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """Central-difference steps h = cbrt(eps) * max(1, |x|), into ``out`` when given (which
    may be ``x`` itself: one array for a large tensor instead of three).

    With truncation c·h² and rounding eps·|J|/h, the total error is smallest at
    h ~ cbrt(3·eps·|J|/|J'''|); lacking J''', the relative scale max(1, |x|) stands in.
    """
    steps = np.abs(x, out=out)
    np.maximum(steps, 1.0, out=steps)
    steps *= np.cbrt(eps)
    return steps


def noise_level(values: np.ndarray) -> float:
    """The standard deviation of the rounding noise in equally spaced loss values.

    The k-th differences of a smooth function shrink like δ^k with the spacing δ, while those
    of independent noise of deviation σ have variance C(2k, k)·σ² (Moré & Wild's ECnoise idea).
    The estimate is the median over orders 3..6 of ``noise_levels``; non-finite input gives 0
    (no evidence).
    """
    levels = noise_levels(values)
    return float(np.median(levels)) if levels else 0.0


def noise_levels(values: np.ndarray) -> list[float]:
    """sqrt(mean(Δ^k f ²) / C(2k, k)) for k = 3..6: each order's estimate of the noise's
    deviation (empty for too few or non-finite values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < max(_NOISE_ORDERS) + 1 or not np.all(np.isfinite(values)):
        return []
    levels = []
    diff = values
    for k in range(1, max(_NOISE_ORDERS) + 1):
        diff = np.diff(diff)
        if k in _NOISE_ORDERS:
            levels.append(math.sqrt(float(np.mean(diff**2)) / math.comb(2 * k, k)))
    return levels


@dataclass(frozen=True)
class Rule:
    """When a difference is small enough.

    Attributes
    ----------
    safety : float
        The default rule: |numeric - analytic| <= safety * (error estimate + analytic rounding).
    rtol, atol : float or None
        The classic rule instead, when either is given:
        |numeric - analytic| <= atol + rtol * max(|analytic|, |numeric|).
    """

    safety: float = 10.0
    rtol: float | None = None
    atol: float | None = None

    @property
    def classic(self) -> bool:
        return self.rtol is not None or self.atol is not None

    def tolerance(
        self, estimate: np.ndarray, rounding: np.ndarray, analytic: np.ndarray, numeric: np.ndarray
    ) -> np.ndarray:
        """The tolerance of each comparison."""
        if self.classic:
            scale = np.maximum(np.abs(analytic), np.abs(numeric))
            return (self.atol or 0.0) + (self.rtol or 0.0) * scale
        return self.safety * (np.asarray(estimate) + rounding)

    def describe(self) -> str:
        if self.classic:
            return f"|a - n| <= {self.atol or 0:g} + {self.rtol or 0:g} * max(|a|, |n|)"
        return (
            f"|a - n| <= {self.safety:g} x (finite-difference error estimate + gradient rounding)"
        )


@dataclass(frozen=True)
class Differences:
    """Central differences of a batch of probes at one step, with their rounding estimates.

    Attributes
    ----------
    error : ndarray
        numeric - analytic.
    analytic : ndarray
        The analytic directional derivative g·(d₊ - d₋)/width.
    rounding : ndarray
        The error the loss's rounding noise can cause in ``error``: 2·noise_J / width.
    second : ndarray
        The second difference J(θ+d₊) - 2J(θ) + J(θ+d₋) (about h²·J'', or a jump at a kink).
    curvature : ndarray
        |second| / (width/2): how far the one-sided slopes differ.
    forward, backward : ndarray
        One-sided errors: (J(θ+d₊) - J(θ) - g·d₊)/(width/2) and (J(θ) - J(θ+d₋) + g·d₋)/(width/2).
    half_width : ndarray
        The step h (width / 2).
    """

    error: np.ndarray
    analytic: np.ndarray
    rounding: np.ndarray
    second: np.ndarray
    curvature: np.ndarray
    forward: np.ndarray
    backward: np.ndarray
    half_width: np.ndarray

    @property
    def numeric(self) -> np.ndarray:
        return self.analytic + self.error

    def take(self, rows: np.ndarray | slice) -> Differences:
        """The differences of the probes ``rows``."""
        return Differences(*(getattr(self, key)[rows] for key in Differences.__dataclass_fields__))


def central(
    j_plus: np.ndarray,
    j_minus: np.ndarray,
    j0: float,
    g_plus: np.ndarray,
    g_minus: np.ndarray,
    width: np.ndarray,
    noise: float,
    eps: float,
) -> Differences:
    """Central (and one-sided) differences of probes whose loss values are known.

    Parameters
    ----------
    j_plus, j_minus : ndarray of shape (n,)
        J(θ + d₊), J(θ + d₋).
    j0 : float
        J(θ).
    g_plus, g_minus : ndarray of shape (n,)
        g·d₊ and g·d₋.
    width : ndarray of shape (n,)
        Length of d₊ - d₋ along each probe's direction.
    noise : float
        The loss's rounding noise at the base point (absolute).
    eps : float
        The machine epsilon of the loss's arithmetic: each value J carries rounding of at
        least eps·|J|, which matters where J(θ) itself is near zero.
    """
    half = width / 2
    own = eps * np.maximum(np.abs(j_plus), np.abs(j_minus))
    return Differences(
        error=((j_plus - j_minus) - (g_plus - g_minus)) / width,
        analytic=(g_plus - g_minus) / width,
        rounding=2 * np.maximum(noise, own) / width,
        second=(j_plus - j0) + (j_minus - j0),
        curvature=np.abs((j_plus - j0) + (j_minus - j0)) / half,
        forward=((j_plus - j0) - g_plus) / half,
        backward=((j0 - j_minus) + g_minus) / half,
        half_width=half,
    )


def entry_differences(
    plus: np.ndarray, minus: np.ndarray, analytic: np.ndarray, h: np.ndarray, rounding: np.ndarray
) -> Differences:
    """Central differences of entry probes from the changes J(θ ± h e) - J(θ) themselves.

    The form of ``central`` for an evaluator that measures each change directly from J(θ)
    (local differences, which never form J(θ ± h e) whole): J(θ) is the origin, g·d± is
    ±analytic·h, and each entry carries its own rounding bound of ``plus - minus`` instead of
    one loss noise for all.

    Parameters
    ----------
    plus, minus : ndarray of shape (n,)
        J(θ + h e) - J(θ) and J(θ - h e) - J(θ).
    analytic : ndarray of shape (n,)
        The gradient entries.
    h : ndarray of shape (n,)
        The steps.
    rounding : ndarray of shape (n,)
        A bound of the rounding of ``plus - minus``.
    """
    width = 2 * h
    second = plus + minus
    return Differences(
        error=(plus - minus) / width - analytic,
        analytic=analytic,
        rounding=rounding / width,
        second=second,
        curvature=np.abs(second) / h,
        forward=(plus - analytic * h) / h,
        backward=(-minus - analytic * h) / h,
        half_width=h,
    )


def first_verdict(
    first: Differences, rounding_g: np.ndarray, rule: Rule
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decide what one step can decide.

    Returns
    -------
    passed : ndarray of bool
        Within the rounding tolerance: truncation cannot make a wrong derivative agree this
        closely except by coincidence, so no second step is spent.
    failed : ndarray of bool
        Off by more than ``CLEAR_FACTOR`` times the rounding tolerance plus the one-sided slope
        difference (which reveals curvature and kinks): only a function varying on the scale
        of a few steps has truncation that large. The caller confirms this on a sample.
    tolerance : ndarray
        The tolerance used for ``passed``.
    """
    tolerance = rule.tolerance(first.rounding, rounding_g, first.analytic, first.numeric)
    size = np.abs(first.error)
    passed = size <= tolerance
    bound = rule.safety * (first.rounding + rounding_g) + first.curvature
    failed = ~passed & (size > CLEAR_FACTOR * bound)
    return passed, failed, tolerance


@dataclass(frozen=True)
class Extrapolated:
    """Richardson extrapolation of two central differences at h and 2h."""

    error: np.ndarray  # numeric - analytic with the h² truncation removed
    estimate: np.ndarray  # its error estimate: truncation + rounding
    kink: np.ndarray  # bool: the second differences do not scale like a smooth function's


def richardson(
    first: Differences, second: Differences, noise: float, safety: float
) -> Extrapolated:
    """Combine the differences at h (``first``) and 2h (``second``).

    The errors are e(h) = δ + c·h² and e(2h) = δ + 4c·h², so δ = (4·e(h) - e(2h))/3, with
    truncation error at most about |e(h) - e(2h)|/3 and rounding 1.5 times that of e(h).

    A kink shows in the two combinations of the five values that vanish to high order for a
    smooth function, compared with the second difference s(h) ≈ h²·J'': the even one
    s(2h) - 4·s(h) (the 4th difference, ≈ h⁴·J⁗) and the odd one 4h·|n(2h) - n(h)|
    (≈ 2h³·J‴), n the numeric derivatives. For |x - t| with the kink at t = τ·h, τ in [0, 1),
    they are |6τ - 4| and 2τ against s(h) = 2 - 2τ: the larger is never below s(h)/2, so
    flagging either beyond ``KINK_DEPARTURE``·|s(h)| (and beyond the noise: 16·noise_J bounds
    their rounding, times ``safety``) finds the kink wherever it lies within the step.

    A kink is a property of the loss, so both combinations use loss values only. The errors
    e = n - a would not do: the direction the buffer stores differs from step to step by
    rounding, and a wrong gradient's error along it, (g_true - g)·u, changes with it by an
    amount that grows with the gradient's error, mimicking J‴.
    """
    error = (4 * first.error - second.error) / 3
    truncation = np.abs(first.error - second.error) / 3
    estimate = truncation + 1.5 * first.rounding
    even = np.abs(second.second - 4 * first.second)
    odd = 4 * first.half_width * np.abs(second.numeric - first.numeric)
    departure = np.maximum(even, odd)
    kink = departure > np.maximum(KINK_DEPARTURE * np.abs(first.second), 16 * noise * safety)
    return Extrapolated(error=error, estimate=estimate, kink=kink)


def between_slopes(small: Differences, tolerance: np.ndarray) -> np.ndarray:
    """Whether the analytic value lies between the two one-sided slopes (within tolerance):
    what a correct (sub)gradient does at a kink."""
    opposite = small.forward * small.backward <= 0
    near = np.minimum(np.abs(small.forward), np.abs(small.backward)) <= tolerance
    return opposite | near


def relative_error(error: np.ndarray, scale: np.ndarray, out: np.ndarray | None = None
                   ) -> np.ndarray:
    """The classic |a - n| / max(|a|, |n|) from ``error = |a - n|`` and ``scale = max(|a|,
    |n|)``, which a verdict has at hand anyway (0 where the scale is 0: both values are 0, and
    where it is NaN); into ``out`` where given, which may be ``scale`` itself."""
    positive = scale > 0
    # Divided everywhere, then the few others set (a masked divide is 15x slower).
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.divide(error, scale, out=out)
    if not positive.all():
        relative[~positive] = 0.0
    return relative


@dataclass(frozen=True)
class TaylorFit:
    """The Taylor-remainder test along one direction.

    Attributes
    ----------
    order : float or None
        The fitted exponent p in |J(θ+hv) - J(θ) - h·g·v| ~ h^p over the smallest steps whose
        remainder stands clear of rounding: 2 when g is right, 1 when it is wrong. None when
        fewer than two steps do (the remainder is at rounding level: g·v is right to rounding).
    points : int
        How many steps the fit used.
    derivative_error : float
        Estimated (true - analytic) directional derivative, extrapolated to h = 0 from the two
        smallest usable steps (0 when there are none).
    bound : float
        The rounding bound on ``derivative_error`` at the smallest usable step.
    last : int or None
        The position (in the steps given) of the smallest usable step.
    """

    order: float | None
    points: int
    derivative_error: float
    bound: float
    last: int | None = None


# Steps used for the fit: the smallest ones whose remainder stands clear of rounding.
TAYLOR_FIT_POINTS = 6


def taylor_fit(
    steps: np.ndarray, remainder: np.ndarray, floor: np.ndarray, margin: float
) -> TaylorFit:
    """Fit the order of the Taylor remainder.

    Parameters
    ----------
    steps : ndarray of shape (m,)
        Decreasing step lengths h.
    remainder : ndarray of shape (m,)
        Signed J(θ + h·v) - J(θ) - g·(h·v) (NaN where J was not finite).
    floor : ndarray of shape (m,)
        The rounding level of each remainder.
    margin : float
        A remainder is usable when above ``margin`` times its floor.
    """
    size = np.abs(remainder)
    usable = np.isfinite(size) & (size > margin * floor)
    if not usable.any():
        return TaylorFit(None, 0, 0.0, float(np.min(margin * floor / steps)))
    last = int(np.flatnonzero(usable)[-1])
    first = last
    while first > 0 and usable[first - 1] and last - first + 1 < TAYLOR_FIT_POINTS:
        first -= 1
    window = slice(first, last + 1)
    h, r = steps[window], size[window]
    bound = float(margin * floor[last] / steps[last])
    if h.size < 2:
        return TaylorFit(None, 1, float(remainder[last] / steps[last]), bound, last)
    order = float(np.polyfit(np.log(h), np.log(r), 1)[0])
    # e(h) = remainder/h = δ + c·h: extrapolate the two smallest steps to h = 0.
    (h1, h2), (e1, e2) = (
        steps[last - 1 : last + 1],
        remainder[last - 1 : last + 1] / steps[last - 1 : last + 1],
    )
    delta = float((h1 * e2 - h2 * e1) / (h1 - h2))
    return TaylorFit(order, int(h.size), delta, bound, last)
