"""Verdicts: per-tensor results and the findings' texts, from the measurements of a check.

Contract: pure functions from ``probes.Measured`` / ``taylor.TaylorResult`` records to
``report.TensorResult`` and ``report.Finding``. A tensor's worst comparison is the one
furthest beyond its own tolerance; messages name the pattern, the worst entries with their
indices and the tolerance, never whole columns of numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gradproof.diagnose import diagnose
from gradproof.finite_diff import KINK_SHRINK, ROUNDING_GROWTH, relative_error
from gradproof.params import TensorSpec
from gradproof.engine.probes import EXCLUDED, FAILED, PASSED, Measured
from gradproof.report import Finding, TensorResult
from gradproof.engine.taylor import TaylorResult

# Indices a message names before "and N more", and at most how many a finding's details list.
_SHOWN = 5
_DETAILED = 100


def measured_result(spec: TensorSpec, measured: list[Measured]) -> TensorResult:
    """One tensor's verdict from all its probes; the worst comparison is the one furthest
    beyond its tolerance."""
    excluded = sum(int(np.count_nonzero(m.status == EXCLUDED)) for m in measured)
    kept = [(m, mask) for m, mask in ((m, m.compared) for m in measured) if mask.any()]
    compared, pick = [m for m, _ in kept], [mask for _, mask in kept]
    counts = [(m.probes.is_entries, int(np.count_nonzero(mask))) for m, mask in kept]
    checked = sum(count for is_entries, count in counts if is_entries)
    probes = sum(count for is_entries, count in counts if not is_entries)
    if not compared:
        return TensorResult(spec.name, spec.shape, 0, 0.0, 0.0, True, excluded=excluded)
    analytic = _joined([m.analytic for m in compared], pick)
    numeric = _joined([m.numeric for m in compared], pick)
    tolerance = _joined([m.tolerance for m in compared], pick)
    failed = _joined([m.status for m in compared], pick) == FAILED
    error = np.abs(numeric - analytic)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = error / tolerance
    unset = ~(tolerance > 0)  # a zero (or NaN) tolerance: any error at all is beyond it
    if unset.any():
        ratio[unset] = np.where(error[unset] > 0, np.inf, 0.0)
    # Below its tolerance a derivative is not resolved, and its relative error is only noise.
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    resolved = failed | (scale > tolerance)
    relative = np.max(relative_error(error, scale), where=resolved, initial=0.0)
    worst = int(np.argmax(ratio))
    owner, k = _locate(compared, pick, worst)
    index = spec.index(owner.probes.labels[k]) if owner.probes.is_entries else None
    return TensorResult(
        spec.name,
        spec.shape,
        checked,
        float(error.max()),
        float(relative),
        not failed.any(),
        worst_index=index,
        step=float(owner.step[k]),
        error_estimate=float(owner.estimate[k]),
        tolerance=float(owner.tolerance[k]),
        probes=probes,
        excluded=excluded,
    )


def _joined(arrays: list[np.ndarray], pick: list[np.ndarray]) -> np.ndarray:
    """The picked entries of each array, one after another.

    A single array whose every entry is picked (an exact check, most often) is returned as it
    is, not copied: the seed network's two weight tensors hold 156,800 entries each.
    """
    if len(arrays) == 1 and pick[0].all():
        return arrays[0]
    return np.concatenate([arr[p] for arr, p in zip(arrays, pick)])


def _locate(compared: list[Measured], pick: list[np.ndarray], flat: int) -> tuple[Measured, int]:
    """The set and probe index of the ``flat``-th compared probe."""
    for m, p in zip(compared, pick):
        which = np.flatnonzero(p)
        if flat < which.size:
            return m, int(which[flat])
        flat -= which.size
    raise IndexError(flat)


def taylor_result(spec: TensorSpec, results: list[TaylorResult]) -> TensorResult:
    orders = [r.fit.order for r in results if r.fit.order is not None and not r.kink]
    errors = [abs(r.fit.derivative_error) for r in results]
    relative = [
        abs(r.fit.derivative_error) / max(abs(r.analytic), abs(r.analytic + r.fit.derivative_error))
        if r.fit.order is not None and r.fit.order < 1.5 and not r.kink
        else 0.0
        for r in results
    ]
    bound = max(r.fit.bound for r in results)
    return TensorResult(
        spec.name,
        spec.shape,
        0,
        max(errors),
        max(relative),
        all(r.passed for r in results),
        error_estimate=bound,
        tolerance=bound,
        probes=len(results),
        taylor_order=min(orders) if orders else None,
    )


# ----------------------------------------------------------------- findings


def params_precision_finding(
    low: list[str],
    dtype: np.dtype,
    evaluated_in: np.dtype,
    fallback: str | None,
    resolution: float,
    largest: float,
) -> Finding:
    """In which precision the loss was evaluated (low-precision params, or a loss that would
    not take float64), and what that resolves.

    ``fallback`` is the clause that says why the loss was not evaluated in float64 (see
    ``Objective.fallback``), None when it was; ``low`` may be empty when only the fallback is
    worth a note.
    """
    if fallback:
        share = f" ({resolution / largest:.0e} of the largest gradient entry)" if largest else ""
        how = (
            f"{fallback}, so it was evaluated in {evaluated_in}: finite differences with steps "
            f"sized for {evaluated_in} resolve the gradient only to about {resolution:.1e}"
            f"{share}, and smaller errors go unseen"
        )
    else:
        how = (
            "the loss was evaluated on a float64 copy, so finite differences keep float64 accuracy"
        )
    prefix = f"params {_names(low)} are {dtype}: " if low else ""
    return Finding(
        "precision",
        ("loss",),
        prefix + how,
        details={"tensors": low, "evaluated_in": str(evaluated_in)},
    )


def noisy_loss_finding(relative: float) -> Finding:
    return Finding(
        "precision",
        ("loss",),
        f"the loss's values carry rounding noise of about {relative:.1e} of their size (float32 "
        "arithmetic inside the loss?): steps and tolerances were widened to match",
        details={"relative_noise": relative},
    )


def gradient_precision_finding(name: str, dtype: np.dtype, rounding: float) -> Finding:
    return Finding(
        "precision",
        (name,),
        f"the gradient of {name} is {dtype}: its entries carry rounding of up to about "
        f"{ROUNDING_GROWTH:g}·eps·(|g| + max|g|) ≈ {rounding:.1e}, which the tolerance includes, "
        f"so {dtype} rounding does not fail correct code",
        details={"dtype": str(dtype), "rounding": rounding},
    )


def transposed_finding(spec: TensorSpec) -> Finding:
    rows, columns = spec.shape[0], spec.shape[-1]
    return Finding(
        "transposed",
        (spec.name,),
        f"the gradient of {spec.name} has shape {spec.shape[::-1]}, the transpose of the "
        f"parameter's {spec.shape}; its values were compared after transposing (the table shows "
        "whether they are right)",
        fix=(
            f"return the gradient in {spec.name}'s own shape {spec.shape}: for a layer "
            f"a @ {spec.name} that is `a.T @ delta` ({rows} x {columns}), not `delta.T @ a`"
        ),
        details={"gradient_shape": list(spec.shape[::-1]), "parameter_shape": list(spec.shape)},
    )


def nondeterministic_finding(what: str, first: float, second: float) -> Finding:
    return Finding(
        "nondeterministic",
        ("loss",),
        f"{what} {first!r} and {second!r} (difference {abs(second - first):.2e}): the loss depends "
        "on something besides params (random sampling, dropout, a changing global); tolerances "
        "were widened to this noise, which can hide small errors",
        fix="fix the loss's randomness (a seeded Generator created inside the loss) while checking",
        details={"values": [first, second]},
    )


def kink_findings(
    spec: TensorSpec, measured: list[Measured], taylor: list[TaylorResult]
) -> list[Finding]:
    findings = []
    noted = [m for m in measured if (m.kink | (m.status == EXCLUDED)).any()]
    if noted:

        # Only the probes that showed a kink or were excluded: clear failures that were merely
        # confirmed at smaller steps crossed nothing.
        def count(condition: Callable[[Measured], np.ndarray]) -> int:
            return sum(
                int(np.count_nonzero(condition(m) & (m.kink | (m.status == EXCLUDED))))
                for m in measured
            )

        rechecked = count(lambda m: np.isfinite(m.slopes[:, 0]))
        agreed = count(lambda m: np.isfinite(m.slopes[:, 0]) & (m.status == PASSED))
        unresolved = count(lambda m: m.unresolved)
        at_point = count(lambda m: (m.status == EXCLUDED) & ~m.unresolved)
        failed = count(lambda m: np.isfinite(m.slopes[:, 0]) & (m.status == FAILED))
        parts = []
        if agreed:
            parts.append(
                f"{agreed} agree when checked again with a step {KINK_SHRINK:g}x (or more) smaller"
            )
        if at_point:
            parts.append(
                f"{at_point} excluded (the kink is at the point itself and the analytic value lies "
                "between the one-sided slopes)"
            )
        if unresolved:
            parts.append(
                f"{unresolved} excluded as unresolved (the difference kept changing down to a step "
                f"{KINK_SHRINK**3:g}x smaller: the loss varies faster than any step tried)"
            )
        if failed:
            parts.append(f"{failed} disagree at every step and count as failures")
        example_set = noted[0]
        k = int(np.flatnonzero(example_set.kink | (example_set.status == EXCLUDED))[0])
        left, right = example_set.slopes[k]
        findings.append(
            Finding(
                "kink",
                (spec.name,),
                f"{rechecked} finite-difference step(s) of {spec.name} crossed a kink of the "
                "loss (one-sided slopes disagree, as at a ReLU or abs at 0) or a feature "
                f"narrower than the step: {'; '.join(parts)}. E.g. "
                f"{_probe_text(example_set, k)}: slopes {left:.3g} (left) and {right:.3g} "
                f"(right), analytic {example_set.analytic[k]:.3g}",
                details={
                    "rechecked": rechecked,
                    "agreed": agreed,
                    "excluded": at_point + unresolved,
                    "unresolved": unresolved,
                    "failed": failed,
                },
            )
        )
    kinks = [r for r in taylor if r.kink]
    if kinks:
        findings.append(
            Finding(
                "kink",
                (spec.name,),
                f"along {len(kinks)} Taylor direction(s) of {spec.name} the loss has a kink at "
                "the point: the remainder shrinks like h, but its linear part is even in h "
                "(absent on one side, or of the same sign on both), which a wrong slope cannot "
                "give; the gradient is a one-sided slope there (not a failure)",
                details={"count": len(kinks)},
            )
        )
    return findings


def diagnose_failing(
    failing: list[str],
    analytic: dict[str, np.ndarray],
    numeric: dict[str, np.ndarray],
    params: dict[str, np.ndarray],
    tolerance: dict[str, np.ndarray],
    mismatch_for: Callable[[str], Finding],
) -> list[Finding]:
    """``diagnose`` the tensors, then a ``mismatch`` for each failing tensor it left unexplained.

    ``numeric`` and ``tolerance`` hold NaN where an entry was not compared one by one;
    ``mismatch_for(name)`` builds the localised mismatch finding of one tensor.
    """
    if not failing:
        return []
    findings = list(diagnose(analytic, numeric, params, tolerance))
    covered = {name for f in findings if f.is_bug for name in f.tensors}
    findings += [mismatch_for(name) for name in failing if name not in covered]
    return findings


def mismatch_finding(
    spec: TensorSpec, measured: list[Measured], taylor: list[TaylorResult]
) -> Finding:
    """A failing tensor with no diagnosis: say where it fails, localised by the probes."""
    name = spec.name
    parts, details = [], {}
    for m in measured:
        bad = np.flatnonzero(m.status == FAILED)
        if not bad.size:
            continue
        total = int(np.count_nonzero(m.compared))
        # Name a few in the message and at most _DETAILED in the details, however many fail.
        if m.probes.is_entries:
            indices = [spec.index(p) for p in m.probes.labels[bad[:_DETAILED]]]
            parts.append(f"{bad.size} of {total} entries ({_list(indices, bad.size)})")
            details.setdefault("entries", []).extend([list(i) for i in indices])
        else:
            labels = [int(x) for x in m.probes.labels[bad[:_DETAILED]]]
            parts.append(f"{bad.size} of {total} {m.probes.kind}s ({_list(labels, bad.size)})")
            details.setdefault(m.probes.kind + "s", []).extend(labels)
    for r in taylor:
        if not r.passed:
            parts.append(
                f"a Taylor direction whose remainder shrinks like h^{r.fit.order:.2f}, not h²"
            )
    worst = _worst_text(measured)
    return Finding(
        "mismatch",
        (name,),
        f"the gradient of {name} disagrees with finite differences along {'; '.join(parts)}{worst}",
        fix=(
            f"derive the gradient of {name} again step by step, checking each intermediate "
            "against a finite difference"
        ),
        details=details,
    )


def _worst_text(measured: list[Measured]) -> str:
    """The failing comparison furthest beyond its tolerance, in words."""
    best: tuple[float, Measured, int] | None = None
    for m in measured:
        bad = np.flatnonzero(m.status == FAILED)
        if bad.size:
            ratio = np.abs(m.error[bad]) / np.maximum(m.tolerance[bad], np.finfo(float).tiny)
            k = int(np.argmax(ratio))
            if best is None or ratio[k] > best[0]:
                best = (float(ratio[k]), m, int(bad[k]))
    if best is None:
        return ""
    _, m, k = best
    return (
        f"; worst: {_probe_text(m, k)}, analytic {m.analytic[k]:.4g} vs numeric "
        f"{m.numeric[k]:.4g} (tolerance {m.tolerance[k]:.1e})"
    )


def _probe_text(m: Measured, k: int) -> str:
    spec = m.probes.spec
    label = int(m.probes.labels[k])
    if m.probes.is_entries:
        return spec.label(spec.index(label))
    return f"{m.probes.kind} {label}"


def _list(items: list[Any], total: int) -> str:
    """The first few of ``total`` items: "[0, 1], [2, 3] and 7 more"."""
    shown = ", ".join(str(list(i)) if isinstance(i, tuple) else str(i) for i in items[:_SHOWN])
    more = total - min(len(items), _SHOWN)
    return f"{shown} and {more} more" if more > 0 else shown


def _names(names: list[str]) -> str:
    """Names joined for a message: "W1, b1, W2 and 2 more"."""
    return _list(names, len(names))
