"""A network of the family in the user's words: the names their tensors have, the model as a
sentence, and the note on the weight decay's forms.

Contract: pure functions of a ``Network`` and the ``Layout`` the user stores it in (and, for a
flat vector, the names ``shapes=`` gave its tensors); nothing is computed from data beyond the
number of examples ``m``.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradproof.layouts import Layout
from gradproof.network_mistakes import decay_slope
from gradproof.nn.network import Network
from gradproof.report import Finding


def user_names(layout: Layout, net: Network, flat_names: Sequence[str] | None = None
               ) -> dict[str, str]:
    """Network tensor name -> the user's name for what holds it; ``flat_names``: the names
    given to the tensors of a flat vector (``shapes=``'s keys), in its order."""
    stored = list(layout.stored) if layout.stored is not None else list(net.param_shapes())
    if layout.container == "dict" and layout.names is not None:
        names = dict(zip(stored, layout.names))
    elif layout.container == "flat" and flat_names is not None:
        names = dict(zip(stored, flat_names))
    elif layout.container == "list":
        names = {name: f"[{i}]" for i, name in enumerate(stored)}
    else:
        names = {name: name for name in stored}
    if layout.biases == "augmented":
        for name in list(names):
            names[f"b{name[1:]}"] = names[name]
    return names


def decay_text(net: Network, layout: Layout, flat_names: Sequence[str] | None) -> str:
    """The weight decay as the user would write it, on their tensors
    ("lambda/(2m) * (sum Theta1[:, 1:]**2 + ...) (the bias column skipped), lambda = 1")."""
    if not net.weight_decay:
        return "no weight decay"
    names = user_names(layout, net, flat_names)
    weights = [name for name in net.param_shapes() if name.startswith("W")]
    if layout.biases == "augmented" and not net.decay_biases:
        cut = "[:, 1:]" if layout.weights == "out_in" else "[1:, :]"
        terms = [f"{names[w]}{cut}" for w in weights]
        tail = " (the bias column skipped)" if layout.weights == "out_in" else " (the bias row skipped)"
    else:
        decayed = weights + ([n for n in net.param_shapes() if n.startswith("b")]
                             if net.decay_biases and layout.biases != "augmented" else [])
        terms = [names[n] for n in decayed]
        tail = " (biases included)" if net.decay_biases else " (biases excluded)"
    factor = "lambda/(2m)" if net.decay_mean else "lambda/2"
    squares = " + ".join(f"sum {t}**2" for t in terms)
    return f"{factor} * ({squares}){tail}, lambda = {net.weight_decay:.6g}"


def _counted(count: int | str, noun: str) -> str:
    """``10 outputs``, ``one output``."""
    return f"one {noun}" if count == 1 else f"{count} {noun}s"


def describe(net: Network, layout: Layout, m: int | str, flat_names: Sequence[str] | None
             ) -> str:
    """The model in one sentence of the user's terms, ``m`` examples: layers, activations,
    loss and reduction, targets, decay, sparsity, tying, then the layout."""
    layers = "-".join(str(n) for n in net.layers)
    hidden = ""
    if len(set(net.activation)) == 1:
        hidden = f"{net.activation[0]} hidden, "
    elif net.activation:
        hidden = f"{', '.join(net.activation)} hidden (layer by layer), "
    k = net.layers[-1]
    over = f"{'averaged' if net.mean_outputs else 'summed'} over the {_counted(k, 'output')}"
    if net.loss_name == "squared":
        data = f"{'1/2 * ' if net.squared_half else ''}squared error {over}"
    elif net.loss_name == "cross_entropy":
        data = f"cross-entropy {over}"
    else:
        data = f"softmax cross-entropy over {k} classes"
    data += (f" and {'averaged' if net.reduction == 'mean' else 'summed'} over "
             f"{_counted(m, 'example')}")
    target = {"input": "reconstructing its input",
              "labels": f"labels {net.label_base}..{net.label_base + max(k, 2) - 1}",
              "one_hot": f"targets as {layout.examples} of y"}[net.target]
    text = (f"{layers}, {hidden}{net.output} output, {data}, {target}, "
            f"{decay_text(net, layout, flat_names)}")
    if net.sparsity_weight:
        text += (f", KL sparsity beta = {net.sparsity_weight:.6g} with rho = "
                 f"{net.sparsity_target:.6g}")
    if net.tied:
        text += ", tied weights"
    return f"{text}; {layout.describe()}"


def decay_form_note(net: Network, m: int) -> Finding | None:
    """A ``convention`` note: the weight decay's forms that fit the loss values equally.

    Only the factor of ``sum W**2`` enters the loss, so ``lambda/(2m)``, ``lambda/2``,
    ``lambda/m`` and ``lambda`` with each its own lambda compute the same loss and the same
    gradient: the values cannot tell them apart. Not a bug claim; it says which form the
    report's lambda belongs to. None without a decay. ``m``: the number of examples.
    """
    if not net.weight_decay:
        return None
    kappa = decay_slope(net, m) / 2  # the factor of sum W**2
    forms = {"lambda/(2m)": 2 * m * kappa, "lambda/2": 2 * kappa, "lambda/m": m * kappa,
             "lambda": kappa}
    stated = "lambda/(2m)" if net.decay_mean else "lambda/2"
    others = ", ".join(f"{form} * sum W**2 with lambda = {value:.6g}"
                       for form, value in forms.items() if form != stated)
    return Finding(
        # the note concerns the loss as a whole, not one tensor
        "convention", ("loss",),
        f"the loss values fit the weight decay as {stated} * sum W**2 with lambda = "
        f"{forms[stated]:.6g}, and equally as {others}: only the factor of sum W**2 "
        f"({kappa:.6g} with m = {m}) enters the loss, so the values cannot tell the forms "
        f"apart; the report states {stated}, the course's form for a loss "
        f"{'averaged' if net.reduction == 'mean' else 'summed'} over the examples",
        fix="nothing to fix: every form gives the same loss and the same gradient; read the "
        "report's lambda as the lambda of that form",
        details={"stated": stated, "forms": forms, "factor": kappa},
    )
