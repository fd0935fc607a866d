"""Model-aware diagnosis: the classic backprop mistakes of an ``Autoencoder``, by name.

Contract: ``MISTAKES`` maps a short mistake id to a ``Mistake``; ``mistake.gradient(model,
params, x) -> grads`` is the gradient that mistake gives, keyed like ``params`` (a transposed
outer product gives its weights' gradients in the transposed shape, as the user would hold
them). The gradients come from ``flawed_backprop``, a backward pass written here apart from
the model's own, with one deviation switched on per mistake; ``reference_gradient`` is the
same pass with none. ``diagnose_model(model, params, x, analytic, numeric, tolerance)`` names
the mistake a user's gradient equals (within tolerance, tensor by tensor) alongside the
structural findings of ``gradproof.diagnose``; ``check_model`` runs it in its diagnosis step
(``gradproof.engine.diagnosis``), against ``reference_gradient`` with ``rounding_tolerance``.

Notation of the fix lines (row-vector convention, as in the model): ``a0 = x``, ``a{k}`` is
layer k's activation and ``z`` the output, ``d_s{k}`` is dJ/ds{k} for the pre-activation
``s{k} = a{k-1} @ W{k} + b{k}``, ``n{k}`` the width of layer k and ``m`` the batch size
(shapes in comments); MATLAB lines use the same names with ``'`` for a transpose and ``.*``
for elementwise products. Where the user holds the arrays otherwise (examples as columns,
weights stored ``(n_out, n_in)``), ``in_orientation`` writes the same lines as that user's
arrays read: ``d_s1 = (decoder' * d_s2) .* a1 .* (1 - a1)`` for columns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradproof.diagnose import HYPOTHESES, Hypothesis, TensorCase, diagnose
from gradproof.errors import InputError
from gradproof.nn.activations import ACTIVATIONS, Activation
from gradproof.nn.autoencoder import Autoencoder
from gradproof.report import Finding

Grads = dict[str, np.ndarray]

# How a layer's activation slope enters the backward pass ("activation" is right: f' from a).
SLOPES = ("activation", "pre_activation", "twice", "missing", "sigmoid_formula")

# Pre-activations on which a slope mistake is tried against the right slope: both signs, and
# the kink of relu. Where the two agree on all of them (relu's 0/1 slope squared is itself;
# the identity's slope is 1 everywhere; the sigmoid's formula is right for the sigmoid) the
# mistake cannot change the gradient and is not a hypothesis.
_PROBE_PRE_ACTIVATIONS = np.linspace(-2.0, 2.0, 9)


@dataclass(frozen=True)
class Flaws:
    """The deviations from a correct backward pass; the defaults make none.

    Attributes
    ----------
    back_weight : {"transposed", "mirror", "untransposed"}
        What the error at layer k is sent back through: ``W_k.T`` (right), the mirrored
        encoder weight ``W_{n+1-k}`` (symmetric stacks), or ``W_k`` itself (square layers).
    hidden_slope : str
        How the hidden layers apply their activation's slope, one of ``SLOPES``.
    output_slope : str or None
        How the output layer applies its slope; None is right for the loss (the squared
        error applies it, the cross-entropy of a sigmoid cancels it).
    transposed_outer : bool
        Weight gradients as ``d_s.T @ a`` instead of ``a.T @ d_s``.
    bias_last_example : bool
        Bias gradients from the last example only, not summed over the batch.
    sparsity : {"inside", "missing", "outside"}
        The sparsity term added to dJ/da of the code layer (right), left out, or added after
        the slope is applied.
    decay_biases : bool
        Weight decay applied to the biases too.
    tied_uses : {"both", "encoder", "decoder"}
        Which uses of a tied weight its gradient sums.
    """

    back_weight: str = "transposed"
    hidden_slope: str = "activation"
    output_slope: str | None = None
    transposed_outer: bool = False
    bias_last_example: bool = False
    sparsity: str = "inside"
    decay_biases: bool = False
    tied_uses: str = "both"

    def __post_init__(self) -> None:
        for name, choices in _FLAW_CHOICES.items():
            if getattr(self, name) not in choices:
                raise InputError(
                    f"Flaws.{name} must be one of {choices}; got {getattr(self, name)!r}"
                )


_FLAW_CHOICES: dict[str, tuple[str | None, ...]] = {
    "back_weight": ("transposed", "mirror", "untransposed"),
    "hidden_slope": SLOPES,
    "output_slope": (None, *SLOPES),
    "sparsity": ("inside", "missing", "outside"),
    "tied_uses": ("both", "encoder", "decoder"),
}


@dataclass(frozen=True)
class Mistake:
    """One classic backprop mistake.

    Attributes
    ----------
    id : str
        The short name (the key in ``MISTAKES``).
    kind : str
        The finding kind it is reported as (a key of ``FINDING_KINDS``).
    description : str
        What the mistake is, as a phrase ("leaving the hidden activation's derivative out of
        the hidden error"), with an example where the notation helps (a template filled by
        ``Mistake.describe``, as the fix lines are).
    fix_numpy, fix_matlab : str
        The corrected line, a template filled per tensor by ``Mistake.fix_lines``.
    flaws : Flaws
        The deviation that produces the mistake's gradient.
    applies : callable
        ``applies(model) -> bool``: whether the mistake can change this model's gradient.
    """

    id: str
    kind: str
    description: str
    fix_numpy: str
    fix_matlab: str
    flaws: Flaws
    applies: Callable[[Autoencoder], bool] = field(repr=False)

    def gradient(self, model: Autoencoder, params: Mapping[str, Any], x: Any) -> Grads:
        """The gradient this mistake gives, keyed like ``params`` (float64)."""
        return flawed_backprop(model, params, x, self.flaws)

    def describe(self, model: Autoencoder, tensor: str,
                 orientation: Orientation | None = None) -> str:
        """The description, its example written for arrays held in ``orientation``."""
        fields = _fix_fields(model, _layer_of(tensor), orientation or Orientation())
        return self.description.format(**fields[0])

    def fix_lines(self, model: Autoencoder, tensor: str,
                  orientation: Orientation | None = None) -> tuple[str, str]:
        """The corrected line for ``tensor``, in numpy and in MATLAB notation, written for
        arrays held in ``orientation`` (by default the model's own)."""
        fields = _fix_fields(model, _layer_of(tensor), orientation or Orientation())
        return self.fix_numpy.format(**fields[0]), self.fix_matlab.format(**fields[1])


@dataclass(frozen=True)
class Orientation:
    """How the user holds the arrays a fix line names.

    Attributes
    ----------
    columns : bool
        Examples as columns: ``x`` is (n0, m) and every ``a{k}``, ``d_s{k}`` is (n{k}, m).
    out_in : bool
        Weights stored (n_out, n_in), the transpose of the model's ``W{k}``.
    """

    columns: bool = False
    out_in: bool = False


# --------------------------------------------------------------- the flawed backward pass


def reference_gradient(model: Autoencoder, params: Mapping[str, Any], x: Any) -> Grads:
    """The gradient of ``model.loss`` by this module's own backward pass (float64).

    Written apart from ``Autoencoder.backward`` so that the mistakes are derived from an
    independent statement of the right pass; the tests hold both to ``autograd``.
    """
    return flawed_backprop(model, params, x, Flaws())


def flawed_backprop(
    model: Autoencoder, params: Mapping[str, Any], x: Any, flaws: Flaws
) -> Grads:
    """The gradient a backward pass with ``flaws`` gives, keyed like ``params`` (float64).

    Parameters
    ----------
    model : Autoencoder
    params : dict of str to ndarray
    x : ndarray, shape (batch, n_visible)
    flaws : Flaws

    Returns
    -------
    dict of str to ndarray
        One array per parameter; a weight's has the transposed shape under
        ``flaws.transposed_outer``.
    """
    model64 = _float64_twin(model)
    model64.validate_params(params)
    params = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
    _, cache = model64.forward(params, x)
    acts, pres = cache.activations, cache.pre_activations  # a0..an, s1..sn
    n, m = model64.n_layers, acts[0].shape[0]
    weights = model64.weights(params)  # effective weight of each layer, (l[k-1], l[k])
    scale = 1.0 / m if model64.reduction == "mean" else 1.0

    output_slope = flaws.output_slope
    if output_slope is None:
        output_slope = "activation" if model64.loss_name == "squared" else "missing"
    # Both losses start from (z - x); the sigmoid cross-entropy's slope cancels.
    d_s = (acts[n] - acts[0]) * scale * _slope(model64, n, acts, pres, output_slope)
    layer_grads: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k in range(n, 0, -1):
        a_prev = acts[k - 1]  # (m, l[k-1])
        d_w = d_s.T @ a_prev if flaws.transposed_outer else a_prev.T @ d_s  # (l[k-1], l[k])
        d_b = d_s[-1].copy() if flaws.bias_last_example else d_s.sum(axis=0)  # (l[k],)
        layer_grads[k] = (d_w, d_b)
        if k == 1:
            break
        d_a = d_s @ _back_weight(weights, k, flaws.back_weight)  # (m, l[k-1])
        sparse = _sparsity_term(model64, acts, k - 1)
        if sparse is not None and flaws.sparsity == "inside":
            d_a = d_a + sparse
        d_s = d_a * _slope(model64, k - 1, acts, pres, flaws.hidden_slope)  # (m, l[k-1])
        if sparse is not None and flaws.sparsity == "outside":
            d_s = d_s + sparse
    return _collect(model64, params, layer_grads, flaws)


def _float64_twin(model: Autoencoder) -> Autoencoder:
    if model.dtype == np.float64:
        return model
    return Autoencoder.from_config({**model.config(), "dtype": "float64"})


def _slope(
    model: Autoencoder, k: int, acts: list[np.ndarray], pres: list[np.ndarray], how: str
) -> np.ndarray | float:
    """The factor layer k's activation slope contributes under ``how`` (one of ``SLOPES``)."""
    return _slope_factor(ACTIVATIONS[model.activations[k - 1]], acts[k], pres[k - 1], how)


def _slope_factor(
    activation: Activation, a: np.ndarray, s: np.ndarray, how: str
) -> np.ndarray | float:
    """The slope factor of ``activation`` under ``how``, from its output ``a = f(s)``."""
    derivative = activation.derivative
    if how == "activation":
        return derivative(a)  # f'(s) from the output a = f(s): right
    if how == "pre_activation":
        return derivative(s)  # the same formula fed s instead of a
    if how == "twice":
        return derivative(a) ** 2
    if how == "sigmoid_formula":
        return ACTIVATIONS["sigmoid"].derivative(a)  # a * (1 - a), whatever f is
    return 1.0  # "missing"


def _slope_changes(name: str, how: str) -> bool:
    """Whether the slope mistake ``how`` changes activation ``name``'s slope anywhere."""
    activation = ACTIVATIONS[name]
    s = _PROBE_PRE_ACTIVATIONS
    a = activation.forward(s)
    right = _slope_factor(activation, a, s, "activation")
    return not np.allclose(_slope_factor(activation, a, s, how), right, rtol=1e-12, atol=0.0)


def _back_weight(weights: list[np.ndarray], k: int, how: str) -> np.ndarray:
    """What the error at layer k is multiplied by on its way down: (l[k], l[k-1])."""
    own = weights[k - 1]  # (l[k-1], l[k])
    if how == "mirror":
        return weights[len(weights) - k]  # W_{n+1-k}: (l[n-k], l[n+1-k]) = (l[k], l[k-1])
    if how == "untransposed" and own.shape[0] == own.shape[1]:
        return own
    return own.T  # right


def _sparsity_term(model: Autoencoder, acts: list[np.ndarray], k: int) -> np.ndarray | None:
    """d/da of the sparsity penalty when layer k is the code layer, else None: (l[k],)."""
    if k != model.code_layer or not model.sparsity_weight:
        return None
    rho, rho_hat = model.sparsity_target, acts[k].mean(axis=0)
    m = acts[k].shape[0]
    return model.sparsity_weight / m * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))


def _collect(
    model: Autoencoder,
    params: Grads,
    layer_grads: dict[int, tuple[np.ndarray, np.ndarray]],
    flaws: Flaws,
) -> Grads:
    """File each layer's gradients under the parameter names, with the penalties' terms."""
    n = model.n_layers
    grads: Grads = {}
    for name in model.param_shapes():
        k = _layer_of(name)
        if name.startswith("b"):
            grads[name] = layer_grads[k][1]
            if flaws.decay_biases:
                grads[name] = grads[name] + model.weight_decay * params[name]
            continue
        if model.tied:
            # W_k serves layer k and, transposed, layer n+1-k: its gradient sums both uses.
            encoder, decoder = layer_grads[k][0], layer_grads[n + 1 - k][0].T
            uses = {"both": encoder + decoder, "encoder": encoder, "decoder": decoder}
            grads[name] = uses[flaws.tied_uses]
        else:
            grads[name] = layer_grads[k][0]
        if model.weight_decay:
            grads[name] = grads[name] + model.weight_decay * _like(params[name], grads[name])
    return grads


def _like(param: np.ndarray, grad: np.ndarray) -> np.ndarray:
    # A transposed outer product holds W's gradient transposed; its decay term is too.
    return param if param.shape == grad.shape else param.T


# ------------------------------------------------------------------------ applicability


def _hidden_slope_changes(how: str) -> Callable[[Autoencoder], bool]:
    def applies(model: Autoencoder) -> bool:
        return any(_slope_changes(name, how) for name in model.activations[:-1])

    return applies


def _output_slope_changes(how: str) -> Callable[[Autoencoder], bool]:
    def applies(model: Autoencoder) -> bool:
        return model.loss_name == "squared" and _slope_changes(model.activations[-1], how)

    return applies


def _symmetric_untied(model: Autoencoder) -> bool:
    return model.layers == model.layers[::-1] and not model.tied


def _square_upper_layer(model: Autoencoder) -> bool:
    return any(model.layers[k - 1] == model.layers[k] for k in range(2, model.n_layers + 1))


def _cross_entropy(model: Autoencoder) -> bool:
    return model.loss_name == "cross_entropy"


def _untied(model: Autoencoder) -> bool:
    return not model.tied


def _has_bias(model: Autoencoder) -> bool:
    return model.bias


def _sparse(model: Autoencoder) -> bool:
    return model.sparsity_weight > 0


def _decayed_biases(model: Autoencoder) -> bool:
    return model.bias and model.weight_decay > 0


def _tied(model: Autoencoder) -> bool:
    return model.tied


# ------------------------------------------------------------------------------ catalogue

_HIDDEN_LINE = (
    "d_s{j} = ({back_k}){slope_j}  # {d_shape}: back through layer {k}'s weight, transposed",
    "d_s{j} = ({back_k}){slope_j};",
)
_OUTPUT_SQUARED_LINE = (
    "d_s{n} = (z - x){per_m}{slope_z}  # squared error: the output slope from z",
    "d_s{n} = (z - x){per_m}{slope_z};",
)
_SPARSE_LINE = (
    "d_s{c} = ({back_c} + beta / m * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))){slope_c}",
    "d_s{c} = ({back_c} + beta / m * (-rho ./ rho_hat + (1 - rho) ./ (1 - rho_hat))){slope_c};",
)
_TIED_LINE = (
    "dW{j} = {outer} + ({outer_mirror}){t}  # both uses of W{j}",
    "dW{j} = {outer} + ({outer_mirror}){t};",
)
_BIAS_LINE = (
    "db{j} = d_s{j}.sum(axis={axis})  # (n{j},): summed over the batch, no weight decay",
    "db{j} = sum(d_s{j}, {axis});",
)


def _mistake(
    id: str, kind: str, description: str, lines: tuple[str, str], flaws: Flaws,
    applies: Callable[[Autoencoder], bool],
) -> Mistake:
    return Mistake(id, kind, description, lines[0], lines[1], flaws, applies)


MISTAKES: dict[str, Mistake] = {
    m.id: m
    for m in (
        _mistake(
            "backprop_through_mirror_weight", "wrong_backprop_matrix",
            "sending the error back to a hidden layer through the mirrored encoder weight "
            "instead of the layer's own weight transposed (seed network: `{seed_mirror}` "
            "instead of `{seed_back}`; the shapes fit, so nothing fails)",
            _HIDDEN_LINE, Flaws(back_weight="mirror"), _symmetric_untied,
        ),
        _mistake(
            "backprop_untransposed", "wrong_backprop_matrix",
            "sending the error back through a square weight without transposing it (a "
            "square layer's shapes cannot tell)",
            _HIDDEN_LINE, Flaws(back_weight="untransposed"), _square_upper_layer,
        ),
        _mistake(
            "hidden_slope_of_pre_activation", "wrong_activation_derivative",
            "applying the hidden activation's derivative formula to the pre-activation "
            "(`s * (1 - s)`) instead of the activation (`a * (1 - a)`)",
            _HIDDEN_LINE, Flaws(hidden_slope="pre_activation"),
            _hidden_slope_changes("pre_activation"),
        ),
        _mistake(
            "hidden_slope_twice", "wrong_activation_derivative",
            "multiplying the hidden error by the activation's derivative twice",
            _HIDDEN_LINE, Flaws(hidden_slope="twice"), _hidden_slope_changes("twice"),
        ),
        _mistake(
            "hidden_slope_missing", "wrong_activation_derivative",
            "leaving the hidden activation's derivative out of the hidden error",
            _HIDDEN_LINE, Flaws(hidden_slope="missing"), _hidden_slope_changes("missing"),
        ),
        _mistake(
            "hidden_slope_of_sigmoid", "wrong_activation_derivative",
            "using the sigmoid's derivative `a * (1 - a)` for a hidden layer whose activation "
            "is not the sigmoid (tanh's is `1 - a**2`, relu's `a > 0`)",
            _HIDDEN_LINE, Flaws(hidden_slope="sigmoid_formula"),
            _hidden_slope_changes("sigmoid_formula"),
        ),
        _mistake(
            "output_slope_of_pre_activation", "wrong_activation_derivative",
            "applying the output activation's derivative formula to the pre-activation "
            "(`s * (1 - s)`) instead of the output (`z * (1 - z)`)",
            _OUTPUT_SQUARED_LINE, Flaws(output_slope="pre_activation"),
            _output_slope_changes("pre_activation"),
        ),
        _mistake(
            "output_slope_twice", "wrong_activation_derivative",
            "multiplying the output error by the output activation's derivative twice",
            _OUTPUT_SQUARED_LINE, Flaws(output_slope="twice"), _output_slope_changes("twice"),
        ),
        _mistake(
            "output_slope_missing", "wrong_activation_derivative",
            "leaving the output activation's derivative out of the squared-error delta "
            "(`z - x`, the cross-entropy delta, used with the squared error)",
            _OUTPUT_SQUARED_LINE, Flaws(output_slope="missing"),
            _output_slope_changes("missing"),
        ),
        _mistake(
            "squared_delta_with_cross_entropy", "wrong_activation_derivative",
            "reusing the squared-error delta `(z - x) * z * (1 - z)` with the cross-entropy "
            "loss, whose delta is `z - x` (the sigmoid's slope cancels)",
            ("d_s{n} = (z - x){per_m}  # cross-entropy of a sigmoid: no slope factor",
             "d_s{n} = (z - x){per_m};"),
            Flaws(output_slope="activation"), _cross_entropy,
        ),
        _mistake(
            "transposed_outer_product", "transposed",
            "the outer product taken the wrong way round: the error and the activation "
            "exchanged in the product, which gives the transpose",
            ("dW{j} = {outer}  # {w_shape}, like W{j}", "dW{j} = {outer};"),
            Flaws(transposed_outer=True), _untied,
        ),
        _mistake(
            "bias_not_summed", "partial",
            "taking the bias gradient from one example (the last) instead of summing it over "
            "the batch, as a loop that assigns `db = d_s` instead of adding `db += d_s` does",
            _BIAS_LINE, Flaws(bias_last_example=True), _has_bias,
        ),
        _mistake(
            "sparsity_missing", "mismatch",
            "leaving the sparsity penalty's term out of the code layer's error",
            _SPARSE_LINE, Flaws(sparsity="missing"), _sparse,
        ),
        _mistake(
            "sparsity_outside_slope", "wrong_activation_derivative",
            "adding the sparsity term after multiplying by the activation's derivative "
            "instead of before",
            _SPARSE_LINE, Flaws(sparsity="outside"), _sparse,
        ),
        _mistake(
            "weight_decay_on_biases", "missing_l2",
            "applying weight decay to the biases (`db += lambda * b`); the penalty covers the "
            "weights only",
            _BIAS_LINE, Flaws(decay_biases=True), _decayed_biases,
        ),
        _mistake(
            "tied_encoder_use_only", "mismatch",
            "keeping only the encoder's contribution to a tied weight's gradient; the "
            "decoder's use of the weight (transposed) adds a second one",
            _TIED_LINE, Flaws(tied_uses="encoder"), _tied,
        ),
        _mistake(
            "tied_decoder_use_only", "mismatch",
            "keeping only the decoder's contribution to a tied weight's gradient; the "
            "encoder's use of the weight adds a second one",
            _TIED_LINE, Flaws(tied_uses="decoder"), _tied,
        ),
    )
}


def applicable_mistakes(model: Autoencoder) -> dict[str, Mistake]:
    """The mistakes of ``MISTAKES`` that can change this model's gradient, in catalogue order."""
    return {mistake_id: m for mistake_id, m in MISTAKES.items() if m.applies(model)}


# ------------------------------------------------------------------------- fix-line text


def _layer_of(tensor: str) -> int:
    return int(tensor[1:])


def _fix_fields(model: Autoencoder, j: int, orientation: Orientation
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The template fields for a tensor of layer j, in numpy and in MATLAB notation."""
    n, c = model.n_layers, model.code_layer
    k = min(j + 1, n)  # the layer whose error reaches layer j (j itself for the output)
    mirror = n + 1 - j
    columns, out_in = orientation.columns, orientation.out_in
    fields = []
    for notation in (0, 1):
        write = _Writer(notation, orientation)
        fields.append({
            "j": j, "k": k, "n": n, "c": c, "c1": c + 1, "i": j - 1, "mirror": mirror,
            "back_k": write.back(f"d_s{k}", *_weight_transposed(model, k)),
            # the seed network's error sent back through W1 where W2 transposed belongs
            "seed_mirror": write.back("d_s2", "W1", False),
            "seed_back": write.back("d_s2", "W2", True),
            "back_c": write.back(f"d_s{c + 1}", *_weight_transposed(model, min(c + 1, n))),
            "outer": write.outer(_activation_text(j - 1, n), f"d_s{j}"),
            "outer_mirror": write.outer(_activation_text(mirror - 1, n), f"d_s{mirror}"),
            "t": write.t,
            "d_shape": f"(n{j}, m)" if columns else f"(m, n{j})",
            "w_shape": f"(n{j}, n{j - 1})" if out_in else f"(n{j - 1}, n{j})",
            # the examples' axis: numpy's 0-based, MATLAB's 1-based
            "axis": int(columns) + notation,
            "slope_j": _slope_text(model, min(j, n - 1), notation),
            "slope_c": _slope_text(model, c, notation),
            "slope_z": _slope_text(model, n, notation),
            "per_m": " / m" if model.reduction == "mean" else "",
        })
    return fields[0], fields[1]


@dataclass(frozen=True)
class _Writer:
    """The products of a fix line in one notation (0 numpy, 1 MATLAB), for arrays held in
    ``orientation``: the model's row-vector products, transposed where the user's arrays are."""

    notation: int
    orientation: Orientation

    @property
    def t(self) -> str:
        return ".T" if self.notation == 0 else "'"

    def _times(self, left: str, right: str) -> str:
        return f"{left} @ {right}" if self.notation == 0 else f"{left} * {right}"

    def _weight(self, name: str, transposed: bool) -> str:
        # the model's W (or W.T), as the user holds it: the user's array is W.T when out_in
        return name + (self.t if transposed != self.orientation.out_in else "")

    def back(self, error: str, weight: str, transposed: bool) -> str:
        """``error @ W``, the model's product (``W`` the weight's name, ``transposed`` whether
        the model multiplies by its transpose), with the user's arrays."""
        if self.orientation.columns:  # (error @ W).T = W.T @ error.T
            return self._times(self._weight(weight, not transposed), error)
        return self._times(error, self._weight(weight, transposed))

    def outer(self, activation: str, error: str) -> str:
        """A weight's gradient ``activation.T @ error`` in the user's orientation of the
        weight."""
        first, second = (error, activation) if self.orientation.out_in else (activation, error)
        if self.orientation.columns:
            return self._times(first, second + self.t)
        return self._times(first + self.t, second)


def _weight_transposed(model: Autoencoder, k: int) -> tuple[str, bool]:
    """The weight the error of layer k goes back through, as the model writes it: ``W2``
    transposed, or ``W1`` as it is for a tied decoder layer (whose weight is ``W1.T``)."""
    n = model.n_layers
    if model.tied and k > n // 2:
        return f"W{n + 1 - k}", False
    return f"W{k}", True


def _activation_text(k: int, n: int) -> str:
    return "x" if k == 0 else "z" if k == n else f"a{k}"


# The local names a fix line may use (the notation of this module's docstring).
_LOCAL_NAME = re.compile(r"(?<![\w.])(d_s\d+|a\d+|n\d+|z|x|m|beta|rho_hat|rho)(?!\w)")


def where_text(model: Autoencoder, line: str, orientation: Orientation | None = None) -> str:
    """What each local name of a fix line stands for, since the user's own names for them
    cannot be known: ``"d_s2: the output layer's error dJ/ds2, (z - x) * z * (1 - z); a1:
    layer 1's activation, sigmoid(x @ W1)"``."""
    code = line.split("#")[0]  # the shape comment's names explain themselves
    orientation = orientation or Orientation()
    meanings = [
        f"{name}: {_meaning(model, name, orientation)}"
        for name in dict.fromkeys(_LOCAL_NAME.findall(code))
    ]
    return "; ".join(meanings)


def _meaning(model: Autoencoder, name: str, orientation: Orientation) -> str:
    n = model.n_layers
    if name == "x":
        return f"the input, one example per {'column' if orientation.columns else 'row'}"
    if name == "m":
        return "the number of examples"
    if name == "beta":
        return f"the sparsity weight ({model.sparsity_weight:g})"
    if name == "rho":
        return f"the sparsity target ({model.sparsity_target:g})"
    if name == "rho_hat":
        # its shape must broadcast against the code layer's error, which examples as columns
        # turn round: (n,) beside (m, n), but (n, 1) beside (n, m)
        c = model.code_layer
        mean = "mean(axis=1, keepdims=True)" if orientation.columns else "mean(axis=0)"
        return f"layer {c}'s mean activation over the examples, a{c}.{mean}"
    if name == "z":
        return f"the output, {_forward_text(model, n, orientation)}"
    k = int(re.sub(r"\D", "", name))
    if name.startswith("n"):
        return f"layer {k}'s width ({model.layers[k]})"
    if name.startswith("a"):
        return f"layer {k}'s activation, {_forward_text(model, k, orientation)}"
    if k < n:
        return f"layer {k}'s error dJ/ds{k}"
    delta = "(z - x)" + (" / m" if model.reduction == "mean" else "")
    if model.loss_name == "squared":
        delta += _slope_text(model, n, 0)
    elif model.activations[-1] != "sigmoid":
        return f"the output layer's error dJ/ds{n}"
    return f"the output layer's error dJ/ds{n}, {delta}"


def _forward_text(model: Autoencoder, k: int, orientation: Orientation) -> str:
    """Layer k's forward step: ``sigmoid(a1 @ W2 + b2)`` (a tied decoder's ``W1.T``), with
    the user's arrays."""
    n = model.n_layers
    weight, transposed = _weight_transposed(model, k)
    # the model multiplies by W{k} itself, or by the tied W{mirror}.T
    product = _Writer(0, orientation).back(_activation_text(k - 1, n), weight, not transposed)
    bias = f" + b{k}" if model.bias else ""
    return f"{model.activations[k - 1]}({product}{bias})"


def _slope_text(model: Autoencoder, k: int, notation: int) -> str:
    template = ACTIVATIONS[model.activations[k - 1]].slope_text[notation]
    if not template:
        return ""
    times = " * " if notation == 0 else " .* "
    return times + template.format(a=_activation_text(k, model.n_layers))


# ---------------------------------------------------------------------------- diagnosis


def diagnose_model(
    model: Autoencoder,
    params: Mapping[str, Any],
    x: Any,
    analytic: Mapping[str, Any],
    numeric: Mapping[str, Any],
    tolerance: Mapping[str, Any],
) -> list[Finding]:
    """Say how each wrong gradient is wrong, naming the backprop mistake that explains it.

    Every mistake of ``applicable_mistakes(model)`` is tested on every failing tensor next to
    the structural hypotheses of ``gradproof.diagnose``: it explains a tensor when the user's
    gradient equals the mistake's within tolerance while the mistake's differs from the
    numeric one. A weight gradient of the transposed shape is transposed back first and
    reported ``transposed``.

    Parameters
    ----------
    model : Autoencoder
        The configuration the gradient is meant for.
    params : dict of str to ndarray
        The parameters, keyed like ``model.param_shapes()``.
    x : ndarray, shape (batch, n_visible)
        The input batch.
    analytic : dict of str to ndarray
        The gradients to judge (a subset of the tensors may be given); each of its
        parameter's shape, or a weight's transposed shape.
    numeric : dict of str to ndarray
        The true gradients of the same tensors; NaN where unknown.
    tolerance : dict of str to ndarray or float
        The resolvable error of each tensor's entries.

    Returns
    -------
    list of Finding
        In the order of the parameters. A model-aware finding carries the mistake id and the
        corrected line in ``details`` (``"mistake"``, ``"numpy"``, ``"matlab"``) and both lines
        in ``fix``; where a model-aware and a structural finding share a kind and a tensor,
        only the model-aware one is kept. Empty when every gradient agrees.

    Raises
    ------
    InputError
        When a name is not a parameter of ``model`` or a shape fits neither way.
    """
    shapes = model.param_shapes()
    aligned, shape_findings = _align(model, analytic, shapes)
    hypotheses: dict[str, Hypothesis] = dict(HYPOTHESES)
    hypotheses.update(_mistake_hypotheses(model, params, x))
    findings = diagnose(
        aligned, numeric, params, tolerance, hypotheses=hypotheses, batch=int(np.shape(x)[0])
    )
    return order_findings(_deduplicated(shape_findings + findings), list(shapes))


def _align(
    model: Autoencoder, analytic: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]
) -> tuple[Grads, list[Finding]]:
    """Transpose back the weight gradients given in the transposed shape, one finding each."""
    aligned: Grads = {}
    findings: list[Finding] = []
    for name, value in analytic.items():
        if name not in shapes:
            raise InputError(
                f"gradient {name!r} is not a parameter of this model; it has "
                f"{', '.join(shapes)}"
            )
        grad = np.asarray(value)
        shape = shapes[name]
        if grad.shape == shape:
            aligned[name] = grad
        elif len(shape) == 2 and grad.shape == shape[::-1]:
            aligned[name] = grad.T
            findings.append(_shape_transposed(model, name, grad.shape, shape))
        else:
            raise InputError(
                f"the gradient of {name} has shape {grad.shape}; expected {shape} like {name}"
            )
    return aligned, findings


def _shape_transposed(
    model: Autoencoder, name: str, got: tuple[int, ...], want: tuple[int, ...]
) -> Finding:
    numpy_line, matlab_line = MISTAKES["transposed_outer_product"].fix_lines(model, name)
    return Finding(
        kind="transposed",
        tensors=(name,),
        message=(
            f"the gradient of {name} has shape {_shape_text(got)}, the transpose of {name}'s "
            f"{_shape_text(want)}: the outer product was taken the wrong way round; a flat "
            "comparison pairs each entry with another one and looks like noise"
        ),
        fix=_fix_text(numpy_line, matlab_line),
        details={"mistake": "transposed_outer_product", "numpy": numpy_line,
                 "matlab": matlab_line, "where": where_text(model, numpy_line),
                 "gradient_shape": list(got)},
    )


def _mistake_hypotheses(
    model: Autoencoder, params: Mapping[str, Any], x: Any
) -> dict[str, Hypothesis]:
    """One hypothesis per applicable mistake; each mistake's gradient is computed once, when
    a failing tensor first asks for it."""
    computed: dict[str, Grads] = {}

    def gradient_of(mistake: Mistake) -> Grads:
        if mistake.id not in computed:
            computed[mistake.id] = mistake.gradient(model, params, x)
        return computed[mistake.id]

    def hypothesis(mistake: Mistake) -> Hypothesis:
        def test(case: TensorCase, failing: Mapping[str, TensorCase]) -> Finding | None:
            wrong = gradient_of(mistake)[case.name]
            if wrong.shape != case.analytic.shape:
                wrong = wrong.T  # compared in the parameter's shape, like the analytic one
            # Undo the mistake with the numeric gradient as the truth: the result fits iff the
            # user's gradient equals the mistake's, and moves iff the mistake changes this tensor.
            corrected = case.numeric + (case.analytic - wrong)
            if not case.explains(corrected):
                return None
            return _mistake_finding(model, mistake, case.name, case.residual(corrected))

        return test

    return {
        f"mistake:{mistake_id}": hypothesis(mistake)
        for mistake_id, mistake in applicable_mistakes(model).items()
    }


def _mistake_finding(model: Autoencoder, mistake: Mistake, name: str, residual: float) -> Finding:
    numpy_line, matlab_line = mistake.fix_lines(model, name)
    return Finding(
        kind=mistake.kind,
        tensors=(name,),
        message=(
            f"the gradient of {name} is exactly what this mistake gives (residual "
            f"{residual:.1g}): {mistake.describe(model, name)}"
        ),
        evidence=residual,
        fix=_fix_text(numpy_line, matlab_line),
        details={"mistake": mistake.id, "numpy": numpy_line, "matlab": matlab_line,
                 "where": where_text(model, numpy_line)},
    )


def in_orientation(findings: list[Finding], model: Autoencoder, orientation: Orientation
                   ) -> list[Finding]:
    """The findings with each catalogued mistake's fix lines (and what their names stand
    for) written for arrays held in ``orientation``, the user's, and with weights stored
    ``(n_out, n_in)`` the shapes a misshapen gradient's finding states; the rest as they are."""
    oriented = []
    for finding in findings:
        mistake = MISTAKES.get(finding.details.get("mistake", ""))
        if mistake is None:
            oriented.append(finding)
            continue
        numpy_line, matlab_line = mistake.fix_lines(model, finding.tensor, orientation)
        details = {**finding.details, "numpy": numpy_line, "matlab": matlab_line,
                   "where": where_text(model, numpy_line, orientation)}
        message = finding.message.replace(mistake.describe(model, finding.tensor),
                                          mistake.describe(model, finding.tensor, orientation))
        got = finding.details.get("gradient_shape")
        if got is not None and orientation.out_in:
            # the user's weight and its gradient are the transposes of gradproof's
            got = tuple(got)[::-1]
            message = _shape_transposed(model, finding.tensor, got, got[::-1]).message
            details["gradient_shape"] = list(got)
        oriented.append(replace(finding, message=message, details=details,
                                fix=_fix_text(numpy_line, matlab_line)))
    return oriented


def _fix_text(numpy_line: str, matlab_line: str) -> str:
    return f"numpy: {numpy_line}  |  MATLAB: {matlab_line}"


def _deduplicated(findings: list[Finding]) -> list[Finding]:
    """One finding per (kind, tensor): the first model-aware one, naming the other mistakes
    that give the same gradient there as alternatives."""
    kept: dict[tuple[str, tuple[str, ...]], Finding] = {}
    for finding in findings:
        key = (finding.kind, finding.tensors)
        held = kept.get(key)
        if held is None or ("mistake" in finding.details and "mistake" not in held.details):
            kept[key] = finding
        elif "mistake" in finding.details and "mistake" in held.details:
            also = [*held.details.get("alternatives", []), finding.details["mistake"]]
            kept[key] = replace(held, details={**held.details, "alternatives": also})
    return list(kept.values())


def order_findings(findings: list[Finding], names: list[str]) -> list[Finding]:
    """Findings sorted by their (first) tensor's position among the parameters, stably."""
    position = {name: i for i, name in enumerate(names)}

    def key(finding: Finding) -> int:
        return position.get(finding.tensor, len(names))

    return sorted(findings, key=key)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


# ------------------------------------------------------------------- the tolerance of a judgement


def rounding_rtol(dtype: np.dtype) -> float:
    """The relative part of ``rounding_tolerance`` for a gradient of ``dtype``: the square
    root of its precision (of float32's for a lower one)."""
    return math.sqrt(float(np.finfo(np.result_type(dtype, np.float32)).eps))


def rounding_tolerance(reference: np.ndarray, analytic: np.ndarray) -> np.ndarray:
    """Per-entry tolerance for comparing a user's gradient with an exact reference.

    Both are exact up to rounding, so the tolerance is the square root of the user's
    precision (1.5e-8 for float64, 3.5e-4 for float32) relative to the entry, plus the same
    relative to the tensor's largest entry for the entries that cancel to nearly zero.
    """
    rtol = rounding_rtol(np.asarray(analytic).dtype)
    # one array, in place: on a large tensor each temporary costs a pass and its page faults
    tolerance = np.abs(np.asarray(reference, dtype=np.float64))
    largest = float(tolerance.max(initial=0.0))
    tolerance += largest
    tolerance *= rtol
    tolerance += float(np.finfo(np.float64).tiny)
    return tolerance
