"""The identified path of ``gradproof.octave.check``: the user's MATLAB network, named.

Contract: ``check_identified(runner, gradient, shapes, order, **options) -> (report, model)``.
The data are the numeric arrays the expression names (``X``, ``y``, ``patches`` ..., read back
from Octave: what the expression captured from the loaded variables); each way of reading
them as the examples ``x`` and the targets ``y`` (or none, for an autoencoder) under which the
tensor shapes form a network of the family (``layouts.fit_layouts``) is tried in turn. The
user's J, evaluated in Octave at the handful of points identification needs (one exchange,
``OctaveRunner.many``), identifies the member of the family (``identify``); then
``check_network`` checks every entry against that network's backprop in numpy and names the
mistake, its finite-difference evidence evaluated in batches inside Octave. ``report`` is
None when no member computes the user's J, and ``model`` then says which came closest and
why it was rejected, for the black-box report that takes its place.
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


def check_identified(runner: OctaveRunner, gradient: np.ndarray, shapes: Shapes, order: str,
                     **options: Any) -> tuple[GradReport | None, dict[str, Any]]:
    """``check_network``'s report on the user's J and gradient where a member of the family
    computes J, with the data's names in ``report.model``; else None and why not.

    ``options`` are ``check_network``'s (``rtol``, ``atol``, ``safety``, ``seed``).
    """
    arrays = runner.captured()
    closest, tried = [], 0
    for x_name, y_name in data_readings(arrays, runner.expr, shapes):
        x, y = arrays[x_name], None if y_name is None else arrays[y_name]
        reading = f"x = {x_name}" + ("" if y_name is None else f", y = {y_name}")
        try:
            identification = identify_problem(
                read_problem(runner, runner.theta, x, y, shapes, order))
        except OctaveError:
            raise  # the user's code failed in Octave: no reading does better
        except InputError as error:
            # A reading the family cannot take (labels that are no labels ...): the next one.
            closest.append(f"{reading}: {error}")
            continue
        tried += identification.tried
        found = identification.model
        if found is None:
            closest.append(f"{reading}: {identification.closest}")
            continue
        report = check_network(runner, gradient, runner.theta, x, y, model=found.network,
                               layout=found.layout, shapes=shapes, order=order, **options)
        report.model = {**identification.to_dict(), "x": x_name, "y": y_name}
        return report, report.model
    if not closest:
        listed = ", ".join(f"{name} {'x'.join(map(str, a.shape))}" for name, a in arrays.items())
        closest.append(f"none of the arrays {runner.expr} names ({listed or 'none'}) is data "
                       "whose width fits the shapes as a network's input")
    return None, {"identified": False, "closest": "; ".join(closest), "tried": tried}
