"""Which member of the ``Network`` family computes the user's own loss.

Contract: ``identify(loss, params, x, y) -> Identification``. The user's loss is evaluated at
the given point and at a few seeded random points near it (``POINTS`` in all); for every
layout under which the parameters' and the data's shapes form a network
(``layouts.fit_layouts``) and every discrete option of the family (hidden activations, one
for all hidden layers or one per layer; the output activation, the loss and its 1/2, sum or
mean, labels 0- or 1-based or one-hot targets), the data term is evaluated at the same points, and the constants that enter linearly
(lambda of the weight decay, with or without the biases; beta of the sparsity penalty, with
rho found by a grid and a bounded 1-D search) are solved from the residual by least squares.
A member is identified when its loss equals the user's to rounding at every point: within
``RTOL`` of ``|J|``, plus ``SIZE_ULPS`` rounding units of the size of the terms the loss adds up
(``loss_size``), which exceeds ``|J|`` where they cancel.

Only values are compared, never gradients: the user's gradient is what is being checked.
The decay's form (``lambda/2`` or ``lambda``, with or without 1/m) cannot be told apart from
the values (only the product is seen), so it is stated in the course's form, ``lambda/2``
with the loss's own 1/m, and lambda given for that form.

Cheap pruning: a candidate's data term is evaluated at the given point first, and a scale
whose data term already exceeds the user's loss (the penalties are never negative) is
dropped there.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from gradproof.errors import InputError
from gradproof.layouts import Fit, Layout, examples_as_rows, fit_layouts, from_canonical, to_canonical
from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.losses import LOSSES, kl_divergence
from gradproof.nn.network import DATA_VALUES, ForwardCache, Network
from gradproof.nn.softmax import softmax_cross_entropy
from gradproof.network_mistakes import decay_slope
from gradproof.network_words import describe, user_names
from gradproof.params import ParamLayout, parse_params

Params = dict[str, np.ndarray]

# Points the loss is compared at: the given one and POINTS - 1 seeded random ones near it.
# Three unknowns at most (lambda, beta, rho) leave two points to verify them.
POINTS = 5

# Relative size of the random moves: a fraction of each tensor's root mean square, large
# enough that the penalties change as much as the data term.
_MOVE = (0.3, 0.6, 1.0, 0.45)

# Relative agreement that counts as "equal to rounding" for a float64 loss, and for a loss
# whose parameters the user holds in float32.
RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 3e-5}

# Where the terms a loss adds up are larger than the loss (they cancel, or a formula is
# ill-conditioned there), two right formulas differ by rounding of the terms' size
# (``loss_size``): that many units in the last place of it are allowed on top of ``RTOL``.
SIZE_ULPS = 64


def _size_weight(dtype: np.dtype) -> float:
    """The weight of the terms' size beside |J| in the match's scale, ``RTOL`` units."""
    return SIZE_ULPS * float(np.finfo(dtype).eps) / RTOL[dtype]

# Candidate sparsity targets, refined by a bounded search around the best.
_RHO_GRID = np.unique(np.concatenate([np.geomspace(1e-3, 0.5, 24), np.linspace(0.5, 0.99, 12)]))

# The data terms: (output, loss_name), the most common first.
_OUTPUTS: tuple[tuple[str, str], ...] = (
    ("sigmoid", "cross_entropy"), ("softmax", "softmax_cross_entropy"),
    *((name, "squared") for name in ACTIVATIONS),
)


@dataclass(frozen=True)
class GivenPass:
    """A network's forward pass at the user's given point, as ``Network.loss_and_grad_from``
    reads it.

    Attributes
    ----------
    params : dict of str to ndarray
        The point's parameters as the network reads them (validated, its dtype).
    cache : ForwardCache
        The forward pass of the network's hidden layers and output.
    t : ndarray
        The targets its output is compared with.
    """

    params: Params
    cache: ForwardCache
    t: np.ndarray


@dataclass(frozen=True)
class Identified:
    """The member of the family that computes the user's loss, and how the user stores it.

    Attributes
    ----------
    network : Network
        The configuration, constants included.
    layout : Layout
        How the user stores its parameters and data.
    residual : float
        The largest relative difference between its loss and the user's over the points.
    description : str
        The model in the user's terms.
    given : GivenPass or None
        The network's forward pass at the given point, where the identification made it: a
        caller that needs the network's gradient there starts from it.
    """

    network: Network
    layout: Layout
    residual: float
    description: str
    given: GivenPass | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the description, the network's options and the layout."""
        layout = {name: getattr(self.layout, name) for name in
                  ("examples", "weights", "biases", "container", "order")}
        return {"identified": True, "description": self.description,
                "network": self.network.config(), "layout": layout,
                "residual": float(self.residual)}


@dataclass(frozen=True)
class Identification:
    """The outcome: the member found, or which came closest and why it was rejected.

    Attributes
    ----------
    model : Identified or None
    closest : str
        When none matched: the closest member, in words, and why it was rejected.
    tried : int
        How many candidates were compared.
    """

    model: Identified | None
    closest: str = ""
    tried: int = 0

    def to_dict(self) -> dict[str, Any]:
        if self.model is not None:
            return {**self.model.to_dict(), "tried": self.tried}
        return {"identified": False, "closest": self.closest, "tried": self.tried}

    def summary(self) -> str:
        """One line for a report."""
        if self.model is not None:
            return f"identified: {self.model.description}"
        return f"not identified among {self.tried} members of the family; {self.closest}"


# ----------------------------------------------------------------------- the user's side


@dataclass(frozen=True)
class UserPoint:
    """The user's parameters at one point and the user's loss there."""

    params: Any  # the user's structure
    value: float


@dataclass
class UserProblem:
    """The user's loss, parameters and data, read once."""

    loss: Callable[[Any], float]
    layout: ParamLayout
    flat: np.ndarray
    structure: str  # "dict", "list" or "flat"
    fit_shapes: Mapping[str, tuple[int, ...]] | list[tuple[int, ...]]
    x: np.ndarray
    y: Any
    dtype: np.dtype
    points: list[UserPoint] = field(default_factory=list)
    # The unroll orders a flat vector is tried in: both, unless the caller knows (MATLAB's F).
    orders: tuple[str, ...] = ("C", "F")

    def values(self, points: list[Any]) -> list[float]:
        """The loss at each point: in one call of the loss's ``many(points)`` where it has
        one (a loss evaluated in another process pays one exchange, not one per point), else
        one call each."""
        many = getattr(self.loss, "many", None)
        if many is not None:
            return [float(v) for v in many(points)]
        return [float(self.loss(params)) for params in points]


def read_problem(loss: Callable[[Any], Any], params: Any, x: Any, y: Any,
                 shapes: Any = None, order: str = "C") -> UserProblem:
    """The user's parameters, data and loss, checked; ``InputError`` naming what is wrong."""
    if not callable(loss):
        raise InputError(f"loss must be a callable loss(params) -> float; got {type(loss).__name__}")
    problem = read_inputs(params, x, y, shapes, order)
    problem.loss = loss
    problem.points = _user_points(problem, params)
    return problem


def read_inputs(params: Any, x: Any, y: Any, shapes: Any = None, order: str = "C"
                ) -> UserProblem:
    """The user's parameters and data, checked, without a loss (a file holds none)."""
    layout, flat = parse_params(params, shapes, order)
    if shapes is not None:
        structure = "flat"
        fit_shapes: Any = (
            {str(k): tuple(v) for k, v in shapes.items()} if isinstance(shapes, Mapping)
            else [tuple(s) for s in shapes]
        )
    elif layout.kind == "tree" and isinstance(params, Mapping) and all(
        "." not in name and "[" not in name for name in layout.names
    ):
        structure, fit_shapes = "dict", {spec.name: spec.shape for spec in layout.specs}
    elif layout.kind == "tree" and isinstance(params, (list, tuple)) and all(
        name == f"[{i}]" for i, name in enumerate(layout.names)
    ):
        structure, fit_shapes = "list", [spec.shape for spec in layout.specs]
    else:
        raise InputError(
            "check_network reads the parameters as a dict of arrays (any names), a list of "
            "arrays, or a flat vector with shapes=; got "
            + ("one array (pass it as a list, or as a flat vector with shapes=)"
               if layout.kind == "array" else "a nested structure")
        )
    try:
        data = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"x must be a numeric array; got {type(x).__name__}") from err
    if data.ndim != 2 or not np.all(np.isfinite(data)):
        raise InputError(f"x must be a finite 2-D array (examples as rows or as columns); got "
                         f"shape {data.shape}" + ("" if data.ndim != 2 else " with NaN or Inf"))
    dtype = np.dtype(np.float32) if any(
        np.asarray(leaf).dtype == np.float32 for leaf in layout.leaves(params)
    ) else np.dtype(np.float64)
    return UserProblem(_no_loss, layout, flat, structure, fit_shapes, data, y, dtype)


def _no_loss(params: Any) -> float:
    raise InputError("no loss function was given: only its value at the point is known")


def _user_points(problem: UserProblem, params: Any) -> list[UserPoint]:
    """The given point (evaluated twice: a loss must repeat itself) and seeded points near it,
    asked for together; a point where the loss is not finite is asked again nearer."""
    rng = np.random.default_rng(0)
    # Uniform noise of unit variance, from raw random bits read as 16-bit integers (65,536
    # levels in +-sqrt(3)), scaled tensor by tensor into the point's own array: the points
    # need only be generic, and on a large network drawing floating-point noise, and every
    # fresh array of the size of the parameters, was a visible share of check_network's time.
    flat, size = problem.flat, problem.flat.size
    # each tensor's sum of squares, read once: the whole vector's is their sum
    squares = [(spec, float(np.vdot(flat[spec.span], flat[spec.span])))
               for spec in problem.layout.specs]
    whole = math.sqrt(sum(square for _, square in squares) / size) if size else 0.0
    factors = []  # (span, noise factor) per tensor: a fraction of its root mean square
    for spec, square in squares:
        rms = math.sqrt(square / spec.size) if spec.size else 0.0
        factors.append((spec.span, math.sqrt(3) / 32768 * (rms or whole or 0.1)))
    # One draw for all the moves (four 16-bit draws from each 64 random bits), each move
    # reading it from its own offset: shifted windows of independent draws are themselves
    # generic directions, uncorrelated entry by entry, at a quarter of the drawing.
    count = len(_MOVE[: POINTS - 1])
    raw = rng.bit_generator.random_raw(-(-(size + count) // 4)).view(np.int16)
    # read as floats once: each move scaling integers would convert them again
    noise = raw.astype(np.float64)
    moves = [(move, noise[i: i + size]) for i, move in enumerate(_MOVE[:count])]

    def near(i: int, shrink: float) -> Any:
        move, bits = moves[i]
        point = np.empty(size)
        for span, factor in factors:
            np.multiply(bits[span], factor * move * shrink, out=point[span])
        point += flat
        return problem.layout.structure(point.astype(problem.dtype, copy=False))

    moved = [near(i, 1.0) for i in range(len(moves))]
    first, again, *values = problem.values([params, params, *moved])
    if not math.isfinite(first):
        raise InputError(f"the loss is not finite at the given parameters ({first}); a check "
                         "needs a point where it is (a diverged network, log(0) in a "
                         "cross-entropy?)")
    if again != first:
        raise InputError(f"the loss is nondeterministic: two calls at the same parameters gave "
                         f"{first!r} and {again!r} (dropout, random sampling, a changing "
                         "batch?); fix its randomness (a seed) before checking")
    found: list[UserPoint | None] = [UserPoint(user, value) if math.isfinite(value) else None
                                     for user, value in zip(moved, values)]
    for shrink in (0.5, 0.25, 0.1):
        missing = [i for i, point in enumerate(found) if point is None]
        if not missing:
            break
        retried = [near(i, shrink) for i in missing]
        for i, user, value in zip(missing, retried, problem.values(retried)):
            if math.isfinite(value):
                found[i] = UserPoint(user, value)
    return [UserPoint(params, first), *(point for point in found if point is not None)]


# ------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class _DataCandidate:
    """A network without penalties (squared_half, sum) and the user's targets as it reads them."""

    net: Network
    y: Any


@dataclass(frozen=True)
class _Scale:
    """The data term's factor: the loss's 1/2, its reduction over the examples, and whether
    it is averaged over the outputs too."""

    squared_half: bool
    reduction: str
    mean_outputs: bool = False

    def factor(self, loss_name: str, m: int, outputs: int) -> float:
        # The base candidate's squared error already carries 1/2.
        value = 1.0 if loss_name != "squared" or self.squared_half else 2.0
        value = value / m if self.reduction == "mean" else value
        return value / outputs if self.mean_outputs else value

    def options(self) -> dict[str, Any]:
        """The network options this factor sets."""
        return {"squared_half": self.squared_half, "reduction": self.reduction,
                "mean_outputs": self.mean_outputs}


def _scales(loss_name: str, outputs: int) -> tuple[_Scale, ...]:
    """The course's forms first, so that where a mean over the outputs computes the same
    factor (a 1/2 with two outputs) the course's form names it."""
    halves = (True, False) if loss_name == "squared" else (True,)
    forms = [_Scale(half, red) for red in ("mean", "sum") for half in halves]
    if outputs > 1 and loss_name != "softmax_cross_entropy":
        # PyTorch's MSELoss and BCELoss, Keras's losses: the mean over every output entry
        forms += [_Scale(half, red, True) for red in ("mean", "sum") for half in halves]
    return tuple(forms)


def _targets(fit: Fit, y: Any, m: int) -> Iterator[tuple[str, int, Any]]:
    """(target, label_base, y as the network reads it) for each reading of the user's y."""
    layers = fit.layers
    if y is None:
        if layers[0] == layers[-1]:
            yield "input", 0, None
        return
    arr = np.asarray(y)
    n_out = layers[-1]
    if arr.ndim == 2 and arr.shape == (n_out, m) and fit.layout.examples == "columns" and (
        arr.shape != (m, n_out)
    ):
        arr = arr.T
    if arr.ndim == 2 and arr.shape == (m, n_out):
        yield "one_hot", 0, arr
    if arr.size == m and (arr.ndim == 1 or (arr.ndim == 2 and 1 in arr.shape)):
        for base in (0, 1):
            yield "labels", base, arr.reshape(-1)


def _hidden(fit: Fit, mixed: bool) -> list[str | tuple[str, ...]]:
    """The hidden activations to try: one for every hidden layer, or (``mixed``) one per
    layer in every mix of different ones (a relu layer under a tanh one)."""
    depth = len(fit.layers) - 2
    if not mixed:
        return list(ACTIVATIONS) if depth else ["sigmoid"]  # no hidden layer: name unused
    return [mix for mix in itertools.product(ACTIVATIONS, repeat=depth) if len(set(mix)) > 1]


def _data_candidates(fit: Fit, y: Any, m: int, mixed: bool = False
                     ) -> Iterator[_DataCandidate]:
    options = fit.network_options()
    for (target, base, y_read), hidden, (output, loss_name) in itertools.product(
        _targets(fit, y, m), _hidden(fit, mixed), _OUTPUTS
    ):
        try:
            net = Network(**options, activation=hidden, output=output, loss_name=loss_name,
                          target=target, label_base=base)
        except InputError:
            continue  # a combination the family does not hold (softmax with one output ...)
        yield _DataCandidate(net, y_read)


# ---------------------------------------------------------------------- the penalty fit


@dataclass(frozen=True)
class _Penalty:
    """A penalty form: decay on the weights (and biases), sparsity; and its fitted constants."""

    decay_biases: bool | None  # None: no decay
    sparsity: bool
    kappa: float = 0.0  # the factor of sum(P**2)
    beta: float = 0.0
    rho: float = 0.05


_NO_PENALTY = _Penalty(None, False)


def _forms(net: Network) -> tuple[_Penalty, ...]:
    decays: tuple[bool | None, ...] = (None, False, True) if net.bias else (None, False)
    sparse = (False, True) if net.code_layer and net.activation[net.code_layer - 1] == "sigmoid" \
        else (False,)
    return tuple(_Penalty(d, s) for s in sparse for d in decays)


@dataclass
class _Values:
    """A candidate's pieces at every point: data term, squared weights and biases, code means.

    The sums of squares are read only by a decay's fit, so they are asked of the forward
    passes (which keep them) when first read: a member without a decay, found by the first
    form tried, never reads every parameter at every point for them.
    """

    data: np.ndarray  # (points,)
    size: np.ndarray  # (points,): the size of the data term's terms (``_term_size``)
    code_means: list[np.ndarray] | None
    forwards: _Forwards

    @property
    def weights(self) -> np.ndarray:
        """sum(W**2) at each point."""
        return self.forwards.squares("W")[: len(self.data)]

    @property
    def biases(self) -> np.ndarray:
        """sum(b**2) at each point."""
        return self.forwards.squares("b")[: len(self.data)]


def _penalty_columns(values: _Values, form: _Penalty, rho: float) -> np.ndarray:
    columns = []
    if form.decay_biases is not None:
        columns.append(values.weights + (values.biases if form.decay_biases else 0.0))
    if form.sparsity:
        columns.append(np.array([float(np.sum(kl_divergence(rho, mean)))
                                 for mean in values.code_means]))
    return np.array(columns).T.reshape(len(values.data), len(columns))


def _solve(residual: np.ndarray, columns: np.ndarray) -> np.ndarray:
    if columns.shape[1] == 0:
        return np.zeros(0)
    return np.linalg.lstsq(columns, residual, rcond=None)[0]


def _fit_penalty(residual: np.ndarray, values: _Values, form: _Penalty, tol: np.ndarray
                 ) -> tuple[_Penalty, float]:
    """The penalty's constants fitted to ``residual`` = user loss - data term, and the worst
    misfit relative to the tolerance (<= 1: it fits)."""

    def misfit(rho: float) -> tuple[float, np.ndarray]:
        columns = _penalty_columns(values, form, rho)
        coef = _solve(residual, columns)
        if np.any(coef < 0):
            return math.inf, coef  # a negative lambda or beta is no penalty of the family
        return float(np.max(np.abs(residual - columns @ coef) / tol)), coef

    def projected(rho: float) -> np.ndarray:
        # the misfit left once the linear constants are solved for this rho
        columns = _penalty_columns(values, form, rho)
        return (residual - columns @ _solve(residual, columns)) / tol

    def smooth(rho: float) -> float:
        # the least-squares misfit, smooth in rho where the worst point's is not
        return float(np.linalg.norm(projected(rho)))

    rho = 0.05
    if form.sparsity:
        best = int(np.argmin([smooth(r) for r in _RHO_GRID]))
        lo, hi = _RHO_GRID[max(best - 1, 0)], _RHO_GRID[min(best + 1, len(_RHO_GRID) - 1)]
        refined = float(minimize_scalar(smooth, bounds=(lo, hi), method="bounded",
                                        options={"xatol": 1e-13}).x)
        # the search never returns a bound itself, where a grid point may be exact
        rho = _polish_rho(min((refined, float(_RHO_GRID[best])), key=smooth), projected)
    score, coef = misfit(rho)
    coef = list(coef)
    kappa = coef.pop(0) if form.decay_biases is not None else 0.0
    beta = coef.pop(0) if form.sparsity else 0.0
    return replace(form, kappa=float(kappa), beta=float(beta), rho=rho), score


def _polish_rho(rho: float, projected: Callable[[float], np.ndarray]) -> float:
    """Gauss-Newton steps on the projected misfit from the search's rho.

    A minimiser of the misfit's norm finds rho only to about the square root of the
    precision (the norm is flat to second order there); the misfit itself is linear in the
    step to first order, so each step gains digits until rounding is reached.
    """
    best, best_norm = rho, float(np.linalg.norm(projected(rho)))
    for _ in range(_POLISH_STEPS):
        h = 1e-6 * min(best, 1 - best)
        r = projected(best)
        slope = (projected(best + h) - projected(best - h)) / (2 * h)
        if not np.any(slope):
            break
        step = -float(slope @ r) / float(slope @ slope)
        trial = min(max(best + step, 1e-12), 1 - 1e-12)
        norm = float(np.linalg.norm(projected(trial)))
        if not norm < best_norm:
            break
        best, best_norm = trial, norm
    return best


# Gauss-Newton steps after the bounded search: it converges quadratically from there.
_POLISH_STEPS = 6


class _Forwards:
    """The hidden layers' forward pass at each point, once per hidden activation: every
    output and loss of a candidate reads the same output pre-activation."""

    def __init__(self, fit: Fit, structural: Network, canonical: list[Params], x: np.ndarray
                 ) -> None:
        """``structural``: the fit's network (``target="one_hot"``) that mapped the points
        (``canonical``), reused: a Network is not free to build."""
        self._options = fit.network_options()
        self._canonical = canonical
        self._structural = structural
        self._x = self._structural.validate_input(x)
        self._checked: dict[int, Params] = {}
        self._linear: dict[tuple[str, ...], Network] = {}
        self._cache: dict[tuple[tuple[str, ...], int], ForwardCache] = {}
        self._squares: dict[str, np.ndarray] = {}

    @property
    def x(self) -> np.ndarray:
        return self._x

    def squares(self, prefix: str) -> np.ndarray:
        """sum(P**2) over the weights ("W") or the biases ("b") at each point, once."""
        if prefix not in self._squares:
            self._squares[prefix] = np.array([
                sum(float(np.vdot(v, v)) for k, v in params.items() if k.startswith(prefix))
                for params in self._canonical
            ])
        return self._squares[prefix]

    def params(self, point: int) -> Params:
        """The point's parameters as the networks read them (their dtype), converted once.

        Not scanned for NaN and Inf: the user's point was (``parse_params``) and the others
        differ from it by bounded noise; one that overflowed gives a non-finite loss, whose
        fit scores NaN and never matches, and whose residual is inf (``_residual``).
        """
        if point not in self._checked:
            self._checked[point] = self._structural.validate_params(self._canonical[point],
                                                                    check_finite=False)
        return self._checked[point]

    def at(self, net: Network, point: int) -> ForwardCache:
        """The forward pass at the point with ``net``'s hidden activations and an identity
        output (``Network.completed`` adds any other)."""
        key = (net.activation, point)
        if key not in self._cache:
            if net.activation not in self._linear:  # built once: a Network is not free to build
                self._linear[net.activation] = Network(
                    **self._options, activation=net.activation, output="identity",
                    target="one_hot")
            self._cache[key] = self._linear[net.activation].forward_validated(
                self.params(point), self._x)
        return self._cache[key]


def _data_term(net: Network, s: np.ndarray, t: np.ndarray, sized: bool = True
               ) -> tuple[float, float]:
    """``net``'s data term (squared error with its 1/2, summed) from the output
    pre-activation ``s``, and the size of the terms it sums (``_term_size``; NaN without
    ``sized``, for a caller that reads only the value: a pruned candidate)."""
    if net.output == "softmax":
        z = None
        value = DATA_VALUES[net.loss_name](t, s, s)  # the softmax's loss reads s alone
    else:
        z = ACTIVATIONS[net.output].forward(s)
        value = DATA_VALUES[net.loss_name](t, z, s)
    return value, _term_size(net, t, z, s) if sized else math.nan


def _term_size(net: Network, t: np.ndarray, z: np.ndarray | None, s: np.ndarray) -> float:
    """The sum of the magnitudes of the intermediate terms the data term adds up.

    Where those terms cancel (a cross-entropy ``softplus(s) - t s`` with large ``|s|``), two
    correct formulas of the same loss differ by rounding of this size, not of ``|J|``: the
    loss match scales its tolerance with it.
    """
    if net.output == "softmax":
        # lse(s_i) - t_i . s_i: the log-sum-exp is within log K of the row's largest |s|
        top = np.abs(s).max(axis=1) + math.log(s.shape[1])  # (m,)
        return float(np.sum(t.sum(axis=1) * top) + np.sum(np.abs(t * s)))
    size = LOSSES[net.loss_name].magnitude(t, z, s)
    if net.loss_name == "cross_entropy":
        # written from the probability, -[t log z + (1-t) log(1-z)], the loss inherits z's
        # rounding: 1 - z has relative error eps * z / (1 - z) = eps * e^s, and z itself
        # eps * e^-s where it is tiny
        clipped = np.clip(s, -700.0, 700.0)
        size = size + np.abs(1 - t) * np.exp(clipped) + np.abs(t) * np.exp(-clipped)
    return float(np.sum(size))


def _values(candidate: _DataCandidate, forwards: _Forwards, canonical: list[Params],
            first_only: bool = False) -> _Values:
    """The candidate's pieces at every point, or (``first_only``) its data term alone at the
    given point, which is all that the pruning reads."""
    net = candidate.net
    t = net.targets(forwards.x, candidate.y)  # InputError for labels this reading cannot hold
    points = range(1 if first_only else len(canonical))
    caches = [forwards.at(net, i) for i in points]
    terms = np.array([_data_term(net, cache.pre_activations[-1], t, sized=not first_only)
                      for cache in caches])
    data, size = terms[:, 0], terms[:, 1]
    code_means = None
    if not first_only and net.code_layer and net.activation[net.code_layer - 1] == "sigmoid":
        code_means = [cache.activations[net.code_layer].mean(axis=0) for cache in caches]
    return _Values(data, size, code_means, forwards)


# -------------------------------------------------------------------------- identification


@dataclass
class _Best:
    """The closest member so far: its worst relative misfit, how many constants were
    fitted to the user's values to reach it, and the words that say so (written only if no
    member matches: a network built and described for every closer candidate was a visible
    share of an identification that ends in a match)."""

    score: float = math.inf
    constants: int = 0
    text: Callable[[], str] = field(default=lambda: "no candidate could be evaluated")

    # Each constant fitted to the loss values must buy this factor in misfit to count as
    # closer: fitted constants absorb differences (a KL sparsity term's beta and rho bend a
    # squared error towards a loss of another activation), so that, unweighted, the closest
    # member of a loss outside the family would be the one with the most constants.
    _PER_CONSTANT = 10.0

    def replaced_by(self, score: float, penalty: _Penalty) -> bool:
        """Whether a member with this misfit and fitted penalty is the closer; if so, keep it."""
        constants = int(penalty.kappa > 0) + 2 * int(penalty.beta > 0)
        if score * self._PER_CONSTANT ** (constants - self.constants) >= self.score:
            return False
        self.score, self.constants = score, constants
        return True


def identify(loss: Callable[[Any], Any], params: Any, x: Any, y: Any = None, *,
             shapes: Any = None, order: str = "C") -> Identification:
    """Find the member of the ``Network`` family whose loss is the user's.

    Parameters
    ----------
    loss : callable
        ``loss(params) -> float``, the user's own, closing over ``x`` and ``y``.
    params : dict of arrays, list of arrays, or flat vector (with ``shapes``)
        The point, in the user's structure.
    x : ndarray, 2-D
        The data the loss closes over, examples as rows or as columns.
    y : ndarray, optional
        Class labels (0- or 1-based), one-hot targets, or None for an autoencoder.
    shapes, order
        For a flat vector: the tensors it holds, as for ``check_gradient``.

    Returns
    -------
    Identification
        The member found, or (``model`` None) the closest and why it was rejected.

    Raises
    ------
    InputError
        Parameters and data whose shapes fit no layout; a loss that is not finite at the
        given point or nondeterministic; labels that are not integers or lie outside the
        classes of every fitting layout; several layouts that compute the user's loss
        equally well (pass ``model=`` and ``layout=``).
    """
    return identify_problem(read_problem(loss, params, x, y, shapes, order))


def _fits(problem: UserProblem) -> list[Fit]:
    fits = [fit for fit in fit_layouts(problem.fit_shapes, problem.x.shape,
                                       flat=problem.structure == "flat")
            if fit.layout.container != "flat" or fit.layout.order in problem.orders]
    if not fits:
        raise InputError(
            f"the parameters' shapes ({_shapes_text(problem)}) and the data's shape "
            f"{problem.x.shape} fit no network of the family: each weight must take the "
            "previous layer's width (plus 1 for a bias column), the first the width of x "
            "(examples as rows or as columns)"
        )
    return fits


def identify_problem(problem: UserProblem) -> Identification:
    """``identify`` on a problem read by ``read_problem``."""
    fits = _fits(problem)
    _check_labels(problem, fits)
    matches: list[Identified] = []
    best, tried = _Best(), 0
    # one activation for all hidden layers first, the mixes (many more) only where none fits;
    # the data term averaged over the outputs only after the course's forms, mixes included
    # (its members' smaller data terms leave room for penalties, so each costs their fits)
    for over_outputs, mixed in itertools.product((False, True), (False, True)):
        for fit in fits:
            found, count = _identify_fit(problem, fit, best, mixed, over_outputs)
            tried += count
            if found is not None and not any(_same_reading(problem, found, m)
                                             for m in matches):
                matches.append(found)
        if matches:
            break
    if len(matches) > 1:
        _ambiguous([m.layout for m in matches])
    if matches:
        return Identification(matches[0], tried=tried)
    return Identification(None, best.text(), tried)


def _same_reading(problem: UserProblem, a: Identified, b: Identified) -> bool:
    """Whether two layouts read the user's parameters and data into the same network (a 1x1
    weight stored either way round, an (n, 1) column read as a column or a vector)."""
    if a.network.param_shapes() != b.network.param_shapes():
        return False
    point = problem.points[-1].params
    left = _canonical(a.layout, a.network, problem, point)
    right = _canonical(b.layout, b.network, problem, point)
    return np.array_equal(left[1], right[1]) and all(
        np.array_equal(left[0][name], right[0][name]) for name in left[0])


def _ambiguous(layouts: list[Layout]) -> None:
    listed = "; ".join(f"({i}) {layout.describe()}" for i, layout in enumerate(layouts, 1))
    raise InputError(
        f"the shapes fit {len(layouts)} layouts that compute your loss equally well: {listed}; "
        "say which one with model= and layout= (a gradproof.layouts.Layout)"
    )


def given_model(problem: UserProblem, net: Network, layout: Layout | None) -> Identified:
    """The user's own ``model=`` (and ``layout=``), held to the user's loss at every point.

    Raises ``InputError`` when no layout of it fits the shapes, when its loss is not the
    user's, or when several layouts fit equally well and ``layout`` is not given.
    """
    if layout is not None:
        layouts = [layout]
    else:
        options = {"layers": list(net.layers), "tied": net.tied, "bias": net.bias}
        layouts = [fit.layout for fit in _fits(problem) if fit.network_options() == options]
        if not layouts:
            raise InputError(f"model= has layers {list(net.layers)} (tied={net.tied}, "
                             f"bias={net.bias}); the parameters' shapes "
                             f"({_shapes_text(problem)}) and x {problem.x.shape} form no "
                             "layout of it")
    found = [(lay, _residual(problem, lay, net)) for lay in layouts]
    rtol = RTOL[problem.dtype]
    matching = [(lay, res) for lay, res in found if res <= 2 * rtol]
    if len(matching) > 1:
        _ambiguous([lay for lay, _ in matching])
    if not matching:
        worst = min(res for _, res in found)
        raise InputError(f"model= does not compute your loss: its loss differs from yours by "
                         f"{worst:.2g} relative (tolerance {2 * rtol:.0g}); leave model= out "
                         "to identify the network from the loss")
    lay, res = matching[0]
    return Identified(net, lay, res, _describe(net, lay, problem))


def _identify_fit(problem: UserProblem, fit: Fit, best: _Best, mixed: bool, over_outputs: bool
                  ) -> tuple[Identified | None, int]:
    x_rows = examples_as_rows(fit.layout, problem.x)
    m = x_rows.shape[0]
    structural = Network(**fit.network_options(), target="one_hot")
    # read, never written: views where the layout allows
    canonical = [to_canonical(fit.layout, structural, p.params, copy=False)
                 for p in problem.points]
    forwards = _Forwards(fit, structural, canonical, x_rows)
    user = np.array([p.value for p in problem.points])
    rtol = RTOL[problem.dtype]
    weight = _size_weight(problem.dtype)
    tried = 0
    for candidate in _data_candidates(fit, problem.y, m, mixed):
        outputs = candidate.net.layers[-1]
        forms = [scale for scale in _scales(candidate.net.loss_name, outputs)
                 if scale.mean_outputs == over_outputs]
        if not forms:
            continue
        tried += 1
        try:
            first = _values(candidate, forwards, canonical, first_only=True)
        except InputError:
            continue  # labels this reading cannot hold: checked for the user in _check_labels
        scales = []
        for scale in forms:
            excess = scale.factor(candidate.net.loss_name, m, outputs) * first.data[0] - user[0]
            if excess <= rtol * (abs(user[0]) + 1e-300):
                scales.append(scale)
            elif best.replaced_by(excess / (abs(user[0]) + 1e-300), _NO_PENALTY):
                # no penalty can take its data term back down, yet it may be the closest
                best.text = partial(_closest_text, problem, fit, candidate, scale, _NO_PENALTY,
                                    best.score, 1)
        if not scales:
            continue  # its data term alone exceeds the user's loss
        values = _values(candidate, forwards, canonical)
        for scale in scales:
            factor = scale.factor(candidate.net.loss_name, m, outputs)
            data = factor * values.data
            tol = rtol * (np.abs(user) + weight * factor * values.size) + 1e-300
            for form in _forms(candidate.net):
                fitted, score = _fit_penalty(user - data, values, form, tol)
                if score <= 1.0:
                    found = _confirm(problem, fit, candidate, scale, fitted, values)
                    if found is not None:
                        return found, tried
                if best.replaced_by(score * rtol, fitted):
                    best.text = partial(_closest_text, problem, fit, candidate, scale, fitted,
                                        best.score, len(user))
    return None, tried


def _closest_text(problem: UserProblem, fit: Fit, candidate: _DataCandidate, scale: _Scale,
                  penalty: _Penalty, score: float, points: int) -> str:
    net = _network(candidate, scale, penalty, examples_as_rows(fit.layout, problem.x).shape[0])
    where = "at the given point" if points == 1 else f"at one of the {points} points"
    return (f"closest: {_describe(net, fit.layout, problem)}; rejected because its loss differs "
            f"from yours by {score:.2g} relative {where}")


def _network(candidate: _DataCandidate, scale: _Scale, penalty: _Penalty, m: int) -> Network:
    mean = scale.reduction == "mean"
    # kappa = lambda * 1/2 * (1/m with the loss's own mean)
    lam = 2.0 * penalty.kappa * (m if mean else 1.0)
    return replace(candidate.net, **scale.options(), weight_decay=lam, decay_half=True,
                   decay_mean=mean, decay_biases=bool(penalty.decay_biases),
                   sparsity_weight=penalty.beta, sparsity_target=penalty.rho)


def _confirm(problem: UserProblem, fit: Fit, candidate: _DataCandidate, scale: _Scale,
             penalty: _Penalty, values: _Values) -> Identified | None:
    """The network rebuilt from the fitted constants, rounded to 6 digits where that still
    fits, and its loss (``Network.objective``, on the hidden layers' passes the fit read)
    compared with the user's at every point."""
    forwards = values.forwards
    m = forwards.x.shape[0]
    rtol = RTOL[problem.dtype]
    exact = _network(candidate, scale, penalty, m)
    constants = {name: getattr(exact, name)
                 for name in ("weight_decay", "sparsity_weight", "sparsity_target")}
    rounded = {name: _round(value) for name, value in constants.items()}
    # a Network is not free to build: the rounded one only where rounding changed a constant
    nets = [exact] if rounded == constants else [replace(exact, **rounded), exact]
    for net in nets:
        residual = _residual(problem, fit.layout, net, values)
        if residual <= rtol * 2:
            # the pass at the given point, for the gradient there: only the output again
            given = GivenPass(forwards.params(0), net.completed(forwards.at(net, 0)),
                              net.targets(forwards.x, _read_targets(fit.layout, net, problem)))
            return Identified(net, fit.layout, residual, _describe(net, fit.layout, problem),
                              given)
    return None


def _residual(problem: UserProblem, layout: Layout, net: Network,
              fitted: _Values | None = None) -> float:
    """The largest difference between ``net``'s loss and the user's over the points, relative
    to |J| plus ``_size_weight`` times the size of the loss's terms (``loss_and_size``); inf
    where the network cannot read the parameters or the targets, or its loss is not finite
    (the points are not scanned for NaN and Inf: see ``_Forwards.params``).

    ``fitted``: the pieces a fit read at the points, where the caller has them: the points
    mapped onto a network of ``net``'s shapes in ``layout`` and passed through its hidden
    layers (each mapping and pass reads every parameter), and the data term and its terms'
    size of ``net``'s output and loss, which only the factors of ``net``'s scale change.
    """
    worst = 0.0
    try:
        t = None if fitted is None else net.targets(fitted.forwards.x,
                                                    _read_targets(layout, net, problem))
    except InputError:
        return math.inf
    for i, point in enumerate(problem.points):
        try:
            if fitted is None:
                params, x_rows, y = _canonical(layout, net, problem, point.params)
                value, cache, t = net.evaluate(params, x_rows, y, check_finite=False)
                size = _loss_size(net, value, cache, t)
            else:
                forwards = fitted.forwards
                value = net.objective(forwards.params(i),
                                      net.completed(forwards.at(net, i)), t)
                size = _sized(net, value, fitted.data[i], fitted.size[i], t.shape[0])
        except InputError:
            return math.inf
        if not math.isfinite(value + size):
            return math.inf  # max() would pass over a NaN residual: max(0.0, nan) is 0.0
        scale = abs(point.value) + _size_weight(problem.dtype) * size
        worst = max(worst, abs(value - point.value) / max(scale, 1e-300))
    return worst


def loss_and_size(net: Network, params: Params, x_rows: np.ndarray, y: Any,
                  check_finite: bool = True) -> tuple[float, float]:
    """``net``'s loss at a point and the size of the terms it adds up there: its data term's
    (``_term_size``) with the loss's factor, plus the penalties (never negative); from one
    forward pass (``check_finite`` as for ``Network.evaluate``)."""
    value, cache, t = net.evaluate(params, x_rows, y, check_finite)
    return value, _loss_size(net, value, cache, t)


def _loss_size(net: Network, value: float, cache: ForwardCache, t: np.ndarray) -> float:
    """``loss_and_size``'s size, from the forward pass that gave the loss ``value``."""
    data, size = _data_term(net, cache.pre_activations[-1], t)
    return _sized(net, value, data, size, t.shape[0])


def _sized(net: Network, value: float, data: float, size: float, m: int) -> float:
    """The size of the terms of ``net``'s loss ``value`` on ``m`` examples, from its data
    term ``data`` (``_data_term``) and the size of its terms: the latter times the loss's
    factor, plus the rest of the loss (the penalties, never negative)."""
    factor = net.data_factor(m) * (
        2.0 if net.loss_name == "squared" and not net.squared_half else 1.0)
    return factor * size + abs(value - factor * data)


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _check_labels(problem: UserProblem, fits: list[Fit]) -> None:
    """Integer labels where a classifier reads them, inside the classes of some fit."""
    y = problem.y
    if y is None:
        return
    arr = np.asarray(y)
    m = problem.x.shape[0]
    if arr.dtype.kind not in "biuf":
        raise InputError(f"y must be numeric (labels or targets); got {arr.dtype}")
    one_hot = any(arr.ndim == 2 and arr.size == m * f.layers[-1] and f.layers[-1] > 1
                  for f in fits)
    if one_hot or arr.size != m:
        return
    labels = arr.reshape(-1).astype(np.float64)
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
        if all(f.layers[-1] > 1 for f in fits):
            bad = int(np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))[0])
            raise InputError(f"y must hold integer class labels (the loss needs them); y[{bad}] "
                             f"is {labels[bad]!r}")
        return
    classes = sorted({max(f.layers[-1], 2) for f in fits})
    low, high = labels.min(), labels.max()
    if not any(low >= base and high <= base + k - 1 for k in classes for base in (0, 1)):
        k = classes[-1]
        raise InputError(
            f"y holds labels from {low:g} to {high:g}, outside the {k} classes of the network's "
            f"output (0..{k - 1} or 1..{k})"
        )


# ------------------------------------------------------------------------------ words


def _describe(net: Network, layout: Layout, problem: UserProblem | None) -> str:
    """``network_words.describe`` of ``net`` as it reads the user's problem."""
    if problem is None:
        return describe(net, layout, "m", None)
    m = problem.x.shape[0 if layout.examples == "rows" else 1]
    return describe(net, layout, m, flat_names(problem))


def flat_names(problem: UserProblem) -> Sequence[str] | None:
    """The names of a flat vector's tensors (``shapes=``'s keys), else None."""
    return problem.layout.names if problem.structure == "flat" else None


def identified_names(identified: Identified, problem: UserProblem) -> dict[str, str]:
    """Network tensor name -> the user's name for it, in the problem the network was
    identified from (``network_words.user_names``)."""
    return user_names(identified.layout, identified.network, flat_names(problem))


def _shapes_text(problem: UserProblem) -> str:
    shapes = problem.fit_shapes
    items = shapes.items() if isinstance(shapes, Mapping) else enumerate(shapes)
    return ", ".join(f"{name}: {'x'.join(map(str, shape))}" for name, shape in items)


def canonical_point(identified: Identified, problem: UserProblem, params: Any
                    ) -> tuple[Params, np.ndarray, Any]:
    """The user's point, data and targets as the identified network reads them."""
    return _canonical(identified.layout, identified.network, problem, params)


def _canonical(layout: Layout, net: Network, problem: UserProblem, params: Any,
               mapped: Params | None = None) -> tuple[Params, np.ndarray, Any]:
    """The point, data and targets as ``net`` reads them in ``layout``; ``mapped``: the
    point's parameters already mapped. The parameters are views of the user's arrays where
    the layout allows (``to_canonical(copy=False)``): every caller only reads them."""
    if mapped is None:
        mapped = to_canonical(layout, net, params, copy=False)
    return mapped, examples_as_rows(layout, problem.x), _read_targets(layout, net, problem)


def _read_targets(layout: Layout, net: Network, problem: UserProblem) -> Any:
    """The user's ``y`` as ``net`` reads it in ``layout`` (one row per example)."""
    y = problem.y
    if net.target == "one_hot":
        arr = np.asarray(y)
        m = examples_as_rows(layout, problem.x).shape[0]
        return arr if arr.shape == (m, net.layers[-1]) else arr.T
    if net.target == "labels":
        return np.asarray(y).reshape(-1)
    return y


def user_gradient(identified: Identified, grads: Params) -> Any:
    """The network's gradient in the user's structure."""
    return from_canonical(identified.layout, identified.network, grads)


# ------------------------------------------------------------ identification from one value


@dataclass(frozen=True)
class Constants:
    """The penalties' constants that a file or the flags give.

    Attributes
    ----------
    weight_decay : float or None
        lambda, in a form the loss value picks (``lambda/2`` or ``lambda``, with or without
        1/m, biases excluded or included); None where unknown: fitted to the value.
    sparsity_weight, sparsity_target : float
        beta and rho of the KL sparsity penalty (beta 0: none).
    """

    weight_decay: float | None = None
    sparsity_weight: float = 0.0
    sparsity_target: float = 0.05


@dataclass(frozen=True)
class ValueIdentification:
    """The member a single loss value picks among those the shapes allow.

    Attributes
    ----------
    model : Identified
        The member the check uses: the one the value picked, or the first allowed.
    matches : tuple of Identified
        Every member whose loss is the value (empty without a value, or when none is).
    decided : bool
        The value picked exactly one member.
    text : str
        How the member was chosen, in words.
    """

    model: Identified
    matches: tuple[Identified, ...]
    decided: bool
    text: str


# How many of the members a value cannot tell apart are named.
_LISTED = 4


def identify_value(problem: UserProblem, params: Any, value: float | None,
                   constants: Constants, allowed: Callable[[Network], bool] = lambda net: True,
                   layouts: Callable[[Layout], bool] = lambda layout: True
                   ) -> ValueIdentification:
    """Choose the member of the family whose loss at the point is ``value``.

    One value cannot fit constants and verify them, so the constants come from
    ``constants``; where lambda is unknown and no member without a decay gives the value,
    each member's lambda is the one that makes its loss the value, and the members left are
    told apart only when one remains. ``allowed`` keeps the members the user's flags allow,
    ``layouts`` the layouts.

    Raises
    ------
    InputError
        No member of the family is allowed by the shapes and ``allowed``.
    """
    fits = [fit for fit in _fits(problem) if layouts(fit.layout)]
    if not fits:
        raise InputError("the shapes fit no layout stored the way the flags given say "
                         "(--examples, --weights); drop them to try every layout")
    _check_labels(problem, fits)
    problem.points = [UserPoint(params, math.nan if value is None else value)]
    scored = _members(problem, fits, params, value, constants, allowed, fit_decay=False)
    if not scored:
        raise InputError("no member of the family fits the file's shapes and the flags given; "
                         "drop a flag (--activation, --loss, --reduction ...) to widen the search")
    first = _identified(problem, scored[0][0], scored[0][1], scored[0][2] or 0.0)
    if value is None:
        return ValueIdentification(first, (), False, (
            f"the file holds no loss value (J, cost or loss) to identify the model: assumed "
            f"the first member of the family the shapes and flags allow; save J beside the "
            f"gradient to have it identified"))
    rtol = RTOL[problem.dtype]
    matches = _distinct(problem, [(fit, net, r) for fit, net, r in scored if r <= 2 * rtol])
    how = "with the constants given"
    if not matches and constants.weight_decay is None:
        matches = _distinct(problem, [
            (fit, net, r) for fit, net, r in _members(problem, fits, params, value, constants,
                                                      allowed, fit_decay=True)
            if r <= 2 * rtol])
        how = "each with the lambda that makes its loss the value"
    if not matches:
        closest = min(scored, key=lambda item: item[2])
        near = _identified(problem, closest[0], closest[1], closest[2])
        return ValueIdentification(first, (), False, (
            f"no member of the family gives the file's loss value {value:.10g} (closest: "
            f"{near.description}, off by {closest[2]:.2g} relative): checked against the first "
            "member the shapes and flags allow; its verdict holds only if that is your model"))
    if len(matches) == 1:
        return ValueIdentification(matches[0], tuple(matches), True, (
            f"from the file's loss value {value:.10g} ({how}, to "
            f"{max(matches[0].residual, 1e-16):.0e} relative)"))
    listed = "; ".join(f"({i}) {_brief(m.network)}" for i, m in enumerate(matches[:_LISTED], 1))
    more = f"; and {len(matches) - _LISTED} more" if len(matches) > _LISTED else ""
    return ValueIdentification(matches[0], tuple(matches), False, (
        f"the file's loss value {value:.10g} fits {len(matches)} members of the family "
        f"({how}) and cannot decide between them: {listed}{more}; checked against the first; "
        "choose with --activation, --output-activation, --loss, --reduction or --weight-decay"))


def _members(problem: UserProblem, fits: list[Fit], params: Any, value: float | None,
             constants: Constants, allowed: Callable[[Network], bool], fit_decay: bool
             ) -> list[tuple[Fit, Network, float]]:
    """Every allowed member, in the family's order, with its loss's difference from ``value``
    relative to the loss's scale (0 without a value).

    One forward pass per layout and hidden activation: the data term's scale and 1/2 are
    factors, and the penalties (sums of squares, the KL of the code layer's means) are added
    to it, so that the members of the decay's forms cost no further pass. With
    ``fit_decay``, each member's lambda (the weights', the course's form) is the one that
    makes its loss ``value``; members whose loss exceeds it without a decay are left out.
    """
    found = []
    weight = _size_weight(problem.dtype)
    for fit in fits:
        x_rows = examples_as_rows(fit.layout, problem.x)
        m = x_rows.shape[0]
        structural = Network(**fit.network_options(), target="one_hot")
        canonical = [to_canonical(fit.layout, structural, params)]
        forwards = _Forwards(fit, structural, canonical, x_rows)
        for candidate in _data_candidates(fit, problem.y, m):
            net = _with_sparsity(candidate.net, constants)
            try:
                values = _values(candidate, forwards, canonical)
            except InputError:
                continue  # labels this reading cannot hold
            if net is None:
                continue
            kl = (net.sparsity_weight * float(np.sum(kl_divergence(
                net.sparsity_target, values.code_means[0]))) if net.sparsity_weight else 0.0)
            for scale in _scales(net.loss_name, net.layers[-1]):
                base = replace(net, **scale.options())
                if not allowed(base):
                    continue
                factor = scale.factor(net.loss_name, m, net.layers[-1])
                data, size = factor * values.data[0], factor * values.size[0]
                rest = None if value is None else value - data - kl
                for member in _decays(base, constants, m, values, rest if fit_decay else None):
                    penalty = kl + decay_slope(member, m) / 2 * (
                        values.weights[0] + (values.biases[0] if member.decay_biases else 0.0))
                    residual = 0.0 if value is None else abs(data + penalty - value) / max(
                        abs(value) + weight * (size + penalty), 1e-300)
                    found.append((fit, member, residual))
    return found


def _with_sparsity(net: Network, constants: Constants) -> Network | None:
    """``net`` with the given sparsity penalty; None where it has no sigmoid code layer."""
    if not constants.sparsity_weight:
        return net
    if not (net.code_layer and net.activation[net.code_layer - 1] == "sigmoid"):
        return None
    return replace(net, sparsity_weight=constants.sparsity_weight,
                   sparsity_target=constants.sparsity_target)


def _decays(net: Network, constants: Constants, m: int, values: _Values, rest: float | None
            ) -> Iterator[Network]:
    """``net`` with each decay form the constants allow: none; lambda given, in every form
    (``lambda/2`` or ``lambda``, with or without 1/m, biases excluded or included); or, with
    ``rest`` (the value less the rest of the loss), the lambda that makes up ``rest``."""
    mean = net.reduction == "mean"
    if rest is not None:
        squares = float(values.weights[0])
        if rest >= 0 and squares > 0:
            yield replace(net, weight_decay=2 * rest / squares * (m if mean else 1),
                          decay_half=True, decay_mean=mean, decay_biases=False)
        return
    if not constants.weight_decay:
        yield net
        return
    for half, per_m, biases in itertools.product(
            (True, False), (mean, not mean), (False, True) if net.bias else (False,)):
        yield replace(net, weight_decay=constants.weight_decay, decay_half=half,
                      decay_mean=per_m, decay_biases=biases)


def _brief(net: Network) -> str:
    """A member in a few words: what a loss value may leave open."""
    loss = {"squared": f"{'1/2 * ' if net.squared_half else ''}squared error",
            "cross_entropy": "cross-entropy",
            "softmax_cross_entropy": "softmax cross-entropy"}[net.loss_name]
    over_outputs = ", averaged over the outputs" if net.mean_outputs else ""
    text = (f"{'/'.join(dict.fromkeys(net.activation)) or 'no'} hidden, {net.output} output, "
            f"{loss} ({net.reduction}{over_outputs})")
    if net.weight_decay:
        form = "lambda/(2m)" if net.decay_mean else "lambda/2"
        form = form if net.decay_half else form.replace("/(2m)", "/m").replace("/2", "")
        text += f", {form} with lambda = {net.weight_decay:.6g}"
    return text


def _identified(problem: UserProblem, fit: Fit, net: Network, residual: float) -> Identified:
    return Identified(net, fit.layout, residual, _describe(net, fit.layout, problem))


def _distinct(problem: UserProblem, found: list[tuple[Fit, Network, float]]
              ) -> list[Identified]:
    """The members found, once each (two layouts may read the point alike)."""
    out: list[Identified] = []
    for fit, net, residual in found:
        member = _identified(problem, fit, net, residual)
        if not any(_same_reading(problem, member, kept) and kept.network == member.network
                   for kept in out):
            out.append(member)
    return out
