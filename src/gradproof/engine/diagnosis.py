"""The one diagnosis step of a check: structural, then model-aware when the model is known.

Contract: ``diagnosis(findings, failing, measured, analytic, params, known)`` returns the
report's findings: those the check made so far (setup notes, kinks) and, for the failing
tensors, what explains them. Without a known model, ``gradproof.diagnose`` judges the
analytic gradient against the numeric one entry by entry (a ``mismatch`` localised by the
probes where nothing fits). With one (``KnownModel``: ``check_model`` knows the network the
gradient is meant for), ``gradproof.mistakes.diagnose_model`` judges the failing tensors, and
those the user gave in the transposed shape, against the model's independent reference
gradient (exact up to rounding, so a mistake is named by its residual) with the structural
hypotheses and the catalogue of backprop mistakes together; its findings replace the bug
findings the check made on those tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof.mistakes import diagnose_model, order_findings, reference_gradient, rounding_tolerance
from gradproof.nn.autoencoder import Autoencoder
from gradproof.params import ParamLayout
from gradproof.engine.probes import Measured
from gradproof.report import Finding
from gradproof.engine.taylor import TaylorResult
from gradproof.engine.verdict import diagnose_failing, mismatch_finding


@dataclass(frozen=True)
class KnownModel:
    """The network a gradient is meant for, as the user gave it."""

    model: Autoencoder
    params: Mapping[str, Any]
    x: Any
    grads: Mapping[str, Any] | None  # as given (a weight's may be transposed); None: the model's


def diagnosis(
    findings: list[Finding],
    failing: list[str],
    transposed: list[str],
    layout: ParamLayout,
    measured: Mapping[str, list[Measured]],
    taylor: Mapping[str, list[TaylorResult]],
    analytic: Mapping[str, np.ndarray],
    params: Mapping[str, np.ndarray],
    known: KnownModel | None,
) -> list[Finding]:
    """The findings of a check (see the module docstring).

    Parameters
    ----------
    findings : list of Finding
        What the check found before the verdicts (notes, kinks, transposed shapes).
    failing : list of str
        The tensors whose verdict failed.
    transposed : list of str
        The tensors whose gradient came in the transposed shape.
    layout : ParamLayout
    measured, taylor : dict of str to list
        The measurements of each tensor.
    analytic : dict of str to ndarray
        The gradient checked, in the parameters' shapes.
    params : dict of str to ndarray
        The point checked, named.
    known : KnownModel or None
        The model, when the check knows it.
    """
    if known is not None:
        judged = set(failing) | set(transposed)
        if not judged:
            return findings
        names = list(known.model.param_shapes())
        explained = _model_aware(findings, sorted(judged, key=names.index), known)
        # The model-aware diagnosis judges at the reference gradient's own tolerance: a tensor
        # that failed the check but is within it (a small error in a float32 gradient) would be
        # left without a word, so it gets the structural diagnosis from the measurements.
        covered = {name for f in explained if f.is_bug for name in f.tensors}
        unexplained = [name for name in failing if name not in covered]
        if not unexplained:
            return explained
        structural = _structural(unexplained, layout, measured, taylor, analytic, params)
        kept = [f for f in structural if set(f.tensors) <= set(unexplained)]
        return order_findings(explained + kept, names)
    if not failing:
        return findings
    return findings + _structural(failing, layout, measured, taylor, analytic, params)


def _structural(
    failing: list[str],
    layout: ParamLayout,
    measured: Mapping[str, list[Measured]],
    taylor: Mapping[str, list[TaylorResult]],
    analytic: Mapping[str, np.ndarray],
    params: Mapping[str, np.ndarray],
) -> list[Finding]:
    """``gradproof.diagnose`` on the failing tensors, against the numeric entries measured (a
    ``mismatch`` localised by the probes where nothing fits)."""
    numeric, tolerance = {}, {}
    for spec in layout.specs:
        values, tol = np.full(spec.size, np.nan), np.full(spec.size, np.nan)
        for m in measured.get(spec.name, ()):
            if m.probes.is_entries:
                compared = m.compared
                local = m.probes.labels[compared] - spec.offset
                values[local], tol[local] = m.numeric[compared], m.tolerance[compared]
        numeric[spec.name] = values.reshape(spec.shape, order=spec.order)
        tolerance[spec.name] = tol.reshape(spec.shape, order=spec.order)
    return diagnose_failing(
        failing, dict(analytic), numeric, dict(params), tolerance,
        lambda name: mismatch_finding(
            layout.spec(name), measured.get(name, []), taylor.get(name, [])
        ),
    )


def _model_aware(findings: list[Finding], judged: list[str], known: KnownModel) -> list[Finding]:
    """``diagnose_model`` on the judged tensors; their earlier bug findings give way to it."""
    model, params, x = known.model, known.params, known.x
    grads = model.loss_and_grad(params, x)[1] if known.grads is None else known.grads
    reference = reference_gradient(model, params, x)
    analytic = {name: np.asarray(grads[name]) for name in judged}
    explained = diagnose_model(
        model, params, x, analytic,
        {name: reference[name] for name in judged},
        {name: rounding_tolerance(reference[name], analytic[name]) for name in judged},
    )
    kept = [
        f for f in findings
        if not f.is_bug or not set(f.tensors) & set(judged)
    ]
    return order_findings(kept + explained, list(model.param_shapes()))
