"""A gradient that lacks the contribution through one of several outputs: ``missing_term``.

Contract: ``with_missing_outputs(report, n_outputs, recheck, upstream)`` takes the report of a
check of J = sum_k <u_k, out_k> (``check_vjp``, the PyTorch adapter) and ``recheck(k)``, which
checks the same analytic gradient against J without output k's term (u_k set to zero). A
tensor that failed the report but passes a recheck lacks exactly the path through that
output: it gets a ``missing_term`` finding in place of its other bug findings. Costs one more
check per output, and only when a tensor failed and there are several outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gradproof.report import Finding, GradReport


def with_missing_outputs(
    report: GradReport, n_outputs: int, recheck: Callable[[int], GradReport], upstream: str
) -> GradReport:
    """The report, each failing tensor that one recheck passes named ``missing_term``."""
    failing = [t.name for t in report.tensors if not t.passed and t.checked]
    if n_outputs < 2 or not failing:
        return report
    findings = list(report.findings)
    for k in range(n_outputs):
        rechecked = {t.name: t for t in recheck(k).tensors}
        for name in [n for n in failing if n in rechecked and rechecked[n].passed]:
            failing.remove(name)
            findings = [f for f in findings if not (f.is_bug and name in f.tensors)]
            findings.append(Finding(
                "missing_term", (name,),
                f"the gradient of {name} lacks the contribution through output {k}: with output "
                f"{k}'s {upstream} set to zero, finite differences match it (max rel err "
                f"{rechecked[name].max_rel_error:.1e}), so backward drops the path from {name} "
                f"to output {k}",
                fix=f"add to the gradient of {name} the term that flows back from output {k}",
                details={"output": k},
            ))
    return dataclasses.replace(report, findings=findings)
