"""The analytic side: vector-Jacobian products from backward, and what backward got wrong
beyond the values.

Contract: ``vjp(outputs, leaves, weights, who) -> dict[name, Tensor]`` is the gradient of
``sum_k <weights_k, outputs_k>`` with respect to each named leaf, as backward computes it (zero
for a leaf the outputs do not depend on). A backward that raises, returns the wrong number of
gradients or a gradient of the wrong shape becomes an ``InputError`` that says which rule of a
custom ``autograd.Function`` it broke. Whether backward is deterministic and linear in
``grad_output`` is ``gradproof.linearity``'s question, asked of these products.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from gradproof.errors import InputError

_BAD_SHAPE = re.compile(
    r"invalid gradient at index (\d+) - got \[([\d, ]*)\] but expected shape compatible with "
    r"\[([\d, ]*)\]"
)
_BAD_COUNT = re.compile(r"incorrect number of gradients \(expected (\d+), got (\d+)\)")


def vjp(
    outputs: Sequence[torch.Tensor],
    leaves: Mapping[str, torch.Tensor],
    weights: Sequence[torch.Tensor | None],
    who: str,
) -> dict[str, torch.Tensor]:
    """The gradient of ``sum_k <weights_k, outputs_k>`` w.r.t. each leaf, from backward."""
    pairs = [(out, w) for out, w in zip(outputs, weights) if w is not None and out.requires_grad]
    if not pairs:
        # No output is connected to the leaves (all detached): the analytic gradient is zero.
        return {name: torch.zeros_like(leaf) for name, leaf in leaves.items()}
    try:
        grads = torch.autograd.grad(
            [out for out, _ in pairs],
            list(leaves.values()),
            grad_outputs=[w.to(out.dtype) for out, w in pairs],
            materialize_grads=True,
        )
    except Exception as exc:
        raise InputError(explain_backward_error(exc, who)) from exc
    return {name: grad.to(torch.float64) for name, grad in zip(leaves, grads)}


def explain_backward_error(exc: Exception, who: str) -> str:
    """What a backward's exception means for the author of a custom autograd.Function."""
    text = str(exc).strip()
    count = _BAD_COUNT.search(text)
    if count:
        expected, got = count.groups()
        return (
            f"the backward of {who} returned {got} gradients where its forward took {expected} "
            f"arguments ({text}): a custom autograd.Function's backward must return one value per "
            "argument of forward, None for the arguments that need no gradient"
        )
    shape = _BAD_SHAPE.search(text)
    if shape:
        index, got, expected = shape.groups()
        got_dims, expected_dims = _dims(got), _dims(expected)
        hint = ""
        if len(got_dims) >= 2 and got_dims == expected_dims[::-1]:
            hint = (
                ": it is the transposed shape, so the gradient was built transposed "
                "(`grad_output.T @ x` where `x.T @ grad_output` belongs?)"
            )
        return (
            f"the backward of {who} returned a gradient of shape {got_dims} for forward's argument "
            f"{index}, which has shape {expected_dims}{hint}; each gradient must have its "
            f"argument's shape (torch: {text})"
        )
    return f"the backward of {who} raised {type(exc).__name__}: {text}"


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.replace(" ", "").split(",") if n)
