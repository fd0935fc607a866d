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
from gradproof.report import Finding

_BAD_SHAPE = re.compile(
    r"invalid gradient at index (\d+) - got \[([\d, ]*)\] but expected shape compatible with "
    r"\[([\d, ]*)\]"
)
_BAD_COUNT = re.compile(r"incorrect number of gradients \(expected (\d+), got (\d+)\)")
_TAKES = re.compile(r"backward\(\) takes (\d+) positional arguments? but (\d+) (?:were|was) given")
_MISSING = re.compile(r"backward\(\) missing (\d+) required positional arguments?")
_NOT_TENSOR = re.compile(
    r"returned a gradient different than None at position (\d+), but the corresponding forward "
    r"input was not a Variable"
)

# The rules of a custom autograd.Function's backward, as the messages state them.
_ONE_PER_OUTPUT = (
    "a custom autograd.Function's backward takes ctx and then one gradient argument per output "
    "of forward, in order"
)
_ONE_PER_INPUT = (
    "a custom autograd.Function's backward must return one value per argument of forward, "
    "None for the arguments that are not tensors requiring grad"
)


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
            f"arguments ({text}): {_ONE_PER_INPUT}"
        )
    takes = _TAKES.search(text)
    if takes:
        accepted, given = (int(n) - 1 for n in takes.groups())  # ctx is the first argument
        return (
            f"the backward of {who} accepts {accepted} gradient argument(s) but forward returned "
            f"{given} outputs ({text}): {_ONE_PER_OUTPUT}"
        )
    missing = _MISSING.search(text)
    if missing:
        return (
            f"the backward of {who} expects {missing.group(1)} more gradient argument(s) than "
            f"forward has outputs ({text}): {_ONE_PER_OUTPUT}"
        )
    not_tensor = _NOT_TENSOR.search(text)
    if not_tensor:
        position = int(not_tensor.group(1)) - 1  # torch counts from 1 here
        return (
            f"the backward of {who} returned a gradient for forward's argument {position}, which "
            f"is not a tensor requiring grad ({text}): {_ONE_PER_INPUT}"
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


def broadcast_findings(
    outputs: Sequence[torch.Tensor],
    leaves: Mapping[str, torch.Tensor],
    weights: Sequence[torch.Tensor | None],
    who: str,
) -> list[Finding]:
    """A note per gradient that a custom Function's backward returned in a shape other than
    its input's, which autograd summed back over the broadcast axes without a word.

    Only when the outputs come straight from one custom Function (``Function.apply``): its
    backward is called directly, with ctx, on the same ``grad_output``, and each raw gradient's
    shape is compared with the leaf that forward's argument is.
    """
    node = outputs[0].grad_fn if outputs else None
    function = getattr(node, "_forward_cls", None)
    if function is None or any(out.grad_fn is not node for out in outputs):
        return []
    grads = [
        torch.zeros_like(out) if w is None else w.to(out.dtype) for out, w in zip(outputs, weights)
    ]
    with torch.no_grad():
        try:
            raw = function.backward(node, *grads)
        except Exception:
            # autograd ran this backward already: whatever it raises here is a second call's
            # problem (saved tensors freed), not the user's; the check stands without the note.
            return []
    raw = raw if isinstance(raw, tuple) else (raw,)
    names = {id(leaf): name for name, leaf in leaves.items()}
    findings = []
    for position, ((source, _), grad) in enumerate(zip(node.next_functions, raw)):
        name = names.get(id(getattr(source, "variable", None)))
        if name is None or not isinstance(grad, torch.Tensor):
            continue
        shape, expected = tuple(grad.shape), tuple(leaves[name].shape)
        if shape != expected:
            findings.append(Finding(
                "convention", (name,),
                f"the backward of {who} returned a gradient of shape {shape} for {name} "
                f"(forward's argument {position}), which has shape {expected}; autograd summed it "
                "back to that shape over the broadcast axes without a word, and the values checked "
                "are that sum: a caller of backward itself gets the wrong shape",
                fix=f"sum over the broadcast axes in backward: `grad.sum_to_size({expected})`",
                details={"gradient_shape": list(shape), "input_shape": list(expected)},
            ))
    return findings
