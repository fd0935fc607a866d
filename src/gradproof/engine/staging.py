"""The staged measurement: every probe decided with as few steps as its evidence needs.

Contract: ``measure(results, evaluator, rule) -> interrupted`` fills ``results`` (one
``probes.Measured`` per probe set, empty) in place. An ``Evaluator`` turns requests (a set,
which of its probes, a multiple of their steps) into central differences (``Evaluated``);
this module alone decides, from those and ``rule``, after up to three stages:

1. every probe at step h. A clear pass (within the rounding tolerance) or a clear failure
   (see ``finite_diff.first_verdict``) is decided here: most entries of a correct gradient and
   all of a badly wrong one cost one step and no more;
2. the undecided, plus a sample of each set's clear failures to confirm them (if one of the
   sample turns out fine, all that set's clear failures go through stages 2 and 3 too), again
   at 2h: Richardson extrapolation removes the h² truncation and estimates it, and they pass
   if within that tolerance;
3. the probes whose step crossed a kink, and (black box) the failures not yet confirmed, at
   smaller steps. What a kink is depends on what the evaluator knows:

   * an evaluator that knows where the loss's kinks are (``kinks_known``: the exact one sees
     the pre-activations a step moves) flags the probes whose step crossed one, at h or 2h.
     Its differences are exact to their estimate, so a failure at 2h stands. Each flagged
     probe is measured again with steps ``KINK_SHRINK``, ``KINK_SHRINK``², ... times smaller
     while it disagrees and still crosses a kink, where it passes, is excluded (a kink at the
     point, the analytic value between the one-sided slopes; or unresolved, when a smaller
     step's rounding cannot resolve the error or its smallest step still crosses a kink) or
     fails (``_kink_step``);
   * otherwise (the black box) the differences of the five values that vanish to high order
     for a smooth function reveal a kink (``finite_diff.richardson``), and since two steps
     cannot tell a wrong derivative from a loss that varies within a step, every probe not
     passed at 2h is measured again at h/64, h/64², h/64³ until decided (``_smaller_steps``).
     One whose 2h step crossed a kink fails on a settled difference only at the smallest step
     (across a kink a little off the point the difference looks settled while steps still
     cross it), and is excluded as unresolved, not failed, when no smaller step can resolve
     its error.

A KeyboardInterrupt during an evaluation (the evaluator sets ``interrupted``) stops the
stages: what was decided is kept (a failure still waiting for its confirmation counts as
failed), the rest stays unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gradproof.finite_diff import (
    KINK_SHRINK,
    Differences,
    Rule,
    between_slopes,
    first_verdict,
    richardson,
)
from gradproof.engine.one_sided import judge, side
from gradproof.engine.probes import EXCLUDED, FAILED, PASSED, UNKNOWN, Measured

# Clear failures per set whose verdict is confirmed with a second step.
CONFIRM_SAMPLE = 8

# Unsure probes are measured again with steps KINK_SHRINK**1, **2, ... times smaller, this often.
KINK_ROUNDS = 3

# One-sided slopes are measured at steps s, s/2, s/4 from s = h, then from s this many times
# smaller, up to ONE_SIDED_ROUNDS times in all, while a side still crosses a kink.
ONE_SIDED_SHRINK = 16.0
ONE_SIDED_ROUNDS = 6

# A kink at the point keeps the one-sided slope gap as the step shrinks KINK_SHRINK-fold; a
# smooth function's gap shrinks with it; a too-coarse step's grows. A gap that changes by less
# than this factor either way is kept.
KINK_GAP_KEPT = 4.0

# A smooth function's one-sided slope gap doubles with the step; one that grows by less than
# this factor from h to 2h is a kink's (see ``_gap_kept``).
GAP_GROWTH = 1.5

# Failures beyond this many times their tolerance are not put down to such a kink.
MARGINAL = 2.0

# Unconfirmed failures (see ``_wholesale``) stand when more than this share of a set's probes
# are such failures off by at least WHOLESALE_RELATIVE of the derivative they test.
WHOLESALE = 0.5
WHOLESALE_RELATIVE = 0.1

# A request: a set's results and which of its probes (indices into the set) to evaluate.
Request = tuple[Measured, np.ndarray]


@dataclass(frozen=True)
class Evaluated:
    """Central differences of some probes of one set at one multiple of their step.

    The arrays are what the first stage needs for every probe; ``differences`` builds the
    full ``finite_diff.Differences`` of the rows it is given, which only the probes that one
    step does not pass need.
    """

    which: np.ndarray  # the probes, as indices into the set
    where: np.ndarray | slice  # the same, as written into the results (a slice when contiguous)
    analytic: np.ndarray
    numeric: np.ndarray
    error: np.ndarray  # numeric - analytic
    rounding: np.ndarray  # the rounding estimate of ``error``
    step: np.ndarray  # the half-width of each difference
    kink: np.ndarray | None  # bool: the step crossed a kink (None: the evaluator cannot tell)
    differences: Callable[[np.ndarray | slice], Differences]
    last: bool  # the last piece of its request


class Evaluator(Protocol):
    """What the stages need from a way of evaluating the loss at perturbed points."""

    noise: float  # the loss's rounding noise, allowed for in Richardson's kink test
    kinks_known: bool  # whether ``Evaluated.kink`` says which steps crossed a kink
    interrupted: bool  # set when a KeyboardInterrupt stopped an evaluation

    def evaluate(
        self, requests: list[Request], factor: float
    ) -> Iterator[tuple[int, Evaluated]]:
        """The probes of each request at ``factor`` times their steps, as (request index,
        differences): one or more pieces per request, a request's pieces together and the
        requests in order."""
        ...


@dataclass(frozen=True)
class FirstStep:
    """The first-step differences of the probes one step did not pass, looked up by probe."""

    values: Differences
    position: np.ndarray  # probe -> its row in ``values`` (-1: passed, not kept)

    @classmethod
    def join(cls, parts: list[np.ndarray], values: list[Differences], size: int) -> FirstStep:
        position = np.full(size, -1, dtype=np.intp)
        probes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
        position[probes] = np.arange(probes.size)
        joined = Differences(*(
            np.concatenate([getattr(v, key) for v in values]) if values else np.zeros(0)
            for key in Differences.__dataclass_fields__
        ))
        return cls(joined, position)

    def take(self, which: np.ndarray) -> Differences:
        return self.values.take(self.position[which])


def measure(results: list[Measured], evaluator: Evaluator, rule: Rule,
            kinks: bool = False) -> bool:
    """Measure every probe of every set (see the module docstring). ``kinks``: an earlier
    measurement of the same loss crossed a kink (its probes' parts are measured later), so
    that a failure here must be confirmed as where these probes show one.

    Returns
    -------
    bool
        Whether a KeyboardInterrupt cut the evaluations short.
    """
    firsts = _first_step(results, evaluator, rule)
    if evaluator.interrupted:
        return True
    chosen, confirm, clear, kinked = [], [], [], []
    for result, first in zip(results, firsts):
        failed = np.flatnonzero(result.status == FAILED)
        values = first.take(failed)
        severity = np.abs(values.error) / (result.tolerance[failed] + values.curvature)
        sample = failed[np.argsort(severity, kind="stable")[:CONFIRM_SAMPLE]]
        open_ = np.flatnonzero((result.status == UNKNOWN) & ~result.kink)
        undecided = open_[np.isfinite(first.take(open_).error)]  # NaN: nothing was measured
        chosen.append(np.union1d(undecided, sample))
        confirm.append(sample)
        clear.append(np.setdiff1d(failed, sample))
        kinked.append(np.flatnonzero(result.kink))
    if _decide(results, firsts, chosen, kinked, evaluator, rule):
        return True
    # A confirming sample that turned out fine casts doubt on the set's other clear failures.
    doubtful = [
        rest if (result.status[sample] != FAILED).any() else rest[:0]
        for result, sample, rest in zip(results, confirm, clear)
    ]
    if _decide(results, firsts, doubtful, [d[:0] for d in doubtful], evaluator, rule):
        return True
    kinks = not evaluator.kinks_known and (kinks or any(r.kink.any() for r in results))
    if not evaluator.kinks_known:
        unmeasured = [np.setdiff1d(rest, d) for rest, d in zip(clear, doubtful)]
        _one_sided(results, [_crossed(r, u) for r, u in zip(results, unmeasured)], evaluator,
                   rule, kinks)
    for result in results:
        result.floor = _confirmable(result, rule) if kinks else np.zeros_like(result.floor)
    return evaluator.interrupted


def _first_step(results: list[Measured], evaluator: Evaluator, rule: Rule) -> list[FirstStep]:
    """Every probe at step h; record what one step decides.

    Most probes pass on the rounding tolerance alone; only the others get their full
    differences, are classified by ``first_verdict`` and kept for later steps.
    """
    parts: list[list[np.ndarray]] = [[] for _ in results]
    values: list[list[Differences]] = [[] for _ in results]
    firsts: list[FirstStep | None] = [None] * len(results)
    requests = [(result, np.arange(result.probes.count)) for result in results]
    for k, ev in evaluator.evaluate(requests, 1.0):
        result = results[k]
        rounding_g = result.rounding_g[ev.where]
        tolerance = rule.tolerance(ev.rounding, rounding_g, ev.analytic, ev.numeric)
        passed = np.abs(ev.error) <= tolerance
        result.record(ev.where, ev.analytic, ev.error, ev.rounding, tolerance, ev.step,
                      np.where(passed, PASSED, UNKNOWN))
        result.floor[ev.where] = ev.rounding  # kept until ``_confirmable`` needs it
        rest = np.flatnonzero(~passed)
        if rest.size:
            _first_failures(result, ev, rest, rounding_g[rest], rule, parts[k], values[k])
        if ev.last:
            # Joined as soon as the set's pieces are in, before the next set is evaluated:
            # its arrays then reuse the memory this set's evaluation freed, and the next
            # evaluation pays fewer page faults for fresh memory.
            firsts[k] = FirstStep.join(parts[k], values[k], result.probes.count)
    # An interrupted evaluation leaves sets without their last piece.
    return [
        first if first is not None else FirstStep.join(p, v, result.probes.count)
        for first, p, v, result in zip(firsts, parts, values, results)
    ]


def _first_failures(result: Measured, ev: Evaluated, rest: np.ndarray, rounding_g: np.ndarray,
                    rule: Rule, parts: list[np.ndarray], values: list[Differences]) -> None:
    """Classify the probes ``rest`` of a piece that one step did not pass; keep their
    differences for the later stages."""
    which, step = ev.which[rest], ev.differences(rest)
    kink = ev.kink[rest] if ev.kink is not None else np.zeros(rest.size, dtype=bool)
    _, failed, tolerance = first_verdict(step, rounding_g, rule)
    failed &= ~kink
    # A clear failure keeps its first-step values unless a second step is spent on it.
    result.record(which[failed], step.analytic[failed], step.error[failed],
                  step.rounding[failed] + step.curvature[failed], tolerance[failed],
                  step.half_width[failed], FAILED)
    result.kink[which] = kink  # decided again at a smaller step
    parts.append(which)
    values.append(step)


def _decide(
    results: list[Measured],
    firsts: list[FirstStep],
    chosen: list[np.ndarray],
    kinked: list[np.ndarray],
    evaluator: Evaluator,
    rule: Rule,
) -> bool:
    """Stages 2 and 3 for the chosen probes of each set (and the ``kinked`` of stage 1);
    True when interrupted."""
    unsure, marginal = _second_step(results, firsts, chosen, evaluator, rule)
    if evaluator.interrupted:
        return True
    if evaluator.kinks_known:
        _kink_step(results, [np.union1d(k, u) for k, u in zip(kinked, unsure)], evaluator, rule)
    else:
        _smaller_steps(results, firsts, unsure, marginal, evaluator, rule)
    return evaluator.interrupted


def _second_step(
    results: list[Measured],
    firsts: list[FirstStep],
    chosen: list[np.ndarray],
    evaluator: Evaluator,
    rule: Rule,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Richardson at 2h for the chosen probes; returns, per set, those still unsure, and a
    mask of the probes whose marginal failure a kink may explain (``_gap_kept``): decided as
    kinks are, without counting as a kink of the loss (which would make every failure
    elsewhere wait for a confirmation a float32 loss's smaller steps cannot give).

    Those within tolerance pass. With kinks known, a failure stands and the unsure are those
    whose 2h step crossed a kink. Otherwise the rest are unsure, with provisional values: two
    steps cannot tell a wrong derivative from a loss that varies within a step (both
    differences can be aliased), so ``_smaller_steps`` confirms a failure before it stands;
    probes whose second differences betray a kink are marked.
    """
    unsure: list[list[np.ndarray]] = [[] for _ in results]
    marginal = [np.zeros(result.probes.count, dtype=bool) for result in results]
    for k, ev in evaluator.evaluate(list(zip(results, chosen)), 2.0):
        result, which = results[k], ev.which
        sub = firsts[k].take(which)
        wide = ev.differences(slice(None))
        extra = richardson(sub, wide, evaluator.noise, rule.safety)
        known = np.isfinite(extra.error)
        analytic = sub.analytic
        tolerance = rule.tolerance(
            extra.estimate, result.rounding_g[which], analytic, analytic + extra.error
        )
        if evaluator.kinks_known:
            kink = ev.kink
            ok = ~kink & (np.abs(extra.error) <= tolerance)
            failed = ~kink & ~ok
            unsure[k].append(which[kink])
        else:
            kink = known & extra.kink
            ok = known & ~kink & (np.abs(extra.error) <= tolerance)
            failed = known & ~ok
            marginal[k][which[failed & _gap_kept(sub, wide, extra.error, tolerance, rule)]] = True
            result.kink[which[kink]] = True
            unsure[k].append(which[failed])
        for mask, status in ((ok, PASSED), (failed, FAILED)):
            result.record(which[mask], analytic[mask], extra.error[mask], extra.estimate[mask],
                          tolerance[mask], sub.half_width[mask], status)
    return [_joined(parts) for parts in unsure], marginal


def _gap_kept(first: Differences, wide: Differences, error: np.ndarray, tolerance: np.ndarray,
              rule: Rule) -> np.ndarray:
    """Marginal failures a kink within the step explains, where Richardson's test cannot
    tell (its allowance for a float32 loss's noise hides a kink's departure): a smooth
    function's slope gap doubles with the step (h·|J''|), a kink's at a distance t < h grows
    less (from |jump|·(1 - t/h) to |jump|·(1 - t/2h)); a central difference across it errs by
    up to half the gap. They are then decided as kinks are: a failure stands only where a
    smaller step confirms it (stress seeds 17, 66, 276, 527: float32 entries failing by 1.1-1.8
    times their tolerance, with gaps 5-9 times it, at steps that cross a relu's kink). Only
    failures within ``MARGINAL`` times their tolerance: a wrong gradient's larger errors (a
    tensor scaled by 1.5) fail as before, though a float32 step crosses kinks everywhere."""
    # The slope gap's own rounding is 4x that of the central difference (as in _smaller_steps).
    resolved = first.curvature > rule.safety * 4 * first.rounding
    kept = wide.curvature < GAP_GROWTH * first.curvature
    explained = np.abs(error) <= np.minimum(first.curvature / 2 + tolerance, MARGINAL * tolerance)
    return resolved & kept & explained


def _kink_step(
    results: list[Measured], kinked: list[np.ndarray], evaluator: Evaluator, rule: Rule
) -> None:
    """Probes whose step crossed a known kink, again with steps KINK_SHRINK, KINK_SHRINK², ...
    times smaller (up to KINK_ROUNDS) while they disagree and their step still crosses one.

    A kink a little off the point (a pre-activation 1e-9 from 0) is crossed by the first
    smaller steps and not by a later one, which then measures the slope on the point's side.
    One that still disagrees with its smallest step across a kink, or whose smaller step's
    rounding cannot resolve the error its larger step measured, is excluded as unresolved:
    the kink, not the gradient, explains it.
    """
    for round_ in range(1, KINK_ROUNDS + 1):
        crossing: list[list[np.ndarray]] = [[] for _ in results]
        for k, ev in evaluator.evaluate(list(zip(results, kinked)), KINK_SHRINK**-round_):
            result, which = results[k], ev.which
            previous = np.abs(result.error[which])  # at the larger step, across a kink
            small = ev.differences(slice(None))
            tolerance = rule.tolerance(
                small.rounding, result.rounding_g[which], small.analytic, small.numeric
            )
            # Rounding grows as the step shrinks: a tolerance that cannot tell the error
            # measured before from zero makes an agreement vacuous, and the probe, whose
            # larger steps crossed a kink, stays unresolved.
            blind = tolerance >= previous
            ok = ~blind & (np.abs(small.error) <= tolerance)
            excluded = ~ok & between_slopes(small, tolerance)
            unresolved = ~ok & ~excluded & blind
            result.unresolved[which[unresolved]] = True
            status = np.where(ok, PASSED, np.where(excluded | unresolved, EXCLUDED, FAILED))
            result.record(which, small.analytic, small.error, small.rounding, tolerance,
                          small.half_width, status)
            result.kink[which] = True
            result.slopes[which] = np.column_stack(
                (small.analytic + small.backward, small.analytic + small.forward)
            )
            crossing[k].append(which[ev.kink & (status == FAILED)])
        kinked = [_joined(parts) for parts in crossing]
        if evaluator.interrupted or not any(which.size for which in kinked):
            return
    for result, which in zip(results, kinked):
        result.status[which] = EXCLUDED
        result.unresolved[which] = True


def _smaller_steps(
    results: list[Measured],
    firsts: list[FirstStep],
    unsure: list[np.ndarray],
    marginal: list[np.ndarray],
    evaluator: Evaluator,
    rule: Rule,
) -> None:
    """Measure unsure probes again with steps KINK_SHRINK, KINK_SHRINK², ... times smaller.
    Those ``marginal`` (a mask per set, see ``_second_step``) are decided as if their 2h step
    had crossed a kink.

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
    gaps = []
    for result, first in zip(results, firsts):
        gap = np.full(result.probes.count, np.nan)
        kept = first.position >= 0
        gap[kept] = first.values.curvature[first.position[kept]]
        gaps.append(gap)
    for round_ in range(1, KINK_ROUNDS + 1):
        if not any(which.size for which in unsure):
            return
        moving_on: list[list[np.ndarray]] = [[] for _ in results]
        last = round_ == KINK_ROUNDS
        for k, ev in evaluator.evaluate(list(zip(results, unsure)), KINK_SHRINK**-round_):
            result, gap, kinked = results[k], gaps[k], results[k].kink | marginal[k]
            small = ev.differences(slice(None))
            known = np.isfinite(small.error)
            # A step that vanished in the buffer's precision is blind: the earlier verdict stands.
            _keep_previous_or_exclude(result, ev.which[~known], kinked)
            which, small = ev.which[known], small.take(np.flatnonzero(known))
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
            crossed = kept & ~grew | kinked[which]
            excluded = ~blind & ~ok & crossed & between_slopes(small, tolerance)
            # Whether the loss's finite difference has settled (see above: not the errors).
            steady = (
                np.abs(small.numeric - result.numeric[which]) <= tolerance + previous_tolerance
            )
            # Across kinks a little off the point (a relu 1e-9 from 0, several at once) the
            # difference also looks settled while the step still crosses them: a probe that
            # crossed a kink at 2h fails on a settled difference only at the smallest step.
            failed = ~blind & ~ok & ~excluded & steady & ~grew & (~kinked[which] | last)
            moving = ~blind & ~ok & ~excluded & ~failed
            seen = ~blind
            status = np.where(ok, PASSED, np.where(failed | moving, FAILED, EXCLUDED))
            result.record(which[seen], small.analytic[seen], small.error[seen], estimate[seen],
                          tolerance[seen], small.half_width[seen], status[seen])
            _keep_previous_or_exclude(result, which[blind], kinked)
            result.slopes[which[seen]] = np.column_stack(
                (small.analytic + small.backward, small.analytic + small.forward)
            )[seen]
            if last:
                # Still changing at the last step: the loss varies faster than any step tried.
                result.status[which[moving]] = EXCLUDED
                result.unresolved[which[moving]] = True
            else:
                # Until a smaller step decides, they count as failed.
                moving_on[k].append(which[moving])
        unsure = [_joined(parts) for parts in moving_on]
        if evaluator.interrupted:
            return


def _keep_previous_or_exclude(result: Measured, which: np.ndarray, kinked: np.ndarray) -> None:
    """Decide probes whose latest step could not: by their earlier, sharper measurement, but
    one whose earlier step crossed a kink (``kinked``, a mask over the set) is excluded as
    unresolved when that step disagrees (a float32 loss whose smaller steps drown in
    rounding): a difference across a kink is no evidence of a wrong gradient."""
    agree = np.abs(result.error[which]) <= result.tolerance[which]
    result.status[which] = np.where(agree, PASSED, FAILED)
    unresolved = which[~agree & kinked[which]]
    result.status[unresolved] = EXCLUDED
    result.unresolved[unresolved] = True


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)


def _crossed(result: Measured, unmeasured: np.ndarray) -> np.ndarray:
    """The probes central differences left failed or excluded, but for the clear failures
    measured once: a kink goes unseen where kinks on both sides keep the differences regular
    (a float32 loss), or where one a little off the point is crossed by every smaller step."""
    failed = result.status == FAILED
    failed[unmeasured] = False
    return np.flatnonzero(failed | (result.status == EXCLUDED))


def _confirmable(result: Measured, rule: Rule) -> np.ndarray:
    """The smallest error a failure confirmed at the second one-sided step (h/16, where the
    loss has kinks) resolves: the tolerance of the slope extrapolated from its s/2 and s/4,
    from each probe's rounding at h (held in ``floor`` since the first step)."""
    rounding = 2 * ONE_SIDED_SHRINK * result.floor  # a one-sided slope's rounding at h/16
    # The rounding of 2 n(s/4) - n(s/2), as in ``one_sided.side``.
    return rule.tolerance((2 * 4 + 2) * rounding, result.rounding_g, result.analytic,
                          result.numeric)


def _one_sided(
    results: list[Measured], chosen: list[np.ndarray], evaluator: Evaluator, rule: Rule,
    kinks: bool,
) -> None:
    """Settle the chosen probes (see ``_crossed``) by their one-sided slopes at s, s/2, s/4
    (``engine.one_sided``): from s = h, then ``ONE_SIDED_SHRINK`` times smaller while a side
    still crosses a kink (a kink 1e-7 from the point is crossed by h = 6e-6, not by h/256).

    A probe that matches one smooth side passes. One whose two smooth sides agree on another
    slope fails; where an earlier step saw a side cross a kink, only once the next, smaller
    step sees it again: across a kink a little off the point, a side's slopes at three steps
    can line up by chance (the slopes beyond it share one value), and the next step, which no
    longer crosses it, shows the slope at the point. The rest are excluded with a ``kink``
    note: at the point (both sides smooth and different), or unresolved.

    Where no kink shows in a probe's own slopes, its central difference is the sharper
    measurement and its verdict stands; but where the loss has ``kinks`` elsewhere, every
    failure stands only once a smaller step confirms it: kinks on both sides can hide in the
    rounding of a float32 loss, whose steps cross many, or in a direction that adds up many
    entries, and a failure no smaller step can resolve is excluded, unless such failures are
    most of their set (``_wholesale``).
    """
    # The smallest error each probe's measurements resolved so far: a later, coarser step's
    # tolerance at or above it makes a match vacuous.
    resolved = [np.abs(result.error[which]) for result, which in zip(results, chosen)]
    # Per probe: whether a side was seen crossing a kink, and whether it failed after that once.
    crossed = [np.zeros(which.size, dtype=bool) for which in chosen]
    pending = [np.zeros(which.size, dtype=bool) for which in chosen]
    # The range of every one-sided slope measured (extrapolated, both sides), per probe.
    ranges = [np.column_stack((np.full(w.size, np.inf), np.full(w.size, -np.inf))) for w in chosen]
    # Per probe: whether a step showed the slope change at the point (``one_sided.POINT_GAP``).
    points = [np.zeros(which.size, dtype=bool) for which in chosen]
    # Per set, over all its probes: a probe's own measurements showed a kink (its central
    # differences, or its one-sided slopes at some step), and a failure of it waited for a
    # confirmation only because the loss has kinks elsewhere.
    owned = [result.kink | (result.status == EXCLUDED) for result in results]
    waited = [np.zeros(result.probes.count, dtype=bool) for result in results]
    for round_ in range(ONE_SIDED_ROUNDS):
        if not any(which.size for which in chosen):
            break
        factor = ONE_SIDED_SHRINK**-round_
        steps = [_at(results, chosen, evaluator, factor / k) for k in (1, 2, 4)]
        if evaluator.interrupted:
            return
        going_on, still, seen, waiting, kept_ranges, kept_points = [], [], [], [], [], []
        for result, which, previous, doubt, again, span, point, own, wait, (s1, s2, s4) in zip(
            results, chosen, resolved, crossed, pending, ranges, points, owned, waited,
            zip(*steps),
        ):
            rounding, analytic = 2 * s1.rounding, s4.analytic
            slopes = {
                name: [s.analytic + getattr(s, name) for s in (s1, s2, s4)]
                for name in ("forward", "backward")
            }
            forward, backward = (
                side(*slopes[name], analytic, rounding, rule.safety)
                for name in ("forward", "backward")
            )
            # Extrapolated slopes, not the raw ones: a smooth side's raw slopes differ by its
            # curvature (s·|J''|), which kinks do not explain, and which once covered an
            # error of 1e-4 in an entry whose loss is smooth (stress seed 121's b3[2]).
            every = analytic[:, None] + np.column_stack((forward.error, backward.error))
            span = np.column_stack((np.minimum(span[:, 0], every.min(axis=1)),
                                    np.maximum(span[:, 1], every.max(axis=1))))
            spread = span[:, 1] - span[:, 0]
            verdict = judge(analytic, spread, forward, backward, previous,
                            result.kink[which] | doubt, result.rounding_g[which], rule, point)
            failed = verdict.failed & (~(doubt | kinks) | again)
            if not result.probes.is_entries:
                # Many units at their kink at once along a direction can give both sides one
                # slope, another than the analytic one: a direction that crossed a kink is
                # split into its entries instead (``BlackBoxRun._split``).
                failed &= ~(doubt | result.kink[which])
            decided = verdict.passed | failed
            status = np.where(verdict.passed, PASSED, FAILED)
            result.record(which[decided], analytic[decided], verdict.error[decided],
                          verdict.estimate[decided], verdict.tolerance[decided],
                          s4.half_width[decided], status[decided])
            result.slopes[which] = np.column_stack(
                (analytic + backward.error, analytic + forward.error)
            )
            result.one_sided[which[decided]] = True
            result.kink[which[verdict.kink]] = True
            at_point = which[verdict.at_point]
            result.status[at_point] = EXCLUDED
            result.unresolved[at_point] = False
            own[which[verdict.kink | ~(forward.smooth & backward.smooth)]] = True
            # Where the loss has kinks, a failure no kink explains must show again at a
            # smaller step, like one after a side was seen crossing a kink.
            unsure = verdict.kept & kinks
            wait[which[unsure]] = True
            first = verdict.failed | unsure
            # Excluded unless a smaller step decides them (a first failure among them).
            rest = ~decided & ~verdict.at_point & ~(verdict.kept & (not kinks))
            result.status[which[rest]] = EXCLUDED
            result.unresolved[which[rest]] = True
            more = rest & (~verdict.blind | first)
            # A smooth side measured its slope's error, whatever the other side did.
            for one in (forward, backward):
                previous = np.where(one.smooth, np.minimum(previous, np.abs(one.error)), previous)
            going_on.append(which[more])
            still.append(previous[more])
            seen.append((doubt | unsure | ~(forward.smooth & backward.smooth))[more])
            waiting.append(first[more])
            kept_ranges.append(span[more])
            kept_points.append(verdict.point[more])
        chosen, resolved, crossed, pending = going_on, still, seen, waiting
        ranges, points = kept_ranges, kept_points
    for result, own, wait in zip(results, owned, waited):
        _wholesale(result, wait & ~own & (result.status == EXCLUDED) & result.unresolved)


def _wholesale(result: Measured, unconfirmed: np.ndarray) -> None:
    """Failures left ``unconfirmed`` (a mask over the set: measured beyond tolerance, no kink
    in their own differences or slopes, excluded only because the loss has kinks elsewhere and
    no smaller step could confirm them) stand when more than ``WHOLESALE`` of the set's probes
    are such failures off by ``WHOLESALE_RELATIVE`` of their derivative or more.

    Kinks hidden in a probe's rounding (a float32 loss) change its slope by what the units at
    their kink carry: a bias that moves a whole batch crosses the same few units at 0 in every
    one of its entries (stress seed 571: six of b1's eight entries off by 0.5-1% of their
    value, a correct gradient). A wrong gradient is off by a tenth of its value or more over
    most of a set (a weight decay halved: a median of 40% over 78 of W2's 80 entries, with no
    kink in W2 at all); excluding all of that would pass the tensor on the few probes left,
    and in float32 no smaller step can confirm even such an error.
    """
    error = np.abs(result.error[unconfirmed])
    scale = np.maximum(np.abs(result.analytic[unconfirmed]), np.abs(result.numeric[unconfirmed]))
    large = np.count_nonzero(error >= WHOLESALE_RELATIVE * scale)
    if large > WHOLESALE * result.probes.count:
        result.status[unconfirmed] = FAILED
        result.unresolved[unconfirmed] = False


def _at(results: list[Measured], chosen: list[np.ndarray], evaluator: Evaluator,
        factor: float) -> list[Differences]:
    """The differences of the chosen probes of each set at ``factor`` times their step, in
    the order chosen."""
    parts: list[list[np.ndarray]] = [[] for _ in results]
    values: list[list[Differences]] = [[] for _ in results]
    for k, ev in evaluator.evaluate(list(zip(results, chosen)), factor):
        parts[k].append(ev.which)
        values[k].append(ev.differences(slice(None)))
    return [
        FirstStep.join(p, v, result.probes.count).take(which)
        for p, v, result, which in zip(parts, values, results, chosen)
    ]
