"""Entries of a layer's inputs whose outputs do not overlap, moved together in one forward call.

Contract: ``Footprints.discover(forward, base, rng) -> Footprints`` looks at which outputs each
slice of an input moves (``forward`` from that input's array to the layer's outputs, flattened
and concatenated), and ``footprints.evaluate(forward, base, points, weights)`` returns, for each
point (one entry moved to a value), ``sum(weights * (forward(point) - forward(base)))`` with
far fewer forward calls than points.

Why it is sound: the entries of a slice (all entries with index i along axis p) move the outputs
in the slice's footprint, measured by moving the whole slice; an entry moves no output outside
the footprint of any slice that holds it. The slices of an axis move in two halves per bit of
their index (2 log2(n) calls) when each output is moved by one slice at most (a row of x in
``x @ w``), else one at a time (up to ``GREEDY_SLICES`` of them; a longer axis of overlapping
slices separates no entries). Slices of one axis are coloured so that
slices of one colour have disjoint footprints; two entries with the same colour on every axis
differ along some axis, in two slices of one colour, so their footprints are disjoint: entries
of one such group move together in one call, and each changed output is credited to the one
entry whose slices all hold it (Curtis, Powell and Reid's grouping, with the sparsity found by
moving slices rather than given). For an affine layer ``x @ w + b`` a row of x moves one row of
the output and a column of w one column, so 64 + 64 + 1 groups cover its 10,368 entries.

The grouping is checked at every call: an output that changed where no moved entry's slices
hold it (a dependence the slice moves missed, at a kink say) sends the group's points back to
one forward call each. Only the weighted change is read, so an output with zero weight is never
credited, and needs no footprint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gradproof.errors import InputError

# Slices move by this fraction of (1 + |entry|): far above a finite-difference step, so that an
# output the steps could move (past a nearby kink, say) moves here too.
SLICE_MOVE = 1e-3

# An input is grouped only when its single-entry points outnumber its slices by this factor:
# finding the footprints costs up to one forward call per slice.
WORTHWHILE = 2

# Axes whose slices overlap are coloured slice by slice (one call each) up to this many slices;
# longer ones get a colour per slice (they separate no entries).
GREEDY_SLICES = 16

# The footprint tables hold at most slices x outputs integers (8 bytes each): this many.
MAX_CELLS = 2**24

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass
class Footprints:
    """One input's slice colours and, per axis and colour, which slice holds each output.

    Attributes
    ----------
    shape : tuple of int
        The input's shape.
    colours : list of ndarray
        Per axis, each slice's colour (slices of one colour move disjoint outputs).
    holders : list of ndarray
        Per axis, an int array (colours, outputs): the slice of that colour whose footprint
        holds the output, -1 for none.
    """

    shape: tuple[int, ...]
    colours: list[np.ndarray]
    holders: list[np.ndarray]
    _owners: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def discover(cls, forward: Forward, base: np.ndarray, rng: np.random.Generator) -> Footprints:
        """Colour the slices of ``base`` along each axis by the outputs they move."""
        out0 = forward(base)

        def moves(axis: int, chosen: np.ndarray) -> np.ndarray:
            """Which outputs change when the slices ``chosen`` (bool, along ``axis``) move."""
            shape = [1] * base.ndim
            shape[axis] = base.shape[axis]
            signs = rng.choice([-1.0, 1.0], size=base.shape) * chosen.reshape(shape)
            # NaN != anything: an output that stopped being finite counts as moved.
            return forward(base + signs * SLICE_MOVE * (1.0 + np.abs(base))) != out0

        colours, holders = [], []
        for axis, count in enumerate(base.shape):
            found = _disjoint(moves, axis, count, out0.size)
            if found is None:
                found = _greedy(moves, axis, count, out0.size) if count <= GREEDY_SLICES else (
                    np.arange(count), np.repeat(np.arange(count)[:, None], out0.size, axis=1)
                )
            colours.append(found[0])
            holders.append(found[1])
        return cls(tuple(base.shape), colours, holders)

    @property
    def groups(self) -> int:
        """How many forward calls move each entry once."""
        return int(np.prod([h.shape[0] for h in self.holders]))

    def key(self, local: np.ndarray) -> np.ndarray:
        """Each entry's group (flat C-order indices in, one int per entry out)."""
        index = np.unravel_index(local, self.shape)
        counts = [h.shape[0] for h in self.holders]
        return np.ravel_multi_index(
            tuple(c[i] for c, i in zip(self.colours, index)), counts
        ) if counts else np.zeros(local.size, dtype=np.intp)

    def owners(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """The outputs some entry of ``group`` can move, and per such output the entry (flat
        index) whose slices all hold it."""
        if group not in self._owners:
            colour = np.unravel_index(group, [h.shape[0] for h in self.holders])
            index = [h[c] for h, c in zip(self.holders, colour)]
            held = np.flatnonzero(np.all([i >= 0 for i in index], axis=0))
            entry = np.ravel_multi_index(tuple(i[held] for i in index), self.shape)
            self._owners[group] = (held, entry)
        return self._owners[group]


Moves = Callable[[int, np.ndarray], np.ndarray]


def _disjoint(
    moves: Moves, axis: int, count: int, outputs: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """One colour for every slice, when each output is moved by one slice at most: found in
    2 log2(count) calls, moving the slices whose index has bit b set, then the others. An
    output moved both times is moved by two slices: None."""
    if count == 1:
        return np.zeros(1, dtype=np.intp), np.zeros((1, outputs), dtype=np.intp)
    index = np.arange(count)
    code = np.zeros(outputs, dtype=np.intp)
    moved = np.zeros(outputs, dtype=bool)
    for bit in range(int(count - 1).bit_length()):
        chosen = (index >> bit) & 1 == 1
        on, off = moves(axis, chosen), moves(axis, ~chosen)
        if np.any(on & off):
            return None
        code |= on.astype(np.intp) << bit
        moved |= on | off
    return np.zeros(count, dtype=np.intp), np.where(moved, code, -1)[None, :]


def _greedy(moves: Moves, axis: int, count: int, outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """Slices moved one at a time, each given the first colour whose outputs it does not move
    (a convolution's rows: row i moves output rows i-1 to i+1, so rows 3 apart share one)."""
    colour = np.zeros(count, dtype=np.intp)
    union = np.zeros((count, outputs), dtype=bool)
    held = np.full((count, outputs), -1, dtype=np.intp)
    used = 0
    for i in range(count):
        chosen = np.arange(count) == i
        changed = moves(axis, chosen)
        free = np.flatnonzero(~(union[:used] & changed).any(axis=1))
        c = int(free[0]) if free.size else used
        used = max(used, c + 1)
        union[c] |= changed
        held[c, changed] = i
        colour[i] = c
    return colour, held[:used]


def worthwhile(shape: tuple[int, ...], points: int, outputs: int) -> bool:
    """Whether grouping an input of ``shape`` pays for finding its footprints."""
    slices = sum(shape)
    return len(shape) > 0 and points >= WORTHWHILE * slices and slices * outputs <= MAX_CELLS


def evaluate(
    forward: Forward,
    footprints: Footprints | None,
    base: np.ndarray,
    local: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    out0: np.ndarray,
) -> np.ndarray:
    """``sum(weights * (forward(base with entry local[k] = values[k]) - out0))`` per k, where
    ``out0`` is ``forward(base)``.

    With ``footprints``, the points of one group (at most one per entry) share a forward call;
    without, or where the call shows the grouping does not hold, one call per point.
    """
    flat = base.reshape(-1)

    def alone(k: int) -> float:
        moved = flat.copy()
        moved[local[k]] = values[k]
        return float(np.sum(weights * (forward(moved.reshape(base.shape)) - out0)))

    result = np.empty(local.size)
    if footprints is None:
        for k in range(local.size):
            result[k] = alone(k)
        return result
    keys = footprints.key(local)
    # The points of one entry (its + and - sides, other steps) go into different calls: the
    # n-th point of an entry into its group's n-th call.
    order = np.lexsort((local, keys))
    first = np.ones(local.size, dtype=bool)
    first[1:] = (keys[order][1:] != keys[order][:-1]) | (local[order][1:] != local[order][:-1])
    run = np.maximum.accumulate(np.where(first, np.arange(local.size), 0))
    repeat = np.empty(local.size, dtype=np.intp)
    repeat[order] = np.arange(local.size) - run
    call = keys * (int(repeat.max()) + 1) + repeat
    by_call = np.argsort(call, kind="stable")
    bounds = np.flatnonzero(np.diff(call[by_call])) + 1
    # Per entry, its place among the points of the call at hand (-1: not moved in it).
    slot = np.full(flat.size, -1, dtype=np.intp)
    places = np.arange(local.size)
    work = flat.copy()  # one buffer for every call: fresh arrays cost page faults
    for points in np.split(by_call, bounds):
        where = local[points]
        work[where] = values[points]
        change = forward(work.reshape(base.shape)) - out0
        change *= weights
        work[where] = flat[where]
        held, entry = footprints.owners(int(keys[points[0]]))
        slot[where] = places[: points.size]
        credit = slot[entry]
        slot[where] = -1
        mine = credit >= 0
        credited = change[held][mine]
        # A change no moved entry's slices hold (NaN counts as one): the grouping is wrong here.
        if np.count_nonzero(change) != np.count_nonzero(credited):
            for k in points.tolist():
                result[k] = alone(k)
            continue
        result[points] = np.bincount(credit[mine], weights=credited, minlength=points.size)
    if not np.array_equal(work, flat):
        raise InputError("forward changed its input in place; it must not modify its inputs "
                         "(work on a copy)")
    return result
