"""A network of the family saved in a file: the user's parameters, data, gradient and loss value.

Contract: ``read_family_file(path, shapes=None, order=None) -> FamilyFile``. The file (a .mat or
.npz, read by ``gradproof.io.read_arrays``) holds the user's parameters under any names
(``Theta1``, ``Theta2``; ``W1``, ``b1`` ...) or one flat vector (``theta``, ``nn_params``)
whose tensors ``shapes`` names; the data ``X`` (any of ``io.X_NAMES``) and, for a classifier,
the labels or targets ``y``; the user's gradient, one per parameter (``Theta1_grad``,
``dW1`` ...: any name ``params.gradient_stems`` strips to the parameter's) or one flat vector
(``grad``) unrolled like the parameters; and optionally the loss value the user's code computed
(``J``, ``cost`` or ``loss``) and the weight-decay constant (``lambda``). The parameters and the
gradient keep the user's structure, names and shapes: ``gradproof.identify`` reads them through
a ``Layout`` as ``check_network`` does.

A flat gradient beside several parameter tensors is read in the order of their names (layer by
layer, the weight first) and unrolled column-major for a .mat file (MATLAB's ``[Theta1(:);
Theta2(:)]``), row-major for an .npz, unless ``order`` says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradproof.errors import DataError
from gradproof.io import LOSS_NAMES, X_NAMES, _check_finite, _listing, read_arrays
from gradproof.params import gradient_stems

Y_NAMES = ("y", "Y", "labels", "targets")
THETA_NAMES = ("theta", "nn_params", "params", "Theta")
GRAD_NAMES = ("grad", "gradient", "g")
LAMBDA_NAMES = ("lambda", "lam", "Lambda")


@dataclass(frozen=True)
class FamilyFile:
    """What a file holds, in the user's own structure.

    Attributes
    ----------
    path : Path
    params : dict of str to ndarray, or ndarray
        The parameters under the file's names, or the flat vector (with ``shapes``).
    grads : dict of str to ndarray, or ndarray
        The user's gradient, structured like ``params``.
    x : ndarray, 2-D
    y : ndarray or None
    shapes : dict of str to tuple, or None
        For a flat vector: the tensors it holds, in order.
    order : {"C", "F"}
        How a flat vector is unrolled.
    loss : float or None
        The loss value saved beside the gradient.
    weight_decay : float or None
        The ``lambda`` saved in the file.
    names : dict of str to str
        Role (``"x"``, ``"y"``, a parameter, ``"grad <parameter>"``, ``"loss"``) -> variable.
    """

    path: Path
    params: Any
    grads: Any
    x: np.ndarray
    y: np.ndarray | None
    shapes: dict[str, tuple[int, ...]] | None
    order: str
    loss: float | None
    weight_decay: float | None
    names: dict[str, str] = field(default_factory=dict)

    @property
    def subscripts(self) -> str:
        """How the file's author writes positions: MATLAB's 1-based for a .mat file."""
        return "matlab" if self.path.suffix.lower() == ".mat" else "numpy"

    @property
    def flat_name(self) -> str:
        """The flat parameter vector's variable (with ``shapes``), which positions name."""
        return next((role for role in self.names if f"grad {role}" in self.names
                     and self.shapes is not None), "theta")

    def user_grads(self) -> Any:
        """The gradient keyed by the file's own variables (``Theta1_grad``), so that a report
        writes its positions on them; a flat gradient as it is."""
        if not isinstance(self.grads, Mapping):
            return self.grads
        return {self.names.get(f"grad {name}", name): g for name, g in self.grads.items()}


def looks_like_family(arrays: Mapping[str, np.ndarray], shapes: Any) -> bool:
    """Whether a file is read as a member of the family rather than as an autoencoder by
    ``io.read_gradient_file``: shapes for a flat vector, labels or targets, or parameters
    under the course's names (``Theta1``, ``theta``)."""
    return shapes is not None or any(name in arrays for name in Y_NAMES) or any(
        name.lower().startswith("theta") or name == "nn_params" for name in arrays)


def read_family_file(path: str | Path, shapes: Mapping[str, tuple[int, ...]] | None = None,
                     order: str | None = None) -> FamilyFile:
    """Read a family member's parameters, data, gradient and loss value from a file.

    Raises
    ------
    DataError
        No data ``x``; no parameters, or a parameter without a gradient; a flat vector
        without ``shapes`` or whose length they do not give; a scalar that is not one finite
        number; NaN or Inf in a variable.
    """
    path = Path(path)
    arrays = read_arrays(path)
    order = order or ("F" if path.suffix.lower() == ".mat" else "C")
    names: dict[str, str] = {}
    x_name = _first(arrays, X_NAMES)
    if x_name is None:
        raise DataError(f"{path}: no data: expected a variable named {', '.join(X_NAMES)}; "
                        f"found {_listing(arrays)}")
    names["x"] = x_name
    y_name = _first(arrays, Y_NAMES)
    if y_name is not None:
        names["y"] = y_name
    loss = _scalar(arrays, LOSS_NAMES, path, names, "loss")
    lam = _scalar(arrays, LAMBDA_NAMES, path, names, "lambda")
    taken = set(names.values())
    rest = {name: value for name, value in arrays.items() if name not in taken}
    if shapes is not None:
        params, grads = _flat(rest, shapes, path, names)
    else:
        params, grads = _tensors(rest, order, path, names)
    for role, variable in names.items():
        if role not in ("loss", "lambda"):
            _check_finite(arrays[variable], variable, path)
    x = np.asarray(arrays[x_name], dtype=np.float64)
    y = None if y_name is None else np.asarray(arrays[y_name])
    return FamilyFile(path, params, grads, x, y,
                      None if shapes is None else {k: tuple(v) for k, v in shapes.items()},
                      order, loss, lam, names)


def _first(arrays: Mapping[str, np.ndarray], candidates: tuple[str, ...]) -> str | None:
    return next((name for name in candidates if name in arrays), None)


def _scalar(arrays: Mapping[str, np.ndarray], candidates: tuple[str, ...], path: Path,
            names: dict[str, str], role: str) -> float | None:
    variable = _first(arrays, candidates)
    if variable is None:
        return None
    value = arrays[variable]
    if value.size != 1 or not np.isfinite(value).all():
        raise DataError(f"{path}: variable {variable} looks like the {role} value but has "
                        f"shape {value.shape}; expected one finite number (or rename it)")
    names[role] = variable
    return float(value.reshape(()))


def _flat(rest: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]], path: Path,
          names: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    size = sum(int(np.prod(shape)) for shape in shapes.values())
    vectors = {name: v for name, v in rest.items() if v.size == size and 1 in (v.ndim, min(v.shape))}
    theta = _first(vectors, THETA_NAMES)
    if theta is None:
        raise DataError(f"{path}: --shapes give {size} entries; no flat parameter vector of that "
                        f"length named {', '.join(THETA_NAMES)}; found {_listing(rest)}")
    grad = _first(vectors, GRAD_NAMES) or next(
        (name for name in vectors if theta in gradient_stems(name)), None)
    if grad is None:
        raise DataError(f"{path}: no flat gradient of {size} entries beside {theta} (named "
                        f"{', '.join(GRAD_NAMES)}, or like d{theta} or {theta}_grad); found "
                        f"{_listing(rest)}")
    names[theta], names[f"grad {theta}"] = theta, grad
    return (np.asarray(vectors[theta], dtype=np.float64).reshape(-1),
            np.asarray(vectors[grad]).reshape(-1))


def _layer_key(name: str) -> tuple[int, bool, str]:
    digits = re.findall(r"\d+", name)
    return (int(digits[-1]) if digits else 0, bool(re.match(r"(?i)b|bias", name)), name)


def _tensors(rest: Mapping[str, np.ndarray], order: str, path: Path, names: dict[str, str]
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    owners = {}
    for variable in rest:
        stem = next((s for s in gradient_stems(variable) if s in rest), None)
        if stem is not None:
            owners[variable] = stem
    params = sorted((name for name in rest if name not in owners and name not in GRAD_NAMES),
                    key=_layer_key)
    if not params:
        raise DataError(f"{path}: no parameters found beside the data; found {_listing(rest)}")
    by_param = {param: grad for grad, param in owners.items()}
    flat = _first({k: v for k, v in rest.items() if k not in owners}, GRAD_NAMES)
    grads: dict[str, np.ndarray] = {}
    if all(p in by_param for p in params):
        grads = {p: np.asarray(rest[by_param[p]]) for p in params}
        for p in params:
            names[p], names[f"grad {p}"] = p, by_param[p]
    elif flat is not None:
        grads = _split(np.asarray(rest[flat]).reshape(-1), {p: rest[p].shape for p in params},
                       order, flat, path)
        for p in params:
            names[p] = p
        names["grad (flat)"] = flat
    else:
        missing = [p for p in params if p not in by_param]
        raise DataError(f"{path}: no gradient for {', '.join(missing)} (named like "
                        f"{missing[0]}_grad, d{missing[0]} or grad_{missing[0]}, or one flat "
                        f"{' / '.join(GRAD_NAMES)}); found {_listing(rest)}")
    return {p: np.asarray(rest[p], dtype=np.float64) for p in params}, grads


def _split(flat: np.ndarray, shapes: Mapping[str, tuple[int, ...]], order: str, variable: str,
           path: Path) -> dict[str, np.ndarray]:
    sizes = [int(np.prod(shape)) for shape in shapes.values()]
    if flat.size != sum(sizes):
        raise DataError(f"{path}: the flat gradient {variable} has {flat.size} entries; the "
                        f"parameters ({', '.join(shapes)}) have {sum(sizes)}")
    ends = np.cumsum(sizes)
    return {name: part.reshape(shape, order=order) for (name, shape), part
            in zip(shapes.items(), np.split(flat, ends[:-1]))}

