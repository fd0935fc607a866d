"""Entries behind several kinks at once, judged together: the gradients of the cones around the
point.

Contract: ``judge_cones(loss, scale, entries, value, noise, goal, budget, rng) -> Cones``
takes the loss as a function of a move of every entry of the point, each entry's scale
(max(1, |θ_e|)), the positions of the judged entries, the analytic gradient over them, the
loss's rounding, the tolerance a verifying circle must reach, a budget of loss evaluations and
a generator; it says whether the value is one a correct gradient can take there (``inside``
True), is none of them (False), or could not be told (None), with the evidence.
``one_entry(cones, value)`` names the entry that alone explains a departure.

Why: where K relu units (or abs, or any piecewise-linear piece) sit at their kink at the
point, the loss near it is, to first order, f(θ + v) = f₀ + g·v + Σ_h c_h relu(a_h·v): every
direction v lies in one of the cones the hyperplanes a_h·v = 0 cut, and inside one the loss
is smooth with gradient G = g + Σ_{h: a_h·v > 0} c_h a_h. A correct gradient takes each
unit's derivative at its kink from its left or right side or between (relu'(0) = 0, 1 or
1/2, sign(0) = 0): it is g + Σ_h r_h c_h a_h for some r in [0, 1]^K, a zonotope. Along one
entry at a time the values a correct gradient takes are sums of subsets of K jumps, which
for the 10 to 30 units of a batch that a first-layer entry feeds fill every value between
the one-sided slopes: no single-entry scan tells a wrong entry from a right one there. Over
all the entries together they do not: a half circle from a random direction u to -u at a
small radius δ crosses each hyperplane exactly once, the gradient over the judged entries
changes by d_h = ±c_h a_h at each crossing, and the zonotope is G(u) + Σ_h [0, 1] d_h,
whatever the signs. A gradient outside it (by more than what the measurement leaves) is
wrong however the code treats its kinks; one inside it is one a correct gradient can take.

How: the circle moves every entry (the judged ones by ``RADIUS`` of their scale, the others
``OTHERS`` times less), so that units whose hyperplanes coincide over the judged entries
alone cross apart. The crossings are found where a directional derivative along a random
direction over the judged entries changes, by bisection, each interval probed with a step a
fixed fraction of its own width (a step that straddles a hyperplane smears the change over
the probe's width, not further); crossings closer than ``NARROWEST`` are taken as one. Between
crossings each cone's gradient is measured by central differences at points inside it, and
the smooth part's drift along the circle (harmonics of λ up to the second) is fitted away
over all cones at once. A kink off the point (a unit 1e-9 off its kink) is crossed twice or
not at all, and its pair of opposite jumps is left out. The value's distance from the
zonotope is a linear program (the smallest s with |D t - (value - G₀)| ≤ s·τ entrywise for
some t in [0, 1]^K, τ each entry's measurement error, ``SAFETY`` times its rounding); a
failure is told only where the other half of the circle crosses each kink again with the
opposite jump (a unit at its kink fed by another at its kink is no hyperplane, and its jumps
depend on the side of the other it is crossed on) and two circles crossed the same kinks;
a verdict inside only by a kink that moves one judged entry alone (which lets that entry take
anything between its sides) is not told.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# The circle's radius, per judged entry, relative to each entry's scale: far above a float64
# step's rounding, small enough that the smooth part's drift along the circle is its first
# harmonics.
RADIUS = 1e-5

# How much less the other entries move than the judged ones: enough that units two of whose
# hyperplanes coincide over the judged entries alone (relu units of one column of a first
# layer, moved by its bias alone) cross apart, little enough that kinks the judged entries do
# not reach stay far.
OTHERS = 0.1

# The circle is first sampled at this many intervals, and crossings are found to within
# RESOLUTION of it (in radians) at most.
GRID = 64
RESOLUTION = 1e-5

# Crossings closer than this (radians) are taken as one.
NARROWEST = 1e-3

# A directional probe's step, relative to the radius and to the width of the interval it
# probes; a cone's gradient's step, relative to the radius and to the cone's half width.
PROBE_STEP = 1e-2
CONE_STEP = 0.25

# The slope's drift between crossings allowed, in times its median over the first grid.
DRIFT = 3.0

# How many times a cone's step is shortened (fourfold) while its one-sided slopes disagree.
HALVINGS = 3

# Differences are told from rounding beyond this many times it.
SAFETY = 10.0

# Circles drawn at most for one verdict.
CIRCLES = 6

# At most this many crossings on a circle (a linear program in as many unknowns).
MAX_CROSSINGS = 64

Loss = Callable[[np.ndarray], float]  # a move of every entry of the point -> the loss


@dataclass(frozen=True)
class Cones:
    """What the cones around the point say of a gradient over some entries.

    Attributes
    ----------
    inside : bool or None
        True: the value is one a correct gradient can take; False: none is; None: not told.
    crossings : int
        The kinks the circle crossed.
    residual : ndarray or None
        Each entry's distance from the nearest value a correct gradient takes (where
        ``inside`` is not None), ``tolerance`` the measurement error allowed each entry.
    jumps : ndarray or None
        The gradient's change at each crossing (entries x crossings), ``jump_error`` their
        errors, ``start`` the gradient in the cone the circle starts in.
    alone : bool
        Whether the value lay inside only by a kink that moves one entry alone (not told).
    evaluations : int
        Loss evaluations spent.
    """

    inside: bool | None
    crossings: int = 0
    residual: np.ndarray | None = None
    tolerance: np.ndarray | None = None
    jumps: np.ndarray | None = None
    jump_error: np.ndarray | None = None
    start: np.ndarray | None = None
    alone: bool = False
    evaluations: int = 0


class _Circle:
    """The loss at points of the circle δ·scale·(cos λ u + sin λ w), λ in [0, 2π), in
    the space of every entry (where distinct units' hyperplanes are distinct: restricted to
    some entries, two units moved by one entry alone would share one), and the gradient over
    the judged ``entries`` there."""

    def __init__(self, loss: Loss, scale: np.ndarray, entries: np.ndarray, noise: float,
                 limit: int, rng: np.random.Generator):
        self.loss, self.scale, self.entries, self.noise = loss, scale, entries, noise
        self.limit = limit
        size = scale.size
        # The judged entries move by RADIUS of their scale, the others by OTHERS times less.
        weight = np.full(size, OTHERS)
        weight[entries] = 1.0
        u = weight * rng.standard_normal(size)
        u /= np.linalg.norm(u)
        w = weight * rng.standard_normal(size)
        w -= (w @ u) * u
        w /= np.linalg.norm(w)
        self.u, self.w = u, w
        self.radius = RADIUS * np.sqrt(np.sum(weight**2))
        probe = np.zeros(size)
        probe[entries] = rng.standard_normal(entries.size)
        self.probe = probe / np.linalg.norm(probe)
        self.evaluations = 0

    def at(self, lam: float, radius: float) -> np.ndarray:
        return radius * self.scale * (np.cos(lam) * self.u + np.sin(lam) * self.w)

    def value(self, v: np.ndarray) -> float:
        if self.evaluations >= self.limit:
            raise _Untold
        self.evaluations += 1
        value = float(self.loss(v))
        if not np.isfinite(value):
            raise _Untold
        return value

    def slope(self, lam: float, radius: float, width: float) -> tuple[float, float]:
        """The directional derivative along ``probe`` at λ and ``radius``, probed with a step
        that fits an interval of ``width``, and its rounding."""
        step = PROBE_STEP * radius * width
        point, along = self.at(lam, radius), step * self.scale * self.probe
        slope = (self.value(point + along) - self.value(point - along)) / (2 * step)
        return slope, self.noise / step

    def gradient(self, lam: float, radius: float, half_width: float,
                 ) -> tuple[np.ndarray, np.ndarray] | None:
        """Central differences of the judged entries at λ and ``radius``, with steps inside
        the cone (shortened while the one-sided slopes disagree), and their rounding; None
        where they never agree."""
        point = self.at(lam, radius)
        center = self.value(point)
        step = CONE_STEP * radius * half_width
        for _ in range(HALVINGS + 1):
            h = step * self.scale[self.entries]
            plus, minus = (np.array([self.value(self._moved(point, e, sign * h[k]))
                                     for k, e in enumerate(self.entries)])
                           for sign in (1.0, -1.0))
            rounding = self.noise / h
            # The one-sided slopes agree but for their rounding unless a step straddles a
            # hyperplane (or the curvature over it exceeds the rounding: a shorter step then).
            spread = np.abs(plus - 2 * center + minus) / h
            if np.all(spread <= SAFETY * 4 * rounding):
                return (plus - minus) / (2 * h), rounding
            step /= 4
        return None

    @staticmethod
    def _moved(point: np.ndarray, entry: int, step: float) -> np.ndarray:
        moved = point.copy()
        moved[entry] += step
        return moved


def judge_cones(loss: Loss, scale: np.ndarray, entries: np.ndarray, value: np.ndarray,
                noise: float, goal: float, budget: int, rng: np.random.Generator) -> Cones:
    """Whether ``value`` is a gradient a correct code can give over these entries (see the
    module docstring), from half circles through random directions.

    A circle holding the value within ``goal`` (or less) verifies it; two that do not hold it
    and crossed the same kinks fail it (a crossing one circle merged with another, or missed,
    is apart on the other). Circles are drawn while neither is so, up to ``CIRCLES`` of them
    or ``budget`` loss evaluations, and then nothing is told: a circle that holds the value
    only within a wider tolerance (two crossings close together leave a narrow cone, measured
    coarsely) could not have seen an error the size of ``goal``. A value inside only by a
    kink that moves one entry alone is not told either, and no more circles are drawn: every
    circle crosses that kink."""
    outside: list[Cones] = []
    spent = 0
    for _ in range(CIRCLES):
        if spent >= budget:
            break
        found = _one_circle(loss, scale, entries, value, noise, goal, budget - spent, rng)
        spent += found.evaluations
        if found.inside and np.max(found.tolerance) <= goal:
            return dataclasses.replace(found, evaluations=spent)
        if found.alone:  # every circle crosses those kinks: none can verify the value
            return Cones(None, evaluations=spent)
        if found.inside is False:
            agreeing = next((other for other in outside if _same_kinks(found, other)), None)
            if agreeing is not None:
                return dataclasses.replace(min(found, agreeing, key=_looseness),
                                           evaluations=spent)
            outside.append(found)
    return Cones(None, evaluations=spent)


def _same_kinks(one: Cones, other: Cones) -> bool:
    """Whether two circles crossed the same kinks: each jump of one is, up to its sign, a jump
    of the other (kinks that are hyperplanes through the point are crossed once by every half
    circle, with the same jump up to sign; a kink off the point, crossed twice, shows a jump
    and its opposite: such pairs are set aside)."""
    first = _kinks_at_point(one.jumps, one.jump_error)
    second = _kinks_at_point(other.jumps, other.jump_error)
    if len(first) != len(second):
        return False
    for jump, error in first:
        match = next((k for k, (other_jump, other_error) in enumerate(second)
                      if _same_or_opposite(jump, other_jump, error + other_error)), None)
        if match is None:
            return False
        second.pop(match)
    return True


def _same_or_opposite(jump: np.ndarray, other: np.ndarray, error: np.ndarray) -> bool:
    return bool(np.all(np.abs(jump - other) <= error) or np.all(np.abs(jump + other) <= error))


def _kinks_at_point(jumps: np.ndarray, jump_error: np.ndarray,
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Jumps (entries x crossings), less those within their error and pairs of opposite
    ones."""
    return [(jumps[:, k], jump_error[:, k]) for k in _unpaired(jumps, jump_error)
            if np.any(np.abs(jumps[:, k]) > jump_error[:, k])]


def _unpaired(jumps: np.ndarray, jump_error: np.ndarray) -> list[int]:
    """The crossings whose jump no later or earlier one undoes (within both errors), in
    order; each pair of opposite jumps is matched once."""
    kept: list[int] = []
    for k in range(jumps.shape[1]):
        opposite = next((i for i, other in enumerate(kept) if np.all(
            np.abs(jumps[:, k] + jumps[:, other]) <= jump_error[:, k] + jump_error[:, other])),
            None)
        if opposite is None:
            kept.append(k)
        else:
            kept.pop(opposite)
    return kept


def _looseness(cones: Cones) -> float:
    return float(np.max(cones.tolerance))


def _one_circle(loss: Loss, scale: np.ndarray, entries: np.ndarray, value: np.ndarray,
                noise: float, goal: float, limit: int, rng: np.random.Generator) -> Cones:
    """What one circle through a random direction says (see the module docstring), within
    ``limit`` loss evaluations."""
    circle = _Circle(loss, scale, entries, noise, limit, rng)
    try:
        return _judged(circle, value, goal)
    except _Untold:
        return Cones(None, evaluations=circle.evaluations)


class _Untold(Exception):
    """The circle cannot be finished: the loss was not finite at a point of it (it
    overflows near the point), or the budget is spent."""


def _judged(circle: _Circle, value: np.ndarray, goal: float) -> Cones:
    """The value against the zonotope of the half circle from λ = 0 (see the module
    docstring)."""
    half = _half(circle, 0.0)
    if half is None:
        return Cones(None, evaluations=circle.evaluations)
    gradients, error = half
    crossings = len(gradients) - 1
    jumps = np.diff(gradients, axis=0).T  # entries x crossings
    jump_error = SAFETY * np.sqrt(error[1:] ** 2 + error[:-1] ** 2).T
    # A kink off the point that the half circle crosses twice (a jump, then its opposite)
    # is on the same side at both ends, where z(0) + z(π) = 2·z(point): on the side it has
    # at the point. It adds nothing a correct gradient can take: its two jumps are left out.
    kept = _unpaired(jumps, jump_error)
    # Each cone's error enters a value of the zonotope at most twice (as the end of one jump
    # kept and the start of the next), the first cone's once more; the cones' roundings are
    # independent. A narrow cone between two jumps left out enters nothing.
    used = sorted({0, *kept, *(k + 1 for k in kept)})
    tolerance = SAFETY * (2 * np.sqrt(np.sum(error[used] ** 2, axis=0)) + np.finfo(
        np.float64).eps * (np.abs(value) + np.max(np.abs(gradients), axis=0)))
    residual = _distance(jumps[:, kept], value - gradients[0], tolerance)
    if residual is None:
        return Cones(None, crossings, evaluations=circle.evaluations)
    inside = bool(np.all(residual <= tolerance))
    found = Cones(inside, crossings, residual, tolerance, jumps, jump_error, gradients[0],
                  evaluations=circle.evaluations)
    if inside:
        # A kink that moves one of the judged entries alone (|w|, a bias's own unit) lets
        # that entry take anything between its sides here (a jump wider than ``goal``), where
        # no circle tells a wrong value from a convention: such values are left to the scans
        # along single entries, which part that entry's kinks and allow none, half or all of
        # each.
        seen = np.abs(jumps[:, kept]) > jump_error[:, kept]
        alone = (np.sum(seen, axis=0) == 1) & (np.max(np.abs(jumps[:, kept]), axis=0) > goal)
        return found if not np.any(alone) else Cones(None, crossings, alone=True,
                                                     evaluations=circle.evaluations)
    if _hyperplanes(circle, found):
        return dataclasses.replace(found, evaluations=circle.evaluations)
    return Cones(None, crossings, evaluations=circle.evaluations)


def _half(circle: _Circle, start: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The gradients of the cones the half circle from λ = ``start`` crosses, in order, and
    their errors; None where the crossings or a cone's gradient are not resolved."""
    crossings = _crossings(circle, circle.radius, start)
    if crossings is None or len(crossings) > MAX_CROSSINGS:
        return None
    edges = [start, *[x for pair in crossings for x in pair], start + np.pi]
    cones = [(edges[2 * i], edges[2 * i + 1]) for i in range(len(crossings) + 1)]
    if min(b - a for a, b in cones) <= 0.0:  # a crossing at an end: no cone there to measure
        return None
    return _cone_gradients(circle, cones)


def _hyperplanes(circle: _Circle, first: Cones) -> bool:
    """Whether every kink the half circle crossed is a hyperplane through the point, or one
    off it: the other half must cross each again with the opposite jump (one off the point
    is crossed twice or not at all, likewise). A unit at its kink fed by another at its kink
    at the point is neither: on the first unit's hyperplane the second's input is its own
    a·v, of opposite signs at v and -v, so the first unit's two crossings show different
    jumps, and the values a correct gradient takes need not lie in the zonotope of one
    half's jumps."""
    other = _half(circle, np.pi)
    if other is None:
        return False
    gradients, error = other
    jumps = np.hstack((first.jumps, np.diff(gradients, axis=0).T))
    jump_error = np.hstack((first.jump_error,
                            SAFETY * np.sqrt(error[1:] ** 2 + error[:-1] ** 2).T))
    return not _kinks_at_point(jumps, jump_error)


def _crossings(circle: _Circle, radius: float, start: float,
               ) -> list[tuple[float, float]] | None:
    """The intervals of λ in [start, start + π] (touching ones merged) where the probe's
    slope at ``radius`` changes by more than its rounding and the curvature's drift; None
    where there are too many."""
    grid = np.linspace(start, start + np.pi, GRID + 1)
    width = np.pi / GRID
    slopes = [circle.slope(lam, radius, width) for lam in grid]
    # Between crossings the slope drifts smoothly (δ·H·u(λ)): its rate, from the grid's
    # intervals, most of which hold no crossing.
    drift = DRIFT * float(np.median(np.abs(np.diff([value for value, _ in slopes])))) / width
    found: list[tuple[float, float]] = []

    def bisect(a: float, at_a: tuple[float, float], b: float, at_b: tuple[float, float]) -> bool:
        change = abs(at_b[0] - at_a[0])
        if change <= SAFETY * (at_a[1] + at_b[1]) + drift * (b - a):
            return True
        middle = (a + b) / 2
        # A finer probe's step is shorter and rounds more: the interval is as fine as the
        # change can still be told at, or RESOLUTION.
        rounding = circle.noise / (PROBE_STEP * radius * (b - a))
        if b - a <= RESOLUTION or 4 * SAFETY * 2 * rounding > change:
            found.append((a, b))
            return len(found) <= 2 * MAX_CROSSINGS
        at_middle = circle.slope(middle, radius, b - a)
        return bisect(a, at_a, middle, at_middle) and bisect(middle, at_middle, b, at_b)

    for k in range(GRID):
        if not bisect(grid[k], slopes[k], grid[k + 1], slopes[k + 1]):
            return None
    return _merged(found)


def _merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted intervals with those less than ``NARROWEST`` apart joined: a probe straddling a
    hyperplane smears one crossing over both sides of a bisection's midpoint, and a cone that
    narrow is measured only with steps too short to tell anything. (Two real crossings so
    close read as one whose jump is their sum: another circle shows them apart, and two
    circles must cross the same kinks to fail a value.)"""
    joined: list[tuple[float, float]] = []
    for a, b in intervals:
        if joined and joined[-1][1] + NARROWEST >= a:
            joined[-1] = (joined[-1][0], max(joined[-1][1], b))
        else:
            joined.append((a, b))
    return joined


def _cone_gradients(circle: _Circle, cones: list[tuple[float, float]],
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """Each cone's gradient with the drift along the circle removed, and its error; None where
    a cone's slopes do not settle or the drift is not the loss's smooth part.

    Between crossings the gradient is C_i plus the smooth part's change at radius δ:
    δ·H·u(λ) + δ²·T(u(λ), u(λ))/2 + ..., whose first terms are the harmonics cos λ, sin λ,
    cos 2λ and sin 2λ (a constant joins C_i). Fitted per entry over points spread inside each
    cone, C_i is cone i's gradient at radius 0 but for terms of order δ³; a misfit beyond the
    rounding is a crossing the scan missed, or a loss whose smooth part is not smooth at δ."""
    # Points per cone: enough for the cones' constants and the harmonics, and one more.
    count = max(2, -(-(len(cones) + len(_HARMONICS) + 1) // len(cones)))
    rows, values, rounding = [], [], []
    for i, (a, b) in enumerate(cones):
        width = (b - a) / count
        for k in range(count):
            lam = a + (k + 0.5) * width
            measured = circle.gradient(lam, circle.radius, width / 2)
            if measured is None:
                return None
            row = np.zeros(len(cones))
            row[i] = 1.0
            rows.append(np.concatenate((row, [harmonic(lam) for harmonic in _HARMONICS])))
            values.append(measured[0])
            rounding.append(measured[1])
    design, observed, sigma = np.array(rows), np.array(values), np.array(rounding)
    solve = np.linalg.pinv(design)
    fitted = solve @ observed
    if np.any(np.abs(design @ fitted - observed) > SAFETY * sigma):
        return None  # a crossing the scan missed
    # What the points' roundings, independent of each other, move each coefficient by.
    error = np.sqrt(solve**2 @ sigma**2)
    return fitted[: len(cones)], error[: len(cones)]


_HARMONICS = (np.cos, np.sin, lambda lam: np.cos(2 * lam), lambda lam: np.sin(2 * lam))


def _distance(jumps: np.ndarray, target: np.ndarray, tolerance: np.ndarray,
              ) -> np.ndarray | None:
    """Each entry's |jumps @ t - target| at the t in [0, 1]^K that minimises the largest of
    them in units of ``tolerance`` (a linear program in t and that largest ratio s); None
    where the solver fails."""
    entries, count = jumps.shape
    if count == 0:
        return np.abs(target)
    from scipy.optimize import linprog  # here: scipy.optimize is slow to import, seldom needed
    scaled = jumps / tolerance[:, None]
    goal = target / tolerance
    # Variables (t, s): minimise s subject to ±(scaled t - goal) <= s.
    cost = np.zeros(count + 1)
    cost[-1] = 1.0
    ones = np.ones((entries, 1))
    bound = np.vstack((np.hstack((scaled, -ones)), np.hstack((-scaled, -ones))))
    limits = np.concatenate((goal, -goal))
    result = linprog(cost, A_ub=bound, b_ub=limits, bounds=[(0.0, 1.0)] * count + [(0.0, None)],
                     method="highs")
    if not result.success:  # the program always has a solution; a solver stopped short tells
        return None         # nothing either way
    return np.abs(jumps @ result.x[:count] - target)


def one_entry(cones: Cones, value: np.ndarray) -> tuple[int, float] | None:
    """The entry whose value alone, changed by the least, makes ``value`` one a correct
    gradient takes on the circle ``cones`` judged, and the change (to add to it); None where
    no single entry does (or the circle told nothing)."""
    if cones.jumps is None:
        return None
    from scipy.optimize import linprog  # here: scipy.optimize is slow to import, seldom needed
    entries, count = cones.jumps.shape
    target, tolerance = value - cones.start, cones.tolerance
    best = None
    for entry in range(entries):
        # Variables (t, d+, d-): minimise |d| with |jumps t + d e_entry - target| <= tolerance.
        column = np.zeros((entries, 1))
        column[entry] = 1.0
        block = np.hstack((cones.jumps, column, -column))
        cost = np.concatenate((np.zeros(count), [1.0, 1.0]))
        result = linprog(cost, A_ub=np.vstack((block, -block)),
                         b_ub=np.concatenate((target + tolerance, tolerance - target)),
                         bounds=[(0.0, 1.0)] * count + [(0.0, None)] * 2, method="highs")
        if result.success and (best is None or result.fun < abs(best[1])):
            best = (entry, float(result.x[-1] - result.x[-2]))
    return best
