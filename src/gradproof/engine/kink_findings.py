"""The findings of the scans at kinks (``kink_scan.py``): the tensor's kink note once its
entries are verified or failed, and the mismatches of single entries and of circles."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from gradproof.engine.kink_cones import Cones
from gradproof.errors import InputError
from gradproof.params import TensorSpec
from gradproof.report import Finding

if TYPE_CHECKING:
    from gradproof.engine.kink_scan import Verdict


def scanned_note(note: Finding, verified: int, crossed: int, cones: Cones | None) -> Finding:
    """A tensor's kink note with what the scans verified."""
    message, details = note.message, {**note.details, "crossed": crossed}
    if cones is not None and cones.inside:
        message += (
            f". The {crossed} entries of {note.tensor} whose steps crossed a kink were checked "
            f"together on half circles around the point, where the gradient jumps at each of "
            f"the {cones.crossings} kink(s) a circle crosses: they are a gradient a correct code "
            "can give (each unit's derivative at its kink that of one side, the other, or "
            f"between), to within {float(np.max(cones.tolerance)):.2g}")
        details.update(scanned=crossed, kinks=cones.crossings,
                       cone_tolerance=float(np.max(cones.tolerance)))
    if verified and not (cones is not None and cones.inside):
        message += (
            f". {verified} of the {crossed} entries of {note.tensor} whose steps crossed a kink "
            "(excluded, or decided by a one-sided slope) were scanned along the entry at points "
            "moved a little off the point, where the kinks stacked at the point come apart: "
            "each value is one a correct gradient can take (the slope on one side plus some of "
            "those kinks' jumps, or half of them)")
        details.update(scanned=verified)
    return dataclasses.replace(note, message=message, details=details)


def failed_note(note: Finding, failed: int) -> Finding:
    """A tensor's kink note once the scans failed some of its entries."""
    text = note.details.get("unverified_text", "")
    return dataclasses.replace(
        note,
        message=f"{note.message.replace(text, '') if text else note.message}. Scanned along "
        f"the entry at points moved a little off the point, {failed} of them hold a value no "
        "correct gradient takes there (the mismatch below)",
        details={**note.details, "unverified_text": "", "scan_failed": failed},
    )


def stopped_note(name: str, exc: InputError) -> Finding:
    return Finding(
        "kink", (name,),
        f"the entries of {name} whose steps crossed a kink were not all checked near the point "
        f"(on circles around it, or along each entry at points moved a little off it): there "
        f"your loss failed: {exc}",
        details={"error": str(exc)},
    )


def entry_mismatch(spec: TensorSpec, failed: list[tuple[int, Verdict]],
                   gradient: np.ndarray) -> Finding:
    name = spec.name
    p, verdict = failed[0]
    index = _index(spec, p)
    here, moved, values = verdict.at_point, verdict.moved, verdict.values
    shown = ", ".join(f"{v:.6g}" for v in values[:8]) + (", ..." if values.size > 8 else "")
    jumps = ", ".join(f"{j:+.3g}" for j in moved.jumps) or "none"
    low, high = verdict.span
    if high > low:
        shown += f" (each plus anything from {low:.3g} to {high:.3g}: kinks that stay at the point)"
    others = f" ({len(failed)} entries in all)" if len(failed) > 1 else ""
    return Finding(
        "mismatch", (name,),
        f"{name}{index} is {gradient[p]:.6g}, which no correct gradient can be there{others}: "
        f"along that entry the loss's slope is {here.left:.6g} on the left and "
        f"{here.right:.6g} on the right of the point; at points moved a little off it the "
        f"kinks there come apart, with jumps of slope {jumps}, so a correct gradient takes "
        f"one of {shown} (the left slope plus some of the jumps or half of them, to within "
        f"{verdict.tolerance:.2g})",
        fix=_fix(name),
        details={"index": index, "values": [float(v) for v in values[:64]],
                 "jumps": [float(j) for j in moved.jumps], "span": [low, high],
                 "tolerance": verdict.tolerance,
                 "entries": len(failed)},
    )


def cones_mismatch(spec: TensorSpec, positions: np.ndarray, cones: Cones,
                  explained: tuple[int, float] | None, gradient: np.ndarray) -> Finding:
    name = spec.name
    if explained is None:
        worst = int(np.argmax(cones.residual / cones.tolerance))
        where = (f"no one entry explains it; the departure is largest at "
                 f"{name}{_index(spec, int(positions[worst]))}, "
                 f"{float(cones.residual[worst]):.3g} from the nearest such value (tolerance "
                 f"{float(cones.tolerance[worst]):.2g})")
    else:
        worst, change = explained
        where = (f"{name}{_index(spec, int(positions[worst]))} alone explains it: it is "
                 f"{float(gradient[positions[worst]]):.6g}, and changed by {change:+.3g} the "
                 "entries would be such a gradient")
    return Finding(
        "mismatch", (name,),
        f"{name}'s {positions.size} entries whose steps crossed a kink are, taken together, no "
        f"gradient a correct code gives at this point: on half circles around the point the "
        f"gradient over those entries jumps at each of {cones.crossings} kink(s), and a "
        "correct gradient (each unit's derivative at its kink that of one side, the other, or "
        f"between) is the gradient on one side plus part of each jump; {where}. Two circles "
        "through different directions crossed the same kinks and agree",
        fix=_fix(name),
        details={"index": _index(spec, int(positions[worst])), "entries": int(positions.size),
                 "kinks": cones.crossings, "explained": explained is not None,
                 "distance": float(cones.residual[worst]),
                 "tolerance": float(cones.tolerance[worst])},
    )


def _fix(name: str) -> str:
    return (f"derive the gradient of {name} again; check the entries that feed units sitting "
            "at their kink (a relu's 0) at the given point, and the activation's derivative at "
            "exactly its kink: it must be one side's slope or between them (a leaky relu's "
            "`(z > 0) + alpha * (z < 0)` is 0 there, below both; `np.where(z > 0, 1, alpha)` "
            "is not)")


def _index(spec: TensorSpec, p: int) -> str:
    return "[" + ", ".join(map(str, spec.index(p))) + "]"
