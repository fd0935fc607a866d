"""The exact evaluator and run: every entry of an Autoencoder's gradient, by local differences.

Contract: ``ExactRun(model, rule, max_chunk_bytes, series, progress)`` holds one
``check_model``: ``setup(params, x, grad)`` validates them against the model, builds the base
point of ``local_delta.LocalDifferences`` and one entry probe set per parameter, each entry
with its own step; ``measure()`` has ``engine.staging`` decide every entry through an
``ExactEvaluator``, whose central differences are true differences ``J(θ + h e) - J(θ - h e)``
of the model's objective, evaluated locally (only what the entry touches, from a cached
forward pass, the difference taken term by term before summing), in chunks of at most
``max_chunk_bytes`` of work. The evaluator knows which steps crossed an activation's kink
(from the pre-activations they moved). ``report()`` is ``engine.run.Run``'s, with the model
known to the diagnosis. The run is a context manager: its per-entry arrays are lent by an
``arena.Arena`` and go back to the process's pool when it closes, after the report, which
holds none of them.

Steps. ``finite_diff.step_sizes`` (``h = cbrt(eps) max(1, |θ|)``) applied in the coordinate the
entry acts through: a weight enters J only through ``θ * input``, so with ``c`` the largest
|input| it multiplies over the batch, ``h = step_sizes(θ c) / c``. The largest shift a step
gives a pre-activation is then ``cbrt(eps) max(1, |θ c|)`` for every entry alike, which
balances truncation against rounding as the rule intends (with one step for all, an entry on
a faint pixel would move its unit 1/255 as far, with 255 times the relative rounding); on one
image it also makes the shifts of all the pixels of a hidden unit equal, so that they share
one unit of work. A tied weight's two uses are not independent: its encoder use moves the
input its decoder use multiplies, which makes the decoder's pre-activation quadratic in the
step, and ``tied_steps`` limits the step so that the quadratic part stays small where the
values are tiny and the scaled step long.

Accuracy. The rounding of a local difference is estimated term by term (see ``local_delta``):
about ``eps`` times the size of the terms that moved, over ``2h``, instead of ``eps |J| / 2h``
for a difference of two totals. What remains is the rounding of the perturbed points
themselves, ``s ± d`` off by ``eps |s ± d| / 2``, a relative ``eps |s| / d`` of each term's
change (``eps`` where ``d`` is large against ``s``): no arrangement of the sums removes it
(bench/README.md has the accuracy measured against autograd, and how the estimates compare
with the actual errors). Truncation
``h² J''' / 6`` is estimated by Richardson from a second step where one step does not decide.
The gradient checked is allowed its own rounding: a few of its eps times the magnitudes summed
into each entry, plus what a backprop in that precision loses to its rounded forward values
and to derivatives taken from rounded outputs (``derivative_rounding``), which dominates where
units saturate.

Cost. With ``B`` the batch, ``n_k`` the widths, ``K = SERIES_ORDER`` and ``u_b`` the distinct
nonzero shifts one hidden unit gets from example b (its distinct nonzero pixel values on an
MNIST image; on a single image the scaled steps make every pixel's shift equal up to
rounding, so ``u`` is small):

* an output-layer weight or bias: ``2 B`` output-loss evaluations; ``2 B n_{L-1} n_L`` in all;
* a unit of the last hidden layer, where the output series applies (sigmoid, tanh or identity
  outputs with the squared error, sigmoid with the cross-entropy): ``K`` matrix products
  ``(B, n_L) @ (n_L, n_{L-1})`` once, then ``2 K`` multiply-adds per unit. What remains is the
  bookkeeping of the (entry, example) pairs a step moves (sorting them into shared units and
  summing per entry): linear in ``B n_{L-2} n_{L-1}`` times the fraction of nonzero inputs;
* a unit of an earlier layer of a deeper stack, with the series: one pass per (example, unit)
  through the later layers with ``K' + 1`` rows (the powers), each layer a matrix product and
  about ``K'³ / 6`` elementwise products per value to compose the activations' series:
  ``B n_k`` such passes for layer k, whatever the number of distinct shifts;
* a hidden unit without the series (a relu output or later relu layer, a later code layer of
  a KL penalty, or ``series=False``): ``u_b`` units per example, each ``2 n_L`` output
  evaluations after a rank-one update (two-layer stack), or a forward pass of one example
  row through the later layers, matmuls included (deeper stacks);
* tied weights of a two-layer stack: the hidden part as above (the scaled step, set by the
  larger of the pixel and the hidden unit a weight multiplies, shares fewer units) plus four
  output evaluations per (entry, example) for the decoder's use; deeper tied stacks take the
  generic path: every (entry, example) is its own unit, a forward pass from the tied layer on;
* so time is linear in B beyond a single image and in the number of parameters;
* memory: the cached forward pass, about 20 float64 values per parameter for the verdicts,
  the series tables ((K + 1) B n_L values while built) and chunks of at most
  ``max_chunk_bytes``: linear in the parameters, bounded in the batch but for the tables.

Measured times and memory are in bench/README.md (``bench/bench_exact_check.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from gradproof.engine.diagnosis import KnownModel
from gradproof.engine.exact.arena import Arena, counting
from gradproof.engine.exact.derivative_rounding import derivative_rounding
from gradproof.engine.exact.local_delta import EPS, LocalChanges, LocalDifferences
from gradproof.engine.exact.tied_steps import tied_step_limit
from gradproof.engine.run import Run, gradient_eps, gradient_precision_findings, is_low
from gradproof.engine.staging import Evaluated, Request, measure
from gradproof.errors import InputError
from gradproof.finite_diff import Differences, Rule, entry_differences, step_sizes
from gradproof.nn.autoencoder import Autoencoder
from gradproof.params import TensorSpec, named_layout
from gradproof.engine.probes import UNKNOWN, Measured, ProbeSet, gradient_rounding
from gradproof.report import GradReport
from gradproof.engine.verdict import params_precision_finding, transposed_finding

# Largest |J| checked: rounding bounds of about eps |J| per term are summed in quadrature, and
# their squares must stay finite in float64 (1e308).
LARGEST_OBJECTIVE = 1e140

# The local objective must match model.loss to this relative difference (a few roundings of
# the same sums in another order); more means this module does not know the model.
_AGREEMENT = 1e-10

# Entries per piece of a first step in the flat order (``in_natural_order``): 2 MiB per
# float64 temporary. Each piece pays numpy's per-call overhead and the stages' bookkeeping,
# and recomputes the hidden units its entries share with other pieces. Pieces of 65,536
# entries kept the temporaries' memory within what malloc reused, before the per-entry arrays
# came from the arena; since then one piece per tensor of the seed network (156,800 entries)
# checks one image about 2 ms sooner (bench/README.md has the measurements).
IN_ORDER_PIECE = 1 << 18

Progress = Callable[[int, int], None] | None


class ExactRun(Run):
    """One ``check_model``, filled step by step so that an interrupt leaves a report."""

    mode = "exact"

    def __init__(self, model: Autoencoder, rule: Rule, max_chunk_bytes: int, series: bool,
                 progress: Progress) -> None:
        super().__init__(rule)
        self.model = model
        self.series = series
        self.max_chunk_bytes = max_chunk_bytes
        self.progress = progress
        self.params: dict[str, np.ndarray] = {}
        self.evaluator: ExactEvaluator | None = None
        # The per-entry arrays of the check, kept between checks (see ``arena``): lent until
        # the run is closed, which the report, built before, does not outlive.
        self.arena = Arena()

    def __enter__(self) -> ExactRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.arena.close()

    @property
    def evaluations(self) -> int:
        """Perturbed points, and the base point once its forward pass is cached."""
        return self.evaluator.done + 1 if self.evaluator is not None else 0

    def point(self) -> dict[str, np.ndarray]:
        return self.params

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
        layout = named_layout(self.params)
        self.layout = layout
        twin = Autoencoder.from_config({**model.config(), "dtype": "float64"})
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
            reference = twin.loss(self.params, x64)
        _check_objective_size(reference)
        # The model's own gradient is not kept for the diagnosis (None: recomputed there if ever
        # needed): memory freed now is reused by what follows instead of faulted in afresh.
        self.known = KnownModel(model, params, x, grad if isinstance(grad, Mapping) else None)
        if grad is None:
            _, grad = model.loss_and_grad(params, x)
        elif not isinstance(grad, Mapping):
            raise InputError(
                f"grad must be a dict of gradient arrays keyed like params ({', '.join(names)}); "
                f"got {type(grad).__name__}"
            )
        self.analytic, self.transposed, dtypes, notes = layout.match_gradient(grad)
        self.findings += [transposed_finding(layout.spec(name)) for name in self.transposed]
        self.findings += notes

        engine = LocalDifferences(twin, self.params, x64, series=self.series)
        _confirm_objective(engine.objective(), reference)
        if is_low(model.dtype):
            self.findings.append(
                params_precision_finding(names, model.dtype, np.dtype(np.float64), None, 0.0, 0.0)
            )
        # A low-precision backprop also rounds its forward values and derivatives.
        lend = self.arena.empty
        derivatives = derivative_rounding(engine, lend)
        steps, allowance = {}, {}
        for spec in layout.specs:
            name = spec.name
            steps[name] = entry_steps(engine, name, lend(spec.size))
            probes = _entry_probes(spec, steps[name])
            magnitude = np.abs(self.analytic[name].ravel(), out=lend(spec.size))
            eps = gradient_eps(dtypes[name])
            rounding_g = gradient_rounding(probes, magnitude, float(magnitude.max(initial=0.0)),
                                           eps, out=magnitude)
            extra = derivatives.pop(name).reshape(-1)  # a copy only where tied (a transpose)
            extra *= eps
            rounding_g += extra
            del extra  # freed before the next tensor's arrays are made
            allowance[name] = float(rounding_g.max(initial=0.0))
            # Unfilled: the first step writes every entry's values (``report`` forgets those
            # an interrupt left unwritten).
            self.measured[name] = [Measured.empty(probes, rounding_g, lend, filled=False)]
        self.findings += gradient_precision_findings(dtypes, allowance)
        self.evaluator = ExactEvaluator(engine, self.analytic, steps, self.max_chunk_bytes,
                                        self.progress)

    def measure(self) -> None:
        results = [self.measured[spec.name][0] for spec in self.layout.specs]
        self.partial = measure(results, self.evaluator, self.rule)

    def report(self) -> GradReport:
        if self.partial:
            self._forget_unwritten()
        return super().report()

    def _forget_unwritten(self) -> None:
        """After an interrupt: the undecided entries whose values no step wrote (the arrays
        were not filled beforehand, see ``setup``) back to NaN."""
        written = self.evaluator.written if self.evaluator is not None else {}
        for name, (result,) in self.measured.items():
            unwritten = result.status == UNKNOWN
            for where in written.get(name, ()):
                unwritten[where] = False
            result.forget(unwritten)


class ExactEvaluator:
    """Local central differences of entry probes (see ``engine.staging``): exact up to the
    rounding each carries, and aware of the kinks its steps cross."""

    noise = 0.0  # each difference carries its own rounding bound instead
    kinks_known = True

    def __init__(self, engine: LocalDifferences, analytic: Mapping[str, np.ndarray],
                 steps: Mapping[str, np.ndarray], max_chunk_bytes: int, progress: Progress) -> None:
        self.engine = engine
        self.analytic = {name: g.ravel() for name, g in analytic.items()}
        self.steps = steps
        self.max_chunk_bytes = max_chunk_bytes
        self.progress = progress
        self.interrupted = False
        self.done = 0
        self.total = 0
        # Per tensor, the entries of every piece whose results the stages have taken in.
        self.written: dict[str, list[np.ndarray | slice]] = {}

    def evaluate(self, requests: list[Request], factor: float) -> Iterator[tuple[int, Evaluated]]:
        """Chunks of each request's entries at ``factor`` times their steps.

        A request for every entry of a tensor (the first step) is evaluated in the engine's
        order, which keeps a hidden unit's entries in the same chunk; when one chunk holds
        them all, that order is moot, and in their natural order the results are written as
        slices instead of scattered. Where the engine's order is the natural one (biases, the
        output layer, a hidden layer whose units the series table evaluates), the entries go
        in pieces of at most ``IN_ORDER_PIECE``, written as slices: each piece's temporaries
        reuse the memory the last one freed, where one chunk for a whole large tensor makes
        fresh temporaries of its size. A piece holds whole rows where a row fits, which the
        engine reads by broadcasting; a slice of entries is passed as a slice.
        """
        self.total += 2 * sum(which.size for _, which in requests)
        for k, (result, which) in enumerate(requests):
            name = result.probes.spec.name
            per_chunk = self._per_chunk(name)
            whole = which.size == result.probes.count
            in_order = whole and self.engine.in_natural_order(name)
            if in_order:
                per_chunk = min(per_chunk, IN_ORDER_PIECE)
                row = self.engine.row_length(name)
                if row <= per_chunk:  # whole rows, which the engine reads by broadcasting
                    per_chunk -= per_chunk % row
            one_chunk = whole and which.size <= per_chunk
            if whole and not (one_chunk or in_order):
                which = self.engine.entry_order(name)
            for start in range(0, which.size, per_chunk):
                part = which[start:start + per_chunk]
                where = slice(part[0], part[-1] + 1) if one_chunk or in_order else part
                h = self.steps[name][where]  # a view in one chunk: not copied for factor 1
                if factor != 1.0:
                    h = factor * h
                try:
                    local = self.engine.differences(name, where, h)
                    self.done += 2 * part.size
                    if self.progress is not None:
                        self.progress(self.done, self.total)
                except KeyboardInterrupt:
                    self.interrupted = True
                    return
                last = start + per_chunk >= which.size
                yield k, _evaluated(local, self.analytic[name][where], h, part, where, last)
                # Asked for the next piece, the stages have recorded this one.
                self.written.setdefault(name, []).append(where)

    def _per_chunk(self, name: str) -> int:
        """Entries of ``name`` evaluated together, within ``max_chunk_bytes``."""
        engine = self.engine
        return max(1, self.max_chunk_bytes // (engine.pair_bytes(name) * engine.batch))


def _evaluated(local: LocalChanges, analytic: np.ndarray, h: np.ndarray, which: np.ndarray,
               where: np.ndarray | slice, last: bool) -> Evaluated:
    width = 2 * h
    numeric = local.central
    numeric /= width  # in place: central is a fresh difference

    def differences(rows: np.ndarray | slice) -> Differences:
        return entry_differences(local.plus[rows], local.minus[rows], analytic[rows], h[rows],
                                 local.rounding[rows])

    return Evaluated(which, where, analytic, numeric, numeric - analytic,
                     local.rounding / width, h, local.kink, differences, last)


def _entry_probes(spec: TensorSpec, steps: np.ndarray) -> ProbeSet:
    """One probe per entry of ``spec``, in order; the positions and the unit weights are views
    of arrays shared by every check, not arrays per entry."""
    positions = counting(spec.offset + spec.size)[spec.offset:]  # labels as well
    return ProbeSet(spec, "entry", positions, positions, np.broadcast_to(1.0, (spec.size,)),
                    counting(spec.size + 1), steps)


def entry_steps(engine: LocalDifferences, name: str, out: np.ndarray | None = None
                ) -> np.ndarray:
    """The step of every entry of ``name`` (flat, C order): ``step_sizes`` in input units,
    into ``out`` (flat) where given.

    ``h = step_sizes(θ c, eps) / c`` with ``c`` the largest |input| the entry multiplies
    (1 for biases and for entries no input reaches), so that each step moves its
    pre-activations by about ``cbrt(eps) max(1, |θ c|)``; a tied weight's step goes no
    further than ``tied_steps.tied_step_limit``, where its encoder use moves the input of
    its decoder use.
    """
    scale = engine.input_scale(name)
    scale = np.where(scale > 0, scale, 1.0)
    theta = engine.params[name]
    # θ c, made into its steps in place
    steps = np.multiply(theta, scale, out=None if out is None else out.reshape(theta.shape))
    step_sizes(steps, EPS, out=steps)
    steps /= scale
    if engine.tied_layers(name) is not None:
        np.minimum(steps, tied_step_limit(engine, name), out=steps)
    return steps.ravel()


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
            f"{reference!r}: gradproof.engine.exact.local_delta no longer matches the "
            "Autoencoder's objective (a bug in gradproof, not in your gradient)"
        )
