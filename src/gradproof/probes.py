"""Probes: the directions a check differentiates along, and the staged measurement.

Contract: a ``ProbeSet`` holds probes of one tensor and one kind ("entry", "row", "column",
"block", "direction"), stored like a sparse matrix: probe k moves the flat positions
``positions[start[k]:start[k+1]]`` by ``step[k] * values[...]``. An entry probe moves one
entry by h = cbrt(eps)·max(1, |θ|); every other probe is a unit vector in the metric scaled by
max(1, |θ|) (random Gaussian weights on its support, so that a row's errors cannot cancel
out), moved by h = cbrt(eps). ``measure(sets, context)`` returns one ``Measured`` per set,
after up to three stages:

1. every probe at step h. A clear pass (within the rounding tolerance) or a clear failure
   (see ``finite_diff.first_verdict``) is decided here: most entries of a correct gradient and
   all of a badly wrong one cost two loss evaluations and no more;
2. the undecided, plus a sample of each set's clear failures to confirm them (if one of the
   sample turns out fine, all that set's clear failures go through stages 2 and 3 too), again
   at 2h: Richardson extrapolation removes the h² truncation and estimates it, and they pass
   if within that tolerance; the differences of the five values that vanish to high order for
   a smooth function reveal a kink (``finite_diff.richardson``);
3. the rest, again at h/64, h/64², h/64³ until decided: a failure stands only when two
   successive steps measure the same derivative of the loss (a wrong derivative is wrong at
   every small step, while a loss that varies within one step or crosses a kink gives
   differences that change with it); they pass if they agree at a smaller step; they are
   excluded with a note when the loss has a kink at the point itself (the one-sided slopes
   keep their gap as the step shrinks and the analytic value lies between them); one whose
   numeric derivative still changes at the last step is excluded as unresolved. A probe whose
   2h step crossed a kink fails on a settled difference only at the smallest step (across a
   kink a little off the point the difference looks settled while steps still cross it), and
   is excluded as unresolved, not failed, when no smaller step can resolve its error.

A KeyboardInterrupt stops the evaluations: what was decided is kept (a failure still waiting
for its confirmation counts as failed), the rest stays unknown, and ``measure`` says it was
interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from gradproof.finite_diff import (
    KINK_SHRINK,
    ROUNDING_GROWTH,
    Differences,
    Rule,
    between_slopes,
    central,
    first_verdict,
    richardson,
    step_sizes,
)
from gradproof.objective import Objective
from gradproof.params import TensorSpec

UNKNOWN, PASSED, FAILED, EXCLUDED = 0, 1, 2, 3

# Clear failures per set whose verdict is confirmed with a second step.
CONFIRM_SAMPLE = 8

# Unsure probes are measured again with steps KINK_SHRINK**1, **2, ... times smaller, this often.
KINK_ROUNDS = 3

# A kink at the point keeps the one-sided slope gap as the step shrinks KINK_SHRINK-fold; a
# smooth function's gap shrinks with it; a too-coarse step's grows. A gap that changes by less
# than this factor either way is kept.
KINK_GAP_KEPT = 4.0


@dataclass(frozen=True)
class ProbeSet:
    """Probes of one tensor and one kind (see the module docstring).

    Attributes
    ----------
    spec : TensorSpec
        The tensor probed.
    kind : {"entry", "row", "column", "block", "direction"}
    labels : ndarray of int, shape (n,)
        The flat position (entry), the row or column index, or the direction's number.
    positions, values : ndarray
        The supports and direction values of all probes, concatenated.
    start : ndarray of int, shape (n + 1,)
        Probe k owns ``positions[start[k]:start[k+1]]``.
    step : ndarray of shape (n,)
        The nominal step of each probe.
    """

    spec: TensorSpec
    kind: str
    labels: np.ndarray
    positions: np.ndarray
    values: np.ndarray
    start: np.ndarray
    step: np.ndarray

    @property
    def count(self) -> int:
        return int(self.labels.size)

    @property
    def is_entries(self) -> bool:
        return self.kind == "entry"

    def subset(self, which: np.ndarray) -> ProbeSet:
        """The probes ``which`` (indices into this set), in that order."""
        lengths = np.diff(self.start)[which]
        start = np.concatenate(([0], np.cumsum(lengths)))
        pick = _ranges(self.start[which], lengths)
        return ProbeSet(
            self.spec,
            self.kind,
            self.labels[which],
            self.positions[pick],
            self.values[pick],
            start,
            self.step[which],
        )

    def describe(self, k: int, sign: float) -> str:
        """Where probe k's point lies, for messages."""
        step = sign * float(self.step[k])
        if self.is_entries:
            position = int(self.labels[k])
            return f"with {self.spec.label(self.spec.index(position))} moved by {step:+.3g}"
        label = int(self.labels[k])
        return f"at the parameters moved {step:+.3g} along {self.kind} {label} of {self.spec.name}"


def entry_probes(
    spec: TensorSpec, positions: np.ndarray, center: np.ndarray, eps: float
) -> ProbeSet:
    """One probe per flat position (of the whole flat vector), each moving that entry."""
    positions = np.asarray(positions, dtype=np.int64)
    n = positions.size
    return ProbeSet(
        spec,
        "entry",
        positions,
        positions,
        np.ones(n),
        np.arange(n + 1),
        step_sizes(center[positions], eps),
    )


def line_probes(
    spec: TensorSpec,
    axis: int,
    lines: np.ndarray,
    center: np.ndarray,
    eps: float,
    rng: np.random.Generator,
) -> ProbeSet:
    """One probe per row (axis 0) or column (axis 1) of the tensor seen as (rows, rest)."""
    local = spec.local_positions().reshape(spec.shape[0], -1)  # (rows, rest)
    lines = np.asarray(lines, dtype=np.int64)
    supports = [spec.offset + (local[i] if axis == 0 else local[:, i]) for i in lines]
    return _dense(spec, "row" if axis == 0 else "column", lines, supports, center, eps, rng)


def random_probes(
    spec: TensorSpec, count: int, center: np.ndarray, eps: float, rng: np.random.Generator
) -> ProbeSet:
    """``count`` random directions over the whole tensor."""
    support = np.arange(spec.offset, spec.offset + spec.size)
    return _dense(spec, "direction", np.arange(count), [support] * count, center, eps, rng)


def block_probes(
    spec: TensorSpec, count: int, center: np.ndarray, eps: float, rng: np.random.Generator
) -> ProbeSet:
    """One probe per contiguous block of the tensor's entries, ``count`` blocks in all."""
    blocks = np.array_split(np.arange(spec.offset, spec.offset + spec.size), count)
    return _dense(spec, "block", np.arange(len(blocks)), blocks, center, eps, rng)


def _dense(
    spec: TensorSpec,
    kind: str,
    labels: np.ndarray,
    supports: list[np.ndarray],
    center: np.ndarray,
    eps: float,
    rng: np.random.Generator,
) -> ProbeSet:
    values = [unit_direction(center[support], rng) for support in supports]
    start = np.concatenate(([0], np.cumsum([s.size for s in supports]))).astype(np.int64)
    return ProbeSet(
        spec,
        kind,
        labels,
        np.concatenate(supports).astype(np.int64),
        np.concatenate(values),
        start,
        np.full(len(supports), np.cbrt(eps)),
    )


def unit_direction(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian weights times max(1, |x|), scaled to unit length: each entry moves in
    proportion to its own step scale. Gaussian rather than random signs: with signs, an error
    of structured shape (g.T - g is antisymmetric) cancels exactly half of the time."""
    v = rng.standard_normal(x.size) * np.maximum(1.0, np.abs(x))
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class Context:
    """What every stage needs: the objective and the numbers that set the tolerances."""

    objective: Objective
    gradient: np.ndarray  # (size,) the analytic gradient, unrolled like the flat vector
    center: np.ndarray  # (size,) the base point as float64, in the buffer's precision
    j0: float
    noise: float  # the loss's rounding noise (absolute)
    rule: Rule
    eps_grad: dict[str, float]  # each gradient's own machine epsilon
    gmax: dict[str, float]  # each tensor's largest |gradient|

    def rounding_g(self, probes: ProbeSet) -> np.ndarray:
        """The analytic gradient's own rounding along each probe (slope units)."""
        name = probes.spec.name
        weight = (np.abs(self.gradient[probes.positions]) + self.gmax[name]) * np.abs(probes.values)
        return ROUNDING_GROWTH * self.eps_grad[name] * _segment_sum(weight, probes.start)


@dataclass
class Measured:
    """Per-probe results of one ProbeSet (NaN and UNKNOWN until decided)."""

    probes: ProbeSet
    analytic: np.ndarray
    numeric: np.ndarray
    estimate: np.ndarray  # the finite-difference error estimate (truncation + rounding)
    tolerance: np.ndarray
    step: np.ndarray
    status: np.ndarray  # UNKNOWN / PASSED / FAILED / EXCLUDED
    kink: np.ndarray  # bool: the steps h and 2h crossed a kink
    unresolved: np.ndarray  # bool: excluded because the error kept changing as the step shrank
    slopes: np.ndarray  # (n, 2) one-sided slopes at the smallest step, where steps shrank
    rounding_g: np.ndarray
    first: Differences | None = field(default=None, repr=False)

    @classmethod
    def empty(cls, probes: ProbeSet, rounding_g: np.ndarray) -> Measured:
        n = probes.count
        nan = np.full(n, np.nan)
        return cls(
            probes,
            nan.copy(),
            nan.copy(),
            nan.copy(),
            nan.copy(),
            nan.copy(),
            np.zeros(n, dtype=np.int8),
            np.zeros(n, dtype=bool),
            np.zeros(n, dtype=bool),
            np.full((n, 2), np.nan),
            rounding_g,
        )

    @property
    def error(self) -> np.ndarray:
        return self.numeric - self.analytic

    @property
    def compared(self) -> np.ndarray:
        return (self.status == PASSED) | (self.status == FAILED)

    def record(
        self,
        which: np.ndarray | slice,
        analytic: np.ndarray,
        error: np.ndarray,
        estimate: np.ndarray,
        tolerance: np.ndarray,
        step: np.ndarray,
        status: np.ndarray | int,
    ) -> None:
        self.analytic[which] = analytic
        self.numeric[which] = analytic + error
        self.estimate[which] = estimate
        self.tolerance[which] = tolerance
        self.step[which] = step
        self.status[which] = status


@dataclass
class _Stage:
    """One round of ± evaluations of some probes of a set at one multiple of their step."""

    probes: ProbeSet
    which: np.ndarray  # indices into the parent set
    plus: np.ndarray
    minus: np.ndarray
    g_plus: np.ndarray
    g_minus: np.ndarray
    width: np.ndarray
    j_plus: np.ndarray
    j_minus: np.ndarray

    @classmethod
    def build(cls, parent: ProbeSet, which: np.ndarray, factor: float, context: Context) -> _Stage:
        subset = parent.subset(which)
        probes = replace(subset, step=subset.step * factor)
        dtype = context.objective.buffer.dtype
        center = context.center[probes.positions]
        move = np.repeat(probes.step, np.diff(probes.start)) * probes.values
        plus = (center + move).astype(dtype)
        minus = (center - move).astype(dtype)
        # The displacements as stored: exact differences of nearby floats.
        d_plus = plus.astype(np.float64) - center
        d_minus = minus.astype(np.float64) - center
        g = context.gradient[probes.positions]
        start = probes.start
        width = _segment_sum((d_plus - d_minus) * probes.values, start) / _segment_sum(
            probes.values**2, start
        )
        # A step below the buffer's resolution left the probe's entries where they were: it
        # measures nothing (not a derivative of 0), so its differences come out NaN.
        width[width == 0] = np.nan
        n = probes.count
        return cls(
            probes,
            which,
            plus,
            minus,
            _segment_sum(g * d_plus, start),
            _segment_sum(g * d_minus, start),
            width,
            np.full(n, np.nan),
            np.full(n, np.nan),
        )

    @property
    def evaluations(self) -> int:
        return 2 * self.probes.count

    def run(self, objective: Objective) -> None:
        probes = self.probes
        if probes.is_entries:
            objective.entries(
                probes.positions, self.plus, self.minus, self.j_plus, self.j_minus, probes.describe
            )
        else:
            objective.directions(
                probes.positions,
                probes.start,
                self.plus,
                self.minus,
                self.j_plus,
                self.j_minus,
                probes.describe,
            )

    def differences(self, context: Context) -> Differences:
        return central(
            self.j_plus,
            self.j_minus,
            context.j0,
            self.g_plus,
            self.g_minus,
            self.width,
            context.noise,
            context.objective.value_eps,
        )


def measure(sets: list[ProbeSet], context: Context) -> tuple[list[Measured], bool]:
    """Measure every probe of every set (see the module docstring).

    Returns
    -------
    results : list of Measured
        One per set, in order.
    interrupted : bool
        Whether a KeyboardInterrupt cut the evaluations short.
    """
    results = [Measured.empty(s, context.rounding_g(s)) for s in sets]
    stages = [_Stage.build(r.probes, np.arange(r.probes.count), 1.0, context) for r in results]
    interrupted = _run(stages, context)
    rule = context.rule
    redo: list[np.ndarray] = []
    confirm: list[np.ndarray] = []
    clear: list[np.ndarray] = []
    for result, stage in zip(results, stages):
        first = stage.differences(context)
        result.first = first
        known = np.isfinite(first.error)
        passed, failed, tolerance = first_verdict(first, result.rounding_g, rule)
        passed &= known
        failed &= known
        ok = np.flatnonzero(passed)
        result.record(
            ok,
            first.analytic[ok],
            first.error[ok],
            first.rounding[ok],
            tolerance[ok],
            first.half_width[ok],
            PASSED,
        )
        bad = np.flatnonzero(failed)
        # A clear failure keeps its first-step values unless the second step is spent on it.
        result.record(
            bad,
            first.analytic[bad],
            first.error[bad],
            first.rounding[bad] + first.curvature[bad],
            tolerance[bad],
            first.half_width[bad],
            FAILED,
        )
        severity = np.abs(first.error[bad]) / (tolerance[bad] + first.curvature[bad])
        sample = bad[np.argsort(severity, kind="stable")[:CONFIRM_SAMPLE]]
        redo.append(np.flatnonzero(known & ~passed & ~failed))
        confirm.append(sample)
        clear.append(np.setdiff1d(bad, sample))
    if interrupted:
        return results, True
    chosen = [np.concatenate((r, c)) for r, c in zip(redo, confirm)]
    if _decide(results, chosen, context):
        return results, True
    # A confirming sample that turned out fine casts doubt on the set's other clear failures.
    doubtful = [
        rest if (result.status[sample] != FAILED).any() else rest[:0]
        for result, sample, rest in zip(results, confirm, clear)
    ]
    return results, _decide(results, doubtful, context)


def _decide(results: list[Measured], chosen: list[np.ndarray], context: Context) -> bool:
    """Stages 2 and 3 for the chosen probes of each set; True when interrupted."""
    unsure, interrupted = _second_step(results, chosen, context)
    return interrupted or _smaller_steps(results, unsure, context)


def _second_step(
    results: list[Measured], chosen: list[np.ndarray], context: Context
) -> tuple[list[np.ndarray], bool]:
    """Richardson at 2h for the chosen probes.

    Those within tolerance pass. The rest are returned, per set, as unsure, with provisional
    values: two steps cannot tell a wrong derivative from a loss that varies within a step
    (both differences can be aliased), so ``_smaller_steps`` confirms a failure before it
    stands. Probes whose second differences betray a kink are marked.
    """
    stages = [_Stage.build(r.probes, which, 2.0, context) for r, which in zip(results, chosen)]
    interrupted = _run(stages, context)
    unsure = []
    rule = context.rule
    for result, stage in zip(results, stages):
        which = stage.which
        sub = _take(result.first, which)
        extra = richardson(sub, stage.differences(context), context.noise, rule.safety)
        known = np.isfinite(extra.error)
        analytic = sub.analytic
        tolerance = rule.tolerance(
            extra.estimate, result.rounding_g[which], analytic, analytic + extra.error
        )
        ok = known & ~extra.kink & (np.abs(extra.error) <= tolerance)
        left = known & ~ok
        for mask, status in ((ok, PASSED), (left, FAILED)):
            result.record(
                which[mask],
                analytic[mask],
                extra.error[mask],
                extra.estimate[mask],
                tolerance[mask],
                sub.half_width[mask],
                status,
            )
        result.kink[which[known & extra.kink]] = True
        unsure.append(which[left])
    return unsure, interrupted


def _smaller_steps(results: list[Measured], unsure: list[np.ndarray], context: Context) -> bool:
    """Measure unsure probes again with steps KINK_SHRINK, KINK_SHRINK², ... times smaller.

    The gap between the two one-sided slopes tells the regimes apart as the step shrinks
    KINK_SHRINK-fold: a smooth function's gap h·|J''| shrinks with it, a kink at the point
    keeps its jump in slope, and a loss varying faster than the step (whose differences only
    average it out) shows a gap that grows. At each step a probe

    * keeps its previous verdict if this step's tolerance cannot tell the error measured
      before from zero (rounding grows as the step shrinks; a vacuous agreement is no pass);
    * passes if it agrees within the tolerance there;
    * is excluded when the loss has a kink at the point itself, where no step helps: the gap
      was kept (neither shrank nor grew) and the analytic value lies between the slopes, as a
      (sub)gradient does;
    * fails if its numeric derivative agrees with the previous step's within both tolerances
      and the gap did not grow (the finite difference has settled, and a wrong derivative is
      wrong at every step small enough to follow the loss); a probe whose 2h step crossed a
      kink only at the smallest step, and it is excluded when its analytic value lies between
      the one-sided slopes whatever the gap did. Numeric derivatives, not errors:
      the stored direction differs from step to step by rounding, and a wrong gradient's error
      along it moves with it in proportion to the gradient's error (a wrong gradient of a
      smooth loss, N times too large, was once excluded as unresolved that way);
    * otherwise goes on to a smaller step; one whose numeric derivative still changes at the
      last step is excluded as unresolved.
    """
    rule = context.rule
    gaps = [r.first.curvature.copy() for r in results]
    for round_ in range(1, KINK_ROUNDS + 1):
        if not any(which.size for which in unsure):
            return False
        factor = KINK_SHRINK**-round_
        stages = [
            _Stage.build(r.probes, which, factor, context) for r, which in zip(results, unsure)
        ]
        interrupted = _run(stages, context)
        unsure = []
        for result, stage, gap in zip(results, stages, gaps):
            which = stage.which
            small = stage.differences(context)
            known = np.isfinite(small.error)
            # A step that vanished in the buffer's precision is blind: the earlier verdict stands.
            _keep_previous_or_exclude(result, which[~known])
            which, small = which[known], _take(small, np.flatnonzero(known))
            # Truncation shrinks like the step squared: what was estimated before, scaled.
            estimate = small.rounding + result.estimate[which] / KINK_SHRINK**2
            tolerance = rule.tolerance(
                estimate, result.rounding_g[which], small.analytic, small.numeric
            )
            previous, previous_tolerance = result.error[which], result.tolerance[which]
            # Rounding grows as the step shrinks: a step whose tolerance cannot tell the error
            # measured before from zero says nothing, and the sharper earlier measurement stands.
            blind = tolerance >= np.abs(previous)
            ok = ~blind & (np.abs(small.error) <= tolerance)
            # The slope gap's own rounding is 4x that of the central difference.
            resolved = small.curvature > rule.safety * 4 * small.rounding
            kept = resolved & (small.curvature > gap[which] / KINK_GAP_KEPT)
            grew = resolved & (small.curvature > gap[which] * KINK_GAP_KEPT)
            gap[which] = small.curvature
            # A kink seen at 2h that this step still crosses, a little off the point, keeps
            # its gap and gives the same central difference at every step much larger than
            # its distance: there the analytic slope is the one-sided slope on the point's
            # side, and between_slopes is the whole test.
            crossed = kept & ~grew | result.kink[which]
            excluded = ~blind & ~ok & crossed & between_slopes(small, tolerance)
            # Whether the loss's finite difference has settled (see above: not the errors).
            steady = (
                np.abs(small.numeric - result.numeric[which]) <= tolerance + previous_tolerance
            )
            last = round_ == KINK_ROUNDS
            # Across kinks a little off the point (a relu 1e-9 from 0, several at once) the
            # difference also looks settled while the step still crosses them: a probe that
            # crossed a kink at 2h fails on a settled difference only at the smallest step.
            failed = ~blind & ~ok & ~excluded & steady & ~grew & (~result.kink[which] | last)
            moving = ~blind & ~ok & ~excluded & ~failed
            seen = ~blind
            status = np.where(ok, PASSED, np.where(failed | moving, FAILED, EXCLUDED))
            result.record(
                which[seen],
                small.analytic[seen],
                small.error[seen],
                estimate[seen],
                tolerance[seen],
                small.half_width[seen],
                status[seen],
            )
            _keep_previous_or_exclude(result, which[blind])
            result.slopes[which[seen]] = np.column_stack(
                (small.analytic + small.backward, small.analytic + small.forward)
            )[seen]
            if last:
                # Still changing at the last step: the loss varies faster than any step tried.
                result.status[which[moving]] = EXCLUDED
                result.unresolved[which[moving]] = True
                unsure.append(which[:0])
            else:
                # Until a smaller step decides, they count as failed.
                unsure.append(which[moving])
        if interrupted:
            return True
    return False


def _keep_previous_or_exclude(result: Measured, which: np.ndarray) -> None:
    """Decide probes whose latest step could not: by their earlier, sharper measurement, but
    one whose earlier step crossed a kink is excluded as unresolved when that step disagrees
    (a float32 loss whose smaller steps drown in rounding): a difference across a kink is no
    evidence of a wrong gradient."""
    agree = np.abs(result.error[which]) <= result.tolerance[which]
    result.status[which] = np.where(agree, PASSED, FAILED)
    unresolved = which[~agree & result.kink[which]]
    result.status[unresolved] = EXCLUDED
    result.unresolved[unresolved] = True


def _run(stages: list[_Stage], context: Context) -> bool:
    """Evaluate the stages; True when a KeyboardInterrupt stopped them."""
    context.objective.plan(sum(stage.evaluations for stage in stages))
    try:
        for stage in stages:
            stage.run(context.objective)
    except KeyboardInterrupt:
        return True
    return False


def _take(d: Differences, which: np.ndarray) -> Differences:
    return Differences(*(getattr(d, name)[which] for name in Differences.__dataclass_fields__))


def _segment_sum(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Sums of ``values[start[k]:start[k+1]]`` (no segment is empty)."""
    if start.size <= 1:
        return np.zeros(0)
    return np.add.reduceat(values, start[:-1])


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` for each (s, n)."""
    if lengths.size == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(int(lengths.sum())) + offsets
