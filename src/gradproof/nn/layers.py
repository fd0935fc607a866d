"""A dense (fully connected) layer with hand-written forward and backward passes.

Contract (row-vector convention, params a dict ``{"W": (n_in, n_out), "b": (n_out,)}`` where
``"b"`` is optional)::

    forward(params, x, out=FRESH) -> (a, cache)            # s = x @ W + b, a = f(s)
    backward(params, cache, d_a, out=FRESH) -> (d_x, grads)
    backward_linear(params, cache, d_s, out=FRESH) -> (d_x, grads)

``grads`` is keyed and shaped like ``params``. ``backward`` starts from dJ/da;
``backward_linear`` starts from dJ/ds, for losses whose gradient is simplest there (the
cross-entropy of a sigmoid output). Neither writes into its arguments; ``backward`` sets the
tiny entries of the dJ/ds it makes to zero (``flush_tiny``), and a caller of
``backward_linear`` flushes its own. ``out`` says where the results go: ``FRESH`` (new arrays,
the default) or ``DenseBuffers.allocate(...)``, arrays a train loop reuses every step so that
a step allocates none of its large arrays (a fresh one over about 128 KiB can cost page faults)
and finds them in cache. Results written into buffers are overwritten by the next call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gradproof.nn import aligned
from gradproof.nn.activations import Activation


@dataclass(frozen=True)
class DenseCache:
    """What a dense layer's backward pass needs from its forward pass.

    Attributes
    ----------
    x : ndarray, shape (batch, n_in)
        The layer's input.
    s : ndarray, shape (batch, n_out)
        The pre-activation ``x @ W + b``.
    a : ndarray, shape (batch, n_out)
        The output ``f(s)``.
    """

    x: np.ndarray
    s: np.ndarray
    a: np.ndarray


@dataclass(frozen=True)
class DenseBuffers:
    """Where a dense layer writes its results: preallocated arrays, or None for fresh ones.

    Attributes
    ----------
    s, a : ndarray, shape (batch, n_out), or None
        The pre-activation and the output.
    d_s : ndarray, shape (batch, n_out), or None
        dJ/ds.
    d_x : ndarray, shape (batch, n_in), or None
        dJ/dx, Fortran-ordered (``backward_linear`` computes its transpose).
    d_w : ndarray, shape (n_in, n_out), or None
        dJ/dW.
    d_b : ndarray, shape (n_out,), or None
        dJ/db.
    scratch : ndarray, shape (batch, n_out), or None
        Room for an intermediate: |dJ/ds| while flushing tiny values (``flush_tiny``), or at
        the output layer the loss's activation derivative.
    mask : ndarray of bool, shape (batch, n_out), or None
        The entries to flush.
    """

    s: np.ndarray | None = None
    a: np.ndarray | None = None
    d_s: np.ndarray | None = None
    d_x: np.ndarray | None = None
    d_w: np.ndarray | None = None
    d_b: np.ndarray | None = None
    scratch: np.ndarray | None = None
    mask: np.ndarray | None = None

    @classmethod
    def allocate(
        cls, batch: int, n_in: int, n_out: int, dtype: np.dtype, *, bias: bool,
        need_d_x: bool = True,
    ) -> DenseBuffers:
        """Buffers for one layer of shape (n_in, n_out) and batches of ``batch`` rows.

        Every array starts on a 64-byte boundary (``gradproof.nn.aligned``).

        ``need_d_x=False`` leaves out ``d_x`` (the first layer of a network needs none).
        """
        rows = (batch, n_out)

        def empty(shape: tuple[int, ...], order: str = "C") -> np.ndarray:
            return aligned.empty(shape, dtype, order)

        return cls(
            s=empty(rows),
            a=empty(rows),
            d_s=empty(rows),
            d_x=empty((batch, n_in), order="F") if need_d_x else None,
            d_w=empty((n_in, n_out)),
            d_b=empty((n_out,)) if bias else None,
            scratch=empty(rows),
            mask=aligned.empty(rows, np.bool_),
        )


# Every result a fresh array.
FRESH = DenseBuffers()


def flush_tiny(
    arr: np.ndarray, *, scratch: np.ndarray | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Set the entries of ``arr`` smaller in magnitude than ``tiny / eps`` to zero, in place.

    ``tiny`` is the dtype's smallest normal number and ``eps`` its machine epsilon: the bound
    is 9.9e-32 in float32 and 1.0e-292 in float64. A saturated sigmoid makes deltas like
    ``z**2`` that underflow into subnormal numbers, and a matmul multiplying deltas a little
    above ``tiny`` by activations below 1 makes subnormal products; every multiply that reads
    or writes a subnormal number takes a slow microcode path: a float32 step of the seed
    network with saturated outputs took 24 to 38 ms instead of 1.7 to 2.1 ms with the flush
    (1.3 ms unsaturated). Dropping the entries is harmless: each changes a gradient entry by
    less than 1e-31 (float32) times the layer input it multiplies, far below the resolution of
    any parameter it updates and of any tolerance a gradient check derives.

    Parameters
    ----------
    arr : ndarray of float
    scratch : ndarray, optional
        Same shape and dtype as ``arr``, for ``|arr|``.
    mask : ndarray of bool, optional
        Same shape as ``arr``.

    Returns
    -------
    ndarray
        ``arr`` itself.
    """
    info = np.finfo(arr.dtype)
    below = np.less(np.abs(arr, out=scratch), info.tiny / info.eps, out=mask)
    if below.any():  # usually nothing (or only exact zeros) to flush: skip the masked write
        np.copyto(arr, 0, where=below)
    return arr


@dataclass(frozen=True)
class Dense:
    """A dense layer ``a = f(x @ W + b)`` with activation ``f``."""

    activation: Activation

    def forward(
        self, params: Mapping[str, np.ndarray], x: np.ndarray, *, out: DenseBuffers = FRESH
    ) -> tuple[np.ndarray, DenseCache]:
        """Compute the layer's output.

        Parameters
        ----------
        params : mapping
            ``"W"`` of shape (n_in, n_out) and optionally ``"b"`` of shape (n_out,).
        x : ndarray, shape (batch, n_in)
        out : DenseBuffers
            Where ``s`` and ``a`` go (fresh arrays by default).

        Returns
        -------
        a : ndarray, shape (batch, n_out)
        cache : DenseCache
        """
        s = np.matmul(x, params["W"], out=out.s)  # (batch, n_out)
        b = params.get("b")
        if b is not None:
            s += b  # in place: s is our own array
        a = self.activation.forward(s, out=out.a)  # (batch, n_out)
        return a, DenseCache(x=x, s=s, a=a)

    def backward(
        self, params: Mapping[str, np.ndarray], cache: DenseCache, d_a: np.ndarray,
        *, need_d_x: bool = True, out: DenseBuffers = FRESH,
    ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """Backpropagate dJ/da through the activation and the affine map.

        Parameters
        ----------
        params : mapping
            As for ``forward``.
        cache : DenseCache
            From ``forward`` with the same params.
        d_a : ndarray, shape (batch, n_out)
            dJ/da.
        need_d_x : bool
            False skips computing dJ/dx (the first layer of a network needs none).
        out : DenseBuffers
            Where ``d_s``, ``d_x`` and the gradients go (fresh arrays by default).

        Returns
        -------
        d_x : ndarray of shape (batch, n_in), or None when ``need_d_x`` is False
        grads : dict
            dJ/dW and (when ``params`` has ``"b"``) dJ/db, shaped like ``params``.
        """
        d_s = self.activation.derivative(cache.a, out=out.d_s)  # (batch, n_out): f'(s)
        d_s *= d_a  # dJ/ds = dJ/da * f'(s)
        flush_tiny(d_s, scratch=out.scratch, mask=out.mask)
        return self.backward_linear(params, cache, d_s, need_d_x=need_d_x, out=out)

    def backward_linear(
        self, params: Mapping[str, np.ndarray], cache: DenseCache, d_s: np.ndarray,
        *, need_d_x: bool = True, out: DenseBuffers = FRESH,
    ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """Backpropagate dJ/ds (the pre-activation gradient) through ``s = x @ W + b``.

        Parameters and returns as for ``backward``, with ``d_s`` of shape (batch, n_out).
        """
        grads = {"W": np.matmul(cache.x.T, d_s, out=out.d_w)}  # (n_in, n_out), like W
        if "b" in params:
            grads["b"] = np.add.reduce(d_s, axis=0, out=out.d_b)  # (n_out,), like b
        if not need_d_x:
            return None, grads
        # dJ/dx = dJ/ds @ W.T, computed as its transpose W @ dJ/ds.T: the same sums in the same
        # order, but OpenBLAS runs this orientation faster for the seed's decoder (in a training
        # step at batch 100, 170 instead of 200 us; an epoch 2.5% shorter) and no slower for
        # the other stacks tried. dJ/dx is then Fortran-ordered.
        d_x_t = np.matmul(params["W"], d_s.T, out=None if out.d_x is None else out.d_x.T)
        return d_x_t.T, grads  # (batch, n_in), like x
