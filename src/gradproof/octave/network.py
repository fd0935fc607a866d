"""The identified path of ``gradproof.octave.check``: the user's MATLAB network, named.

Contract: ``check_identified(runner, gradient, shapes, order, **options) -> (report, model)``.
The shapes are the user's, or each set ``inferred_shapes`` reads from the layer sizes among
the expression's arguments (``nnCostFunction(theta, 400, 25, 10, X, y, 1)``). The data are
the numeric arrays the expression names (``X``, ``y``, ``patches`` ..., read back from Octave:
what the expression captured from the loaded variables); each way of reading them as the
examples ``x`` and the targets ``y`` (or none, for an autoencoder) under which the tensor
shapes form a network of the family (``layouts.fit_layouts``) is tried in turn. The user's J,
evaluated in Octave at the handful of points identification needs (one exchange,
``OctaveRunner.many``), identifies the member of the family (``identify``); then
``check_network`` checks every entry against that network's backprop in numpy and names the
mistake, its finite-difference evidence evaluated in batches inside Octave. ``report`` is
None when no member computes the user's J, and ``model`` then says which came closest and
why it was rejected, for the black-box report that takes its place (None when no shapes
describe a network at all).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from gradproof.errors import InputError
from gradproof.identify import identify_problem, read_problem
from gradproof.layouts import fit_layouts
from gradproof.network_check import check_network
from gradproof.octave.runner import OctaveError, OctaveRunner
from gradproof.report import GradReport

Shapes = Mapping[str, tuple[int, ...]]


def data_readings(arrays: Mapping[str, np.ndarray], expr: str, shapes: Shapes
                  ) -> Iterator[tuple[str, str | None]]:
    """(x's name, y's name or None) for each reading of the arrays under which the shapes form
    a network: in the expression's order, targets before none."""
    order = list(dict.fromkeys(re.findall(r"[A-Za-z]\w*", expr)))
    named = sorted((name for name, value in arrays.items() if value.size > 1),
                   key=lambda name: order.index(name) if name in order else len(order))
    for x in named:
        if arrays[x].ndim == 2 and fit_layouts(shapes, arrays[x].shape, flat=True):
            yield from ((x, y) for y in [*(n for n in named if n != x), None])


def integer_arguments(arrays: Mapping[str, np.ndarray], expr: str) -> list[int]:
    """The positive integers among the expression's arguments, in order: literals (``400``)
    and the scalar variables it names (``hidden_layer_size``)."""
    found = []
    for token in re.findall(r"[A-Za-z_]\w*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", expr):
        value = arrays.get(token)
        if value is not None and value.size == 1:
            number = float(value.reshape(-1)[0])
        elif token[0].isdigit():
            number = float(token)
        else:
            continue
        if number >= 1 and number == round(number):
            found.append(int(number))
    return found


def inferred_shapes(arrays: Mapping[str, np.ndarray], expr: str, size: int) -> list[Shapes]:
    """The tensors a parameter vector of ``size`` entries holds, as the layer sizes among the
    expression's arguments describe them in the courses' own unrolling: ``Theta1, Theta2 ...``
    (n_out, n_in + 1) for consecutive sizes ``n_in, n_hidden ..., n_out``; the sparse
    autoencoder's ``W1`` (h, v), ``W2`` (v, h), ``b1``, ``b2`` for a pair ``v, h``; and a
    bias-free pair of weights either way round, ``v`` also read from the data's width.
    Identification tells them apart (a wrong guess computes another J)."""
    sizes = integer_arguments(arrays, expr)
    widths = sorted({n for a in arrays.values() if a.ndim == 2 and a.size > 1 for n in a.shape})
    found: list[Shapes] = []
    for i in range(len(sizes)):
        for j in range(i + 2, len(sizes) + 1):
            layers = sizes[i:j]
            pairs = list(zip(layers, layers[1:]))
            if sum(n_out * (n_in + 1) for n_in, n_out in pairs) == size:
                found.append({f"Theta{k}": (n_out, n_in + 1)
                              for k, (n_in, n_out) in enumerate(pairs, start=1)})
    pairs = [*zip(sizes, sizes[1:]), *((v, h) for v in widths for h in sizes)]
    for v, h in dict.fromkeys(pairs):
        if 2 * v * h + v + h == size:
            found.append({"W1": (h, v), "W2": (v, h), "b1": (h,), "b2": (v,)})
        if 2 * v * h == size:
            found.extend([{"W1": (v, h), "W2": (h, v)}, {"W1": (h, v), "W2": (v, h)}])
    return found


def check_identified(runner: OctaveRunner, gradient: np.ndarray, shapes: Shapes | None,
                     order: str, **options: Any) -> tuple[GradReport | None, dict[str, Any] | None]:
    """``check_network``'s report on the user's J and gradient where a member of the family
    computes J, with the data's names in ``report.model``; else None and why not.

    Without ``shapes``, each set of shapes ``inferred_shapes`` finds is tried (``model``'s
    ``shapes`` says which was identified); where none is found, ``model`` is None.
    ``options`` are ``check_network``'s (``rtol``, ``atol``, ``safety``, ``seed``).
    """
    arrays = runner.captured()
    candidates = [shapes] if shapes is not None else inferred_shapes(
        arrays, runner.expr, runner.theta.size)
    if not candidates:
        return None, None
    closest, tried = [], 0
    for shaped in candidates:
        for x_name, y_name in data_readings(arrays, runner.expr, shaped):
            x, y = arrays[x_name], None if y_name is None else arrays[y_name]
            reading = f"x = {x_name}" + ("" if y_name is None else f", y = {y_name}")
            if shapes is None:
                reading = f"{shapes_text(shaped)}, {reading}"
            try:
                problem = read_problem(runner, runner.theta, x, y, shaped, order)
                problem.orders = (order,)  # (:) and reshape unroll in one order in MATLAB
                identification = identify_problem(problem)
            except OctaveError:
                raise  # the user's code failed in Octave: no reading does better
            except InputError as error:
                # A reading the family cannot take (labels that are no labels ...): the next.
                closest.append(f"{reading}: {error}")
                continue
            tried += identification.tried
            found = identification.model
            if found is None:
                closest.append(f"{reading}: {identification.closest}")
                continue
            report = check_network(runner, gradient, runner.theta, x, y, model=found.network,
                                   layout=found.layout, shapes=shaped, order=order,
                                   subscripts="matlab", flat_name=runner.var, **options)
            report.model = {**identification.to_dict(), "x": x_name, "y": y_name,
                            "shapes": shapes_text(shaped), "shapes_inferred": shapes is None}
            return report, report.model
    if not closest:
        listed = ", ".join(f"{name} {'x'.join(map(str, a.shape))}" for name, a in arrays.items())
        closest.append(f"none of the arrays {runner.expr} names ({listed or 'none'}) is data "
                       "whose width fits the shapes as a network's input")
    return None, {"identified": False, "closest": "; ".join(closest), "tried": tried}


def shapes_text(shapes: Shapes) -> str:
    """``W1=25x64,b1=25``: the shapes as ``--shapes`` takes them."""
    return ",".join(f"{name}={'x'.join(map(str, dims))}" for name, dims in shapes.items())
