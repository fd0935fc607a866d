"""Results of a gradient check: one record per tensor, one per finding, and the report.

A ``GradReport`` is plain data. It carries, per tensor, the errors, the worst entry, the step
and the finite-difference error estimate that decided the verdict, and a list of ``Finding``
records whose ``kind`` comes from the fixed vocabulary ``FINDING_KINDS``. ``to_dict()`` gives
the JSON shape other code relies on; ``str(report)`` gives a compact table followed by the
findings, never two full columns of numbers, and Jupyter shows the same as HTML.

Two rules keep the rendering from being misread: a tensor whose gradient came in the
transposed shape never reads ``ok`` (``TensorResult.reason``), and findings that say the same
of several tensors are shown once (``group_findings``).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
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
    "missing_term": "a whole additive term of the loss is absent from the gradient",
    "convention": "not a bug claim: the gradient is right under another convention that the "
    "evidence cannot rule out",
    "mismatch": "wrong, with no recognised pattern",
}

# Kinds that describe the check's circumstances rather than a bug in the gradient.
NOTE_KINDS = frozenset({"kink", "precision", "nondeterministic", "convention"})


@dataclass(frozen=True)
class Finding:
    """One thing the check found.

    Parameters
    ----------
    kind : str
        One of ``FINDING_KINDS``.
    tensors : tuple of str
        The tensors concerned, as the user named them: one, the two of a ``swapped`` pair, or
        for a note about the check's circumstances every tensor it concerns (``.tensor`` is
        the first).
    message : str
        One or two sentences: what is wrong, the evidence, and where to look.
    evidence : float or None
        For a diagnosis: the relative error left after applying the hypothesis (small = it fits).
    fix : str or None
        A one-line fix in code terms, when one can be given.
    details : dict
        Extra JSON-ready data (an estimated factor, the wrong rows, ...).
    canonical : tuple of str or None
        gradproof's own names of ``tensors`` (``("W1",)`` for the user's ``encoder``), where
        the user's names were mapped onto them; None where they are the same.
    gradient : str or None
        The user's own name of the (first) tensor's gradient (``gEncoder``, ``dW1``), which
        the texts use for it, where it has one.
    """

    kind: str
    tensors: tuple[str, ...]
    message: str
    evidence: float | None = None
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    canonical: tuple[str, ...] | None = None
    gradient: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(
                f"unknown finding kind {self.kind!r}; expected one of {sorted(FINDING_KINDS)}"
            )
        # A bare string would pass for a tuple of its characters.
        most = 2 if self.is_bug else None
        if (not isinstance(self.tensors, tuple) or not self.tensors
                or not all(isinstance(name, str) for name in self.tensors)
                or (most is not None and len(self.tensors) > most)):
            raise ValueError(
                "Finding.tensors must be a tuple of one or two tensor names (more for a note); "
                f"got {self.tensors!r}"
            )

    @property
    def tensor(self) -> str:
        """The (first) tensor the finding is about."""
        return self.tensors[0]

    @property
    def is_bug(self) -> bool:
        """True for findings that describe a wrong gradient (not kink / precision /
        nondeterministic / convention notes)."""
        return self.kind not in NOTE_KINDS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``tensor`` always (the first), ``tensors`` too for a pair."""
        out: dict[str, Any] = {"kind": self.kind, "tensor": self.tensor}
        if len(self.tensors) > 1:
            out["tensors"] = list(self.tensors)
        if self.gradient is not None:
            out["gradient"] = self.gradient
        if self.canonical is not None:
            out["canonical"] = self.canonical[0]
            if len(self.canonical) > 1:
                out["canonical_tensors"] = list(self.canonical)
        out["message"] = self.message
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
        The parameter's shape (as the user stores it, in a report in the user's terms).
    checked : int
        How many entries were compared one by one (0 when only projections were checked).
    max_abs_error, max_rel_error : float
        Largest ``|analytic - numeric|`` and largest ``|a - n| / max(|a|, |n|)`` seen.
    worst_index : tuple of int or None
        The entry with the largest error relative to its tolerance, 0-based, on an array of
        ``shape``.
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
    verified : bool
        False when more of the tensor's probes were excluded at kinks than compared: the
        check could not verify it, its table verdict reads ``unverified`` where it passed, and
        the report's headline names it.
    taylor_order : float or None
        In a Taylor test: the fitted order of the remainder (2 when right, 1 when wrong; None
        when the remainder stayed at rounding level).
    gradient_shape : tuple of int or None
        The shape the gradient came in, when it was not the parameter's (a transposed one,
        compared after transposing back); None otherwise.
    reason : str or None
        Why the tensor fails although its values alone may agree: set, with ``passed`` False,
        when ``gradient_shape`` is not ``shape``, because the code that built that gradient is
        wrong even where its numbers are right.
    values_passed : bool or None
        For a gradient of the wrong shape: whether its values agree with the numerical ones
        once transposed back (``passed`` as the comparison gave it); None otherwise.
    detectable : float or None
        The smallest error in one entry that the comparisons made are sure to catch, wherever
        it lies among the entries they cover (in the gradient's units): each comparison's
        tolerance over that entry's weight in it, the best comparison per entry, the worst
        entry. Entries no comparison covers (not sampled, excluded at a kink) are not counted
        and can hide an error of any size. None when nothing was compared.
    detectable_relative : float or None
        ``detectable`` over the tensor's largest |gradient| entry: above about 1e-3 the check
        is coarse (a float32 loss, a Taylor direction over many entries).
    canonical : str or None
        gradproof's own name of the tensor (``"W1"`` for the user's ``encoder``), where the
        user's name was mapped onto it; None where they are the same.
    worst_at : str or None
        ``worst_index`` as the user writes it (``gEncoder(162, 84)``, ``theta(17) =
        Theta2(2, 2)``), where the user's storage is known; None otherwise.
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
    verified: bool = True
    taylor_order: float | None = None
    gradient_shape: tuple[int, ...] | None = None
    reason: str | None = None
    values_passed: bool | None = None
    detectable: float | None = None
    detectable_relative: float | None = None
    canonical: str | None = None
    worst_at: str | None = None

    def __post_init__(self) -> None:
        if self.gradient_shape is not None and tuple(self.gradient_shape) == tuple(self.shape):
            self.gradient_shape = None  # the parameter's own shape: nothing to say
        if self.gradient_shape is None:
            return
        self.gradient_shape = tuple(self.gradient_shape)
        if self.values_passed is None:
            self.values_passed = self.passed
        if self.reason is None:
            values = "agree with" if self.values_passed else "differ from"
            self.reason = (
                f"the gradient has shape {_shape_text(self.gradient_shape)}, not "
                f"{self.name}'s {_shape_text(self.shape)}; its values {values} the numerical "
                "ones once transposed back"
            )
        self.passed = False

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def verdict(self) -> str:
        """The table's word: ``ok``, ``FAIL``, ``unverified`` (mostly excluded at kinks),
        ``not checked``, or for a gradient of the transposed shape ``transposed`` (its values
        right once transposed back) or ``FAIL, transposed`` (wrong even then)."""
        if self.gradient_shape is not None:
            return "transposed" if self.values_passed else "FAIL, transposed"
        if not self.passed:
            return "FAIL"
        if not self.verified:
            return "unverified"
        if self.checked == 0 and self.probes == 0 and self.size:
            return "not checked"
        return "ok"

    @property
    def worst_text(self) -> str:
        """The worst entry as the table shows it: the user's subscript where known."""
        if self.worst_at is not None:
            return self.worst_at
        return "-" if self.worst_index is None else str(list(self.worst_index))

    def label(self) -> str:
        """``"encoder (W1)"`` where the user's name was mapped onto gradproof's, else the name."""
        return self.name if self.canonical is None else f"{self.name} ({self.canonical})"

    def to_dict(self) -> dict[str, Any]:
        mapped = {} if self.canonical is None else {"canonical": self.canonical}
        placed = {} if self.worst_at is None else {"worst_at": self.worst_at}
        return {
            "name": self.name,
            **mapped,
            "shape": list(self.shape),
            "checked": int(self.checked),
            "max_abs_error": _json_float(self.max_abs_error),
            "max_rel_error": _json_float(self.max_rel_error),
            "passed": bool(self.passed),
            "worst_index": None if self.worst_index is None else list(self.worst_index),
            **placed,
            "step": _json_float(self.step),
            "error_estimate": _json_float(self.error_estimate),
            "tolerance": _json_float(self.tolerance),
            "probes": int(self.probes),
            "excluded": int(self.excluded),
            "verified": bool(self.verified),
            "taylor_order": _json_float(self.taylor_order),
            "verdict": self.verdict,
            "gradient_shape": None if self.gradient_shape is None else list(self.gradient_shape),
            "reason": self.reason,
            "values_passed": self.values_passed,
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
    model : dict or None
        For ``check_network``: the member of the network family identified from the user's
        loss (``"identified"``, ``"description"``, its options and layout), or which came
        closest and why it was rejected.

    A ``transposed`` finding whose ``details["gradient_shape"]`` is not its tensor's shape
    fails that tensor (see ``TensorResult.reason``), whoever made the report: a table that
    said ``ok`` beside a wrongly shaped gradient would be misread.
    """

    tensors: list[TensorResult]
    findings: list[Finding] = field(default_factory=list)
    mode: str = "full"
    partial: bool = False
    seconds: float = 0.0
    loss_evaluations: int = 0
    rule: str = ""
    model: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        shapes = {
            f.tensor: tuple(f.details["gradient_shape"])
            for f in self.findings
            if f.kind == "transposed" and "gradient_shape" in f.details
        }
        self.tensors = [
            replace(t, gradient_shape=shapes[t.name])
            if t.name in shapes and t.gradient_shape is None else t
            for t in self.tensors
        ]

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
        """A JSON-ready dict: ``passed``, ``tensors``, ``findings`` and a few more keys.

        One record per finding; findings that the text shows once as a group carry the same
        ``"group"`` number (their group's place among the groups).
        """
        group_of = {
            id(f): k
            for k, group in enumerate(_groups(self))
            if len(group.findings) > 1
            for f in group.findings
        }
        findings = [
            {**f.to_dict(), "group": group_of[id(f)]} if id(f) in group_of else f.to_dict()
            for f in self.findings
        ]
        out = {
            "passed": self.passed,
            "tensors": [t.to_dict() for t in self.tensors],
            "findings": findings,
            "mode": self.mode,
            "partial": self.partial,
            "seconds": round(self.seconds, 6),
            "loss_evaluations": int(self.loss_evaluations),
            "rule": self.rule,
        }
        if self.model is not None:
            out["model"] = self.model
        return out

    def __str__(self) -> str:
        return format_report(self)

    def _repr_html_(self) -> str:
        """Jupyter shows a report as a table with its findings under it."""
        return format_html(self)

    def assert_ok(self) -> None:
        """Raise ``GradientMismatch`` with this report as its message unless it passed."""
        __tracebackhide__ = True  # under pytest, the traceback ends at the caller's line
        if not self.passed:
            raise GradientMismatch(str(self))


@dataclass(frozen=True)
class FindingGroup:
    """Findings that say the same thing about several tensors, shown once.

    Attributes
    ----------
    kind : str
    tensors : tuple of str
        The tensors concerned, in the order of the findings.
    message, fix : str, str or None
        The shared text, with "each tensor" where the tensor's name stood and a range
        ("1.2e-07 to 4.2e-07") where measured numbers differ; a single finding's own text.
    findings : tuple of Finding
    every : bool
        True when the group covers every tensor of its report.
    """

    kind: str
    tensors: tuple[str, ...]
    message: str
    fix: str | None
    findings: tuple[Finding, ...]
    every: bool = False

    @property
    def is_bug(self) -> bool:
        return self.findings[0].is_bug

    @property
    def where(self) -> str | None:
        """What the fix line's local names stand for (``details["where"]``), where every
        member says the same."""
        return self._shared("where")

    @property
    def lines(self) -> tuple[str, str] | None:
        """The corrected line in numpy and in MATLAB (``details["numpy"]``,
        ``details["matlab"]``), where every member has the same pair."""
        numpy_line, matlab_line = self._shared("numpy"), self._shared("matlab")
        return (numpy_line, matlab_line) if numpy_line and matlab_line else None

    def _shared(self, key: str) -> Any:
        values = {str(f.details.get(key)) for f in self.findings}
        return self.findings[0].details.get(key) if len(values) == 1 else None

    def label(self, name: Callable[[str], str] = str) -> str:
        """The tensors as a heading: ``W1``, ``W1, W2``, ``every tensor (W1, b1, ...)``, or
        ``W1 <-> W2`` for a swapped pair; ``name`` maps each tensor's name to its shown form."""
        joint = " <-> " if self.kind == "swapped" and len(self.findings) == 1 else ", "
        names = joint.join(name(t) for t in self.tensors)
        return f"every tensor ({names})" if self.every else names


# A measured number as the findings print it (1.2e-07, 3e-16, and a residual of exactly 0);
# integers (shapes, indices) are left alone, so findings that differ in them are never grouped.
_MEASURED = re.compile(r"(?<![\w.])\d+(?:\.\d+)?e[+-]\d+(?![\w.])|(?<=residual )0(?![\w.])")
_NAME_SLOT = "\x00"
_NUMBER_SLOT = "\x01"
_GRADIENT_SLOT = "\x02"


def group_findings(findings: list[Finding], tensors: list[str] | None = None) -> list[FindingGroup]:
    """Group the findings whose texts differ only in their tensor's name and measured numbers.

    Parameters
    ----------
    findings : list of Finding
    tensors : list of str, optional
        The report's tensors: a group that covers all of them is marked ``every``.

    Returns
    -------
    list of FindingGroup
        In the order of each group's first finding; a finding like no other is a group of one.
    """
    keyed: dict[tuple[Any, ...], list[tuple[Finding, list[str]]]] = {}
    for finding in findings:
        key, numbers = _template(finding)
        keyed.setdefault(key, []).append((finding, numbers))
    groups = []
    for members in keyed.values():
        names = tuple(f.tensor for f, _ in members)
        pairs = any(len(f.tensors) > 1 for f, _ in members)
        if len(members) == 1 or pairs or len(set(names)) < len(names):
            groups += [FindingGroup(f.kind, f.tensors, f.message, f.fix, (f,), _covers(f, tensors))
                       for f, _ in members]
            continue
        first = members[0][0]
        columns = iter(_spans(column) for column in zip(*(numbers for _, numbers in members)))
        message = _filled(first.message, first, columns)  # its numbers come first
        fix = None if first.fix is None else _filled(first.fix, first, columns)
        every = tensors is not None and set(names) == set(tensors)
        groups.append(
            FindingGroup(first.kind, names, message, fix, tuple(f for f, _ in members), every)
        )
    order = {id(f): i for i, f in enumerate(findings)}
    return sorted(groups, key=lambda g: order[id(g.findings[0])])


def _covers(finding: Finding, tensors: list[str] | None) -> bool:
    """Whether one note names every tensor of its report (never a swapped pair)."""
    return (tensors is not None and len(finding.tensors) > 1 and finding.kind != "swapped"
            and set(finding.tensors) == set(tensors))


def _template(finding: Finding) -> tuple[tuple[Any, ...], list[str]]:
    """The finding's texts with its tensor's name and measured numbers taken out, and those
    numbers (message first, then fix)."""
    numbers: list[str] = []
    texts = []
    for text in (finding.message, finding.fix):
        if text is None:
            texts.append(None)
            continue
        text = _slotted(text, finding)
        numbers += _MEASURED.findall(text)
        texts.append(_MEASURED.sub(_NUMBER_SLOT, text))
    return (finding.kind, *texts), numbers


def _spans(values: tuple[str, ...]) -> str:
    """One number where the members agree, else ``"smallest to largest"``."""
    if len(set(values)) == 1:
        return values[0]
    return f"{min(values, key=float)} to {max(values, key=float)}"


def _slotted(text: str, finding: Finding) -> str:
    """``text`` with the finding's tensor name and its gradient's name as slots."""
    names = [finding.tensor] + ([finding.gradient] if finding.gradient else [])
    pattern = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.sub(
        rf"(?<![\w.])(?:{pattern})(?!\w)",
        lambda m: _GRADIENT_SLOT if m.group() == finding.gradient else _NAME_SLOT,
        text,
    )


def _filled(text: str, finding: Finding, numbers: Iterator[str]) -> str:
    """``text`` (a member's own) with the tensor's name as "each tensor", its gradient's as
    "each tensor's gradient", and each measured number replaced by the group's span of it."""
    text = _MEASURED.sub(lambda _: next(numbers), _slotted(text, finding))
    # "W1's" reads "each tensor's"; the slots go last so a name never looks like a number.
    return text.replace(_GRADIENT_SLOT, "each tensor's gradient").replace(_NAME_SLOT, "each tensor")


_HEADER = ("tensor", "shape", "checked", "max abs err", "max rel err", "worst at", "verdict")


def _rows(report: GradReport) -> list[tuple[str, ...]]:
    return [
        (
            t.label(),
            _shape_text(t.shape),
            _checked_text(t),
            f"{t.max_abs_error:.2e}",
            f"{t.max_rel_error:.2e}",
            t.worst_text,
            t.verdict,
        )
        for t in report.tensors
    ]


def _headline(report: GradReport) -> str:
    if report.partial:
        failed = any(not t.passed for t in report.tensors) or any(f.is_bug for f in report.findings)
        verdict = "FAILED" if failed else "INCOMPLETE"
        verdict += " (partial: interrupted before the check finished)"
    else:
        verdict = "PASSED" if report.passed else "FAILED"
        unverified = [t.label() for t in report.tensors if t.passed and not t.verified]
        if unverified:
            verdict += f" ({', '.join(unverified)} unverified: mostly excluded at kinks)"
    return f"gradient check ({report.mode}): {verdict}"


def _footer(report: GradReport) -> str:
    took = f"{report.seconds:.2f} s"
    if report.loss_evaluations:
        took = f"{report.loss_evaluations} loss evaluations in {took}"
    footer = [took]
    if report.rule:
        footer.append(f"tolerance: {report.rule}")
    return "; ".join(footer)


def _groups(report: GradReport) -> list[FindingGroup]:
    return group_findings(report.findings, [t.name for t in report.tensors])


def format_report(report: GradReport) -> str:
    """Render a report as a plain-text table followed by its findings, each said once."""
    rows = _rows(report)
    widths = [max(len(str(cell)) for cell in column) for column in zip(_HEADER, *rows)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
        for line in [_HEADER, *rows]
    ]
    lines.insert(0, _headline(report))
    if report.model is not None:
        lines.insert(1, _model_text(report.model))
    lines.append(_footer(report))
    label = labeller(report)
    for group in _groups(report):
        lines.append(f"- [{group.kind}] {group.label(label)}: {group.message}")
        if group.fix:
            lines.append(f"    fix: {group.fix}")
        if group.where:
            lines.append(f"    where: {group.where}")
    for t in report.tensors:
        if t.reason:
            lines.append(f"- {t.label()} fails: {t.reason}")
    return "\n".join(lines)


def format_html(report: GradReport) -> str:
    """Render a report as an HTML table with its findings in a list under it (for Jupyter);
    every text from the check is escaped."""
    e = html.escape
    head = "".join(f"<th>{e(cell)}</th>" for cell in _HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in _rows(report)
    )
    parts = [
        f"<p><b>{e(_headline(report))}</b></p>",
        *([] if report.model is None else [f"<p>{e(_model_text(report.model))}</p>"]),
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        f"<p>{e(_footer(report))}</p>",
    ]
    label = labeller(report)
    items = [
        f"<li><b>[{e(g.kind)}] {e(g.label(label))}</b>: {e(g.message)}"
        + (f"<br>fix: <code>{e(g.fix)}</code>" if g.fix else "")
        + (f"<br>where: {e(g.where)}" if g.where else "")
        + "</li>"
        for g in _groups(report)
    ]
    items += [
        f"<li><b>{e(t.label())} fails</b>: {e(t.reason)}</li>" for t in report.tensors if t.reason
    ]
    if items:
        parts.append(f"<ul>{''.join(items)}</ul>")
    return "\n".join(parts)


def labeller(report: GradReport) -> Callable[[str], str]:
    """Maps a tensor's name in the findings to its shown form: ``encoder (W1)`` for a tensor
    the user's name was mapped onto, the name itself otherwise (``loss``, an unmapped one)."""
    labels = {t.name: t.label() for t in report.tensors}
    return lambda name: labels.get(name, name)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape) or "scalar"


def _model_text(model: dict[str, Any]) -> str:
    if model.get("identified"):
        return f"model: {model['description']}"
    return f"model: not identified; {model.get('closest', '')}"


def _checked_text(result: TensorResult) -> str:
    text = f"{result.checked}/{result.size}"
    if result.probes:
        text += f" +{result.probes} probe{'s' if result.probes != 1 else ''}"
    if result.excluded:
        text += f" ({result.excluded} excluded)"
    if result.taylor_order is not None:
        text += f" (order {result.taylor_order:.2f})"
    return text


def _json_float(value: float | None) -> float | None | str:
    if value is None:
        return None
    value = float(value)
    if math.isfinite(value):
        return value
    return str(value)
