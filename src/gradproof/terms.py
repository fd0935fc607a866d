"""The user's terms: how a user names and stores each tensor, and a report rewritten in them.

Contract: a front door that maps the user's variables onto gradproof's tensors (compare's
file names, a flat theta's shapes, Octave's ``--shapes``, gradient keys such as ``dW1``)
describes each tensor with one ``UserTensor``; ``in_user_terms(report, terms)`` returns the
report with every tensor named as the user named it (gradproof's name kept beside it as
``canonical`` where the two differ), every position as the user would type it, and every fix
line in the user's variable names.

Finding texts write positions in one form that this module reads back: an entry as
``W1[3, 4]`` (gradproof's name, 0-based, gradproof's orientation) and lines as ``rows 3-5 of
W1`` / ``columns ...`` / ``entries ...``; a tensor's gradient is ``the gradient of W1`` in
prose and ``dW1`` or ``grad_W1`` in a fix line (each becomes the user's gradient variable where
it has one). That
keeps the diagnosis ignorant of the user's storage, and this module the one place that knows
it: 1-based subscripts in parentheses for MATLAB / Octave, subscripts swapped where the
user's array is the transpose of gradproof's (and the table's shapes reversed where the user
stores the parameter so), and for a flat vector the position in it beside the tensor's
subscript (``theta(17) = Theta2(2, 2)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gradproof.params import ParamLayout
from gradproof.report import Finding, GradReport, TensorResult


@dataclass(frozen=True)
class UserTensor:
    """How the user names and stores one of gradproof's tensors.

    Attributes
    ----------
    canonical : str
        gradproof's name of the tensor (``"W1"``).
    name : str
        The user's name of it (``"encoder"``).
    gradient : str or None
        The user's name of its gradient (``"gEncoder"``, ``"dW1"``), when it has its own.
    transposed : bool
        The user's gradient array is the transpose of gradproof's (weights stored
        ``(n_out, n_in)``, or a gradient returned in the transposed shape): subscripts swap.
    stored_transposed : bool
        The user's parameter array is the transpose of gradproof's (weights stored
        ``(n_out, n_in)``): the report's shapes are written reversed, as the user's are.
    one_based : bool
        MATLAB / Octave: subscripts count from 1 and are written ``name(i, j)``.
    flat : str or None
        The name of the flat vector the tensor is unrolled into (``"theta"``), if any.
    offset : int
        With ``flat``: the position of the tensor's first entry in it (0-based).
    shape : tuple of int
        With ``flat``: the tensor's shape, in gradproof's orientation.
    order : {"C", "F"}
        With ``flat``: how the tensor is unrolled (F: MATLAB's ``(:)``).
    """

    canonical: str
    name: str
    gradient: str | None = None
    transposed: bool = False
    stored_transposed: bool = False
    one_based: bool = False
    flat: str | None = None
    offset: int = 0
    shape: tuple[int, ...] = ()
    order: str = "C"

    @property
    def mapped(self) -> bool:
        """Whether the user's name differs from gradproof's."""
        return self.name != self.canonical

    def at(self, index: Sequence[int]) -> str:
        """The gradient entry at gradproof's ``index``, as the user writes it:
        ``gDecoder(338, 134)``, ``dW1[2, 1]``, ``theta(17) = Theta2(2, 2)``."""
        entry = self._subscript(self.gradient or self.name, self._user_index(index))
        if self.flat is None:
            return entry
        local = int(np.ravel_multi_index(tuple(index), self.shape, order=self.order))
        return f"{self._subscript(self.flat, (self.offset + local,))} = {entry}"

    def lines(self, word: str, numbers: str) -> str:
        """``rows 3-5`` in the user's terms: rows and columns swapped for a transposed array,
        every index (not the count of an "N more") shifted for 1-based subscripts."""
        if self.transposed:
            word = _SWAPPED_LINES.get(word, word)
        if self.one_based:
            numbers = _INDEX.sub(lambda m: str(int(m.group()) + 1), numbers)
        return f"{word} {numbers}"

    def _user_index(self, index: Sequence[int]) -> tuple[int, ...]:
        index = tuple(int(i) for i in index)
        return index[::-1] if self.transposed else index

    def _subscript(self, name: str, index: tuple[int, ...]) -> str:
        if not index:
            return name
        if self.one_based:
            return f"{name}({', '.join(str(i + 1) for i in index)})"
        return f"{name}[{', '.join(str(i) for i in index)}]"


_SWAPPED_LINES = {"row": "column", "rows": "columns", "column": "row", "columns": "rows"}

# An index in a span text ("3-5, 7 and 2 more"): every number but the count of "N more".
_INDEX = re.compile(r"(?<!\d)\d+(?!\d| more)")


def in_user_terms(
    report: GradReport,
    terms: Mapping[str, UserTensor],
    symbols: Mapping[str, str] | None = None,
) -> GradReport:
    """The report in the user's terms (see the module docstring).

    Parameters
    ----------
    report : GradReport
        Named with gradproof's names (the keys of ``terms``).
    terms : dict of str to UserTensor
        gradproof's name -> how the user names and stores that tensor; tensors it lacks keep
        their names and positions.
    symbols : dict of str to str, optional
        The user's names of the fix lines' local quantities, where they are known
        (``{"d_s2": "error_0", "a1": "a"}``); the others keep the catalogue's names, which
        the fix's ``where`` text explains.

    Returns
    -------
    GradReport
        A new report; ``report`` is left as it was.
    """
    if not terms:
        return report
    rewrite = _Rewriter(terms, symbols or {})
    return replace(
        report,
        tensors=[_tensor(t, terms.get(t.name), rewrite) for t in report.tensors],
        findings=[_finding(f, terms, rewrite) for f in report.findings],
    )


def _tensor(result: TensorResult, user: UserTensor | None, rewrite: _Rewriter) -> TensorResult:
    if user is None:
        return result
    oriented: dict[str, Any] = {"reason": rewrite(result.reason)}
    if user.stored_transposed and len(result.shape) == 2:
        # The user's shapes and worst index, and the reason a misshapen gradient fails
        # written from them.
        gradient_shape, worst = result.gradient_shape, result.worst_index
        oriented = {"shape": result.shape[::-1], "reason": None,
                    "gradient_shape": None if gradient_shape is None else gradient_shape[::-1],
                    "worst_index": None if worst is None else tuple(worst)[::-1]}
    return replace(
        result,
        name=user.name,
        canonical=user.canonical if user.mapped else None,
        worst_at=None if result.worst_index is None else user.at(result.worst_index),
        **oriented,
    )


def _finding(finding: Finding, terms: Mapping[str, UserTensor], rewrite: _Rewriter) -> Finding:
    users = [terms.get(name) for name in finding.tensors]
    mapped = any(user is not None and user.mapped for user in users)
    details = {
        key: rewrite(value) if key in _TEXT_DETAILS else value
        for key, value in finding.details.items()
    }
    return replace(
        finding,
        tensors=tuple(name if user is None else user.name
                      for name, user in zip(finding.tensors, users)),
        canonical=finding.tensors if mapped else finding.canonical,
        gradient=users[0].gradient if users[0] is not None else finding.gradient,
        message=rewrite(finding.message),
        fix=rewrite(finding.fix),
        details=details,
    )


# The details that hold text for the user: the fix lines and what their names stand for.
_TEXT_DETAILS = frozenset({"numpy", "matlab", "where"})


class _Rewriter:
    """Rewrites one text: positions, line spans, gradient symbols and names, in one pass (so
    that a user's name that happens to be another tensor's canonical one is never renamed
    twice)."""

    def __init__(self, terms: Mapping[str, UserTensor], symbols: Mapping[str, str]) -> None:
        self._terms, self._symbols = terms, symbols
        names = "|".join(re.escape(n) for n in sorted(terms, key=len, reverse=True))
        # A never-matching alternative when no local names are known.
        local = "|".join(re.escape(n) for n in sorted(symbols, key=len, reverse=True)) or "(?!)"
        edge, end = r"(?<![\w.])", r"(?!\w)"
        self._pattern = re.compile(
            rf"{edge}(?P<at>{names})\[(?P<index>\d+(?:, \d+)*)\]"
            rf"|\b(?P<word>rows?|columns?|entries|entry) (?P<span>{_SPAN}) of (?P<of>{names}){end}"
            rf"|\bthe gradient of (?P<gradient_of>{names}){end}"
            rf"|{edge}(?P<prefix>d|grad_)(?P<grad>{names}){end}"
            rf"|{edge}(?P<name>{names}){end}"
            rf"|{edge}(?P<local>{local}){end}"
        )

    def __call__(self, text: Any) -> Any:
        if not isinstance(text, str):
            return text
        return self._pattern.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        terms = self._terms
        if match["at"]:
            index = tuple(int(i) for i in match["index"].split(", "))
            return terms[match["at"]].at(index)
        if match["of"]:
            user = terms[match["of"]]
            return f"{user.lines(match['word'], match['span'])} of {user.gradient or user.name}"
        if match["gradient_of"]:
            user = terms[match["gradient_of"]]
            return user.gradient or f"the gradient of {user.name}"
        if match["grad"]:
            user = terms[match["grad"]]
            return user.gradient or f"{match['prefix']}{user.name}"
        if match["name"]:
            return terms[match["name"]].name
        return self._symbols[match["local"]]


# A span of indices as ``gradproof.diagnose`` writes it: "3", "0-4 and 10", "1, 3-5 and 2 more".
_RUN = r"\d+(?:-\d+)?"
_SPAN = rf"{_RUN}(?:(?:, | and )(?:\d+ more|{_RUN}))*"


def layout_terms(
    layout: ParamLayout,
    gradients: Mapping[str, str],
    transposed: Sequence[str],
    *,
    flat_name: str,
    one_based: bool,
) -> dict[str, UserTensor]:
    """The terms of ``check_gradient``'s tensors, which the user named (dict keys, shapes):
    each gradient's own key where it has one (``dW1``), and for a flat vector (called
    ``flat_name``) each tensor's place in it. A gradient given in the transposed shape has
    its subscripts swapped where it has a name of its own to write them on; otherwise they
    are written on the parameter, in the parameter's orientation."""
    flat = flat_name if layout.kind == "flat" else None
    return {
        spec.name: UserTensor(
            canonical=spec.name, name=spec.name, gradient=gradients.get(spec.name),
            transposed=spec.name in transposed and spec.name in gradients,
            one_based=one_based,
            flat=flat, offset=spec.offset, shape=spec.shape, order=spec.order,
        )
        for spec in layout.specs
    }


def with_canonical(report: GradReport, held: Mapping[str, str]) -> GradReport:
    """The report, already in the user's names, with gradproof's beside them.

    ``held`` maps each of gradproof's tensors to the user's name of what holds it (several may
    share one: ``Theta1`` holds ``W1`` and ``b1`` when biases are a column of the weight);
    a user's tensor gets them all as its ``canonical`` name (``"W1, b1"``).
    """
    canonical: dict[str, list[str]] = {}
    for name, user in held.items():
        canonical.setdefault(user, []).append(name)
    joined = {user: ", ".join(names) for user, names in canonical.items()
              if names != [user]}
    if not joined:
        return report
    return replace(
        report,
        tensors=[replace(t, canonical=joined.get(t.name)) for t in report.tensors],
        findings=[
            replace(f, canonical=tuple(joined.get(n, n) for n in f.tensors))
            if any(n in joined for n in f.tensors) else f
            for f in report.findings
        ],
    )
