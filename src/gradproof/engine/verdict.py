"""Verdicts: per-tensor results and the findings' texts, from the measurements of a check.

Contract: pure functions from ``probes.Measured`` / ``taylor.TaylorResult`` records to
``report.TensorResult`` and ``report.Finding``. A tensor's worst comparison is the one
furthest beyond its own tolerance; messages name the pattern, the worst entries with their
indices and the tolerance, never whole columns of numbers.
"""

from __future__ import annotations

from collections.abc import Callable
import math
from typing import Any

import numpy as np

from gradproof.diagnose import diagnose
from gradproof.finite_diff import KINK_SHRINK, ROUNDING_GROWTH, relative_error
from gradproof.params import TensorSpec
from gradproof.engine.probes import (
    EXCLUDED,
    FAILED,
    PASSED,
    UNKNOWN,
    Measured,
    ProbeSet,
    ranges,
)
from gradproof.report import Finding, TensorResult
from gradproof.engine.taylor import TaylorResult

# Indices a message names before "and N more", and at most how many a finding's details list.
_SHOWN = 5
_DETAILED = 100


def measured_result(spec: TensorSpec, measured: list[Measured], largest: float) -> TensorResult:
    """One tensor's verdict from all its probes; the worst comparison is the one furthest
    beyond its tolerance. ``largest`` is the tensor's largest |analytic gradient| entry, the
    scale of ``TensorResult.detectable_relative``."""
    excluded = sum(int(np.count_nonzero(m.status == EXCLUDED)) for m in measured)
    kept = [(m, mask) for m, mask in ((m, m.compared) for m in measured) if mask.any()]
    compared, pick = [m for m, _ in kept], [mask for _, mask in kept]
    counts = [(m.probes.is_entries, int(np.count_nonzero(mask))) for m, mask in kept]
    checked = sum(count for is_entries, count in counts if is_entries)
    probes = sum(count for is_entries, count in counts if not is_entries)
    verified = _verified(measured, checked + probes)
    if not compared:
        return TensorResult(spec.name, spec.shape, 0, 0.0, 0.0, True, excluded=excluded,
                            verified=verified)
    analytic = _joined([m.analytic for m in compared], pick)
    numeric = _joined([m.numeric for m in compared], pick)
    tolerance = _joined([m.tolerance for m in compared], pick)
    failed = _joined([m.status for m in compared], pick) == FAILED
    error = numeric - analytic
    np.abs(error, out=error)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = error / tolerance
    positive = tolerance > 0
    if not positive.all():  # a zero (or NaN) tolerance: any error at all is beyond it
        unset = ~positive
        ratio[unset] = np.where(error[unset] > 0, np.inf, 0.0)
    worst = int(np.argmax(ratio))
    # Below its tolerance a derivative is not resolved, and its relative error is only noise.
    # The scale and the relative errors reuse the ratios' memory: a pass less per fresh array.
    scale = np.abs(analytic, out=ratio)
    np.maximum(scale, np.abs(numeric), out=scale)
    resolved = np.greater(scale, tolerance)
    resolved |= failed
    relative = _largest(relative_error(error, scale, out=scale), resolved, 0.0)
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
        verified=verified,
        **_detectable(_entry_thresholds(spec, measured), largest),
    )


def _verified(measured: list[Measured], compared: int) -> bool:
    """Whether a tensor with ``compared`` probes compared was verified: no more of its probes
    excluded at kinks than compared (not counting those split into parts measured on their
    own). A tensor passed on a few probes while most were excluded would claim what the check
    never measured."""
    excluded = sum(int(np.count_nonzero((m.status == EXCLUDED) & ~m.split)) for m in measured)
    return excluded <= compared


def _entry_thresholds(spec: TensorSpec, measured: list[Measured]) -> np.ndarray:
    """Per entry of the tensor (flat, in its unrolling order), the smallest error in that entry
    alone that some comparison catches: an error e in entry i moves probe k's directional
    derivative by e·v_ik, so it shows once |e| > tolerance_k / |v_ik| (inf: no comparison
    covers the entry, or only one decided by a one-sided slope at a kink). Where the loss has
    kinks, a failure must be confirmed at a smaller step: ``Measured.floor`` is what that
    step resolves. One set of entry probes, every entry compared by its central difference
    (an exact check), gives its own thresholds in the probes' order: no copies of a large
    tensor's."""
    only = measured[0] if len(measured) == 1 else None
    if (only and only.probes.is_entries and only.probes.count == spec.size
            and only.compared.all() and not only.one_sided.any()):
        return np.maximum(only.tolerance, only.floor)
    best = np.full(spec.size, np.inf)
    for m in measured:
        # A probe that agreed with one one-sided slope at a kink would be excluded, not failed,
        # with an error between the slopes: it promises nothing.
        keep = m.compared & ~m.one_sided
        if not keep.any():
            continue
        threshold = np.maximum(m.tolerance, m.floor)
        probes = m.probes
        if probes.is_entries:
            local = probes.labels[keep] - spec.offset
            best[local] = np.minimum(best[local], threshold[keep])
            continue
        # Random directions share their support, rows (or columns) of one set do not.
        groups = [[k] for k in np.flatnonzero(keep)] if probes.kind == "direction" else [
            slice(None) if keep.all() else np.flatnonzero(keep)
        ]
        for which in groups:
            local, per_entry = _line_thresholds(probes, which, threshold[which])
            best[local] = np.minimum(best[local], per_entry, out=per_entry)
    return best


def _line_thresholds(
    probes: ProbeSet, which: list[int] | slice | np.ndarray, threshold: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The tensor-local positions the probes ``which`` move and, at each, the probe's
    ``threshold`` over |v|: both fresh arrays. A whole set, or one probe, is a block of its
    arrays, and probes of one length (rows, columns) are divided row by row: no index array
    the size of their supports to gather with, nor a repeated threshold to divide by."""
    start = probes.start
    if isinstance(which, slice):  # the whole set
        pick, lengths = which, np.diff(start)
    elif len(which) == 1:
        k = which[0]
        pick, lengths = slice(int(start[k]), int(start[k + 1])), np.diff(start[k : k + 2])
    else:
        lengths = np.diff(start)[which]
        pick = ranges(start[which], lengths)
    per_entry = np.abs(probes.values[pick])
    with np.errstate(divide="ignore"):
        if lengths.min() == lengths.max():
            block = per_entry.reshape(lengths.size, -1)  # (probes, length), a view
            np.divide(threshold[:, None], block, out=block)
        else:
            np.divide(np.repeat(threshold, lengths), per_entry, out=per_entry)
    return probes.positions[pick] - probes.spec.offset, per_entry


# A wrong entry that fails its first step is judged again after a second one, whose tolerance
# adds the truncation estimate |e(h) - e(2h)| / 3 (about half the rounding tolerance) to 1.5
# times the rounding: up to about twice the first step's tolerance, with margin.
DETECTION_MARGIN = 3.0


def _detectable(thresholds: np.ndarray, largest: float) -> dict[str, float | None]:
    """``TensorResult.detectable`` and ``detectable_relative`` from the entries' thresholds:
    the worst covered entry's, times ``DETECTION_MARGIN``."""
    worst = _largest(thresholds, np.isfinite(thresholds), -math.inf)
    if worst == -math.inf:  # no entry covered
        return {"detectable": None, "detectable_relative": None}
    detectable = DETECTION_MARGIN * worst
    relative = detectable / largest if largest > 0 else math.inf
    return {"detectable": detectable, "detectable_relative": relative}


def _largest(values: np.ndarray, where: np.ndarray, initial: float) -> float:
    """``np.max(values, where=where, initial=initial)``, without numpy's masked reduction
    where every entry counts (about 40x slower than the plain one on a large tensor), and
    from the kept entries where some do not (3x)."""
    if where.all():
        return float(np.max(values, initial=initial))
    return float(np.max(values[where], initial=initial))


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
        count = int(np.count_nonzero(p))
        if flat < count:
            # Every probe of a set compared (an exact check): no index array of its size.
            return m, flat if count == p.size else int(np.flatnonzero(p)[flat])
        flat -= count
    raise IndexError(flat)


def taylor_result(spec: TensorSpec, results: list[TaylorResult], largest: float) -> TensorResult:
    """One tensor's verdict from its Taylor directions. An error e in one entry changes the
    directional derivative along v by e·v_i only: the entry with the smallest weights sets
    ``detectable``, and in a large tensor that is coarse. The rounding bound of the fit stands
    for each direction's resolution; where curvature dominates the smallest usable step, the
    resolution is coarser still."""
    with np.errstate(divide="ignore"):
        thresholds = np.min([r.fit.bound / np.abs(r.direction) for r in results], axis=0)
    # A kink's remainder measures the loss's slope gap, and one beyond the Taylor regime
    # something further away, not an error of the gradient.
    told = [r for r in results if not (r.kink or r.beyond)]
    orders = [r.fit.order for r in told if r.fit.order is not None]
    errors = [abs(r.fit.derivative_error) for r in told] or [0.0]
    relative = [
        abs(r.fit.derivative_error) / max(abs(r.analytic), abs(r.analytic + r.fit.derivative_error))
        if r.fit.order is not None and r.fit.order < 1.5 and not (r.kink or r.beyond)
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
        **_detectable(thresholds, largest),
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


# A tensor whose worst covered entry resolves errors only above this share of its largest
# gradient entry is checked coarsely, and the report says so (a float32 loss resolves about
# 1e-2; a float64 one 1e-9 to 1e-6).
COARSE = 1e-3

# With a coarse black-box check: the sharper checks, as calls.
SHARPER_CALLS = (
    "evaluate the loss in float64 (float64 params, and no float32 arithmetic inside it): "
    "gradproof.check_gradient(loss, grad, {name: numpy.asarray(p, numpy.float64) for name, p in "
    "params.items()}); for gradproof's own networks, gradproof.check_model(model, params, x) "
    "checks every entry with float64 differences whatever the model's dtype"
)


def limits_findings(tensors: list[TensorResult], mode: str, sharper: str | None) -> list[Finding]:
    """What the check could not see: a ``precision`` note when some tensor's ``detectable``
    error is coarse (above ``COARSE`` of its largest entry), and in ``sample`` and ``taylor``
    mode what those modes leave out, whatever the precision; the note names every tensor it
    concerns. ``sharper`` is the call that checks more finely where the loss's precision is
    the limit (None: it is not, or there is none to suggest)."""
    coarse = [t for t in tensors if t.detectable_relative is not None
              and t.detectable_relative > COARSE]
    parts = []
    if mode == "sample":
        unseen = [t for t in tensors if 0 < t.checked < t.size]
        if unseen:
            parts.append(
                "sample mode compared only some entries ("
                + ", ".join(f"{t.checked} of {t.size} of {t.name}" for t in unseen)
                + "): an error in an entry it did not sample cannot be seen, whatever its size"
            )
    if mode == "taylor":
        parts.append(
            "taylor mode follows one random direction per tensor: an error in one entry shows "
            "only through that entry's weight in the direction, small in a large tensor"
        )
    if coarse:
        listed = ", ".join(
            f"{t.name} {t.detectable:.1e} ({t.detectable_relative:.0e} of its largest entry)"
            for t in coarse
        )
        parts.append(
            f"an error in one entry is sure to be caught only above {listed}; smaller errors "
            "can pass unseen"
        )
    if not parts or not tensors:
        return []
    concerned = coarse or [t for t in tensors if mode != "sample" or 0 < t.checked < t.size]
    fixes = []
    # What limits the check decides the call that sharpens it: the entries a mode leaves out
    # or weighs lightly, or (``sharper``) the precision the loss was evaluated in.
    if mode in ("sample", "taylor"):
        fixes.append("mode='full' (or 'auto') compares every entry, or a probe through each")
    elif coarse and not sharper and mode in ("auto", "directional"):
        # A probe through many entries weighs each lightly: each entry alone is the cure.
        fixes.append("mode='full' compares each entry on its own (two loss evaluations each)")
    if coarse and sharper:
        fixes.append(sharper)
    return [
        Finding(
            "precision",
            tuple(t.name for t in concerned),
            "what this check cannot see: " + "; ".join(parts),
            fix="; ".join(fixes) or None,
            details={"coarse": {t.name: t.detectable_relative for t in coarse}},
        )
    ]


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
        f"parameter's {spec.shape}; the tensor fails for its shape, and its values were "
        "compared after transposing back",
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
    # Only the probes that showed a kink or were excluded: clear failures that were merely
    # confirmed at smaller steps crossed nothing.
    noted = [(m, m.kink | (m.status == EXCLUDED)) for m in measured]
    noted = [(m, mask) for m, mask in noted if mask.any()]
    if noted:
        counts = _kink_counts(noted)
        parts = [text.format(n=n) for n, text in zip(counts.values(), _KINK_PARTS) if n]
        total = sum(counts.values())
        compared = sum(int(np.count_nonzero(m.compared)) for m in measured)
        verified = _verified(measured, compared)
        unverified = "" if verified else (
            f". {spec.name} could not be verified: more of its probes were excluded than the "
            f"{compared} compared, and an error in an excluded one goes unseen; a point where "
            "fewer units sit at their kinks (or, for a float32 loss, the loss in float64) "
            "checks it"
        )
        findings.append(
            Finding(
                "kink",
                (spec.name,),
                f"{total} finite-difference step(s) of {spec.name} crossed a kink of the "
                "loss (one-sided slopes disagree, as at a ReLU or abs at 0) or a feature "
                f"narrower than the step: {'; '.join(parts)}. E.g. {_kink_example(noted)}"
                + unverified,
                details={
                    "rechecked": total,
                    "excluded": counts["at_point"] + counts["unresolved"] + counts["split"],
                    "verified": verified,
                    "unverified_text": unverified,  # what a later check that verifies drops
                    **counts,
                },
            )
        )
    kinks = [r for r in taylor if r.kink]
    if kinks:
        even = sum(not r.entries for r in kinks)
        why = [
            f"{even} with a remainder that shrinks like h but is even in h (absent on one "
            "side, or of the same sign on both), which a wrong slope cannot give",
            f"{len(kinks) - even} whose odd remainder the entries explain: none of "
            f"{spec.name}'s entries fails on its own, and some cross a kink (several units "
            "at their kink at once can make the loss linear along a line with another slope)",
        ]
        findings.append(
            Finding(
                "kink",
                (spec.name,),
                f"along {len(kinks)} Taylor direction(s) of {spec.name} the loss has a kink at "
                f"the point: {'; '.join(w for w, n in zip(why, (even, len(kinks) - even)) if n)}"
                "; the gradient is a one-sided slope there (not a failure)",
                details={"count": len(kinks), "even": even, "entries": len(kinks) - even},
            )
        )
    beyond = [r for r in taylor if r.beyond]
    if beyond:
        orders = ", ".join(f"{r.fit.order:.2f}" for r in beyond)
        findings.append(
            Finding(
                "precision",
                (spec.name,),
                f"along {len(beyond)} Taylor direction(s) of {spec.name} the remainder does not "
                f"shrink like a wrong slope's (order {orders}, not 1): the steps clear of "
                "rounding lie beyond the Taylor regime (a kink or saturation further away than "
                "the smallest of them), so the direction says nothing of the slope at the "
                f"point; {spec.name}'s entries, measured on their own, all agree (not a failure)",
                details={"count": len(beyond), "orders": [r.fit.order for r in beyond]},
            )
        )
    return findings


# What became of the probes whose step crossed a kink, in the order the note names them; each
# probe falls in exactly one, so that the parts add up to the count the note starts with.
_KINK_PARTS = (
    "{n} agree when checked again with a step " + f"{KINK_SHRINK:g}" + "x (or more) smaller",
    "{n} agree with the one-sided slope on the side whose steps cross no kink",
    "{n} split into smaller probes, each judged on its own",
    "{n} excluded (the kink is at the point itself: the one-sided slopes differ and the "
    "analytic value lies between them, or, where several units sit at their kink at once, "
    "near them)",
    "{n} excluded as unresolved (the difference kept changing down to a step "
    + f"{KINK_SHRINK**3:g}" + "x smaller: the loss varies faster than any step tried)",
    "{n} disagree at every step and count as failures",
    "{n} pass on the larger step's verdict (a smaller step's rounding could not resolve "
    "their error)",
    "{n} fail on the larger step's verdict (a smaller step's rounding could not resolve "
    "their error)",
    "{n} left undecided (the check was interrupted)",
)


def _kink_counts(noted: list[tuple[Measured, np.ndarray]]) -> dict[str, int]:
    """How many noted probes fall in each part of ``_KINK_PARTS``."""
    counts = dict.fromkeys(
        ("agreed", "one_sided", "split", "at_point", "unresolved", "failed", "kept_passed",
         "kept_failed", "undecided"),
        0,
    )
    for m, mask in noted:
        rechecked = np.isfinite(m.slopes[:, 0])
        excluded = (m.status == EXCLUDED) & ~m.split
        parts = {
            "agreed": rechecked & (m.status == PASSED) & ~m.one_sided,
            "one_sided": m.one_sided & (m.status == PASSED),
            "split": m.split,
            "at_point": excluded & ~m.unresolved,
            "unresolved": excluded & m.unresolved,
            "failed": rechecked & (m.status == FAILED),
            "kept_passed": ~rechecked & (m.status == PASSED),
            "kept_failed": ~rechecked & (m.status == FAILED),
            "undecided": m.status == UNKNOWN,
        }
        for key, part in parts.items():
            counts[key] += int(np.count_nonzero(part & mask))
    return counts


def _kink_example(noted: list[tuple[Measured, np.ndarray]]) -> str:
    """One noted probe in words: its one-sided slopes at the smallest step where a smaller
    step measured it, else the values the larger steps measured."""
    for m, mask in noted:
        sloped = np.flatnonzero(mask & np.isfinite(m.slopes[:, 0]))
        if sloped.size:
            k = int(sloped[0])
            left, right = m.slopes[k]
            return (
                f"{_probe_text(m, k)}: slopes {left:.3g} (left) and {right:.3g} (right), "
                f"gradient {m.analytic[k]:.3g}"
            )
    m, mask = noted[0]
    k = int(np.flatnonzero(mask)[0])
    return (
        f"{_probe_text(m, k)}: finite difference {m.numeric[k]:.3g} at step {m.step[k]:.2g}, "
        f"gradient {m.analytic[k]:.3g}"
    )


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
            entries = _list([spec.label(i) for i in indices], bad.size)
            parts.append(f"entries {entries} ({bad.size} of {total})")
            details.setdefault("entries", []).extend([list(i) for i in indices])
        else:
            labels = [int(x) for x in m.probes.labels[bad[:_DETAILED]]]
            # "rows 0, 5 of W1": the form gradproof.terms rewrites in the user's terms.
            lines = f"{m.probes.kind}s {_list(labels, bad.size)} of {name}"
            parts.append(f"{lines} ({bad.size} of {total})")
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
        f"; worst: {_probe_text(m, k)}, gradient {m.analytic[k]:.4g} vs finite differences "
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
