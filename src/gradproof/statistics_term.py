"""A gradient that lacks the paths through an input's own statistics: ``missing_term``.

Contract: ``with_statistics_terms(report, inputs, grads, slope, passes, word)`` takes the report
of a check of a layer (``check_vjp``), the inputs' values, the gradients checked,
``slope(name, direction)``, the checked J's derivative along ``direction`` of one input, and
``passes(name, gradient, quick)`` as for ``gradproof.missing_piece``. For each failing input it
tries the terms a backward drops when it treats a mean or a variance of the input as a
constant (a batch normalisation's statistics over the batch axis, a layer normalisation's over
the features, a centring ``x - x.mean(0)``): the paths through statistics over ``axes`` add,
in each slice over those axes, a constant (the mean) plus a multiple of the input (the
variance). The two numbers of each slice are measured, by two directional derivatives, and the
gradient completed with them is checked, quickly and then entry by entry. A pass names it: a
``missing_term`` finding in place of the input's other bug findings. Each set of axes may cost
as many loss evaluations as the check itself made (at least ``MIN_BUDGET``); one that would
cost more is not tried.

A missing term of any other form leaves the completed gradient failing, and the usual
diagnosis stands.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping

import numpy as np

from gradproof.report import Finding, GradReport

# Loss evaluations per slice: two directional derivatives of four evaluations each.
EVALUATIONS_PER_SLICE = 8

# The loss evaluations allowed for each set of axes tried: as many as the check itself made,
# at least this many.
MIN_BUDGET = 512

# The five-point difference's step, relative to the input's size: eps**(1/5) balances its
# O(h**4) truncation against rounding.
STEP = float(np.finfo(np.float64).eps) ** 0.2

# A slice needs more entries than the two numbers fitted to it for the fit to be evidence.
MIN_SLICE = 3


def with_statistics_terms(
    report: GradReport,
    inputs: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    slope: Callable[[str, np.ndarray], float],
    passes: Callable[[str, np.ndarray, bool], bool],
    word: str,
) -> GradReport:
    """The report, each failing input whose gradient lacks only the paths through its own
    statistics named ``missing_term``."""
    # only a gradient wrong with no recognised pattern: a scale, a transpose ... explain theirs
    explained = {t for f in report.findings if f.is_bug and f.kind != "mismatch"
                 for t in f.tensors}
    findings = list(report.findings)
    for result in report.tensors:
        name = result.name
        if result.passed or not result.checked or name in explained or name not in grads:
            continue
        x, grad = inputs[name], grads[name]
        if grad.shape != x.shape:
            continue
        found = _completed(name, x, grad, slope, passes,
                           max(MIN_BUDGET, report.loss_evaluations))
        if found is None:
            continue
        axes, paths = found
        findings = [f for f in findings if not (f.is_bug and name in f.tensors)]
        findings.append(_finding(name, x.ndim, axes, paths, word))
    return dataclasses.replace(report, findings=findings)


def directional_slope(value: Callable[[np.ndarray], float], x: np.ndarray,
                      direction: np.ndarray) -> float:
    """The derivative of ``value`` at ``x`` along ``direction``, by the five-point central
    difference (truncation O(h**4)): accurate to about 1e-12 relative in float64, well inside
    the check that then judges the completed gradient."""
    size = float(np.max(np.abs(direction)))
    unit = direction / size
    h = STEP * max(1.0, float(np.max(np.abs(x))))
    near = value(x + h * unit) - value(x - h * unit)
    far = value(x + 2 * h * unit) - value(x - 2 * h * unit)
    return (8.0 * near - far) / (12.0 * h) * size


def statistic_axes(ndim: int) -> list[tuple[int, ...]]:
    """The axes a normalisation takes its statistics over: each single axis, and for inputs
    of three or more axes, all but one (a spatial batch norm's (0, 2, 3), a layer norm's
    (1, 2, 3)) and all but the first two (an instance norm's (2, 3))."""
    single = [(axis,) for axis in range(ndim)]
    if ndim < 3:
        return single
    all_but = [tuple(a for a in range(ndim) if a != kept) for kept in range(ndim)]
    return [*single, *all_but, tuple(range(2, ndim))]


def _completed(
    name: str, x: np.ndarray, grad: np.ndarray, slope: Callable[[str, np.ndarray], float],
    passes: Callable[[str, np.ndarray, bool], bool], budget: int,
) -> tuple[tuple[int, ...], str] | None:
    """(axes, the paths missing: "mean", "variance" or "mean and variance") of the first
    completion of ``grad`` that passes, measuring with at most ``budget`` evaluations of the
    loss for each set of axes. The largest slices first: a completion over fewer, larger
    slices has fewer numbers fitted, and one that passes also passes over any finer slicing
    (over (0,) where the statistics are over (0, 2, 3)), which would misname it."""
    def entries(axes: tuple[int, ...]) -> int:
        return int(np.prod([x.shape[a] for a in axes]))

    for axes in sorted(dict.fromkeys(statistic_axes(x.ndim)), key=entries, reverse=True):
        slices = _slices(x.shape, axes)
        if entries(axes) < MIN_SLICE or EVALUATIONS_PER_SLICE * len(slices) > budget:
            continue
        measured = _Measured.of(name, x, grad, slices, slope)
        for with_variance in (False, True):
            completion = measured.completion(with_variance)
            if completion is None:
                continue
            completed = grad + completion
            if passes(name, completed, True) and passes(name, completed, False):
                if not with_variance:
                    return axes, "mean"
                # the variance's path alone adds a multiple of x minus its mean: nothing in sum
                return axes, "variance" if measured.sums_to_zero(completion) else (
                    "mean and variance")
    return None


def _slices(shape: tuple[int, ...], axes: tuple[int, ...]) -> list[tuple[slice | int, ...]]:
    """The index of each slice over ``axes``: one per position on the other axes."""
    kept = [a for a in range(len(shape)) if a not in axes]
    found = []
    for index in itertools.product(*(range(shape[a]) for a in kept)):
        where: list[slice | int] = [slice(None)] * len(shape)
        for a, i in zip(kept, index):
            where[a] = i
        found.append(tuple(where))
    return found


@dataclasses.dataclass
class _Measured:
    """Per slice: the residual's (the true gradient less ``grad``) projections on the slice's
    indicator and on x there, and the Gram matrix of those two."""

    x: np.ndarray
    slices: list[tuple[slice | int, ...]]
    projections: np.ndarray  # (slices, 2)
    grams: np.ndarray  # (slices, 2, 2)

    @classmethod
    def of(cls, name: str, x: np.ndarray, grad: np.ndarray,
           slices: list[tuple[slice | int, ...]], slope: Callable[[str, np.ndarray], float]
           ) -> _Measured:
        projections, grams = np.empty((len(slices), 2)), np.empty((len(slices), 2, 2))
        for k, where in enumerate(slices):
            ones, values = np.zeros_like(x, dtype=np.float64), np.zeros_like(x, dtype=np.float64)
            ones[where], values[where] = 1.0, x[where]
            basis = (ones, values)
            projections[k] = [slope(name, d) - float(np.vdot(grad, d)) for d in basis]
            grams[k] = [[float(np.vdot(u, v)) for v in basis] for u in basis]
        return cls(x, slices, projections, grams)

    def completion(self, with_variance: bool) -> np.ndarray | None:
        """The missing part, a + b * x in each slice (b = 0 without the variance), solved
        from the projections; None where x is constant on a slice (the two parts cannot be
        told apart)."""
        missing = np.zeros_like(self.x, dtype=np.float64)
        for where, projection, gram in zip(self.slices, self.projections, self.grams):
            if not with_variance:
                missing[where] = projection[0] / gram[0, 0]
                continue
            if abs(np.linalg.det(gram)) <= 1e-12 * gram[0, 0] * gram[1, 1]:
                return None
            a, b = np.linalg.solve(gram, projection)
            missing[where] = a + b * self.x[where]
        return missing

    def sums_to_zero(self, completion: np.ndarray) -> bool:
        """Whether the residual sums to zero over every slice, to 1e-8 of the completion's
        absolute sum there."""
        return all(abs(projection[0]) <= 1e-8 * float(np.sum(np.abs(completion[where])))
                   for where, projection in zip(self.slices, self.projections))


def _finding(name: str, ndim: int, axes: tuple[int, ...], paths: str, word: str) -> Finding:
    axis = str(axes[0]) if len(axes) == 1 else str(axes)
    keep = "" if len(axes) == ndim else ", keepdims=True"
    mean = f".mean(axis={axis}{keep})"
    d = f"d{name}hat"
    if paths != "mean":
        what = f"its {paths}"
        added = (f"a multiple of {name} minus its mean" if paths == "variance"
                 else f"a constant plus a multiple of {name}")
        fix = (f"for {name}hat = ({name} - mu) / std with mu and std over axis {axis}, "
               f"with {d} = {word} * gamma (the gradient at {name}hat): d{name} = ({d} - "
               f"{d}{mean} - {name}hat * ({d} * {name}hat){mean}) / std")
    else:
        what, added = "its mean", "a constant"
        fix = (f"for an output that subtracts {name}{mean}: d{name} = g - g{mean}, with g "
               f"the gradient that treats the mean as a constant")
    return Finding(
        "missing_term", (name,),
        f"the gradient of {name} lacks the {'paths' if paths == 'mean and variance' else 'path'}"
        f" through {what} over axis {axis} (a "
        f"normalisation's statistics): with {added} added in each slice over that axis, "
        f"finite differences match it, so backward treats the statistics as constants",
        fix=fix,
        details={"axes": list(axes), "paths": paths},
    )
