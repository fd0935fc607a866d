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

An ``Autoencoder`` is one configuration of ``Network`` (``model.network``: target the input,
the squared error with its 1/2, the weight decay ``lambda/2 * sum W**2`` on the weights
alone): the network's layer walk computes its forward pass, objective and backward pass, and
this class adds what training and checkpoints read (its options and their config format, the
workspace, the code layer's values).

``loss_and_grad(params, x)`` returns fresh arrays. A train loop passes
``out=model.workspace(batch)`` instead: the forward and backward passes then write into that
workspace's preallocated arrays, and the returned gradients live there until the next call.
It may also skip the scans for NaN and Inf (``check_finite=False``) and ask for the gradient
times a factor (``grad_scale``), such as its step size, at no extra cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gradproof.errors import InputError
from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.layers import FRESH, DenseBuffers
from gradproof.nn.losses import LOSSES, REDUCTIONS
from gradproof.nn.network import ForwardCache, Network, Workspace
from gradproof.nn.screened import ScreenedPass
from gradproof.nn.validation import (
    Params,
    all_finite,
    check_choice,
    check_dtype,
    check_flag,
    check_nonnegative,
    check_open_unit,
    checked_params,
    is_positive_int,
    listed,
    real_array,
    real_number,
)


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
    network : Network
        This configuration of ``Network``, whose layer walk computes the forward pass, the
        objective and the backward pass.
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
            check_choice(output_activation, ACTIVATIONS, "output_activation")
        ]
        self.loss_name: str = check_choice(loss, LOSSES, "loss")
        self.reduction: str = check_choice(reduction, REDUCTIONS, "reduction")
        self.bias: bool = check_flag(bias, "bias")
        self.tied: bool = check_flag(tied, "tied")
        self.weight_decay: float = check_nonnegative(weight_decay, "weight_decay")
        self.sparsity_weight: float = check_nonnegative(sparsity_weight, "sparsity_weight")
        self.sparsity_target: float = check_open_unit(sparsity_target, "sparsity_target")
        self.dtype: np.dtype = check_dtype(dtype)
        self.code_layer: int = 1 + int(np.argmin(self.layers[1:-1]))
        self._check_combination()
        self.network: Network = Network(
            layers=self.layers, activation=self.activations[:-1], output=self.activations[-1],
            loss_name=self.loss_name, reduction=self.reduction, target="input", bias=self.bias,
            tied=self.tied, weight_decay=self.weight_decay, sparsity_weight=self.sparsity_weight,
            sparsity_target=self.sparsity_target, dtype=self.dtype.name,
        )
        # Layer k (1-based) reads its weight from params[name], transposed or not.
        self._weight_of = self.network._weight_of
        self._shapes: dict[str, tuple[int, ...]] = self.network.param_shapes()
        self._kept_params: _CheckedParams | None = None  # see _loss_params

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
        return self.network.init_params(seed)

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
        # An array of the model's dtype already (a loss's usual x) needs no conversion.
        arr = x if type(x) is np.ndarray and x.dtype == self.dtype else real_array(
            x, "x", self.dtype
        )
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

    def weights(self, params: Mapping[str, Any]) -> list[np.ndarray]:
        """The effective weight of each layer, (layers[k-1], layers[k]); tied decoders as W.T."""
        checked = self._checked_params(params)
        return [self.network._layer_params(checked, k)["W"] for k in range(1, self.n_layers + 1)]

    # ----- forward ----------------------------------------------------------------------

    def forward(self, params: Mapping[str, Any], x: Any) -> tuple[np.ndarray, ForwardCache]:
        """Reconstruct ``x`` and keep what the backward pass needs.

        Returns
        -------
        z : ndarray, shape (batch, n_visible)
        cache : ForwardCache
        """
        cache = self.network._forward(self._checked_params(params), self.validate_input(x))
        return cache.activations[-1], cache

    def encode(self, params: Mapping[str, Any], x: Any) -> np.ndarray:
        """The code layer's activation, shape (batch, layers[code_layer])."""
        cache = self.network._forward(
            self._checked_params(params), self.validate_input(x), depth=self.code_layer
        )
        return cache.activations[-1]

    def reconstruct(self, params: Mapping[str, Any], x: Any) -> np.ndarray:
        """The output ``z``, shape (batch, n_visible)."""
        z, _ = self.forward(params, x)
        return z

    # ----- objective --------------------------------------------------------------------

    def _check_code_mean(self, cache: ForwardCache) -> None:
        """Refuse code units whose mean activation is exactly 0 or 1, where KL(rho || rho_hat)
        is infinite: every example saturates their sigmoid (in float32 from |s| of about 17
        on), and an infinite objective would otherwise pass on unexplained. A train loop that
        checks the loss itself skips this (``check_finite=False``) and gets inf."""
        if not self.sparsity_weight:
            return
        rho_hat = self.network._code_mean(cache)
        for value in (0.0, 1.0):
            stuck = [str(int(u)) for u in np.flatnonzero(rho_hat == value)]
            if stuck:
                raise InputError(
                    f"the sparsity penalty is infinite: code unit(s) {listed(stuck)} of layer "
                    f"{self.code_layer} have a mean activation of exactly {value:g} in "
                    f"{self.dtype.name} (every example saturates their sigmoid), where "
                    "KL(rho || rho_hat) takes the log of 0; the network is saturated: use "
                    "parameters of a smaller scale, or float64 (where a mean reaches 0 or 1 "
                    "only much further out)"
                )

    def loss(self, params: Mapping[str, Any], x: Any) -> float:
        """The objective J for a batch ``x`` of shape (batch, n_visible)."""
        checked, screened = self._loss_params(params)
        x = self._checked_input(x, check_finite=False)
        net = self.network
        # One error state for the pass and the data term: a NaN or an Inf met there is found
        # below, not warned of. The pass screens the parameters, the data term x (every data
        # term of LOSSES is non-finite where its target is).
        with np.errstate(over="ignore", invalid="ignore"):
            activations, pre_activations, finite = screened.run(x)
            cache = ForwardCache(activations, pre_activations)
            data = net._data_value(cache, x)
        screened_out = not (finite and math.isfinite(data))
        if screened_out:
            cache = self._scanned_forward(params, checked, x)
        self._check_code_mean(cache)
        if screened_out:  # again, outside the silent error state: its warnings as ever
            data = net._data_value(cache, x)
        return net._total(checked, cache, data)

    def _loss_params(self, params: Mapping[str, Any]) -> tuple[Params, ScreenedPass]:
        """``params`` checked (names, shapes, dtypes; not finiteness), and the forward pass of
        their arrays that screens them for NaN and Inf itself (``nn.screened``), for ``loss``.

        A black-box gradient check passes the same dict of the same arrays thousands of
        times, only their values changed, and on a small batch these checks and the making of
        the pass are a noticeable share of a call (bench/README.md). So the last result is
        kept while ``params`` is the same dict holding the same arrays, of the same shapes and
        dtypes: what the checks read has not changed, and the pass reads the arrays' values
        afresh at every run. It is kept only where no array needed a conversion, since a
        converted copy would not follow later changes of the caller's values. (The model holds
        on to that dict until a call with another one.)
        """
        kept = self._kept_params
        if kept is not None and kept.fits(params):
            return kept.checked, kept.screened
        checked = self._checked_params(params, check_finite=False)
        layer_params = [
            self.network._layer_params(checked, k) for k in range(1, self.n_layers + 1)
        ]
        screened = ScreenedPass(self.network._dense, layer_params)
        if all(params[name] is value for name, value in checked.items()):
            self._kept_params = _CheckedParams(params, checked, screened)
        return checked, screened

    def _scanned_forward(
        self, params: Mapping[str, Any], checked: Params, x: np.ndarray
    ) -> ForwardCache:
        """The forward pass for ``loss`` where the screened pass or the data term met a NaN
        or an Inf (or a sum that overflowed): the full scans name what is not finite, in the
        order ``validate_params`` then ``validate_input``; where every value is finite, the
        plain layer walk makes the pass again, warning of an overflow in its products as
        numpy does (and ``loss`` its data term again)."""
        self._checked_params(params)
        self._checked_input(x)
        with np.errstate(invalid="ignore"):  # an overflow warns; the NaN it may lead to does not
            return self.network._forward(checked, x)

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
        scale = real_number(grad_scale, "grad_scale")
        cache = self.network._forward(checked, x, buffers=buffers)
        if check_finite:
            self._check_code_mean(cache)
        data, d_s = self.network._data_term(cache, x, FRESH if buffers is None else buffers[-1])
        grads = self.network._backward(checked, cache, d_s, buffers, scale)
        return self.network._total(checked, cache, data), grads

    def workspace(self, batch: int) -> Workspace:
        """Preallocated arrays for ``loss_and_grad(params, x, out=...)`` with ``batch`` rows."""
        if not is_positive_int(batch):
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
        _, d_s = self.network._data_term(cache, cache.activations[0])
        return self.network._backward(checked, cache, d_s)

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
                f"unknown model config key(s): {listed(unknown)}; "
                f"valid keys: {listed(list(_CONFIG_KEYS))}"
            )
        return cls(**config)

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"Autoencoder({options})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Autoencoder):
            return NotImplemented
        return self.config() == other.config()


class _CheckedParams:
    """The params of a call of ``Autoencoder.loss`` as checked, and the arrays they were."""

    def __init__(self, given: Mapping[str, Any], checked: Params, screened: ScreenedPass) -> None:
        self.given = given
        self.checked = checked
        self.screened = screened
        self.kinds = [(name, value, value.shape, value.dtype) for name, value in checked.items()]

    def fits(self, params: Mapping[str, Any]) -> bool:
        """Whether ``params`` is the dict checked, still holding the same arrays (no more),
        each of the shape and dtype it had."""
        if params is not self.given or len(params) != len(self.kinds):
            return False
        for name, value, shape, dtype in self.kinds:  # a loop: a generator costs more here
            if params.get(name) is not value or value.shape != shape or value.dtype != dtype:
                return False
        return True


_CONFIG_KEYS = (
    "layers", "activation", "output_activation", "loss", "reduction", "bias", "tied",
    "weight_decay", "sparsity_weight", "sparsity_target", "dtype",
)


# ----- option checks ------------------------------------------------------------------------


def _check_layers(layers: Sequence[int] | None, n_visible: Any, n_hidden: Any) -> list[int]:
    source = "layers"
    if layers is None:
        layers, source = [n_visible, n_hidden, n_visible], "[n_visible, n_hidden, n_visible]"
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (Sequence, np.ndarray)):
        raise InputError(f"layers must be a list of sizes like [784, 200, 784]; got {layers!r}")
    sizes = list(layers)
    if not all(is_positive_int(v) for v in sizes):
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


def _check_hidden_activations(activation: str | Sequence[str], n_hidden_layers: int) -> list[str]:
    if isinstance(activation, str):
        return [check_choice(activation, ACTIVATIONS, "activation")] * n_hidden_layers
    if not isinstance(activation, Sequence):
        raise InputError(
            "activation must be a name or a list of names, one per hidden layer; "
            f"got {activation!r}"
        )
    names = [check_choice(name, ACTIVATIONS, "activation") for name in activation]
    if len(names) != n_hidden_layers:
        raise InputError(
            f"activation lists one name per hidden layer: expected {n_hidden_layers}, "
            f"got {len(names)} ({names})"
        )
    return names
