"""check_model(): every parameter of an Autoencoder, checked by exact central differences, fast.

Contract: ``check_model(model, params, x, **options) -> GradReport`` compares the gradient of
``model.loss(params, x)`` (the model's own backprop, or a user's ``grad``) with a central
difference of every entry, each a true difference ``J(θ + h e) - J(θ - h e)`` of the model's
objective evaluated at the two perturbed points. The points are evaluated locally by
``gradproof.nn.local_delta`` (only what the entry touches, from a cached forward pass, the
difference taken term by term before summing), and judged by the same rules as
``gradproof.check_gradient``: its step rule, its tolerance rule (``finite_diff.Rule``), its
staging (a second step at 2h only for the entries one step does not decide, a smaller step
for entries whose step crossed a kink), its report fields and its findings.

Steps. ``finite_diff.step_sizes`` (``h = cbrt(eps) max(1, |θ|)``) applied in the coordinate the
entry acts through: a weight enters J only through ``θ * input``, so with ``c`` the largest
|input| it multiplies over the batch, ``h = step_sizes(θ c) / c``. The largest shift a step
gives a pre-activation is then ``cbrt(eps) max(1, |θ c|)`` for every entry alike, which
balances truncation against rounding as the rule intends (with one step for all, an entry on
a faint pixel would move its unit 1/255 as far, with 255 times the relative rounding); on one
image it also makes the shifts of all the pixels of a hidden unit equal, so that they share
one unit of work.

Accuracy. The rounding of a local difference is estimated term by term (see ``local_delta``):
about ``eps`` times the size of the terms that moved, over ``2h``, instead of ``eps |J| / 2h``
for a difference of two totals. What remains is the rounding of the perturbed points
themselves, ``s ± d`` off by ``eps |s| / 2``, a relative ``eps |s| / d`` of each term's change:
no arrangement of the sums removes it. Against autograd on one MNIST image the seed network's
numeric gradient is within 1e-10 (output layer) to 1e-9 (hidden layer) of its largest entry,
against 4e-9 to 1e-8 for the black-box loop at the same steps; each entry's error estimate
(rounding + truncation) was 2 to 40 times its actual error there, never below it. Truncation
``h² J''' / 6`` is estimated by Richardson from a second step where one step does not decide.

Cost (float64, bench/bench_exact_check.py on 2 cores shared with other work). With ``B`` the
batch, ``n_k`` the widths, ``K = SERIES_ORDER`` (6) and ``u_b`` the distinct nonzero shifts one
hidden unit gets from example b (its distinct nonzero pixel values, about 65 per MNIST image,
or 76 in a batch of 100, where each pixel's step is scaled by its own batch maximum; on a
single image the scaled steps make every pixel's shift equal up to rounding, and ``u`` is
about 3):

* an output-layer weight or bias: ``2 B`` output-loss evaluations; ``2 B n_{L-1} n_L`` in all;
* a unit of the last hidden layer, where the output series applies (sigmoid, tanh or identity
  outputs with the squared error, sigmoid with the cross-entropy): ``K`` matrix products
  ``(B, n_L) @ (n_L, n_{L-1})`` once, then ``2 K`` multiply-adds per unit. What remains is the
  bookkeeping of the (entry, example) pairs a step moves (sorting them into shared units and
  summing per entry): linear in ``B n_{L-2} n_{L-1}`` times the fraction of nonzero inputs;
* a unit of an earlier layer of a deeper stack, with the series: one pass per (example, unit)
  through the later layers with ``K' + 1 = 5`` rows (the powers), each layer a matrix
  product and about ``K'³ / 6`` elementwise products per value to compose the activations'
  series: ``B n_k`` such passes for layer k, whatever the number of distinct shifts;
* a hidden unit without the series (a relu output or later relu layer, a later code layer of
  a KL penalty, or ``series=False``): ``u_b`` units per example, each ``2 n_L`` output
  evaluations after a rank-one update (two-layer stack), or a forward pass of one example
  row through the later layers, matmuls included (deeper stacks): about 3.3 ns of CPU per
  output evaluation, about 2.4 G evaluations for the seed network on 100 images (8 s);
* tied weights of a two-layer stack: the hidden part as above (the scaled step, set by the
  larger of the pixel and the hidden unit a weight multiplies, shares fewer units) plus four
  output evaluations per (entry, example) for the decoder's use; deeper tied stacks take the
  generic path: every (entry, example) is its own unit, a forward pass from the tied layer on;
* so time is linear in B beyond a single image and in the number of parameters. Measured
  (``python bench/bench_exact_check.py --scaling``, median of 3, load about 1): the seed
  network in 42 ms on one image (most of it the verdict bookkeeping of a few arrays per
  parameter), 0.18 s on 10 images, 1.3 s on 100 and 14 s on 1000; on 100 images
  784-100-784 took 0.58 s, 784-400-784 2.5 s, 784-800-784 5.2 s, the tied seed network
  1.6 s and a relu output (no series) 7.2 s; 784-256-64-256-784 took 0.5 to 1.5 s on 10
  images and 5.3 s on 100 (84 s before its earlier layers had the series). The spread on
  small deep cases comes from OpenBLAS: its worker thread spins for about 0.1 s after each
  product and, on 2 cores, slows the elementwise work that follows (with
  ``OPENBLAS_NUM_THREADS=1`` the 10-image case takes 0.75 to 0.9 s);
* memory: the cached forward pass, about 20 float64 values per parameter for the verdicts,
  the series tables ((K + 1) B n_L values while built), chunks of at most ``max_chunk_bytes``
  (work per (entry, example) pair) and one to four cache-sized buffers per thread: linear in
  the parameters, bounded in the batch but for the tables. Peak (tracemalloc) for the seed
  network: 52 MiB on one image, 90 MiB on 100, 312 MiB on 1000 images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof.check import tolerance_rule
from gradproof.errors import InputError
from gradproof.finite_diff import (
    KINK_SHRINK,
    ROUNDING_GROWTH,
    Differences,
    Rule,
    between_slopes,
    first_verdict,
    richardson,
    step_sizes,
)
from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.autoencoder import Autoencoder
from gradproof.nn.losses import LOSSES, REDUCTIONS
from gradproof.nn.local_delta import EPS, LocalChanges, LocalDifferences
from gradproof.params import ParamLayout, TensorSpec, parse_params
from gradproof.probes import (
    CONFIRM_SAMPLE, EXCLUDED, FAILED, KINK_ROUNDS, PASSED, UNKNOWN, Measured, ProbeSet,
)
from gradproof.report import Finding, GradReport, TensorResult
from gradproof.verdict import (
    diagnose_failing,
    gradient_precision_finding,
    kink_findings,
    limits_findings,
    measured_result,
    mismatch_finding,
    params_precision_finding,
    transposed_finding,
)

# Default bound on the working memory of one chunk of entries.
DEFAULT_CHUNK_BYTES = 64 << 20

# Largest |J| checked: rounding bounds of about eps |J| per term are summed in quadrature, and
# their squares must stay finite in float64 (1e308).
LARGEST_OBJECTIVE = 1e140

# Smallest chunk budget accepted: below this, per-chunk overhead dominates.
MIN_CHUNK_BYTES = 1 << 16

# The local objective must match model.loss to this relative difference (a few roundings of
# the same sums in another order); more means this module does not know the model.
_AGREEMENT = 1e-10

Progress = Callable[[int, int], None]


def check_model(
    model: Autoencoder,
    params: Mapping[str, Any],
    x: Any,
    *,
    grad: Mapping[str, Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    safety: float = 10.0,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    workers: int = 1,
    series: bool = True,
    progress: Progress | None = None,
) -> GradReport:
    """Check every entry of an Autoencoder's gradient with exact local central differences.

    Parameters
    ----------
    model : Autoencoder
        The network; its objective (data term, weight decay, KL sparsity) is what is
        differentiated.
    params : dict of str to ndarray
        The point to check at, as ``model.init_params`` returns it. float32 parameters (or a
        float32 model) are checked through float64 copies, with a ``precision`` finding.
    x : ndarray, shape (batch, n_visible)
        The inputs the objective is evaluated on.
    grad : dict of str to ndarray, optional
        The gradient to check (a user's backprop), keyed like ``params``. A weight's gradient
        may have the transposed shape: it is compared after transposing, with a ``transposed``
        finding. By default the model's own ``model.loss_and_grad(params, x)``.
    rtol, atol : float, optional
        Use the classic rule |a - n| <= atol + rtol * max(|a|, |n|) instead of the error
        estimate.
    safety : float
        The default rule: |a - n| <= safety * (error estimate + the gradient's own rounding).
    max_chunk_bytes : int
        Bound on the working memory of one chunk of entries (default 64 MiB).
    workers : int
        Threads that evaluate blocks of units in parallel (numpy releases the GIL inside its
        loops). One by default: on the shared 2-vCPU machine of the benchmark two saved 5-10%
        of the wall time for 5-30% more CPU time; they pay off where both cores are free.
    series : bool
        Follow each moved hidden unit through the later layers as an exact power series in
        its activation change (``gradproof.nn.series``; the default, where the later
        activations and the loss have one and the series' remainder bound is below
        rounding); False evaluates every later unit and output at every perturbed point. Both
        give the same central differences to rounding; the series is faster by about the
        number of distinct shifts per hidden unit.
    progress : callable, optional
        ``progress(done, total)``, counted in perturbed points (two per entry and step;
        ``total`` grows when second steps are planned); called once per chunk.

    Returns
    -------
    GradReport
        ``mode="exact"``; one ``TensorResult`` per parameter with every entry checked. A
        KeyboardInterrupt returns the report so far with ``partial=True``.

    Raises
    ------
    InputError
        A ``model`` that is not an Autoencoder; params, inputs or a gradient that do not fit
        it (the tensor, shape or option named); bad options; an objective beyond
        ``LARGEST_OBJECTIVE`` in size, or not finite (a diverged network), whose error
        estimates would overflow.
    RuntimeError
        When the local pieces of the objective do not add up to ``model.loss`` (this module
        no longer matches the Autoencoder: a bug in gradproof, never in the checked gradient).
    """
    rule = tolerance_rule(rtol, atol, safety)
    workers = _check_options(model, max_chunk_bytes, workers, series, progress)
    run = _ExactCheck(model, rule, max_chunk_bytes, workers, series, progress)
    try:
        run.setup(params, x, grad)
        run.measure()
    except KeyboardInterrupt:
        run.partial = True
    return run.report()


class _ExactCheck:
    """The state of one check, filled step by step so that an interrupt leaves a report."""

    def __init__(self, model: Autoencoder, rule: Rule, max_chunk_bytes: int, workers: int,
                 series: bool, progress: Progress | None) -> None:
        self.model = model
        self.series = series
        self.rule = rule
        self.max_chunk_bytes = max_chunk_bytes
        self.workers = workers
        self.progress = progress
        self.started = time.perf_counter()
        self.partial = False
        self.layout: ParamLayout | None = None
        self.engine: LocalDifferences | None = None
        self.params: dict[str, np.ndarray] = {}
        self.analytic: dict[str, np.ndarray] = {}
        self.steps: dict[str, np.ndarray] = {}
        self.measured: dict[str, Measured] = {}
        self.findings: list[Finding] = []
        self.done = 0
        self.total = 0

    # ------------------------------------------------------------------ setup

    def setup(self, params: Mapping[str, Any], x: Any, grad: Mapping[str, Any] | None) -> None:
        model = self.model
        model.validate_params(params)
        names = list(model.param_shapes())
        # float64 copies of the point the model sees (its own dtype's rounding included).
        self.params = {
            name: np.asarray(params[name]).astype(model.dtype, copy=False).astype(
                np.float64, copy=False
            )
            for name in names
        }
        x64 = model.validate_input(x).astype(np.float64)
        layout, _ = parse_params(self.params)
        self.layout = layout
        twin = Autoencoder.from_config({**model.config(), "dtype": "float64"})
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
            reference = twin.loss(self.params, x64)
        _check_objective_size(reference)
        if grad is None:
            _, grad = model.loss_and_grad(params, x)
        elif not isinstance(grad, Mapping):
            raise InputError(
                f"grad must be a dict of gradient arrays keyed like params ({', '.join(names)}); "
                f"got {type(grad).__name__}"
            )
        self.analytic, transposed, dtypes = layout.match_gradient(grad)
        self.findings += [transposed_finding(layout.spec(name)) for name in transposed]

        self.engine = engine = LocalDifferences(twin, self.params, x64, workers=self.workers,
                                                     series=self.series)
        _confirm_objective(engine.objective(), reference)
        derivatives = _derivative_rounding(twin, self.params, x64)
        self.findings += _precision_findings(model, dtypes, self.analytic, derivatives)
        for spec in layout.specs:
            name = spec.name
            self.steps[name] = entry_steps(engine, name)
            self.measured[name] = Measured.empty(
                _entry_set(spec, self.steps[name]),
                _gradient_rounding(self.analytic[name], dtypes[name], derivatives[name]),
            )
        self.total = 2 * layout.size

    # --------------------------------------------------------------- measuring

    def measure(self) -> None:
        """Stage the verdicts as ``gradproof.probes.measure`` does, with local differences.

        One step decides most entries; the undecided and a sample of the clear failures get a
        second step at 2h (Richardson); entries whose step crossed a kink (known exactly here,
        from the pre-activations the step moved) are measured again with a step
        ``KINK_SHRINK`` times smaller, where they pass, are excluded (a kink at the point, the
        analytic value between the one-sided slopes) or fail.
        """
        firsts = {spec.name: self._first_step(spec.name) for spec in self.layout.specs}
        for spec in self.layout.specs:
            self._settle(spec.name, firsts[spec.name])

    def _first_step(self, name: str) -> _FirstStep:
        """Every entry at step h; record what one step decides.

        Most entries pass on the rounding tolerance alone; only the others are classified by
        ``first_verdict`` and kept for later steps.
        """
        measured = self.measured[name]
        size = measured.analytic.size
        # When one chunk holds every entry, the engine's order (which keeps a hidden unit's
        # entries in the same chunk) is moot, and in their natural order the results are
        # written as slices instead of scattered: 3 ms less for the seed network on one image.
        one_chunk = size <= self._per_chunk(name)
        order = np.arange(size) if one_chunk else self.engine.entry_order(name)
        parts, values = [], []
        for which, local, h in self._evaluate(name, order, 1.0):
            where = slice(which[0], which[-1] + 1) if one_chunk else which
            analytic, rounding_g = self.analytic[name].ravel()[where], measured.rounding_g[where]
            numeric = local.central / (2 * h)
            rounding = local.rounding / (2 * h)
            tolerance = self.rule.tolerance(rounding, rounding_g, analytic, numeric)
            passed = np.abs(numeric - analytic) <= tolerance
            measured.record(where, analytic, numeric - analytic, rounding, tolerance, h,
                            np.where(passed, PASSED, UNKNOWN))
            rest = np.flatnonzero(~passed)
            if not rest.size:
                continue
            which, kink = which[rest], local.kink[rest]
            step = _finite_differences(local, analytic[rest], h[rest], rest)
            _, failed, tolerance = first_verdict(step, rounding_g[rest], self.rule)
            failed &= ~kink
            # A clear failure keeps its first-step values unless a second step is spent on it.
            measured.record(which[failed], step.analytic[failed], step.error[failed],
                            step.rounding[failed] + step.curvature[failed], tolerance[failed],
                            step.half_width[failed], FAILED)
            measured.kink[which] = kink  # decided again at a smaller step
            parts.append(which)
            values.append(step)
        return _FirstStep.join(parts, values, measured.analytic.size)

    def _settle(self, name: str, first: _FirstStep) -> None:
        """Second steps for the undecided and a sample of the clear failures; then kinks."""
        measured = self.measured[name]
        kinked = np.flatnonzero(measured.kink)
        open_ = np.flatnonzero((measured.status == UNKNOWN) & ~measured.kink)
        undecided = open_[np.isfinite(first.take(open_).error)]  # NaN: the objective overflowed
        failed = np.flatnonzero(measured.status == FAILED)
        clear = first.take(failed)
        severity = np.abs(clear.error) / (measured.tolerance[failed] + clear.curvature)
        sample = failed[np.argsort(severity, kind="stable")[:CONFIRM_SAMPLE]]
        kinked = np.union1d(kinked, self._second_step(name, first, np.union1d(undecided, sample)))
        if (measured.status[sample] != FAILED).any():
            # A confirming sample that turned out fine casts doubt on the other clear failures.
            rest = np.setdiff1d(failed, sample)
            kinked = np.union1d(kinked, self._second_step(name, first, rest))
        self._kink_step(name, kinked)

    def _second_step(self, name: str, first: _FirstStep, which: np.ndarray) -> np.ndarray:
        """Richardson at 2h; returns the entries whose 2h step crossed a kink."""
        measured = self.measured[name]
        kinked = []
        for part, local, h in self._evaluate(name, which, 2.0):
            sub, kink = first.take(part), local.kink
            second = _finite_differences(local, sub.analytic, h)
            # Kinks are known exactly from the activations, so richardson's own flag is unused.
            extra = richardson(sub, second, 0.0, self.rule.safety)
            analytic = sub.analytic
            tolerance = self.rule.tolerance(
                extra.estimate, measured.rounding_g[part], analytic, analytic + extra.error
            )
            ok = ~kink & (np.abs(extra.error) <= tolerance)
            bad = ~kink & ~ok
            for mask, status in ((ok, PASSED), (bad, FAILED)):
                measured.record(part[mask], analytic[mask], extra.error[mask], extra.estimate[mask],
                                tolerance[mask], sub.half_width[mask], status)
            kinked.append(part[kink])
        return np.concatenate(kinked) if kinked else np.zeros(0, dtype=np.intp)

    def _kink_step(self, name: str, which: np.ndarray) -> None:
        """Entries whose step crossed a kink, again with steps KINK_SHRINK, KINK_SHRINK², ...
        times smaller (up to KINK_ROUNDS) while they disagree and their step still crosses
        one: a kink a little off the point (a pre-activation 1e-9 from 0) is crossed by the
        first smaller steps and not by a later one, which then measures the slope on the
        point's side. One that still disagrees with its smallest step across a kink, or whose
        smaller step's rounding cannot resolve the error its larger step measured, is
        excluded as unresolved: the kink, not the gradient, explains it."""
        measured = self.measured[name]
        for round_ in range(1, KINK_ROUNDS + 1):
            crossing = []
            for part, local, h in self._evaluate(name, which, KINK_SHRINK**-round_):
                previous = np.abs(measured.error[part])  # at the larger step, across a kink
                small = _finite_differences(local, self.analytic[name].ravel()[part], h)
                tolerance = self.rule.tolerance(
                    small.rounding, measured.rounding_g[part], small.analytic, small.numeric
                )
                # Rounding grows as the step shrinks: a tolerance that cannot tell the error
                # measured before from zero makes an agreement vacuous, and the entry, whose
                # larger steps crossed a kink, stays unresolved.
                blind = tolerance >= previous
                ok = ~blind & (np.abs(small.error) <= tolerance)
                excluded = ~ok & between_slopes(small, tolerance)
                unresolved = ~ok & ~excluded & blind
                measured.unresolved[part[unresolved]] = True
                status = np.where(ok, PASSED, np.where(excluded | unresolved, EXCLUDED, FAILED))
                measured.record(part, small.analytic, small.error, small.rounding, tolerance,
                                small.half_width, status)
                measured.kink[part] = True
                measured.slopes[part] = np.column_stack(
                    (small.analytic + small.backward, small.analytic + small.forward)
                )
                crossing.append(part[local.kink & (status == FAILED)])
            which = np.concatenate(crossing) if crossing else np.zeros(0, dtype=np.intp)
            if not which.size:
                return
        measured.status[which] = EXCLUDED
        measured.unresolved[which] = True

    def _evaluate(self, name: str, which: np.ndarray, factor: float):
        """Yield ``(entries, local differences, steps)`` for chunks of ``which``, at steps
        ``factor`` times the entries' own."""
        if not which.size:
            return
        if factor != 1.0:
            self.total += 2 * which.size
        per_chunk = self._per_chunk(name)
        for start in range(0, which.size, per_chunk):
            part = which[start:start + per_chunk]
            h = factor * self.steps[name][part]
            local = self.engine.differences(name, part, h)
            self.done += 2 * part.size
            if self.progress is not None:
                self.progress(self.done, self.total)
            yield part, local, h

    def _per_chunk(self, name: str) -> int:
        """Entries of ``name`` evaluated together, within ``max_chunk_bytes``."""
        engine = self.engine
        return max(1, self.max_chunk_bytes // (engine.pair_bytes(name) * engine.batch))

    # ------------------------------------------------------------------ report

    def report(self) -> GradReport:
        specs = self.layout.specs if self.layout is not None else ()
        measured = [self.measured[spec.name] for spec in specs if spec.name in self.measured]
        largest = {name: float(np.max(np.abs(g), initial=0.0)) for name, g in self.analytic.items()}
        tensors = [measured_result(m.probes.spec, [m], largest[m.probes.spec.name]) for m in measured]
        findings = list(self.findings)
        for m in measured:
            findings += kink_findings(m.probes.spec, [m], [])
        findings += limits_findings(tensors, "exact", None)
        findings += self._diagnosis(tensors)
        return GradReport(
            tensors=tensors,
            findings=findings,
            mode="exact",
            partial=self.partial,
            seconds=time.perf_counter() - self.started,
            loss_evaluations=self.done + (1 if self.engine is not None else 0),
            rule=self.rule.describe(),
        )

    def _diagnosis(self, tensors: list[TensorResult]) -> list[Finding]:
        """``gradproof.diagnose`` on the failing tensors, as ``check_gradient`` does it."""
        failing = [t.name for t in tensors if not t.passed]
        if not failing:
            return []
        numeric, tolerance = {}, {}
        for spec in self.layout.specs:
            m = self.measured[spec.name]
            known = (m.status == PASSED) | (m.status == FAILED)
            numeric[spec.name] = np.where(known, m.numeric, np.nan).reshape(spec.shape)
            tolerance[spec.name] = np.where(known, m.tolerance, np.nan).reshape(spec.shape)
        return diagnose_failing(
            failing, self.analytic, numeric, self.params, tolerance,
            lambda name: mismatch_finding(self.layout.spec(name), [self.measured[name]], []),
        )


def entry_steps(engine: LocalDifferences, name: str) -> np.ndarray:
    """The step of every entry of ``name`` (flat, C order): ``step_sizes`` in input units.

    ``h = step_sizes(θ c, eps) / c`` with ``c`` the largest |input| the entry multiplies
    (1 for biases and for entries no input reaches), so that each step moves its
    pre-activations by about ``cbrt(eps) max(1, |θ c|)``.
    """
    scale = engine.input_scale(name)
    scale = np.where(scale > 0, scale, 1.0)
    steps = step_sizes(engine.params[name] * scale, EPS)
    steps /= scale
    return steps.ravel()


# ------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class _FirstStep:
    """The first-step differences of the entries one step did not pass, looked up by entry."""

    values: Differences
    position: np.ndarray  # entry -> its row in ``values`` (-1: passed, not kept)

    @classmethod
    def join(cls, parts: list[np.ndarray], values: list[Differences], size: int) -> _FirstStep:
        position = np.full(size, -1, dtype=np.intp)
        entries = np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
        position[entries] = np.arange(entries.size)
        joined = Differences(*(
            np.concatenate([getattr(v, key) for v in values]) if values else np.zeros(0)
            for key in Differences.__dataclass_fields__
        ))
        return cls(joined, position)

    def take(self, which: np.ndarray) -> Differences:
        return _take(self.values, self.position[which])


def _take(d: Differences, which: np.ndarray) -> Differences:
    return Differences(*(getattr(d, key)[which] for key in Differences.__dataclass_fields__))


def _finite_differences(local: LocalChanges, analytic: np.ndarray, h: np.ndarray,
                        rows: np.ndarray | slice = slice(None)) -> Differences:
    """The ``finite_diff.Differences`` of entry probes from (the ``rows`` of) local changes.

    Mirrors ``finite_diff.central`` with J(θ) as the origin (the local changes are measured
    from it) and a rounding bound per entry instead of one loss noise for all.
    """
    plus, minus, rounding = local.plus[rows], local.minus[rows], local.rounding[rows]
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


def _entry_set(spec: TensorSpec, steps: np.ndarray) -> ProbeSet:
    """Entry probes of every entry of ``spec`` (C order), with their steps."""
    positions = spec.offset + np.arange(spec.size)
    return ProbeSet(spec, "entry", positions, positions, np.ones(spec.size),
                    np.arange(spec.size + 1), steps)


def _gradient_rounding(analytic: np.ndarray, dtype: np.dtype,
                       derivatives: np.ndarray) -> np.ndarray:
    """The analytic gradient's own rounding per entry: as ``probes.Context.rounding_g``, plus
    the error of activation derivatives taken from rounded outputs (``derivatives``, in units
    of eps, from ``_derivative_rounding``)."""
    eps = float(np.finfo(dtype).eps) if dtype.kind == "f" else EPS
    g = np.abs(analytic.ravel())
    return eps * (ROUNDING_GROWTH * (g + (g.max() if g.size else 0.0)) + derivatives.ravel())


def _derivative_rounding(model: Autoencoder, params: dict[str, np.ndarray],
                         x: np.ndarray) -> dict[str, np.ndarray]:
    """Per gradient entry, in units of eps: the error a backprop gets from its rounded forward
    values and from activation derivatives computed from rounded outputs.

    Forward, each pre-activation sum carries rounding of about eps times the magnitudes summed
    (|a| @ |W| + |b|) and each activation eps |a|, passed on through |f'| and |W|. Backward,
    f'(a) is off by up to ``Activation.derivative_rounding`` eps (absolute), so dJ/ds =
    dJ/da f'(a) is off by that times |dJ/da|; these errors travel back like dJ/ds itself,
    and a weight's gradient a.T @ dJ/ds also gets its input's error times dJ/ds. The
    roundings are independent, so they are added in quadrature, as ``local_delta`` adds the
    rounding of its terms. Where units saturate, f' is tiny and |dJ/da| is not: a float32
    backprop was measured off by up to 23 times ``ROUNDING_GROWTH`` eps (|g| + max|g|)
    there (a saturated tanh's 1 - a² is exactly 0 in float32), and by at most 3.2 times the
    allowance with this term (``python bench/stress.py --rounding``, bench/README.md). ``model`` is the float64 twin, ``params`` and ``x`` its float64 point.
    """
    _, cache = model.forward(params, x)
    acts = cache.activations
    n, batch = model.n_layers, x.shape[0]
    weights = model.weights(params)
    records = [ACTIVATIONS[name] for name in model.activations]
    # Squared forward errors of each layer's output, (batch, n_k); the input is exact.
    forward = [np.zeros_like(x)]
    for k in range(1, n + 1):
        w = weights[k - 1]
        size = np.abs(acts[k - 1]) @ np.abs(w) + (np.abs(params[f"b{k}"]) if model.bias else 0)
        slope = records[k - 1].derivative(acts[k])
        forward.append((forward[k - 1] @ w**2 + size**2) * slope**2 + acts[k] ** 2)
    factor = REDUCTIONS[model.reduction](batch)
    # The squared error's dJ/dz is z - x, then times f'(z); a loss tied to its output
    # activation (the cross-entropy of a sigmoid) has dJ/ds = z - x and no f' at all.
    own = LOSSES[model.loss_name].output_activation is None
    d_a = factor * (acts[n] - x)  # (batch, n_L) dJ/da_L
    slope = records[-1].derivative(acts[n]) if own else np.ones_like(d_a)
    d_s = d_a * slope
    square = factor**2 * forward[n] * slope**2  # squared errors of dJ/ds_k, (batch, n_k)
    if own:
        square += (records[-1].derivative_rounding * d_a) ** 2
    squares: dict[str, np.ndarray] = {}
    for k in range(n, 0, -1):
        name, transposed = model._weight_of[k - 1]
        # (n_{k-1}, n_k), like layer k's weight: a.T @ dJ/ds with both factors' errors
        w_square = (acts[k - 1] ** 2).T @ square + forward[k - 1].T @ d_s**2
        squares[name] = squares.get(name, 0.0) + (w_square.T if transposed else w_square)
        if model.bias:
            squares[f"b{k}"] = square.sum(axis=0)
        if k == 1:
            break
        d_a = d_s @ weights[k - 1].T  # (batch, n_{k-1}) dJ/da_{k-1}
        if k - 1 == model.code_layer and model.sparsity_weight:
            d_a = d_a + model._sparsity_grad(cache, batch)
        record = records[k - 2]
        slope = record.derivative(acts[k - 1])
        square = (square @ (weights[k - 1] ** 2).T) * slope**2 + (
            record.derivative_rounding * d_a
        ) ** 2
        d_s = d_a * slope
    return {name: np.sqrt(squares[name]) for name in model.param_shapes()}


def _precision_findings(model: Autoencoder, dtypes: dict[str, np.dtype],
                        analytic: dict[str, np.ndarray],
                        derivatives: dict[str, np.ndarray]) -> list[Finding]:
    """The notes ``check_gradient`` makes about float32 parameters and gradients."""
    findings = []
    if model.dtype.itemsize < 8:
        names = list(model.param_shapes())
        findings.append(
            params_precision_finding(names, model.dtype, np.dtype(np.float64), None, 0.0, 0.0)
        )
    for name, dtype in dtypes.items():
        if dtype.kind == "f" and dtype.itemsize < 8:
            rounding = float(
                _gradient_rounding(analytic[name], dtype, derivatives[name]).max(initial=0.0)
            )
            findings.append(gradient_precision_finding(name, dtype, rounding))
    return findings


def _check_objective_size(objective: float) -> None:
    """Refuse an objective whose error estimates would overflow (and so pass everything)."""
    if not abs(objective) <= LARGEST_OBJECTIVE:
        raise InputError(
            f"the objective at these parameters and inputs is {objective:.3g}: check_model's "
            f"error estimates need it within ±{LARGEST_OBJECTIVE:.0e} (their squares would "
            "overflow float64 and every entry would pass); check parameters that have not "
            "diverged, or use gradproof.check_gradient"
        )


def _confirm_objective(local: float, reference: float) -> None:
    """The local pieces must add up to model.loss, or this module does not know the model."""
    if not abs(local - reference) <= _AGREEMENT * max(abs(reference), 1.0):
        raise RuntimeError(
            f"check_model's elementwise objective gives {local!r} where model.loss gives "
            f"{reference!r}: gradproof.nn.local_delta no longer matches the Autoencoder's "
            "objective (a bug in gradproof, not in your gradient)"
        )


def _check_options(model: Any, max_chunk_bytes: Any, workers: Any, series: Any,
                   progress: Any) -> int:
    """Validate the options; return the number of workers."""
    if not isinstance(model, Autoencoder):
        raise InputError(
            f"check_model needs a gradproof Autoencoder as model; got {type(model).__name__} "
            "(for any other loss, use gradproof.check_gradient)"
        )
    if (isinstance(max_chunk_bytes, bool) or not isinstance(max_chunk_bytes, (int, np.integer))
            or max_chunk_bytes < MIN_CHUNK_BYTES):
        raise InputError(
            f"max_chunk_bytes must be an integer >= {MIN_CHUNK_BYTES} (bytes); "
            f"got {max_chunk_bytes!r}"
        )
    if progress is not None and not callable(progress):
        raise InputError(
            f"progress must be a callable progress(done, total); got {type(progress).__name__}"
        )
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers must be an integer >= 1; got {workers!r}")
    if not isinstance(series, bool):
        raise InputError(f"series must be True or False; got {series!r}")
    return int(workers)

