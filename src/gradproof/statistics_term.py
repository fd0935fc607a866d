"""A gradient that lacks the paths through a normalisation's statistics: ``missing_term``.

Contract: ``with_statistics_terms(report, inputs, grads, outputs, slope, passes, word)`` takes
the report of a check of a layer (``check_vjp``, the PyTorch adapter), the inputs' values, the
gradients checked, forward's outputs at the point, ``slope(name, direction)``, the checked J's
derivative along ``direction`` of one input, and ``passes(name, gradient, quick)`` as for
``gradproof.missing_piece``. For each failing input it tries the terms a backward drops when
it treats a statistic of the input over some axes as a constant. Such paths add, in each
slice over those axes, a combination of a few arrays:

* a batch or layer normalisation's mean: a constant; its variance: a multiple of the input
  less its mean (a constant plus a multiple of the input for both);
* a softmax's normalising sum: a multiple of the output;
* a log-softmax's log-sum-exp: a multiple of exp(output), the softmax.

The numbers of each slice are measured, one directional derivative per array, and the
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
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gradproof.report import Finding, GradReport

# Loss evaluations of one directional derivative (the five-point difference).
EVALUATIONS_PER_SLOPE = 4

# The loss evaluations allowed for each set of axes tried: as many as the check itself made,
# at least this many.
MIN_BUDGET = 512

# The five-point difference's step, relative to the input's size: eps**(1/5) balances its
# O(h**4) truncation against rounding.
STEP = float(np.finfo(np.float64).eps) ** 0.2

# A slice needs more entries than the two numbers fitted to it for the fit to be evidence.
MIN_SLICE = 3

# The paths tried, in order, each with the arrays its missing part combines in a slice: the
# fewer numbers first, so that a completion is named by the simplest form that passes.
PATHS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mean", ("ones",)),
    ("softmax", ("output",)),
    ("log_softmax", ("exp_output",)),
    ("mean and variance", ("ones", "input")),
)


def with_statistics_terms(
    report: GradReport,
    inputs: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    outputs: Sequence[np.ndarray],
    slope: Callable[[str, np.ndarray], float],
    passes: Callable[[str, np.ndarray, bool], bool],
    word: str,
) -> GradReport:
    """The report, each failing input whose gradient lacks only the paths through a
    statistic of it named ``missing_term``."""
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
        arrays = _arrays(x, outputs)
        found = _completed(name, arrays, grad, slope, passes,
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


def _arrays(x: np.ndarray, outputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays the paths combine: the input, ones, and the first output of the input's
    shape with its exp (none where no output has that shape)."""
    arrays = {"input": np.asarray(x, dtype=np.float64), "ones": np.ones(x.shape)}
    same = [np.asarray(out, dtype=np.float64) for out in outputs if np.shape(out) == x.shape]
    if same:
        with np.errstate(over="ignore"):
            exp = np.exp(same[0])
        arrays["output"] = same[0]
        if np.all(np.isfinite(exp)):
            arrays["exp_output"] = exp
    return arrays


def _completed(
    name: str, arrays: dict[str, np.ndarray], grad: np.ndarray,
    slope: Callable[[str, np.ndarray], float], passes: Callable[[str, np.ndarray, bool], bool],
    budget: int,
) -> tuple[tuple[int, ...], str] | None:
    """(axes, the path missing: a name of ``PATHS``, or "variance") of the first completion
    of ``grad`` that passes, measuring with at most ``budget`` evaluations of the loss for
    each set of axes. The largest slices first: a completion over fewer, larger slices has
    fewer numbers fitted, and one that passes also passes over any finer slicing (over (0,)
    where the statistics are over (0, 2, 3)), which would misname it."""
    x = arrays["input"]
    paths = [(path, names) for path, names in PATHS if all(n in arrays for n in names)]
    used = list(dict.fromkeys(n for _, names in paths for n in names))

    def entries(axes: tuple[int, ...]) -> int:
        return int(np.prod([x.shape[a] for a in axes]))

    for axes in sorted(dict.fromkeys(statistic_axes(x.ndim)), key=entries, reverse=True):
        slices = _slices(x.shape, axes)
        cost = EVALUATIONS_PER_SLOPE * len(used) * len(slices)
        if entries(axes) < MIN_SLICE or cost > budget:
            continue
        measured = _SliceProjections.of(name, {n: arrays[n] for n in used}, grad, slices, slope)
        for path, names in paths:
            completion = measured.completion(names)
            if completion is None:
                continue
            completed = grad + completion
            if passes(name, completed, True) and passes(name, completed, False):
                # the variance's path alone adds a multiple of x less its mean: nothing in sum
                if path == "mean and variance" and measured.sums_to_zero(completion):
                    return axes, "variance"
                return axes, path
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
class _SliceProjections:
    """Per slice: the residual's (the true gradient less ``grad``) projection on each array
    restricted to the slice, and the arrays' Gram matrix there."""

    arrays: dict[str, np.ndarray]
    slices: list[tuple[slice | int, ...]]
    projections: list[dict[str, float]]
    grams: list[dict[tuple[str, str], float]]

    @classmethod
    def of(cls, name: str, arrays: dict[str, np.ndarray], grad: np.ndarray,
           slices: list[tuple[slice | int, ...]], slope: Callable[[str, np.ndarray], float]
           ) -> _SliceProjections:
        projections, grams = [], []
        for where in slices:
            basis = {}
            for key, array in arrays.items():
                direction = np.zeros(array.shape)
                direction[where] = array[where]
                basis[key] = direction
            projections.append({key: slope(name, d) - float(np.vdot(grad, d))
                                for key, d in basis.items()})
            grams.append({(a, b): float(np.vdot(basis[a][where], basis[b][where]))
                          for a in basis for b in basis})
        return cls(arrays, slices, projections, grams)

    def completion(self, names: tuple[str, ...]) -> np.ndarray | None:
        """The missing part, in each slice the combination of ``names`` that the
        projections give (least squares); None where the arrays are dependent on a slice (the
        parts cannot be told apart)."""
        missing = np.zeros(self.arrays["ones"].shape)  # "ones" is always measured
        for where, projection, gram in zip(self.slices, self.projections, self.grams):
            matrix = np.array([[gram[a, b] for b in names] for a in names])
            scale = float(np.prod(np.diag(matrix)))
            if not scale > 0 or abs(np.linalg.det(matrix)) <= 1e-12 * scale:
                return None
            coefficients = np.linalg.solve(matrix, [projection[a] for a in names])
            missing[where] = sum(c * self.arrays[a][where] for c, a in zip(coefficients, names))
        return missing

    def sums_to_zero(self, completion: np.ndarray) -> bool:
        """Whether the residual sums to zero over every slice, to 1e-8 of the completion's
        absolute sum there."""
        return all(abs(projection["ones"]) <= 1e-8 * float(np.sum(np.abs(completion[where])))
                   for where, projection in zip(self.slices, self.projections))


def _finding(name: str, ndim: int, axes: tuple[int, ...], path: str, word: str) -> Finding:
    axis = str(axes[0]) if len(axes) == 1 else str(axes)
    keep = "" if len(axes) == ndim else ", keepdims=True"
    mean, total = f".mean(axis={axis}{keep})", f".sum(axis={axis}, keepdims=True)"
    d = f"d{name}hat"
    normalised = (f"for {name}hat = ({name} - mu) / std with mu and std over axis {axis}, "
                  f"with {d} = {word} * gamma (the gradient at {name}hat): d{name} = ({d} - "
                  f"{d}{mean} - {name}hat * ({d} * {name}hat){mean}) / std")
    what, added, fix = {
        "mean": ("path through its mean", "a constant",
                 f"for an output that subtracts {name}{mean}: d{name} = g - g{mean}, with g "
                 "the gradient that treats the mean as a constant"),
        "variance": ("path through its variance", f"a multiple of {name} less its mean",
                     normalised),
        "mean and variance": ("paths through its mean and its variance",
                              f"a constant plus a multiple of {name}", normalised),
        "softmax": ("path through the softmax's normalising sum", "a multiple of the output",
                    f"for y = softmax({name}) over axis {axis}: d{name} = y * ({word} - "
                    f"({word} * y){total})"),
        "log_softmax": ("path through the log-softmax's log-sum-exp",
                        "a multiple of the softmax exp(output)",
                        f"for y = log_softmax({name}) over axis {axis}: d{name} = {word} - "
                        f"exp(y) * {word}{total}"),
    }[path]
    return Finding(
        "missing_term", (name,),
        f"the gradient of {name} lacks the {what} over axis {axis}: with {added} added in "
        f"each slice over that axis, finite differences match it, so backward treats the "
        f"statistic as a constant",
        fix=fix,
        details={"axes": list(axes), "paths": path},
    )
