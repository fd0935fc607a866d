"""The analytic side: vector-Jacobian products from backward, and what backward got wrong
beyond the values.

Contract: ``vjp(outputs, leaves, weights, who) -> dict[name, Tensor]`` is the gradient of
``sum_k <weights_k, outputs_k>`` with respect to each named leaf, as backward computes it (zero
for a leaf the outputs do not depend on). A backward that raises, returns the wrong number of
gradients or a gradient of the wrong shape becomes an ``InputError`` that says which rule of a
custom ``autograd.Function`` it broke. ``backward_findings`` compares three products (weights,
the same weights again, and ``SCALE_PROBE`` times them): backward must be deterministic and
linear in ``grad_output``. At one ``grad_output`` a backward that ignores it looks like a
gradient off by an odd constant (a scalar output) or by no pattern at all; the probe names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from gradproof.errors import InputError
from gradproof.report import Finding

# grad_output is multiplied by this in the linearity probe: a negative non-unit factor also
# catches a backward that uses only grad_output's sign or magnitude.
SCALE_PROBE = -2.0

# Relative disagreement (to the largest entry) beyond which two products differ: a linear
# backward gives SCALE_PROBE * g up to rounding of sums reordered at most.
PROBE_RTOL = 1e-9

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


def backward_findings(
    first: Mapping[str, torch.Tensor],
    again: Mapping[str, torch.Tensor],
    scaled: Mapping[str, torch.Tensor],
    who: str,
) -> list[Finding]:
    """Findings from three products: ``first`` and ``again`` at the same weights, ``scaled`` at
    ``SCALE_PROBE`` times them. One finding per tensor at most."""
    findings = []
    for name, g in first.items():
        scale = _largest(g, again[name], scaled[name])
        if not _close(again[name], g, scale):
            findings.append(_nondeterministic(name, g, again[name], who))
        elif not _close(scaled[name], SCALE_PROBE * g, scale):
            findings.append(_not_linear(name, g, scaled[name], who))
    return findings


def _nondeterministic(name: str, g: torch.Tensor, again: torch.Tensor, who: str) -> Finding:
    difference = float((again - g).abs().max())
    return Finding(
        "nondeterministic", (name,),
        f"two backward passes of {who} for the same inputs and grad_output gave gradients of "
        f"{name} that differ by up to {difference:.2e}: backward depends on something besides "
        "its saved tensors (hidden state, unseeded randomness, nondeterministic kernels)",
        details={"max_difference": difference},
    )


def _not_linear(name: str, g: torch.Tensor, scaled: torch.Tensor, who: str) -> Finding:
    # The factor backward applied when grad_output was scaled by SCALE_PROBE (least squares).
    norm = float((g * g).sum())
    factor = float((g * scaled).sum()) / norm if norm else float("nan")
    if abs(factor - 1.0) < 1e-6:
        behaviour = "did not change at all: backward ignores grad_output"
    else:
        behaviour = f"changed by a factor {factor:.3g} instead"
    return Finding(
        "scaled", (name,),
        f"the backward of {who} does not scale with grad_output: with grad_output multiplied "
        f"by {SCALE_PROBE:g} the gradient of {name} should be {SCALE_PROBE:g} times as large, but "
        f"it {behaviour}, so its values are off by a factor that depends on grad_output",
        fix=(
            f"multiply the local derivative by grad_output in backward (the chain rule): "
            f"`return grad_output * d_out_d_{name}`, not `d_out_d_{name}` alone"
        ),
        details={"cause": "grad_output_scale_ignored", "probe": SCALE_PROBE, "factor": factor},
    )


def _largest(*tensors: torch.Tensor) -> float:
    return max(float(t.abs().max()) if t.numel() else 0.0 for t in tensors)


def _close(a: torch.Tensor, b: torch.Tensor, scale: float) -> bool:
    if not a.numel():
        return True
    return float((a - b).abs().max()) <= PROBE_RTOL * scale


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.replace(" ", "").split(",") if n)
