"""Structural diagnosis of a wrong gradient: *how* it is wrong, and what to change.

Contract: ``diagnose(analytic, numeric, params, tolerance) -> list[Finding]``, a pure function
on arrays keyed by tensor name. For every tensor whose analytic gradient differs from the
numerical one by more than its tolerance, each hypothesis in ``HYPOTHESES`` is tested. A
hypothesis *undoes* one mistake: it maps the analytic gradient to what the true gradient would
be had that mistake been made (``analytic.T`` for a transpose, ``analytic / c`` for a factor
``c`` ...). It explains the data when the result matches the numerical gradient within the
per-entry tolerance on every known entry, while the analytic gradient itself did not, and when
at least ``MIN_EVIDENCE`` known entries change by more than their tolerance when it is undone
(one entry can be fitted by any one-parameter hypothesis, so it is no evidence). Every
hypothesis that explains the data is reported, with the relative residual left after undoing
it as its evidence and a one-line fix. A tensor that none explains gets ``partial`` when its
wrong entries are confined to a few rows, columns or entries, and ``mismatch`` otherwise.

NaN in ``numeric`` (or a NaN / infinite tolerance) marks an entry as unknown, as in a sampled
check: only known entries count, for and against a hypothesis. No outlier is forgiven: the
tolerance is already an error bound for each entry, and a hypothesis that fits all entries
but a few would hide a second, local bug behind a confident claim. ``mismatch`` is the honest
answer then (finite-difference kinks, the usual source of such outliers, are reported by the
checker, not here).

``HYPOTHESES`` is a registry keyed by finding kind; a model-aware module adds its own by
passing ``hypotheses={**HYPOTHESES, "kind": test}`` to ``diagnose``. A hypothesis is
``test(case, failing) -> Finding | None``: ``case`` is the ``TensorCase`` under test and
``failing`` all failing tensors by name, in order (for hypotheses about pairs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from gradproof.errors import InputError
from gradproof.report import Finding

# Known entries a hypothesis must move by more than their tolerance to count as evidence.
MIN_EVIDENCE = 2

# Largest denominator shown in a fraction ("1/100"; 1/1000 is still a plausible batch size).
MAX_DENOMINATOR = 1000

# How many index ranges or example entries a message names before "and N more".
_SHOWN = 4

_ORDER_WORDS = {"C": "C (row-major)", "F": "Fortran/MATLAB (column-major)"}


@dataclass(frozen=True)
class TensorCase:
    """One failing tensor, ready for testing: float64 arrays of the parameter's shape.

    Attributes
    ----------
    name : str
        The tensor's name.
    analytic, numeric : ndarray
        The gradients; ``numeric`` is NaN where an entry is unknown.
    tolerance : ndarray
        The resolvable error of each entry.
    param : ndarray or None
        The parameter itself (for weight-decay hypotheses), when given.
    known : ndarray of bool
        Entries with a known numerical value and a finite tolerance.
    wrong : ndarray of bool
        Known entries where ``|analytic - numeric|`` exceeds the tolerance.
    batch : int or None
        The number of examples the loss runs over, when known: a factor equal to it or its
        inverse is named as a batch mean / sum mix-up.
    """

    name: str
    analytic: np.ndarray
    numeric: np.ndarray
    tolerance: np.ndarray
    param: np.ndarray | None
    known: np.ndarray
    wrong: np.ndarray
    batch: int | None = None

    def explains(self, corrected: np.ndarray, *, fitted: bool = True) -> bool:
        """Whether ``corrected`` (the analytic gradient with a mistake undone) fits the data.

        It must match ``numeric`` within tolerance on every known entry and differ from the
        analytic gradient by more than the tolerance on at least ``MIN_EVIDENCE`` of them.
        A mistake with nothing ``fitted`` to the data (a variant backward pass, whose every
        entry is a prediction) needs only as many as the tensor has, down to one: a one-entry
        bias matched to rounding is evidence, where a pattern with a fitted constant (a scale)
        fits any single entry.
        """
        if not np.all(_within(corrected, self.numeric, self.tolerance)[self.known]):
            return False
        moved = ~_within(corrected, self.analytic, self.tolerance) & self.known
        needed = MIN_EVIDENCE if fitted else min(MIN_EVIDENCE, int(np.count_nonzero(self.known)))
        return int(np.count_nonzero(moved)) >= max(needed, 1)

    def residual(self, corrected: np.ndarray) -> float:
        """``||corrected - numeric|| / ||numeric||`` over the known entries."""
        numeric = self.numeric[self.known]
        scale = float(np.linalg.norm(numeric)) or float(np.linalg.norm(self.analytic[self.known]))
        error = float(np.linalg.norm(corrected[self.known] - numeric))
        return error / scale if scale > 0 else math.inf


Hypothesis = Callable[[TensorCase, Mapping[str, TensorCase]], Finding | None]


def diagnose(
    analytic: Mapping[str, np.ndarray],
    numeric: Mapping[str, np.ndarray],
    params: Mapping[str, np.ndarray],
    tolerance: Mapping[str, np.ndarray | float],
    *,
    hypotheses: Mapping[str, Hypothesis] | None = None,
    batch: int | None = None,
) -> list[Finding]:
    """Say how each wrong gradient is wrong.

    Parameters
    ----------
    analytic, numeric : dict of str to ndarray
        The gradients to compare, keyed by tensor name, each of its parameter's shape.
        ``numeric`` is NaN where an entry was not computed.
    params : dict of str to ndarray
        The parameters (used by the weight-decay hypothesis); may lack some names.
    tolerance : dict of str to ndarray or float
        The resolvable error of each tensor: a scalar or an array broadcastable to its shape.
    hypotheses : dict of str to callable, optional
        The hypotheses to test, keyed by kind; ``HYPOTHESES`` by default. The two-mistake
        hypotheses of ``COMBINATIONS`` are tested only on tensors that none of them explains.
    batch : int, optional
        The number of examples in the loss, when known (a factor of m or 1/m is then named as
        a batch mean / sum mix-up).

    Returns
    -------
    list of Finding
        For each tensor whose gradient is wrong, in the order of ``analytic``: every
        hypothesis that explains it, else one ``partial`` or ``mismatch`` finding. A pair
        found ``swapped`` is one finding about both tensors. Empty when all agree.

    Raises
    ------
    InputError
        When the dicts disagree on names or shapes, or a tolerance is negative.
    """
    tests = HYPOTHESES if hypotheses is None else hypotheses
    cases = _cases(analytic, numeric, params, tolerance, batch)
    failing = {name: case for name, case in cases.items() if case.wrong.any()}
    findings: list[Finding] = []
    explained: set[str] = set()
    for name, case in failing.items():
        for test in tests.values():
            finding = test(case, failing)
            if finding is not None:
                findings.append(finding)
                explained.update(finding.tensors)
        if name in explained:
            continue
        # Two mistakes at once only where no single one fits: the simpler story wins.
        combined = next((f for test in COMBINATIONS.values() if (f := test(case, failing))), None)
        findings.append(combined or _partial(case) or _mismatch(case))
    return findings


def simple_fraction(c: float, tol: float, max_denominator: int = MAX_DENOMINATOR) -> str | None:
    """The simplest fraction within ``tol`` of ``c``, as text ("1/100", "2", "-3/4").

    Parameters
    ----------
    c : float
        The value to show.
    tol : float
        How far from ``c`` the fraction may be: the error with which ``c`` is resolved.
    max_denominator : int
        The largest denominator tried.

    Returns
    -------
    str or None
        The fraction with the smallest denominator that fits, or None when none does, when
        ``c`` is not finite, or when ``tol`` is too coarse to tell ``c`` from zero.
    """
    if tol < 0 or math.isnan(tol):
        raise InputError(f"simple_fraction needs a tolerance >= 0, got {tol!r}")
    if not math.isfinite(c) or tol >= abs(c) or abs(c) * max_denominator > 2**52:
        return None
    denominators = np.arange(1, max_denominator + 1)
    numerators = np.rint(c * denominators)
    fits = np.abs(numerators / denominators - c) <= tol
    if not fits.any():
        return None
    # The first fit has the smallest denominator, so the fraction is already in lowest terms.
    first = int(np.argmax(fits))
    return str(Fraction(int(numerators[first]), int(denominators[first])))


# ---------------------------------------------------------------------------- hypotheses


def _transposed(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
    """A square gradient computed as its transpose: undo with ``analytic.T``."""
    if not _is_square(case.analytic.shape):
        return None
    corrected = case.analytic.T
    if not case.explains(corrected):
        return None
    name, residual = case.name, case.residual(corrected)
    return Finding(
        kind="transposed",
        tensors=(name,),
        message=(
            f"the gradient of {name} is its transpose: its entry (i, j) holds the true "
            "gradient's (j, i) "
            f"(residual {residual:.1g}); for a square {name} this is also what unrolling a flat "
            "vector in the other order (C vs Fortran) gives"
        ),
        evidence=residual,
        # Which product is right depends on how the function uses the tensor, which a
        # gradient alone does not say: each orientation's, and the flat-vector cause.
        fix=(
            f"compute it in {name}'s own orientation: `a.T @ delta` for `a @ {name}`, "
            f"`delta @ a.T` for `{name} @ a`, `delta.T @ a` for `a @ {name}.T` (torch's "
            "Linear); from a flat vector, reshape it in the order it was flattened in"
        ),
    )


def _unroll_order(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
    """A gradient flattened in one order (C / Fortran) and reshaped in the other."""
    shape = case.analytic.shape
    # With fewer than two axes longer than 1 both orders agree; square 2-D is `transposed`.
    if sum(n > 1 for n in shape) < 2 or _is_square(shape):
        return None
    for flat_order, fill_order in (("C", "F"), ("F", "C")):
        # analytic = numeric flattened in flat_order, refilled in fill_order: undo both steps.
        corrected = case.analytic.reshape(-1, order=fill_order).reshape(shape, order=flat_order)
        if case.explains(corrected):
            name, residual = case.name, case.residual(corrected)
            return Finding(
                kind="unroll_order",
                tensors=(name,),
                message=(
                    f"the gradient of {name} was unrolled in one order and rolled up in the "
                    f"other: it is the true gradient flattened in {_ORDER_WORDS[flat_order]} "
                    f"order and reshaped in {_ORDER_WORDS[fill_order]} order "
                    f"(residual {residual:.1g})"
                ),
                evidence=residual,
                fix=(
                    f"reshape {name}'s part of the flat vector with the order it was flattened "
                    f'in: `reshape(shape, order="{flat_order}")`; MATLAB\'s `(:)` and `reshape` '
                    'are column-major, i.e. `order="F"` on both sides'
                ),
                details={"flattened": flat_order, "reshaped": fill_order},
            )
    return None


def _scaled(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
    """The gradient times a constant c (c != 1, 0, -1), fitted to the known entries."""
    if _is_zero(case):
        return None
    # Undo a factor c: numeric ~ u * analytic with u = 1/c.
    u_range = _feasible_range(case.analytic, case.numeric, case)
    if u_range is None or any(u_range[0] <= special <= u_range[1] for special in (-1, 0, 1)):
        # -1 is `sign_flipped`; 0 means numeric is zero within tolerance; 1 means no bug.
        return None
    u = float(np.clip(_least_squares(case.analytic, case.numeric, case), *u_range))
    corrected = u * case.analytic
    if not case.explains(corrected):
        return None
    c_range = tuple(sorted((1 / u_range[0], 1 / u_range[1])))
    factor, undo = _number_in(*c_range), _number_in(*u_range)
    name, residual = case.name, case.residual(corrected)
    sign_note = "the sign is flipped and " if u < 0 else ""
    return Finding(
        kind="scaled",
        tensors=(name,),
        message=(
            f"the gradient of {name} is {factor} times the true one"
            f"{_batch_note(case, factor)} (residual {residual:.1g}): {sign_note}a constant factor is off"
        ),
        evidence=residual,
        fix=(
            f"multiply the gradient of {name} by {undo}, or better find the constant that the "
            "loss and the gradient disagree on: a 1/m batch mean, the 1/2 in 0.5*sum(err**2), "
            "a factor 2"
        ),
        details={"factor": 1 / u, "factor_text": factor},
    )


def _sign_flipped(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
    """The gradient with the wrong sign."""
    corrected = -case.analytic
    if not case.explains(corrected):
        return None
    name, residual = case.name, case.residual(corrected)
    return Finding(
        kind="sign_flipped",
        tensors=(name,),
        message=(
            f"the gradient of {name} has the wrong sign: it is minus the true one "
            f"(residual {residual:.1g})"
        ),
        evidence=residual,
        fix=(
            f"negate the gradient of {name}: somewhere on its path a difference is taken the "
            "other way round or a minus sign is lost (in a squared-error or cross-entropy "
            "network, the output error is `output - target`, not `target - output`)"
        ),
    )


def _swapped(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
    """Two tensors' gradients exchanged (as they are, or transposed to fit)."""
    names = list(failing)
    # Pairs are tested from their first tensor only, so each swap is reported once.
    for other_name in names[names.index(case.name) + 1 :]:
        other = failing[other_name]
        for layout in _swap_layouts(case.analytic.shape, other.analytic.shape):
            mine = _relaid(other.analytic, case.analytic.shape, layout)
            theirs = _relaid(case.analytic, other.analytic.shape, layout)
            if case.explains(mine) and other.explains(theirs):
                residual = max(case.residual(mine), other.residual(theirs))
                return _swap_finding(case, other, layout, residual)
    return None


def _swap_layouts(shape: tuple[int, ...], other: tuple[int, ...]) -> list[str]:
    """How two tensors' gradients can be exchanged: as they are ("same"), transposed ("T"),
    or, for different shapes of one size, through a flat vector refilled in C or F order."""
    layouts = ["same"] if shape == other else []
    if len(shape) == 2 and other == shape[::-1]:
        layouts.append("T")
    if shape != other and math.prod(shape) == math.prod(other):
        layouts += ["C", "F"]
    return layouts


def _relaid(array: np.ndarray, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """``array`` brought into ``shape`` the way a swap of this layout moves it."""
    if layout == "same":
        return array
    if layout == "T":
        return array.T
    return array.reshape(-1, order=layout).reshape(shape, order=layout)


_SWAP_WORDS = {
    "same": "",
    "T": " transposed",
    "C": " reshaped in C (row-major) order",
    "F": " reshaped in Fortran/MATLAB (column-major) order",
}


def _swap_finding(
    case: TensorCase, other: TensorCase, layout: str, residual: float
) -> Finding:
    t = _SWAP_WORDS[layout]
    a, b = case.name, other.name
    return Finding(
        kind="swapped",
        tensors=(a, b),
        message=(
            f"the gradients of {a} and {b} are exchanged: the one given for {a} is the true "
            f"gradient of {b}{t}, and the one given for {b} that of {a}{t} (residual "
            f"{residual:.1g})"
        ),
        evidence=residual,
        fix=(
            f"store each gradient under its own name: check the order in which the gradients of "
            f"{a} and {b} are returned (by a backward, a cost function) or packed into a flat "
            "vector, and the keys or variable names they are saved under"
        ),
        details={"transposed": layout == "T", "layout": layout},
    )


def _missing_l2(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
    """A weight-decay term lambda * param missing from (or extra in) the gradient."""
    weight = case.param
    if weight is None:
        return None
    # analytic - numeric ~ k * W: k < 0 when lambda*W is missing, k > 0 when it is extra.
    difference = case.analytic - case.numeric
    k_range = _feasible_range(weight, difference, case)
    if k_range is None or k_range[0] <= 0 <= k_range[1]:
        return None
    k = float(np.clip(_least_squares(weight, difference, case), *k_range))
    corrected = case.analytic - k * weight
    if not case.explains(corrected):
        return None
    name, residual = case.name, case.residual(corrected)
    lam = _number_in(*sorted(abs(end) for end in k_range), fractions=False)
    if k < 0:
        message = (
            f"the gradient of {name} lacks the weight-decay term: the true one minus it is "
            f"{lam} * {name} (residual {residual:.1g})"
        )
        fix = (
            f"add `{lam} * {name}` to the gradient of {name} (the derivative of "
            f"`{lam}/2 * sum({name}**2)`)"
        )
    else:
        message = (
            f"the gradient of {name} has a weight-decay term the loss lacks: it minus the true "
            f"one is {lam} * {name} (residual {residual:.1g})"
        )
        fix = (
            f"drop `{lam} * {name}` from the gradient of {name}, or add `{lam}/2 * sum({name}**2)` "
            "to the loss (a lambda off by a factor 2 shows up here too)"
        )
    return Finding(
        kind="missing_l2",
        tensors=(name,),
        message=message,
        evidence=residual,
        fix=fix,
        details={"lambda": abs(k), "direction": "missing" if k < 0 else "extra"},
    )


def _zero(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
    """A gradient left at zero while the numeric one is not."""
    if not _is_zero(case):
        return None
    name = case.name
    magnitude = np.where(case.known, np.abs(case.numeric), -np.inf)
    largest = np.unravel_index(int(np.argmax(magnitude)), magnitude.shape)
    return Finding(
        kind="zero",
        tensors=(name,),
        message=(
            f"the gradient of {name} is all zeros while the true one is not (the finite "
            f"differences reach {magnitude[largest]:.3g} at {_entry(name, largest)})"
        ),
        # How far the analytic gradient is from zero, relative to the numeric one.
        evidence=float(np.linalg.norm(case.analytic) / np.linalg.norm(case.numeric[case.known])),
        fix=(
            f"the gradient of {name} is never filled in: compute it instead of leaving it at "
            "its initial zeros"
        ),
    )


HYPOTHESES: dict[str, Hypothesis] = {
    "transposed": _transposed,
    "unroll_order": _unroll_order,
    "scaled": _scaled,
    "sign_flipped": _sign_flipped,
    "swapped": _swapped,
    "missing_l2": _missing_l2,
    "zero": _zero,
}


# ------------------------------------------------------------ two mistakes at once


def _layout_and_factor(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
    """A layout mistake (transpose, unroll order) and a constant factor (or sign) at once."""
    for kind, undo_text, moved in _undone_layouts(case):
        u_range = _feasible_range(moved, case.numeric, case)
        # 1 is the layout mistake alone, 0 a numeric gradient of zero: neither is a combination.
        if u_range is None or any(u_range[0] <= special <= u_range[1] for special in (0, 1)):
            continue
        flipped = u_range[0] <= -1 <= u_range[1]
        u = -1.0 if flipped else float(np.clip(_least_squares(moved, case.numeric, case), *u_range))
        corrected = u * moved
        if not case.explains(corrected):
            continue
        name, residual = case.name, case.residual(corrected)
        if flipped:
            what, second, undo = "and has the wrong sign", "sign_flipped", "negate it"
            details: dict[str, Any] = {"factor": -1.0}
        else:
            c_range = tuple(sorted((1 / u_range[0], 1 / u_range[1])))
            factor = _number_in(*c_range)
            what = f"and is {factor} times the true gradient{_batch_note(case, factor)}"
            second, undo = "scaled", f"multiply it by {_number_in(*u_range)}"
            details = {"factor": 1 / u, "factor_text": factor}
        return Finding(
            kind=kind,
            tensors=(name,),
            message=(
                f"two mistakes at once: the gradient of {name} {_LAYOUT_WORDS[kind]} {what} "
                f"(residual {residual:.1g} once both are undone; neither alone fits)"
            ),
            evidence=residual,
            fix=f"{undo_text} and {undo}: both steps, in either order",
            details={**details, "combination": [kind, second]},
        )
    return None


_LAYOUT_WORDS = {
    "transposed": "is transposed (its entry (i, j) holds the true gradient's (j, i))",
    "unroll_order": "was unrolled and rolled up in different orders (C vs Fortran/MATLAB)",
}


def _undone_layouts(case: TensorCase) -> list[tuple[str, str, np.ndarray]]:
    """The analytic gradient with each layout mistake its shape allows undone:
    (kind, how to undo it, the array)."""
    shape = case.analytic.shape
    if _is_square(shape):
        return [("transposed", f"transpose the gradient of {case.name}", case.analytic.T)]
    if sum(n > 1 for n in shape) < 2:
        return []
    return [
        ("unroll_order", f'reshape {case.name}\'s part of the flat vector with order="{flat}"',
         case.analytic.reshape(-1, order=fill).reshape(shape, order=flat))
        for flat, fill in (("C", "F"), ("F", "C"))
    ]


def _factor_and_l2(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
    """A constant factor and a weight-decay term at once: ``analytic = a * numeric + b * W``
    (``(1 + lambda/m) * g`` for ``g + lambda/m * W``, an L2 term added before a 1/m)."""
    weight = case.param
    known = case.known
    # Two fitted numbers need MIN_EVIDENCE entries beyond the two they can always fit.
    if weight is None or int(np.count_nonzero(known)) < 2 + MIN_EVIDENCE:
        return None
    fit = _two_term_fit(case.numeric, weight, case.analytic, case)
    if fit is None:
        return None
    (a, b), (da, db) = fit
    # Both parts must be resolved: a factor of 1 is missing_l2 alone, a zero term scaled alone.
    if abs(a - 1) <= da or abs(b) <= db or abs(a) <= da:
        return None
    corrected = (case.analytic - b * weight) / a
    if not case.explains(corrected):
        return None
    name, residual = case.name, case.residual(corrected)
    factor = _number_in(a - da, a + da)
    term = _number_in(abs(b) - db, abs(b) + db, fractions=False)
    sign = "+" if b > 0 else "-"
    undo = _number_in(*sorted((1 / (a - da), 1 / (a + da))))
    return Finding(
        kind="missing_l2",
        tensors=(name,),
        message=(
            f"two mistakes at once: the gradient of {name} is {factor} times the true one "
            f"{sign} {term} * {name}: a constant factor{_batch_note(case, factor)} and a "
            f"weight-decay term are both off (residual {residual:.1g} once both are undone; "
            "neither alone fits)"
        ),
        evidence=residual,
        fix=(
            f"the true gradient is `{undo} * (grad {'-' if b > 0 else '+'} {term} * {name})`: "
            "apply the 1/m (or 2, or 1/2) to the data term only and add `lambda * "
            f"{name}` once, outside it; `(1 + lambda/m) * g` is not `g + lambda/m * {name}`"
        ),
        details={"factor": a, "factor_text": factor, "l2_term": b,
                 "combination": ["scaled", "missing_l2"]},
    )


def _two_term_fit(
    x1: np.ndarray, x2: np.ndarray, y: np.ndarray, case: TensorCase
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """``y ~ a*x1 + b*x2`` weighted by the tolerance over the known entries: (a, b) and their
    standard errors at the tolerance's scale; None when x1 and x2 are (nearly) collinear."""
    known = case.known
    floor = np.finfo(np.float64).eps * float(np.abs(y[known]).max(initial=1.0))
    t = np.maximum(case.tolerance[known], floor)
    design = np.stack([x1[known] / t, x2[known] / t], axis=1)
    gram = design.T @ design
    if not np.all(np.isfinite(gram)) or np.linalg.cond(gram) > 1e12:
        return None
    coef = np.linalg.solve(gram, design.T @ (y[known] / t))
    errors = np.sqrt(np.diag(np.linalg.inv(gram)))
    return (float(coef[0]), float(coef[1])), (float(errors[0]), float(errors[1]))


def _batch_note(case: TensorCase, factor: str) -> str:
    """Names a batch mean / sum mix-up when the factor is the batch size or its inverse."""
    m = case.batch
    if m is None or m < 2:
        return ""
    if factor == f"1/{m}":
        return f" (1/m for the m = {m} examples: the gradient is averaged and the loss summed)"
    if factor == str(m):
        return f" (m for the m = {m} examples: the loss is averaged and the gradient summed)"
    return ""


COMBINATIONS: dict[str, Hypothesis] = {
    "layout_and_factor": _layout_and_factor,
    "factor_and_l2": _factor_and_l2,
}


# ---------------------------------------------------------------- fallbacks: partial, mismatch


def _partial(case: TensorCase) -> Finding | None:
    """``partial`` when the wrong entries are few, or confined to a few rows or columns.

    The rest must be shown right: at least ``MIN_EVIDENCE`` entries outside the wrong region
    that are not zero within tolerance match, and the wrong region covers at most half of
    the informative rows, columns or entries (those not zero in both gradients).
    """
    informative = case.known & ~(
        _within(case.numeric, 0.0, case.tolerance) & _within(case.analytic, 0.0, case.tolerance)
    )
    region = _wrong_region(case, informative)
    if region is None:
        return None
    where, plural, outside, details = region
    right = int(np.count_nonzero(informative & outside & ~case.wrong))
    if right < MIN_EVIDENCE:
        return None
    name, wrong = case.name, case.wrong
    zero_note = ""
    if np.all(case.analytic[wrong] == 0):
        zero_note = "; they are all 0" if np.count_nonzero(wrong) > 1 else "; it is 0"
        zero_note += f" in the gradient of {case.name}"
    verb = "are" if plural else "is"
    others = int(np.count_nonzero(case.known & ~wrong))
    return Finding(
        kind="partial",
        tensors=(name,),
        message=(
            f"only {where} {verb} wrong: {_wrong_text(case)}{zero_note}; the other {others} "
            f"known entries match, {right} of them nonzero and outside the wrong region"
        ),
        evidence=case.residual(np.where(outside, case.analytic, case.numeric)),
        fix=(
            f"look at the code that fills {where}: a loop or slice that stops early or starts "
            "late (`range(1, n)`, `[:-1]`), a bias summed over the wrong axis, or a later write "
            "over part of the gradient"
        ),
        details=details,
    )


def _wrong_region(
    case: TensorCase, informative: np.ndarray
) -> tuple[str, bool, np.ndarray, dict[str, list]] | None:
    """Where the wrong entries lie: (text, whether it is plural, mask of the entries outside,
    details), or None when they are not confined to a minority of the tensor."""
    name, wrong = case.name, case.wrong
    n_wrong = int(np.count_nonzero(wrong))
    if case.analytic.ndim == 2:
        # Rows or columns rather than entries when each wrong line holds two wrong entries on
        # average, and at most half the informative lines are wrong; the smaller share wins.
        candidates = []
        for axis in (0, 1):
            idx, n_info = _wrong_lines(wrong, informative, axis)
            if 2 * len(idx) <= min(n_wrong, n_info):
                candidates.append((len(idx) / n_info, axis, idx))
        if candidates:
            _, axis, idx = min(candidates, key=lambda c: (c[0], c[1]))
            word = ("row", "column")[axis]
            inside = np.zeros(case.analytic.shape[axis], dtype=bool)
            inside[idx] = True
            outside = ~(inside[:, None] if axis == 0 else inside[None, :])
            outside = np.broadcast_to(outside, wrong.shape)
            text = f"{word}{'s' if len(idx) > 1 else ''} {_spans(idx)} of {name}"
            return text, len(idx) > 1, outside, {word + "s": [int(i) for i in idx]}
    if 2 * n_wrong > int(np.count_nonzero(informative)):
        return None
    entries = np.argwhere(wrong)
    details = {"entries": [[int(i) for i in e] for e in entries[: 5 * _SHOWN]]}
    if n_wrong == 1:
        return _entry(name, tuple(entries[0])), False, ~wrong, details
    if case.analytic.ndim == 1:
        return f"entries {_spans(entries[:, 0])} of {name}", True, ~wrong, details
    examples = ", ".join(_entry(name, tuple(e)) for e in entries[:_SHOWN])
    return f"{n_wrong} scattered entries of {name} (e.g. {examples})", True, ~wrong, details


def _wrong_lines(
    wrong: np.ndarray, informative: np.ndarray, axis: int
) -> tuple[np.ndarray, int]:
    """Indices of the rows (axis 0) or columns (axis 1) holding wrong entries, and how many
    rows or columns hold any informative entry."""
    across = 1 - axis
    n_info = int(np.count_nonzero(informative.any(axis=across)))
    return np.flatnonzero(wrong.any(axis=across)), n_info


def _mismatch(case: TensorCase) -> Finding:
    name = case.name
    return Finding(
        kind="mismatch",
        tensors=(name,),
        message=(
            f"the gradient of {name} is wrong with no recognised pattern: {_wrong_text(case)}"
        ),
        evidence=case.residual(case.analytic),
        fix=(
            f"derive the gradient of {name} again one step at a time, checking each "
            "intermediate (in a network, each layer's delta) against a finite difference"
        ),
    )


# ------------------------------------------------------------------------------- helpers


def _cases(
    analytic: Mapping[str, np.ndarray],
    numeric: Mapping[str, np.ndarray],
    params: Mapping[str, np.ndarray],
    tolerance: Mapping[str, np.ndarray | float],
    batch: int | None,
) -> dict[str, TensorCase]:
    inputs = {"analytic": analytic, "numeric": numeric, "params": params, "tolerance": tolerance}
    for label, mapping in inputs.items():
        if not isinstance(mapping, Mapping):
            raise InputError(
                f"{label} must be a dict of arrays keyed by tensor name, "
                f"got {type(mapping).__name__}"
            )
    if set(analytic) != set(numeric):
        raise InputError(
            f"analytic and numeric gradients name different tensors: {sorted(map(str, analytic))} "
            f"vs {sorted(map(str, numeric))}"
        )
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise InputError(f"batch must be a positive int (the number of examples), got {batch!r}")
    return {name: _case(name, analytic[name], numeric[name], params.get(name), tolerance, batch)
            for name in analytic}


def _case(
    name: str,
    analytic: ArrayLike,
    numeric: ArrayLike,
    param: ArrayLike | None,
    tolerance: Mapping[str, ArrayLike],
    batch: int | None,
) -> TensorCase:
    a = _float_array(analytic, f"the analytic gradient of {name!r}")
    n = _float_array(numeric, f"the numeric gradient of {name!r}")
    if n.shape != a.shape:
        raise InputError(
            f"the numeric gradient of {name!r} has shape {n.shape}; expected {a.shape} like the "
            "analytic one"
        )
    if name not in tolerance:
        raise InputError(f"tolerance has no entry for tensor {name!r}")
    tol = _float_array(tolerance[name], f"the tolerance of {name!r}")
    try:
        tol = np.broadcast_to(tol, a.shape)
    except ValueError:
        raise InputError(
            f"the tolerance of {name!r} has shape {tol.shape}; expected a scalar or an array "
            f"broadcastable to {a.shape}"
        ) from None
    if np.any(tol < 0):
        raise InputError(f"the tolerance of {name!r} must be >= 0; it has negative entries")
    if param is not None:
        param = _float_array(param, f"params[{name!r}]")
        if param.shape != a.shape:
            raise InputError(
                f"params[{name!r}] has shape {param.shape}; expected {a.shape} like its gradient"
            )
    known = np.isfinite(n) & np.isfinite(tol)
    wrong = known & ~_within(a, n, tol)
    return TensorCase(name, a, n, tol, param, known, wrong, batch)


def _float_array(value: ArrayLike, what: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nested lists
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise InputError(f"{what} must be a real numeric array, got {type(value).__name__}")
    return array.astype(np.float64)


def _within(x: np.ndarray, y: np.ndarray | float, tol: np.ndarray) -> np.ndarray:
    """``|x - y| <= tol`` entry by entry; False where either side is NaN or infinite."""
    with np.errstate(invalid="ignore"):
        return np.abs(x - y) <= tol


def _is_square(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and shape[0] == shape[1] and shape[0] > 1


def _is_zero(case: TensorCase) -> bool:
    """Whether the analytic gradient is zero within tolerance everywhere (the largest known
    tolerance stands in where an entry's own is unknown)."""
    known_tol = case.tolerance[case.known]
    limit = np.where(case.known, case.tolerance, known_tol.max() if known_tol.size else 0.0)
    return bool(np.all(_within(case.analytic, 0.0, limit)))


def _feasible_range(x: np.ndarray, y: np.ndarray, case: TensorCase) -> tuple[float, float] | None:
    """The interval of k with ``|y - k*x| <= tolerance`` on every known entry.

    None when it is empty, or unbounded (x zero on every known entry), or the data not finite.
    """
    x, y, t = x[case.known], y[case.known], case.tolerance[case.known]
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return None
    free = x == 0
    if np.any(np.abs(y[free]) > t[free]):
        return None
    x, y, t = x[~free], y[~free], t[~free]
    if x.size == 0:
        return None
    ends = np.stack([(y - t) / x, (y + t) / x])  # (2, n): each entry's bounds, in either order
    lo, hi = float(ends.min(axis=0).max()), float(ends.max(axis=0).min())
    return (lo, hi) if lo <= hi else None


def _least_squares(x: np.ndarray, y: np.ndarray, case: TensorCase) -> float:
    """The k minimising ``sum(((y - k*x) / tolerance)**2)`` over the known entries."""
    x, y, t = x[case.known], y[case.known], case.tolerance[case.known]
    # A zero tolerance (an exact entry) gets the weight of float64 rounding, not infinity.
    floor = np.finfo(np.float64).eps * max(float(np.abs(x).max()), float(np.abs(y).max()))
    t = np.maximum(t, floor)
    xw, yw = x / t, y / t
    return float(xw @ yw / (xw @ xw))


def _number_in(lo: float, hi: float, *, fractions: bool = True) -> str:
    """The simplest text for a number in [lo, hi]: a small fraction, else the shortest decimal."""
    middle, half = (lo + hi) / 2, (hi - lo) / 2
    fraction = simple_fraction(middle, half) if fractions else None
    if fraction is not None:
        return fraction
    for digits in range(1, 18):
        text = f"{middle:.{digits}g}"
        if lo <= float(text) <= hi:
            return text
    return f"{middle:.17g}"


def _worst_index(case: TensorCase) -> tuple[int, ...]:
    """The wrong entry with the largest error relative to its tolerance."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(case.analytic - case.numeric) / case.tolerance
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    ratio = np.where(case.wrong, ratio, -1.0)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), ratio.shape))


def _wrong_text(case: TensorCase) -> str:
    """How many entries are wrong and the worst one: "3 of 28 known entries differ beyond
    tolerance, the worst at W1[0, 1]: analytic 0.522 vs numeric -0.478 (tolerance 5e-08)"."""
    n_wrong, n_known = int(np.count_nonzero(case.wrong)), int(np.count_nonzero(case.known))
    index = _worst_index(case)
    worst = _entry(case.name, index)
    values = (
        f"gradient {case.analytic[index]:.3g} vs finite differences {case.numeric[index]:.3g} "
        f"(tolerance {case.tolerance[index]:.1g})"
    )
    if n_wrong == 1:
        return f"1 of {n_known} known entries differs beyond tolerance, at {worst}: {values}"
    return (
        f"{n_wrong} of {n_known} known entries differ beyond tolerance, the worst at "
        f"{worst}: {values}"
    )


def _entry(name: str, index: tuple[int, ...]) -> str:
    """``W1[3, 4]``, the one form of a position in a finding's text (``gradproof.terms``
    rewrites it in the user's terms); a scalar is its name."""
    if not index:
        return name
    return f"{name}[{', '.join(str(int(i)) for i in index)}]"


def _spans(indices: np.ndarray) -> str:
    """Sorted indices as ranges: [0, 1, 2, 3, 4, 10] -> "0-4 and 10"."""
    indices = np.sort(np.asarray(indices))
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    runs = np.split(indices, breaks)
    parts = [f"{run[0]}" if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs]
    if len(parts) > _SHOWN:
        parts = parts[:_SHOWN] + [f"{len(parts) - _SHOWN} more"]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
