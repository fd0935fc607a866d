"""One check of named tensors through a torch computation; shared by ``check_function`` and
``check_module``.

Contract: a ``Problem`` names the tensors to check (float64 numpy values, each with its
device) and a ``forward(tensors) -> outputs`` that computes the outputs from torch tensors
of those names. ``run(problem, seed, options)`` draws the projection weights, calls a custom
Function's backward directly once for its raw shapes (``backward.broadcast_findings``), takes
the analytic gradient from backward four times (the linearity products of
``gradproof.linearity``), then hands ``J(params) = sum_k <weights_k, forward(params)_k>`` and
that gradient to ``gradproof.check.check_gradient``, which does the finite differences and the
diagnosis; with several outputs, a failing gradient is checked again without each output's
term (``gradproof.missing_output``). Every evaluation runs with torch's random state seeded by
``seed`` (see ``tensors.seeded``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gradproof import blas
from gradproof.check import check_gradient
from gradproof.errors import InputError
from gradproof.linearity import SCALE_PROBE, Products, linearity_findings, with_backward_findings
from gradproof.missing_output import with_missing_outputs
from gradproof.missing_piece import with_missing_pieces
from gradproof.statistics_term import directional_slope, with_statistics_terms
from gradproof.report import Finding, GradReport
from gradproof.torch.backward import broadcast_findings, vjp
from gradproof.torch.tensors import as_outputs, check_values, project, projection, seeded, to_numpy

Forward = Callable[[Mapping[str, torch.Tensor]], Any]
Weights = Callable[[Sequence[torch.Tensor]], tuple[torch.Tensor | None, ...]]

# check_gradient's options that make no sense for tensors (they describe flat numpy vectors),
# and those this adapter sets itself.
_NOT_FOR_TENSORS = {"shapes", "order"}
_OWN = {"loss", "grad", "params", "seed"}


@dataclass
class Problem:
    """What to check.

    Attributes
    ----------
    values : dict of str to ndarray
        The checked tensors' values as float64 numpy arrays, by report name, in order.
    devices : dict of str to torch.device
        Where each checked tensor lives (the check runs there).
    forward : callable
        ``forward(tensors)`` -> a tensor or tuple of tensors, ``tensors`` keyed like ``values``.
    who : str
        How messages name the computation ("fn", "the module").
    weights : callable, optional
        ``weights(outputs)`` -> the fixed weights; the seeded random projection by default.
    notes : list of Finding
        Findings known before the check (the precision note).
    """

    values: dict[str, np.ndarray]
    devices: dict[str, torch.device]
    forward: Forward
    who: str
    weights: Weights | None = None
    notes: list[Finding] = field(default_factory=list)


def check_options(options: Mapping[str, Any]) -> None:
    """InputError for an option that ``check_gradient`` does not take or that is not for
    tensors."""
    accepted = set(inspect.signature(check_gradient).parameters) - _OWN - _NOT_FOR_TENSORS
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InputError(
            f"unknown option(s) {unknown}; the options are seed, names (check_function) and "
            f"those of check_gradient: {sorted(accepted)}"
        )


def run(problem: Problem, seed: int, options: Mapping[str, Any]) -> GradReport:
    """Check the gradient of the projected outputs w.r.t. the problem's tensors."""
    check_options(options)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    # torch's OpenMP pool and numpy's OpenBLAS, for the forwards, backwards and differences
    # alike; the check_gradient inside runs with this setting.
    with blas.limited("torch", options.get(blas.OPTION)):
        return _checked(problem, int(seed), options)


def _checked(problem: Problem, seed: int, options: Mapping[str, Any]) -> GradReport:
    evaluator = _Evaluator(problem, seed)
    leaves = evaluator.leaves()
    outputs = evaluator.outputs(leaves)
    weights = problem.weights(outputs) if problem.weights else projection(outputs, seed)
    # Before autograd frees the graph: backward's raw gradients, called directly.
    shapes = broadcast_findings(outputs, leaves, weights, problem.who)
    first = vjp(outputs, leaves, weights, problem.who)
    for name, grad in first.items():
        what = f"the gradient of {name} that the backward of {problem.who} returned"
        check_values(grad, what, allow_inf=False)
    again = evaluator.gradient(weights)
    scaled = evaluator.gradient(tuple(None if w is None else SCALE_PROBE * w for w in weights))
    zero = evaluator.gradient(tuple(None if w is None else 0 * w for w in weights))
    products = Products(
        *({n: to_numpy(g) for n, g in p.items()} for p in (first, again, scaled, zero))
    )
    notes = linearity_findings(products, problem.who, "grad_output") + shapes
    grad = {name: to_numpy(g) for name, g in first.items()}

    def check(projection_weights: Sequence[torch.Tensor | None]) -> GradReport:
        def loss(params: Mapping[str, np.ndarray]) -> float:
            return evaluator.loss(params, projection_weights)

        return check_gradient(loss, grad, problem.values, seed=int(seed), **options)

    report = with_missing_outputs(
        check(weights), len(outputs),
        lambda k: check(tuple(None if j == k else w for j, w in enumerate(weights))),
        "grad_output",
    )

    def passes(name: str, gradient: np.ndarray, quick: bool) -> bool:
        def loss(params: Mapping[str, np.ndarray]) -> float:
            return evaluator.loss({**problem.values, **params}, weights)

        how = {**options, "mode": "directional"} if quick else options
        values = {name: problem.values[name]}
        return check_gradient(loss, {name: gradient}, values, seed=int(seed), **how).passed

    upstream = [None if w is None else to_numpy(w) for w in weights]
    report = with_missing_pieces(report, problem.values, grad, upstream, passes, "grad_output")

    def slope(name: str, direction: np.ndarray) -> float:
        return directional_slope(
            lambda v: evaluator.loss({**problem.values, name: v}, weights),
            problem.values[name], direction)

    report = with_statistics_terms(report, problem.values, grad,
                                   [to_numpy(out) for out in outputs], slope, passes,
                                   "grad_output")
    return with_backward_findings(report, problem.notes, notes)


class _Evaluator:
    """Forward, gradient and projected loss of a problem, each under the seeded random state."""

    def __init__(self, problem: Problem, seed: int) -> None:
        self.problem = problem
        self.seed = seed
        self.device = next(iter(problem.devices.values()))

    def leaves(self) -> dict[str, torch.Tensor]:
        """Fresh float64 leaf tensors holding the problem's values, requiring grad."""
        devices = self.problem.devices
        return {
            name: torch.tensor(value, dtype=torch.float64, device=devices[name], requires_grad=True)
            for name, value in self.problem.values.items()
        }

    def outputs(self, tensors: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        who = self.problem.who
        with seeded(self.seed, self.device):
            try:
                result = self.problem.forward(tensors)
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"{who} raised {type(exc).__name__}: {exc}") from exc
        return as_outputs(result, who)

    def gradient(self, weights: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """Backward's gradient for ``grad_output = weights``, from a fresh forward."""
        leaves = self.leaves()
        return vjp(self.outputs(leaves), leaves, weights, self.problem.who)

    def loss(
        self, params: Mapping[str, np.ndarray], weights: Sequence[torch.Tensor | None]
    ) -> float:
        """``J = sum_k <weights_k, outputs_k>`` at ``params`` (numpy arrays, by name)."""
        tensors = {
            name: torch.as_tensor(params[name], dtype=torch.float64, device=device)
            for name, device in self.problem.devices.items()
        }
        with torch.no_grad():
            return float(project(self.outputs(tensors), weights))
