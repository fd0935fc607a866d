"""check_gradient(): compare an analytic gradient with finite differences of the loss.

Contract: ``check_gradient(loss, grad, params, **options) -> GradReport``. The loss is a black
box; everything it needs to be called with comes from ``params`` (see ``gradproof.params``),
every evaluation goes through ``gradproof.objective`` (which turns misuse into ``InputError``),
the probes and their staged measurement live in ``gradproof.probes`` and the numerics in
``gradproof.finite_diff``. This module chooses what to probe (the mode), turns the measurements
into one ``TensorResult`` per tensor, and adds the findings: notes about the circumstances
(precision, nondeterminism, kinks), the ``transposed`` shape, and for each failing tensor the
diagnosis of ``gradproof.diagnose`` or else a ``mismatch``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gradproof.errors import InputError
from gradproof.finite_diff import NOISE_POINTS, ROUNDING_GROWTH, Rule, noise_level
from gradproof.objective import Objective
from gradproof.params import ParamLayout, TensorSpec, parse_params
from gradproof.probes import (
    FAILED,
    Context,
    Measured,
    ProbeSet,
    block_probes,
    entry_probes,
    line_probes,
    measure,
    random_probes,
    unit_direction,
)
from gradproof.report import Finding, GradReport, TensorResult
from gradproof.taylor import TaylorResult, taylor
from gradproof.verdict import (
    SHARPER_CALLS,
    diagnose_failing,
    gradient_precision_finding,
    kink_findings,
    limits_findings,
    measured_result,
    mismatch_finding,
    noisy_loss_finding,
    nondeterministic_finding,
    params_precision_finding,
    taylor_result,
    transposed_finding,
)

MODES = ("auto", "full", "sample", "directional", "taylor")

# Random directions per tensor when `directions` is not given.
DEFAULT_DIRECTIONS = {"auto": 2, "directional": 8, "taylor": 1}

# A loss that gives two values this many eps*|J| apart at the same point is nondeterministic
# (smaller differences are the rounding of reordered parallel sums, and harmless).
NONDETERMINISM_ULPS = 64.0

# Relative rounding noise of the loss beyond this many float64 eps is worth a `precision` note.
NOISY_LOSS_ULPS = 1e4

# At most this many entries are probed where failing rows and columns cross (auto mode).
CROSSING_BUDGET = 256


def check_gradient(
    loss: Callable[..., Any],
    grad: Any,
    params: Any,
    *,
    mode: str = "auto",
    shapes: Any = None,
    order: str = "C",
    samples: int = 32,
    directions: int | None = None,
    budget: int = 2000,
    rtol: float | None = None,
    atol: float | None = None,
    safety: float = 10.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> GradReport:
    """Check an analytic gradient against finite differences of the loss.

    Parameters
    ----------
    loss : callable
        ``loss(params) -> float``; with ``grad=None``, ``loss(params) -> (float, gradient)``.
        It receives the same structure as ``params`` (a copy: float64 where it accepts that
        and does not round it back to a lower precision).
    grad : callable, gradient or None
        ``grad(params) -> gradient``, the gradient arrays themselves, or None when the loss
        returns them. The gradient has the structure of ``params`` (a flat vector of the same
        length for flat params). A tensor whose gradient has the transposed shape is compared
        after transposing, with a ``transposed`` finding.
    params : array, dict of arrays (nested dicts / lists allowed) or flat vector
        The point to check at. Tensors are named by their keys: ``"W1"``, ``"enc.W"``,
        ``"layers[0].W"``; one array is ``"params"``.
    mode : {"auto", "full", "sample", "directional", "taylor"}
        What to probe (see Notes).
    shapes : dict of str to tuple, or list of tuples, optional
        With a flat ``params`` vector: the tensors it holds, in order.
    order : {"C", "F"}
        With ``shapes``: C (row-major) or Fortran / MATLAB (column-major) unrolling.
    samples : int
        Entries per tensor in ``sample`` mode (and in ``auto`` for large tensors), a quarter of
        them the entries with the largest analytic magnitude, the rest drawn at random.
    directions : int, optional
        Random directions per tensor: 8 in ``directional`` mode, 1 in ``taylor``, 2 in ``auto``.
    budget : int
        ``auto`` checks every entry when the parameters have at most ``budget`` entries, and
        otherwise at most ``budget`` rows, columns or entries per tensor.
    rtol, atol : float, optional
        Use the classic rule |a - n| <= atol + rtol * max(|a|, |n|) instead of the error
        estimate.
    safety : float
        The default rule: |a - n| <= safety * (error estimate + the gradient's own rounding).
    seed : int
        Seeds the sampled entries and random directions.
    progress : callable, optional
        ``progress(done, total)``, counted in loss evaluations (``total`` grows when extra
        steps are spent); called a few hundred times per check at most.

    Returns
    -------
    GradReport
        One ``TensorResult`` per tensor and the findings. A KeyboardInterrupt during the check
        returns the report so far with ``partial=True``.

    Raises
    ------
    InputError
        Bad options; params or gradient that are malformed, misshapen (both shapes named),
        missing or extra (both listed) or not finite (tensor and first index named); a loss
        that raises (the point named), returns something other than a finite scalar (what it
        returned described), or changes its argument in place.

    Notes
    -----
    Modes (each comparison's tolerance comes from its own error estimate, see
    ``gradproof.finite_diff``):

    * ``full``: a central difference of every entry, two loss evaluations each, perturbing one
      entry of a flat float64 buffer in place and restoring it. Only entries the first step
      does not clearly decide get two more evaluations (Richardson at 2h), and only those still
      unsure after that (a kink crossed, a failure not yet confirmed) two more at each of h/64,
      h/64², h/64³ until decided (see ``gradproof.probes``). A correct gradient of a smooth
      loss costs 2 evaluations per entry plus about a dozen.
    * ``sample``: ``samples`` entries per tensor, seeded, always including the largest |g|.
    * ``directional``: ``directions`` random unit directions v per tensor: g·v against
      (J(θ+hv) - J(θ-hv))/2h, two evaluations per direction whatever the tensor's size.
    * ``taylor``: along a random direction, the remainder |J(θ+hv) - J(θ) - h·g·v| for
      h = 1, 1/2, 1/4 ...: it shrinks like h² when g is right and like h when it is wrong; the
      fitted order is reported (``TensorResult.taylor_order``), and an order below 1.5 fails.
      No step size to choose.
    * ``auto`` (the default) checks every entry when the parameters have at most ``budget``
      (2000) entries: a few thousand loss evaluations. Otherwise, per tensor:

      - a vector, or a matrix no larger than its row + column + sample probes would be: every
        entry, up to ``budget`` (beyond that ``budget`` contiguous blocks, one probe each, and
        ``samples`` entries);
      - a matrix (more axes are folded into columns): one probe per row and one per column
        (the indicator of that row / column with random Gaussian weights, so that no pattern of
        errors within it cancels), up to ``budget`` of each (a seeded subset
        holding the largest |g| beyond that), ``samples`` entries including the largest |g|,
        and ``directions`` random directions; then, where failing rows and failing columns
        cross (at most 256 entries), those entries one by one, which pins a wrong entry down.

      The seed autoencoder (784-200-784, 314k entries) costs about 6,000 loss evaluations
      instead of 630,000. Every entry lies in a probed row and column (up to the budget), so a
      wrong entry fails its tensor as soon as its error exceeds those probes' tolerances, and
      the crossing then names it.

    Before comparing, the check evaluates the loss twice at the same point (nondeterminism),
    evaluates it in float64 where it accepts a float64 copy and computes with it (with float32
    params or gradients, two more evaluations test whether the loss rounds the copy back to
    float32; if it does, steps and tolerances are sized for float32 instead), measures its
    rounding noise from nine nearby values (ECnoise), and widens the tolerance of a float32
    gradient to its own precision (each with a finding saying so).
    """
    rule = tolerance_rule(rtol, atol, safety)
    _check_options(mode, samples, directions, budget, seed, progress)
    layout, flat = parse_params(params, shapes, order)
    run = _Check(layout, mode, samples, directions, budget, rule, np.random.default_rng(seed))
    try:
        run.setup(loss, grad, flat, progress)
        run.probe()
        if not run.partial:
            run.finish()
    except KeyboardInterrupt:
        run.partial = True
    return run.report()


class _Check:
    """The state of one check, filled step by step so that an interrupt leaves a report."""

    def __init__(
        self,
        layout: ParamLayout,
        mode: str,
        samples: int,
        directions: int | None,
        budget: int,
        rule: Rule,
        rng: np.random.Generator,
    ) -> None:
        self.layout = layout
        self.mode = mode
        self.samples = samples
        self.directions = DEFAULT_DIRECTIONS.get(mode, 0) if directions is None else directions
        self.budget = budget
        self.rule = rule
        self.rng = rng
        self.started = time.perf_counter()
        self.partial = False
        self.objective: Objective | None = None
        self.context: Context | None = None
        self.analytic: dict[str, np.ndarray] = {}
        self.measured: dict[str, list[Measured]] = {spec.name: [] for spec in layout.specs}
        self.taylor: dict[str, list[TaylorResult]] = {spec.name: [] for spec in layout.specs}
        self.findings: list[Finding] = []

    # ------------------------------------------------------------------ setup

    def setup(self, loss: Callable[..., Any], grad: Any, flat: np.ndarray, progress: Any) -> None:
        objective = Objective(loss, grad, self.layout, flat, progress)
        self.objective = objective
        analytic, transposed, dtypes = objective.gradient()
        self.analytic = analytic
        # A loss that rounds a float64 copy back to a lower precision is evaluated in that one.
        low = [s.dtype for s in self.layout.specs] + list(dtypes.values())
        objective.detect_rounding([d for d in low if _is_low(d)], self.rng)
        self.findings += [transposed_finding(self.layout.spec(name)) for name in transposed]
        center = objective.base.astype(np.float64)
        gradient = self.layout.unroll(analytic)
        j0 = objective.j0
        jitter = abs(objective.j0_repeat - j0)
        sigma = self._measured_noise(objective, center)
        noise = max(objective.value_eps * abs(j0), sigma, jitter)
        eps_grad = {
            name: float(np.finfo(d).eps) if d.kind == "f" else float(np.finfo(np.float64).eps)
            for name, d in dtypes.items()
        }
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
        support = np.arange(size)
        v = unit_direction(center, self.rng)
        spacing = 100 * eps * math.sqrt(size)
        half = NOISE_POINTS // 2
        objective.plan(NOISE_POINTS - 1)
        values = []
        for i in range(-half, half + 1):
            if i == 0:
                values.append(objective.j0)
                continue
            point = (center + i * spacing * v).astype(objective.buffer.dtype)
            where = (
                f"at the parameters moved {i * spacing:+.1e} along a random direction (measuring "
                "the loss's rounding noise)"
            )
            values.append(objective.at(support, point, where))
        return noise_level(np.array(values))

    def _precision_findings(self, dtypes: dict[str, np.dtype], sigma: float) -> list[Finding]:
        objective, context = self.objective, self.context
        findings = []
        low = [s.name for s in self.layout.specs if _is_low(s.dtype)]
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
        noisy = relative > NOISY_LOSS_ULPS * np.finfo(np.float64).eps
        # The note above already names the precision the loss was evaluated in.
        if noisy and not (low or objective.fallback):
            findings.append(noisy_loss_finding(relative))
        for name, dtype in dtypes.items():
            if _is_low(dtype):
                rounding = ROUNDING_GROWTH * context.eps_grad[name] * 2 * context.gmax[name]
                findings.append(gradient_precision_finding(name, dtype, rounding))
        return findings

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
        results, interrupted = measure(sets, self.context)
        for result in results:
            self.measured[result.probes.spec.name].append(result)
        self.partial = interrupted

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
        largest = np.argsort(-magnitude, kind="stable")[: max(1, count // 4)]
        rest = np.setdiff1d(np.arange(spec.size), largest)
        drawn = self.rng.choice(rest, size=count - largest.size, replace=False)
        return positions[np.concatenate((largest, np.sort(drawn)))]

    def _lines(self, magnitude: np.ndarray, axis: int) -> np.ndarray:
        """Rows (axis 0) or columns of a (rows, columns) array to probe: all up to the budget,
        else those holding the largest |g| and a seeded random rest."""
        count = magnitude.shape[axis]
        if count <= self.budget:
            return np.arange(count)
        peak = magnitude.max(axis=1 - axis)
        largest = np.argsort(-peak, kind="stable")[: max(1, self.samples // 4)]
        rest = np.setdiff1d(np.arange(count), largest)
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
        if not (0 < len(rows) * len(columns) <= CROSSING_BUDGET):
            return []
        local = spec.local_positions().reshape(spec.shape[0], -1)
        positions = spec.offset + local[np.ix_(rows, columns)].ravel()
        done = np.concatenate(
            [m.probes.labels for m in measured if m.probes.is_entries] or [np.zeros(0)]
        )
        positions = np.setdiff1d(positions, done)
        if not positions.size:
            return []
        return [entry_probes(spec, positions, self.context.center, self.eps_step)]

    def _probe_taylor(self) -> None:
        for spec in self.layout.specs:
            for _ in range(self.directions if spec.size else 0):
                self.taylor[spec.name].append(taylor(spec, self.context, self.rng))

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

    # ----------------------------------------------------------------- report

    def report(self) -> GradReport:
        tensors = [self._result(spec) for spec in self.layout.specs]
        findings = list(self.findings)
        for spec in self.layout.specs:
            findings += kink_findings(spec, self.measured[spec.name], self.taylor[spec.name])
        findings += limits_findings(tensors, self.mode, SHARPER_CALLS)
        findings += self._diagnosis(tensors)
        objective = self.objective
        return GradReport(
            tensors=tensors,
            findings=findings,
            mode=self.mode,
            partial=self.partial,
            seconds=time.perf_counter() - self.started,
            loss_evaluations=objective.evaluations if objective else 0,
            rule=self.rule.describe(),
        )

    def _result(self, spec: TensorSpec) -> TensorResult:
        largest = self.context.gmax[spec.name] if self.context else 0.0
        if self.taylor[spec.name]:
            return taylor_result(spec, self.taylor[spec.name], largest)
        return measured_result(spec, self.measured[spec.name], largest)

    def _diagnosis(self, tensors: list[TensorResult]) -> list[Finding]:
        failing = [t.name for t in tensors if not t.passed]
        if not failing:
            return []
        numeric, tolerance = {}, {}
        for spec in self.layout.specs:
            values, tol = np.full(spec.size, np.nan), np.full(spec.size, np.nan)
            for m in self.measured[spec.name]:
                if m.probes.is_entries:
                    known = m.compared
                    local = m.probes.labels[known] - spec.offset
                    values[local], tol[local] = m.numeric[known], m.tolerance[known]
            numeric[spec.name] = values.reshape(spec.shape, order=spec.order)
            tolerance[spec.name] = tol.reshape(spec.shape, order=spec.order)
        center = self.context.center
        params = {spec.name: spec.view(center).copy() for spec in self.layout.specs}
        return diagnose_failing(
            failing, self.analytic, numeric, params, tolerance,
            lambda name: mismatch_finding(
                self.layout.spec(name), self.measured[name], self.taylor[name]
            ),
        )


# ------------------------------------------------------------------ helpers


def _is_low(dtype: np.dtype) -> bool:
    """A floating dtype narrower than float64."""
    return dtype.kind == "f" and dtype.itemsize < 8


def _positions(spec: TensorSpec) -> np.ndarray:
    return np.arange(spec.offset, spec.offset + spec.size)


def tolerance_rule(rtol: float | None, atol: float | None, safety: float) -> Rule:
    """The tolerance rule of a check, from its user-facing ``rtol``, ``atol`` and ``safety``.

    Shared by ``check_gradient`` and ``check_model`` so that both validate these options alike.

    Parameters
    ----------
    rtol, atol : float or None
        Finite and >= 0; when either is given, the classic rule
        ``atol + rtol * max(|analytic|, |numeric|)`` replaces the one from the error estimate.
    safety : float
        Finite and > 0: the factor on the error estimate in the default rule.

    Returns
    -------
    Rule

    Raises
    ------
    InputError
        An option that is not a number in its range (the option named).
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (
            isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)
        ):
            raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    if not (isinstance(safety, (int, float)) and safety > 0 and math.isfinite(safety)):
        raise InputError(f"safety must be a finite number > 0, got {safety!r}")
    return Rule(
        float(safety), None if rtol is None else float(rtol), None if atol is None else float(atol)
    )


def _check_options(
    mode: str, samples: int, directions: int | None, budget: int, seed: int, progress: Any
) -> None:
    if mode not in MODES:
        raise InputError(f"mode must be one of {list(MODES)}, got {mode!r}")
    for name, value in (("samples", samples), ("budget", budget), ("directions", directions)):
        if value is None and name == "directions":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if progress is not None and not callable(progress):
        raise InputError(
            f"progress must be a callable progress(done, total), got {type(progress).__name__}"
        )
