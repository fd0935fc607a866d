"""``check_module``: the gradients of a ``torch.nn.Module``'s parameters against finite
differences."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call

from gradproof.errors import InputError
from gradproof.report import GradReport
from gradproof.torch.core import Problem, run
from gradproof.torch.precision import precision_note
from gradproof.torch.tensors import check_values, float64_copy, to_numpy


def check_module(
    module: torch.nn.Module,
    inputs: Any,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    *,
    seed: int = 0,
    **options: Any,
) -> GradReport:
    """Check the gradients of a module's parameters against finite differences.

    Parameters
    ----------
    module : torch.nn.Module
        The module; it is not changed (the check runs on a float64 deep copy).
    inputs : tensor or tuple
        The arguments of ``module(*inputs)`` (one tensor for a single argument). Floating
        tensors are passed as float64 copies; other values as they are.
    loss_fn : callable, optional
        ``loss_fn(output) -> scalar tensor``. By default the output (a tensor or a tuple of
        tensors) is reduced by a fixed random projection, as in ``check_function``.
    seed : int
        Seeds the projection, torch's random state at every forward (dropout draws the same
        mask at every evaluation; the caller's random state is restored) and the sampled
        entries of a large check.
    **options
        Passed to ``gradproof.check_gradient`` (``mode``, ``samples``, ``budget`` ...).

    Returns
    -------
    GradReport
        One ``TensorResult`` per parameter that requires grad, named as
        ``module.named_parameters()`` names it (``"0.weight"``, ``"encoder.bias"``); a
        parameter shared by two submodules appears once, under its first name.

    Raises
    ------
    InputError
        ``module`` not a Module; no parameter requiring grad; NaN or +-inf in a parameter, NaN
        in an input; a forward or ``loss_fn`` that raises or returns something other than the
        expected tensors; a backward that fails (explained).

    Notes
    -----
    Parameters of float32, float16 or bfloat16 are checked in a float64 copy of the module,
    with a ``precision`` note. The module's mode is kept: in training mode batch norm uses the
    batch statistics (and updates only the copy's running statistics).
    """
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    parameters = {name: p for name, p in module.named_parameters() if p.requires_grad}
    if not parameters:
        raise InputError(
            f"{type(module).__name__} has no parameter that requires grad: there is nothing to "
            "check (are they all frozen with requires_grad_(False)?)"
        )
    for name, p in parameters.items():
        check_values(p, f"parameter {name}", allow_inf=False)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    for k, x in enumerate(args):
        if isinstance(x, torch.Tensor):
            check_values(x, f"input {k} of the module", allow_inf=True)
    copies = tuple(
        float64_copy(x, f"input {k}") if isinstance(x, torch.Tensor) else x
        for k, x in enumerate(args)
    )
    double = _float64_module(module)
    values = {name: to_numpy(p) for name, p in parameters.items()}
    devices = {name: p.device for name, p in parameters.items()}

    def forward(tensors: dict[str, torch.Tensor]) -> Any:
        fresh = tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in copies)
        output = functional_call(double, tensors, fresh)
        return output if loss_fn is None else _loss_value(loss_fn, output)

    weights = None if loss_fn is None else _unit_weight
    note = precision_note(parameters)
    problem = Problem(values, devices, forward, "the module", weights, [note] if note else [])
    return run(problem, seed, options)


def _float64_module(module: torch.nn.Module) -> torch.nn.Module:
    try:
        double = copy.deepcopy(module)
    except Exception as exc:
        raise InputError(
            f"{type(module).__name__} could not be copied ({type(exc).__name__}: {exc}); the check "
            "needs a float64 copy of the module"
        ) from exc
    return double.to(dtype=torch.float64)


def _loss_value(loss_fn: Callable[[Any], torch.Tensor], output: Any) -> torch.Tensor:
    try:
        value = loss_fn(output)
    except Exception as exc:
        raise InputError(f"loss_fn raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
        what = (
            f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
            if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
        )
        hint = " (.item() drops the graph: return the tensor)" if isinstance(value, float) else ""
        raise InputError(
            f"loss_fn must return a scalar floating-point tensor; it returned {what}{hint}"
        )
    return value.reshape(())


def _unit_weight(outputs: Any) -> tuple[torch.Tensor]:
    # A loss is checked as it is: grad_output 1, as loss.backward() would use.
    return (torch.ones((), dtype=torch.float64, device=outputs[0].device),)
