"""``check_network``: the user's own loss and gradient, checked against the network they compute.

Contract: ``check_network(loss, grad, params, x, y) -> GradReport``. The member of the
``Network`` family that computes the user's loss is identified from its values
(``gradproof.identify``), or given as ``model=`` (and ``layout=``). Its own hand-written
backprop, mapped into the user's layout, is the reference: every entry of the user's gradient
is compared with it to rounding (``mistakes.rounding_tolerance``), and finite differences run
beside it, so that the verdict is never better than they allow: for a member in
``Autoencoder``'s form (``Network.as_autoencoder``) whose loss equals the user's to float64
rounding (``EXACT_RESIDUAL``), ``check_model``'s exact engine on every entry of the user's
gradient mapped onto the network (local differences of the identified objective, about as
fast as the backprop itself); for the others, a check of the user's loss
(``check_gradient``: every entry for small networks, random directions for large ones). The failing tensors are diagnosed in the user's names against the
reference: the structural hypotheses of ``gradproof.diagnose`` and the family's catalogue of
mistakes (``gradproof.network_mistakes``). When no member matches, the report is
``check_gradient``'s on the same call, with the closest member and why it was rejected.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof import blas
from gradproof.check import CHECK_GRADIENT_OPTIONS, check_gradient, check_model
from gradproof.diagnose import HYPOTHESES, Hypothesis, TensorCase, diagnose
from gradproof.errors import InputError
from gradproof.identify import (
    Identification,
    Identified,
    UserProblem,
    canonical_point,
    given_model,
    identified_names,
    identify_problem,
    read_problem,
    user_gradient,
)
from gradproof.engine.options import validate
from gradproof.engine.verdict import transposed_finding
from gradproof.layouts import Layout, to_canonical
from gradproof.mistakes import order_findings, rounding_rtol
from gradproof.network_mistakes import NetworkMistake, applicable, fix_fields
from gradproof.network_words import decay_form_note
from gradproof.nn.autoencoder import Autoencoder
from gradproof.nn.network import Network, Params
from gradproof.params import ParamLayout
from gradproof.report import Finding, GradReport, TensorResult
from gradproof.terms import in_user_terms, layout_terms, with_canonical

# ``ParamLayout.match_gradient``'s answer: tensors, transposed names, dtypes, notes.
Matched = tuple[dict[str, np.ndarray], list[str], dict[str, np.dtype], list[Finding]]

# The largest relative difference between the user's loss and the identified network's at
# which the exact engine stands in for the user's loss: it differentiates the network, whose
# fitted constants (lambda, beta) are known only as well as the losses agree, and holds every
# entry to float64 rounding. A loss rounded in float32 agrees to about 1e-10 and would have its
# decay's lambda, not its gradient, judged; such losses keep the black-box evidence.
EXACT_RESIDUAL = 1e-13

# Up to this many entries the finite differences check every entry; beyond, random directions.
FULL_CHECK_ENTRIES = 2000

# Random directions per tensor for the finite-difference evidence of a large network.
DIRECTIONS = 2


@blas.policy("check_gradient")
def check_network(
    loss: Callable[..., Any],
    grad: Any,
    params: Any,
    x: Any,
    y: Any = None,
    *,
    model: Network | None = None,
    layout: Layout | None = None,
    shapes: Any = None,
    order: str = "C",
    rtol: float | None = None,
    atol: float | None = None,
    safety: float = 10.0,
    seed: int = 0,
    blas_threads: int | str | None = None,
    subscripts: str = "numpy",
    flat_name: str = "theta",
) -> GradReport:
    """Check the user's gradient of their own network's loss, and name the mistake.

    Parameters
    ----------
    loss : callable
        ``loss(params) -> float`` (or ``(float, gradient)`` with ``grad=None``): the user's
        own, closing over ``x`` and ``y``.
    grad : callable, gradient or None
        As for ``check_gradient``.
    params : dict of arrays (any names), list of arrays, or flat vector with ``shapes``
        The point, in the user's structure (``Theta1`` 25x401 with the bias as column 0,
        ``W1`` (n_in, n_out) with a vector ``b1`` ...).
    x : ndarray, 2-D
        The data the loss closes over, examples as rows or as columns.
    y : ndarray, optional
        Class labels (0- or 1-based), one-hot targets, or None for an autoencoder.
    model : Network, optional
        Skip the identification: the network the loss computes.
    layout : Layout, optional
        With ``model``: how the user stores it (needed only when several layouts fit).
    shapes, order
        For a flat parameter vector, as for ``check_gradient``.
    rtol, atol, safety, seed
        The finite-difference check's options, as for ``check_gradient``.
    blas_threads : int or {"auto", "off"}, optional
        Threads of the BLAS and OpenMP pools during the whole call, the user's own code
        included (see ``gradproof.blas``): as for ``check_gradient``.
    subscripts : {"numpy", "matlab"}
        How the report writes an entry's position, on the user's own arrays: 0-based
        ``Theta1[2, 0]`` or MATLAB's 1-based ``Theta1(3, 1)`` (as for ``check_gradient``).
    flat_name : str
        With a flat ``params`` vector: its name in positions, ``theta(17) = Theta2(2, 2)``.

    Returns
    -------
    GradReport
        ``mode="network"`` with ``model`` holding the identified member, its table and
        findings in the user's names; or, when no member matches, ``check_gradient``'s report
        with ``model`` saying which came closest and why it was rejected.

    Raises
    ------
    InputError
        Everything ``check_gradient`` rejects; data whose shape fits no layout of the
        parameters; a loss that is not finite at the given point or nondeterministic;
        labels that are not integers or lie outside the classes; several layouts that
        compute the loss equally well (pass ``model=`` and ``layout=``); a ``model`` whose
        loss is not the user's.
    """
    started = time.perf_counter()
    # The exact path writes positions without passing through check_gradient's own checks.
    naming = {"subscripts": subscripts, "flat_name": flat_name}
    validate({name: CHECK_GRADIENT_OPTIONS[name] for name in naming}, naming)
    value = _loss_value(loss, grad)
    problem = read_problem(value, params, x, y, shapes, order)
    if model is None:
        identification = identify_problem(problem)
    else:
        identification = Identification(_given(problem, model, layout), tried=1)
    options = {"shapes": shapes, "order": order, "rtol": rtol, "atol": atol,
               "safety": safety, "seed": seed, "subscripts": subscripts,
               "flat_name": flat_name}
    if identification.model is None:
        report = check_gradient(loss, grad, params, **options)
        report.model = identification.to_dict()
        report.seconds = time.perf_counter() - started
        return report
    identified = identification.model
    point = canonical_point(identified, problem, params)  # (params, x as rows, y)
    raw = _user_grad(loss, grad, params)
    matched = problem.layout.match_gradient(raw, copy=False)  # only read
    autoencoder = (identified.network.as_autoencoder(len(point[1]))
                   if identified.residual <= EXACT_RESIDUAL else None)
    if autoencoder is not None:
        evidence = _exact_evidence(problem, identified, autoencoder, point, matched,
                                   rtol=rtol, atol=atol, safety=safety)
    else:
        small = problem.layout.size <= FULL_CHECK_ENTRIES
        evidence = check_gradient(loss, grad, params, mode="full" if small else "directional",
                                  directions=None if small else DIRECTIONS, **options)
    report = _exact_report(problem, identified, point, matched, evidence)
    # Every entry is compared with the identified network's backprop: what the finite
    # differences alone could not resolve is resolved by that comparison, which
    # ``TensorResult.detectable`` states; a note of their limits would contradict it.
    report.findings = [f for f in report.findings
                       if not (f.kind == "precision" and f.details.get("coarse"))]
    terms = layout_terms(problem.layout, problem.layout.gradient_names(raw), matched[1],
                         flat_name=flat_name, one_based=subscripts == "matlab")
    report = in_user_terms(report, terms)
    report = with_canonical(report, identified_names(identified, problem))
    note = None if model is not None else decay_form_note(identified.network,
                                                          point[1].shape[0])
    if note is not None:
        report.findings.append(note)
    report.model = identification.to_dict()
    report.loss_evaluations += len(problem.points) + 1
    report.seconds = time.perf_counter() - started
    return report


def _loss_value(loss: Callable[..., Any], grad: Any) -> Callable[[Any], float]:
    if not callable(loss):
        raise InputError(f"loss must be callable, loss(params) -> float; got "
                         f"{type(loss).__name__}")
    if grad is not None:
        return loss

    def value(params: Any) -> float:
        out = loss(params)
        if not isinstance(out, tuple) or len(out) != 2:
            raise InputError("with grad=None, loss(params) must return (value, gradient); got "
                             f"{type(out).__name__}")
        return out[0]

    return value


def _given(problem: UserProblem, model: Network, layout: Layout | None) -> Identified:
    """The user's ``model=`` (and ``layout=``), checked against the user's loss at the point."""
    if not isinstance(model, Network):
        raise InputError(f"model must be a gradproof Network; got {type(model).__name__}")
    return given_model(problem, model, layout)


def _user_grad(loss: Callable[..., Any], grad: Any, params: Any) -> Any:
    if grad is None:
        return loss(params)[1]
    return grad(params) if callable(grad) else grad


def _exact_evidence(problem: UserProblem, identified: Identified, autoencoder: Autoencoder,
                    point: tuple[Params, np.ndarray, Any], matched: Matched, **rule: Any
                    ) -> GradReport:
    """The finite-difference evidence of an identified autoencoder: ``check_model``'s exact
    engine on every entry of the user's gradient mapped onto the network, its verdicts named as
    the user names the tensors.

    The differences are the identified network's, whose loss equals the user's to rounding at
    the point and at the points near it that identified it. The engine's own findings are kept
    where they are notes (kinks, precision) on tensors the user names as the network does; its
    bug findings are left to the diagnosis against the network's own backprop, in the user's
    names.
    """
    net, layout = identified.network, problem.layout
    canonical, x_rows, _ = point
    analytic, transposed, dtypes, notes = matched
    holder = identified_names(identified, problem)  # network tensor -> the user's tensor
    # The gradient in the user's structure: a dict of plain names is that structure already.
    user_grad = (analytic if problem.structure == "dict"
                 else layout.structure(layout.unroll(analytic)))
    # In the precision the user's tensors came in, which sets the gradient's own allowance;
    # views, which only check_model reads.
    canonical_grad = {
        name: g.astype(dtypes[holder[name]], copy=False)
        for name, g in to_canonical(identified.layout, net, user_grad, copy=False).items()
    }
    exact = check_model(autoencoder, canonical, x_rows, grad=canonical_grad, **rule)
    tensors = [_joined_result(spec.name, spec.shape,
                              [exact.tensor(part) for part, user in holder.items()
                               if user == spec.name])
               for spec in layout.specs]
    same_names = all(part == user for part, user in holder.items())
    findings = [transposed_finding(layout.spec(name)) for name in transposed] + notes + [
        f for f in exact.findings if not f.is_bug and same_names
    ]
    return GradReport(tensors, findings, mode=exact.mode, seconds=exact.seconds,
                      loss_evaluations=exact.loss_evaluations, rule=exact.rule)


def _joined_result(name: str, shape: tuple[int, ...], parts: list[TensorResult]
                   ) -> TensorResult:
    """One user tensor's verdict from those of the network tensors it holds (a weight and the
    bias stored as its column, or just one): passed if all passed; the step and estimate of the
    worst (a failed one first)."""
    worst = min(parts, key=lambda part: part.passed)
    return TensorResult(
        name=name, shape=shape, checked=sum(p.checked for p in parts),
        max_abs_error=max(p.max_abs_error for p in parts),
        max_rel_error=max(p.max_rel_error for p in parts),
        passed=all(p.passed for p in parts), step=worst.step,
        error_estimate=worst.error_estimate, probes=sum(p.probes for p in parts),
        excluded=sum(p.excluded for p in parts),
    )


def _exact_report(problem: UserProblem, identified: Identified,
                  point: tuple[Params, np.ndarray, Any], matched: Matched,
                  evidence: GradReport) -> GradReport:
    """Every entry against the identified network's gradient (``point``: the user's point
    and data as the network reads them; ``matched``: the user's gradient as
    ``ParamLayout.match_gradient`` gives it); the evidence's verdicts kept."""
    net = identified.network
    canonical, x_rows, y = point
    layout = problem.layout
    given = identified.given  # the identification's forward pass at the point, if it made one
    reference = _in_layout(layout, identified, (
        net.loss_and_grad(canonical, x_rows, y) if given is None
        else net.loss_and_grad_from(given.params, given.cache, given.t))[1])
    # match_gradient's notes (shape conventions) are already among the evidence's findings.
    analytic, _, dtypes, _ = matched
    compared = {spec.name: _compare(analytic[spec.name], reference[spec.name], dtypes[spec.name])
                for spec in layout.specs}
    results = [_tensor_result(spec.name, spec.shape, compared[spec.name],
                              evidence.tensor(spec.name)) for spec in layout.specs]
    exact_failing = [name for name, comparison in compared.items() if comparison.exceeds]
    kept = [f for f in evidence.findings
            if not f.is_bug or f.kind == "transposed" or not set(f.tensors) & set(exact_failing)]
    explained = [] if not exact_failing else diagnose(
        {n: analytic[n] for n in exact_failing}, {n: reference[n] for n in exact_failing},
        layout.named(problem.flat), {n: compared[n].tolerance for n in exact_failing},
        hypotheses={**HYPOTHESES, **_mistake_hypotheses(problem, identified, canonical, x_rows,
                                                         y, layout)})
    findings = order_findings(_one_per_kind(kept + explained), layout.names)
    return GradReport(
        results, findings, mode="network", seconds=evidence.seconds,
        loss_evaluations=evidence.loss_evaluations,
        rule="every entry against the identified network's own backprop within sqrt(eps) "
        f"relative; finite differences ({evidence.mode}): {evidence.rule}",
    )


def _in_layout(layout: ParamLayout, identified: Identified, grads: Params
               ) -> dict[str, np.ndarray]:
    """A gradient of the identified network as float64 tensors keyed by the user's names, each
    of the user's shape: ``from_canonical`` gives the user's own structure and shapes, so
    ``match_gradient``'s reading of a user's gradient (its copy, its scan for NaN and Inf)
    is not needed for the network's."""
    structure = user_gradient(identified, grads)
    if layout.kind != "tree":
        return layout.named(np.asarray(structure, dtype=np.float64).reshape(-1))
    return {spec.name: np.asarray(leaf, dtype=np.float64).reshape(spec.shape)
            for spec, leaf in zip(layout.specs, layout.leaves(structure))}


@dataclass(frozen=True)
class _Comparison:
    """Every entry of a user's gradient against the reference, within ``rounding_tolerance``."""

    max_abs: float
    max_rel: float
    worst: tuple[int, ...] | None  # the entry with the largest error over its tolerance
    worst_tolerance: float | None
    passed: bool  # every error within its tolerance (a NaN is not)
    exceeds: bool  # some error above its tolerance
    detectable: float | None  # the largest tolerance
    largest: float  # the largest |reference| entry
    tolerance: np.ndarray  # each entry's, for a diagnosis of a failing tensor


def _compare(analytic: np.ndarray, reference: np.ndarray, dtype: np.dtype) -> _Comparison:
    """``_Comparison`` of two tensors of one shape."""
    if not analytic.size:
        return _Comparison(0.0, 0.0, None, None, True, False, None, 0.0, np.zeros(0))
    tiny = float(np.finfo(np.float64).tiny)
    # the user's dtype sets the tolerance
    rtol = rounding_rtol(dtype)
    # In place where it can be, |reference| read once for both the scale and the tolerance:
    # each pass over a large tensor and each fresh array costs.
    tolerance = np.abs(reference)  # |reference| until it becomes the tolerance
    largest = float(tolerance.max())
    scale = np.abs(analytic)
    np.maximum(scale, tolerance, out=scale)
    # 0 where both are 0 (then so is diff); adding tiny changes no normal scale, and costs a
    # pass less than a masked division
    scale += tiny
    # rounding_tolerance's, in its operations: rtol * (|reference| + largest) + tiny
    tolerance += largest
    tolerance *= rtol
    tolerance += tiny
    diff = np.subtract(analytic, reference)
    np.abs(diff, out=diff)
    rel = np.divide(diff, scale, out=scale)
    max_rel = float(rel.max())
    ratio = np.divide(diff, tolerance, out=rel)
    worst = np.unravel_index(int(np.argmax(ratio)), analytic.shape)  # the first NaN if any
    # every ratio below 1 (as floats) means every difference below its tolerance; only
    # otherwise is the comparison itself needed (NaN compares as a failure either way)
    passed = float(ratio[worst]) < 1.0 or bool(np.all(diff <= tolerance))
    return _Comparison(
        max_abs=float(diff.max()), max_rel=max_rel,
        worst=tuple(int(i) for i in worst), worst_tolerance=float(tolerance[worst]),
        passed=passed, exceeds=not passed and bool(np.any(diff > tolerance)),
        # the tolerance is monotone in |reference|: its largest is the largest entry's, the
        # same operations on the same floats (a pass over the tensor less)
        detectable=(largest + largest) * rtol + tiny, largest=largest, tolerance=tolerance,
    )


def _tensor_result(name: str, shape: tuple[int, ...], comparison: _Comparison,
                   evidence: TensorResult) -> TensorResult:
    # The comparison covers every entry: an error in any one above its tolerance fails it.
    detectable = comparison.detectable
    return TensorResult(
        name=name, shape=shape, checked=math.prod(shape),
        max_abs_error=comparison.max_abs, max_rel_error=comparison.max_rel,
        passed=comparison.passed and evidence.passed,
        worst_index=comparison.worst,
        step=evidence.step, error_estimate=evidence.error_estimate,
        tolerance=comparison.worst_tolerance,
        probes=evidence.probes, excluded=evidence.excluded, detectable=detectable,
        detectable_relative=detectable / comparison.largest
        if detectable is not None and comparison.largest > 0 else None,
    )


def _mistake_hypotheses(problem: UserProblem, identified: Identified, canonical: dict,
                        x_rows: np.ndarray, y: Any, layout: ParamLayout
                        ) -> dict[str, Hypothesis]:
    """One hypothesis per applicable mistake, its gradient in the user's layout, computed
    once when a failing tensor first asks for it."""
    net = identified.network
    computed: dict[str, dict[str, np.ndarray]] = {}
    names = identified_names(identified, problem)

    def hypothesis(mistake: NetworkMistake) -> Hypothesis:
        def test(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
            if mistake.id not in computed:
                wrong = mistake.gradient(net, canonical, x_rows, y)
                computed[mistake.id] = _in_layout(layout, identified, wrong)
            corrected = case.numeric + (case.analytic - computed[mistake.id][case.name])
            if not case.explains(corrected, fitted=False):
                return None
            return _mistake_finding(mistake, case, case.residual(corrected), names, net,
                                    identified.layout)

        return test

    return {f"mistake:{key}": hypothesis(m) for key, m in applicable(net).items()}


def _mistake_finding(mistake: NetworkMistake, case: TensorCase, residual: float,
                     names: Mapping[str, str], net: Network, layout: Layout) -> Finding:
    numpy_line, matlab_line = mistake.fix_lines(fix_fields(net, layout, names, case.name))
    return Finding(
        kind=mistake.kind, tensors=(case.name,),
        message=(f"the gradient of {case.name} is exactly what this mistake gives (residual "
                 f"{residual:.1g}): {mistake.description}"),
        evidence=residual, fix=f"numpy: {numpy_line}  |  MATLAB: {matlab_line}",
        details={"mistake": mistake.id, "numpy": numpy_line, "matlab": matlab_line},
    )


def _one_per_kind(findings: list[Finding]) -> list[Finding]:
    """One finding per (kind, tensors): a catalogued mistake before a structural finding."""
    kept: dict[tuple[str, tuple[str, ...]], Finding] = {}
    for finding in findings:
        key = (finding.kind, finding.tensors)
        if key not in kept or ("mistake" in finding.details
                               and "mistake" not in kept[key].details):
            kept[key] = finding
    return list(kept.values())
