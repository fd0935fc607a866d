"""Conventions before bug claims: is a failing gradient right for a nearby model?

Contract: ``find_convention(model, params, x, grads) -> Convention | None``. Where gradproof
does not have the user's loss function (a file of arrays), the model it checks against is
the one the flags declare, and a gradient that fails there may still be right for the loss
the user's code computes: averaged instead of summed over the batch, with a weight decay or
a sparsity penalty of another weight. Each option is linear in the gradient, so the nearby
models are few: the other reduction, and the weight-decay and sparsity weights fitted to
the residual by least squares. A candidate counts only when the user's gradient equals its
exact gradient within rounding (``mistakes.rounding_tolerance``) on every entry; among those
the one that changes the fewest options wins, with the shortest numbers that still match.

``loss_verdict(model, alternative, params, x, value)`` then says which of the two a loss
value saved by the user's code belongs to, which settles the question where the file has it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof.errors import InputError
from gradproof.mistakes import rounding_tolerance
from gradproof.nn.autoencoder import Autoencoder
from gradproof.nn.losses import REDUCTIONS
from gradproof.report import Finding

# The options a convention may change, each with the CLI flag that sets it.
FLAGS = {"reduction": "--reduction", "weight_decay": "--weight-decay",
         "sparsity_weight": "--sparsity-weight"}

# The fitted weights, in the order of the least-squares unknowns.
_WEIGHTS = ("weight_decay", "sparsity_weight")

# Relative agreement of a saved loss value with a model's loss: a value saved in float32
# still resolves the factor of a batch mean (at least 2) by far.
LOSS_RTOL = 1e-5


@dataclass(frozen=True)
class Convention:
    """A model under which the user's gradient is right, and what differs from the declared one.

    Attributes
    ----------
    model : Autoencoder
        The nearby model.
    changes : dict of str to (old, new)
        Each option that differs, by config key.
    """

    model: Autoencoder
    changes: dict[str, tuple[Any, Any]]

    @property
    def flags(self) -> str:
        """The command-line flags that make the gradient pass: ``--reduction mean``."""
        return " ".join(f"{FLAGS[key]} {_text(new)}" for key, (_, new) in self.changes.items())

    @property
    def declared(self) -> str:
        """The declared values of the changed options: ``--reduction sum``."""
        return " ".join(f"{FLAGS[key]} {_text(old)}" for key, (old, _) in self.changes.items())


def find_convention(
    model: Autoencoder, params: Mapping[str, Any], x: Any, grads: Mapping[str, Any]
) -> Convention | None:
    """The nearby model under which ``grads`` is the exact gradient, if any.

    Parameters
    ----------
    model : Autoencoder
        The declared model.
    params : dict of str to ndarray
        The parameters, keyed like ``model.param_shapes()``.
    x : ndarray, shape (batch, n_visible)
    grads : dict of str to ndarray
        The user's gradient, in the parameters' shapes (a weight's may be transposed: it is
        compared transposed back, and the shape stays the check's business).

    Returns
    -------
    Convention or None
        None when no nearby model fits, or when the declared one already does.
    """
    config = model.config()
    names = list(model.param_shapes())
    user = np.concatenate([_aligned(grads[n], params[n]).ravel() for n in names])
    for n_changes in (1, 2, 3):
        for changed in itertools.combinations(("reduction", *_WEIGHTS), n_changes):
            candidate = _fitted(config, changed, params, x, names, user)
            found = candidate and _shortest(config, candidate, changed, params, x, names, user)
            if found:
                return found
    return None


def loss_verdict(
    model: Autoencoder, alternative: Autoencoder, params: Mapping[str, Any], x: Any, value: float
) -> str:
    """Which model a saved loss value belongs to: ``"declared"``, ``"alternative"`` or
    ``"neither"`` (``"declared"`` too when both give the same value)."""
    for verdict, candidate in (("declared", model), ("alternative", alternative)):
        if np.isclose(value, candidate.loss(params, x), rtol=LOSS_RTOL, atol=0.0):
            return verdict
    return "neither"


def _fitted(
    config: dict[str, Any], changed: tuple[str, ...], params: Mapping[str, Any], x: Any,
    names: list[str], user: np.ndarray,
) -> dict[str, Any] | None:
    """The config with ``changed`` options moved: the other reduction, and the weights that
    fit ``user`` best by least squares (each gradient is affine in them); None when a fitted
    weight is negative or the fit is degenerate."""
    candidate = dict(config)
    if "reduction" in changed:
        candidate["reduction"] = next(r for r in REDUCTIONS if r != config["reduction"])
    fitted = [key for key in _WEIGHTS if key in changed]
    if not fitted:
        return candidate
    base = {**candidate, **{key: 0.0 for key in fitted}}
    origin = _flat_config(base, params, x, names)
    if origin is None:
        return None
    columns = []
    for key in fitted:
        unit = _flat_config({**base, key: 1.0}, params, x, names)
        if unit is None:
            return None
        columns.append(unit - origin)
    design = np.stack(columns, axis=1)
    coef, _, rank, _ = np.linalg.lstsq(design, user - origin, rcond=None)
    if rank < len(fitted) or np.any(coef <= 0):
        return None
    candidate.update({key: float(value) for key, value in zip(fitted, coef)})
    return candidate


def _shortest(
    config: dict[str, Any], candidate: dict[str, Any], changed: tuple[str, ...],
    params: Mapping[str, Any], x: Any, names: list[str], user: np.ndarray,
) -> Convention | None:
    """The candidate with its fitted weights written as short as they still match, or None
    when even the full-precision fit does not match, or it changes nothing."""
    for digits in (1, 2, 3, 4, 6, 17):
        rounded = {
            key: float(f"{value:.{digits}g}") if key in _WEIGHTS and key in changed else value
            for key, value in candidate.items()
        }
        if any(rounded[key] == config[key] for key in changed):
            continue
        flat = _flat_config(rounded, params, x, names)
        if flat is not None and np.all(np.abs(flat - user) <= rounding_tolerance(flat, user)):
            changes = {key: (config[key], rounded[key]) for key in changed}
            return Convention(Autoencoder.from_config(rounded), changes)
    return None


def _flat_config(
    config: dict[str, Any], params: Mapping[str, Any], x: Any, names: list[str]
) -> np.ndarray | None:
    """The exact gradient of the model ``config`` describes, flattened; None when the model
    cannot take these options (a sparsity penalty on a code layer outside (0, 1))."""
    try:
        return _flat(Autoencoder.from_config(config), params, x, names)
    except InputError:
        return None


def _flat(model: Autoencoder, params: Mapping[str, Any], x: Any, names: list[str]) -> np.ndarray:
    grads = model.loss_and_grad(params, x)[1]
    return np.concatenate([np.asarray(grads[n], dtype=np.float64).ravel() for n in names])


def _aligned(grad: Any, param: Any) -> np.ndarray:
    grad, param = np.asarray(grad, dtype=np.float64), np.asarray(param)
    return grad.T if grad.shape != param.shape and grad.shape == param.shape[::-1] else grad


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def convention_finding(convention: Convention, batch: int, verdict: str | None) -> Finding:
    """The ``convention`` finding for a gradient that passes under ``convention``.

    ``verdict`` is ``loss_verdict``'s answer for the file's loss value (``"alternative"``
    settles it; ``"neither"`` or None leave it open).
    """
    what = "; ".join(_change_words(key, new, batch) for key, (_, new) in convention.changes.items())
    if verdict == "alternative":
        message = (
            f"the loss value saved in the file is that of {what}, and under it the gradient "
            f"is right ({convention.flags}, not the declared {convention.declared})"
        )
        fix = f"run with `{convention.flags}`: that is the loss your code computes"
    else:
        known = (
            "the loss value saved in the file matches neither, so it cannot tell"
            if verdict == "neither"
            else "the file holds no loss value (J, cost or loss) to tell which your code computes"
        )
        message = (
            f"the gradient is right for {what} ({convention.flags}) but not for the declared "
            f"{convention.declared}; {known}: not a bug claim, the check shown is the one that "
            "passes"
        )
        fix = (
            f"if that is the loss your code computes, run with `{convention.flags}`; if not, "
            "the gradient is wrong for yours: save the loss value as J beside the gradient to "
            "settle it"
        )
    return Finding(
        # The convention concerns the loss as a whole, not one tensor.
        "convention", ("loss",), message, fix=fix,
        details={"flags": convention.flags, "declared": convention.declared,
                 "settled": verdict == "alternative",
                 "changes": {key: list(change) for key, change in convention.changes.items()}},
    )


def _change_words(key: str, value: Any, batch: int) -> str:
    """One changed option in words: "the loss averaged over the file's 10 examples"."""
    if key == "reduction":
        verb = "averaged" if value == "mean" else "summed"
        return f"the loss {verb} over the file's {batch} examples"
    if key == "weight_decay":
        return f"a weight decay lambda = {_text(value)}"
    return f"a sparsity penalty of weight beta = {_text(value)}"
