"""A forward pass that also tells whether its weights and biases are finite, mostly from its own
products.

Contract: ``ScreenedPass(layers, layer_params, product=np.matmul)`` holds the dense ``layers``
with their ``{"W", "b"}`` (``layer_params``, in order); ``run(x)`` runs them on ``x`` (batch,
n_in) and returns ``(activations, pre_activations, finite)``: what ``Dense.forward`` gives layer
by layer, ``[x, a1, ..., an]`` and ``[s1, ..., sn]``, bit for bit, with ``finite`` False
wherever a weight or a bias holds a NaN or an infinity. It never raises on a NaN or an infinity,
says nothing about ``x``, and runs inside its caller's ``np.errstate(over="ignore",
invalid="ignore")``, where it warns of nothing either. ``finite`` may also be False for finite
parameters whose pre-activations' squares overflow: it is a reason to scan the parameters
(``checked_params``), not a verdict. ``screened_forward(layers, layer_params, x)`` is one run of
a pass made for it, in that error state.

Why: a black-box gradient check calls a loss thousands of times, and a max and a min of each
weight (the scan ``checked_params`` makes) read every weight twice more beside the product
that reads it once: on the seed network and one image they were a large share of each call.
Here the forward pass's own products do the screening. And on a small batch the arithmetic is
so short that each numpy call's own cost counts: a pass is made once for parameter arrays
that a caller passes again and again (``Autoencoder.loss`` keeps it while they stay the same
arrays), holding each layer's weight, bias and activation at hand; its caller sets the
floating-point error state once around the whole pass (a NaN or an infinity it meets is
reported through ``finite``, and an overflow of the sigmoid's exp is its right limit; the
caller's own arithmetic, such as a loss's data term, may share that state), and it screens
every layer in one test at the end.

Why it is sound. Layer k computes ``s = a @ W + b``. In IEEE arithmetic a NaN or an infinity
stays non-finite through every product with a nonzero finite number and through every sum it
enters (an infinity plus a finite number is that infinity, opposite infinities give NaN, NaN
plus anything is NaN), so ``s`` is finite only if ``b`` is and every row ``W[i]`` whose input
``a[:, i]`` is nonzero in some example is; no BLAS can leave out a nonzero multiplier and stay
correct. Each ``s`` is screened through its sum of squares (``np.vdot(s, s)``, one BLAS dot:
cheaper on a small batch than numpy's own reduction), which is finite only if every entry is
(or overflows, past about 1e154 in float64 and 1e19 in float32: the false alarm above, which
costs a scan and changes no result); these are added up and the total tested once, finite
only if each is. The rows whose input is zero in every example (most pixels
of an MNIST batch) are another matter: ``0 * inf`` is NaN, but a BLAS may skip a zero
multiplier (the reference BLAS once did). Whether the product at hand does is measured once
per kind of product (``zeros_keep_nan``: the operands' shapes, dtypes and memory layouts, from
which numpy and its BLAS pick the kernel; the thread count is assumed not to matter, since
OpenBLAS splits a product among threads running the same kernel); where it may skip them,
those rows get their own product, ``idle @ W`` with ``idle`` 1 exactly where the input is
always zero: a multiplier of 1 leaves each of them in a column sum. That product reads the
whole weight again, as much as the forward pass's own product on one example, so it runs
only where it is needed. The inputs of the first layer are the caller's to check (``x``); a
later layer's are finite wherever the earlier ``s`` were, since the activations map finite
numbers to finite numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gradproof.nn.layers import Dense

# An array's kind as far as the choice of a product's kernel goes: shape, dtype, and whether
# it is C-contiguous, Fortran-contiguous or neither (then None: not measured, always screened).
_Kind = tuple[tuple[int, ...], np.dtype, str]
Product = Callable[[np.ndarray, np.ndarray], np.ndarray]


def sum_is_finite(arr: np.ndarray) -> bool:
    """Whether the sum of ``arr`` is finite: False wherever an entry is NaN or infinite, and
    also where finite entries sum past the dtype's range. One pass, where a max and a min, or
    ``isfinite(arr).all()``, take two numpy calls: on a loss's small arrays the calls cost more
    than the arithmetic."""
    return math.isfinite(np.add.reduce(arr, axis=None))


class ScreenedPass:
    """A forward pass of fixed parameter arrays that screens them on the way.

    Parameters
    ----------
    layers : sequence of Dense
    layer_params : sequence of dict
        Layer k's ``{"W": (n_in, n_out), "b": (n_out,)}`` (``"b"`` optional), in order. The
        pass reads these arrays at every run: values written into them later count.
    product : callable
        The matrix product, ``product(a, W) -> a @ W`` (numpy's by default).
    """

    def __init__(
        self, layers: Sequence[Dense], layer_params: Sequence[Mapping[str, np.ndarray]],
        product: Product = np.matmul,
    ) -> None:
        self._layers = [
            (params["W"], params.get("b"), layer.activation.bare_forward)
            for layer, params in zip(layers, layer_params)
        ]
        self._product = product
        # x's kind -> which layers need their idle rows screened (``run``).
        self._idle_screens: dict[tuple[object, ...], tuple[bool, ...]] = {}

    def run(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
        """Run the layers on ``x`` and screen the parameters for NaN and Inf, inside the
        caller's ``np.errstate(over="ignore", invalid="ignore")``.

        Parameters
        ----------
        x : ndarray, shape (batch, n_in)

        Returns
        -------
        activations : list of ndarray
            ``[x, a1, ..., an]``, ``a_k`` of shape (batch, n_k).
        pre_activations : list of ndarray
            ``[s1, ..., sn]``.
        finite : bool
            True only if every weight and bias is finite (see the module docstring); False
            also where squares of finite pre-activations overflow.
        """
        # What the decisions depend on: x's kind, or for an x of no measured kind (whose first
        # product is always screened) its shape and dtype, which give the later layers' kinds.
        key = _kind(x) or (x.shape, x.dtype, None)
        idle_screens = self._idle_screens.get(key)
        if idle_screens is None:
            idle_screens = self._idle_screens[key] = self._needs_idle_screens(x)
        activations, pre_activations, finite, total = [x], [], True, 0.0
        a = x
        # The arithmetic of Dense.forward: an overflow or an invalid operation, silent in the
        # caller's error state, leaves a non-finite s, which the screen reports.
        for (weight, bias, forward), idle in zip(self._layers, idle_screens):
            if idle:
                finite = finite and _idle_rows_finite(a, weight)
            s = self._product(a, weight)  # (batch, n_k)
            if bias is not None:
                s += bias  # in place: s is our own array
            a = forward(s)  # (batch, n_k)
            activations.append(a)
            pre_activations.append(s)
            total += np.vdot(s, s)
        return activations, pre_activations, finite and math.isfinite(total)

    def _needs_idle_screens(self, x: np.ndarray) -> tuple[bool, ...]:
        """Whether each layer's product may skip the NaN of a weight row that only zero inputs
        multiply, for inputs like ``x``: a later layer's input is an activation the pass made,
        a fresh C-ordered array."""
        needs, kind, dtype = [], _kind(x), x.dtype
        for weight, _, _ in self._layers:
            needs.append(not zeros_keep_nan(kind, _kind(weight), self._product))
            dtype = np.result_type(dtype, weight)
            kind = ((x.shape[0], weight.shape[1]), dtype, "C")
        return tuple(needs)


def screened_forward(
    layers: Sequence[Dense], layer_params: Sequence[Mapping[str, np.ndarray]], x: np.ndarray,
    product: Product = np.matmul,
) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    """One ``ScreenedPass(layers, layer_params, product).run(x)``, in the error state it
    needs."""
    with np.errstate(over="ignore", invalid="ignore"):
        return ScreenedPass(layers, layer_params, product).run(x)


def _idle_rows_finite(a: np.ndarray, weight: np.ndarray) -> bool:
    """Whether the rows of ``weight`` whose input is zero in every example of ``a`` are finite
    (as far as their column sums show)."""
    idle = ~a.any(axis=0)  # (n_in,): inputs that are zero in every example
    if not idle.any():
        return True
    return sum_is_finite(idle.astype(a.dtype) @ weight)  # (n_k,): the idle rows' column sums


def _kind(arr: np.ndarray) -> _Kind | None:
    flags = arr.flags
    if not flags.aligned:
        return None
    order = "C" if flags.c_contiguous else "F" if flags.f_contiguous else None
    return None if order is None else (arr.shape, arr.dtype, order)


@functools.lru_cache(maxsize=64)
def zeros_keep_nan(
    inputs: _Kind | None, weight: _Kind | None, product: Product = np.matmul
) -> bool:
    """Whether ``product(inputs, weight)`` (numpy's ``@`` by default) for operands of these
    kinds (``_kind``) keeps a NaN of the weight that only zero inputs multiply, measured once
    per pair of kinds.

    Two products of fresh operands of the same kinds: every input zero against a weight of NaN,
    and inputs alternating 0 and 1 along ``n_in`` against NaN only in the rows of the zeros.
    Every output must be NaN in both: a kernel that skips zero multipliers, one by one or a
    whole block of them, leaves some output finite. False (screen) for an operand of no
    measured kind.
    """
    if inputs is None or weight is None:
        return False
    a = np.zeros(inputs[0], inputs[1], order=inputs[2])  # (batch, n_in)
    w = np.full(weight[0], np.nan, weight[1], order=weight[2])  # (n_in, n_out)
    if not np.isnan(product(a, w)).all():
        return False
    a[:, 1::2] = 1.0
    w[1::2] = 1.0
    return bool(np.isnan(product(a, w)).all())
