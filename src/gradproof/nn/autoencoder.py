"""A feed-forward autoencoder with hand-written forward and backward passes.

Row-vector convention: ``x`` is (batch, n_visible); layer k computes
``s_k = a_{k-1} @ W_k + b_k`` and ``a_k = f_k(s_k)`` with ``a_0 = x``; the output is
``z = a_n``. Parameters are a dict of named arrays ``W1, b1, ..., Wn, bn`` with ``W_k`` of
shape (layers[k-1], layers[k]). With ``tied=True`` (a symmetric stack) only the encoder weights
``W1 .. W_{n/2}`` exist and decoder layer ``n+1-k`` uses ``W_k.T``; all biases exist.

The objective is::

    J = r(m) * data(x, z)                          # r(m) = 1 ("sum") or 1/m ("mean")
        + weight_decay / 2 * sum over weights of sum(W**2)
        + sparsity_weight * sum_j KL(rho || rho_hat_j)

where ``rho_hat`` is the batch mean of the code layer's activation (the narrowest hidden
layer; the middle one in an hourglass stack). Every method validates its inputs and raises
``InputError`` naming the offending option, tensor or shape.

``loss_and_grad(params, x)`` returns fresh arrays. A train loop passes
``out=model.workspace(batch)`` instead: the forward and backward passes then write into that
workspace's preallocated arrays, and the returned gradients live there until the next call.
It may also skip the scans for NaN and Inf (``check_finite=False``) and ask for the gradient
times a factor (``grad_scale``), such as its step size, at no extra cost.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof.errors import InputError
from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.layers import FRESH, Dense, DenseBuffers, DenseCache, flush_tiny
from gradproof.nn.losses import LOSSES, REDUCTIONS, kl_divergence, kl_slope
from gradproof.nn.screened import screened_forward

# Supported compute dtypes, by name.
DTYPES: tuple[str, ...] = ("float64", "float32")

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class ForwardCache:
    """The values a forward pass keeps for the backward pass.

    Attributes
    ----------
    activations : list of ndarray
        ``[x, a1, ..., an]``; ``a_k`` has shape (batch, layers[k]) and ``a_n`` is the output.
    pre_activations : list of ndarray
        ``[s1, ..., sn]``; ``s_k`` has shape (batch, layers[k]).
    """

    activations: list[np.ndarray]
    pre_activations: list[np.ndarray]


@dataclass(frozen=True)
class Workspace:
    """Preallocated arrays for ``loss_and_grad(..., out=workspace)`` on batches of one size.

    Made by ``Autoencoder.workspace(batch)``. A step that reuses it allocates none of its
    large arrays: a fresh array over about 128 KiB can cost a page fault per 4 KiB whenever
    the allocator has handed the memory back to the system, and reused arrays stay in cache.

    Attributes
    ----------
    batch : int
        Rows of every batch it serves.
    layers : list of int
        The layer sizes of the model it was made for.
    dtype : numpy.dtype
    buffers : tuple of DenseBuffers
        One per weight layer; the first has no room for dJ/dx. The loss writes the output
        layer's dJ/ds into the last one's ``d_s``, using its ``scratch``.
    """

    batch: int
    layers: list[int]
    dtype: np.dtype
    buffers: tuple[DenseBuffers, ...]


class Autoencoder:
    """A symmetric-or-not stack of dense layers trained to reproduce its input.

    Parameters
    ----------
    n_visible, n_hidden : int
        Sizes of the seed network ``[n_visible, n_hidden, n_visible]``; ignored when ``layers``
        is given.
    layers : list of int, optional
        All layer sizes, input first, e.g. ``[784, 256, 64, 256, 784]``; at least 3 entries,
        the first equal to the last.
    activation : str or list of str
        Activation of the hidden layers: one name for all of them, or one per hidden layer.
        Keys of ``ACTIVATIONS``.
    output_activation : str
        Activation of the output layer.
    loss : str
        Data term, a key of ``LOSSES``: "squared" (0.5 * sum((z - x)**2)) or "cross_entropy"
        (needs a sigmoid output).
    reduction : str
        "sum" over examples, or "mean" (the data term divided by the batch size).
    bias : bool
        Whether the layers have biases.
    tied : bool
        Decoder weights are the transposes of the encoder weights (needs symmetric ``layers``
        with an even number of weight layers).
    weight_decay : float
        lambda >= 0 of the penalty lambda/2 * sum(W**2) on the weights (not the biases); a
        tied weight is one parameter and counts once.
    sparsity_weight : float
        beta >= 0 of the KL sparsity penalty on the code layer (needs a sigmoid code layer).
    sparsity_target : float
        rho in (0, 1), the target mean activation of each code unit.
    dtype : str
        "float64" or "float32": the dtype of the parameters and of all arithmetic.

    Attributes
    ----------
    layers : list of int
    n_layers : int
        Number of weight layers (2 for the seed network).
    activations : list of str
        One name per weight layer, the output layer's last.
    code_layer : int
        Index k (1 .. n_layers-1) of the code layer ``a_k``: the narrowest hidden layer, the
        first one if several tie.
    loss_name, reduction, bias, tied, weight_decay, sparsity_weight, sparsity_target
        The options, validated.
    dtype : numpy.dtype
    """

    def __init__(
        self,
        n_visible: int = 784,
        n_hidden: int = 200,
        *,
        layers: Sequence[int] | None = None,
        activation: str | Sequence[str] = "sigmoid",
        output_activation: str = "sigmoid",
        loss: str = "squared",
        reduction: str = "sum",
        bias: bool = True,
        tied: bool = False,
        weight_decay: float = 0.0,
        sparsity_weight: float = 0.0,
        sparsity_target: float = 0.05,
        dtype: str = "float64",
    ) -> None:
        self.layers: list[int] = _check_layers(layers, n_visible, n_hidden)
        self.n_layers: int = len(self.layers) - 1
        self.activations: list[str] = _check_hidden_activations(activation, self.n_layers - 1) + [
            _check_choice(output_activation, ACTIVATIONS, "output_activation")
        ]
        self.loss_name: str = _check_choice(loss, LOSSES, "loss")
        self.reduction: str = _check_choice(reduction, REDUCTIONS, "reduction")
        self.bias: bool = _check_flag(bias, "bias")
        self.tied: bool = _check_flag(tied, "tied")
        self.weight_decay: float = _check_nonnegative(weight_decay, "weight_decay")
        self.sparsity_weight: float = _check_nonnegative(sparsity_weight, "sparsity_weight")
        self.sparsity_target: float = _check_open_unit(sparsity_target, "sparsity_target")
        self.dtype: np.dtype = _check_dtype(dtype)
        self.code_layer: int = 1 + int(np.argmin(self.layers[1:-1]))
        self._check_combination()

        self._dense = [Dense(ACTIVATIONS[name]) for name in self.activations]
        # Layer k (1-based) reads its weight from params[name], transposed or not.
        n = self.n_layers
        self._weight_of: list[tuple[str, bool]] = [
            (f"W{n + 1 - k}", True) if self.tied and k > n // 2 else (f"W{k}", False)
            for k in range(1, n + 1)
        ]
        self._shapes: dict[str, tuple[int, ...]] = {}
        for k, (name, transposed) in enumerate(self._weight_of, start=1):
            if not transposed:
                self._shapes[name] = (self.layers[k - 1], self.layers[k])
            if self.bias:
                self._shapes[f"b{k}"] = (self.layers[k],)

    @property
    def n_visible(self) -> int:
        """Size of the input (and output) layer."""
        return self.layers[0]

    def _check_combination(self) -> None:
        n = self.n_layers
        if self.tied and (self.layers != self.layers[::-1] or n % 2):
            raise InputError(
                "tied weights need a symmetric layers list with an even number of weight "
                f"layers, like [784, 256, 64, 256, 784]; got {self.layers}"
            )
        needed = LOSSES[self.loss_name].output_activation
        if needed is not None and self.activations[-1] != needed:
            raise InputError(
                f"loss {self.loss_name!r} needs output_activation {needed!r}; "
                f"got {self.activations[-1]!r}"
            )
        code_activation = self.activations[self.code_layer - 1]
        if self.sparsity_weight > 0 and code_activation != "sigmoid":
            raise InputError(
                "the sparsity penalty needs a sigmoid code layer (its mean activation must lie "
                f"in (0, 1)); the code layer (layer {self.code_layer}, width "
                f"{self.layers[self.code_layer]}) has activation {code_activation!r}"
            )

    # ----- parameters -------------------------------------------------------------------

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter, in the order W1, b1, W2, b2, ..."""
        return dict(self._shapes)

    def init_params(self, seed: int | np.random.Generator = 0) -> Params:
        """Fresh parameters: weights uniform in +-r, biases zero.

        ``r = s * sqrt(6 / (fan_in + fan_out))`` with ``s = 4`` when the layer's activation is
        the sigmoid and 1 otherwise. Weights are drawn in float64 in the order W1, W2, ... and
        then cast, so one seed gives the same network (up to rounding) in either dtype.

        Parameters
        ----------
        seed : int or numpy.random.Generator

        Returns
        -------
        dict of str to ndarray
        """
        return initial_params(
            self._shapes, lambda k: ACTIVATIONS[self.activations[k - 1]].init_scale,
            self.dtype, seed,
        )

    def validate_params(self, params: Mapping[str, Any]) -> None:
        """Raise ``InputError`` unless ``params`` fits this model.

        Checks: exactly the names of ``param_shapes()`` (listing the missing and the extra
        ones), real numeric arrays, the right shapes, finite values. Arrays of another real
        dtype are accepted and computed with in the model's dtype.
        """
        self._checked_params(params)

    def validate_input(self, x: Any) -> np.ndarray:
        """Return ``x`` as an array of the model's dtype (no copy when it already is one).

        Raises ``InputError`` unless ``x`` is a finite real array of shape (batch, n_visible)
        with batch >= 1.
        """
        return self._checked_input(x)

    def _checked_input(self, x: Any, check_finite: bool = True) -> np.ndarray:
        arr = _real_array(x, "x", self.dtype)
        if arr.ndim != 2 or arr.shape[1] != self.n_visible or arr.shape[0] == 0:
            raise InputError(
                f"x must have shape (batch, n_visible) = (batch, {self.n_visible}) with "
                f"batch >= 1; got shape {arr.shape}"
            )
        if check_finite and not all_finite(arr):
            raise InputError("x has non-finite values (NaN or Inf); the inputs must be finite")
        return arr

    def _checked_params(self, params: Mapping[str, Any], check_finite: bool = True) -> Params:
        described = f"this model (layers {self.layers}, bias={self.bias}, tied={self.tied})"
        return checked_params(params, self._shapes, self.dtype, described, check_finite)

    def _layer_params(self, params: Params, k: int) -> Params:
        """The layer-local params {"W", "b"} of layer k (1-based), tied weights transposed."""
        name, transposed = self._weight_of[k - 1]
        local = {"W": params[name].T if transposed else params[name]}
        if self.bias:
            local["b"] = params[f"b{k}"]
        return local

    def weights(self, params: Mapping[str, Any]) -> list[np.ndarray]:
        """The effective weight of each layer, (layers[k-1], layers[k]); tied decoders as W.T."""
        checked = self._checked_params(params)
        return [self._layer_params(checked, k)["W"] for k in range(1, self.n_layers + 1)]

    # ----- forward ----------------------------------------------------------------------

    def _forward(self, params: Params, x: np.ndarray, depth: int | None = None,
                 buffers: Sequence[DenseBuffers] | None = None) -> tuple[np.ndarray, ForwardCache]:
        """Run layers 1 .. depth (all by default) on validated inputs, into ``buffers``."""
        outs = buffers or (FRESH,) * self.n_layers
        activations = [x]
        pre_activations = []
        a = x
        for k, layer in enumerate(self._dense[:depth], start=1):
            a, cache = layer.forward(self._layer_params(params, k), a, out=outs[k - 1])
            activations.append(a)  # (batch, layers[k])
            pre_activations.append(cache.s)
        return a, ForwardCache(activations, pre_activations)

    def forward(self, params: Mapping[str, Any], x: Any) -> tuple[np.ndarray, ForwardCache]:
        """Reconstruct ``x`` and keep what the backward pass needs.

        Returns
        -------
        z : ndarray, shape (batch, n_visible)
        cache : ForwardCache
        """
        return self._forward(self._checked_params(params), self.validate_input(x))

    def encode(self, params: Mapping[str, Any], x: Any) -> np.ndarray:
        """The code layer's activation, shape (batch, layers[code_layer])."""
        code, _ = self._forward(
            self._checked_params(params), self.validate_input(x), depth=self.code_layer
        )
        return code

    def reconstruct(self, params: Mapping[str, Any], x: Any) -> np.ndarray:
        """The output ``z``, shape (batch, n_visible)."""
        z, _ = self.forward(params, x)
        return z

    # ----- objective --------------------------------------------------------------------

    def _code_mean(self, cache: ForwardCache) -> np.ndarray:
        return cache.activations[self.code_layer].mean(axis=0)  # (layers[code_layer],)

    def _objective(self, params: Params, cache: ForwardCache) -> float:
        x = cache.activations[0]
        data = LOSSES[self.loss_name].value(x, cache.activations[-1], cache.pre_activations[-1])
        return self._total(params, cache, data)

    def _data_term(
        self, cache: ForwardCache, buffers: DenseBuffers = FRESH
    ) -> tuple[float, np.ndarray]:
        """The loss's data term and its dJ/ds at the output, into the output layer's buffers."""
        return LOSSES[self.loss_name].value_and_delta(
            cache.activations[0], cache.activations[-1], cache.pre_activations[-1],
            self._dense[-1].activation, out=buffers.d_s, scratch=buffers.scratch,
        )

    def _total(self, params: Params, cache: ForwardCache, data: float) -> float:
        """The objective from the data term's value: the reduction and the penalties."""
        factor = REDUCTIONS[self.reduction](cache.activations[0].shape[0])
        total = factor * data
        if self.weight_decay:
            total += 0.5 * self.weight_decay * sum(
                float(np.vdot(params[name], params[name])) for name in self._weight_names()
            )
        if self.sparsity_weight:
            kl = kl_divergence(self.sparsity_target, self._code_mean(cache))
            total += self.sparsity_weight * float(np.sum(kl))
        return float(total)

    def _check_code_mean(self, cache: ForwardCache) -> None:
        """Refuse code units whose mean activation is exactly 0 or 1, where KL(rho || rho_hat)
        is infinite: every example saturates their sigmoid (in float32 from |s| of about 17
        on), and an infinite objective would otherwise pass on unexplained. A train loop that
        checks the loss itself skips this (``check_finite=False``) and gets inf."""
        if not self.sparsity_weight:
            return
        rho_hat = self._code_mean(cache)
        for value in (0.0, 1.0):
            stuck = [str(int(u)) for u in np.flatnonzero(rho_hat == value)]
            if stuck:
                raise InputError(
                    f"the sparsity penalty is infinite: code unit(s) {_names(stuck)} of layer "
                    f"{self.code_layer} have a mean activation of exactly {value:g} in "
                    f"{self.dtype.name} (every example saturates their sigmoid), where "
                    "KL(rho || rho_hat) takes the log of 0; the network is saturated: use "
                    "parameters of a smaller scale, or float64 (where a mean reaches 0 or 1 "
                    "only much further out)"
                )

    def _weight_names(self) -> list[str]:
        return [name for name in self._shapes if name.startswith("W")]

    def loss(self, params: Mapping[str, Any], x: Any) -> float:
        """The objective J for a batch ``x`` of shape (batch, n_visible)."""
        checked = self._checked_params(params, check_finite=False)
        arr = self._checked_input(x, check_finite=False)
        cache = self._screened_forward(checked, arr)
        self._check_code_mean(cache)
        return self._objective(checked, cache)

    def _screened_forward(self, params: Params, x: np.ndarray) -> ForwardCache:
        """``_forward`` for ``loss``, which a gradient check calls thousands of times: the
        forward pass screens the parameters for NaN and Inf itself (``nn.screened``), and
        only where it finds one (or a sum that overflowed) do the full scans run, in the
        order ``validate_params`` then ``validate_input``, to name what is not finite."""
        layer_params = [self._layer_params(params, k) for k in range(1, self.n_layers + 1)]
        with np.errstate(invalid="ignore"):  # NaN and Inf are refused below, not warned of
            activations, pre_activations, finite = screened_forward(self._dense, layer_params, x)
        if not (finite and all_finite(x)):
            self._checked_params(params)
            self._checked_input(x)
        return ForwardCache(activations, pre_activations)

    def loss_and_grad(
        self, params: Mapping[str, Any], x: Any, *, out: Workspace | None = None,
        check_finite: bool = True, grad_scale: float = 1.0,
    ) -> tuple[float, Params]:
        """The objective and its gradient, keyed and shaped like ``params``, in the model dtype.

        Parameters
        ----------
        params : dict of str to ndarray
        x : ndarray, shape (batch, n_visible)
        out : Workspace, optional
            From ``self.workspace(batch)``. The gradients are then written into it and stay
            valid until its next use; without it they are fresh arrays.
        check_finite : bool
            False skips the scans of ``params`` and ``x`` for NaN and Inf (names, shapes and
            dtypes are still checked), for a caller that checks them itself, like a train
            loop. Non-finite values then give a non-finite loss or gradient instead of an
            ``InputError``, and so does a sparsity penalty made infinite by a code unit whose
            mean activation is exactly 0 or 1 (refused otherwise, as ``loss`` refuses it).
        grad_scale : float
            Return ``grad_scale`` times the gradient. It scales the error that the backward
            pass starts from, so it costs nothing; a train loop passes its step size.

        Returns
        -------
        loss : float
            The objective itself, unscaled.
        grads : dict of str to ndarray
        """
        checked = self._checked_params(params, check_finite)
        x = self._checked_input(x, check_finite)
        buffers = None if out is None else self._check_workspace(out, x)
        scale = _real_number(grad_scale, "grad_scale")
        _, cache = self._forward(checked, x, buffers=buffers)
        if check_finite:
            self._check_code_mean(cache)
        data, d_s = self._data_term(cache, FRESH if buffers is None else buffers[-1])
        grads = self._backward(checked, cache, d_s, buffers, scale)
        return self._total(checked, cache, data), grads

    def workspace(self, batch: int) -> Workspace:
        """Preallocated arrays for ``loss_and_grad(params, x, out=...)`` with ``batch`` rows."""
        if not _is_positive_int(batch):
            raise InputError(f"a workspace needs a batch size >= 1; got {batch!r}")
        sizes, n = self.layers, self.n_layers
        # The first layer needs no dJ/dx.
        buffers = tuple(
            DenseBuffers.allocate(
                int(batch), sizes[k - 1], sizes[k], self.dtype, bias=self.bias, need_d_x=k > 1
            )
            for k in range(1, n + 1)
        )
        return Workspace(int(batch), list(sizes), self.dtype, buffers)

    def _check_workspace(self, workspace: Any, x: np.ndarray) -> tuple[DenseBuffers, ...]:
        if not isinstance(workspace, Workspace):
            raise InputError(
                f"out must be a Workspace from model.workspace(batch); got "
                f"{type(workspace).__name__}"
            )
        if workspace.layers != self.layers or workspace.dtype != self.dtype:
            raise InputError(
                f"the workspace was made for layers {workspace.layers} in "
                f"{workspace.dtype.name}; this model has layers {self.layers} in "
                f"{self.dtype.name}"
            )
        if workspace.batch != x.shape[0]:
            raise InputError(
                f"the workspace holds batches of {workspace.batch} rows; x has {x.shape[0]}"
            )
        return workspace.buffers

    # ----- backward ---------------------------------------------------------------------

    def backward(self, params: Mapping[str, Any], cache: ForwardCache) -> Params:
        """The gradient of the objective, from a ``forward(params, x)`` cache.

        Returns
        -------
        dict of str to ndarray
            Keyed and shaped like ``params``.
        """
        checked = self._checked_params(params)
        if not isinstance(cache, ForwardCache) or len(cache.pre_activations) != self.n_layers:
            raise InputError("cache must be the ForwardCache returned by this model's forward()")
        _, d_s = self._data_term(cache)
        return self._backward(checked, cache, d_s)

    def _backward(self, params: Params, cache: ForwardCache, d_s: np.ndarray,
                  buffers: Sequence[DenseBuffers] | None = None, scale: float = 1.0) -> Params:
        """The gradient times ``scale`` from the data term's dJ/ds, which it overwrites.

        Every term of the gradient is linear in the starting error, so scaling ``d_s`` scales
        them all.
        """
        acts, pres = cache.activations, cache.pre_activations
        batch = acts[0].shape[0]
        n = self.n_layers
        outs = buffers or (FRESH,) * n
        out_layer = self._dense[-1]
        factor = scale * REDUCTIONS[self.reduction](batch)
        if factor != 1.0:
            d_s *= factor
        flush_tiny(d_s, scratch=outs[-1].scratch, mask=outs[-1].mask)
        d_x, layer_grads = out_layer.backward_linear(
            self._layer_params(params, n), DenseCache(acts[n - 1], pres[n - 1], acts[n]), d_s,
            out=outs[-1],
        )
        grads: Params = {}
        self._collect(grads, n, layer_grads)
        for k in range(n - 1, 0, -1):
            d_a = d_x  # (batch, layers[k]): dJ/da_k, our own array
            if k == self.code_layer and self.sparsity_weight:
                d_a += scale * self._sparsity_grad(cache, batch)  # the same row for each example
            d_x, layer_grads = self._dense[k - 1].backward(
                self._layer_params(params, k), DenseCache(acts[k - 1], pres[k - 1], acts[k]), d_a,
                need_d_x=k > 1, out=outs[k - 1],
            )
            self._collect(grads, k, layer_grads)
        if self.weight_decay:
            decay = scale * self.weight_decay
            for name in self._weight_names():
                grads[name] += decay * params[name]  # d/dW of lambda/2 * sum(W**2), scaled
        return {name: grads[name] for name in self._shapes}

    def _collect(self, grads: Params, k: int, layer_grads: Params) -> None:
        """File layer k's gradients under the model's names; tied weights sum both uses."""
        collect_layer_grads(grads, self._weight_of[k - 1], self.bias, k, layer_grads)

    def _sparsity_grad(self, cache: ForwardCache, batch: int) -> np.ndarray:
        # d/da_ij of beta * sum_j KL(rho || rho_hat_j), rho_hat_j = mean_i a_ij:
        # beta / m * KL'(rho_hat_j)
        slope = kl_slope(self.sparsity_target, self._code_mean(cache))
        return (self.sparsity_weight / batch) * slope

    # ----- configuration ----------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The options as a JSON-ready dict; ``Autoencoder.from_config`` rebuilds the model."""
        return {
            "layers": list(self.layers),
            "activation": list(self.activations[:-1]),
            "output_activation": self.activations[-1],
            "loss": self.loss_name,
            "reduction": self.reduction,
            "bias": self.bias,
            "tied": self.tied,
            "weight_decay": self.weight_decay,
            "sparsity_weight": self.sparsity_weight,
            "sparsity_target": self.sparsity_target,
            "dtype": self.dtype.name,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Autoencoder:
        """Rebuild a model from ``config()`` output; missing keys take their defaults."""
        if not isinstance(config, Mapping):
            raise InputError(f"a model config must be a dict; got {type(config).__name__}")
        unknown = [str(key) for key in config if key not in _CONFIG_KEYS]
        if unknown:
            raise InputError(
                f"unknown model config key(s): {_names(unknown)}; "
                f"valid keys: {_names(list(_CONFIG_KEYS))}"
            )
        return cls(**config)

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"Autoencoder({options})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Autoencoder):
            return NotImplemented
        return self.config() == other.config()


_CONFIG_KEYS = (
    "layers", "activation", "output_activation", "loss", "reduction", "bias", "tied",
    "weight_decay", "sparsity_weight", "sparsity_target", "dtype",
)


# ----- validation helpers -------------------------------------------------------------------


def collect_layer_grads(
    grads: Params, weight: tuple[str, bool], bias: bool, k: int, layer_grads: Params
) -> None:
    """File layer k's gradients in ``grads`` under the network's names: ``weight`` is the
    name of its weight and whether the layer uses it transposed; a tied weight sums the
    gradients of both its uses."""
    name, transposed = weight
    d_w = layer_grads["W"].T if transposed else layer_grads["W"]  # like params[name]
    if name in grads:
        d_w += grads[name]  # d_w is this layer's own array, fresh or in a workspace
    grads[name] = d_w
    if bias:
        grads[f"b{k}"] = layer_grads["b"]


def initial_params(
    shapes: Mapping[str, tuple[int, ...]],
    init_scale: Callable[[int], float],
    dtype: Any,
    seed: int | np.random.Generator,
) -> Params:
    """Weights ``Wk`` uniform in +-r, ``r = init_scale(k) * sqrt(6 / (fan_in + fan_out))``,
    drawn in float64 in the order of ``shapes`` and then cast to ``dtype``; biases zero.

    Raises
    ------
    InputError
        A ``seed`` that is neither a non-negative integer nor a numpy Generator.
    """
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"seed must be a non-negative integer or a numpy Generator; got {seed!r}"
        ) from err
    params: Params = {}
    for name, shape in shapes.items():
        if name.startswith("W"):
            fan_in, fan_out = shape
            r = init_scale(int(name[1:])) * math.sqrt(6.0 / (fan_in + fan_out))
            params[name] = rng.uniform(-r, r, size=shape).astype(dtype, copy=False)
        else:
            params[name] = np.zeros(shape, dtype=dtype)
    return params


def checked_params(
    params: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    dtype: Any,
    described: str,
    check_finite: bool = True,
) -> Params:
    """``params`` as arrays of ``dtype``, exactly the names and shapes of ``shapes``.

    ``described`` names the network in the messages ("this model (layers [...], ...)").

    Raises
    ------
    InputError
        Not a dict; missing or extra names (listed); a non-numeric array, a wrong shape or
        (with ``check_finite``) a NaN or Inf, naming the parameter.
    """
    if not isinstance(params, Mapping):
        raise InputError(
            f"params must be a dict of named arrays ({', '.join(shapes)}); "
            f"got {type(params).__name__}"
        )
    missing = [name for name in shapes if name not in params]
    extra = [str(name) for name in params if name not in shapes]
    if missing or extra:
        raise InputError(
            f"params do not fit {described}: missing {_names(missing)}; extra "
            f"{_names(extra)}; expected exactly {_names(list(shapes))}"
        )
    checked: Params = {}
    for name, shape in shapes.items():
        arr = _real_array(params[name], f"parameter {name}", np.dtype(dtype))
        if arr.shape != shape:
            raise InputError(f"parameter {name} has shape {arr.shape}; expected {shape}")
        if check_finite and not all_finite(arr):
            raise InputError(f"parameter {name} has non-finite values (NaN or Inf)")
        checked[name] = arr
    return checked


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _check_choice(value: Any, registry: Mapping[str, Any], what: str) -> str:
    if not isinstance(value, str) or value not in registry:
        raise InputError(f"unknown {what} {value!r}; choose one of: {', '.join(registry)}")
    return value


def _check_layers(layers: Sequence[int] | None, n_visible: Any, n_hidden: Any) -> list[int]:
    source = "layers"
    if layers is None:
        layers, source = [n_visible, n_hidden, n_visible], "[n_visible, n_hidden, n_visible]"
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (Sequence, np.ndarray)):
        raise InputError(f"layers must be a list of sizes like [784, 200, 784]; got {layers!r}")
    sizes = list(layers)
    if not all(_is_positive_int(v) for v in sizes):
        raise InputError(f"{source} must hold positive integers; got {sizes!r}")
    sizes = [int(v) for v in sizes]
    if len(sizes) < 3:
        raise InputError(
            f"layers needs at least 3 sizes (visible, hidden..., visible); got {sizes}"
        )
    if sizes[0] != sizes[-1]:
        raise InputError(
            f"layers must end with the size it starts with (an autoencoder reproduces its "
            f"input); got {sizes}"
        )
    return sizes


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check_hidden_activations(activation: str | Sequence[str], n_hidden_layers: int) -> list[str]:
    if isinstance(activation, str):
        return [_check_choice(activation, ACTIVATIONS, "activation")] * n_hidden_layers
    if not isinstance(activation, Sequence):
        raise InputError(
            "activation must be a name or a list of names, one per hidden layer; "
            f"got {activation!r}"
        )
    names = [_check_choice(name, ACTIVATIONS, "activation") for name in activation]
    if len(names) != n_hidden_layers:
        raise InputError(
            f"activation lists one name per hidden layer: expected {n_hidden_layers}, "
            f"got {len(names)} ({names})"
        )
    return names


def _check_flag(value: Any, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be True or False; got {value!r}")
    return bool(value)


def _real_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"{what} must be a finite number; got {value!r}")
    return float(value)


def _check_nonnegative(value: Any, what: str) -> float:
    number = _real_number(value, what)
    if number < 0:
        raise InputError(f"{what} must be >= 0 (it weighs a penalty); got {value!r}")
    return number


def _check_open_unit(value: Any, what: str) -> float:
    number = _real_number(value, what)
    if not 0 < number < 1:
        raise InputError(
            f"{what} must lie strictly between 0 and 1 (a target mean activation); got {value!r}"
        )
    return number


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if dtype is None or resolved is None or resolved.name not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    return resolved


def _real_array(value: Any, what: str, dtype: np.dtype) -> np.ndarray:
    """``value`` as an array of ``dtype``, without a copy when it already is one."""
    try:
        arr = np.asarray(value)
    except ValueError as err:
        raise InputError(f"{what} is not a rectangular numeric array: {err}") from err
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what} has dtype {arr.dtype}; expected real numbers ({dtype.name})")
    return arr.astype(dtype, copy=False)


def all_finite(arr: np.ndarray) -> bool:
    """Whether every entry of a float array is finite (neither NaN nor +-Inf).

    The array's max and min instead of a boolean mask of the whole array: NaN anywhere makes
    both NaN, +Inf shows in the max and -Inf in the min. Both are single-threaded SIMD
    reductions; a BLAS dot product is faster on an idle machine but runs threaded, and on
    loaded cores it stalled for milliseconds per call inside a gradient check's loss loop.
    """
    if arr.size == 0:
        return True
    return bool(np.isfinite(arr.max()) and np.isfinite(arr.min()))
