"""The user's loss and gradient, evaluated on one flat buffer, with every misuse caught.

Contract: ``Objective(loss, grad, layout, flat, progress)`` evaluates ``loss`` at the base
point (twice, to see nondeterminism) and the gradient once; afterwards ``value()`` evaluates
the loss at whatever the buffer holds, and the loops ``entries`` / ``directions`` / ``at``
perturb the buffer in place, evaluate, and restore it. The loss always receives the same
object: the user's structure as views into ``buffer`` (built once), so moving one entry costs
one store, not a rebuilt dict.

The buffer is float64 where the loss accepts it and computes with it (a float32 model's loss is
then evaluated more accurately than it could be in float32). It takes a lower precision instead,
with ``fallback`` saying why, when the loss raises on float64 parameters that were float32 (the
buffer takes their own dtype), or when ``detect_rounding`` finds that the loss rounds its float64
argument to a lower precision (a float32 model that casts its parameters): steps and tolerances
sized for float64 would vanish in that rounding, so the buffer holds what the loss really sees.

A loss with a ``moves(positions, start, values)`` method (J at many points, point k being the
base point with ``positions[start[k]:start[k+1]]`` set to those entries of ``values``) is
evaluated through it in ``entries``, ``directions`` and ``at_points``, a chunk of points per
call: a loss that runs in another process (``gradproof.octave``) then pays the crossing once
per chunk, not per point. Its ``moves_chunk`` attribute, where it has one, raises the chunk's
size (``check_vjp`` takes whole requests, to move entries together). An ``InputError`` it
raises passes through unchanged.

Every failure is an ``InputError`` that names the point: the loss raising, returning something
that is not a finite scalar (described: "an array of shape (784,)"), changing its argument in
place, or a gradient with missing / extra / misshapen / non-finite tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from gradproof.errors import InputError
from gradproof.params import ParamLayout
from gradproof.report import Finding

Progress = Callable[[int, int], None]

# Calls to `progress` per check, about: often enough for a progress bar, rarely enough to be free.
_PROGRESS_UPDATES = 200

# Points per call of a batched loss's ``moves``, at least (more when progress is sparser).
_MIN_CHUNK = 64

# Entries moved per call of a batched loss's ``moves`` in ``at_points`` (every entry of each
# point moves): a few points of a large network per call keep the arrays crossing small.
_POINT_ENTRIES = 1 << 22

# ``detect_rounding`` moves every entry by this fraction of its spacing in a lower precision: a
# move that rounding to that precision undoes, and float64 arithmetic does not.
_SUBSPACING = 0.25


class _BadOutput(Exception):
    """The loss returned something that is not a scalar (raised by ``Objective.value``)."""

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output


class Objective:
    """The loss (and gradient) of a params layout, evaluated on a flat buffer.

    Parameters
    ----------
    loss : callable
        ``loss(params) -> float`` or, when ``grad`` is None, ``-> (float, gradient)``.
    grad : callable, gradient structure or None
        ``grad(params) -> gradient``, the gradient itself, or None.
    layout : ParamLayout
        The params' tensors.
    flat : ndarray of shape (layout.size,)
        The base point, float64.
    progress : callable, optional
        ``progress(done, total)`` in loss evaluations.

    Attributes
    ----------
    buffer : ndarray
        The flat buffer the loss sees (float64, or the params' own dtype after a fallback).
    base : ndarray
        The base point in the buffer's dtype (what ``buffer`` holds between evaluations).
    argument : object
        What the loss receives: the user's structure as views into ``buffer``.
    j0, j0_repeat : float
        Two evaluations of the loss at the base point.
    value_eps : float
        Machine epsilon of the loss's arithmetic as far as the types show (buffer and value).
    fallback : str or None
        Why the loss is evaluated in a lower precision than float64 (a clause: "the loss raised
        on a float64 copy (...)").
    evaluations : int
        Loss evaluations so far.
    """

    def __init__(
        self,
        loss: Callable[..., Any],
        grad: Any,
        layout: ParamLayout,
        flat: np.ndarray,
        progress: Progress | None = None,
    ) -> None:
        if not callable(loss):
            raise InputError(
                f"loss must be a callable loss(params) -> float, got {type(loss).__name__}"
            )
        self.layout = layout
        self._loss = loss
        self._moves = getattr(loss, "moves", None)
        self._chunk = max(_MIN_CHUNK, getattr(loss, "moves_chunk", _MIN_CHUNK))
        self._grad = grad
        self._flat64 = flat
        self._progress = progress
        self.evaluations = 0
        self.planned = 0
        self._stride = 1
        self.fallback: str | None = None
        self.gradient_names: dict[str, str] = {}  # set by gradient()
        own = np.result_type(*(spec.dtype for spec in layout.specs), np.float16)
        self._own_dtype = own if own.kind == "f" and own.itemsize < 8 else None
        output = self._first_call()
        self._read, self._value_dtype = _reader(output, pair=grad is None)
        self._first_output = output
        self.j0 = self._at_base(self._read(output), "at the given parameters")
        self.j0_repeat = self._at_base(
            self.evaluate("at the given parameters"), "at the given parameters"
        )
        self.value_eps = self._value_eps()

    def _value_eps(self) -> float:
        return max(float(np.finfo(self.buffer.dtype).eps), _eps(self._value_dtype))

    # ------------------------------------------------------------------ setup

    def _use(self, dtype: np.dtype) -> None:
        self.buffer = self._flat64.astype(dtype)
        self.base = self.buffer.copy()
        self.argument = self.layout.structure(self.buffer)
        self._leaves = self.layout.leaves(self.argument)

    def _first_call(self) -> Any:
        self._use(np.dtype(np.float64))
        try:
            output = self._call()
        except Exception as exc:
            if self._own_dtype is None:
                raise _loss_raised(exc, "at the given parameters") from exc
            self.fallback = f"the loss raised on a float64 copy ({type(exc).__name__}: {exc})"
            self._use(self._own_dtype)
            try:
                output = self._call()
            except Exception as exc32:
                raise _loss_raised(exc32, "at the given parameters") from exc32
        self.check_unchanged("the loss")
        return output

    def detect_rounding(self, candidates: list[np.dtype], rng: np.random.Generator) -> None:
        """Switch the buffer to the coarsest of ``candidates`` the loss rounds its argument to.

        For each candidate precision, finest first, every entry is moved off the base point
        (rounded to that precision) by a quarter of its spacing there, once each way with
        random signs: rounding to that precision (or coarser) undoes both moves, so a
        deterministic loss that rounds returns J(θ) bit for bit at both points, while one that
        computes with float64 parameters changes by about ±g·d, which float64 resolves unless
        the loss is flat to within its rounding along the move (then the coarser buffer is the
        cautious choice). Two evaluations per candidate; nothing is decided for a loss that
        already runs in a lower precision or is nondeterministic (its noise is measured
        instead).
        """
        if self.buffer.dtype != np.float64 or self.j0 != self.j0_repeat or not self.layout.size:
            return
        rounded: np.dtype | None = None
        for dtype in sorted(set(candidates), key=lambda d: -np.finfo(d).nmant):
            with np.errstate(over="ignore"):
                grid = self._flat64.astype(dtype)
            if not np.all(np.isfinite(grid)):
                break  # params beyond its range: the loss cannot be rounding to it
            spacing = np.spacing(np.abs(grid)).astype(np.float64)
            move = _SUBSPACING * spacing * rng.choice((-1.0, 1.0), size=grid.size)
            center = grid.astype(np.float64)
            where = f"with every entry moved by a quarter of its {dtype} spacing"
            moved = (self.at(slice(None), center + sign * move, where) for sign in (1, -1))
            if any(value != self.j0 for value in moved):
                break
            rounded = dtype
        if rounded is None:
            return
        self.fallback = (
            f"the loss rounds a float64 copy to {rounded} (moving every entry by a quarter of "
            f"its {rounded} spacing left the loss's value unchanged)"
        )
        self._use(rounded)
        self.value_eps = self._value_eps()
        if not np.array_equal(self.base, self._flat64):
            # The base point itself was rounded: J there is what the loss sees from now on.
            where = "at the given parameters rounded to " + str(rounded)
            self.j0 = self.j0_repeat = self._at_base(self.evaluate(where), where)

    def _call(self) -> Any:
        self.evaluations += 1
        return self._loss(self.argument)

    def _at_base(self, value: float, where: str) -> float:
        if not math.isfinite(value):
            raise InputError(f"the loss returned {value} {where}; it must be a finite scalar")
        return value

    def evaluate(self, where: str) -> float:
        """The loss at what the buffer holds now; ``where`` names the point in errors."""
        try:
            return self.value()
        except Exception as exc:
            raise _evaluation_failed(exc, where)

    # ---------------------------------------------------------------- gradient

    def gradient(
        self,
    ) -> tuple[dict[str, np.ndarray], list[str], dict[str, np.dtype], list[Finding]]:
        """The analytic gradient at the base point, matched to the tensors.

        Returns what ``ParamLayout.match_gradient`` returns: float64 tensors of the parameters'
        shapes, the names whose gradient had the transposed shape, the gradients' dtypes and
        the notes on shapes compared by value.
        """
        if self._grad is None:
            raw = self._first_output[1]
        elif callable(self._grad):
            raw = self._call_grad()
        else:
            raw = self._grad
        self.gradient_names = self.layout.gradient_names(raw)  # dW1 for W1: the user's words
        return self.layout.match_gradient(raw)

    def _call_grad(self) -> Any:
        try:
            raw = self._grad(self.argument)
        except Exception as exc:
            if self._own_dtype is None or self.buffer.dtype != np.float64:
                raise _raised("the gradient function", exc, "at the given parameters") from exc
            # The gradient code may insist on the params' own dtype even where the loss did not.
            own = self.layout.structure(self._flat64.astype(self._own_dtype))
            try:
                raw = self._grad(own)
            except Exception as exc32:
                raise _raised("the gradient function", exc32, "at the given parameters") from exc32
        self.check_unchanged("the gradient function")
        return raw

    # ------------------------------------------------------------ evaluation

    def value(self) -> float:
        """The loss at what the buffer holds now (may raise the loss's own exception)."""
        output = self._loss(self.argument)
        self.evaluations += 1
        try:
            return self._read(output)
        except Exception:
            raise _BadOutput(output) from None

    def plan(self, evaluations: int) -> None:
        """Announce ``evaluations`` more loss evaluations (for ``progress``)."""
        self.planned += evaluations
        self._stride = max(1, self.planned // _PROGRESS_UPDATES)

    def report_progress(self) -> None:
        if self._progress is not None:
            self._progress(self.evaluations, max(self.planned, self.evaluations))

    def entries(
        self,
        positions: np.ndarray,
        plus: np.ndarray,
        minus: np.ndarray,
        out_plus: np.ndarray,
        out_minus: np.ndarray,
        where: Callable[[int, float], str],
    ) -> None:
        """J with one entry at a time moved to ``plus[k]`` then ``minus[k]``, into ``out_*[k]``.

        ``where(k, sign)`` describes the point of probe k on side ``sign`` for error messages.

        The tight loop of a full check: two stores and two loss calls per entry. On an interrupt
        the arrays keep what was done (NaN elsewhere) and the buffer is restored.
        """
        if self._moves is not None:
            steps = np.arange(positions.size + 1)
            self._batched(positions, steps, plus, minus, out_plus, out_minus, where)
            return
        buffer, value, progress = self.buffer, self.value, self._progress is not None
        indices, ups, downs = positions.tolist(), plus.tolist(), minus.tolist()
        originals = self.base[positions].tolist()
        stride, k, sign = self._stride, 0, 1.0
        try:
            for k, i in enumerate(indices):
                sign = 1.0
                buffer[i] = ups[k]
                out_plus[k] = value()
                sign = -1.0
                buffer[i] = downs[k]
                out_minus[k] = value()
                buffer[i] = originals[k]
                if progress and k % stride == 0:
                    self.report_progress()
        except Exception as exc:
            raise _evaluation_failed(exc, where(k, sign))
        finally:
            if indices:
                buffer[indices[k]] = originals[k]
        self._finish(out_plus, out_minus, where)

    def directions(
        self,
        positions: np.ndarray,
        start: np.ndarray,
        plus: np.ndarray,
        minus: np.ndarray,
        out_plus: np.ndarray,
        out_minus: np.ndarray,
        where: Callable[[int, float], str],
    ) -> None:
        """J with the entries of probe k (``positions[start[k]:start[k+1]]``) moved together."""
        if self._moves is not None:
            self._batched(positions, start, plus, minus, out_plus, out_minus, where)
            return
        buffer, value, stride = self.buffer, self.value, self._stride
        # Gathered once: putting a probe's entries back is then one scatter, not a gather too
        # (a column of the seed network's weights is 784 entries 200 apart).
        originals = self.base[positions]
        bounds = start.tolist()
        k, sign = 0, 1.0
        support, piece = positions[:0], slice(0, 0)
        try:
            for k in range(len(bounds) - 1):
                piece = slice(bounds[k], bounds[k + 1])
                support = positions[piece]
                sign = 1.0
                buffer[support] = plus[piece]
                out_plus[k] = value()
                sign = -1.0
                buffer[support] = minus[piece]
                out_minus[k] = value()
                buffer[support] = originals[piece]
                if k % stride == 0:
                    self.report_progress()
        except Exception as exc:
            raise _evaluation_failed(exc, where(k, sign))
        finally:
            buffer[support] = originals[piece]
        self._finish(out_plus, out_minus, where)

    def _batched(
        self,
        positions: np.ndarray,
        start: np.ndarray,
        plus: np.ndarray,
        minus: np.ndarray,
        out_plus: np.ndarray,
        out_minus: np.ndarray,
        where: Callable[[int, float], str],
    ) -> None:
        """``entries`` / ``directions`` through the loss's ``moves``, a chunk of probes at a
        time (both sides of a probe in one call)."""
        count = out_plus.size
        chunk = max(self._stride, self._chunk)
        for first in range(0, count, chunk):
            last = min(first + chunk, count)
            piece = slice(int(start[first]), int(start[last]))
            bounds = start[first : last + 1] - start[first]
            both = np.concatenate((bounds, bounds[1:] + bounds[-1]))
            try:
                values = self._moves(
                    np.concatenate((positions[piece], positions[piece])),
                    both,
                    np.concatenate((plus[piece], minus[piece])),
                )
            except InputError:
                raise
            except Exception as exc:
                raise _evaluation_failed(exc, where(first, 1.0))
            out_plus[first:last] = values[: last - first]
            out_minus[first:last] = values[last - first :]
            self.evaluations += 2 * (last - first)
            self.report_progress()
        self._finish(out_plus, out_minus, where)

    def at(self, positions: np.ndarray | slice, values: np.ndarray, where: str) -> float:
        """J with ``buffer[positions] = values``; a non-finite value is returned, not raised.

        ``slice(None)`` moves every entry (a copy, where an index array of them all would
        gather and scatter)."""
        try:
            self.buffer[positions] = values
            return self.value()
        except Exception as exc:
            raise _evaluation_failed(exc, where)
        finally:
            self.buffer[positions] = self.base[positions]

    def at_points(
        self, count: int, point: Callable[[int], np.ndarray], where: Callable[[int], str]
    ) -> np.ndarray:
        """J at ``point(k)`` (every entry moved) for k < ``count``, as ``at`` gives them one by
        one; non-finite values are returned, not raised.

        A loss with ``moves`` gets the points together, ``_POINT_ENTRIES`` moved entries per
        call: a loss in another process pays one crossing for the lot, not one per point.
        Otherwise each point is built when it is evaluated, so that no more than one is held.
        """
        if self._moves is None:
            return np.array([self.at(slice(None), point(k), where(k)) for k in range(count)])
        size = self.buffer.size
        per_call = max(1, _POINT_ENTRIES // max(size, 1))
        out = np.empty(count)
        for first in range(0, count, per_call):
            last = min(first + per_call, count)
            try:
                out[first:last] = self._moves(
                    np.tile(np.arange(size), last - first),
                    np.arange(last - first + 1) * size,
                    np.concatenate([point(k) for k in range(first, last)]),
                )
            except InputError:
                raise
            except Exception as exc:
                raise _evaluation_failed(exc, where(first))
            self.evaluations += last - first
        return out

    def _finish(
        self, out_plus: np.ndarray, out_minus: np.ndarray, where: Callable[[int, float], str]
    ) -> None:
        """After a loop: no in-place change, progress shown, every value finite."""
        self.check_unchanged("the loss")
        self.report_progress()
        for values, sign in ((out_plus, 1.0), (out_minus, -1.0)):
            bad = ~np.isfinite(values)
            if bad.any():
                k = int(np.argmax(bad))
                raise InputError(
                    f"the loss returned {values[k]} {where(k, sign)}; it must stay finite near "
                    "the parameters (a log or division overflowing at this point?)"
                )

    # ---------------------------------------------------------------- checks

    def check_unchanged(self, who: str) -> None:
        """InputError if the loss (or gradient function) changed its params argument in place."""
        # Nothing changed, the common case, is seen in one pass without an index array.
        if not np.array_equal(self.buffer, self.base):
            changed = np.flatnonzero(self.buffer != self.base)
            position = int(changed[0])
            raise InputError(
                f"{who} changed its params argument in place: {self.layout.label(position)} was "
                f"{float(self.base[position])!r} and became {float(self.buffer[position])!r} "
                f"({changed.size} entries changed); it must not modify params (work on a copy)"
            )
        leaves = self.layout.leaves(self.argument)
        for spec, mine, now in zip(self.layout.specs, self._leaves, leaves):
            if now is not mine:
                raise InputError(
                    f"{who} replaced or removed {spec.name} inside its params argument; it must "
                    "not modify params (work on a copy)"
                )


def describe(value: Any) -> str:
    """A short description of a value: "an array of shape (784,)", "None", "a tuple of 2 items"."""
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, (complex, np.complexfloating)):
        return f"a complex number ({value})"
    if hasattr(value, "shape"):
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    return f"a {type(value).__name__} ({value!r:.60})"


def _reader(output: Any, *, pair: bool) -> tuple[Callable[[Any], float], np.dtype | None]:
    """A fast function from the loss's output to a float, and the value's dtype.

    Checked once on the first output; ``value()`` turns any later failure into ``_BadOutput``.
    """
    if pair:
        if not (isinstance(output, (tuple, list)) and len(output) == 2):
            raise InputError(
                "with grad=None the loss must return (value, gradient); it returned "
                f"{describe(output)}"
            )
        read_value, dtype = _scalar_reader(output[0])
        return (lambda out: read_value(out[0])), dtype
    if isinstance(output, (tuple, list)) and len(output) == 2:
        # A loss that also returns its gradient: the value is what is differentiated.
        read_value, dtype = _scalar_reader(output[0])
        return (lambda out: read_value(out[0])), dtype
    return _scalar_reader(output)


def _scalar_reader(value: Any) -> tuple[Callable[[Any], float], np.dtype | None]:
    array = np.asarray(value) if not isinstance(value, (str, bytes)) else None
    if (
        array is None
        or isinstance(value, (bool, np.bool_))
        or array.dtype.kind not in "fiu"
        or array.size != 1
    ):
        raise _not_scalar(value, "at the given parameters")
    dtype = array.dtype if array.dtype.kind == "f" else None
    if array.ndim == 0:
        return float, dtype
    # A 1x1 result (MATLAB style): take its only entry.
    return (
        lambda out: float(np.asarray(out).reshape(-1)[0]) if np.size(out) == 1 else float(out)
    ), dtype


def _eps(dtype: np.dtype | None) -> float:
    return float(np.finfo(dtype).eps) if dtype is not None else 0.0


def _not_scalar(output: Any, where: str) -> InputError:
    hint = ""
    if isinstance(output, np.ndarray) and output.size > 1:
        hint = (
            " (a sum over one axis only? MATLAB's sum of a matrix is a row vector: use sum(x(:)); "
            "in numpy, np.sum(x) without axis)"
        )
    return InputError(
        f"the loss must return a finite scalar; {where} it returned {describe(output)}{hint}"
    )


def _evaluation_failed(exc: Exception, where: str) -> InputError:
    """The error for a loss evaluation that raised ``exc`` ``where``, its cause already set.

    A ``_BadOutput`` is gradproof's own signal, so it is hidden (as ``raise ... from None``);
    the loss's own exception stays the cause (as ``raise ... from exc``). One place for what
    every evaluation loop catches; it runs only on failure, never in the loops' hot path.
    """
    if isinstance(exc, _BadOutput):
        error = _not_scalar(exc.output, where)
        error.__cause__ = None  # also sets __suppress_context__, as `from None` does
    else:
        error = _loss_raised(exc, where)
        error.__cause__ = exc
    return error


def _loss_raised(exc: Exception, where: str) -> InputError:
    return _raised("the loss", exc, where)


def _raised(who: str, exc: Exception, where: str) -> InputError:
    return InputError(f"{who} raised {type(exc).__name__}: {exc} {where}")
