"""Custom autograd Functions with planted backward bugs, each beside its correct version.

A catalogue for the tests and the benchmarks (it ships with neither the package nor its API,
being wrong on purpose): ``CASES`` maps a case name to a ``PlantedCase``
holding the buggy Function, the correct one, a seeded input maker, the input names, and the
finding gradproof should give (kind and input). Every Function follows one layout: forward
and backward side by side, a shape comment on each gradient, and a buggy variant that
subclasses the correct one and overrides backward only, with a comment saying what it broke.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.autograd import Function


class Linear(Function):
    """``y = x @ W + b``: x (N, D_in), W (D_in, D_out), b (D_out,) -> y (N, D_out)."""

    @staticmethod
    def forward(ctx, x, W, b):
        ctx.save_for_backward(x, W)
        return x @ W + b

    @staticmethod
    def backward(ctx, g):
        x, W = ctx.saved_tensors
        return g @ W.T, x.T @ g, g.sum(0)  # (N, D_in), (D_in, D_out) like W, (D_out,) like b


class LinearTransposedWeight(Linear):
    """Bug: the weight gradient is built as ``g.T @ x``, W's transpose (square W: torch cannot
    tell from the shape)."""

    @staticmethod
    def backward(ctx, g):
        x, W = ctx.saved_tensors
        return g @ W.T, g.T @ x, g.sum(0)  # (D_out, D_in): transposed


class LinearBiasFirstRow(Linear):
    """Bug: the bias gradient is the first sample's, not the sum over the batch. (Returning
    ``g`` unsummed would not do: torch sums a gradient of a broadcast shape itself.)"""

    @staticmethod
    def backward(ctx, g):
        x, W = ctx.saved_tensors
        return g @ W.T, x.T @ g, g[0]  # (D_out,): one row of the batch only


class BatchNorm(Function):
    """``y = gamma * (x - mu) / std + beta``, mu and std over the batch (axis 0): x (N, D),
    gamma and beta (D,) -> y (N, D)."""

    @staticmethod
    def forward(ctx, x, gamma, beta):
        mu = x.mean(0)
        std = (((x - mu) ** 2).mean(0) + 1e-5).sqrt()
        xhat = (x - mu) / std
        ctx.save_for_backward(xhat, gamma, std)
        return gamma * xhat + beta

    @staticmethod
    def backward(ctx, g):
        xhat, gamma, std = ctx.saved_tensors
        dxhat = g * gamma
        dx = (dxhat - dxhat.mean(0) - xhat * (dxhat * xhat).mean(0)) / std
        return dx, (g * xhat).sum(0), g.sum(0)


class BatchNormStatisticsAsConstants(BatchNorm):
    """Bug: ``dx = dxhat / std``, the batch mean and variance treated as constants."""

    @staticmethod
    def backward(ctx, g):
        xhat, gamma, std = ctx.saved_tensors
        return g * gamma / std, (g * xhat).sum(0), g.sum(0)


class MeanSquaredError(Function):
    """``mean((x - t)**2)`` over all N entries: x, t of one shape -> a scalar."""

    @staticmethod
    def forward(ctx, x, t):
        ctx.save_for_backward(x, t)
        return ((x - t) ** 2).mean()

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        return g * 2 * (x - t) / x.numel(), None  # like x; t is a constant


class MeanSquaredErrorNoMean(MeanSquaredError):
    """Bug: the 1/N of the mean is missing."""

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        return g * 2 * (x - t), None


class MeanSquaredErrorIgnoresGradOutput(MeanSquaredError):
    """Bug: backward drops ``g`` (right only when the loss is the final output)."""

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        return 2 * (x - t) / x.numel(), None


class NegExp(Function):
    """``exp(-x)`` entry by entry."""

    @staticmethod
    def forward(ctx, x):
        y = torch.exp(-x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return -g * y  # d exp(-x)/dx = -exp(-x)


class NegExpSignFlipped(NegExp):
    """Bug: the inner derivative -1 of ``exp(-x)`` is forgotten."""

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


class Mul(Function):
    """``a * b`` entry by entry, a and b of one shape."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g * b, g * a  # like a, like b


class MulSwapped(Mul):
    """Bug: the two gradients are returned in the wrong order."""

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g * a, g * b


class MulMissingGrad(Mul):
    """Bug: the gradient of ``b`` is never computed (None reads as zero to torch)."""

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g * b, None


class Square(Function):
    """``x**2`` entry by entry, x (N, D)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class SquareLastRowMissing(Square):
    """Bug: a row loop that stops one row early, leaving the last row of the gradient zero."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        grad = torch.zeros_like(x)
        for i in range(x.shape[0] - 1):
            grad[i] = 2 * x[i] * g[i]
        return grad


class Cube(Function):
    """``x**3`` entry by entry."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * g


class CubeGradOutputSignOnly(Cube):
    """Bug: backward keeps only the sign of ``g`` and drops its scale (right for one-hot
    ``g``, which is all a Jacobian built row by row ever passes)."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * g.sign()


@dataclass(frozen=True)
class PlantedCase:
    """One planted bug beside its correct version.

    Attributes
    ----------
    buggy, correct : type of Function
        The two Functions (call ``.apply``).
    make_inputs : callable
        ``make_inputs(generator, n, d)`` -> the float64 inputs (checked ones with
        requires_grad) for a batch of ``n`` rows of width ``d``.
    reference : callable
        The forward in plain torch operations, whose gradient torch's autograd derives: an
        oracle independent of the hand-written backward.
    names : tuple of str
        One name per input.
    kind : str
        The finding kind gradproof gives the bug.
    tensors : tuple of str
        The finding's tensors (two for a swap).
    bug : str
        The bug in a few words.
    """

    buggy: type[Function]
    correct: type[Function]
    make_inputs: Callable[[torch.Generator, int, int], tuple[torch.Tensor, ...]]
    reference: Callable[..., torch.Tensor]
    names: tuple[str, ...]
    kind: str
    tensors: tuple[str, ...]
    bug: str

    def inputs(self, seed: int = 0, n: int = 6, d: int = 4) -> tuple[torch.Tensor, ...]:
        """Seeded float64 inputs: a batch of ``n`` rows of width ``d``."""
        return self.make_inputs(torch.Generator().manual_seed(seed), n, d)


def _randn(generator: torch.Generator, *shape: int, grad: bool = True) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(grad)


def _linear_inputs(g: torch.Generator, n: int, d: int) -> tuple[torch.Tensor, ...]:
    return _randn(g, n, d), _randn(g, d, d), _randn(g, d)  # x (N, D), W (D, D) square, b (D,)


def _batch_norm_inputs(g: torch.Generator, n: int, d: int) -> tuple[torch.Tensor, ...]:
    # two more rows than asked: a batch of 2 normalises every column to -1 and 1
    return _randn(g, n + 2, d), _randn(g, d), _randn(g, d)  # x (N, D), gamma, beta (D,)


def _target_inputs(g: torch.Generator, n: int, d: int) -> tuple[torch.Tensor, ...]:
    return _randn(g, n, d), _randn(g, n, d, grad=False)  # x, the target t (a constant)


def _one_input(g: torch.Generator, n: int, d: int) -> tuple[torch.Tensor, ...]:
    return (_randn(g, n, d),)


def _two_inputs(g: torch.Generator, n: int, d: int) -> tuple[torch.Tensor, ...]:
    return _randn(g, n, d), _randn(g, n, d)


class LinearBroadcastBias(Linear):
    """Not wrong in value: the bias gradient is returned as g, shape (N, D_out), which autograd
    sums back to b's (D_out,) without a word."""

    @staticmethod
    def backward(ctx, g):
        x, W = ctx.saved_tensors
        return g @ W.T, x.T @ g, g  # the last is (N, D_out), not b's (D_out,)


class SquareAddsGradOutput(Square):
    """Bug: ``+`` typed for ``*``: the gradient is affine, not linear, in grad_output."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x + g


class SquarePair(Function):
    """Two outputs ``(x * x, 3 * x)`` whose backward takes one gradient argument only."""

    @staticmethod
    def forward(ctx, x):
        return x * x, 3 * x

    @staticmethod
    def backward(ctx, g):  # bug: forward has two outputs, so backward(ctx, g1, g2)
        return g


class SquareAndTriple(Function):
    """Two outputs ``(x * x, 3 * x)``: backward(ctx, g1, g2) = 2 x g1 + 3 g2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x, 3 * x

    @staticmethod
    def backward(ctx, g1, g2):
        (x,) = ctx.saved_tensors
        return 2 * x * g1 + 3 * g2


class SquareAndTripleMissingSecond(SquareAndTriple):
    """Bug: the contribution through the second output is dropped."""

    @staticmethod
    def backward(ctx, g1, g2):
        (x,) = ctx.saved_tensors
        return 2 * x * g1


class ScaleByConstant(Function):
    """``x * k`` for a number k, whose backward returns a gradient for k too."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.k = k
        return x * k

    @staticmethod
    def backward(ctx, g):
        return g * ctx.k, torch.ones(1)  # bug: k is not a tensor; its place takes None


def _linear(x, W, b):
    return x @ W + b


def _batch_norm(x, gamma, beta):
    mu = x.mean(0)
    return gamma * (x - mu) / (((x - mu) ** 2).mean(0) + 1e-5).sqrt() + beta


def _mse(x, t):
    return ((x - t) ** 2).mean()


def _neg_exp(x):
    return torch.exp(-x)


def _mul(a, b):
    return a * b


def _square(x):
    return x * x


def _cube(x):
    return x**3


CASES: dict[str, PlantedCase] = {
    "transposed_weight": PlantedCase(
        LinearTransposedWeight, Linear, _linear_inputs, _linear, ("x", "W", "b"), "transposed",
        ("W",), "weight gradient built transposed (square W)",
    ),
    "missing_mean": PlantedCase(
        MeanSquaredErrorNoMean, MeanSquaredError, _target_inputs, _mse, ("x", "t"), "scaled",
        ("x",), "the 1/N of a mean missing",
    ),
    "sign_flipped": PlantedCase(
        NegExpSignFlipped, NegExp, _one_input, _neg_exp, ("x",), "sign_flipped", ("x",),
        "inner derivative -1 of exp(-x) forgotten",
    ),
    "swapped_inputs": PlantedCase(
        MulSwapped, Mul, _two_inputs, _mul, ("a", "b"), "swapped", ("a", "b"),
        "two input gradients returned in the wrong order",
    ),
    "bias_first_row": PlantedCase(
        LinearBiasFirstRow, Linear, _linear_inputs, _linear, ("x", "W", "b"), "mismatch", ("b",),
        "bias gradient of one sample, not summed over the batch",
    ),
    "ignores_grad_output": PlantedCase(
        MeanSquaredErrorIgnoresGradOutput, MeanSquaredError, _target_inputs, _mse, ("x", "t"),
        "scaled", ("x",), "backward ignores grad_output (scalar loss)",
    ),
    "grad_output_sign_only": PlantedCase(
        CubeGradOutputSignOnly, Cube, _one_input, _cube, ("x",), "scaled", ("x",),
        "backward keeps grad_output's sign, drops its scale",
    ),
    "missing_gradient": PlantedCase(
        MulMissingGrad, Mul, _two_inputs, _mul, ("a", "b"), "zero", ("b",),
        "one gradient never computed (None)",
    ),
    "loop_stops_early": PlantedCase(
        SquareLastRowMissing, Square, _one_input, _square, ("x",), "partial", ("x",),
        "row loop stops one row early",
    ),
    "batch_statistics_as_constants": PlantedCase(
        BatchNormStatisticsAsConstants, BatchNorm, _batch_norm_inputs, _batch_norm,
        ("x", "gamma", "beta"), "missing_term", ("x",),
        "batch norm's backward without the paths through the batch mean and variance",
    ),
}
