"""The user's layouts: how someone stores a network of the ``Network`` family, and the way back.

Contract: a ``Layout`` record says how the user stores the parameters and the data of a
``Network``; ``to_canonical(layout, net, user_params) -> params`` gives the network's dict
(``W1, b1, ...``, weights (n_in, n_out)) and ``from_canonical(layout, net, params)`` the user's
structure back. Both are permutations of entries (reshapes, transposes, splits), so a gradient,
which has the structure of the parameters, maps with the same two functions.
``examples_as_rows(layout, x)`` gives the data one example per row. ``fit_layouts(shapes,
x_shape)`` lists every layout (and the layer sizes it implies) under which the user's tensor
shapes and the data's shape form a network of the family; shapes that fit several layouts give
several candidates, never one silently chosen, so that identification can try them all.

A layout covers: examples as rows or columns; weights stored (n_in, n_out) or (n_out, n_in);
biases as vectors, as (n, 1) columns, as (1, n) rows, folded into the weights (column 0 of
``Theta1``, 25x401, for weights stored (n_out, n_in + 1); row 0 for (n_in + 1, n_out)), or
absent; parameters in a dict under any names, in a list, or in one flat vector unrolled in C
or column-major order with the tensors in any order (``[W1(:); W2(:); b1(:); b2(:)]``). The flat vector is read and written
through ``gradproof.params`` (``TensorSpec``, ``ParamLayout``), which the checker uses too.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gradproof.errors import InputError
from gradproof.nn.network import Network, _one_of
from gradproof.params import ORDERS, ParamLayout, TensorSpec, _numeric_array

Params = dict[str, np.ndarray]

EXAMPLES: tuple[str, ...] = ("rows", "columns")
WEIGHTS: tuple[str, ...] = ("in_out", "out_in")  # the stored shape: (n_in, n_out) or (n_out, n_in)
BIASES: tuple[str, ...] = ("vector", "column", "row", "augmented", "absent")
CONTAINERS: tuple[str, ...] = ("dict", "list", "flat")


def _names(value: Any, option: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
        isinstance(name, str) for name in value
    ):
        raise InputError(f"{option} must be None or a list of names; got {value!r}")
    return tuple(value)


_OPTIONS = {
    "examples": _one_of(EXAMPLES),
    "weights": _one_of(WEIGHTS),
    "biases": _one_of(BIASES),
    "container": _one_of(CONTAINERS),
    "order": _one_of(ORDERS),
    "stored": _names,
    "names": _names,
}


@dataclass(frozen=True)
class Layout:
    """How a user stores a network's parameters and data.

    Parameters
    ----------
    examples : {"rows", "columns"}
        One example per row of ``x`` (numpy) or per column (MATLAB course code).
    weights : {"in_out", "out_in"}
        Each weight stored (n_in, n_out) or (n_out, n_in).
    biases : {"vector", "column", "row", "augmented", "absent"}
        Biases as (n,) vectors, as (n, 1) columns, as (1, n) rows (``np.zeros((1, n))``, added
        to examples held as rows), folded into the weights (the first column
        of an (n_out, n_in + 1) weight, or the first row of an (n_in + 1, n_out) one), or none.
    container : {"dict", "list", "flat"}
        The parameters as a dict, a list, or one flat vector.
    order : {"C", "F"}
        For a flat vector: each tensor unrolled row-major or column-major (MATLAB's ``(:)``).
    stored : sequence of str, optional
        The stored tensors in the user's order, by their network names (``"W1"``, ``"b1"``;
        with folded biases ``"W1"`` holds both): the list's or the flat vector's order, or the
        dict's. None: ``W1, b1, W2, b2, ...``.
    names : sequence of str, optional
        For a dict: the user's key of each tensor of ``stored`` (``"Theta1"``). None: the
        network names.
    """

    examples: str = "rows"
    weights: str = "in_out"
    biases: str = "vector"
    container: str = "dict"
    order: str = "C"
    stored: Sequence[str] | None = None
    names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        for option, check in _OPTIONS.items():
            object.__setattr__(self, option, check(getattr(self, option), option))
        if self.names is not None and self.container != "dict":
            raise InputError(f"names applies to a dict of parameters; container is "
                             f"{self.container!r}")
        if self.names is not None and (self.stored is None
                                       or len(self.names) != len(self.stored)):
            raise InputError("names needs stored, one name for each stored tensor")

    def describe(self) -> str:
        """One line in the user's terms: how examples, weights and biases are stored."""
        weights = "(n_in, n_out)" if self.weights == "in_out" else "(n_out, n_in)"
        biases = {
            "vector": "biases as vectors", "column": "biases as (n, 1) columns",
            "row": "biases as (1, n) rows",
            "augmented": f"biases as {'row' if self.weights == 'in_out' else 'column'} 0 of "
            "each weight", "absent": "no biases",
        }[self.biases]
        text = f"examples as {self.examples}, weights stored {weights}, {biases}"
        if self.container == "flat":
            order = "row-major (C)" if self.order == "C" else "column-major (MATLAB)"
            tensors = "; ".join(self.stored or ("W1", "b1", "W2", "b2", "..."))
            text += f", one flat vector [{tensors}] unrolled {order}"
        return text


def stored_shapes(layout: Layout, net: Network) -> dict[str, tuple[int, ...]]:
    """Network name -> the shape the user stores it in, in the user's order.

    Raises ``InputError`` when the layout cannot hold the network (biases absent from one
    and present in the other; folded biases with tied weights; a ``stored`` list that names
    other tensors).
    """
    if (layout.biases == "absent") == net.bias:
        raise InputError(
            f"the layout stores {layout.biases!r} biases but the network has bias={net.bias}"
        )
    if layout.biases == "augmented" and net.tied:
        raise InputError("biases folded into the weights need untied weights (each layer its "
                         "own weight matrix)")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in net.param_shapes().items():
        if name.startswith("W"):
            n_in, n_out = shape
            n_in += layout.biases == "augmented"
            shapes[name] = (n_in, n_out) if layout.weights == "in_out" else (n_out, n_in)
        elif layout.biases != "augmented":
            shapes[name] = {"vector": shape, "column": (shape[0], 1),
                            "row": (1, shape[0])}[layout.biases]
    order = tuple(shapes) if layout.stored is None else tuple(layout.stored)
    if sorted(order) != sorted(shapes):
        raise InputError(
            f"stored lists {', '.join(order)}; the network stores {', '.join(shapes)} under "
            "this layout"
        )
    return {name: shapes[name] for name in order}


def _flat_layout(layout: Layout, shapes: Mapping[str, tuple[int, ...]]) -> ParamLayout:
    specs, offset = [], 0
    for name, shape in shapes.items():
        spec = TensorSpec(name, shape, offset, layout.order, np.dtype(np.float64))
        specs.append(spec)
        offset += spec.size
    return ParamLayout("flat", specs, flat_shape=(offset,))


def _user_tensors(layout: Layout, shapes: Mapping[str, tuple[int, ...]], user: Any,
                  copy: bool = True) -> Params:
    """The user's stored tensors keyed by network name, each checked against its shape, as
    float64 copies (``copy``) or, where they already are float64, the user's arrays."""
    keys = list(shapes) if layout.names is None else list(layout.names)
    if layout.container == "flat":
        theta = _numeric_array(user, "the flat parameter vector").astype(
            np.float64, copy=copy).reshape(-1)
        flat = _flat_layout(layout, shapes)
        if theta.size != flat.size:
            raise InputError(f"the flat parameter vector has {theta.size} entries; this layout "
                             f"of the network needs {flat.size}")
        return flat.named(theta)
    if layout.container == "list":
        if isinstance(user, (str, Mapping)) or not isinstance(user, Sequence) or (
            len(user) != len(shapes)
        ):
            raise InputError(f"the parameters must be a list of {len(shapes)} arrays "
                             f"({', '.join(shapes)}); got {type(user).__name__}")
        given = dict(zip(shapes, user))
        keys = [f"[{i}]" for i in range(len(shapes))]
    else:
        if not isinstance(user, Mapping):
            raise InputError(f"the parameters must be a dict with keys {', '.join(keys)}; got "
                             f"{type(user).__name__}")
        missing = [key for key in keys if key not in user]
        if missing:
            raise InputError(f"the parameters lack {', '.join(missing)}; this layout reads "
                             f"{', '.join(keys)}")
        given = {name: user[key] for name, key in zip(shapes, keys)}
    tensors: Params = {}
    for (name, shape), key in zip(shapes.items(), keys):
        arr = _numeric_array(given[name], f"parameter {key}").astype(np.float64, copy=copy)
        if arr.shape != shape:
            raise InputError(f"parameter {key} has shape {arr.shape}; this layout expects {shape}")
        tensors[name] = arr
    return tensors


def to_canonical(layout: Layout, net: Network, user: Any, copy: bool = True) -> Params:
    """The user's parameters (or a gradient of the same structure) as the network's dict.

    Returns float64 arrays keyed and shaped like ``net.param_shapes()``: copies, or with
    ``copy=False`` views of the user's arrays where the layout allows, for a caller that only
    reads them (a copy of a large network's parameters costs more than the reading).
    """
    shapes = stored_shapes(layout, net)
    tensors = _user_tensors(layout, shapes, user, copy)
    params: Params = {}
    for name in net.param_shapes():
        if name.startswith("W"):
            w = tensors[name] if layout.weights == "in_out" else tensors[name].T
            # w: (n_in, n_out), or (n_in + 1, n_out) with the bias as row 0
            if layout.biases == "augmented":
                params[f"b{name[1:]}"] = w[0].copy() if copy else w[0]  # (n_out,): row 0
                w = w[1:]
            params[name] = np.ascontiguousarray(w)  # (n_in, n_out), like the network's W
        elif layout.biases != "augmented":
            bias = tensors[name].reshape(-1)  # (n_out,)
            params[name] = bias.copy() if copy else bias
    return {name: params[name] for name in net.param_shapes()}


def from_canonical(layout: Layout, net: Network, params: Mapping[str, np.ndarray]) -> Any:
    """The network's dict (or its gradient) in the user's structure and shapes."""
    shapes = stored_shapes(layout, net)
    tensors: Params = {}
    for name, shape in shapes.items():
        if name.startswith("W"):
            w = np.asarray(params[name], dtype=np.float64)  # (n_in, n_out)
            if layout.biases == "augmented":
                w = np.vstack([np.asarray(params[f"b{name[1:]}"], dtype=np.float64), w])
            tensors[name] = w if layout.weights == "in_out" else w.T
        else:
            tensors[name] = np.asarray(params[name], dtype=np.float64).reshape(shape)
    if layout.container == "flat":
        return _flat_layout(layout, shapes).unroll(tensors)
    if layout.container == "list":
        return [tensors[name] for name in shapes]
    keys = list(shapes) if layout.names is None else list(layout.names)
    return {key: tensors[name] for key, name in zip(keys, shapes)}


def examples_as_rows(layout: Layout, x: Any) -> np.ndarray:
    """The data one example per row, as the network reads it."""
    arr = np.asarray(x)
    return arr if layout.examples == "rows" else arr.T


# ----- which layouts fit ------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """One way the user's shapes form a network of the family.

    Attributes
    ----------
    layout : Layout
    layers : tuple of int
        The layer sizes, input first.
    tied : bool
        The second half's weights are the first half's transposed.
    """

    layout: Layout
    layers: tuple[int, ...]
    tied: bool

    def network_options(self) -> dict[str, Any]:
        """The ``Network`` options these shapes fix: layers, tied, bias."""
        return {"layers": list(self.layers), "tied": self.tied,
                "bias": self.layout.biases != "absent"}


def _layer_number(name: str) -> int:
    digits = re.findall(r"\d+", name)
    return int(digits[-1]) if digits else 0


def _bias_choices(items: list[tuple[str, tuple[int, ...]]], named: bool
                  ) -> Iterator[tuple[bool, ...]]:
    """Each reading of which tensors are biases: one for named tensors, several where a
    list's (n, 1) column or (1, n) row may be a bias or the weight of a one-output or
    one-input layer."""
    if named:
        yield tuple(bool(re.match(r"(?i)b|bias", name)) for name, _ in items)
        return
    options = [
        (False, True) if len(shape) == 2 and 1 in shape else (len(shape) == 1,)
        for _, shape in items
    ]
    yield from itertools.product(*options)


def fit_layouts(
    shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]], x_shape: Sequence[int],
    *, flat: bool = False,
) -> list[Fit]:
    """Every layout under which the user's tensors and data form a network of the family.

    Parameters
    ----------
    shapes : dict of name -> shape, or list of shapes
        The user's tensors in their order: a dict's keys (a bias's name starts with ``b`` or
        holds ``bias``; the layer number is the name's last number) or a list's positions
        (vectors are biases; an (n, 1) column is tried as a bias and as a weight; the weights
        come in layer order, and so do the biases, in any interleaving). With ``flat=True``,
        the tensors of a flat vector in the order they are unrolled.
    x_shape : (int, int)
        The data's shape.
    flat : bool
        The parameters are one flat vector: each fit is returned once per unroll order.

    Returns
    -------
    list of Fit
        Every fitting layout, numpy's conventions first; empty when none fits.
    """
    named = isinstance(shapes, Mapping)
    pairs = shapes.items() if named else ((f"[{i}]", s) for i, s in enumerate(shapes))
    items = [(str(name), tuple(int(n) for n in shape)) for name, shape in pairs]
    fits = []
    for kinds in _bias_choices(items, named):
        for fit in _fits(items, kinds, x_shape, named):
            if not flat:
                fits.append(fit)
                continue
            fits.extend(
                Fit(replace(fit.layout, order=order, container="flat", names=None),
                    fit.layers, fit.tied)
                for order in ORDERS
            )
    return fits


def _fits(items: list[tuple[str, tuple[int, ...]]], kinds: Sequence[bool],
          x_shape: Sequence[int], named: bool) -> Iterator[Fit]:
    """The fits for one reading of which tensors are biases."""
    weights = [item for item, bias in zip(items, kinds) if not bias]
    biases = [item for item, bias in zip(items, kinds) if bias]
    if named:  # layer order from the names, the user's order among equals
        weights.sort(key=lambda item: _layer_number(item[0]))
        biases.sort(key=lambda item: _layer_number(item[0]))
    if not weights or any(len(shape) != 2 for _, shape in weights):
        return
    if not biases:
        bias_forms: tuple[str, ...] = ("augmented", "absent")
    elif all(len(shape) == 1 for _, shape in biases):
        bias_forms = ("vector",)
    elif all(len(shape) == 2 and shape[1] == 1 for _, shape in biases):
        bias_forms = ("column",)  # (1, 1) biases alone read as columns: the same entries
    elif all(len(shape) == 2 and shape[0] == 1 for _, shape in biases):
        bias_forms = ("row",)
    else:
        return
    # Without biases, one stack of weights may also be the first half of a tied autoencoder.
    tied_forms = (False,) if biases else (False, True)
    for examples, stored, bias_form, tied in itertools.product(
        EXAMPLES, WEIGHTS, bias_forms, tied_forms
    ):
        if tied and bias_form == "augmented":
            continue  # folded biases need a weight matrix per layer
        fit = _fit(items, weights, biases, x_shape, examples, stored, bias_form, named, tied)
        if fit is not None:
            yield fit


def _fit(
    items: list[tuple[str, tuple[int, ...]]], weights: list[tuple[str, tuple[int, ...]]],
    biases: list[tuple[str, tuple[int, ...]]], x_shape: Sequence[int], examples: str,
    stored: str, bias_form: str, named: bool, tied: bool,
) -> Fit | None:
    if len(x_shape) != 2:
        return None
    sizes = [x_shape[1] if examples == "rows" else x_shape[0]]
    extra = bias_form == "augmented"
    for _, shape in weights:
        n_in, n_out = shape if stored == "in_out" else shape[::-1]
        if n_in != sizes[-1] + extra:
            return None
        sizes.append(n_out)
    tied = tied or len(biases) == 2 * len(weights)  # a bias for each layer of both halves
    layers = tuple(sizes + sizes[-2::-1]) if tied else tuple(sizes)
    if biases and (len(biases) != len(layers) - 1 or any(
        max(shape) != size for (_, shape), size in zip(biases, layers[1:])
    )):
        return None
    network_names = {name: f"W{k}" for k, (name, _) in enumerate(weights, start=1)}
    network_names.update({name: f"b{k}" for k, (name, _) in enumerate(biases, start=1)})
    order = tuple(network_names[name] for name, _ in items)
    layout = Layout(
        examples=examples, weights=stored, biases=bias_form,
        container="dict" if named else "list", stored=order,
        names=tuple(name for name, _ in items) if named else None,
    )
    return Fit(layout, layers, tied)
