"""``check_function``: the backward of a custom ``torch.autograd.Function`` (or of any
callable of tensors) against finite differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from gradproof.errors import InputError
from gradproof.report import GradReport
from gradproof.torch.core import Problem, run
from gradproof.torch.precision import precision_note
from gradproof.torch.tensors import check_values, float64_copy, to_numpy


def check_function(
    fn: Callable[..., Any],
    *inputs: Any,
    names: Sequence[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> GradReport:
    """Check a function's backward against finite differences, input by input.

    The outputs are reduced to one scalar by a fixed random projection,
    ``J = sum_k <w_k, fn(*inputs)_k>`` (``w`` seeded, random signs and magnitudes in
    [0.5, 1.5]), so the check is of one vector-Jacobian product: the gradient backward
    returns for ``grad_output = w`` against central differences of ``J``. Every input that
    requires grad is checked; the report names it ``"input<i>"`` after its position (or by
    ``names``) and says how a wrong gradient is wrong (transposed, scaled, sign_flipped,
    swapped between inputs, partial, zero, mismatch), with notes for kinks, nondeterminism
    and precision.

    Parameters
    ----------
    fn : callable
        ``fn(*inputs)`` -> a tensor or a tuple of tensors, e.g. ``MyFunction.apply``. For
        keyword arguments, pass ``functools.partial(fn, key=value)``.
    *inputs : tensor or any value
        The arguments of ``fn``. Tensors with ``requires_grad=True`` are checked; every other
        argument (tensors without grad, numbers, None, strings ...) is a constant, passed as
        it is (a floating tensor as a float64 copy, fresh at every call so that ``fn`` cannot
        change it for later calls).
    names : sequence of str, optional
        One name per input (constants included), used in the report.
    seed : int
        Seeds the projection, torch's random state at every call of ``fn`` (a dropout inside
        draws the same mask at every evaluation; the caller's random state is restored) and
        the sampled entries of a large check.
    **options
        Passed to ``gradproof.check_gradient``: ``mode``, ``samples``, ``directions``,
        ``budget``, ``rtol``, ``atol``, ``safety``, ``progress``, ``blas_threads`` (the
        threads of torch's OpenMP pool and numpy's BLAS during the check; see
        ``gradproof.blas``).

    Returns
    -------
    GradReport
        One ``TensorResult`` per checked input, and the findings.

    Raises
    ------
    InputError
        ``fn`` not callable or raising; an output that is not a tensor or a tuple of tensors;
        no input requiring grad; NaN in an input (or +-inf in a checked one); a complex
        tensor; a backward that raises, returns the wrong number of gradients or a gradient
        of the wrong shape (the rule it broke explained); bad ``names`` or options.

    Notes
    -----
    The check runs in float64 on each input's own device (a GPU when the inputs are there):
    float32, float16 and bfloat16 inputs are checked as float64 copies, with a ``precision``
    note, so it tests the math of forward and backward, not their rounding. Besides the finite
    differences, backward is run four times: twice with the same ``grad_output`` (it must give
    the same gradients, else a ``nondeterministic`` note), once with ``-2 * grad_output`` (the
    gradients must scale by -2, else a ``scaled`` finding: backward ignores ``grad_output``) and
    once with zero (a nonzero gradient is named affine rather than linear in ``grad_output``).
    A custom Function's backward is also called directly, and a gradient whose raw shape
    autograd had to sum back to its input's gets a ``convention`` note with both shapes. With
    several outputs, a gradient that passes once one output's term is left out gets a
    ``missing_term`` finding naming that output.

    Examples
    --------
    >>> x = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)  # doctest: +SKIP
    >>> report = check_function(MyLinear.apply, x, W, b, names=["x", "W", "b"])  # doctest: +SKIP
    >>> report.assert_ok()  # doctest: +SKIP
    """
    if isinstance(fn, type) and issubclass(fn, torch.autograd.Function):
        raise InputError(
            f"fn is the autograd.Function class {fn.__name__}; pass {fn.__name__}.apply"
        )
    if not callable(fn):
        raise InputError(
            f"fn must be a callable of tensors (e.g. MyFunction.apply), got {type(fn).__name__}"
        )
    labels = _names(names, len(inputs))
    checked = [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.requires_grad]
    if not checked:
        raise InputError(_nothing_to_check(inputs, labels))
    copies = []
    for label, x in zip(labels, inputs):
        if isinstance(x, torch.Tensor):
            check_values(x, f"input {label}", allow_inf=not x.requires_grad)
            copies.append(float64_copy(x, f"input {label}"))
        else:
            copies.append(x)
    values = {labels[i]: to_numpy(copies[i]) for i in checked}
    devices = {labels[i]: copies[i].device for i in checked}
    position = {labels[i]: i for i in checked}

    def forward(tensors: dict[str, torch.Tensor]) -> Any:
        args = [x.clone() if isinstance(x, torch.Tensor) else x for x in copies]
        for name, tensor in tensors.items():
            args[position[name]] = tensor
        return fn(*args)

    note = precision_note({labels[i]: inputs[i] for i in checked})
    problem = Problem(values, devices, forward, "fn", notes=[note] if note else [])
    return run(problem, seed, options)


def _names(names: Sequence[str] | None, count: int) -> list[str]:
    if names is None:
        return [f"input{i}" for i in range(count)]
    given = list(names) if isinstance(names, (list, tuple)) else None
    if given is None or not all(isinstance(n, str) and n for n in given):
        raise InputError(f"names must be a list of non-empty strings, one per input; got {names!r}")
    names = given
    if len(names) != count:
        raise InputError(
            f"names has {len(names)} entries ({names}) but fn gets {count} inputs; give one "
            "name per input"
        )
    if len(set(names)) != len(names):
        raise InputError(f"names must be distinct; got {names}")
    return names


def _nothing_to_check(inputs: tuple[Any, ...], labels: list[str]) -> str:
    tensors = [label for label, x in zip(labels, inputs) if isinstance(x, torch.Tensor)]
    if not tensors:
        return (
            "no input requires grad: fn got no tensors at all; pass the inputs to check as tensors "
            "with requires_grad=True"
        )
    return (
        f"no input requires grad (tensors {', '.join(tensors)} are constants): call "
        "`.requires_grad_()` on the inputs whose gradients should be checked"
    )
