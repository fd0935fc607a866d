"""Which member of the ``Network`` family computes the user's own loss.

Contract: ``identify(loss, params, x, y) -> Identification``. The user's loss is evaluated at
the given point and at a few seeded random points near it (``POINTS`` in all); for every
layout under which the parameters' and the data's shapes form a network
(``layouts.fit_layouts``) and every discrete option of the family (hidden and output
activations, the loss and its 1/2, sum or mean, labels 0- or 1-based or one-hot targets),
the data term is evaluated at the same points, and the constants that enter linearly
(lambda of the weight decay, with or without the biases; beta of the sparsity penalty, with
rho found by a grid and a bounded 1-D search) are solved from the residual by least squares.
A member is identified when its loss equals the user's to rounding at every point.

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
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from gradproof.errors import InputError
from gradproof.layouts import Fit, Layout, examples_as_rows, fit_layouts, from_canonical, to_canonical
from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.losses import kl_divergence
from gradproof.nn.autoencoder import ForwardCache
from gradproof.nn.network import DATA_TERMS, Network
from gradproof.nn.softmax import softmax_cross_entropy
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

# Candidate sparsity targets, refined by a bounded search around the best.
_RHO_GRID = np.unique(np.concatenate([np.geomspace(1e-3, 0.5, 24), np.linspace(0.5, 0.99, 12)]))

# The data terms: (output, loss_name), the most common first.
_OUTPUTS: tuple[tuple[str, str], ...] = (
    ("sigmoid", "cross_entropy"), ("softmax", "softmax_cross_entropy"),
    *((name, "squared") for name in ACTIVATIONS),
)


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
    """

    network: Network
    layout: Layout
    residual: float
    description: str

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
    problem = UserProblem(loss, layout, flat, structure, fit_shapes, data, y, dtype)
    problem.points = _user_points(problem, params)
    return problem


def _user_points(problem: UserProblem, params: Any) -> list[UserPoint]:
    """The given point (evaluated twice: a loss must repeat itself) and seeded points near it,
    asked for together; a point where the loss is not finite is asked again nearer."""
    rng = np.random.default_rng(0)
    scale = np.empty_like(problem.flat)
    whole = float(np.sqrt(np.mean(problem.flat**2))) or 0.1
    for spec in problem.layout.specs:
        rms = float(np.sqrt(np.mean(problem.flat[spec.span] ** 2))) if spec.size else 0.0
        scale[spec.span] = rms if rms > 0 else whole
    moves = [(move, rng.standard_normal(problem.flat.size) * scale)
             for move in _MOVE[: POINTS - 1]]

    def near(i: int, shrink: float) -> Any:
        move, noise = moves[i]
        flat = problem.flat + move * shrink * noise
        return problem.layout.structure(flat.astype(problem.dtype))

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
    """The data term's factor: the loss's 1/2 and its reduction."""

    squared_half: bool
    reduction: str

    def factor(self, loss_name: str, m: int) -> float:
        # The base candidate's squared error already carries 1/2.
        value = 1.0 if loss_name != "squared" or self.squared_half else 2.0
        return value / m if self.reduction == "mean" else value


def _scales(loss_name: str) -> tuple[_Scale, ...]:
    halves = (True, False) if loss_name == "squared" else (True,)
    return tuple(_Scale(half, red) for red in ("mean", "sum") for half in halves)


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


def _hidden(fit: Fit) -> tuple[str, ...]:
    return tuple(ACTIVATIONS) if len(fit.layers) > 2 else ("sigmoid",)


def _data_candidates(fit: Fit, y: Any, m: int) -> Iterator[_DataCandidate]:
    options = fit.network_options()
    for (target, base, y_read), hidden, (output, loss_name) in itertools.product(
        _targets(fit, y, m), _hidden(fit), _OUTPUTS
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


def _forms(net: Network) -> tuple[_Penalty, ...]:
    decays: tuple[bool | None, ...] = (None, False, True) if net.bias else (None, False)
    sparse = (False, True) if net.code_layer and net.activation[net.code_layer - 1] == "sigmoid" \
        else (False,)
    return tuple(_Penalty(d, s) for s in sparse for d in decays)


@dataclass
class _Values:
    """A candidate's pieces at every point: data term, squared weights and biases, code means."""

    data: np.ndarray  # (points,)
    weights: np.ndarray
    biases: np.ndarray
    code_means: list[np.ndarray] | None


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

    def smooth(rho: float) -> float:
        # the least-squares misfit, smooth in rho where the worst point's is not
        columns = _penalty_columns(values, form, rho)
        return float(np.linalg.norm((residual - columns @ _solve(residual, columns)) / tol))

    rho = 0.05
    if form.sparsity:
        best = int(np.argmin([smooth(r) for r in _RHO_GRID]))
        lo, hi = _RHO_GRID[max(best - 1, 0)], _RHO_GRID[min(best + 1, len(_RHO_GRID) - 1)]
        refined = float(minimize_scalar(smooth, bounds=(lo, hi), method="bounded",
                                        options={"xatol": 1e-13}).x)
        # the search never returns a bound itself, where a grid point may be exact
        rho = min((refined, float(_RHO_GRID[best])), key=smooth)
    score, coef = misfit(rho)
    coef = list(coef)
    kappa = coef.pop(0) if form.decay_biases is not None else 0.0
    beta = coef.pop(0) if form.sparsity else 0.0
    return replace(form, kappa=float(kappa), beta=float(beta), rho=rho), score


class _Forwards:
    """The hidden layers' forward pass at each point, once per hidden activation: every
    output and loss of a candidate reads the same output pre-activation."""

    def __init__(self, fit: Fit, canonical: list[Params], x: np.ndarray) -> None:
        self._options = fit.network_options()
        self._canonical = canonical
        self._x = Network(**self._options, target="one_hot").validate_input(x)
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

    def at(self, net: Network, point: int) -> ForwardCache:
        key = (net.activation, point)
        if key not in self._cache:
            linear = Network(**self._options, activation=net.activation, output="identity",
                             target="one_hot")
            self._cache[key] = linear.forward(self._canonical[point], self._x)[1]
        return self._cache[key]


def _data_term(net: Network, cache: ForwardCache, t: np.ndarray) -> float:
    """``net``'s data term (squared error with its 1/2, summed) from the shared forward pass."""
    s = cache.pre_activations[-1]  # (m, layers[-1]), the output's pre-activation
    if net.output == "softmax":
        return softmax_cross_entropy(t, s)[0]
    activation = ACTIVATIONS[net.output]
    return DATA_TERMS[net.loss_name](t, activation.forward(s), s, activation)[0]


def _values(candidate: _DataCandidate, forwards: _Forwards, canonical: list[Params],
            first_only: bool = False) -> _Values:
    net = candidate.net
    t = net.targets(forwards.x, candidate.y)  # InputError for labels this reading cannot hold
    points = range(1 if first_only else len(canonical))
    caches = [forwards.at(net, i) for i in points]
    data = np.array([_data_term(net, cache, t) for cache in caches])
    weights = forwards.squares("W")[: len(points)]
    biases = forwards.squares("b")[: len(points)]
    code_means = None
    if net.code_layer and net.activation[net.code_layer - 1] == "sigmoid":
        code_means = [cache.activations[net.code_layer].mean(axis=0) for cache in caches]
    return _Values(data, weights, biases, code_means)


# -------------------------------------------------------------------------- identification


@dataclass
class _Best:
    score: float = math.inf
    text: str = ""


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
    for fit in fits:
        found, count = _identify_fit(problem, fit, best)
        tried += count
        if found is not None and not any(_same_reading(problem, found, m) for m in matches):
            matches.append(found)
    if len(matches) > 1:
        _ambiguous([m.layout for m in matches])
    if matches:
        return Identification(matches[0], tried=tried)
    return Identification(None, best.text or "no candidate could be evaluated", tried)


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


def _identify_fit(problem: UserProblem, fit: Fit, best: _Best
                  ) -> tuple[Identified | None, int]:
    x_rows = examples_as_rows(fit.layout, problem.x)
    m = x_rows.shape[0]
    structural = Network(**fit.network_options(), target="one_hot")
    canonical = [to_canonical(fit.layout, structural, p.params) for p in problem.points]
    forwards = _Forwards(fit, canonical, x_rows)
    user = np.array([p.value for p in problem.points])
    rtol = RTOL[problem.dtype]
    tried = 0
    for candidate in _data_candidates(fit, problem.y, m):
        tried += 1
        try:
            first = _values(candidate, forwards, canonical, first_only=True)
        except InputError:
            continue  # labels this reading cannot hold: checked for the user in _check_labels
        scales = [s for s in _scales(candidate.net.loss_name)
                  if user[0] - s.factor(candidate.net.loss_name, m) * first.data[0]
                  >= -rtol * (abs(user[0]) + 1e-300)]
        if not scales:
            continue  # its data term alone exceeds the user's loss
        values = _values(candidate, forwards, canonical)
        for scale in scales:
            data = scale.factor(candidate.net.loss_name, m) * values.data
            tol = rtol * (np.abs(user) + np.abs(data)) + 1e-300
            for form in _forms(candidate.net):
                fitted, score = _fit_penalty(user - data, values, form, tol)
                if score <= 1.0:
                    found = _confirm(problem, fit, candidate, scale, fitted, x_rows)
                    if found is not None:
                        return found, tried
                if score * rtol < best.score:
                    best.score = score * rtol
                    best.text = (f"closest: {_describe(_network(candidate, scale, fitted, m), fit.layout, problem)}; "
                                 f"rejected because its loss differs from yours by "
                                 f"{score * rtol:.2g} relative at one of the {len(user)} points")
    return None, tried


def _network(candidate: _DataCandidate, scale: _Scale, penalty: _Penalty, m: int) -> Network:
    mean = scale.reduction == "mean"
    # kappa = lambda * 1/2 * (1/m with the loss's own mean)
    lam = 2.0 * penalty.kappa * (m if mean else 1.0)
    return replace(candidate.net, squared_half=scale.squared_half, reduction=scale.reduction,
                   weight_decay=lam, decay_half=True, decay_mean=mean,
                   decay_biases=bool(penalty.decay_biases), sparsity_weight=penalty.beta,
                   sparsity_target=penalty.rho)


def _confirm(problem: UserProblem, fit: Fit, candidate: _DataCandidate, scale: _Scale,
             penalty: _Penalty, x_rows: np.ndarray) -> Identified | None:
    """The network rebuilt from the fitted constants, rounded to 6 digits where that still
    fits, and its loss compared with the user's at every point."""
    m = x_rows.shape[0]
    rtol = RTOL[problem.dtype]
    exact = _network(candidate, scale, penalty, m)
    rounded = replace(exact, weight_decay=_round(exact.weight_decay),
                      sparsity_weight=_round(exact.sparsity_weight),
                      sparsity_target=_round(exact.sparsity_target))
    for net in (rounded, exact):
        residual = _residual(problem, fit.layout, net)
        if residual <= rtol * 2:
            return Identified(net, fit.layout, residual, _describe(net, fit.layout, problem))
    return None


def _residual(problem: UserProblem, layout: Layout, net: Network) -> float:
    """The largest relative difference between ``net``'s loss and the user's over the points
    (inf where the network cannot read the parameters or the targets)."""
    worst = 0.0
    for point in problem.points:
        try:
            params, x_rows, y = _canonical(layout, net, problem, point.params)
            value = net.loss(params, x_rows, y)
        except InputError:
            return math.inf
        worst = max(worst, abs(value - point.value) / max(abs(point.value), 1e-300))
    return worst


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


def _decay_text(net: Network, layout: Layout, flat_names: Sequence[str] | None) -> str:
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


def _describe(net: Network, layout: Layout, problem: UserProblem | None) -> str:
    m = "m" if problem is None else str(problem.x.shape[0 if layout.examples == "rows" else 1])
    layers = "-".join(str(n) for n in net.layers)
    hidden = f"{net.activation[0]} hidden, " if net.activation else ""
    k = net.layers[-1]
    if net.loss_name == "squared":
        data = f"{'1/2 * ' if net.squared_half else ''}squared error summed over the {k} outputs"
    elif net.loss_name == "cross_entropy":
        data = f"cross-entropy summed over the {k} outputs"
    else:
        data = f"softmax cross-entropy over {k} classes"
    data += (f" and averaged over {m} examples" if net.reduction == "mean"
             else f" and summed over {m} examples")
    target = {"input": "reconstructing its input",
              "labels": f"labels {net.label_base}..{net.label_base + max(k, 2) - 1}",
              "one_hot": "targets as rows of y"}[net.target]
    text = (f"{layers}, {hidden}{net.output} output, {data}, {target}, "
            f"{_decay_text(net, layout, None if problem is None else flat_names(problem))}")
    if net.sparsity_weight:
        text += (f", KL sparsity beta = {net.sparsity_weight:.6g} with rho = "
                 f"{net.sparsity_target:.6g}")
    if net.tied:
        text += ", tied weights"
    return f"{text}; {layout.describe()}"


def flat_names(problem: UserProblem) -> Sequence[str] | None:
    """The names of a flat vector's tensors (``shapes=``'s keys), else None."""
    return problem.layout.names if problem.structure == "flat" else None


def _shapes_text(problem: UserProblem) -> str:
    shapes = problem.fit_shapes
    items = shapes.items() if isinstance(shapes, Mapping) else enumerate(shapes)
    return ", ".join(f"{name}: {'x'.join(map(str, shape))}" for name, shape in items)


def canonical_point(identified: Identified, problem: UserProblem, params: Any
                    ) -> tuple[Params, np.ndarray, Any]:
    """The user's point, data and targets as the identified network reads them."""
    return _canonical(identified.layout, identified.network, problem, params)


def _canonical(layout: Layout, net: Network, problem: UserProblem, params: Any
               ) -> tuple[Params, np.ndarray, Any]:
    x_rows = examples_as_rows(layout, problem.x)
    y = problem.y
    if net.target == "one_hot":
        arr = np.asarray(y)
        y = arr if arr.shape == (x_rows.shape[0], net.layers[-1]) else arr.T
    elif net.target == "labels":
        y = np.asarray(y).reshape(-1)
    return to_canonical(layout, net, params), x_rows, y


def user_gradient(identified: Identified, grads: Params) -> Any:
    """The network's gradient in the user's structure."""
    return from_canonical(identified.layout, identified.network, grads)
