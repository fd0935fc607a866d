"""A general feed-forward network with hand-written forward and backward passes.

Row-vector convention: ``x`` is (batch, layers[0]); layer k computes ``s_k = a_{k-1} @ W_k + b_k``
and ``a_k = f_k(s_k)`` with ``a_0 = x``; the output is ``z = a_n``. Parameters are a dict of
named arrays ``W1, b1, ..., Wn, bn`` with ``W_k`` of shape (layers[k-1], layers[k]); with
``tied=True`` (a symmetric stack) only ``W1 .. W_{n/2}`` exist and layer ``n+1-k`` uses
``W_k.T``. One weight layer is logistic or softmax regression; ``Autoencoder`` is the
configuration ``target="input"`` with the default forms of its penalties.

The objective is::

    J = r(m) * o * c * data(t, z)                    # r(m) = 1 ("sum") or 1/m ("mean")
        + d(m) * sum over decayed tensors of sum(P**2)
        + sparsity_weight * sum_j KL(rho || rho_hat_j)

with ``t`` the target (the input, one-hot rows from integer labels, or the user's array),
``o = 1/layers[-1]`` with ``mean_outputs`` (a mean over every entry of the output, as
PyTorch's ``MSELoss`` and ``BCELoss`` and Keras's losses take it) and 1 otherwise,
``c = 1/2`` or 1 for the squared error (``squared_half``), ``d(m) = lambda * (1/2 if decay_half)
* (1/m if decay_mean)``, the decayed tensors the weights (and the biases with ``decay_biases``),
and ``rho_hat`` the batch mean of the code layer, the narrowest hidden layer (the first if
several tie), as in ``Autoencoder``.

The configuration is plain data: ``Network`` is a frozen dataclass of its options, checked in
one place against ``_OPTIONS`` (each option's allowed values) and ``_RULES`` (the combinations);
every violation raises ``InputError`` naming the option and what it allows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from gradproof.errors import InputError
from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.layers import FRESH, Dense, DenseBuffers, DenseCache, flush_tiny
from gradproof.nn.losses import LOSSES, REDUCTIONS, kl_divergence, kl_slope
from gradproof.nn.softmax import softmax, softmax_cross_entropy
from gradproof.nn.validation import (
    DTYPES,
    Params,
    all_finite,
    check_dtype,
    check_flag,
    check_nonnegative,
    check_open_unit,
    checked_params,
    is_positive_int,
    real_array,
)

if TYPE_CHECKING:
    from gradproof.nn.autoencoder import Autoencoder

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


# Data term name -> (targets, outputs z, pre-activations s, output activation) -> (value, dJ/ds),
# summed over the examples. The elementwise losses come from their records in LOSSES.
DataTerm = Callable[..., tuple[float, np.ndarray]]
DATA_TERMS: dict[str, DataTerm] = {
    "squared": LOSSES["squared"].value_and_delta,
    "cross_entropy": LOSSES["cross_entropy"].value_and_delta,
    # The softmax couples each row: its dJ/ds is a fresh array, whatever ``out`` offers.
    "softmax_cross_entropy": lambda t, z, s, act, out=None, scratch=None: softmax_cross_entropy(
        t, s
    ),
}

# Data term name -> (targets, outputs z, pre-activations s) -> the value alone, for ``loss``.
DATA_VALUES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "squared": LOSSES["squared"].value,
    "cross_entropy": LOSSES["cross_entropy"].value,
    "softmax_cross_entropy": lambda t, z, s: softmax_cross_entropy(t, s)[0],
}

# The output activations: every elementwise one, and the softmax (with its own loss).
OUTPUTS: tuple[str, ...] = (*ACTIVATIONS, "softmax")

# What the output is compared with: the input itself (an autoencoder), integer class labels
# y of shape (batch,) or (batch, 1), or an array y of shape (batch, layers[-1]) such as one-hot
# rows.
TARGETS: tuple[str, ...] = ("input", "labels", "one_hot")

LABEL_BASES: tuple[int, ...] = (0, 1)


def _one_of(allowed: Sequence[Any]) -> Callable[[Any, str], Any]:
    # (type, value) of each choice: a value of exactly a choice's type is found by a set
    # lookup (networks are built by the dozen in an identification, each checking its options)
    exact = {(type(choice), choice) for choice in allowed}
    kinds = {kind for kind, _ in exact}  # hashable ones: a list given must not raise here

    def check(value: Any, option: str) -> Any:
        if type(value) in kinds and (type(value), value) in exact:
            return value
        # bool is an int: label_base=True must not pass as 1.
        if isinstance(value, bool) or not any(
            isinstance(value, type(choice)) and value == choice for choice in allowed
        ):
            choices = ", ".join(repr(choice) for choice in allowed)
            raise InputError(f"{option} must be one of: {choices}; got {value!r}")
        return value

    return check


def _sizes(value: Any, option: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise InputError(
            f"{option} must be a list of layer sizes like [400, 25, 10]; got {value!r}"
        )
    sizes = list(value)
    if len(sizes) < 2 or not all(is_positive_int(v) for v in sizes):
        raise InputError(
            f"{option} must hold at least 2 positive integers (input size, ..., output size); "
            f"got {sizes!r}"
        )
    return tuple(int(v) for v in sizes)


def _hidden_activations(value: Any, option: str) -> str | tuple[str, ...]:
    check = _one_of(tuple(ACTIVATIONS))
    if isinstance(value, str):
        return check(value, option)
    if not isinstance(value, Sequence):
        raise InputError(
            f"{option} must be a name or a list of names, one per hidden layer; got {value!r}"
        )
    return tuple(check(name, option) for name in value)


def _dtype_name(value: Any, option: str) -> str:
    if isinstance(value, str) and value in DTYPES:
        return value  # the name already: resolving it and reading its name back is slow
    return check_dtype(value).name


# Option -> its check, which returns the normalised value or raises InputError naming the
# option and its allowed values.
_OPTIONS: dict[str, Callable[[Any, str], Any]] = {
    "layers": _sizes,
    "activation": _hidden_activations,
    "output": _one_of(OUTPUTS),
    "loss_name": _one_of(tuple(DATA_TERMS)),
    "squared_half": check_flag,
    "reduction": _one_of(tuple(REDUCTIONS)),
    "mean_outputs": check_flag,
    "target": _one_of(TARGETS),
    "label_base": _one_of(LABEL_BASES),
    "bias": check_flag,
    "tied": check_flag,
    "weight_decay": check_nonnegative,
    "decay_half": check_flag,
    "decay_mean": check_flag,
    "decay_biases": check_flag,
    "sparsity_weight": check_nonnegative,
    "sparsity_target": check_open_unit,
    "dtype": _dtype_name,
}


def _code_activation(net: Network) -> str | None:
    return None if net.code_layer is None else net.activation[net.code_layer - 1]


# The combinations: (holds(net), the message when it does not).
_RULES: tuple[tuple[Callable[[Network], bool], Callable[[Network], str]], ...] = (
    (
        lambda net: len(net.activation) == net.n_layers - 1,
        lambda net: f"activation lists one name per hidden layer: expected {net.n_layers - 1}, "
        f"got {len(net.activation)} ({list(net.activation)})",
    ),
    (
        lambda net: (net.output == "softmax") == (net.loss_name == "softmax_cross_entropy"),
        lambda net: "output 'softmax' and loss_name 'softmax_cross_entropy' go together (the "
        f"softmax's slope cancels against that loss's log); got output {net.output!r} with "
        f"loss_name {net.loss_name!r}",
    ),
    (
        lambda net: net.loss_name not in LOSSES
        or LOSSES[net.loss_name].output_activation in (None, net.output),
        lambda net: f"loss_name {net.loss_name!r} needs output "
        f"{LOSSES[net.loss_name].output_activation!r}; got {net.output!r}",
    ),
    (
        lambda net: not (net.mean_outputs and net.loss_name == "softmax_cross_entropy"),
        lambda net: "mean_outputs averages a data term summed over the outputs (squared or "
        "cross_entropy); the softmax cross-entropy is one term per example",
    ),
    (
        lambda net: net.output != "softmax" or net.layers[-1] >= 2,
        lambda net: f"a softmax output needs at least 2 classes; layers ends with {net.layers[-1]}",
    ),
    (
        lambda net: net.target != "input" or net.layers[0] == net.layers[-1],
        lambda net: "target 'input' (an autoencoder) needs layers that end with the size they "
        f"start with; got {list(net.layers)}",
    ),
    (
        lambda net: not net.tied or (net.layers == net.layers[::-1] and net.n_layers % 2 == 0),
        lambda net: "tied weights need a symmetric layers list with an even number of weight "
        f"layers, like [784, 256, 64, 256, 784]; got {list(net.layers)}",
    ),
    (
        lambda net: not net.sparsity_weight or _code_activation(net) == "sigmoid",
        lambda net: "the sparsity penalty needs a sigmoid hidden layer (its mean activation must "
        f"lie in (0, 1)); the code layer has activation {_code_activation(net)!r}"
        if net.code_layer
        else "the sparsity penalty needs a hidden layer; this network has none",
    ),
)


@dataclass(frozen=True)
class Network:
    """A feed-forward network of dense layers, its loss and penalties: one configuration.

    Parameters
    ----------
    layers : sequence of int
        All layer sizes, input first: ``[400, 25, 10]``; ``[n_in, n_out]`` is one layer.
    activation : str or sequence of str
        Activation of the hidden layers, a key of ``ACTIVATIONS``: one for all, or one per
        hidden layer. Stored as a tuple, one name per hidden layer.
    output : str
        Activation of the output layer: a key of ``ACTIVATIONS`` or "softmax".
    loss_name : str
        The data term (``loss`` is the method that evaluates the objective): "squared"
        (``c * sum((z - t)**2)``), "cross_entropy" (binary, summed over the outputs; needs a
        sigmoid output) or "softmax_cross_entropy" (needs a softmax output).
    squared_half : bool
        ``c = 1/2`` in the squared error (else 1).
    reduction : str
        "sum" over the examples, or "mean".
    mean_outputs : bool
        The data term is also divided by the number of outputs: with ``reduction="mean"``,
        the mean over every entry of the output (``np.mean((z - t)**2)``).
    target : str
        "input" (an autoencoder: ``y`` is not given), "labels" (integer class labels ``y``;
        with one output, the classes 0 and 1 of logistic regression) or "one_hot" (``y`` of
        shape (batch, layers[-1])).
    label_base : int
        0 or 1: the first class's label (1 in MATLAB code).
    bias : bool
        Whether the layers have biases.
    tied : bool
        The second half's weights are the transposes of the first half's.
    weight_decay : float
        lambda >= 0.
    decay_half, decay_mean, decay_biases : bool
        The weight decay's form: ``lambda/2`` (else ``lambda``), divided by the batch size,
        the biases decayed too.
    sparsity_weight : float
        beta >= 0 of the KL sparsity penalty on the code layer (needs a sigmoid code layer).
    sparsity_target : float
        rho in (0, 1).
    dtype : str
        "float64" or "float32": the dtype of the parameters and of all arithmetic.
    """

    layers: Sequence[int]
    activation: str | Sequence[str] = "sigmoid"
    output: str = "sigmoid"
    loss_name: str = "squared"
    squared_half: bool = True
    reduction: str = "sum"
    mean_outputs: bool = False
    target: str = "input"
    label_base: int = 0
    bias: bool = True
    tied: bool = False
    weight_decay: float = 0.0
    decay_half: bool = True
    decay_mean: bool = False
    decay_biases: bool = False
    sparsity_weight: float = 0.0
    sparsity_target: float = 0.05
    dtype: str = "float64"

    def __post_init__(self) -> None:
        for option, check in _OPTIONS.items():
            object.__setattr__(self, option, check(getattr(self, option), option))
        if isinstance(self.activation, str):
            object.__setattr__(self, "activation", (self.activation,) * (self.n_layers - 1))
        for holds, message in _RULES:
            if not holds(self):
                raise InputError(message(self))

    # ----- structure --------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        """Number of weight layers."""
        return len(self.layers) - 1

    @cached_property
    def code_layer(self) -> int | None:
        """Index k of the narrowest hidden layer ``a_k`` (the first if several tie), or None.

        Kept once found: the backward pass of every training step asks for it."""
        if self.n_layers < 2:
            return None
        return 1 + int(np.argmin(self.layers[1:-1]))

    @cached_property
    def _dense(self) -> tuple[Dense, ...]:
        # A softmax output is computed from the identity layer's pre-activation.
        out = "identity" if self.output == "softmax" else self.output
        return tuple(Dense(ACTIVATIONS[name]) for name in (*self.activation, out))

    @cached_property
    def _weight_of(self) -> tuple[tuple[str, bool], ...]:
        """Layer k (1-based) reads params[name], transposed or not."""
        n = self.n_layers
        return tuple(
            (f"W{n + 1 - k}", True) if self.tied and k > n // 2 else (f"W{k}", False)
            for k in range(1, n + 1)
        )

    @cached_property
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for k, (name, transposed) in enumerate(self._weight_of, start=1):
            if not transposed:
                shapes[name] = (self.layers[k - 1], self.layers[k])
            if self.bias:
                shapes[f"b{k}"] = (self.layers[k],)
        return shapes

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter, in the order W1, b1, W2, b2, ..."""
        return dict(self._shapes)

    def config(self) -> dict[str, Any]:
        """The options as a JSON-ready dict; ``Network(**config)`` rebuilds the network."""
        config = dataclasses.asdict(self)
        config["layers"], config["activation"] = list(self.layers), list(self.activation)
        return config

    def as_autoencoder(self, batch: int) -> Autoencoder | None:
        """The ``Autoencoder`` with this objective on ``batch`` examples and these parameters,
        or None where the options have no such form (a classifier or regression, a squared
        error without its 1/2 or averaged over the outputs, decayed biases, one layer): the
        members that ``check_model``'s exact engine knows.

        Every decay form of the weights alone is ``lambda'/2 * sum W**2`` for one batch size,
        with ``lambda' = 2 d(m)`` (the factor 2 is exact in floating point).
        """
        if (self.target != "input" or self.n_layers < 2 or self.output not in ACTIVATIONS
                or (self.loss_name == "squared" and not self.squared_half) or self.mean_outputs
                or (self.weight_decay and self.decay_biases)):
            return None
        from gradproof.nn.autoencoder import Autoencoder  # a configuration of this class

        return Autoencoder(
            layers=list(self.layers), activation=list(self.activation),
            output_activation=self.output, loss=self.loss_name, reduction=self.reduction,
            bias=self.bias, tied=self.tied, weight_decay=2.0 * self._decay_factor(batch),
            sparsity_weight=self.sparsity_weight, sparsity_target=self.sparsity_target,
            dtype=self.dtype,
        )

    # ----- parameters -------------------------------------------------------------------

    def init_params(self, seed: int | np.random.Generator = 0) -> Params:
        """Fresh parameters: weights uniform in +-r, biases zero.

        ``r = s * sqrt(6 / (fan_in + fan_out))`` with ``s`` the ``init_scale`` of the layer's
        activation (4 for the sigmoid, 1 for the softmax), drawn in float64 in the order W1,
        W2, ... and then cast, as ``Autoencoder.init_params`` does.
        """
        return initial_params(
            self._shapes, lambda k: self._dense[k - 1].activation.init_scale, self.dtype, seed
        )

    def validate_params(self, params: Mapping[str, Any], check_finite: bool = True) -> Params:
        """``params`` as arrays of the network's dtype; ``InputError`` unless they fit.

        Checks exactly the names of ``param_shapes()`` (listing the missing and the extra
        ones), real numeric arrays, the right shapes and (with ``check_finite``) finite
        values: a caller whose points are already known finite, or that treats a non-finite
        loss as a mismatch, skips those scans of every entry.
        """
        described = (
            f"this network (layers {list(self.layers)}, bias={self.bias}, tied={self.tied})"
        )
        return checked_params(params, self._shapes, self.dtype, described, check_finite)

    def _layer_params(self, params: Params, k: int) -> Params:
        """The layer-local params {"W", "b"} of layer k (1-based), tied weights transposed."""
        name, transposed = self._weight_of[k - 1]
        local = {"W": params[name].T if transposed else params[name]}
        if self.bias:
            local["b"] = params[f"b{k}"]
        return local

    # ----- data -------------------------------------------------------------------------

    def validate_input(self, x: Any) -> np.ndarray:
        """``x`` as a finite array of the network's dtype, shape (batch, layers[0])."""
        arr = real_array(x, "x", np.dtype(self.dtype))
        n_in = self.layers[0]
        if arr.ndim != 2 or arr.shape[1] != n_in or arr.shape[0] == 0:
            hint = ""
            if arr.ndim == 2 and arr.shape[1] == n_in + 1:
                hint = " (a column of ones for the bias? the network adds its biases itself)"
            elif arr.ndim == 2 and arr.shape[0] == n_in:
                hint = " (examples as columns? pass x.T)"
            raise InputError(
                f"x must have shape (batch, {n_in}), one example per row, with batch >= 1; "
                f"got shape {arr.shape}{hint}"
            )
        if not all_finite(arr):
            raise InputError("x has non-finite values (NaN or Inf); the inputs must be finite")
        return arr

    def targets(self, x: np.ndarray, y: Any) -> np.ndarray:
        """The target array t, (batch, layers[-1]), for a validated ``x`` and the user's ``y``."""
        if self.target == "input":
            if y is not None:
                raise InputError(
                    "this network reproduces its input (target='input'): y must not be given"
                )
            return x
        if y is None:
            raise InputError(f"target={self.target!r} needs y, the targets of the examples in x")
        if self.target == "labels":
            return self._one_hot(y, x.shape[0])
        t = real_array(y, "y", np.dtype(self.dtype))
        shape = (x.shape[0], self.layers[-1])
        if t.shape != shape:
            raise InputError(f"y must have shape {shape} (one row per example); got {t.shape}")
        if not all_finite(t):
            raise InputError("y has non-finite values (NaN or Inf)")
        if self.loss_name != "squared" and (t.min() < 0 or t.max() > 1):
            raise InputError(
                f"loss_name {self.loss_name!r} needs targets in [0, 1]; y holds values from "
                f"{t.min():g} to {t.max():g}"
            )
        return t

    def _one_hot(self, y: Any, batch: int) -> np.ndarray:
        labels = np.asarray(y)
        if labels.ndim == 2 and 1 in labels.shape:
            labels = labels.ravel()  # MATLAB's column (or row) vector
        if labels.shape != (batch,):
            raise InputError(
                f"y must hold one class label per example, shape ({batch},); got shape "
                f"{np.shape(y)}"
            )
        if labels.dtype.kind not in "iuf" or not np.all(np.isfinite(labels)) or np.any(
            labels != np.round(labels)
        ):
            raise InputError(
                "y must hold integer class labels (the loss needs them); got "
                f"{labels.dtype} values like {labels[:3].tolist()}"
            )
        classes = max(self.layers[-1], 2)  # one output: the classes 0 and 1
        index = labels.astype(np.int64) - self.label_base
        outside = np.flatnonzero((index < 0) | (index >= classes))
        if outside.size:
            first = int(outside[0])
            raise InputError(
                f"y holds labels from {self.label_base} to {self.label_base + classes - 1} "
                f"({classes} classes, label_base={self.label_base}); got {labels[first]:g} at "
                f"y[{first}] ({outside.size} outside in all)"
            )
        t = np.eye(classes, dtype=self.dtype)[index]  # (batch, classes)
        return t[:, 1:] if self.layers[-1] == 1 else t

    # ----- forward and objective --------------------------------------------------------
    #
    # The one layer walk of the family: ``Autoencoder`` runs these too, with its workspace
    # buffers and its gradient scale.

    def _forward(self, params: Params, x: np.ndarray, depth: int | None = None,
                 buffers: Sequence[DenseBuffers] | None = None) -> ForwardCache:
        """Run layers 1 .. depth (all by default) on validated inputs, into ``buffers``."""
        outs = buffers or (FRESH,) * self.n_layers
        activations, pre_activations = [x], []
        a = x
        for k, layer in enumerate(self._dense[:depth], start=1):
            a, cache = layer.forward(self._layer_params(params, k), a, out=outs[k - 1])
            activations.append(a)  # (batch, layers[k])
            pre_activations.append(cache.s)
        if self.output == "softmax" and len(pre_activations) == self.n_layers:
            activations[-1] = softmax(pre_activations[-1])
        return ForwardCache(activations, pre_activations)

    def forward(self, params: Mapping[str, Any], x: Any, check_finite: bool = True
                ) -> tuple[np.ndarray, ForwardCache]:
        """The output ``z`` (batch, layers[-1]) and what the backward pass needs
        (``check_finite`` as for ``validate_params``)."""
        cache = self._forward(self.validate_params(params, check_finite),
                              self.validate_input(x))
        return cache.activations[-1], cache

    def forward_validated(self, params: Params, x: np.ndarray) -> ForwardCache:
        """``forward``'s pass for parameters and data that ``validate_params`` and
        ``validate_input`` already gave: for a caller that runs many passes over points it
        checked once (each check reads every parameter and the data again)."""
        return self._forward(params, x)

    def _data_value(self, cache: ForwardCache, t: np.ndarray) -> float:
        """The data term summed over the examples, without its gradient."""
        value = DATA_VALUES[self.loss_name](t, cache.activations[-1], cache.pre_activations[-1])
        return value if self.squared_half or self.loss_name != "squared" else 2.0 * value

    def _data_term(self, cache: ForwardCache, t: np.ndarray, buffers: DenseBuffers = FRESH
                   ) -> tuple[float, np.ndarray]:
        """The data term summed over the examples, and its dJ/ds at the output, written into
        the output layer's ``buffers`` (fresh arrays by default)."""
        value, d_s = DATA_TERMS[self.loss_name](
            t, cache.activations[-1], cache.pre_activations[-1], self._dense[-1].activation,
            out=buffers.d_s, scratch=buffers.scratch,
        )
        if self.loss_name == "squared" and not self.squared_half:
            d_s *= 2.0  # our own array
            return 2.0 * value, d_s
        return value, d_s

    def data_factor(self, batch: int) -> float:
        """r(m) * o, the factor of the data term (and of its gradient) on ``batch`` examples."""
        factor = REDUCTIONS[self.reduction](batch)
        return factor / self.layers[-1] if self.mean_outputs else factor

    def _decayed(self) -> list[str]:
        return [name for name in self._shapes if name.startswith("W") or self.decay_biases]

    def _decay_factor(self, batch: int) -> float:
        """d(m) of the penalty d(m) * sum(P**2)."""
        factor = self.weight_decay * (0.5 if self.decay_half else 1.0)
        return factor / batch if self.decay_mean else factor

    def _code_mean(self, cache: ForwardCache) -> np.ndarray:
        return cache.activations[self.code_layer].mean(axis=0)  # (layers[code_layer],)

    def _total(self, params: Params, cache: ForwardCache, data: float) -> float:
        """The objective from the data term's value: the reduction and the penalties."""
        batch = cache.activations[0].shape[0]
        total = self.data_factor(batch) * data
        if self.weight_decay:
            total += self._decay_factor(batch) * sum(
                float(np.vdot(params[name], params[name])) for name in self._decayed()
            )
        if self.sparsity_weight:
            kl = kl_divergence(self.sparsity_target, self._code_mean(cache))
            total += self.sparsity_weight * float(np.sum(kl))
        return float(total)

    def _checked(self, params: Mapping[str, Any], x: Any, y: Any, check_finite: bool = True
                 ) -> tuple[Params, ForwardCache, np.ndarray]:
        checked, x = self.validate_params(params, check_finite), self.validate_input(x)
        t = self.targets(x, y)  # before the forward pass: bad labels fail fast
        return checked, self._forward(checked, x), t

    def loss(self, params: Mapping[str, Any], x: Any, y: Any = None) -> float:
        """The objective J for a batch ``x`` (batch, layers[0]) and its targets ``y``."""
        return self.evaluate(params, x, y)[0]

    def evaluate(self, params: Mapping[str, Any], x: Any, y: Any = None,
                 check_finite: bool = True) -> tuple[float, ForwardCache, np.ndarray]:
        """The objective J with the forward pass it came from: for a caller that reads more
        of the same pass than ``loss`` returns (one forward pass instead of two).
        ``check_finite`` as for ``validate_params``: without it, non-finite parameters give
        a non-finite J.

        Returns
        -------
        loss : float
        cache : ForwardCache
        t : ndarray, shape (batch, layers[-1])
            The targets the output was compared with (the input, one-hot labels or ``y``).
        """
        checked, cache, t = self._checked(params, x, y, check_finite)
        return self.objective(checked, cache, t), cache, t

    def objective(self, params: Params, cache: ForwardCache, t: np.ndarray) -> float:
        """``evaluate``'s J from a forward pass already made, of validated ``params``, and
        the targets ``t`` (``targets``)."""
        return self._total(params, cache, self._data_value(cache, t))

    def completed(self, cache: ForwardCache) -> ForwardCache:
        """This network's forward pass from that of a network that differs from it only in
        the output activation, at the same parameters and data: the layers before the
        output and the output's pre-activation are the same, so only the output activation
        is computed (as ``_forward`` computes it)."""
        s = cache.pre_activations[-1]
        a = softmax(s) if self.output == "softmax" else self._dense[-1].activation.forward(s)
        return ForwardCache([*cache.activations[:-1], a], list(cache.pre_activations))

    def loss_and_grad(self, params: Mapping[str, Any], x: Any, y: Any = None
                      ) -> tuple[float, Params]:
        """The objective and its gradient, keyed and shaped like ``param_shapes()``.

        Parameters
        ----------
        params : dict of str to ndarray
        x : ndarray, shape (batch, layers[0])
        y : ndarray or None
            None for ``target="input"``; integer labels (batch,) or (batch, 1) for
            ``target="labels"``; (batch, layers[-1]) for ``target="one_hot"``.

        Returns
        -------
        loss : float
        grads : dict of str to ndarray
        """
        return self.loss_and_grad_from(*self._checked(params, x, y))

    def loss_and_grad_from(self, params: Params, cache: ForwardCache, t: np.ndarray
                           ) -> tuple[float, Params]:
        """``loss_and_grad`` from a forward pass already made (``evaluate``'s, or ``forward``'s
        completed by ``completed``) of validated ``params``, and its targets ``t``
        (``targets``): a caller that has the pass does not repeat it. The pass is only read.
        """
        data, d_s = self._data_term(cache, t)
        return self._total(params, cache, data), self._backward(params, cache, d_s)

    # ----- backward ---------------------------------------------------------------------

    def _backward(self, params: Params, cache: ForwardCache, d_s: np.ndarray,
                  buffers: Sequence[DenseBuffers] | None = None, scale: float = 1.0) -> Params:
        """The gradient times ``scale`` from the data term's dJ/ds at the output, which it
        overwrites; the layers write into ``buffers`` (fresh arrays by default).

        Every term of the gradient is linear in the starting error, so scaling ``d_s`` scales
        them all.
        """
        acts, pres = cache.activations, cache.pre_activations
        batch = acts[0].shape[0]
        n = self.n_layers
        outs = buffers or (FRESH,) * n
        factor = scale * self.data_factor(batch)
        if factor != 1.0:
            d_s *= factor
        flush_tiny(d_s, scratch=outs[-1].scratch, mask=outs[-1].mask)
        d_x, layer_grads = self._dense[-1].backward_linear(
            self._layer_params(params, n), DenseCache(acts[n - 1], pres[n - 1], acts[n]), d_s,
            need_d_x=n > 1, out=outs[-1],
        )
        grads: Params = {}
        self._collect(grads, n, layer_grads)
        for k in range(n - 1, 0, -1):
            d_a = d_x  # (batch, layers[k]): dJ/da_k, our own array
            if self.sparsity_weight and k == self.code_layer:
                d_a += scale * self._sparsity_grad(cache, batch)  # the same row for each example
            d_x, layer_grads = self._dense[k - 1].backward(
                self._layer_params(params, k), DenseCache(acts[k - 1], pres[k - 1], acts[k]), d_a,
                need_d_x=k > 1, out=outs[k - 1],
            )
            self._collect(grads, k, layer_grads)
        if self.weight_decay:
            decay = scale * (2.0 * self._decay_factor(batch))  # d/dP of d(m) * sum(P**2)
            for name in self._decayed():
                grads[name] += decay * params[name]
        return {name: grads[name] for name in self._shapes}

    def _collect(self, grads: Params, k: int, layer_grads: Params) -> None:
        """File layer k's gradients under the network's names; tied weights sum both uses."""
        collect_layer_grads(grads, self._weight_of[k - 1], self.bias, k, layer_grads)

    def _sparsity_grad(self, cache: ForwardCache, batch: int) -> np.ndarray:
        # d/da_ij of beta * sum_j KL(rho || rho_hat_j), rho_hat_j = mean_i a_ij:
        # beta / m * KL'(rho_hat_j)
        slope = kl_slope(self.sparsity_target, self._code_mean(cache))
        return (self.sparsity_weight / batch) * slope

