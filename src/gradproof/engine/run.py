"""The state of one check and the one report builder.

Contract: a front door makes a ``Run`` (``BlackBoxRun`` or ``ExactRun``), whose setup fills
the layout, the analytic gradient, one list of ``probes.Measured`` per tensor and the notes
found on the way; ``run.report()`` turns whatever is there into a ``GradReport`` (one verdict
per tensor with the smallest error its comparisons are sure to catch, the kink notes, what the
check cannot see (``verdict.limits_findings``), then the one diagnosis step of
``engine.diagnosis``), also after an interrupt, when ``partial`` is set.
"""

from __future__ import annotations

import time

import numpy as np

from gradproof.engine.diagnosis import KnownModel, diagnosis
from gradproof.finite_diff import Rule
from gradproof.params import ParamLayout, TensorSpec
from gradproof.engine.probes import Measured
from gradproof.report import Finding, GradReport, TensorResult
from gradproof.engine.taylor import TaylorResult
from gradproof.engine.verdict import (
    gradient_precision_finding,
    kink_findings,
    limits_findings,
    measured_result,
    taylor_result,
)


class Run:
    """The state of one check, filled step by step so that an interrupt leaves a report."""

    mode = ""
    sharper: str | None = None  # a call that checks more finely when this one is coarse

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.started = time.perf_counter()
        self.partial = False
        self.layout: ParamLayout | None = None
        self.analytic: dict[str, np.ndarray] = {}
        self.transposed: list[str] = []
        self.measured: dict[str, list[Measured]] = {}
        self.taylor: dict[str, list[TaylorResult]] = {}
        self.findings: list[Finding] = []
        self.known: KnownModel | None = None

    @property
    def evaluations(self) -> int:
        """Loss evaluations (or perturbed points) spent so far."""
        raise NotImplementedError

    def point(self) -> dict[str, np.ndarray]:
        """The point checked, named, for the diagnosis."""
        raise NotImplementedError

    def report(self) -> GradReport:
        specs = [s for s in self.layout.specs if s.name in self.measured] if self.layout else []
        tensors = [self._result(spec) for spec in specs]
        findings = list(self.findings)
        for spec in specs:
            findings += kink_findings(spec, self.measured[spec.name], self.taylor.get(spec.name, []))
        findings += limits_findings(tensors, self.mode, self.sharper)
        failing = [t.name for t in tensors if not t.passed]
        if failing or self.transposed:
            findings = diagnosis(
                findings, failing, self.transposed, self.layout, self.measured, self.taylor,
                self.analytic, self.point(), self.known,
            )
        return GradReport(
            tensors=tensors,
            findings=findings,
            mode=self.mode,
            partial=self.partial,
            seconds=time.perf_counter() - self.started,
            loss_evaluations=self.evaluations,
            rule=self.rule.describe(),
        )

    def _result(self, spec: TensorSpec) -> TensorResult:
        # The scale of TensorResult.detectable_relative.
        analytic = self.analytic.get(spec.name)
        largest = float(np.max(np.abs(analytic), initial=0.0)) if analytic is not None else 0.0
        if self.taylor.get(spec.name):
            return taylor_result(spec, self.taylor[spec.name], largest)
        return measured_result(spec, self.measured[spec.name], largest)


def gradient_eps(dtype: np.dtype) -> float:
    """The machine epsilon of a gradient given in ``dtype`` (float64's for integers)."""
    return float(np.finfo(dtype).eps) if dtype.kind == "f" else float(np.finfo(np.float64).eps)


def is_low(dtype: np.dtype) -> bool:
    """A floating dtype narrower than float64."""
    return dtype.kind == "f" and dtype.itemsize < 8


def gradient_precision_findings(
    dtypes: dict[str, np.dtype], rounding: dict[str, float]
) -> list[Finding]:
    """A ``precision`` note for each gradient given in a low precision, with ``rounding``,
    its largest entry's rounding allowance."""
    return [
        gradient_precision_finding(name, dtype, rounding[name])
        for name, dtype in dtypes.items()
        if is_low(dtype)
    ]
