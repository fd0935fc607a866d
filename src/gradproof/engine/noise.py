"""A loss only as accurate as a solver: its roughness beyond rounding, measured after a failure.

Contract: ``settle(run)`` takes a ``BlackBoxRun`` after probing. When some tensor failed by
little (``CLOSE``), it looks at the loss along a random line at spacings ``LADDER`` (per-entry
moves relative to each entry's scale, ``POINTS`` values each): a loss computed by an ODE
solver or an iteration stopped at a tolerance is smooth between the points where a step or an
iteration count changes and jumps there by about its own accuracy, far above float64
rounding. Where such jumps show, the probes are measured again with steps and tolerances sized
for that accuracy (as for a loss computed in float32), and a ``precision`` finding on ``loss``
says how accurate the loss is, why and how well the gradient agrees given that. A failure
that remains is a real one; a gradient within the loss's accuracy passes, so no pattern
(``scaled`` x0.9999993) is claimed from it.

How: high-order differences of values at equal spacing cancel the smooth part (it varies
slowly along the line) and keep jumps: many of them as noise whose level differences of orders
4 to 6 agree on (ECnoise, ``finite_diff.noise_levels``), a lone one as a sixth difference
standing out among the others. A kink (a ReLU crossed) shows the same way. They are told
apart by following the peak through ``ZOOM_ROUNDS`` looks, each ``ZOOM`` times finer than the
last: a jump's sixth differences keep their size at every spacing, a kink's (a slope change
at an isolated point, the function piecewise smooth) shrink with the spacing. One finer look
is not enough: where a coarse stencil straddles a kink off its middle, or several kinks (a
ReLU network's units along a random line), its sixth difference can be smaller than the
finer look's, which puts the kink where the binomial weights are largest; over three looks
(64 times finer) a kink's shrinks far below half. Only jumps widen the tolerance, so a ReLU
network's real bug is not excused as noise.

What a black box cannot show: a solver whose computed loss is smooth over the moves measured
(no step or iteration count changes within them) has no measurable accuracy; its gradient is
then compared as any other, and a gradient that differs from the solver's loss by the solver's
tolerance fails. Costs up to ``len(LADDER) * POINTS`` evaluations, plus ``ZOOM_POINTS`` per
closer look (up to ``ZOOM_ROUNDS`` a spacing), and only when a tensor failed by little.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from gradproof.engine.probes import FAILED, unit_direction
from gradproof.engine.verdict import measured_result
from gradproof.finite_diff import noise_levels
from gradproof.report import Finding

if TYPE_CHECKING:
    from gradproof.engine.blackbox import BlackBoxRun
    from gradproof.engine.objective import Objective

# Per-entry moves between neighbouring points, relative to max(1, |entry|): from a few
# finite-difference steps up to moves over which an iteration count or a solver's steps change.
LADDER = (1e-3, 3e-3, 1e-2)

# Points per line: sixth differences at enough places for a jump to stand out among them.
POINTS = 65

# Points of each finer look at the roughest place, each ZOOM times finer than the last.
ZOOM_POINTS = 17
ZOOM = 4
ZOOM_ROUNDS = 3

# Many jumps (an iteration count changing often) look like noise: differences of orders 4 to
# 6 agree on their level within this factor (a smooth trend's fall from order to order).
CONSISTENT = 3.0

# A lone jump stands out: its sixth difference this many times the median one along the line (the
# smooth part, which varies slowly).
STANDS_OUT = 8.0

# Sixth differences of a step of height a peak at C(5, 2) a = 10 a.
STEP_PEAK = 10.0

# A jump's sixth differences keep their size when the spacing shrinks; a kink's shrink with
# it. A jump keeps at least this fraction at every finer look.
JUMP_KEPT = 0.5

# Only failures this close (errors relative to the tensor's largest gradient entry) are looked
# at: a solver tolerance explains small disagreements, not a missing term or a factor 2.
CLOSE = 0.05

# What makes such a loss checkable more closely.
TIGHTEN = (
    "tighten the solver's or the iteration's tolerance (rtol, atol, the stopping threshold) to "
    "check the gradient more closely"
)

# Roughness this many times above the noise the check allowed for is worth a second look.
ROUGH = 1e3


def settle(run: BlackBoxRun) -> None:
    """Measure again, with the loss's roughness as its noise, when a failure may be that."""
    # A loss of 0 at the point has no relative accuracy to state.
    if run.mode == "taylor" or run.partial or not run.context.j0:
        return
    if not 0 < _worst(run) <= CLOSE:
        return
    context = run.context
    found = roughness(run, context.center)
    if found is None:
        return
    sigma, spacing = found
    run.context = replace(context, noise=sigma)
    run.eps_step = max(run.eps_step, sigma / abs(context.j0))
    run.measured = {spec.name: [] for spec in run.layout.specs}
    run.probe()
    # What the check cannot see is then set by the loss's accuracy, not by float32 arithmetic.
    run.sharper = TIGHTEN
    run.findings.append(_finding(run, sigma, spacing))


def _worst(run: BlackBoxRun) -> float:
    """The largest failing error, relative to its tensor's largest gradient entry (0: none)."""
    worst = 0.0
    for name, results in run.measured.items():
        scale = run.context.gmax[name] or 1.0
        for m in results:
            failed = m.status == FAILED
            if failed.any():
                error = np.abs(m.numeric[failed] - m.analytic[failed])
                worst = max(worst, float(np.nanmax(error, initial=0.0)) / scale)
    return worst


def roughness(run: BlackBoxRun, center: np.ndarray) -> tuple[float, float] | None:
    """(the size of the loss's jumps, the spacing they showed at), or None when no jumps show
    along the line at any spacing (a kink is not a jump)."""
    objective = run.objective
    v = unit_direction(center, run.rng) * math.sqrt(center.size)

    def line(middle: float, spacing: float, count: int) -> np.ndarray:
        moves = middle + np.arange(-(count // 2), count // 2 + 1) * spacing
        return objective.at_points(
            moves.size,
            lambda k: (center + moves[k] * v).astype(objective.buffer.dtype),
            lambda k: f"at the parameters moved {moves[k]:+.1e} along a random direction "
            "(measuring how accurate the loss is)",
        )

    objective.plan(len(LADDER) * POINTS)
    for spacing in LADDER:
        values = line(0.0, spacing, POINTS)
        sixth = np.abs(np.diff(values, 6))
        top = float(np.max(sixth))
        levels = noise_levels(values)[1:]  # orders 4 to 6
        dense = bool(levels) and max(levels) <= CONSISTENT * min(levels)
        lone = top > STANDS_OUT * float(np.median(sixth))
        size = float(np.median(levels)) if dense else top / STEP_PEAK
        if not ((dense or lone) and size > ROUGH * run.context.noise):
            continue
        if _jump(line, objective, sixth, spacing, top):
            return size, spacing
    return None


def _jump(line: Callable[[float, float, int], np.ndarray], objective: Objective,
          sixth: np.ndarray, spacing: float, top: float) -> bool:
    """Whether the highest sixth difference keeps at least ``JUMP_KEPT`` of its size ``top``
    in each of ``ZOOM_ROUNDS`` ever finer looks centred on the previous look's peak (a jump),
    rather than shrinking with the spacing (a kink)."""
    where, fine = 0.0, spacing
    for _ in range(ZOOM_ROUNDS):
        # sixth[k] is centred on the line's point k + 3, the middle point being sixth.size//2 + 3.
        where += (int(np.argmax(sixth)) - sixth.size // 2) * fine
        fine /= ZOOM
        objective.plan(ZOOM_POINTS)
        sixth = np.abs(np.diff(line(where, fine, ZOOM_POINTS), 6))
        if np.max(sixth) < JUMP_KEPT * top:
            return False
    return True


def _finding(run: BlackBoxRun, sigma: float, spacing: float) -> Finding:
    relative = sigma / abs(run.context.j0)
    results = [
        measured_result(spec, run.measured[spec.name], run.context.gmax[spec.name])
        for spec in run.layout.specs
        if run.measured[spec.name]
    ]
    passed = [r for r in results if r.passed]
    failed = [r.name for r in results if not r.passed]
    agree = max((r.max_rel_error for r in passed), default=0.0)
    verdict = (
        f"with steps and tolerances sized for that accuracy, the gradient of "
        f"{', '.join(r.name for r in passed)} agrees with finite differences to {agree:.1e} "
        "relative, which is as close as such a loss can confirm" if passed else ""
    )
    if failed:
        verdict += ("; " if verdict else "") + (
            f"{', '.join(failed)} still differ{'s' if len(failed) == 1 else ''} beyond what "
            "that accuracy explains"
        )
    return Finding(
        "precision",
        ("loss",),
        f"the loss is only accurate to about {relative:.0e} of its value: along a line through "
        f"the parameters its values jump by about that much (entries moved {spacing:.0e} of "
        "their size apart), far above float64 rounding, as a loss computed by a solver or an "
        f"iteration stopped at a tolerance does; {verdict}",
        fix=TIGHTEN,
        details={"relative_accuracy": relative, "spacing": spacing, "still_failing": failed},
    )
