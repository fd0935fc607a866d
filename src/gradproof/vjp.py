"""check_vjp: one layer's backward, checked against finite differences of its forward.

Contract: ``check_vjp(forward, backward, inputs, **options) -> GradReport``. A layer is a
``forward`` from input arrays to one or more output arrays, optionally followed by a cache
(the course convention ``affine_forward(x, w, b) -> (out, cache)``), and a ``backward`` from
one upstream gradient per output and the cache (``affine_backward(dout, cache)``), or the
inputs themselves, to one gradient per float input (a tuple in forward's order, a dict keyed
by input name or ``dx``-style names, or one array). Integer inputs (indices) are held fixed.

For an upstream gradient u drawn at random (never all ones, which hides transposes and axis
mistakes), backward's result is the gradient of the scalar J(inputs) = sum_k sum(u_k * out_k)
and ``check_gradient`` checks it: forward runs again for every evaluation, its cache
discarded, one call moving all the entries of a group whose outputs do not overlap
(``gradproof.footprints``). The first draw is checked entry by entry where affordable (the mode
and budget given), each later one along random directions. Before that, backward's products at
the same u, at ``SCALE_PROBE`` * u and at zero (``gradproof.linearity``) show whether it is
linear in u at all; a gradient returned in another input's place, or summed over the wrong axes
of the upstream, is named by its shape; with several outputs, a failing gradient is checked
again without each output's term (``gradproof.missing_output``), and one that lacks a term of
a sum (``sin(x)``, a skip path) is completed by that term's piece (``gradproof.missing_piece``).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gradproof import blas
from gradproof.check import MODES, check_gradient
from gradproof.engine.options import RULE_OPTIONS, Option, integer, one_of, validate
from gradproof.errors import InputError
from gradproof.footprints import Footprints, evaluate, worthwhile
from gradproof.linearity import SCALE_PROBE, Products, linearity_findings, with_backward_findings
from gradproof.missing_output import with_missing_outputs
from gradproof.missing_piece import with_missing_pieces
from gradproof.statistics_term import directional_slope, with_statistics_terms
# The params module's array checks, shared so that every input is refused in the same words.
from gradproof.params import (
    _check_finite,
    _numeric_array,
    differs_by_unit_axes,
    gradient_owners,
)
from gradproof.report import Finding, GradReport, TensorResult

# Entries checked one by one in the first draw's default "auto" mode: every entry of a layer
# up to this size (a 64x128 affine layer with a batch of 32 has 10,368).
DEFAULT_BUDGET = 20000

# Random directions per input in each later draw.
LATER_DIRECTIONS = 2

# Salts the upstream draws' seed: inputs made with default_rng(seed) would otherwise be drawn
# again as the upstream (dout == x makes x.T @ dout symmetric, and hides a transpose).
UPSTREAM_STREAM = 0x766A70

# How messages name the upstream gradient (the course convention).
UPSTREAM_WORD = "dout"

# Relative agreement (to the largest entry) at which a gradient counts as an upstream sum.
SUM_RTOL = 1e-9

CHECK_VJP_OPTIONS: dict[str, Option] = {
    **RULE_OPTIONS,
    "mode": one_of(MODES),
    "budget": integer(1),
    "samples": integer(1),
    "draws": integer(1),
    "seed": integer(),
    "cache": Option(lambda v: v is None or isinstance(v, bool), "None, True or False"),
    "names": Option(
        lambda v: v is None or isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v),
        "None or a list of input names",
    ),
}


@blas.policy("check_gradient")
def check_vjp(
    forward: Callable[..., Any],
    backward: Callable[..., Any],
    inputs: Any,
    *,
    upstream: Any = None,
    cache: bool | None = None,
    names: Sequence[str] | None = None,
    draws: int = 2,
    mode: str = "auto",
    budget: int = DEFAULT_BUDGET,
    samples: int = 32,
    rtol: float | None = None,
    atol: float | None = None,
    safety: float = 10.0,
    seed: int = 0,
    blas_threads: int | str | None = None,
) -> GradReport:
    """Check a layer's backward (a vector-Jacobian product) against its forward.

    Parameters
    ----------
    forward : callable
        ``forward(*inputs)`` (``forward(**inputs)`` for a dict) -> an output array, a tuple of
        output arrays (``next_h, next_c``), or either followed by a cache: ``(out, cache)``.
    backward : callable
        ``backward(*upstream, cache)`` when forward returns a cache, else
        ``backward(*upstream, *inputs)`` (``**inputs`` for a dict) -> one gradient per float
        input: a tuple or list in forward's order (``None`` allowed in an integer input's
        place), a dict keyed by input name or by its gradient name (``dx``, ``grad_x``,
        ``x_grad``), or one array when there is one float input.
    inputs : array, tuple / list of arrays, or dict of str to array
        Where to check. Float inputs are checked; integer inputs (indices) are held fixed.
        Inputs in a precision below float64 are handed to forward and backward as float64
        copies, with a ``precision`` note: the check tests the layer's math.
    upstream : array or tuple of arrays, optional
        The first draw's upstream gradients, one per output, of the outputs' shapes; random
        normal by default (every later draw is random).
    cache : bool, optional
        Whether forward's last returned value is a cache. By default it is when forward
        returns a tuple whose last item is not a numeric array.
    names : list of str, optional
        Names of the inputs of a tuple; by default forward's parameter names (``x, w, b``),
        else ``input0, input1 ...``.
    draws : int
        How many random upstream gradients: the first checked as ``mode`` says, the others
        along ``LATER_DIRECTIONS`` random directions per input.
    mode, budget, samples, rtol, atol, safety, seed
        As for ``check_gradient``; ``budget`` defaults to ``DEFAULT_BUDGET``, so that ``auto``
        checks every entry of a layer up to that size.
    blas_threads : int or {"auto", "off"}, optional
        Threads of the BLAS and OpenMP pools during the whole call, the user's own code
        included (see ``gradproof.blas``): as for ``check_gradient``.

    Returns
    -------
    GradReport
        One result per float input; the findings of every draw that failed, with the usual
        kinds, ``swapped`` for gradients returned in each other's places, ``partial`` for a
        gradient summed over the wrong axes of the upstream, ``scaled`` for a backward not
        linear in the upstream gradient (ignoring its values, or affine in it), and
        ``missing_term`` for a gradient that lacks the path through one of several outputs or
        one catalogued term of a sum (``gradproof.missing_piece.PIECES``).
        A gradient whose shape differs from its input's by size-1 axes only (``(1, D)`` for
        ``(D,)``) is compared by value, with a ``convention`` note.

    Raises
    ------
    InputError
        Bad options; inputs that are not real numeric arrays; forward or backward raising
        (the call named); forward outputs that are not finite or not float; an ``upstream``
        whose shapes forward's outputs cannot have; a backward returning the wrong number of
        gradients, a gradient for an integer input or a key naming no input, gradients of
        shapes that fit no input; a backward that changes the cache it is given.
    """
    validate(CHECK_VJP_OPTIONS, locals())
    layer = _Layer.build(forward, backward, inputs, names, cache, seed)
    rng = np.random.default_rng([UPSTREAM_STREAM, seed])
    outputs = layer.outputs(layer.values)
    first = _first_upstream(upstream, outputs, rng)
    fitted = layer.fit(first)
    products = Products(
        fitted.grads,
        layer.fit(first, like=fitted).grads,
        layer.fit([SCALE_PROBE * d for d in first], like=fitted).grads,
        layer.fit([np.zeros_like(d) for d in first], like=fitted).grads,
    )
    options = {"rtol": rtol, "atol": atol, "safety": safety, "seed": seed}
    report = _check(layer, first, fitted, mode=mode, budget=budget, samples=samples, **options)
    for _ in range(draws - 1):
        u = [rng.standard_normal(out.shape) for out in outputs]
        again = _check(layer, u, layer.fit(u, like=fitted), mode="directional",
                       directions=LATER_DIRECTIONS, **options)
        report = _merge_draw(report, again)
    report = with_missing_outputs(
        report, len(outputs),
        lambda k: _check(layer, [0 * u if j == k else u for j, u in enumerate(first)], fitted,
                         mode=mode, budget=budget, samples=samples, **options),
        UPSTREAM_WORD,
    )
    def passes(name: str, gradient: np.ndarray, quick: bool = False) -> bool:
        loss = _Projection(layer, first, [name])
        how = {"mode": "directional"} if quick else {"mode": mode, "budget": budget}
        return check_gradient(loss, {name: gradient}, {name: layer.values[name]}, **how,
                              samples=samples, **options).passed

    report = with_missing_pieces(report, layer.values, fitted.grads, first, passes, UPSTREAM_WORD)
    report = _named_axis_sums(report, layer, fitted, first, passes)

    def slope(name: str, direction: np.ndarray) -> float:
        loss = _Projection(layer, first, [name])
        return directional_slope(lambda v: loss({name: v}), layer.values[name], direction)

    report = with_statistics_terms(report, layer.values, fitted.grads, outputs, slope, passes,
                                   UPSTREAM_WORD)
    report = _with_unchecked(report, layer, fitted)
    found = linearity_findings(products, layer.who, UPSTREAM_WORD)
    return with_backward_findings(report, [*_precision_notes(layer), *fitted.notes], found)


def _precision_notes(layer: _Layer) -> list[Finding]:
    """A ``precision`` note per input given in a precision lower than float64."""
    return [
        Finding(
            "precision", (name,),
            f"input {name} is {dtype}: forward and backward ran on a float64 copy, so the check "
            f"tests the layer's math, not its rounding in {dtype}",
            details={"dtype": str(dtype)},
        )
        for name, dtype in layer.low.items()
    ]


# ------------------------------------------------------------------------------ the layer


@dataclass
class _Fitted:
    """Backward's gradients, each in its input's place.

    Attributes
    ----------
    grads : dict of str to ndarray
        Each float input's gradient as returned (the engine compares a transposed shape after
        transposing), by input name.
    order : dict of int to str
        Which input each returned position (or key) holds, when backward returned a sequence.
    notes : list of Finding
        What the fitting found (``swapped``).
    unchecked : dict of str to Finding
        Inputs whose gradient has a shape that no check can compare, with the finding that
        explains it (an upstream summed over the wrong axes).
    """

    grads: dict[str, np.ndarray]
    order: dict[int, str]
    notes: list[Finding]
    unchecked: dict[str, Finding]


@dataclass
class _Layer:
    """The user's forward and backward, called the one way the contract says."""

    forward_fn: Callable[..., Any]
    backward_fn: Callable[..., Any]
    values: dict[str, np.ndarray]
    floats: list[str]
    keyword: bool
    cache: bool | None
    low: dict[str, np.dtype]
    seed: int
    found: dict[str, Footprints] = field(default_factory=dict)

    @classmethod
    def build(
        cls, forward: Any, backward: Any, inputs: Any, names: Sequence[str] | None,
        cache: bool | None, seed: int,
    ) -> _Layer:
        for what, fn in (("forward", forward), ("backward", backward)):
            if not callable(fn):
                raise InputError(f"{what} must be a callable, got {type(fn).__name__}")
        keyword = isinstance(inputs, Mapping)
        if keyword:
            if names is not None:
                raise InputError("names= names the inputs of a tuple; a dict's keys name its own")
            # Tuples of gradients come in forward's order, which a dict may not follow.
            order = _input_names(forward, len(inputs), None)
            items = sorted(
                inputs.items(),
                key=lambda item: order.index(item[0]) if item[0] in order else len(order),
            )
        else:
            sequence = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            items = list(zip(_input_names(forward, len(sequence), names), sequence))
        if not items:
            raise InputError("inputs holds no arrays: give the layer's inputs (x, w, b ...)")
        values: dict[str, np.ndarray] = {}
        for name, value in items:
            array = _numeric_array(value, f"input {name}")
            if array.dtype.kind == "b":
                array = array.astype(np.int64)
            label = lambda index, name=name: f"{name}{list(index)}"  # noqa: E731
            _check_finite(array, label, f"input {name}")
            values[str(name)] = array
        floats = [name for name, array in values.items() if array.dtype.kind == "f"]
        low = {name: values[name].dtype for name in floats if values[name].dtype.itemsize < 8}
        # The layer runs on float64 copies: the check tests its math, not float32 rounding.
        values.update({name: values[name].astype(np.float64) for name in low})
        if not floats:
            raise InputError(
                f"no input is a float array ({', '.join(values)} are integers): there is "
                "nothing to differentiate"
            )
        return cls(forward, backward, values, floats, keyword, cache, low, seed)

    @property
    def who(self) -> str:
        return getattr(self.backward_fn, "__name__", "backward")

    def _call(self, fn: Callable[..., Any], head: list[Any], values: Mapping[str, Any]) -> Any:
        if self.keyword:
            return fn(*head, **values)
        return fn(*head, *values.values())

    def _forward(self, values: Mapping[str, np.ndarray]) -> tuple[tuple[Any, ...], Any]:
        """Forward's raw outputs and cache (None without one) at ``values``."""
        try:
            result = self._call(self.forward_fn, [], values)
        except InputError:
            raise
        except Exception as exc:
            name = getattr(self.forward_fn, "__name__", "forward")
            raise InputError(f"forward ({name}) raised {type(exc).__name__}: {exc}") from exc
        if self.cache is None:
            # Decided once, at the first call: the last item of a tuple is a cache unless it
            # is a numeric array.
            self.cache = isinstance(result, tuple) and len(result) > 1 and not _is_array(result[-1])
        if not self.cache:
            return (result if isinstance(result, tuple) else (result,)), None
        if not isinstance(result, tuple) or len(result) < 2:
            raise InputError(
                f"with cache=True forward must return (output, ..., cache); it returned "
                f"{type(result).__name__}"
            )
        return result[:-1], result[-1]

    def run_forward(self, values: Mapping[str, np.ndarray]) -> tuple[tuple[np.ndarray, ...], Any]:
        """(outputs, cache) of forward at ``values``, each output checked: a finite float array."""
        raw, state = self._forward(values)
        outputs = []
        for k, value in enumerate(raw):
            what = f"forward's output {k}"
            array = _numeric_array(value, what)
            if array.dtype.kind != "f":
                raise InputError(
                    f"{what} has dtype {array.dtype}; a layer's outputs must be float arrays "
                    "(a cache returned as a plain array needs cache=True)"
                )
            _check_finite(array, lambda index, what=what: f"{what} at {list(index)}", what)
            outputs.append(array)
        return tuple(outputs), state

    def outputs(self, values: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        return self.run_forward(values)[0]

    def projected(self, values: Mapping[str, np.ndarray], upstream: Sequence[np.ndarray]) -> float:
        """sum_k sum(u_k * out_k) at ``values``: the scalar checked."""
        return float(np.vdot(_weights(upstream), self.flat_outputs(values, upstream)))

    def flat_outputs(
        self, values: Mapping[str, np.ndarray], upstream: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Forward's outputs at ``values``, flattened and joined; evaluated once per perturbed
        point, so without run_forward's checks (a NaN here makes the engine say where the
        objective stopped being finite)."""
        raw, _ = self._forward(values)
        pieces = []
        for k, (u, out) in enumerate(zip(upstream, raw)):
            out = np.asarray(out, dtype=np.float64)
            if out.shape != u.shape:
                raise InputError(
                    f"forward's output {k} changed shape from {u.shape} to {out.shape} when "
                    "its inputs moved slightly"
                )
            pieces.append(out.reshape(-1))
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def footprints(self, name: str, upstream: Sequence[np.ndarray]) -> Footprints:
        """Which outputs each slice of input ``name`` moves (found once per layer)."""
        if name not in self.found:
            rng = np.random.default_rng([UPSTREAM_STREAM, self.seed, len(self.found)])
            self.found[name] = Footprints.discover(
                lambda a: self.flat_outputs({**self.values, name: a}, upstream),
                self.values[name], rng,
            )
        return self.found[name]

    def gradients(self, upstream: Sequence[np.ndarray]) -> Any:
        """Backward's raw result for ``upstream``, after a fresh forward at the inputs (copies
        of the upstream and of the inputs are handed over; a cache is checked afterwards)."""
        _, state = self.run_forward(self.values)
        before = _snapshot(state)
        head = [u.copy() for u in upstream]
        try:
            if state is not None:
                result = self.backward_fn(*head, state)
            else:
                result = self._call(self.backward_fn, head, _snapshot(self.values))
        except InputError:
            raise
        except Exception as exc:
            call = "backward(dout, cache)" if state is not None else "backward(dout, *inputs)"
            hint = ""
            if state is None and len(head) > 1:
                hint = (
                    f"; forward's {len(head)} returned arrays were all taken as outputs: if the "
                    "last is a cache, pass cache=True"
                )
            raise InputError(
                f"backward ({self.who}) raised {type(exc).__name__}: {exc} (called as {call}, "
                f"with {len(head)} upstream gradient(s), one per output of forward{hint})"
            ) from exc
        changed = _first_change(before, state, "cache")
        if changed:
            raise InputError(
                f"backward ({self.who}) changed {changed} in place: a backward must leave its "
                "cache as forward made it (copy before modifying); check_vjp runs forward "
                "again before every backward, so the check itself is unaffected, but a second "
                "backward on the same cache would not be"
            )
        return result

    def fit(self, upstream: Sequence[np.ndarray], like: _Fitted | None = None) -> _Fitted:
        """Backward's gradients for ``upstream``, each in its input's place."""
        result = self.gradients(upstream)
        slots = self._slots(result)
        if like is not None:
            return _Fitted({like.order.get(i, n): g for i, (n, g) in enumerate(slots)}, like.order,
                           [], like.unchecked)
        shapes = {n: self.values[n].shape for n in self.floats}
        order = {} if isinstance(result, Mapping) else _reorder(slots, shapes)
        grads = {order.get(i, name): grad for i, (name, grad) in enumerate(slots)}
        notes = _swap_notes(order, slots, self.who)
        unchecked = {}
        for name in self.floats:
            shape, param = grads[name].shape, self.values[name].shape
            if _fits(shape, param):
                continue
            finding = _axis_sum_finding(name, grads[name], param, upstream)
            if finding is None:
                raise InputError(
                    f"backward ({self.who}) returned a gradient of shape {shape} for {name}, "
                    f"which has shape {param}; each gradient must have its input's shape"
                )
            unchecked[name] = finding
        return _Fitted(grads, order, notes, unchecked)

    def _slots(self, result: Any) -> list[tuple[str, np.ndarray]]:
        """(input name, gradient) per returned gradient, in the order backward returned them."""
        floats, every = self.floats, list(self.values)
        if isinstance(result, Mapping):
            owners = gradient_owners([str(k) for k in result], every)
            stray = [k for k in result if str(k) not in owners]
            if stray:
                raise InputError(
                    f"backward ({self.who}) returned gradients keyed {stray}, which name no input; "
                    f"the inputs are {every} (keys like 'x', 'dx', 'grad_x' or 'x_grad')"
                )
            named = {owners[str(k)]: v for k, v in result.items()}
        elif isinstance(result, (tuple, list)):
            if len(result) == len(floats):
                named = dict(zip(floats, result))
            elif len(result) == len(every):
                named = dict(zip(every, result))
            else:
                integers = [n for n in every if n not in floats]
                also = f" ({len(every)} with the integer inputs {integers}, None in their places)"
                raise InputError(
                    f"backward ({self.who}) returned {len(result)} gradients; forward takes "
                    f"{len(floats)} float inputs {floats}"
                    f"{also if integers else ''}: return one gradient per float input, in "
                    "forward's order"
                )
        elif len(floats) == 1:
            named = {floats[0]: result}
        else:
            raise InputError(
                f"backward ({self.who}) returned {type(result).__name__}; with {len(floats)} "
                f"float inputs {floats} it must return a tuple of gradients or a dict"
            )
        slots = []
        for name, value in named.items():
            if name not in floats:
                if value is not None:
                    raise InputError(
                        f"backward ({self.who}) returned a gradient for {name}, an integer input "
                        "(indices): integer inputs are held fixed and have no gradient; return "
                        "None in its place, or leave it out"
                    )
                continue
            what = f"the gradient of {name} that backward ({self.who}) returned"
            array = _numeric_array(value, what)
            _check_finite(array, lambda index, name=name: f"d{name}{list(index)}", what)
            # A copy in its own dtype: the engine sizes a float32 gradient's tolerance by it.
            slots.append((name, np.array(array)))
        missing = [n for n in floats if n not in dict(slots)]
        if missing:
            raise InputError(
                f"backward ({self.who}) returned no gradient for {missing}; it must return one "
                f"per float input {floats}"
            )
        return slots


def _input_names(forward: Any, count: int, names: Sequence[str] | None) -> list[str]:
    """The inputs' names: ``names``, else forward's positional parameters, else input0 ..."""
    if names is not None:
        if len(names) != count or len(set(names)) != count:
            raise InputError(
                f"names must give {count} distinct names, one per input; got {list(names)}"
            )
        return list(names)
    try:
        parameters = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    positional = []
    for parameter in parameters:
        if parameter.kind not in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            break
        positional.append(parameter.name)
    if len(positional) >= count:
        return positional[:count]
    return [f"input{i}" for i in range(count)]


def _is_array(value: Any) -> bool:
    """A numeric array or float: an output, not a cache."""
    return isinstance(value, (np.ndarray, float, np.floating))


def _snapshot(value: Any) -> Any:
    """A copy of every array in a cache (containers rebuilt, other objects kept as they are)."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, Mapping):
        return {key: _snapshot(child) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [_snapshot(child) for child in value]
    return value


def _first_change(before: Any, after: Any, path: str) -> str | None:
    """Where ``after`` differs from its ``_snapshot`` ``before`` ("cache[2]"), or None."""
    if isinstance(before, np.ndarray):
        same = (
            isinstance(after, np.ndarray)
            and before.shape == after.shape
            and bool(np.all((before == after) | (_nan(before) & _nan(after))))
        )
        return None if same else f"{path} (an array of shape {before.shape})"
    if isinstance(before, dict):
        for key, child in before.items():
            found = _first_change(child, after[key], f"{path}[{key!r}]")
            if found:
                return found
    if isinstance(before, list):
        for i, child in enumerate(before):
            found = _first_change(child, after[i], f"{path}[{i}]")
            if found:
                return found
    return None


def _nan(array: np.ndarray) -> np.ndarray:
    return np.isnan(array) if array.dtype.kind in "fc" else np.zeros(array.shape, dtype=bool)


def _fits(shape: tuple[int, ...], param: tuple[int, ...]) -> bool:
    """A gradient shape the check compares: the input's, its transpose, or size-1 axes apart."""
    return (
        shape == param
        or (len(shape) >= 2 and shape == param[::-1])
        or differs_by_unit_axes(shape, param)
    )


def _reorder(
    slots: list[tuple[str, np.ndarray]], shapes: Mapping[str, tuple[int, ...]]
) -> dict[int, str]:
    """Returned positions that hold another input's gradient: pairs of gradients that fit
    neither their own place but each other's exactly, when each such gradient has one partner."""
    names = [name for name, _ in slots]
    misfits = [i for i, (name, grad) in enumerate(slots) if not _fits(grad.shape, shapes[name])]
    partners = {
        i: [j for j in misfits if j != i
            and slots[i][1].shape == shapes[names[j]] and slots[j][1].shape == shapes[names[i]]]
        for i in misfits
    }
    return {i: names[found[0]] for i, found in partners.items() if len(found) == 1}


def _swap_notes(
    order: Mapping[int, str], slots: list[tuple[str, np.ndarray]], who: str
) -> list[Finding]:
    """One ``swapped`` finding per pair of gradients returned in each other's places."""
    findings = []
    for i, owner in sorted(order.items()):
        place = slots[i][0]
        j = next(k for k, (name, _) in enumerate(slots) if name == owner)
        if i > j:
            continue
        findings.append(Finding(
            "swapped", (place, owner),
            f"backward ({who}) returns the gradient of {owner} in {place}'s place (position "
            f"{i}, shape {slots[i][1].shape}) and that of {place} in {owner}'s (position {j}, "
            f"shape {slots[j][1].shape}); each was checked in the place its shape fits",
            fix=(
                f"return the gradients in forward's order: d{place} at position {i}, "
                f"d{owner} at {j}"
            ),
            details={"positions": [i, j]},
        ))
    return findings


def _axis_sum_finding(
    name: str, grad: np.ndarray, param: tuple[int, ...], upstream: Sequence[np.ndarray],
    *, failed: bool = False,
) -> Finding | None:
    """``partial`` when ``grad`` is an upstream gradient summed over axes that do not give the
    input's shape (or, when ``failed``, over any axes: the check showed them wrong)."""
    scale = float(np.max(np.abs(grad))) if grad.size else 0.0
    if scale == 0.0:
        return None
    squeezed = _squeezed(grad.shape)
    for k, u in enumerate(upstream):
        subsets = [
            a for r in range(1, u.ndim + 1) for a in itertools.combinations(range(u.ndim), r)
        ]
        sums = {axes: u.sum(axis=axes) for axes in subsets}
        right = [a for a in subsets if _squeezed(sums[a].shape) == _squeezed(param)]
        for axes, total in sums.items():
            if _squeezed(total.shape) != squeezed or (axes in right and not failed):
                continue
            if np.max(np.abs(total.reshape(grad.shape) - grad)) > SUM_RTOL * scale:
                continue
            word = UPSTREAM_WORD if len(upstream) == 1 else f"the upstream gradient of output {k}"
            others = [a for a in right if a != axes]
            instead = (
                f"; {name} is broadcast along axis {_axes_text(others[0])} of the output, so "
                f"sum over that instead" if len(others) == 1 else ""
            )
            return Finding(
                "partial", (name,),
                f"the gradient of {name} is {word} summed over axis {_axes_text(axes)} (shape "
                f"{total.shape}), the wrong axis for {name} of shape {param}{instead}",
                fix=(
                    f"d{name} = {UPSTREAM_WORD}.sum(axis={_axes_text(others[0])})"
                    if len(others) == 1 else
                    f"sum {UPSTREAM_WORD} over the axes along which {name} is broadcast"
                ),
                details={
                    "output": k, "summed_axes": list(axes), "right_axes": [list(a) for a in others]
                },
            )
    return None


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for n in shape if n != 1)


def _axes_text(axes: tuple[int, ...]) -> str:
    return str(axes[0]) if len(axes) == 1 else str(axes)


def _first_upstream(
    upstream: Any, outputs: tuple[np.ndarray, ...], rng: np.random.Generator
) -> list[np.ndarray]:
    """The first draw: the user's upstream gradients, checked against the outputs, or random."""
    if upstream is None:
        return [rng.standard_normal(out.shape) for out in outputs]
    given = list(upstream) if isinstance(upstream, (list, tuple)) else [upstream]
    shapes = [out.shape for out in outputs]
    if len(given) != len(outputs):
        raise InputError(
            f"upstream holds {len(given)} arrays; forward returns {len(outputs)} outputs of shapes "
            f"{shapes}: give one upstream gradient per output"
        )
    draw = []
    for k, (value, out) in enumerate(zip(given, outputs)):
        what = f"upstream[{k}]"
        array = _numeric_array(value, what)
        if array.shape != out.shape:
            raise InputError(
                f"{what} has shape {array.shape}, which forward's output {k} cannot have: it has "
                f"shape {out.shape}, and an upstream gradient has its output's shape"
            )
        _check_finite(array, lambda index, what=what: f"{what}{list(index)}", what)
        draw.append(np.array(array, dtype=np.float64))
    return draw


# ---------------------------------------------------------------------------- the checks


def _check(
    layer: _Layer, upstream: Sequence[np.ndarray], fitted: _Fitted, **options: Any
) -> GradReport:
    """check_gradient of J = sum_k sum(u_k * out_k) over the inputs whose gradient fits."""
    names = [n for n in layer.floats if n not in fitted.unchecked]
    if not names:
        return GradReport(tensors=[], mode=options["mode"])

    params = {n: layer.values[n] for n in names}
    grads = {n: fitted.grads[n] for n in names}
    return check_gradient(_Projection(layer, upstream, names), grads, params, **options)


class _Projection:
    """The loss checked, J(inputs) = sum_k sum(u_k * out_k) over the inputs ``names`` (the
    others held at the point), with the engine's batched ``moves``: points that move one entry
    share forward calls where their outputs do not overlap (``gradproof.footprints``)."""

    # Whole requests per ``moves`` call: the more points, the fuller each shared forward call.
    moves_chunk = 1 << 30

    def __init__(self, layer: _Layer, upstream: Sequence[np.ndarray], names: list[str]) -> None:
        self.layer, self.upstream, self.names = layer, upstream, names
        self.sizes = [layer.values[n].size for n in names]

    def __call__(self, params: Mapping[str, np.ndarray]) -> float:
        return self.layer.projected({**self.layer.values, **params}, self.upstream)

    def moves(self, positions: np.ndarray, start: np.ndarray, values: np.ndarray) -> np.ndarray:
        """J at each point k: the inputs with flat ``positions[start[k]:start[k+1]]`` (the
        names' entries in order, each C-order) set to those ``values``."""
        layer, upstream = self.layer, self.upstream
        result = np.empty(start.size - 1)
        single = np.diff(start) == 1
        for k in np.flatnonzero(~single):
            flat = np.concatenate([layer.values[n].reshape(-1) for n in self.names])
            piece = slice(int(start[k]), int(start[k + 1]))
            flat[positions[piece]] = values[piece]
            result[k] = self(self._unflatten(flat))
        entries = np.flatnonzero(single)
        where, moved = positions[start[entries]], values[start[entries]]
        weights = _weights(upstream)
        out0 = layer.flat_outputs(layer.values, upstream)
        j0 = float(np.vdot(weights, out0))
        offsets = np.cumsum([0, *self.sizes])
        for t, name in enumerate(self.names):
            mine = (where >= offsets[t]) & (where < offsets[t + 1])
            if not mine.any():
                continue
            base = layer.values[name]
            worth = worthwhile(base.shape, int(mine.sum()), weights.size)
            result[entries[mine]] = j0 + evaluate(
                lambda a, name=name: layer.flat_outputs({**layer.values, name: a}, upstream),
                layer.footprints(name, upstream) if worth else None,
                base, where[mine] - offsets[t], moved[mine], weights, out0,
            )
        return result

    def _unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        offsets = np.cumsum([0, *self.sizes])
        return {
            n: flat[offsets[t]:offsets[t + 1]].reshape(self.layer.values[n].shape)
            for t, n in enumerate(self.names)
        }


def _weights(upstream: Sequence[np.ndarray]) -> np.ndarray:
    """The upstream gradients, flattened and joined like ``_Layer.flat_outputs``."""
    return np.concatenate([np.asarray(u, dtype=np.float64).reshape(-1) for u in upstream])


def _merge_draw(report: GradReport, again: GradReport) -> GradReport:
    """The report of the first draw, with the inputs that failed only in a later one."""
    later = {t.name: t for t in again.tensors}
    newly = {t.name for t in report.tensors if t.passed and not later[t.name].passed}
    tensors = [later[t.name] if t.name in newly else t for t in report.tensors]
    extra = [
        replace(f, message=f"with another random {UPSTREAM_WORD}: {f.message}")
        for f in again.findings
        if f.is_bug and set(f.tensors) & newly
    ]
    return replace(
        report,
        tensors=tensors,
        findings=[*report.findings, *extra],
        seconds=report.seconds + again.seconds,
        loss_evaluations=report.loss_evaluations + again.loss_evaluations,
    )


def _named_axis_sums(
    report: GradReport, layer: _Layer, fitted: _Fitted, upstream: Sequence[np.ndarray],
    passes: Callable[[str, np.ndarray], bool],
) -> GradReport:
    """A failing gradient that is the upstream summed over some axes gets that ``partial``
    finding instead of the generic diagnosis, when the sum over the one other axis that gives
    the input's shape passes the check (``passes(name, gradient)``): a right-shaped sum over
    the wrong axis of a square output, and not, say, a missing activation derivative."""
    findings = list(report.findings)
    for result in report.tensors:
        if result.passed:
            continue
        name = result.name
        shape = layer.values[name].shape
        found = _axis_sum_finding(name, fitted.grads[name], shape, upstream, failed=True)
        if found is None or len(found.details["right_axes"]) != 1:
            continue
        (axes,) = found.details["right_axes"]
        total = upstream[found.details["output"]].sum(axis=tuple(axes))
        if passes(name, total.reshape(shape)):
            findings = [f for f in findings if not (f.is_bug and name in f.tensors)] + [found]
    return replace(report, findings=findings)


def _with_unchecked(report: GradReport, layer: _Layer, fitted: _Fitted) -> GradReport:
    """A failed result, nothing compared, for each input whose gradient has a shape no check
    can compare, and the finding that explains it."""
    results = {t.name: t for t in report.tensors}
    for name in fitted.unchecked:
        results[name] = TensorResult(
            name, layer.values[name].shape, 0, float("nan"), float("nan"), False
        )
    return replace(
        report,
        tensors=[results[n] for n in layer.floats if n in results],
        findings=[*report.findings, *fitted.unchecked.values()],
    )
