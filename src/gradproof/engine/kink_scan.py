"""Entries at a kink, the gradient given as arrays: the kinks stacked at the point taken apart.

Contract: ``scan_kinks(report, run, grad, seed) -> GradReport`` takes the report of a black-box
check (``BlackBoxRun.report``), the run, the gradient as given to ``check_gradient`` and the
seed; where the gradient is arrays and the loss computes in float64, each passing tensor's
entries whose steps crossed a kink (excluded, or decided by a one-sided slope) are first
judged together on circles around the point where there are ``CONE_ENTRIES`` of them
(``kink_cones.py``: behind many kinks at once one entry's line tells little), then scanned one
by one, no entry's scan starting once ``BUDGET`` loss evaluations per probe of the check's
``budget`` are spent: entries whose values are ones a correct gradient can take are verified
(a ``kink`` note), one that is none of them is a ``mismatch`` naming the entry and the
evidence. Anything the circles and scans cannot resolve is left as it was.

Why: near the point the loss is, to first order, f(θ + v) = f₀ + g·v + ½ Σ_h σ_h |c_h·v| over
the kink hyperplanes h that the entry's line meets, so a correct gradient's entry e is the
slope L on the line's left plus the jumps J_h of some subset of those kinks (whatever the
code's relu'(0) and however it writes its units). Along e at the point itself, the kinks of
several units at their kink are stacked at t = 0, where only their sum shows (opposing units
cancel): that one line cannot tell a right value from a wrong one. At a point moved a little
in a seeded random direction u (every entry but e, by far less than the window), each kink
moves to its own t_h = -(a_h·u)/a_h,e, and a scan of f along e shows it as a step between
slope plateaus; the values L + Σ_{h∈S} J_h over every subset S then hold every value a correct
gradient can take. The scan at the point gives L and the slope R on the right; a moved line
whose own end slopes moved from them by more than the move itself can (a kink left or entered
the window) is not used, nor one with a step between plateaus that is not one kink's: each
cluster of slope changes is scanned finer (``REFINE``, ``REFINE_DEPTH`` times), and at the
finest segments one kink must fit the values between its plateaus, else two kinks a few 1e-9
apart (a relu unit at 0 beside one 1e-9 from it, as the stress harness puts them) would read
as one whose subsets miss the values that take one without the other. Each plateau's slope at
t = 0 comes from a quadratic fitted to its own values (a piece whose values no quadratic fits,
as where a relu's square starts at the point, spoils the line). One clean line holding the
value verifies it. A value fails only where two clean lines hold it nowhere, show the same
jumps (kinks whose jumps depend on the order a line crosses them in are not additive, and
lines crossing them in other orders show that), and show alone each kink that the point's
own line sees apart from t = 0 (a kink there lies on no hyperplane through the point, and
merged with another it hides the values between). A loss evaluated in float32 resolves no
jump that matters here and is left alone, as is a gradient given as a callable
(``moved_point.py`` checks that at the moved point itself).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof.engine.kink_cones import Cones, judge_cones, one_entry
from gradproof.engine.kink_findings import (
    cones_mismatch,
    entry_mismatch,
    failed_note,
    scanned_note,
    stopped_note,
)
from gradproof.errors import InputError
from gradproof.moved_point import passing_crossed, verified_note
from gradproof.report import GradReport

# The scan's half width, relative to the entry's first finite-difference step
# cbrt(eps)·max(1, |θ_e|): wide enough to hold kinks a step crossed, narrow enough that the
# curvature left after removing a common one stays far below the errors looked for.
WINDOW = 1.0 / 8

# Segments of the first scan of a line, and per segment of a cluster scanned again.
SEGMENTS = 32
REFINE = 8
REFINE_DEPTH = 2

# Moved lines tried per entry, and the move of each entry (Gaussian, in units of the window)
# tried in turn while a line is not clean: kinks must spread over the window, not leave it.
LINES = 3
MOVES = (1.0 / 64, 1.0 / 512)

# At most this many kinks apart from t = 0 on a line (3**MAX_KINKS sums).
MAX_KINKS = 10

# Loss evaluations per check spent on scans, per probe of the check's own ``budget`` (2000 by
# default: 12,000 evaluations); entries beyond it are left as they were.
BUDGET = 6

# A step between plateaus is seen beyond this many times its rounding.
SAFETY = 10.0

# What the move and each piece's own curvature leave in the slopes, relative to their scale:
# about 1e-7 on the stress networks (the same jump read on different lines), allowed 100
# times over; and how far a line's end slopes may move before the line is not used.
SLACK = 1e-5
SHIFT_LIMIT = 1e-3

# A plateau is one smooth piece while a quadratic fits its values within this many times the
# loss's rounding (the stress networks' smooth pieces: up to about 50; where a relu's square
# starts at the point, about 400).
QUADRATIC = 100.0

# Salts the scans' draws, apart from the check's own and the moved point's.
SCAN_STREAM = 0x6B736361
CONE_STREAM = 0x636F6E65

# A tensor whose entries at a kink number this many is first judged on circles around the
# point, all its entries at once (``kink_cones.py``): where a first layer's entry feeds a
# whole batch of units at their kink, one entry alone cannot tell a wrong value from a right
# one. One entry has no circle; past the upper bound each cone costs more than it tells.
CONE_ENTRIES = (2, 64)

# Loss evaluations per check spent on circles, per probe of the check's ``budget``, and the
# tolerance (relative to the tensor's largest entry) a circle that verifies must reach before
# no more are drawn.
CONE_BUDGET = 16
CONE_GOAL = 3e-5

Fetch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # t -> (t as stored, f)


@dataclass(frozen=True)
class Line:
    """The loss along one entry, read as plateaus of slope between kinks.

    Slopes are each piece's, extrapolated to t = 0.

    Attributes
    ----------
    left, right : float
        The slopes at the window's ends.
    jumps : ndarray
        Each kink's change of slope, left to right.
    off_point : ndarray of bool
        The kinks seen apart from t = 0 (the gap between their plateaus does not hold it).
    noise : float
        The rounding of ``left`` and ``right``; ``jump_noise`` the summed rounding of the jumps.
    """

    left: float
    right: float
    jumps: np.ndarray
    off_point: np.ndarray
    noise: float
    jump_noise: float


@dataclass(frozen=True)
class Verdict:
    """What the scans say of one entry: ``inside`` (a correct gradient's value), ``outside``,
    or None (not resolved), with the evidence for a message."""

    inside: bool | None
    at_point: Line | None = None
    moved: Line | None = None
    values: np.ndarray | None = None
    span: tuple[float, float] = (0.0, 0.0)  # what kinks still at t = 0 add to each value
    tolerance: float = 0.0


def scan_kinks(report: GradReport, run: Any, grad: Any, seed: int) -> GradReport:
    """The report, with the entries at a kink of each passing tensor scanned (see the module
    docstring); unchanged where there is nothing to scan or no way to."""
    if grad is None or callable(grad):
        return report
    crossed = passing_crossed(report, run)
    if not crossed:
        return report
    objective, context = run.objective, run.context
    noise = max(context.noise, objective.value_eps * abs(context.j0))
    rng = np.random.default_rng([SCAN_STREAM, seed])
    cone_rng = np.random.default_rng([CONE_STREAM, seed])
    scale = np.maximum(1.0, np.abs(context.center))
    tensors, findings = {t.name: t for t in report.tensors}, list(report.findings)
    started = time.perf_counter()
    spent = {"entries": 0, "cones": 0}  # loss evaluations, by the scans along single entries
    # The tensors with the fewest such entries first: the budget then verifies (or fails)
    # as many whole tensors as it can.
    for name, positions in sorted(crossed.items(), key=lambda item: item[1].size):
        spec = run.layout.spec(name)
        try:
            cones = _cones(run, name, positions, noise, scale, spent, cone_rng)
        except InputError as exc:  # the loss near the point: its failure is not the check's
            findings.append(stopped_note(name, exc))
            break
        circles_verified = cones is not None and cones.inside is True
        if cones is not None and cones.inside is False:
            tensors[name] = dataclasses.replace(tensors[name], passed=False)
            findings = [failed_note(f, positions.size) if f.kind == "kink"
                        and f.tensors == (name,) else f for f in findings]
            # The entry that alone explains the departure, scanned along its own line: where
            # that tells which values its kinks allow, the mismatch names them.
            explained = one_entry(cones, context.gradient[positions])
            failed = [] if explained is None else _entries(
                run, name, positions[[explained[0]]], noise, spent, rng)[1]
            findings.append(entry_mismatch(spec, failed, context.gradient) if failed else
                            cones_mismatch(spec, positions, cones, explained, context.gradient))
            continue
        # Verified by the circles or not, the scans along single entries still run: they allow
        # only none, half or all of each kink's jump, where a circle allows any part of it.
        verified, failed, error = _entries(run, name, positions, noise, spent, rng)
        if error is not None:
            findings.append(stopped_note(name, error))
        if failed:
            tensors[name] = dataclasses.replace(tensors[name], passed=False)
            # The tensor's kink note no longer says its entries could not be verified: the
            # scans decided them, and the mismatch says how.
            findings = [failed_note(f, len(failed)) if f.kind == "kink" and f.tensors == (name,)
                        else f for f in findings]
            findings.append(entry_mismatch(spec, failed, context.gradient))
        elif verified or circles_verified:
            whole = (circles_verified or verified == positions.size) and not \
                tensors[name].verified
            if whole:
                tensors[name] = dataclasses.replace(tensors[name], verified=True)
            # The tensor's own kink note says what the scans verified: one note per tensor.
            findings = [scanned_note(verified_note(f) if whole else f, verified,
                                     positions.size, cones)
                        if f.kind == "kink" and f.tensors == (name,) else f for f in findings]
        if error is not None:
            break
    return dataclasses.replace(report, tensors=[tensors[t.name] for t in report.tensors],
                               findings=findings, loss_evaluations=objective.evaluations,
                               seconds=report.seconds + time.perf_counter() - started)


def _cones(run: Any, name: str, positions: np.ndarray, noise: float, scale: np.ndarray,
           spent: dict[str, int], rng: np.random.Generator) -> Cones | None:
    """The cones' verdict on a tensor's entries at a kink, where there are few enough of them
    and budget left; None otherwise."""
    left = CONE_BUDGET * run.budget - spent["cones"]
    if not CONE_ENTRIES[0] <= positions.size <= CONE_ENTRIES[1] or left <= 0:
        return None
    objective, context = run.objective, run.context
    center = context.center

    def loss(move: np.ndarray) -> float:
        return objective.at(slice(None), center + move, "at a point on a circle around the "
                            "parameters (kinks at the point checked together)")

    before = objective.evaluations
    try:
        return judge_cones(loss, scale, positions, context.gradient[positions], noise,
                           CONE_GOAL * context.gmax[name], left, rng)
    finally:
        spent["cones"] += objective.evaluations - before


def _entries(run: Any, name: str, positions: np.ndarray, noise: float, spent: dict[str, int],
             rng: np.random.Generator,
             ) -> tuple[int, list[tuple[int, Verdict]], InputError | None]:
    """Each entry scanned along its line while the budget lasts: how many hold a value a
    correct gradient takes, those that hold none, and the loss's error that stopped the
    scans (None if none did)."""
    objective, context = run.objective, run.context
    verified, failed = 0, []
    for p in positions:
        if spent["entries"] >= BUDGET * run.budget:
            break
        before = objective.evaluations
        try:
            verdict = _entry(objective, context.center, int(p), float(context.gradient[p]),
                             noise, context.gmax[name], rng)
        except InputError as exc:
            return verified, failed, exc
        finally:
            spent["entries"] += objective.evaluations - before
        if verdict.inside:
            verified += 1
        elif verdict.inside is False:
            failed.append((int(p), verdict))
    return verified, failed, None


def _entry(objective: Any, center: np.ndarray, p: int, value: float, noise: float,
           largest: float, rng: np.random.Generator) -> Verdict:
    """Scan entry ``p`` (analytic ``value``) at the point, then along moved lines."""
    half = WINDOW * np.cbrt(np.finfo(np.float64).eps) * max(1.0, abs(float(center[p])))
    here = _scan(_fetch(objective, center, p), half, noise)
    if here is None:
        return Verdict(None)
    outside = []
    for _ in range(LINES):
        direction = rng.standard_normal(center.size)
        direction[p] = 0.0
        for move in MOVES:
            moved = _scan(_fetch(objective, center + move * half * direction, p), half, noise)
            verdict = moved and _judge(here, moved, value, largest)
            if verdict is not None:
                break
        if verdict is None:
            continue
        if verdict.inside:
            return verdict
        outside.append(verdict)
    # Two clean lines, neither holding the value, with the same jumps: a kink merged on one
    # line is apart on the other, and kinks whose jumps depend on the order they are crossed
    # in (a unit at its kink feeding another, both at the point) are not additive, which
    # lines crossing them in other orders show as different jumps.
    if len(outside) >= 2 and _same_jumps(outside[0], outside[1]):
        return outside[0]
    return Verdict(None)


def _same_jumps(one: Verdict, other: Verdict) -> bool:
    """Whether two lines show the same jumps (in any order), each within both tolerances."""
    a, b = np.sort(one.moved.jumps), np.sort(other.moved.jumps)
    return a.size == b.size and bool(np.all(np.abs(a - b) <= one.tolerance + other.tolerance))


def _judge(here: Line, moved: Line, value: float, largest: float) -> Verdict | None:
    """The values a correct gradient can take by the moved line's kinks, and where ``value``
    lies (``largest``: the tensor's largest |gradient|); None where the line has too many
    kinks to enumerate or its ends moved."""
    if np.count_nonzero(moved.off_point) > MAX_KINKS:
        return None
    # The slopes' scale, the tensor's largest entry at least: the move and what a fit of each
    # piece leaves change slopes by a small fraction of it, beyond their rounding.
    scale = max(abs(here.left), abs(here.right), float(np.max(np.abs(moved.jumps), initial=0.0)),
                largest)
    # A kink that left or entered the window moves an end by its jump: the tolerance takes the
    # shift in (any subset missing that kink is off by no more), and a line whose ends moved
    # more than the move itself can is not used (a smaller move keeps the kinks in).
    shift = max(abs(moved.left - here.left), abs(moved.right - here.right))
    if shift > SHIFT_LIMIT * scale + SAFETY * (here.noise + moved.noise):
        return None
    # Each kink that moved off t = 0 counts none, half (relu'(0) = 1/2, sign(0) = 0 for an
    # abs) or all of its jump; one still at t = 0 on the moved line is of this entry alone
    # (|w|, or relu(w) + relu(-w)/2 written with relu'(0) = 0 for both: pieces with
    # conventions of their own that no move parts), and counts anything between.
    fixed = ~moved.off_point
    sums = np.zeros(1)
    for jump in moved.jumps[~fixed]:
        sums = np.unique(np.concatenate((sums, sums + jump / 2, sums + jump)))
    values = here.left + sums
    low = float(np.sum(np.minimum(moved.jumps[fixed], 0.0)))
    high = float(np.sum(np.maximum(moved.jumps[fixed], 0.0)))
    tolerance = SAFETY * (here.noise + moved.noise + moved.jump_noise) + shift + SLACK * scale
    gaps = np.maximum(np.maximum(values + low - value, value - values - high), 0.0)
    if np.min(gaps) <= tolerance < np.min(np.abs(values - value)):
        return None  # a value those kinks allow, which no scan can tell from a wrong one
    inside = bool(np.min(gaps) <= tolerance)
    # A kink seen apart from the point at the point itself lies on no hyperplane through it:
    # the moved line must show its jump alone, else it merged with another there, and the
    # subsets miss the values that take one of them without the other.
    if not inside and not _each_found(here.jumps[here.off_point], moved.jumps, tolerance):
        return None
    return Verdict(inside, here, moved, values, (low, high), tolerance)


def _each_found(wanted: np.ndarray, jumps: np.ndarray, tolerance: float) -> bool:
    """Whether each of ``wanted`` matches its own one of ``jumps`` within ``tolerance``."""
    left = list(jumps)
    for jump in wanted:
        gaps = np.abs(np.array(left) - jump) if left else np.array([np.inf])
        k = int(np.argmin(gaps))
        if gaps[k] > tolerance:
            return False
        left.pop(k)
    return True


def _fetch(objective: Any, point: np.ndarray, p: int) -> Fetch:
    """f(point + t·e_p) at each t, with the t each stored entry really moved by."""
    def fetch(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        moved = (point[p] + t) - point[p]

        def at(k: int) -> np.ndarray:
            full = point.copy()
            full[p] += moved[k]
            return full

        values = objective.at_points(t.size, at, lambda k: f"the point moved along entry {p}")
        return moved, values

    return fetch


def _scan(fetch: Fetch, half: float, noise: float) -> Line | None:
    """The loss along the line over [-half, half] as plateaus and kinks; None where a cluster
    of slope changes is not resolved into single kinks, an end is not a plateau, or a plateau
    is not one smooth piece."""
    t, f = fetch(np.linspace(-half, half, SEGMENTS + 1))
    if not np.all(np.isfinite(f)):
        return None
    width = np.diff(t)
    slopes = np.diff(f) / width
    # The common curvature, from the slope changes between segments, most of them smooth.
    curvature = float(np.median(np.diff(slopes) / ((width[1:] + width[:-1]) / 2)))
    pieces = _plateaus(fetch, t, f, curvature, noise, REFINE_DEPTH)
    if pieces is None:
        return None
    fits = [_slope_at_zero(tp, fp, curvature, noise) for tp, fp in pieces]
    if any(fit is None for fit in fits):
        return None
    slopes_at_zero, rounding = (np.array(column) for column in zip(*fits))
    ends = np.array([tp[-1] for tp, _ in pieces[:-1]])
    starts = np.array([tp[0] for tp, _ in pieces[1:]])
    off_point = (ends > 0) | (starts < 0)
    return Line(float(slopes_at_zero[0]), float(slopes_at_zero[-1]), np.diff(slopes_at_zero),
                off_point,
                float(rounding[0]), float(np.sum(rounding[1:-1]) * 2 + rounding[0] + rounding[-1]))


def _slope_at_zero(t: np.ndarray, f: np.ndarray, curvature: float,
                   noise: float) -> tuple[float, float] | None:
    """One plateau's slope extrapolated to t = 0 along its own curvature (the slope of each
    piece is linear in t, its jump at a kink changes with t: at t = 0 the pieces' slopes are
    the point's), and its rounding; None where the plateau is not one quadratic within its
    rounding (a kink of the curvature alone, as where a relu's square starts)."""
    extent = float(t[-1] - t[0])
    middle = float(t[-1] + t[0]) / 2
    rounding = 2 * noise / extent * (1 + 4 * abs(middle) / extent)
    if t.size < 4:
        # Too few values to fit a curvature of its own: the line's common one.
        return float((f[-1] - f[0]) / extent - curvature * middle), rounding
    u = (t - middle) / extent
    c2, c1, c0 = np.polyfit(u, f, 2)
    if np.max(np.abs(np.polyval((c2, c1, c0), u) - f)) > QUADRATIC * noise:
        return None
    # f = c0 + c1 u + c2 u², u = (t - middle) / extent: f'(0) = (c1 - 2 c2 middle / extent) / extent.
    return float((c1 - 2 * c2 * middle / extent) / extent), rounding


Piece = tuple[np.ndarray, np.ndarray]  # a plateau: its values of t and f, in order


def _plateaus(fetch: Fetch, t: np.ndarray, f: np.ndarray, curvature: float, noise: float,
              depth: int) -> list[Piece] | None:
    """The plateaus of the loss sampled at ``t``, left to right, one kink between each two;
    a cluster of slope changes wider than one segment (or not monotone) is scanned again
    ``REFINE`` times finer, ``depth`` more times; None where one stays unresolved or an end
    segment is not part of a plateau."""
    width = np.diff(t)
    levels = np.diff(f) / width - curvature * (t[1:] + t[:-1]) / 2
    rounding = 2 * noise / width
    tolerance = SAFETY * (rounding[1:] + rounding[:-1])
    step = np.abs(np.diff(levels)) > tolerance
    if step[0] or step[-1]:
        return None
    pieces: list[Piece] = []
    start = 0  # the first value of the plateau being built
    carried: Piece | None = None  # its values left of ``start`` from a finer scan
    i = 0
    while i < step.size:
        if not step[i]:
            i += 1
            continue
        j = i
        while j + 1 < step.size and step[j + 1]:
            j += 1
        # Steps i..j: segments i and j + 1 are plateaus, i + 1 .. j lie between them.
        low, high = levels[i], levels[j + 1]
        between = levels[i + 1:j + 1]
        # Every cluster is scanned finer down to the finest segments, where one kink alone
        # must fit the values inside its segment: kinks a few 1e-9 apart (a relu unit at 0
        # beside one 1e-9 from it) would otherwise read as one.
        single = depth == 0 and between.size <= 1 and _one_kink(
            fetch, t[i:j + 3], f[i:j + 3], low, high, curvature, noise)
        if single:
            pieces.append(_joined(carried, (t[start:i + 2], f[start:i + 2])))
            start, carried = j + 1, None
        else:
            if depth == 0:
                return None
            t_fine, f_fine = fetch(np.linspace(t[i], t[j + 2], REFINE * (j + 2 - i) + 1))
            if not np.all(np.isfinite(f_fine)):
                return None
            inner = _plateaus(fetch, t_fine, f_fine, curvature, noise, depth - 1)
            if inner is None:
                return None
            # The finer scan's first and last plateaus continue the plateaus around it.
            pieces.append(_joined(_joined(carried, (t[start:i + 1], f[start:i + 1])), inner[0]))
            pieces += inner[1:-1]
            start, carried = j + 2, inner[-1]
        i = j + 1
    pieces.append(_joined(carried, (t[start:], f[start:])))
    return pieces


def _one_kink(fetch: Fetch, t: np.ndarray, f: np.ndarray, low: float, high: float,
              curvature: float, noise: float) -> bool:
    """Whether one kink fits the values at ``t`` (the plateau segments on both sides and at
    most one segment between them) and at the midpoints of the middle segments: the line of
    slope ``low`` through the left plateau's last value and the line of slope ``high`` through
    the right plateau's first meet at the kink, and the loss follows the upper or lower of the
    two (a kink's f is the max or the min of its two pieces)."""
    left, right = (t[1], f[1]), (t[-2], f[-2])
    inner = t[1:-1]
    probes = (inner[1:] + inner[:-1]) / 2
    t_mid, f_mid = fetch(probes)
    if not np.all(np.isfinite(f_mid)):
        return False
    # Slopes here are referred to t = 0 along the common curvature: back to each point's.
    def line(t_at: np.ndarray, anchor: tuple[float, float], slope: float) -> np.ndarray:
        return anchor[1] + (slope + curvature * (t_at + anchor[0]) / 2) * (t_at - anchor[0])

    at = np.concatenate((t_mid, inner))
    values = np.concatenate((f_mid, f[1:-1]))
    pieces = np.stack((line(at, left, low), line(at, right, high)))
    model = np.max(pieces, axis=0) if high > low else np.min(pieces, axis=0)
    return bool(np.max(np.abs(model - values)) <= SAFETY * noise + abs(curvature) * float(
        t[-1] - t[0]) ** 2)


def _joined(first: Piece | None, second: Piece) -> Piece:
    """Two runs of values of one plateau as one, in order, a shared end value once."""
    if first is None:
        return second
    t, where = np.unique(np.concatenate((first[0], second[0])), return_index=True)
    return t, np.concatenate((first[1], second[1]))[where]
