"""Results of a gradient check: one record per tensor, one per finding, and the report.

A ``GradReport`` is plain data. It carries, per tensor, the errors, the worst entry, the step
and the finite-difference error estimate that decided the verdict, and a list of ``Finding``
records whose ``kind`` comes from the fixed vocabulary ``FINDING_KINDS``. ``to_dict()`` gives
the JSON shape other code relies on; ``str(report)`` gives a compact table followed by the
findings, never two full columns of numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gradproof.errors import GradientMismatch

# Finding kind -> what it means (the vocabulary is part of the API contract).
FINDING_KINDS: dict[str, str] = {
    "transposed": "the gradient is the transpose of the true one",
    "unroll_order": "a flat vector was unrolled in the other order (C vs Fortran / MATLAB)",
    "scaled": "the gradient is the true one times a constant",
    "sign_flipped": "the gradient has the wrong sign",
    "swapped": "two tensors' gradients are exchanged",
    "missing_l2": "the weight-decay term lambda*W is missing (or extra)",
    "zero": "the gradient is all zeros while the true one is not",
    "partial": "only some rows / columns / entries are wrong",
    "wrong_activation_derivative": "an activation's derivative is wrong",
    "wrong_backprop_matrix": "the error was sent back through the wrong weight matrix",
    "kink": "a finite-difference step crossed a non-differentiable point: not a bug",
    "nondeterministic": "the loss gives different values for the same parameters",
    "precision": "the arithmetic precision, not the math, explains the difference",
    "mismatch": "wrong, with no recognised pattern",
}

# Kinds that describe the check's circumstances rather than a bug in the gradient.
NOTE_KINDS = frozenset({"kink", "precision", "nondeterministic"})


@dataclass(frozen=True)
class Finding:
    """One thing the check found.

    Parameters
    ----------
    kind : str
        One of ``FINDING_KINDS``.
    tensor : str
        The tensor concerned; two names joined by ``" <-> "`` for ``swapped``.
    message : str
        One or two sentences: what is wrong, the evidence, and where to look.
    evidence : float or None
        For a diagnosis: the relative error left after applying the hypothesis (small = it fits).
    fix : str or None
        A one-line fix in code terms, when one can be given.
    details : dict
        Extra JSON-ready data (an estimated factor, the wrong rows, ...).
    """

    kind: str
    tensor: str
    message: str
    evidence: float | None = None
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(
                f"unknown finding kind {self.kind!r}; expected one of {sorted(FINDING_KINDS)}"
            )

    @property
    def is_bug(self) -> bool:
        """True for findings that describe a wrong gradient (not kink / precision / nondeterminism)."""
        return self.kind not in NOTE_KINDS

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "tensor": self.tensor, "message": self.message}
        if self.evidence is not None:
            out["evidence"] = _json_float(self.evidence)
        if self.fix is not None:
            out["fix"] = self.fix
        if self.details:
            out["details"] = self.details
        return out


@dataclass
class TensorResult:
    """The verdict on one tensor.

    Attributes
    ----------
    name : str
        The tensor's name (``"W2"``, ``"enc.W"``, ``"[0]"`` ...).
    shape : tuple of int
        The parameter's shape.
    checked : int
        How many entries were compared one by one (0 when only projections were checked).
    max_abs_error, max_rel_error : float
        Largest ``|analytic - numeric|`` and largest ``|a - n| / max(|a|, |n|)`` seen.
    worst_index : tuple of int or None
        The entry with the largest error relative to its tolerance.
    passed : bool
        Whether every comparison was within tolerance.
    step : float or None
        The finite-difference step used (the largest, where steps vary by entry).
    error_estimate : float or None
        The finite-difference error estimate at the worst entry (truncation + rounding).
    tolerance : float or None
        The tolerance applied at the worst entry.
    probes : int
        How many directional / row / column probes were compared, beyond single entries.
    excluded : int
        Entries or probes left out because the loss has a kink at the point itself (see the
        ``kink`` finding).
    taylor_order : float or None
        In a Taylor test: the fitted order of the remainder (2 when right, 1 when wrong; None
        when the remainder stayed at rounding level).
    detectable : float or None
        The smallest error in one entry that the comparisons made are sure to catch, wherever
        it lies among the entries they cover (in the gradient's units): each comparison's
        tolerance over that entry's weight in it, the best comparison per entry, the worst
        entry. Entries no comparison covers (not sampled, excluded at a kink) are not counted
        and can hide an error of any size. None when nothing was compared.
    detectable_relative : float or None
        ``detectable`` over the tensor's largest |gradient| entry: above about 1e-3 the check
        is coarse (a float32 loss, a Taylor direction over many entries).
    """

    name: str
    shape: tuple[int, ...]
    checked: int
    max_abs_error: float
    max_rel_error: float
    passed: bool
    worst_index: tuple[int, ...] | None = None
    step: float | None = None
    error_estimate: float | None = None
    tolerance: float | None = None
    probes: int = 0
    excluded: int = 0
    taylor_order: float | None = None
    detectable: float | None = None
    detectable_relative: float | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "checked": int(self.checked),
            "max_abs_error": _json_float(self.max_abs_error),
            "max_rel_error": _json_float(self.max_rel_error),
            "passed": bool(self.passed),
            "worst_index": None if self.worst_index is None else list(self.worst_index),
            "step": _json_float(self.step),
            "error_estimate": _json_float(self.error_estimate),
            "tolerance": _json_float(self.tolerance),
            "probes": int(self.probes),
            "excluded": int(self.excluded),
            "taylor_order": _json_float(self.taylor_order),
            "detectable": _json_float(self.detectable),
            "detectable_relative": _json_float(self.detectable_relative),
        }


@dataclass
class GradReport:
    """The outcome of a gradient check.

    Attributes
    ----------
    tensors : list of TensorResult
        One result per parameter tensor, in the order of the parameters.
    findings : list of Finding
        Diagnoses and notes, each naming its tensor.
    mode : str
        How the check was made (``"full"``, ``"sample"``, ``"directional"``, ``"taylor"``,
        ``"auto"``, ``"exact"``).
    partial : bool
        True when the check was interrupted and only part of it was done (it then never
        counts as passed: what was not checked is not proven).
    seconds : float
        Wall time of the check.
    loss_evaluations : int
        How many times the loss was evaluated.
    rule : str
        The tolerance rule the comparisons used, in words.
    """

    tensors: list[TensorResult]
    findings: list[Finding] = field(default_factory=list)
    mode: str = "full"
    partial: bool = False
    seconds: float = 0.0
    loss_evaluations: int = 0
    rule: str = ""

    @property
    def passed(self) -> bool:
        """True when the check finished, every tensor passed and no finding describes a bug."""
        return (
            not self.partial
            and all(t.passed for t in self.tensors)
            and not any(f.is_bug for f in self.findings)
        )

    def tensor(self, name: str) -> TensorResult:
        """Return the result for the tensor called ``name``."""
        for result in self.tensors:
            if result.name == name:
                return result
        raise KeyError(f"no tensor named {name!r}; the report has {[t.name for t in self.tensors]}")

    def findings_of(self, kind: str) -> list[Finding]:
        """Return the findings of one kind."""
        return [f for f in self.findings if f.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``passed``, ``tensors``, ``findings`` and a few more keys."""
        return {
            "passed": self.passed,
            "tensors": [t.to_dict() for t in self.tensors],
            "findings": [f.to_dict() for f in self.findings],
            "mode": self.mode,
            "partial": self.partial,
            "seconds": round(self.seconds, 6),
            "loss_evaluations": int(self.loss_evaluations),
            "rule": self.rule,
        }

    def __str__(self) -> str:
        return format_report(self)

    def assert_ok(self) -> None:
        """Raise ``GradientMismatch`` with this report as its message unless it passed."""
        if not self.passed:
            raise GradientMismatch(str(self))


def format_report(report: GradReport) -> str:
    """Render a report as a plain-text table followed by its findings."""
    header = ("tensor", "shape", "checked", "max abs err", "max rel err", "worst at", "verdict")
    rows = [
        (
            t.name,
            "x".join(str(n) for n in t.shape) or "scalar",
            _checked_text(t),
            f"{t.max_abs_error:.2e}",
            f"{t.max_rel_error:.2e}",
            "-" if t.worst_index is None else str(list(t.worst_index)),
            _verdict_text(t),
        )
        for t in report.tensors
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    if report.partial:
        failed = any(not t.passed for t in report.tensors) or any(f.is_bug for f in report.findings)
        verdict = "FAILED" if failed else "INCOMPLETE"
        verdict += " (partial: interrupted before the check finished)"
    else:
        verdict = "PASSED" if report.passed else "FAILED"
    lines.insert(0, f"gradient check ({report.mode}): {verdict}")
    took = f"{report.seconds:.2f} s"
    if report.loss_evaluations:
        took = f"{report.loss_evaluations} loss evaluations in {took}"
    footer = [took]
    if report.rule:
        footer.append(f"tolerance: {report.rule}")
    lines.append("; ".join(footer))
    for finding in report.findings:
        lines.append(f"- [{finding.kind}] {finding.tensor}: {finding.message}")
        if finding.fix:
            lines.append(f"    fix: {finding.fix}")
    return "\n".join(lines)


def _checked_text(result: TensorResult) -> str:
    text = f"{result.checked}/{result.size}"
    if result.probes:
        text += f" +{result.probes} probe{'s' if result.probes != 1 else ''}"
    if result.excluded:
        text += f" ({result.excluded} excluded)"
    if result.taylor_order is not None:
        text += f" (order {result.taylor_order:.2f})"
    return text


def _verdict_text(result: TensorResult) -> str:
    if not result.passed:
        return "FAIL"
    if result.checked == 0 and result.probes == 0 and result.size:
        return "not checked"
    return "ok"


def _json_float(value: float | None) -> float | None | str:
    if value is None:
        return None
    value = float(value)
    if math.isfinite(value):
        return value
    return str(value)
