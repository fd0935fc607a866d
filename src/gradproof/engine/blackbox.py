"""The black-box evaluator and run: the user's loss, evaluated at perturbed points.

Contract: ``BlackBoxRun(layout, mode, samples, directions, budget, rule, rng)`` holds one
``check_gradient``: ``setup`` evaluates the loss and its gradient at the point (through
``gradproof.engine.objective``, which turns misuse into ``InputError``), measures the loss's rounding
noise and makes the precision and nondeterminism notes; ``probe`` chooses what to probe (the
mode, see ``check_gradient``) and has ``engine.staging`` measure it through a
``BlackBoxEvaluator``, which evaluates J(θ ± d) for whole probe sets at a time
(``objective.entries`` / ``directions``) and knows nothing of kinks; ``finish`` looks at the
starting point again. ``report()`` is ``engine.run.Run``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gradproof.engine.run import Run, gradient_eps, gradient_precision_findings, is_low
from gradproof.engine.staging import Evaluated, Request, measure
from gradproof.finite_diff import (
    NOISE_POINTS,
    ROUNDING_GROWTH,
    Differences,
    Rule,
    central,
    noise_level,
)
from gradproof.engine.objective import Objective
from gradproof.params import ParamLayout, TensorSpec
from gradproof.engine.probes import (
    BLOCK_ENTRIES,
    EXCLUDED,
    FAILED,
    Context,
    Measured,
    ProbeSet,
    block_probes,
    blocks,
    entry_probes,
    halves,
    line_probes,
    random_probes,
    segment_sum,
    unit_direction,
)
from gradproof.report import Finding
from gradproof.engine.taylor import TaylorResult, taylor
from gradproof.engine.verdict import (
    SHARPER_CALLS,
    noisy_loss_finding,
    nondeterministic_finding,
    params_precision_finding,
    transposed_finding,
)

# A loss that gives two values this many eps*|J| apart at the same point is nondeterministic
# (smaller differences are the rounding of reordered parallel sums, and harmless).
NONDETERMINISM_ULPS = 64.0

# Relative rounding noise of the loss beyond this many float64 eps is worth a `precision` note.
NOISY_LOSS_ULPS = 1e4

# At most this many entries are probed where failing rows and columns cross (auto mode).
CROSSING_BUDGET = 256

# A probe excluded at a kink is split into its entries once its support is no larger than
# this, or than half the splitting allowance its tensor has left; in halves otherwise.
SPLIT_TO_ENTRIES = 4


class BlackBoxRun(Run):
    """One ``check_gradient``, filled step by step so that an interrupt leaves a report."""

    @property
    def sharper(self) -> str | None:
        """The float64 call, where the loss's precision limits the check (evaluated in a lower
        precision, or carrying rounding noise); None where the loss was exact enough. A call
        set here (``engine.noise``: a loss only as accurate as a solver) takes precedence."""
        if self._sharper is not None:
            return self._sharper
        objective = self.objective
        limited = objective is not None and (objective.fallback is not None or self.noisy)
        return SHARPER_CALLS if limited else None

    @sharper.setter
    def sharper(self, call: str) -> None:
        self._sharper = call

    def __init__(
        self,
        layout: ParamLayout,
        mode: str,
        samples: int,
        directions: int,
        budget: int,
        rule: Rule,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(rule)
        self._sharper: str | None = None
        self.layout = layout
        self.mode = mode
        self.samples = samples
        self.directions = directions
        self.budget = budget
        self.rng = rng
        self.objective: Objective | None = None
        self.noisy = False  # the loss's rounding noise is beyond NOISY_LOSS_ULPS
        self.context: Context | None = None
        self.measured = {spec.name: [] for spec in layout.specs}
        self.spent = {spec.name: 0 for spec in layout.specs}  # probes made by ``_split``
        self.kinks = False  # some step crossed a kink of the loss (the split parts are
        # measured after the probes that showed it)
        self.taylor = {spec.name: [] for spec in layout.specs}

    @property
    def evaluations(self) -> int:
        return self.objective.evaluations if self.objective else 0

    def point(self) -> dict[str, np.ndarray]:
        center = self.context.center
        return {spec.name: spec.view(center).copy() for spec in self.layout.specs}

    # ------------------------------------------------------------------ setup

    def setup(self, loss: Callable[..., Any], grad: Any, flat: np.ndarray, progress: Any) -> None:
        objective = Objective(loss, grad, self.layout, flat, progress)
        self.objective = objective
        analytic, transposed, dtypes, notes = objective.gradient()
        self.analytic, self.transposed = analytic, transposed
        # A loss that rounds a float64 copy back to a lower precision is evaluated in that one.
        low = [s.dtype for s in self.layout.specs] + list(dtypes.values())
        objective.detect_rounding([d for d in low if is_low(d)], self.rng)
        self.findings += [transposed_finding(self.layout.spec(name)) for name in transposed]
        self.findings += notes
        center = objective.base.astype(np.float64)
        gradient = self.layout.unroll(analytic)
        j0 = objective.j0
        jitter = abs(objective.j0_repeat - j0)
        sigma = self._measured_noise(objective, center)
        noise = max(objective.value_eps * abs(j0), sigma, jitter)
        eps_grad = {name: gradient_eps(d) for name, d in dtypes.items()}
        gmax = {name: float(np.max(np.abs(g))) if g.size else 0.0 for name, g in analytic.items()}
        self.context = Context(objective, gradient, center, j0, noise, self.rule, eps_grad, gmax)
        # Steps balance truncation against the loss's actual noise, relative to its value.
        self.eps_step = max(objective.value_eps, noise / abs(j0)) if j0 else objective.value_eps
        nondeterministic = jitter > NONDETERMINISM_ULPS * objective.value_eps * abs(j0)
        self.findings += self._precision_findings(dtypes, 0.0 if nondeterministic else sigma)
        if nondeterministic:
            self.findings.append(
                nondeterministic_finding(
                    "two evaluations at the given parameters gave", j0, objective.j0_repeat
                )
            )

    def _measured_noise(self, objective: Objective, center: np.ndarray) -> float:
        """ECnoise from NOISE_POINTS values along a random direction, spaced about 100 ulps
        per entry apart (small enough that the smooth part of the loss cancels in the
        differences, large enough that every point is distinct)."""
        size = self.layout.size
        if size == 0:
            return 0.0
        eps = float(np.finfo(objective.buffer.dtype).eps)
        v = unit_direction(center, self.rng)
        spacing = 100 * eps * math.sqrt(size)
        half = NOISE_POINTS // 2
        # The given point's J is known: the others are evaluated together.
        moves = np.array([i for i in range(-half, half + 1) if i != 0]) * spacing
        objective.plan(moves.size)
        values = objective.at_points(
            moves.size,
            lambda k: (center + moves[k] * v).astype(objective.buffer.dtype),
            lambda k: f"at the parameters moved {moves[k]:+.1e} along a random direction "
            "(measuring the loss's rounding noise)",
        )
        return noise_level(np.insert(values, half, objective.j0))

    def _precision_findings(self, dtypes: dict[str, np.dtype], sigma: float) -> list[Finding]:
        objective, context = self.objective, self.context
        findings = []
        low = [s.name for s in self.layout.specs if is_low(s.dtype)]
        if low or objective.fallback:
            # An entry's rounding tolerance, safety * 2 noise / (2h), at h = cbrt(eps).
            resolution = self.rule.safety * context.noise / np.cbrt(self.eps_step)
            findings.append(
                params_precision_finding(
                    low,
                    self.layout.spec(low[0]).dtype if low else np.dtype(np.float64),
                    objective.buffer.dtype,
                    objective.fallback,
                    resolution,
                    max(context.gmax.values(), default=0.0),
                )
            )
        relative = sigma / abs(objective.j0) if objective.j0 else 0.0
        noisy = self.noisy = relative > NOISY_LOSS_ULPS * np.finfo(np.float64).eps
        # The note above already names the precision the loss was evaluated in.
        if noisy and not (low or objective.fallback):
            findings.append(noisy_loss_finding(relative))
        # An entry's allowance, ROUNDING_GROWTH eps (|g| + max|g|), at its largest.
        rounding = {
            name: ROUNDING_GROWTH * gradient_eps(dtype) * 2 * context.gmax[name]
            for name, dtype in dtypes.items()
        }
        return findings + gradient_precision_findings(dtypes, rounding)

    # ---------------------------------------------------------------- probing

    def probe(self) -> None:
        if self.mode == "taylor":
            self._probe_taylor()
            return
        sets = [s for spec in self.layout.specs if spec.size for s in self._plan(spec)]
        self._measure(sets)
        if self.mode == "auto" and not self.partial:
            self._measure([s for spec in self.layout.specs for s in self._crossings(spec)])

    def _measure(self, sets: list[ProbeSet]) -> None:
        if self.partial or not sets:
            return
        results = [Measured.empty(s, self.context.rounding_g(s)) for s in sets]
        interrupted = measure(results, BlackBoxEvaluator(self.context), self.rule, self.kinks)
        self.kinks |= any(result.kink.any() for result in results)
        for result in results:
            self.measured[result.probes.spec.name].append(result)
        self.partial = interrupted
        self._measure(self._split(results))

    def _split(self, results: list[Measured]) -> list[ProbeSet]:
        """The probes that add up many entries (rows, columns, directions, blocks and their
        parts) and were excluded at a kink, split into their entries, or in halves
        (``probes.halves``) while those would be more than the tensor's allowance: one entry
        whose step crosses a kink then costs no more than itself.

        Each tensor may spend ``budget`` probes on splitting in all; beyond that a probe stays
        excluded, unsplit. A probe whose support another one split here already covers (the
        random directions of one tensor share theirs) is not split again: the kinks it
        crossed are the same.
        """
        sets, entries = [], {}
        for result in results:
            probes = result.probes
            if probes.is_entries:
                continue
            name = probes.spec.name
            lengths = np.diff(probes.start)
            halved, seen = [], set()
            for k in np.flatnonzero(result.status == EXCLUDED):
                support = probes.positions[probes.start[k]:probes.start[k + 1]]
                key = (int(support[0]), int(support[-1]), support.size)
                left = self.budget - self.spent[name]
                if key in seen or left < 2:
                    continue
                seen.add(key)
                result.split[k] = True
                if lengths[k] <= max(SPLIT_TO_ENTRIES, left // 2):
                    entries.setdefault(name, []).append(support)
                    self.spent[name] += support.size
                else:
                    halved.append(k)
                    self.spent[name] += 2
            if halved:
                sets.append(halves(probes, np.array(halved)))
        for name, supports in entries.items():
            spec = self.layout.spec(name)
            done = [m.probes.labels for m in self.measured[name] if m.probes.is_entries]
            positions = np.setdiff1d(np.concatenate(supports), np.concatenate([[], *done]))
            if positions.size:
                sets.append(entry_probes(spec, positions, self.context.center, self.eps_step))
        return sets

    def _plan(self, spec: TensorSpec) -> list[ProbeSet]:
        center, eps = self.context.center, self.eps_step
        mode = self.mode
        if mode == "full" or mode == "auto" and self.layout.size <= self.budget:
            return [entry_probes(spec, _positions(spec), center, eps)]
        if mode == "sample":
            return [entry_probes(spec, self._sample(spec, self.samples), center, eps)]
        if mode == "directional":
            return [random_probes(spec, self.directions, center, eps, self.rng)]
        return self._plan_auto(spec)

    def _plan_auto(self, spec: TensorSpec) -> list[ProbeSet]:
        center, eps, rng, budget = self.context.center, self.eps_step, self.rng, self.budget
        rows = spec.shape[0] if len(spec.shape) >= 2 else 0
        columns = spec.size // rows if rows else 0
        if rows == 0 or spec.size <= rows + columns + self.samples:
            if spec.size <= budget:
                return [entry_probes(spec, _positions(spec), center, eps)]
            return [
                block_probes(spec, budget, center, eps, rng),
                entry_probes(spec, self._sample(spec, self.samples), center, eps),
            ]
        magnitude = np.abs(self.analytic[spec.name]).reshape(rows, columns)
        return [
            line_probes(spec, 0, self._lines(magnitude, 0), center, eps, rng),
            line_probes(spec, 1, self._lines(magnitude, 1), center, eps, rng),
            entry_probes(spec, self._sample(spec, self.samples), center, eps),
            random_probes(spec, self.directions, center, eps, rng),
        ]

    def _sample(self, spec: TensorSpec, count: int) -> np.ndarray:
        """``count`` flat positions: the largest |g| first (a quarter), the rest at random."""
        positions = _positions(spec)
        if count >= spec.size:
            return positions
        magnitude = np.abs(spec.unroll(self.analytic[spec.name]))
        largest = _largest(magnitude, max(1, count // 4))
        rest = _all_but(spec.size, largest)
        drawn = self.rng.choice(rest, size=count - largest.size, replace=False)
        return positions[np.concatenate((largest, np.sort(drawn)))]

    def _lines(self, magnitude: np.ndarray, axis: int) -> np.ndarray:
        """Rows (axis 0) or columns of a (rows, columns) array to probe: all up to the budget,
        else those holding the largest |g| and a seeded random rest."""
        count = magnitude.shape[axis]
        if count <= self.budget:
            return np.arange(count)
        peak = magnitude.max(axis=1 - axis)
        largest = _largest(peak, max(1, self.samples // 4))
        rest = _all_but(count, largest)
        drawn = self.rng.choice(rest, size=self.budget - largest.size, replace=False)
        return np.sort(np.concatenate((largest, drawn)))

    def _crossings(self, spec: TensorSpec) -> list[ProbeSet]:
        """Entries where failing rows cross failing columns, not yet probed one by one."""
        measured = self.measured[spec.name]
        failing = {
            m.probes.kind: m.probes.labels[m.status == FAILED]
            for m in measured
            if m.probes.kind in ("row", "column")
        }
        rows, columns = failing.get("row", ()), failing.get("column", ())
        if not len(rows) * len(columns):
            return []
        local = spec.local_positions().reshape(spec.shape[0], -1)
        if len(rows) * len(columns) <= CROSSING_BUDGET:
            positions = spec.offset + local[np.ix_(rows, columns)].ravel()
        else:
            positions = self._block_entries(spec, measured, rows, columns, local)
        done = np.concatenate(
            [m.probes.labels for m in measured if m.probes.is_entries] or [np.zeros(0)]
        )
        positions = np.setdiff1d(positions, done)
        if not positions.size:
            return []
        return [entry_probes(spec, positions, self.context.center, self.eps_step)]

    def _block_entries(
        self, spec: TensorSpec, measured: list[Measured], rows: np.ndarray,
        columns: np.ndarray, local: np.ndarray,
    ) -> np.ndarray:
        """Entries that state a block of failing rows (or columns) too large to cross.

        Where every row was probed and only some fail, one entry in each row and a second in
        each failing row (in failing columns, taken in turn) show which rows are wrong and that
        the others are right, entry by entry: at most ``2 * rows`` entries, and none when that
        exceeds ``budget``. The same for columns.
        """
        probed = {m.probes.kind: m.probes.labels.size for m in measured}
        for kind, wrong, across, lines in (
            ("row", rows, columns, local), ("column", columns, rows, local.T)
        ):
            count = lines.shape[0]
            complete = probed.get(kind) == count
            if not (complete and len(wrong) < count):
                continue
            if count + len(wrong) > self.budget:
                return np.zeros(0, dtype=int)
            index = np.arange(count)
            first = lines[index, across[index % len(across)]]
            second = lines[wrong, across[(wrong + 1) % len(across)]]
            return spec.offset + np.unique(np.concatenate((first, second)))
        return np.zeros(0, dtype=int)

    def _probe_taylor(self) -> None:
        for spec in self.layout.specs:
            for _ in range(self.directions if spec.size else 0):
                result = taylor(spec, self.context, self.rng)
                if not result.passed:
                    result = self._settle_taylor(spec, result)
                self.taylor[spec.name].append(result)

    def _settle_taylor(self, spec: TensorSpec, result: TaylorResult) -> TaylorResult:
        """A Taylor direction that failed stands only where some entry fails on its own.

        Several units at their kink at the point make the loss linear along a line with a
        slope that no (sub)gradient gives (relu(z) - relu(-z) = z, while relu'(0) = 0 gives
        0): the line alone cannot tell that from a wrong slope, an entry's one-sided slopes
        can. The entries (all up to ``budget``, else ``budget`` of them holding the largest
        |g|) go through the staged measurement; where none fails and some crossed a kink,
        the direction is a kink, not a failure. A wrong entry among them fails, and names
        itself. A remainder not shaped like a wrong slope's (``TaylorResult.shapeless``) is
        no evidence against the gradient: where the entries all agree, the direction passes
        as ``beyond`` the Taylor regime.
        """
        before = len(self.measured[spec.name])
        positions = (
            _positions(spec) if spec.size <= self.budget else self._sample(spec, self.budget)
        )
        self._measure([entry_probes(spec, positions, self.context.center, self.eps_step)])
        entries = self.measured[spec.name][before:]
        failed = any((m.status == FAILED).any() for m in entries)
        kinked = any((m.kink | (m.status == EXCLUDED)).any() for m in entries)
        if failed or self.partial:
            return result
        if kinked:
            return replace(result, kink=True, passed=True, entries=True)
        if result.shapeless:
            return replace(result, passed=True, beyond=True)
        return result

    # ----------------------------------------------------------------- finish

    def finish(self) -> None:
        """Look again at the starting point: a loss with hidden state has moved on."""
        objective = self.objective
        later = objective.evaluate("at the given parameters, at the end of the check")
        if abs(later - objective.j0) > NONDETERMINISM_ULPS * objective.value_eps * abs(
            objective.j0
        ):
            already = any(f.kind == "nondeterministic" for f in self.findings)
            if not already:
                self.findings.append(
                    nondeterministic_finding(
                        "the loss at the given parameters changed during the check: it gave",
                        objective.j0,
                        later,
                    )
                )


@dataclass
class _Stage:
    """One round of ± evaluations of some probes of a set at one multiple of their step.

    Its points are made when it runs and dropped after: the stages of a round are built
    together (the progress total is known up front), and the seed network's first round moves
    1.3 million entries, whose points made all at once would each pay the page faults of fresh
    memory; made set by set, a set's points reuse the memory the set before freed. Until a
    stage runs (an interrupt may stop the round before it) its sums are NaN, like its values.
    """

    probes: ProbeSet
    which: np.ndarray  # indices into the parent set
    context: Context
    g_plus: np.ndarray
    g_minus: np.ndarray
    width: np.ndarray
    j_plus: np.ndarray
    j_minus: np.ndarray

    @classmethod
    def build(cls, parent: ProbeSet, which: np.ndarray, factor: float, context: Context) -> _Stage:
        whole = which.size == parent.count and np.array_equal(which, np.arange(parent.count))
        subset = parent if whole else parent.subset(which)
        probes = replace(subset, step=subset.step * factor)
        return cls(probes, which, context, *np.full((5, probes.count), np.nan))

    @property
    def evaluations(self) -> int:
        return 2 * self.probes.count

    def run(self, objective: Objective) -> None:
        probes = self.probes
        if not probes.count:  # nothing evaluated, nothing to look at: no pass over the buffer
            return
        plus, minus = self._points()
        if probes.is_entries:
            objective.entries(
                probes.positions, plus, minus, self.j_plus, self.j_minus, probes.describe
            )
        else:
            objective.directions(
                probes.positions,
                probes.start,
                plus,
                minus,
                self.j_plus,
                self.j_minus,
                probes.describe,
            )

    def _points(self) -> tuple[np.ndarray, np.ndarray]:
        """The points θ ± d of every probe, in the buffer's dtype, and the sums g·d± and the
        widths. The temporaries are made for a block of whole probes at a time
        (``probes.blocks``), in four arrays reused from block to block; each probe's sums are
        the same."""
        probes = self.probes
        size = probes.positions.size
        dtype = self.context.objective.buffer.dtype
        plus, minus = np.empty(size, dtype), np.empty(size, dtype)
        spans = blocks(probes.start, BLOCK_ENTRIES)
        longest = max((int(probes.start[last] - probes.start[first]) for first, last in spans),
                      default=0)
        scratch = np.empty((4, longest))
        for first, last in spans:
            self._fill(first, last, plus, minus, scratch)
        # A step below the buffer's resolution left the probe's entries where they were: it
        # measures nothing (not a derivative of 0), so its differences come out NaN.
        self.width[self.width == 0] = np.nan
        return plus, minus

    def _fill(self, first: int, last: int, plus: np.ndarray, minus: np.ndarray,
              scratch: np.ndarray) -> None:
        """The points and sums of probes ``first`` to ``last`` (exclusive)."""
        probes, context = self.probes, self.context
        lo, hi = int(probes.start[first]), int(probes.start[last])
        entries = slice(lo, hi)
        start = probes.start[first : last + 1] - lo  # the block's own segments
        positions, values = probes.positions[entries], probes.values[entries]
        center, move, d_plus, d_minus = (row[: hi - lo] for row in scratch)
        np.take(context.center, positions, out=center)
        step = probes.step[first:last]
        if step.min() == step.max():  # directions share one step: no repeat
            np.multiply(values, step[0], out=move)
        else:
            np.multiply(np.repeat(step, np.diff(start)), values, out=move)
        block_plus = np.add(center, move, out=plus[entries])  # rounded to the buffer's dtype
        block_minus = np.subtract(center, move, out=minus[entries])
        # The displacements as stored: exact differences of nearby floats.
        np.subtract(block_plus, center, out=d_plus)
        np.subtract(block_minus, center, out=d_minus)
        g = np.take(context.gradient, positions, out=center)
        self.g_plus[first:last] = segment_sum(np.multiply(g, d_plus, out=move), start)
        self.g_minus[first:last] = segment_sum(np.multiply(g, d_minus, out=move), start)
        moved = np.multiply(np.subtract(d_plus, d_minus, out=move), values, out=move)
        self.width[first:last] = segment_sum(moved, start) / segment_sum(
            np.square(values, out=d_plus), start
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



class BlackBoxEvaluator:
    """Central differences of probe sets from the user's loss (see ``engine.staging``)."""

    kinks_known = False

    def __init__(self, context: Context) -> None:
        self.context = context
        self.noise = context.noise
        self.interrupted = False

    def evaluate(self, requests: list[Request], factor: float) -> Iterator[tuple[int, Evaluated]]:
        """Every request's stage is evaluated before any is returned, so that the progress
        total is known up front; after an interrupt the rest stay NaN (measuring nothing)."""
        context = self.context
        stages = [_Stage.build(r.probes, which, factor, context) for r, which in requests]
        context.objective.plan(sum(stage.evaluations for stage in stages))
        try:
            for stage in stages:
                stage.run(context.objective)
        except KeyboardInterrupt:
            self.interrupted = True
        for k, stage in enumerate(stages):
            d = stage.differences(context)
            yield k, Evaluated(stage.which, stage.which, d.analytic, d.numeric, d.error,
                               d.rounding, d.half_width, None, d.take, True)



def _positions(spec: TensorSpec) -> np.ndarray:
    return np.arange(spec.offset, spec.offset + spec.size)


def _largest(values: np.ndarray, count: int) -> np.ndarray:
    """The indices of the ``count`` largest ``values``, largest first, ties in index order:
    ``np.argsort(-values, kind="stable")[:count]`` without sorting every entry of a large
    tensor for a few of them."""
    if count >= values.size:
        return np.argsort(-values, kind="stable")
    threshold = np.partition(values, values.size - count)[values.size - count]
    candidates = np.flatnonzero(values >= threshold)  # in index order, ties included
    return candidates[np.argsort(-values[candidates], kind="stable")[:count]]


def _all_but(count: int, excluded: np.ndarray) -> np.ndarray:
    """``np.setdiff1d(np.arange(count), excluded)`` through a mask: the set difference hashes
    or sorts all ``count`` indices to drop a handful."""
    keep = np.ones(count, dtype=bool)
    keep[excluded] = False
    return np.flatnonzero(keep)
