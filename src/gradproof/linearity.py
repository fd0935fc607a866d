"""What a backward got wrong beyond its values: it must be deterministic and linear in the
upstream gradient.

Contract: ``linearity_findings(products, who, upstream)`` takes the gradients one backward
returned for four upstream gradients (``Products``: u, u again, ``SCALE_PROBE`` * u and zero)
as float64 numpy arrays keyed by tensor name, and returns at most one finding per tensor. At
one upstream gradient a backward that ignores it looks like a gradient off by an odd constant,
or by no pattern at all; these products name the cause. Used by ``check_vjp`` and by the
PyTorch adapter (``upstream`` is the word each uses: "dout", "grad_output"), which add them
to their report with ``with_backward_findings``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gradproof.report import Finding, GradReport

# The upstream gradient is multiplied by this in the linearity probe: a negative non-unit
# factor also catches a backward that uses only the upstream's sign or magnitude.
SCALE_PROBE = -2.0

# Relative disagreement (to the largest entry) beyond which two products differ: a linear
# backward gives SCALE_PROBE * g up to rounding of sums reordered at most.
PROBE_RTOL = 1e-9

# For a gradient in a lower precision than float64: this many of its eps, relative.
LOW_PRECISION_ULPS = 64.0


@dataclass(frozen=True)
class Products:
    """A backward's gradients for four upstream gradients, each keyed by tensor name.

    Attributes
    ----------
    first, again : dict of str to ndarray
        For the upstream u, twice (from fresh forward passes).
    scaled : dict of str to ndarray
        For ``SCALE_PROBE * u``.
    zero : dict of str to ndarray or None
        For a zero upstream gradient, where it was taken.
    """

    first: Mapping[str, np.ndarray]
    again: Mapping[str, np.ndarray]
    scaled: Mapping[str, np.ndarray]
    zero: Mapping[str, np.ndarray] | None = None


def linearity_findings(products: Products, who: str, upstream: str) -> list[Finding]:
    """One finding per tensor whose backward is not deterministic, or not linear in the
    upstream gradient (see the module docstring)."""
    findings = []
    for name, g in products.first.items():
        again, scaled = products.again[name], products.scaled[name]
        zero = None if products.zero is None else products.zero[name]
        # A gradient in a low precision rounds each product on its own.
        scale = _largest(g, again, scaled, *(() if zero is None else (zero,))) * max(
            1.0, LOW_PRECISION_ULPS * _eps(g) / PROBE_RTOL
        )
        if not _close(again, g, scale):
            findings.append(_nondeterministic(name, g, again, who, upstream))
        elif not _close(scaled, SCALE_PROBE * g, scale):
            findings.append(_not_linear(name, g, scaled, zero, scale, who, upstream))
    return findings


def with_backward_findings(
    report: GradReport, before: list[Finding], backward: list[Finding]
) -> GradReport:
    """The report with notes made before the check and the backward's findings added; a
    tensor with a backward finding keeps that one only (the diagnosis at one upstream gradient
    would name a factor that holds for no other)."""
    explained = {name for f in backward if f.is_bug for name in f.tensors}
    kept = [f for f in report.findings if not (f.is_bug and explained & set(f.tensors))]
    return dataclasses.replace(report, findings=[*before, *backward, *kept])


def _nondeterministic(
    name: str, g: np.ndarray, again: np.ndarray, who: str, upstream: str
) -> Finding:
    difference = float(np.max(np.abs(again - g)))
    return Finding(
        "nondeterministic", (name,),
        f"two backward passes of {who} for the same inputs and {upstream} gave gradients of "
        f"{name} that differ by up to {difference:.2e}: backward depends on something besides "
        "its inputs and saved values (hidden state, unseeded randomness, nondeterministic kernels)",
        details={"max_difference": difference},
    )


def _not_linear(
    name: str, g: np.ndarray, scaled: np.ndarray, zero: np.ndarray | None, scale: float,
    who: str, upstream: str,
) -> Finding:
    # The factor backward applied when the upstream was scaled by SCALE_PROBE (least squares).
    norm = float(np.sum(g * g))
    factor = float(np.sum(g * scaled)) / norm if norm else float("nan")
    details = {"cause": "upstream_scale_ignored", "probe": SCALE_PROBE, "factor": factor}
    ignored = abs(factor - 1.0) < 1e-6
    if not ignored and zero is not None and not _close(zero, np.zeros_like(zero), scale):
        offset = float(np.max(np.abs(zero)))
        details.update(cause="affine_in_upstream", offset=offset)
        return Finding(
            "scaled", (name,),
            f"the backward of {who} is affine rather than linear in {upstream}: with {upstream} "
            f"zero it still returns a gradient of {name} as large as {offset:.3g} (it must be "
            f"zero), and with {upstream} multiplied by {SCALE_PROBE:g} the gradient changed by a "
            f"factor {factor:.3g}: something is added to {upstream} where it should multiply it",
            fix=(
                f"the chain rule multiplies: `{upstream} * local_derivative`, not "
                f"`{upstream} + local_derivative`"
            ),
            details=details,
        )
    if ignored:
        behaviour = f"did not change at all: backward ignores {upstream}'s values"
    else:
        behaviour = f"changed by a factor {factor:.3g} instead"
    return Finding(
        "scaled", (name,),
        f"the backward of {who} does not scale with {upstream}: with {upstream} multiplied "
        f"by {SCALE_PROBE:g} the gradient of {name} should be {SCALE_PROBE:g} times as large, but "
        f"it {behaviour}, so its values are off by a factor that depends on {upstream}",
        fix=(
            f"multiply the local derivative by {upstream} in backward (the chain rule): "
            f"`return {upstream} * d_out_d_{name}`, not `d_out_d_{name}` alone"
        ),
        details=details,
    )


def _eps(array: np.ndarray) -> float:
    return float(np.finfo(array.dtype).eps) if array.dtype.kind == "f" else 0.0


def _largest(*arrays: np.ndarray) -> float:
    return max(float(np.max(np.abs(a))) if a.size else 0.0 for a in arrays)


def _close(a: np.ndarray, b: np.ndarray, scale: float) -> bool:
    if not a.size:
        return True
    return float(np.max(np.abs(a - b))) <= PROBE_RTOL * scale
