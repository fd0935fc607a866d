"""A gradient that lacks one term of a sum inside one output: ``missing_term``.

Contract: ``with_missing_pieces(report, inputs, grads, upstream, passes, word)`` takes the
report of a check of J = sum_k <u_k, out_k> (``check_vjp``, the PyTorch adapter), the inputs'
values, the gradients checked, the upstream gradients (None for an output not projected) and
``passes(name, gradient, quick)``, which checks another gradient for one input (``quick``:
along a few random directions). For a failing input of the same shape as an output, it tries
the pieces a backward most often drops from ``out = ... + f(x)``, each the gradient of an
identifiable part: ``u * f'(x)`` for f in ``PIECES`` (the path straight through, ``f(x) = x``,
of a residual block's skip connection; sin, exp, tanh ...). One that makes the gradient pass,
quickly and then entry by entry, names it: a ``missing_term`` finding in place of the input's
other bug findings.

What a black box can show: that the gradient plus one of these pieces is right. A dropped term
of another form (not entry by entry, or a function outside ``PIECES``) stays the usual
diagnosis: finite differences see the whole sum, not how the user split it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gradproof.report import Finding, GradReport


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# The part of the sum, as the user would write it, and its derivative entry by entry.
PIECES: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "{x}": ("1", np.ones_like),
    "sin({x})": ("cos({x})", np.cos),
    "cos({x})": ("-sin({x})", lambda x: -np.sin(x)),
    "exp({x})": ("exp({x})", np.exp),
    "tanh({x})": ("(1 - tanh({x})**2)", lambda x: 1.0 - np.tanh(x) ** 2),
    "sigmoid({x})": (
        "sigmoid({x}) * (1 - sigmoid({x}))", lambda x: _sigmoid(x) * (1.0 - _sigmoid(x))
    ),
    "{x}**2": ("2 * {x}", lambda x: 2.0 * x),
    "relu({x})": ("({x} > 0)", lambda x: (x > 0).astype(np.float64)),
    "softplus({x})": ("sigmoid({x})", _sigmoid),
}


def with_missing_pieces(
    report: GradReport,
    inputs: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    upstream: Sequence[np.ndarray | None],
    passes: Callable[[str, np.ndarray, bool], bool],
    word: str,
) -> GradReport:
    """The report, each failing input that one piece completes named ``missing_term``."""
    # A zero gradient lacks everything, not one term of a sum.
    explained = {
        t for f in report.findings if f.kind in ("missing_term", "swapped", "zero")
        for t in f.tensors
    }
    failing = [
        t.name for t in report.tensors
        if not t.passed and t.checked and t.name not in explained and t.name in grads
    ]
    findings = list(report.findings)
    for name in failing:
        x, grad = inputs[name], grads[name]
        if grad.shape != x.shape:
            continue
        found = _piece(name, x, grad, upstream, passes)
        if found is None:
            continue
        k, term, (derivative, _) = found
        where = word if len(upstream) == 1 else f"output {k}'s {word}"
        part, slope = term.format(x=name), derivative.format(x=name)
        skip = " (a skip connection's identity path)" if term == "{x}" else ""
        added = where if slope == "1" else f"{where} * {slope}"
        findings = [f for f in findings if not (f.is_bug and name in f.tensors)]
        findings.append(Finding(
            "missing_term", (name,),
            f"the gradient of {name} lacks the term of {part} in a sum{skip}: with {added} "
            f"added, finite differences match it, so backward drops the path through {part}",
            fix=f"d{name} += {word}" + ("" if slope == "1" else f" * {slope}"),
            details={"output": k, "term": term.format(x="x")},
        ))
    return dataclasses.replace(report, findings=findings)


def _piece(
    name: str, x: np.ndarray, grad: np.ndarray, upstream: Sequence[np.ndarray | None],
    passes: Callable[[str, np.ndarray, bool], bool],
) -> tuple[int, str, tuple[str, Callable[[np.ndarray], np.ndarray]]] | None:
    """(output, term, piece) of the first piece whose addition makes ``grad`` pass."""
    for k, u in enumerate(upstream):
        if u is None or u.shape != x.shape:
            continue
        for term, piece in PIECES.items():
            with np.errstate(all="ignore"):
                completed = grad + u * piece[1](x)
            if not np.all(np.isfinite(completed)):
                continue
            if passes(name, completed, True) and passes(name, completed, False):
                return k, term, piece
    return None
