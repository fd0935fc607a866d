"""The backprop mistakes of the ``Network`` family, each a variant backward pass.

Contract: ``NETWORK_MISTAKES`` maps a mistake id to a ``NetworkMistake``;
``mistake.gradient(net, params, x, y) -> grads`` is the gradient a backward pass with that
mistake gives, keyed like ``net.param_shapes()`` (float64), and ``mistake.applies(net)`` says
whether it can change this network's gradient at all. ``check_network`` maps each variant
into the user's layout and tests it against the user's gradient next to the structural
hypotheses (``gradproof.diagnose``): a mistake explains a tensor when the user's gradient
equals the variant's to rounding while the variant differs from the right one.

The variants come from ``variant_backprop``, a backward pass written here apart from
``Network``'s own (the tests hold both to ``autograd``), with one deviation switched on per
mistake, or from the network's own gradient with one of its terms changed (the penalties and
the 1/m enter additively or as a factor).

Notation of the fix lines: the course's names, row-vector convention: ``a1 = x``, ``z{k}`` the
pre-activation and ``a{k}`` the activation of layer k (1 the input), ``d{k}`` dJ/dz{k}, ``m`` the
number of examples, and the user's own names for the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gradproof.errors import InputError
from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.losses import LOSSES
from gradproof.nn.network import Network
from gradproof.nn.softmax import softmax_cross_entropy

Params = dict[str, np.ndarray]

OUTPUT_DELTAS = ("right", "slope_again", "no_target", "no_slope", "of_activation")
HIDDEN_SLOPES = ("right", "of_activation", "of_pre_activation", "missing")
BACK_WEIGHTS = ("transposed", "mirror", "untransposed")


@dataclass(frozen=True)
class Deviation:
    """Where ``variant_backprop`` departs from the right pass; the defaults make none.

    Attributes
    ----------
    output_delta : {"right", "slope_again", "no_target", "no_slope"}
        The output delta: right; multiplied by the output activation's slope again (the
        squared-error habit kept under a cross-entropy, whose delta is ``a - y``); the
        output itself, the target never subtracted; or, under a squared error, ``a - y``
        without the output activation's slope (the cross-entropy's delta kept) or with the
        slope's formula applied to the output instead of its pre-activation.
    hidden_slope : {"right", "of_activation", "of_pre_activation", "missing"}
        The hidden layers' slope taken at the right point, its formula applied to the
        activation instead of the pre-activation (``sigmoidGradient(a2)`` for
        ``sigmoidGradient(z2)``), its formula in terms of the activation applied to the
        pre-activation (``z2 * (1 - z2)`` for ``a2 * (1 - a2)``), or left out of the delta (a
        ReLU's mask never applied).
    back_weight : {"transposed", "mirror", "untransposed"}
        What the error at every layer k > 1 is sent back through: layer k's own weight
        transposed (right); the mirrored layer's weight, layer ``n+1-k``'s as it is stored
        (a symmetric stack: the seed network's ``d_s2 @ W1`` for ``d_s2 @ W2.T``); or layer
        k's own weight untransposed, where it is square (elsewhere the shapes forbid it).
    """

    output_delta: str = "right"
    hidden_slope: str = "right"
    back_weight: str = "transposed"

    def __post_init__(self) -> None:
        for name, allowed in (("output_delta", OUTPUT_DELTAS), ("hidden_slope", HIDDEN_SLOPES),
                              ("back_weight", BACK_WEIGHTS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"Deviation.{name} must be one of {allowed}; got "
                                 f"{getattr(self, name)!r}")


def _effective_weight(net: Network, params: Params, k: int) -> tuple[np.ndarray, str, bool]:
    """Layer k's weight (layers[k-1], layers[k]), the parameter it reads, and whether it is
    that parameter transposed (the second half of a tied stack)."""
    n = net.n_layers
    if net.tied and k > n // 2:
        name = f"W{n + 1 - k}"
        return params[name].T, name, True
    return params[f"W{k}"], f"W{k}", False


def _back_weight(net: Network, params: Params, k: int, w: np.ndarray, how: str) -> np.ndarray:
    """What layer k's error is multiplied by on its way down, (layers[k], layers[k-1])."""
    if how == "mirror":
        return _effective_weight(net, params, net.n_layers + 1 - k)[0]
    if how == "untransposed" and w.shape[0] == w.shape[1]:
        return w
    return w.T  # right


def variant_backprop(net: Network, params: Mapping[str, Any], x: Any, y: Any,
                     deviation: Deviation) -> Params:
    """The gradient of ``net.loss`` by a backward pass with ``deviation`` (float64).

    Parameters
    ----------
    net : Network
    params : dict of str to ndarray
        Keyed like ``net.param_shapes()``.
    x : ndarray, shape (m, layers[0])
    y : targets as ``net.loss`` reads them
    deviation : Deviation

    Returns
    -------
    dict of str to ndarray
        Keyed and shaped like ``net.param_shapes()``.
    """
    net = replace(net, dtype="float64")
    params = net.validate_params(params)
    x = net.validate_input(x)
    t = net.targets(x, y)  # (m, layers[-1])
    z, cache = net.forward(params, x)
    acts, pres = cache.activations, cache.pre_activations  # a0..an, s1..sn
    n, m = net.n_layers, x.shape[0]
    if net.loss_name == "softmax_cross_entropy":
        d_s = softmax_cross_entropy(t, pres[-1])[1]  # z - t
    else:
        d_s = LOSSES[net.loss_name].value_and_delta(t, z, pres[-1], ACTIVATIONS[net.output])[1]
        if net.loss_name == "squared" and not net.squared_half:
            d_s = 2.0 * d_s
    if deviation.output_delta == "slope_again":
        d_s = d_s * ACTIVATIONS[net.output if net.output != "softmax" else "sigmoid"].derivative(z)
    elif deviation.output_delta == "no_target":
        d_s = d_s + t  # (z - t) + t: the output alone
    elif deviation.output_delta == "no_slope":
        d_s = (z - t) * (1.0 if net.squared_half else 2.0)
    elif deviation.output_delta == "of_activation":
        output = ACTIVATIONS[net.output]
        d_s = (z - t) * (1.0 if net.squared_half else 2.0) * output.derivative(output.forward(z))
    d_s = d_s * net.data_factor(m)  # (m, layers[n])
    grads: Params = {}
    for k in range(n, 0, -1):
        w, name, transposed = _effective_weight(net, params, k)
        d_w = acts[k - 1].T @ d_s  # (layers[k-1], layers[k]), like layer k's weight
        grads[name] = grads.get(name, 0.0) + (d_w.T if transposed else d_w)
        if net.bias:
            grads[f"b{k}"] = d_s.sum(axis=0)  # (layers[k],)
        if k == 1:
            break
        d_a = d_s @ _back_weight(net, params, k, w, deviation.back_weight)  # (m, layers[k-1])
        if k - 1 == net.code_layer and net.sparsity_weight:
            rho, rho_hat = net.sparsity_target, acts[k - 1].mean(axis=0)
            d_a = d_a + net.sparsity_weight / m * ((1 - rho) / (1 - rho_hat) - rho / rho_hat)
        activation = ACTIVATIONS[net.activation[k - 2]]
        if deviation.hidden_slope == "missing":
            d_s = d_a
        else:
            # ``derivative`` reads the output a = f(s): fed a (right), f(a) (the formula in
            # terms of s fed a), or s (the formula in terms of a fed s)
            at = {"right": acts[k - 1], "of_activation": activation.forward(acts[k - 1]),
                  "of_pre_activation": pres[k - 2]}[deviation.hidden_slope]
            d_s = d_a * activation.derivative(at)  # (m, layers[k-1])
    decay = decay_slope(net, m)
    for name in net.param_shapes():
        if decay and (name.startswith("W") or net.decay_biases):
            grads[name] = grads[name] + decay * params[name]
    return {name: np.asarray(grads[name]) for name in net.param_shapes()}


# ---------------------------------------------------------------- the gradient's terms


def decay_slope(net: Network, m: int) -> float:
    """2 d(m): the weight decay's gradient is this times the decayed parameter."""
    factor = net.weight_decay * (0.5 if net.decay_half else 1.0)
    return 2.0 * (factor / m if net.decay_mean else factor)


@dataclass(frozen=True)
class Terms:
    """The right gradient split into its additive terms, keyed like the parameters."""

    data: Params
    decay: Params
    sparsity: Params


def gradient_terms(net: Network, params: Mapping[str, Any], x: Any, y: Any) -> Terms:
    """The data term's, the weight decay's and the sparsity penalty's gradients."""
    net = replace(net, dtype="float64")
    bare = replace(net, weight_decay=0.0, sparsity_weight=0.0)
    data = bare.loss_and_grad(params, x, y)[1]
    sparse = replace(net, weight_decay=0.0).loss_and_grad(params, x, y)[1]
    full = net.loss_and_grad(params, x, y)[1]
    return Terms(data, {k: full[k] - sparse[k] for k in full},
                 {k: sparse[k] - data[k] for k in full})


def _sum(*parts: Params) -> Params:
    return {name: sum(part[name] for part in parts) for name in parts[0]}


def _scaled(part: Params, factor: float) -> Params:
    return {name: factor * value for name, value in part.items()}


# -------------------------------------------------------------------------- the catalogue

Gradient = Callable[[Network, Params, np.ndarray, Any], Params]


@dataclass(frozen=True)
class NetworkMistake:
    """One backprop mistake of the family.

    Attributes
    ----------
    id : str
    kind : str
        The finding kind it is reported as.
    description : str
        What the mistake is, with the line people write.
    fix_numpy, fix_matlab : str
        The corrected line, a template of the fields of ``fix_fields``.
    gradient : callable
        ``gradient(net, params, x, y) -> grads``, the variant's gradient.
    applies : callable
        ``applies(net) -> bool``.
    """

    id: str
    kind: str
    description: str
    fix_numpy: str
    fix_matlab: str
    gradient: Gradient
    applies: Callable[[Network], bool]

    def fix_lines(self, fields: Mapping[str, Any]) -> tuple[str, str]:
        """The corrected line in numpy and in MATLAB, from ``fix_fields``."""
        return self.fix_numpy.format(**fields[0]), self.fix_matlab.format(**fields[1])


def _variant(deviation: Deviation) -> Gradient:
    def gradient(net: Network, params: Params, x: np.ndarray, y: Any) -> Params:
        return variant_backprop(net, params, x, y, deviation)

    return gradient


def _mean_applied(times: int) -> Gradient:
    def gradient(net: Network, params: Params, x: np.ndarray, y: Any) -> Params:
        terms = gradient_terms(net, params, x, y)
        m = x.shape[0]
        return _sum(_scaled(terms.data, float(m) ** (1 - times)), terms.decay, terms.sparsity)

    return gradient


def _outputs_mean_never(net: Network, params: Params, x: np.ndarray, y: Any) -> Params:
    terms = gradient_terms(net, params, x, y)
    return _sum(_scaled(terms.data, float(net.layers[-1])), terms.decay, terms.sparsity)


def _biases_decayed(net: Network, params: Params, x: np.ndarray, y: Any) -> Params:
    return replace(net, decay_biases=True).loss_and_grad(params, x, y)[1]


def _decay_of_gradient(net: Network, params: Params, x: np.ndarray, y: Any) -> Params:
    terms = gradient_terms(net, params, x, y)
    slope = decay_slope(net, x.shape[0])
    decayed = {name: slope * terms.data[name] if name.startswith("W") or net.decay_biases
               else 0.0 * terms.data[name] for name in terms.data}
    return _sum(terms.data, decayed, terms.sparsity)


def _decay_scaled(factor: float) -> Gradient:
    def gradient(net: Network, params: Params, x: np.ndarray, y: Any) -> Params:
        terms = gradient_terms(net, params, x, y)
        return _sum(terms.data, _scaled(terms.decay, factor), terms.sparsity)

    return gradient


def _without_sparsity(net: Network, params: Params, x: np.ndarray, y: Any) -> Params:
    terms = gradient_terms(net, params, x, y)
    return _sum(terms.data, terms.decay)


def _one_tied_use(use: str) -> Gradient:
    def gradient(net: Network, params: Params, x: np.ndarray, y: Any) -> Params:
        # The untied twin with W_{n+1-k} = W_k.T computes the same loss and files each use
        # of a tied weight apart; the penalties' decay is added once, as the tied net has it.
        n = net.n_layers
        twin = replace(net, tied=False, weight_decay=0.0)
        untied = dict(params)
        for k in range(1, n // 2 + 1):
            untied[f"W{n + 1 - k}"] = params[f"W{k}"].T
        uses = twin.loss_and_grad(untied, x, y)[1]
        decay = gradient_terms(net, params, x, y).decay
        out = {}
        for name in net.param_shapes():
            kept = uses[name]
            if name.startswith("W") and use == "decoder":
                kept = uses[f"W{n + 1 - int(name[1:])}"].T
            out[name] = kept + decay[name]
        return out

    return gradient


def _labels_shifted(shift: int) -> Gradient:
    def gradient(net: Network, params: Params, x: np.ndarray, y: Any) -> Params:
        t = net.targets(net.validate_input(x), y)
        shifted = np.roll(t, shift, axis=1)  # each one-hot row's 1 moved to the next class
        return replace(net, target="one_hot").loss_and_grad(params, x, shifted)[1]

    return gradient


def _hidden_slope_changes(net: Network) -> bool:
    return any(name != "identity" for name in net.activation)


def _output_slope_changes(net: Network) -> bool:
    return net.loss_name == "squared" and net.output in _SLOPES and net.output != "identity"


def _symmetric_untied(net: Network) -> bool:
    # tied, the mirrored layer's weight is W_k.T itself
    return net.n_layers > 1 and net.layers == net.layers[::-1] and not net.tied


def _square_upper_layer(net: Network) -> bool:
    return any(net.layers[k - 1] == net.layers[k] for k in range(2, net.n_layers + 1))


_HIDDEN_FIX = (
    "d{k} = ({down}){slope}  # the slope at the pre-activation z{k}, not at a{k}",
    "d{k} = ({down}){slope};  % the slope at z{k}, not at a{k}",
)
_PRE_ACTIVATION_FIX = (
    "d{k} = ({down}){slope}  # the slope's formula in terms of the activation, fed a{k}, "
    "not z{k}",
    "d{k} = ({down}){slope};  % the formula in terms of a{k}, fed a{k}, not z{k}",
)
_BACK_FIX = (
    "d{k} = ({down}){slope}  # back through the next layer's own weight, oriented as "
    "here; the same at every layer",
    "d{k} = ({down}){slope};",
)
_MISSING_SLOPE_FIX = (
    "d{k} = ({down}){slope}  # the hidden activation's slope belongs in every hidden delta",
    "d{k} = ({down}){slope};  % the hidden activation's slope belongs in every hidden delta",
)
_OUTPUT_SLOPE_FIX = (
    "d{out} = {squared_delta}{out_slope}  # the squared error's delta keeps the output's slope",
    "d{out} = {squared_delta}{out_slope};",
)
_OUTPUT_FIX = ("d{out} = (a{out} - Y){per}  # the output delta of the cross-entropy: no slope "
               "factor, the one-hot Y subtracted",
               "d{out} = (a{out} - Y){per};")
_MEAN_FIX = ("grad_{W} = {outer} / m + decay  # 1/m once, on the data term",
             "grad_{W} = {outer} / m + decay;")
_OUTPUTS_MEAN_FIX = ("d{out} = d{out} / {n_out}  # the loss averages over every entry of the "
                     "output: its delta is divided by {n_out} outputs too",
                     "d{out} = d{out} / {n_out};")
# A bias gets no decay: where it is column 0 of the weight, the decay skips that column; where
# it is its own tensor, its gradient is the delta summed over the examples alone.
_BIAS_FIX = ("{bias}", "{bias}")
_DECAY_FIX = ("grad_{W}{cut} += {decay} * {W}{cut}  # the weights themselves, biases excluded",
              "grad_{W}{cut} = grad_{W}{cut} + {decay} * {W}{cut};")
_DECAY_FACTOR_FIX = ("grad_{W}{cut} = data_grad_{W}{cut} + {decay} * {W}{cut}  # twice the "
                     "penalty's factor of sum W**2: the derivative of W**2 is 2 * W",
                     "grad_{W}{cut} = data_grad_{W}{cut} + {decay} * {W}{cut};")
_SPARSE_FIX = ("d{k} = ({down} + beta * (-rho / rho_hat + (1 - rho) / (1 - rho_hat)) / m)"
               " * a{k} * (1 - a{k})",
               "d{k} = ({down} + beta * (-rho ./ rho_hat + (1 - rho) ./ (1 - rho_hat)) / m)"
               " .* a{k} .* (1 - a{k});")
_TIED_FIX = ("grad_{W} = {outer} + (mirror use's outer product).T  # both uses of {W}",
             "grad_{W} = {outer} + (mirror use's outer product)';")
_LABEL_FIX = ("Y = np.eye(K)[y - base]  # row i one-hot at class y[i]; base 1 for MATLAB labels",
              "Y = eye(K)(y, :);")

NETWORK_MISTAKES: dict[str, NetworkMistake] = {
    m.id: m for m in (
        NetworkMistake(
            "backprop_through_mirror_weight", "wrong_backprop_matrix",
            "the error sent back to a hidden layer through the mirrored layer's weight instead "
            "of the next layer's own weight transposed (in a symmetric stack, such as an "
            "autoencoder's, the shapes fit, so nothing fails)",
            *_BACK_FIX, _variant(Deviation(back_weight="mirror")), _symmetric_untied,
        ),
        NetworkMistake(
            "backprop_untransposed", "wrong_backprop_matrix",
            "the error sent back through a square weight without transposing it (`d @ W` for "
            "`d @ W.T`, or in MATLAB's (n_out, n_in) layout `d * Theta'` for `d * Theta`; a "
            "square layer's shapes cannot tell)",
            *_BACK_FIX, _variant(Deviation(back_weight="untransposed")), _square_upper_layer,
        ),
        NetworkMistake(
            "slope_of_activation", "wrong_activation_derivative",
            "the hidden activation's derivative evaluated on the activation instead of the "
            "pre-activation (`sigmoidGradient(a2)` for `sigmoidGradient(z2)`)",
            *_HIDDEN_FIX, _variant(Deviation(hidden_slope="of_activation")),
            _hidden_slope_changes,
        ),
        NetworkMistake(
            "slope_formula_of_pre_activation", "wrong_activation_derivative",
            "the hidden activation's derivative, written in terms of the activation (`a2 * (1 "
            "- a2)`, `1 - a2**2`), fed the pre-activation (`z2 * (1 - z2)`, `1 - z2**2`)",
            *_PRE_ACTIVATION_FIX, _variant(Deviation(hidden_slope="of_pre_activation")),
            _hidden_slope_changes,
        ),
        NetworkMistake(
            "slope_missing", "wrong_activation_derivative",
            "the hidden activation's derivative left out of the hidden delta (`d2 = d3 * "
            "Theta2` without `.* sigmoidGradient(z2)`; for a ReLU, the mask `z2 > 0` never "
            "applied)",
            *_MISSING_SLOPE_FIX, _variant(Deviation(hidden_slope="missing")),
            _hidden_slope_changes,
        ),
        NetworkMistake(
            "squared_error_slope_missing", "wrong_activation_derivative",
            "the output activation's derivative left out of the squared error's delta (`a - y`,"
            " the cross-entropy's delta, used with the squared error)",
            *_OUTPUT_SLOPE_FIX, _variant(Deviation(output_delta="no_slope")),
            _output_slope_changes,
        ),
        NetworkMistake(
            "output_slope_of_activation", "wrong_activation_derivative",
            "the output activation's derivative evaluated on the output instead of its "
            "pre-activation in the squared error's delta (`sigmoid_prime(a3)` for "
            "`sigmoid_prime(z3)`)",
            *_OUTPUT_SLOPE_FIX, _variant(Deviation(output_delta="of_activation")),
            _output_slope_changes,
        ),
        NetworkMistake(
            "slope_of_activation_everywhere", "wrong_activation_derivative",
            "every layer's activation derivative evaluated on the activation instead of the "
            "pre-activation, the output's included (`sigmoid_prime(a)` for `sigmoid_prime(z)` "
            "in a loop over the layers)",
            *_HIDDEN_FIX, _variant(Deviation(output_delta="of_activation",
                                             hidden_slope="of_activation")),
            lambda net: _output_slope_changes(net) and _hidden_slope_changes(net),
        ),
        NetworkMistake(
            "cross_entropy_slope_again", "wrong_activation_derivative",
            "the output delta multiplied by the output activation's derivative again under "
            "the cross-entropy, whose delta is `a - y` (the slope cancels against the log)",
            *_OUTPUT_FIX, _variant(Deviation(output_delta="slope_again")),
            lambda net: net.loss_name != "squared",
        ),
        NetworkMistake(
            "softmax_without_target", "mismatch",
            "the softmax gradient without subtracting the one-hot target (`d = a` for "
            "`d = a - Y`)",
            *_OUTPUT_FIX, _variant(Deviation(output_delta="no_target")),
            lambda net: net.loss_name == "softmax_cross_entropy",
        ),
        NetworkMistake(
            "mean_twice", "scaled", "the 1/m of the averaged loss applied twice",
            *_MEAN_FIX, _mean_applied(2), lambda net: net.reduction == "mean",
        ),
        NetworkMistake(
            "mean_never", "scaled", "the 1/m of the averaged loss never applied to the gradient",
            *_MEAN_FIX, _mean_applied(0), lambda net: net.reduction == "mean",
        ),
        NetworkMistake(
            "outputs_mean_never", "scaled",
            "the mean over the outputs never applied to the gradient (the loss averages over "
            "every entry of the output, as `np.mean((a - y)**2)` does, the delta over the "
            "examples alone)",
            *_OUTPUTS_MEAN_FIX, _outputs_mean_never, lambda net: net.mean_outputs,
        ),
        NetworkMistake(
            "decay_on_biases", "missing_l2",
            "weight decay applied to the biases too (the bias column regularised, not "
            "skipped); the loss leaves them out",
            *_BIAS_FIX, _biases_decayed,
            lambda net: net.bias and net.weight_decay > 0 and not net.decay_biases,
        ),
        NetworkMistake(
            "decay_of_gradient", "missing_l2",
            "the regularisation term built from the gradient instead of the weights "
            "(`lambda/m * grad` for `lambda/m * Theta`)",
            *_DECAY_FIX, _decay_of_gradient, lambda net: net.weight_decay > 0,
        ),
        NetworkMistake(
            "decay_halved", "missing_l2",
            "the weight decay's gradient half of what the penalty gives: the derivative of "
            "`lambda * sum W**2` written `lambda * W` (it is `2 * lambda * W`)",
            *_DECAY_FACTOR_FIX, _decay_scaled(0.5), lambda net: net.weight_decay > 0,
        ),
        NetworkMistake(
            "decay_doubled", "missing_l2",
            "the weight decay's gradient twice what the penalty gives: the derivative of "
            "`lambda/2 * sum W**2` written `2 * lambda * W` (it is `lambda * W`)",
            *_DECAY_FACTOR_FIX, _decay_scaled(2.0), lambda net: net.weight_decay > 0,
        ),
        NetworkMistake(
            "sparsity_missing", "missing_term",
            "the sparsity penalty's term missing from the hidden delta",
            *_SPARSE_FIX, _without_sparsity, lambda net: net.sparsity_weight > 0,
        ),
        NetworkMistake(
            "tied_decoder_path_missing", "missing_term",
            "only the encoder's use of a tied weight in its gradient; the decoder's use "
            "(transposed) adds a second term",
            *_TIED_FIX, _one_tied_use("encoder"), lambda net: net.tied,
        ),
        NetworkMistake(
            "tied_encoder_path_missing", "missing_term",
            "only the decoder's use of a tied weight in its gradient; the encoder's use adds "
            "a second term",
            *_TIED_FIX, _one_tied_use("decoder"), lambda net: net.tied,
        ),
        NetworkMistake(
            "labels_off_by_one", "mismatch",
            "the labels off by one in the gradient's one-hot targets (1-based labels read as "
            "0-based, or the reverse): each example's target is the next class",
            *_LABEL_FIX, _labels_shifted(1),
            lambda net: net.target == "labels" and net.layers[-1] > 1,
        ),
        NetworkMistake(
            "labels_off_by_one_down", "mismatch",
            "the labels off by one in the gradient's one-hot targets: each example's target "
            "is the previous class",
            *_LABEL_FIX, _labels_shifted(-1),
            lambda net: net.target == "labels" and net.layers[-1] > 1,
        ),
    )
}


def applicable(net: Network) -> dict[str, NetworkMistake]:
    """The mistakes that can change this network's gradient, in catalogue order."""
    return {key: m for key, m in NETWORK_MISTAKES.items() if m.applies(net)}


# ------------------------------------------------------------------------- fix-line text


# The hidden activation's slope at layer k (course numbering) as a factor of dJ/da{k}, in numpy
# and in MATLAB: sigmoid_gradient is the course's helper, the others from the activation a{k}
# or the pre-activation z{k}.
_SLOPES = {
    "sigmoid": (" * sigmoid_gradient(z{k})", " .* sigmoidGradient(z{k})"),
    "tanh": (" * (1 - a{k}**2)", " .* (1 - a{k}.^2)"),
    "relu": (" * (z{k} > 0)", " .* (z{k} > 0)"),
    "identity": ("", ""),
}


def _slope_text(net: Network, j: int, matlab: bool) -> str:
    """The slope factor of hidden layer j (the activation ``W{j}`` feeds), empty for none."""
    if j > len(net.activation):
        return ""
    return _SLOPES[net.activation[j - 1]][matlab].format(k=j + 1)


def _output_slope_text(net: Network, matlab: bool) -> str:
    """The output activation's slope factor, where the course's helpers can write it."""
    return _SLOPES.get(net.output, ("", ""))[matlab].format(k=net.n_layers + 1)


def _bias_line(layout: Any, names: Mapping[str, str], j: int, weight: str, cut: str,
               factor: str, matlab: bool) -> str:
    """Layer j's bias without decay: the decay skipping the bias column of an augmented
    weight, or the bias's own gradient, the delta summed over the examples."""
    if layout.biases == "augmented":
        if matlab:
            return f"grad_{weight}{cut} = grad_{weight}{cut} + {factor} * {weight}{cut};"
        return f"grad_{weight}{cut} += {factor} * {weight}{cut}  # the bias skipped"
    bias = names.get(f"b{j}", f"b{j}")
    rows = layout.examples == "rows"
    if matlab:
        return f"grad_{bias} = sum(d{j + 1}, {1 if rows else 2});  % no decay on a bias"
    return (f"grad_{bias} = d{j + 1}.sum(axis={0 if rows else 1})  # summed over the examples, "
            "no decay on a bias")


def fix_fields(net: Network, layout: Any, names: Mapping[str, str], tensor: str
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The template fields for the user's ``tensor``, in numpy and in MATLAB notation.

    ``names`` maps the network's tensor names to the user's; ``layout`` is the user's
    ``Layout``. Layers are numbered as in the course (the input is layer 1), so the weight
    ``W{j}`` of the network maps ``a{j}`` to ``z{j+1}``.
    """
    owner = next((name for name, user in names.items() if user == tensor), f"W{net.n_layers}")
    j = int(owner[1:])
    weight = names.get(f"W{j}", tensor)
    following = names.get(f"W{j + 1}", weight)
    out_in = layout.weights == "out_in"
    augmented = layout.biases == "augmented"
    m = "m" if net.decay_mean else "1"
    decay = f"lam / {m}" if net.decay_half else f"2 * lam / {m}"
    target = "x" if net.target == "input" else "Y"
    divisor = {(False, False): "", (True, False): " / m", (False, True): f" / {net.layers[-1]}",
               (True, True): f" / (m * {net.layers[-1]})"}[net.reduction == "mean",
                                                            net.mean_outputs]
    squared_delta = (f"{'' if net.squared_half else '2 * '}(a{net.n_layers + 1} - {target})"
                     f"{divisor}")
    fields = []
    for matlab in (False, True):
        t = "'" if matlab else ".T"
        times = " * " if matlab else " @ "
        cut = ("(:, 2:end)" if matlab else "[:, 1:]") if out_in else ("(2:end, :)" if matlab
                                                                     else "[1:, :]")
        # dJ/da{k} = d{k1} times layer k+1's weight, as the user holds it (without its bias)
        held = f"{following}{cut}" if augmented else following
        if layout.examples == "rows":  # d{k1}: (m, n_out)
            down = f"d{j + 2}{times}{held}" + ("" if out_in else t)
            outer = f"d{j + 1}{t}{times}a{j}" if out_in else f"a{j}{t}{times}d{j + 1}"
        else:  # examples as columns, d{k1}: (n_out, m)
            down = f"{held}" + (t if out_in else "") + f"{times}d{j + 2}"
            outer = f"d{j + 1}{times}a{j}{t}" if out_in else f"a{j}{times}d{j + 1}{t}"
        factor = decay.replace("lam", "lambda") if matlab else decay
        fields.append({"W": weight, "k": j + 1, "k1": j + 2, "kp": j, "out": net.n_layers + 1,
                       "n_out": net.layers[-1], "per": divisor,
                       "down": down, "slope": _slope_text(net, j, matlab),
                       "squared_delta": squared_delta, "out_slope": _output_slope_text(net, matlab),
                       "outer": outer, "cut": cut if augmented else "", "decay": factor,
                       "bias": _bias_line(layout, names, j, weight, cut, factor, matlab)})
    return fields[0], fields[1]
