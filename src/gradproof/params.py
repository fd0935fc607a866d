"""Named parameters: the user's ``params`` structure <-> one flat vector, and tensor names.

Contract: ``parse_params(params, shapes=None, order="C") -> (ParamLayout, flat)``. ``flat`` is a
float64 copy of every parameter entry, tensor after tensor; the layout knows where each tensor
lies in it (a ``TensorSpec``), how to rebuild the user's structure as *views* into any flat
buffer (so that changing one buffer entry changes what the loss sees, with nothing rebuilt),
and how to match a gradient of the same structure to the tensors, by name.

Three structures are accepted:

* one array: a single tensor named ``"params"``;
* a dict of named arrays, nested dicts / lists / tuples allowed: names join dict keys with
  ``"."`` and list positions as ``"[i]"`` (``"enc.W"``, ``"layers[0].W"``, ``"[1]"``);
* a flat vector plus ``shapes`` (a dict of name -> shape, or a list of shapes named
  ``"[i]"``) unrolled in C (row-major) or Fortran / MATLAB (column-major) ``order``: the
  "unrolled theta" of many courses. The loss then receives the flat vector itself.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof.errors import InputError
from gradproof.report import Finding

ORDERS = ("C", "F")

# Name of the tensor when params is one array.
SINGLE_NAME = "params"

# The affixes that make a gradient's name from its parameter's: dW1, gW1, grad_W1, W1_grad.
GRAD_PREFIXES = ("grad_", "grad", "g_", "g", "d_", "d")
GRAD_SUFFIXES = ("_grad", "grad")


@dataclass(frozen=True)
class TensorSpec:
    """Where one named tensor lies in the flat vector.

    Attributes
    ----------
    name : str
        The tensor's name.
    shape : tuple of int
        Its shape.
    offset : int
        The flat position of its first entry.
    order : {"C", "F"}
        How its entries are unrolled into the flat vector.
    dtype : numpy.dtype
        The dtype the user gave it.
    """

    name: str
    shape: tuple[int, ...]
    offset: int
    order: str
    dtype: np.dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def span(self) -> slice:
        """The tensor's slice of the flat vector."""
        return slice(self.offset, self.offset + self.size)

    def view(self, flat: np.ndarray) -> np.ndarray:
        """The tensor as a view of shape ``shape`` into ``flat`` (1-D)."""
        return flat[self.span].reshape(self.shape, order=self.order)

    def unroll(self, tensor: np.ndarray) -> np.ndarray:
        """A tensor of shape ``shape`` as its flat piece, in this tensor's unroll order."""
        return np.asarray(tensor).reshape(-1, order=self.order)

    def local_positions(self) -> np.ndarray:
        """An int array of shape ``shape``: the flat position (within the tensor) of each entry."""
        return np.arange(self.size).reshape(self.shape, order=self.order)

    def index(self, position: int) -> tuple[int, ...]:
        """The tensor index of the entry at flat ``position`` (of the whole flat vector)."""
        local = int(position) - self.offset
        return tuple(int(i) for i in np.unravel_index(local, self.shape, order=self.order))

    def label(self, index: Sequence[int]) -> str:
        """``"W1[3, 4]"``: the entry at ``index``; just the name for a scalar."""
        if not self.shape:
            return self.name
        return f"{self.name}[{', '.join(str(int(i)) for i in index)}]"


class ParamLayout:
    """The tensors of a params structure and how they lie in one flat vector.

    Build it with ``parse_params``. ``kind`` is ``"array"``, ``"tree"`` or ``"flat"``.
    """

    def __init__(
        self,
        kind: str,
        specs: list[TensorSpec],
        *,
        skeleton: Any = None,
        flat_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.kind = kind
        self.specs = tuple(specs)
        self.size = sum(spec.size for spec in specs)
        self._by_name = {spec.name: spec for spec in specs}
        # For "tree": the user's containers with each leaf replaced by its spec's position.
        self._skeleton = skeleton
        # For "array" and "flat": the shape of the array the user passed.
        self._flat_shape = flat_shape

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def spec(self, name: str) -> TensorSpec:
        return self._by_name[name]

    def owner(self, position: int) -> TensorSpec:
        """The tensor that holds flat ``position``."""
        offsets = [spec.offset for spec in self.specs if spec.size]
        holders = [spec for spec in self.specs if spec.size]
        return holders[int(np.searchsorted(offsets, position, side="right")) - 1]

    def label(self, position: int) -> str:
        """``"W1[3, 4]"``: the entry at flat ``position``."""
        spec = self.owner(position)
        return spec.label(spec.index(position))

    def structure(self, flat: np.ndarray) -> Any:
        """The user's structure, its arrays being views into ``flat`` (1-D, length ``size``)."""
        if self.kind != "tree":
            return flat.reshape(self._flat_shape)
        views = [spec.view(flat) for spec in self.specs]
        return _fill(self._skeleton, views)

    def named(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views into ``flat`` keyed by tensor name, each of its tensor's shape."""
        return {spec.name: spec.view(flat) for spec in self.specs}

    def leaves(self, structure: Any) -> list[Any]:
        """The leaves of a structure built by ``structure``, in spec order (for identity checks)."""
        if self.kind != "tree":
            return [structure]
        found: dict[str, Any] = {}
        _collect(structure, "", found, strict=False)
        return [found.get(spec.name) for spec in self.specs]

    def unroll(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """Tensors keyed by name (each of its spec's shape) -> one float64 flat vector."""
        flat = np.empty(self.size)
        for spec in self.specs:
            flat[spec.span] = spec.unroll(tensors[spec.name])
        return flat

    def match_gradient(
        self, grad: Any, copy: bool = True
    ) -> tuple[dict[str, np.ndarray], list[str], dict[str, np.dtype], list[Finding]]:
        """Match a gradient to the tensors, by name and shape.

        Parameters
        ----------
        grad : array, dict, list or flat vector
            The same structure as the params (a flat vector of the same length for flat
            params, which may also get a dict keyed by the names in ``shapes``). A dict may
            name a gradient after its parameter with the usual affixes (``dW1``, ``gW1``,
            ``grad_W1``, ``W1_grad``); a tuple or list holding one gradient per tensor gives
            them in the parameters' order.
        copy : bool
            False: read-only tensors, views of the gradients the user gave in float64 (the
            others converted), for a caller that only reads them (a copy costs a pass over
            every entry).

        Returns
        -------
        tensors : dict of str to ndarray
            A float64 copy (or, without ``copy``, view) of each tensor's gradient, of the
            parameter's shape.
        transposed : list of str
            Tensors whose gradient had the transposed shape; they are transposed back.
        dtypes : dict of str to numpy.dtype
            The dtype of each gradient as given (its own precision).
        notes : list of Finding
            A ``convention`` note for each gradient whose shape differs from its parameter's
            only by size-1 axes (``(1, D)`` for ``(D,)``): it is compared by value, since the
            entries pair up unambiguously, and the note says so (``keepdims=True`` is the usual
            cause, and harmless only if the caller reshapes).

        Raises
        ------
        InputError
            Missing or extra tensors (both listed), keys that could belong to two parameters,
            a shape that is neither the parameter's, its transpose nor size-1 axes apart from
            it (both shapes named), a non-numeric gradient, or NaN / Inf in it (the tensor and
            the first index named).
        """
        if self.kind == "flat" and not isinstance(grad, Mapping):
            raw = _numeric_array(grad, "the gradient")
            if raw.size != self.size:
                raise InputError(
                    f"the gradient has {raw.size} entries (shape {raw.shape}); expected "
                    f"{self.size} like the flat parameter vector"
                )
            flat = raw.reshape(-1)
            leaves = {spec.name: spec.view(flat) for spec in self.specs}
        elif self.kind == "array":
            leaves = {SINGLE_NAME: grad}
        else:
            leaves = _gradient_leaves(grad, self._skeleton, self.names)
        tensors: dict[str, np.ndarray] = {}
        transposed: list[str] = []
        dtypes: dict[str, np.dtype] = {}
        notes: list[Finding] = []
        for spec in self.specs:
            what = f"the gradient of {spec.name}"
            array = _numeric_array(leaves[spec.name], what)
            if array.shape != spec.shape:
                if array.ndim >= 2 and array.shape == spec.shape[::-1]:
                    array = array.T
                    transposed.append(spec.name)
                elif differs_by_unit_axes(array.shape, spec.shape):
                    notes.append(_unit_axes_note(spec, array.shape))
                    array = array.reshape(spec.shape)
                else:
                    raise InputError(
                        f"{what} has shape {array.shape}; expected {spec.shape} like the parameter"
                        + _order_hint(self.specs, spec, array.shape, leaves)
                    )
            _check_finite(array, spec.label, what)
            dtypes[spec.name] = array.dtype
            tensors[spec.name] = (np.array(array, dtype=np.float64) if copy
                                  else _read_only(np.asarray(array, dtype=np.float64)))
        return tensors, transposed, dtypes, notes

    def gradient_names(self, grad: Any) -> dict[str, str]:
        """The user's own key for each tensor's gradient where it is not the tensor's name
        (``{"W1": "dW1"}`` for a dict keyed ``dW1``); empty for any other structure."""
        if self.kind != "tree" or not isinstance(grad, Mapping):
            return {}
        keys = [str(key) for key in grad]
        owners = gradient_owners(keys, self.names)
        return {name: key for key, name in owners.items() if key != name}


def _order_hint(specs: Sequence[TensorSpec], spec: TensorSpec, shape: tuple[int, ...],
                leaves: Mapping[str, Any]) -> str:
    """What a wrong shape suggests where it is another parameter's: two gradients swapped
    (each has the other's shape), or the gradients out of the parameters' order."""
    others = [other for other in specs if other is not spec and other.shape == shape]
    if not others:
        return ""
    for other in others:
        if np.shape(leaves[other.name]) == spec.shape:
            return (f": it has {other.name}'s shape, and the gradient of {other.name} has "
                    f"{spec.name}'s, so the two are swapped (returned in another order than "
                    "the parameters)")
    names = ", ".join(other.name for other in others)
    return f"; that is the shape of {names}: are the gradients in the parameters' order?"


def parse_params(
    params: Any, shapes: Mapping[str, Any] | Sequence[Any] | None = None, order: str = "C"
) -> tuple[ParamLayout, np.ndarray]:
    """Read a params structure into a layout and a float64 flat copy.

    Parameters
    ----------
    params : array, dict (nested dicts / lists allowed) or flat vector
        The parameters, as the loss takes them.
    shapes : dict of str to shape, or list of shapes, optional
        With a flat vector: the tensors it holds, in order.
    order : {"C", "F"}
        With ``shapes``: how each tensor is unrolled, C (row-major) or Fortran / MATLAB
        (column-major).

    Returns
    -------
    layout : ParamLayout
    flat : ndarray of shape (layout.size,)
        Every entry, as float64.

    Raises
    ------
    InputError
        A non-numeric or complex leaf, an empty structure, shapes that do not cover the flat
        vector, a bad ``order``, or NaN / Inf in a parameter (the tensor and first index named).
    """
    if order not in ORDERS:
        raise InputError(f"order must be 'C' (row-major) or 'F' (Fortran / MATLAB), got {order!r}")
    if shapes is not None:
        layout, flat = _parse_flat(params, shapes, order)
    elif order != "C":
        raise InputError("order='F' applies only to a flat vector given with shapes=")
    elif isinstance(params, (Mapping, list, tuple)):
        layout, flat = _parse_tree(params)
    else:
        array = _numeric_array(params, "params")
        spec = TensorSpec(SINGLE_NAME, array.shape, 0, "C", array.dtype)
        layout = ParamLayout("array", [spec], flat_shape=array.shape)
        flat = np.array(array, dtype=np.float64).reshape(-1)
    for spec in layout.specs:
        _check_finite(spec.view(flat), spec.label, f"parameter {spec.name}")
    return layout, flat


def _parse_flat(params: Any, shapes: Any, order: str) -> tuple[ParamLayout, np.ndarray]:
    theta = _numeric_array(params, "params (the flat vector)")
    if sum(n > 1 for n in theta.shape) > 1:
        raise InputError(
            f"with shapes=, params must be a flat vector (or an n x 1 / 1 x n matrix); "
            f"got an array of shape {theta.shape}"
        )
    if isinstance(shapes, Mapping):
        named = [(str(name), shape) for name, shape in shapes.items()]
    elif isinstance(shapes, (list, tuple)):
        named = [(f"[{i}]", shape) for i, shape in enumerate(shapes)]
    else:
        raise InputError(
            "shapes must be a dict of name -> shape or a list of shapes, got "
            f"{type(shapes).__name__}"
        )
    specs: list[TensorSpec] = []
    offset = 0
    for name, shape in named:
        dims = _shape(shape, name)
        spec = TensorSpec(name, dims, offset, order, theta.dtype)
        specs.append(spec)
        offset += spec.size
    if offset != theta.size:
        raise InputError(
            f"shapes cover {offset} entries but the flat params vector has {theta.size}: "
            f"{', '.join(f'{s.name} {s.shape}' for s in specs)}"
        )
    layout = ParamLayout("flat", specs, flat_shape=theta.shape)
    return layout, np.array(theta, dtype=np.float64).reshape(-1)


def _parse_tree(params: Any) -> tuple[ParamLayout, np.ndarray]:
    leaves: dict[str, Any] = {}
    _collect(params, "", leaves, strict=True)
    if not leaves:
        raise InputError(
            "params holds no arrays: expected an array, a dict of arrays or a flat vector"
        )
    arrays = {name: _numeric_array(leaf, f"parameter {name}") for name, leaf in leaves.items()}
    position = iter(range(len(arrays)))
    skeleton = _map_leaves(params, lambda leaf: next(position))
    flat = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays.values()])
    return ParamLayout("tree", _tree_specs(arrays), skeleton=skeleton), flat


def named_layout(tensors: Mapping[str, np.ndarray]) -> ParamLayout:
    """The layout ``parse_params`` reads from a flat dict of numeric arrays, without its float64
    copy of every entry: for a caller that has validated the tensors and keeps them."""
    return ParamLayout("tree", _tree_specs(tensors),
                       skeleton={name: k for k, name in enumerate(tensors)})


def _tree_specs(arrays: Mapping[str, np.ndarray]) -> list[TensorSpec]:
    """One C-order spec per array, one after another in the flat vector."""
    specs: list[TensorSpec] = []
    offset = 0
    for name, array in arrays.items():
        specs.append(TensorSpec(name, array.shape, offset, "C", array.dtype))
        offset += specs[-1].size
    return specs


def gradient_stems(name: str) -> Iterator[str]:
    """What ``name`` is the gradient of, by each affix it carries: "dW1", "W1_grad" -> "W1"."""
    for prefix in GRAD_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            yield name[len(prefix):]
    for suffix in GRAD_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            yield name[: -len(suffix)]


def gradient_owners(keys: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    """Which parameter each gradient key belongs to: its own name, else the name its affix
    strips to (``dW1``, ``gW1``, ``grad_W1``, ``W1_grad`` -> ``W1``).

    Returns
    -------
    dict of str to str
        Gradient key -> parameter name, for the keys that name one.

    Raises
    ------
    InputError
        When two keys belong to the same parameter, or one key could belong to two (both named).
    """
    owners: dict[str, str] = {}
    for key in keys:
        if key in names:
            owners[key] = key
            continue
        candidates = list(dict.fromkeys(s for s in gradient_stems(key) if s in names))
        if len(candidates) > 1:
            raise InputError(
                f"the gradient key {key!r} could belong to {candidates}; name it after one of them"
            )
        if candidates:
            owners[key] = candidates[0]
    claimed: dict[str, list[str]] = {}
    for key, name in owners.items():
        claimed.setdefault(name, []).append(key)
    for name, claimants in claimed.items():
        if len(claimants) > 1:
            raise InputError(
                f"the gradient keys {claimants} all belong to the parameter {name!r}; give one"
            )
    return owners


def differs_by_unit_axes(shape: Sequence[int], target: Sequence[int]) -> bool:
    """Whether ``shape`` is ``target`` with size-1 axes added or removed ((1, D) for (D,))."""
    return tuple(shape) != tuple(target) and (
        tuple(n for n in shape if n != 1) == tuple(n for n in target if n != 1)
    )


def _gradient_leaves(grad: Any, skeleton: Any, names: list[str]) -> dict[str, Any]:
    """A tree gradient's leaves keyed by parameter name: by its keys (affixes stripped), or
    in the parameters' order for a flat tuple or list of one array per tensor."""
    if (
        isinstance(grad, (list, tuple))
        and not isinstance(skeleton, (list, tuple))
        and len(grad) == len(names)
        and not any(_is_container(g) for g in grad)
    ):
        return dict(zip(names, grad))
    leaves: dict[str, Any] = {}
    _collect(grad, "", leaves, strict=True)
    if isinstance(grad, Mapping) and not set(leaves) <= set(names):
        owners = gradient_owners(list(leaves), names)
        leaves = {owners.get(key, key): value for key, value in leaves.items()}
    _check_names(names, list(leaves))
    return leaves


def _unit_axes_note(spec: TensorSpec, shape: tuple[int, ...]) -> Finding:
    return Finding(
        "convention", (spec.name,),
        f"the gradient of {spec.name} has shape {shape} and the parameter {spec.shape}: they "
        "differ only by size-1 axes, so the entries pair up one to one and were compared by "
        "value (the table shows whether they are right); an update `param -= lr * grad` would "
        "broadcast the shape instead",
        fix=(
            f"return it in {spec.name}'s own shape: drop keepdims=True, or "
            f"`.reshape({spec.shape})`"
        ),
        details={"gradient_shape": list(shape), "parameter_shape": list(spec.shape)},
    )


def _is_container(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple))


def _join(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _collect(value: Any, prefix: str, out: dict[str, Any], *, strict: bool) -> None:
    """Leaves of a nested structure keyed by their names, in order."""
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        out[prefix or SINGLE_NAME] = value
        return
    for key, child in items:
        name = _join(prefix, key)
        if strict and name in out:
            raise InputError(f"two tensors are both named {name!r}; use distinct keys")
        _collect(child, name, out, strict=strict)


def _map_leaves(value: Any, fn: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _map_leaves(child, fn) for key, child in value.items()}
    if isinstance(value, tuple):
        return tuple(_map_leaves(child, fn) for child in value)
    if isinstance(value, list):
        return [_map_leaves(child, fn) for child in value]
    return fn(value)


def _fill(skeleton: Any, views: list[np.ndarray]) -> Any:
    return _map_leaves(skeleton, lambda position: views[position])


def _check_names(expected: list[str], given: list[str]) -> None:
    missing = [name for name in expected if name not in given]
    extra = [name for name in given if name not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"is missing {missing}")
        if extra:
            parts.append(f"has extra {extra}")
        raise InputError(
            f"the gradient {' and '.join(parts)}: it must hold exactly the parameters' tensors "
            f"{expected}"
        )


def _shape(shape: Any, name: str) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, numbers.Integral) else shape
    try:
        dims = tuple(int(n) for n in dims)
    except (TypeError, ValueError):
        raise InputError(f"shapes[{name!r}] must be a tuple of ints, got {shape!r}") from None
    if any(n < 0 for n in dims):
        raise InputError(f"shapes[{name!r}] has a negative dimension: {dims}")
    return dims


def _numeric_array(value: Any, what: str) -> np.ndarray:
    """``value`` as a real numeric array, or an InputError naming ``what``."""
    if value is None:
        raise InputError(f"{what} is None; expected a real numeric array")
    if (
        isinstance(value, (str, bytes))
        or _is_container(value)
        and not isinstance(value, (list, tuple))
    ):
        raise InputError(f"{what} must be a real numeric array, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a real numeric array ({exc})") from None
    if array.dtype.kind not in "fiu":
        kind = "complex" if array.dtype.kind == "c" else f"dtype {array.dtype}"
        raise InputError(f"{what} must be a real numeric array, got {kind} (shape {array.shape})")
    return array


def _read_only(array: np.ndarray) -> np.ndarray:
    """A view of ``array`` that cannot be written: the caller's reading never changes it."""
    view = array.view()
    view.flags.writeable = False
    return view


def _check_finite(array: np.ndarray, label: Any, what: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), array.shape) if array.shape else ()
        value = array[index]
        raise InputError(
            f"{what} holds {value} at {label(index)} ({int(bad.sum())} non-finite entries in all)"
        )
