"""Entries excluded at a kink, checked again at a point moved off the kinks.

Contract: ``recheck_at_moved_point(report, run, loss, grad, check, seed)`` takes the report of a
black-box check (``BlackBoxRun.report``), the run, the user's loss and gradient as given to
``check_gradient``, ``check(loss, gradient, params, seed)`` (``check_gradient`` in mode
``full`` with the check's own rule) and the seed; it returns the report with the entries
whose steps crossed a kink checked again at a moved point: each passing tensor that has such
entries confirmed there (a ``kink`` note) or failed (a ``mismatch``), the finding saying which
point was checked.

Why: where a relu unit sits exactly at its kink the loss has no derivative along the entries
that move it, and the one-sided slopes cannot tell a correct backprop value (relu'(0) = 0 by
convention) from one a little off: such entries are excluded, or accepted where the value
agrees with one one-sided slope. A wrong backprop formula is wrong at nearby points too. Where the gradient is a function of the point (``grad``
callable, or a loss that returns it), the excluded entries are checked at the point moved by
``MOVE`` of each tensor's scale in a seeded random direction (the entries whose steps
crossed a kink are checked again there): every entry moves, so the
pre-activations leave their exact zeros by far more than a finite-difference step, and the
user's code gives the gradient there. Gradients given as arrays hold no such evidence, and a
loss evaluated in float32 resolves no more at the moved point than at the given one: both
are left as they were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from gradproof.engine.probes import EXCLUDED
from gradproof.report import Finding, GradReport

# How far each entry moves, relative to its tensor's scale (its mean |entry|, or 1): far more
# than a float64 step (about 6e-6 relative), far less than anything that changes the network.
MOVE = 1e-3

# Salts the moved point's draws, apart from the check's own.
MOVED_STREAM = 0x6D6F7665

Check = Callable[[Callable[[np.ndarray], float], np.ndarray, np.ndarray, int], GradReport]


def recheck_at_moved_point(
    report: GradReport, run: Any, loss: Callable[..., Any], grad: Any, check: Check, seed: int,
) -> GradReport:
    """The report, with the entries whose steps crossed a kink checked at a moved point (see
    the module docstring); unchanged where there is nothing to check or no way to."""
    if grad is not None and not callable(grad):
        return report
    crossed = passing_crossed(report, run)
    if not crossed:
        return report
    layout = run.layout
    moved = _moved_point(layout, run.context.center, np.random.default_rng([MOVED_STREAM, seed]))
    tensors, findings = {t.name: t for t in report.tensors}, list(report.findings)
    evaluations = report.loss_evaluations
    try:
        raw = grad(layout.structure(moved.copy())) if callable(grad) else loss(
            layout.structure(moved.copy()))[1]
        gradient = layout.unroll(layout.match_gradient(raw)[0])
        checks = {name: check(_restricted_loss(loss, layout, moved, positions, grad is None),
                              gradient[positions], moved[positions].copy(), seed)
                  for name, positions in crossed.items()}
    except Exception as exc:  # the user's code at another point: its failure is not the check's
        findings.append(_not_checked(sorted(crossed), exc))
        return dataclasses.replace(report, findings=findings)
    for name, positions in crossed.items():
        sub = checks[name]
        evaluations += sub.loss_evaluations
        result = sub.tensors[0]
        checked = result.checked  # compared, the excluded not counted
        if result.passed:
            if checked:
                tensors[name] = dataclasses.replace(tensors[name], verified=True)
                findings = [verified_note(f) if f.kind == "kink" and f.tensors == (name,) else f
                            for f in findings]
                findings.append(_confirmed(name, checked, len(positions)))
            continue
        tensors[name] = dataclasses.replace(tensors[name], passed=False)
        findings.append(_failed(name, layout.spec(name), positions, result))
    return dataclasses.replace(report, tensors=[tensors[t.name] for t in report.tensors],
                               findings=findings, loss_evaluations=evaluations)


def passing_crossed(report: GradReport, run: Any) -> dict[str, np.ndarray]:
    """``crossed_entries`` of the tensors that pass, where the run is complete and its loss
    computes in float64 (a lower precision resolves no more away from the point); empty
    otherwise. A tensor that fails already has its diagnosis."""
    objective = run.objective
    if objective is None or run.partial or objective.fallback:
        return {}
    if objective.value_eps > float(np.finfo(np.float64).eps):
        return {}
    passing = {t.name for t in report.tensors if t.passed}
    return {name: at for name, at in crossed_entries(run).items() if name in passing}


def crossed_entries(run: Any) -> dict[str, np.ndarray]:
    """Each tensor's entry probes whose steps crossed a kink and that no smaller step
    confirmed: excluded, or decided by a one-sided slope; their positions in the flat
    point."""
    found = {}
    for spec in run.layout.specs:
        positions = [m.probes.positions[((m.status == EXCLUDED) | m.one_sided) & ~m.split]
                     for m in run.measured.get(spec.name, []) if m.probes.is_entries]
        if positions and (merged := np.unique(np.concatenate(positions))).size:
            found[spec.name] = merged
    return found


def _moved_point(layout: Any, center: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    moved = center.copy()
    for spec in layout.specs:
        piece = center[spec.span]
        scale = float(np.mean(np.abs(piece))) if piece.size else 0.0
        moved[spec.span] += MOVE * (scale or 1.0) * rng.standard_normal(piece.size)
    return moved


def _restricted_loss(loss: Callable[..., Any], layout: Any, moved: np.ndarray,
                     positions: np.ndarray, pair: bool) -> Callable[[np.ndarray], float]:
    """The user's loss as a function of the entries at ``positions`` alone, the others held
    at the moved point."""
    def restricted(values: np.ndarray) -> float:
        full = moved.copy()
        full[positions] = values
        out = loss(layout.structure(full))
        return out[0] if pair else out

    return restricted


_CROSSED = "whose steps crossed a kink (excluded, or decided by a one-sided slope)"
_MOVED = (f"a point moved off the kinks (each entry by about {MOVE:g} of its tensor's mean "
          "|entry|, in a seeded random direction), with your gradient evaluated there")


def _confirmed(name: str, checked: int, crossed: int) -> Finding:
    return Finding(
        "kink", (name,),
        f"{checked} of the {crossed} entries of {name} {_CROSSED} were checked again at "
        f"{_MOVED}: they agree with finite differences",
        details={"moved": MOVE, "checked": checked, "crossed": crossed},
    )


def verified_note(note: Finding) -> Finding:
    """A tensor's kink note without its sentence on what could not be verified: the moved
    point verified it."""
    text = note.details.get("unverified_text", "")
    if not text:
        return note
    details = {**note.details, "verified": True, "unverified_text": ""}
    return dataclasses.replace(note, message=note.message.replace(text, ""), details=details)


def _not_checked(names: list[str], exc: Exception) -> Finding:
    return Finding(
        "kink", tuple(names),
        f"the entries {_CROSSED} were not checked again at a point moved off the kinks: "
        f"there your code raised {type(exc).__name__}: {exc}",
        details={"moved": MOVE, "error": f"{type(exc).__name__}: {exc}"},
    )


def _failed(name: str, spec: Any, positions: np.ndarray, result: Any) -> Finding:
    worst = None
    if result.worst_index is not None:
        worst = spec.index(int(positions[int(result.worst_index[0])]))
    where = "" if worst is None else f", the worst at {name}[{', '.join(map(str, worst))}]"
    return Finding(
        "mismatch", (name,),
        f"entries of {name} {_CROSSED} at the given point, where the loss has no derivative "
        f"along them, fail at {_MOVED}: max abs error {result.max_abs_error:.3g}{where}; a "
        "backprop formula that is wrong there is wrong at the given point too",
        fix=f"derive the gradient of {name} again; check the entries that feed units sitting "
        "at their kink (a relu's 0) at the given point",
        details={"moved": MOVE, "index": worst},
    )
