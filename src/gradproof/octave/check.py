"""``gradproof.octave.check``: a MATLAB cost function's gradient, checked where it runs.

Contract: ``check(expr, path=..., variables=..., var="theta", shapes=None, ...) -> GradReport``
runs ``[J, grad] = expr`` once in Octave (``OctaveRunner.first``) and checks what came back
(``user_gradient``: a finite scalar J and a finite gradient with one entry per entry of the
parameter vector). The network (of ``shapes``, or of the shapes the layer sizes among the
expression's arguments describe) is identified from the user's J and the data the expression
names, and every entry checked against its backprop (``octave.network``); where no member of
the family computes J, or with ``identify=False``, the black-box engine
(``check_gradient``) runs on the runner, which evaluates the perturbed points in batches inside
Octave. Either report speaks MATLAB where MATLAB differs (``matlab_transposed``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradproof import blas
from gradproof.check import check_gradient
from gradproof.errors import InputError
from gradproof.octave.network import check_identified
from gradproof.octave.runner import DEFAULT_TIMEOUT, OctaveRunner
from gradproof.report import Finding, GradReport


@dataclass(frozen=True)
class UserGradient:
    """What one call of the user's expression gave, checked.

    Attributes
    ----------
    value : float
        J at the starting vector.
    gradient : ndarray of shape (n,)
        grad, flat in MATLAB's order.
    notes : list of Finding
        ``convention`` notes (a row vector where the parameters are a column, or the reverse).
    """

    value: float
    gradient: np.ndarray
    notes: list[Finding]


# The options of ``check_network``, the identified path (the rest are the black box's).
_NETWORK_OPTIONS = ("rtol", "atol", "safety", "seed")

# numpy's names for the MATLAB classes that differ.
_MATLAB_CLASS = {"float64": "double", "float32": "single", "bool": "logical"}


def _describe(value: np.ndarray) -> str:
    """An Octave value as MATLAB would describe it: "a 1x784 double"."""
    size = "x".join(str(n) for n in value.shape)
    return f"a {size} {_MATLAB_CLASS.get(value.dtype.name, value.dtype.name)}"


def user_gradient(runner: OctaveRunner, j: np.ndarray, grad: np.ndarray) -> UserGradient:
    """``(J, grad)`` as Octave returned them, checked against the parameter vector."""
    expr, var = runner.expr, runner.var
    j = np.asarray(j)
    if j.dtype.kind not in "fiu" or j.size != 1:
        raise InputError(
            f"J, the first output of {expr}, must be a real scalar; it is {_describe(j)}"
        )
    value = float(j.reshape(-1)[0])
    if not np.isfinite(value):
        raise InputError(f"J, the first output of {expr}, is {value}; it must be finite")
    grad = np.asarray(grad)
    n = runner.theta.size
    if grad.dtype.kind not in "fiu":
        raise InputError(
            f"grad, the second output of {expr}, must be a real numeric vector; it is "
            f"{_describe(grad)}"
        )
    if grad.size != n or (grad.ndim == 2 and min(grad.shape) != 1 and n != 1):
        raise InputError(
            f"grad, the second output of {expr}, is {_describe(grad)}; it must be a vector "
            f"with one entry per entry of {var} ({n:,}, {var} being {_describe_shape(runner)})"
        )
    flat = grad.astype(np.float64).reshape(-1, order="F")
    bad = np.flatnonzero(~np.isfinite(flat))
    if bad.size:
        raise InputError(
            f"grad, the second output of {expr}, has {bad.size:,} non-finite entries: "
            f"grad({bad[0] + 1}) = {flat[bad[0]]} (1-based); it must be finite"
        )
    notes = []
    if grad.shape != runner.theta_shape and n > 1:
        notes.append(
            Finding(
                "convention",
                (var,),
                f"grad is {_describe(grad)} while {var} is {_describe_shape(runner)}: compared "
                "entry by entry (fminunc and fmincg accept either orientation)",
            )
        )
    return UserGradient(value, flat, notes)


def _describe_shape(runner: OctaveRunner) -> str:
    return "x".join(str(n) for n in runner.theta_shape)


def tensor_shapes(
    shapes: Mapping[str, Sequence[int]] | None, var: str, size: int
) -> dict[str, tuple[int, ...]]:
    """The named tensors inside the parameter vector (the whole vector by default), checked
    to add up to its ``size`` entries."""
    if shapes is None:
        return {var: (size,)}
    named = {name: tuple(int(n) for n in dims) for name, dims in shapes.items()}
    total = sum(int(np.prod(dims)) for dims in named.values())
    if total != size:
        listed = ", ".join(
            f"{name} {'x'.join(map(str, dims))} ({int(np.prod(dims)):,})" for name, dims in named.items()
        )
        raise InputError(
            f"the shapes hold {total:,} entries ({listed}) but {var} has {size:,}; they must "
            f"add up to the length of {var}"
        )
    return named


def matlab_transposed(finding: Finding, report: GradReport) -> Finding:
    """An ``unroll_order`` finding (flattened row-major, read back column-major) as what it
    is in MATLAB, where ``(:)`` and ``reshape`` are both column-major: the gradient computed
    as the tensor's transpose, then unrolled; other findings unchanged."""
    if finding.kind != "unroll_order" or finding.details.get("flattened") != "C":
        return finding
    name = finding.tensor
    rows, cols = report.tensor(name).shape
    # The outer product that has the weight's shape: a' * delta for a weight used as a * W.
    right = {"in_out": ("a", "delta"), "out_in": ("delta", "a")}.get(
        (report.model or {}).get("layout", {}).get("weights"))
    details: dict[str, Any] = {**finding.details}
    if right is None:
        fix = (f"build the gradient of {name} in {name}'s shape, {rows}x{cols}: the outer "
               "product the other way round (a' * delta for delta' * a, or the reverse)")
    else:
        left, other = right
        details["numpy"] = (f"grad_{name} = {left}.T @ {other}  # {rows}x{cols}, like {name}; "
                            f"{other}.T @ {left} is its transpose")
        details["matlab"] = (f"grad_{name} = {left}' * {other};  % {rows}x{cols}, like {name}; "
                             f"{other}' * {left} is its transpose")
        fix = f"numpy: {details['numpy']}  |  MATLAB: {details['matlab']}"
    return Finding(
        kind="transposed",
        tensors=(name,),
        message=(
            f"the gradient of {name} was computed as its transpose, {cols}x{rows} for the "
            f"{rows}x{cols} {name}, and unrolled with (:): its part of grad is the right "
            f"gradient read in the other order (residual {finding.evidence:.1g})"
        ),
        evidence=finding.evidence,
        fix=fix,
        details=details,
    )


def check(
    expr: str,
    *,
    path: str | Path | Sequence[str | Path] = (),
    variables: str | Path | Mapping[str, Any] | None = None,
    var: str = "theta",
    shapes: Mapping[str, Sequence[int]] | None = None,
    order: str = "F",
    timeout: float = DEFAULT_TIMEOUT,
    identify: bool = True,
    **options: Any,
) -> GradReport:
    """Check the gradient a MATLAB expression returns, running it in GNU Octave.

    Parameters
    ----------
    expr : str
        The call as written in MATLAB, returning ``[J, grad]``:
        ``"nnCostFunction(theta, 400, 25, 10, X, y, 1)"``.
    path : str, Path or sequence of them
        Folders holding the user's ``.m`` files (added to Octave's path).
    variables : str, Path or dict of str to array, optional
        A .mat file, or the variables themselves, that ``expr`` uses by name.
    var : str
        The parameter vector's name among the variables.
    shapes : dict of str to tuple of int, optional
        The tensors inside the parameter vector, in order (``{"W1": (25, 401), ...}``); by
        default one tensor named ``var``.
    order : {"F", "C"}
        How each tensor is unrolled: column-major (``F``, MATLAB's ``(:)``, the default) or
        row-major.
    timeout : float
        Seconds any one Octave command may run; past it Octave is killed and InputError raised.
    identify : bool
        Identify the network (of ``shapes``, or of the shapes the layer sizes among the
        expression's arguments describe, ``octave.network.inferred_shapes``) from J and the
        data the expression names, and check every entry against its backprop (False: the
        black-box check alone).
    **options
        ``mode``, ``samples``, ``directions``, ``budget``, ``rtol``, ``atol``, ``safety``,
        ``seed``, ``progress``: as for ``gradproof.check_gradient``, which does the black-box
        check (``rtol``, ``atol``, ``safety`` and ``seed`` also apply to the identified one).

    Returns
    -------
    GradReport
        Identified: ``check_network``'s report (``mode="network"``, ``model`` the network with
        ``x`` and ``y``, the names of the data it read, and ``shapes``). Else
        ``check_gradient``'s, with ``model`` saying why no network was identified (None where
        no shapes describe one, or with ``identify=False``). Either with a ``convention`` note
        when grad's orientation differs from the parameter vector's; ``seconds`` includes
        Octave's start. Positions are MATLAB's, 1-based, in ``var`` and in the
        tensor of ``shapes`` (``theta(17) = Theta2(2, 2)``).

    Raises
    ------
    InputError
        Octave not installed (the install line given); Octave's error from the user's code (a
        syntax error, an error raised, one output instead of two, with the file and line);
        J not a finite scalar; grad of the wrong length or not finite; shapes that do not add
        up; a command that outlived ``timeout``; and whatever ``check_gradient`` refuses.
    """
    started = time.perf_counter()
    # numpy's identification and exact check alternate small products with elementwise work,
    # as the other hot paths do: the same thread policy (gradproof.blas).
    with blas.limited("octave"), OctaveRunner(
        expr, path=path, variables=variables, var=var, timeout=timeout
    ) as runner:
        named = tensor_shapes(shapes, var, runner.theta.size)
        user = user_gradient(runner, *runner.first())
        report, model = None, None
        if identify:
            report, model = check_identified(
                runner, user.gradient, None if shapes is None else named, order,
                **{k: v for k, v in options.items() if k in _NETWORK_OPTIONS},
            )
        if report is None:
            report = check_gradient(
                runner, user.gradient, runner.theta, shapes=named, order=order,
                subscripts="matlab", flat_name=var, **options,
            )
            report.model = model
    report.findings[:0] = user.notes
    report.seconds = time.perf_counter() - started  # Octave's start and identification included
    if order == "F":
        report.findings[:] = [matlab_transposed(f, report) for f in report.findings]
    return report
