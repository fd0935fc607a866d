"""Rich rendering of a ``GradReport`` for the subcommands that print one (compare, demo).

``print_report(console, report, aliases)`` prints the per-tensor table and the findings, each
with its fix, a finding shared by several tensors once (``gradproof.report.group_findings``);
``aliases`` maps gradproof's tensor names to the user's own (``W1`` ->
``encoder``), shown next to them. Nothing here computes anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradproof.report import Finding, GradReport, TensorResult, group_findings


def tensor_label(name: str, aliases: Mapping[str, str]) -> str:
    """``"W1 (encoder)"`` when the user calls W1 something else, else ``"W1"``."""
    return f"{name} ({aliases[name]})" if aliases.get(name, name) != name else name


def finding_label(finding: Finding, aliases: Mapping[str, str]) -> str:
    """The tensors of a finding, labelled: ``"W1 (encoder) <-> W2 (decoder)"`` for a pair."""
    return " <-> ".join(tensor_label(name, aliases) for name in finding.tensors)


def report_table(report: GradReport, aliases: Mapping[str, str]) -> Table:
    """One row per tensor: shape, entries checked, worst errors, verdict."""
    labels = [tensor_label(result.name, aliases) for result in report.tensors]
    # Numbers never wrap; on a narrow terminal names and long verdicts do, at their spaces.
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


_VERDICT_STYLE = {"ok": "green", "not checked": "yellow"}


def print_findings(
    console: Console,
    findings: list[Finding],
    aliases: Mapping[str, str],
    tensors: list[str] | None = None,
) -> None:
    """Each finding as ``[kind] tensor: message`` with its fix lines under it; findings that
    say the same of several tensors once, naming them (``tensors``: the report's, to say
    "every tensor")."""
    for group in group_findings(findings, tensors):
        line = Text()
        line.append(f"[{group.kind}] ", style="bold red" if group.is_bug else "yellow")
        line.append(f"{group.label(lambda name: tensor_label(name, aliases))}: ", style="bold")
        line.append(group.message)
        console.print(line)
        details = group.findings[0].details
        numpy_line, matlab_line = details.get("numpy"), details.get("matlab")
        if len(group.findings) == 1 and numpy_line and matlab_line:
            console.print(Text("    fix (numpy):  ", style="dim") + Text(numpy_line, style="cyan"))
            console.print(Text("    fix (MATLAB): ", style="dim") + Text(matlab_line, style="cyan"))
        elif group.fix:
            console.print(Text("    fix: ", style="dim") + Text(group.fix, style="cyan"))


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
    print_findings(console, report.findings, aliases, [t.name for t in report.tensors])
    for result in report.tensors:
        if result.reason:
            console.print(
                Text(f"{tensor_label(result.name, aliases)} fails: ", style="bold red")
                + Text(result.reason)
            )


def print_json(console: Console, data: Any) -> None:
    """``data`` as indented JSON, unwrapped and unstyled, so that it parses as printed."""
    console.print(json.dumps(data, indent=2), soft_wrap=True, markup=False, highlight=False)


def _checked(result: TensorResult) -> str:
    text = f"{result.checked:,}/{result.size:,}"
    if result.probes:
        text += f" +{result.probes}"
    return text
