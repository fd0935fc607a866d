"""Rich rendering of a ``GradReport`` for the subcommands that print one (compare, demo).

``print_report(console, report, aliases)`` prints the per-tensor table and the findings, each
with its fix; ``aliases`` maps gradproof's tensor names to the user's own (``W1`` ->
``encoder``), shown next to them. Nothing here computes anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradproof.report import Finding, GradReport, TensorResult


def tensor_label(name: str, aliases: Mapping[str, str]) -> str:
    """``"W1 (encoder)"`` when the user calls W1 something else, else ``"W1"``."""
    return f"{name} ({aliases[name]})" if aliases.get(name, name) != name else name


def finding_label(finding: Finding, aliases: Mapping[str, str]) -> str:
    """The tensors of a finding, labelled: ``"W1 (encoder) <-> W2 (decoder)"`` for a pair."""
    return " <-> ".join(tensor_label(name, aliases) for name in finding.tensors)


def report_table(report: GradReport, aliases: Mapping[str, str]) -> Table:
    """One row per tensor: shape, entries checked, worst errors, verdict."""
    table = Table(show_edge=False, header_style="bold")
    for column in ("tensor", "shape", "checked", "max abs err", "max rel err", "verdict"):
        table.add_column(column, justify="left" if column in ("tensor", "verdict") else "right")
    for result in report.tensors:
        table.add_row(
            tensor_label(result.name, aliases),
            "x".join(str(n) for n in result.shape),
            _checked(result),
            f"{result.max_abs_error:.2e}",
            f"{result.max_rel_error:.2e}",
            Text("ok", style="green") if result.passed else Text("FAIL", style="bold red"),
        )
    return table


def print_findings(console: Console, findings: list[Finding], aliases: Mapping[str, str]) -> None:
    """Each finding as ``[kind] tensor: message`` with its fix lines under it."""
    for finding in findings:
        line = Text()
        line.append(f"[{finding.kind}] ", style="bold red" if finding.is_bug else "yellow")
        line.append(f"{finding_label(finding, aliases)}: ", style="bold")
        line.append(finding.message)
        console.print(line)
        numpy_line, matlab_line = finding.details.get("numpy"), finding.details.get("matlab")
        if numpy_line and matlab_line:
            console.print(Text("    fix (numpy):  ", style="dim") + Text(numpy_line, style="cyan"))
            console.print(Text("    fix (MATLAB): ", style="dim") + Text(matlab_line, style="cyan"))
        elif finding.fix:
            console.print(Text("    fix: ", style="dim") + Text(finding.fix, style="cyan"))


def print_report(
    console: Console, report: GradReport, aliases: Mapping[str, str] | None = None
) -> None:
    """The table, the verdict and the findings."""
    aliases = aliases or {}
    console.print(report_table(report, aliases))
    verdict = Text("PASSED", style="bold green") if report.passed else Text("FAILED", style="bold red")
    checked = sum(t.checked for t in report.tensors)
    total = sum(t.size for t in report.tensors)
    console.print(
        Text("verdict: ") + verdict
        + Text(f"  ({checked:,} of {total:,} entries checked one by one, {report.seconds:.2f} s)")
    )
    print_findings(console, report.findings, aliases)


def print_json(console: Console, data: Any) -> None:
    """``data`` as indented JSON, unwrapped and unstyled, so that it parses as printed."""
    console.print(json.dumps(data, indent=2), soft_wrap=True, markup=False, highlight=False)


def _checked(result: TensorResult) -> str:
    text = f"{result.checked:,}/{result.size:,}"
    if result.probes:
        text += f" +{result.probes}"
    return text
