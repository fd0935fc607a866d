"""Rich rendering of a ``GradReport`` for the subcommands that print one (compare, demo).

``print_report(console, report)`` prints the per-tensor table and the findings, each with its
fix, a finding shared by several tensors once (``gradproof.report.group_findings``). A report
in the user's terms (``gradproof.terms.in_user_terms``) shows each tensor by the user's name
with gradproof's beside it (``encoder (W1)``). Nothing here computes anything.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradproof.report import Finding, GradReport, TensorResult, group_findings, labeller


def finding_label(finding: Finding, report: GradReport) -> str:
    """The tensors of a finding, labelled: ``"encoder (W1) <-> decoder (W2)"`` for a pair."""
    label = labeller(report)
    return " <-> ".join(label(name) for name in finding.tensors)


def report_table(report: GradReport) -> Table:
    """One row per tensor: shape, entries checked, worst errors, verdict."""
    labels = [result.label() for result in report.tensors]
    # Numbers never wrap; on a narrow terminal names and long verdicts do, at their spaces.
    # Positions are in the findings (and the JSON's worst_at): a column would crowd 80 columns.
    table = Table(show_edge=False, header_style="bold")
    table.add_column("tensor")
    for column in ("shape", "checked", "max abs err", "max rel err"):
        table.add_column(column, justify="right", no_wrap=True)
    longest_word = max((len(w) for r in report.tensors for w in r.verdict.split()), default=0)
    table.add_column("verdict", min_width=longest_word)
    for result, label in zip(report.tensors, labels):
        table.add_row(
            label,
            "x".join(str(n) for n in result.shape),
            _checked(result),
            f"{result.max_abs_error:.2e}",
            f"{result.max_rel_error:.2e}",
            Text(result.verdict, style=_VERDICT_STYLE.get(result.verdict, "bold red")),
        )
    return table


_VERDICT_STYLE = {"ok": "green", "not checked": "yellow", "unverified": "yellow"}


def print_findings(console: Console, report: GradReport) -> None:
    """Each finding as ``[kind] tensor: message`` with its fix lines under it; findings that
    say the same of several tensors once, naming them ("every tensor" where they are all)."""
    label = labeller(report)
    for group in group_findings(report.findings, [t.name for t in report.tensors]):
        line = Text()
        line.append(f"[{group.kind}] ", style="bold red" if group.is_bug else "yellow")
        line.append(f"{group.label(label)}: ", style="bold")
        line.append(group.message)
        console.print(line)
        if group.lines:
            numpy_line, matlab_line = group.lines
            console.print(Text("    fix (numpy):  ", style="dim") + Text(numpy_line, style="cyan"))
            console.print(Text("    fix (MATLAB): ", style="dim") + Text(matlab_line, style="cyan"))
        elif group.fix:
            console.print(Text("    fix: ", style="dim") + Text(group.fix, style="cyan"))
        if group.where:
            console.print(Text("    where: ", style="dim") + Text(group.where))


def print_report(console: Console, report: GradReport) -> None:
    """The table, the verdict and the findings."""
    console.print(report_table(report))
    verdict = Text("PASSED", style="bold green") if report.passed else Text("FAILED", style="bold red")
    checked = sum(t.checked for t in report.tensors)
    total = sum(t.size for t in report.tensors)
    console.print(
        Text("verdict: ") + verdict
        + Text(f"  ({checked:,} of {total:,} entries checked one by one, {report.seconds:.2f} s)")
    )
    print_findings(console, report)
    for result in report.tensors:
        if result.reason:
            console.print(Text(f"{result.label()} fails: ", style="bold red") + Text(result.reason))


def print_json(console: Console, data: Any) -> None:
    """``data`` as indented JSON, unwrapped and unstyled, so that it parses as printed."""
    console.print(json.dumps(data, indent=2), soft_wrap=True, markup=False, highlight=False)


def _checked(result: TensorResult) -> str:
    text = f"{result.checked:,}/{result.size:,}"
    if result.probes:
        text += f" +{result.probes}"
    return text
