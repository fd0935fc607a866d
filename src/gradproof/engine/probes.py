"""Probes: the directions a check differentiates along, and their measured results.

Contract: a ``ProbeSet`` holds probes of one tensor and one kind ("entry", "row", "column",
"block", "direction", or a part of one of these, "row part" ..., see ``halves``), stored like a
sparse matrix: probe k moves the flat positions
``positions[start[k]:start[k+1]]`` by ``step[k] * values[...]``. An entry probe moves one
entry by h = cbrt(eps)·max(1, |θ|); every other probe is a unit vector in the metric scaled by
max(1, |θ|) (random Gaussian weights on its support, so that a row's errors cannot cancel
out), moved by h = cbrt(eps). ``Measured`` holds one set's results, which the staged
measurement of ``gradproof.engine.staging`` fills; ``gradient_rounding`` is the analytic
gradient's own rounding along each probe, part of every tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gradproof.finite_diff import ROUNDING_GROWTH, Rule, step_sizes
from gradproof.engine.objective import Objective
from gradproof.params import TensorSpec

UNKNOWN, PASSED, FAILED, EXCLUDED = 0, 1, 2, 3

# Work over a large probe set goes a block of whole probes of about this many entries at a
# time (``blocks``): temporaries that size stay in the cache and are reused from block to
# block, where temporaries of the whole set (1.3 million entries on the seed network) would
# each pay the page faults of fresh memory.
BLOCK_ENTRIES = 1 << 15


@dataclass(frozen=True)
class ProbeSet:
    """Probes of one tensor and one kind (see the module docstring).

    Attributes
    ----------
    spec : TensorSpec
        The tensor probed.
    kind : {"entry", "row", "column", "block", "direction", "row part", ...}
    labels : ndarray of int, shape (n,)
        The flat position (entry), the row or column index, or the direction's number (a
        part's: that of the probe it is part of).
    positions, values : ndarray
        The supports and direction values of all probes, concatenated.
    start : ndarray of int, shape (n + 1,)
        Probe k owns ``positions[start[k]:start[k+1]]``.
    step : ndarray of shape (n,)
        The nominal step of each probe.
    """

    spec: TensorSpec
    kind: str
    labels: np.ndarray
    positions: np.ndarray
    values: np.ndarray
    start: np.ndarray
    step: np.ndarray

    @property
    def count(self) -> int:
        return int(self.labels.size)

    @property
    def is_entries(self) -> bool:
        return self.kind == "entry"

    def subset(self, which: np.ndarray) -> ProbeSet:
        """The probes ``which`` (indices into this set), in that order."""
        lengths = np.diff(self.start)[which]
        start = np.concatenate(([0], np.cumsum(lengths)))
        pick = ranges(self.start[which], lengths)
        return ProbeSet(
            self.spec,
            self.kind,
            self.labels[which],
            self.positions[pick],
            self.values[pick],
            start,
            self.step[which],
        )

    def describe(self, k: int, sign: float) -> str:
        """Where probe k's point lies, for messages."""
        step = sign * float(self.step[k])
        if self.is_entries:
            position = int(self.labels[k])
            return f"with {self.spec.label(self.spec.index(position))} moved by {step:+.3g}"
        label = int(self.labels[k])
        return f"at the parameters moved {step:+.3g} along {self.kind} {label} of {self.spec.name}"


def entry_probes(
    spec: TensorSpec, positions: np.ndarray, center: np.ndarray, eps: float
) -> ProbeSet:
    """One probe per flat position (of the whole flat vector), each moving that entry."""
    positions = np.asarray(positions, dtype=np.int64)
    n = positions.size
    return ProbeSet(
        spec,
        "entry",
        positions,
        positions,
        np.ones(n),
        np.arange(n + 1),
        step_sizes(center[positions], eps),
    )


def line_probes(
    spec: TensorSpec,
    axis: int,
    lines: np.ndarray,
    center: np.ndarray,
    eps: float,
    rng: np.random.Generator,
) -> ProbeSet:
    """One probe per row (axis 0) or column (axis 1) of the tensor seen as (rows, rest)."""
    local = spec.local_positions().reshape(spec.shape[0], -1)  # (rows, rest)
    lines = np.asarray(lines, dtype=np.int64)
    supports = local[lines] if axis == 0 else local[:, lines].T  # (lines, length): one per row
    supports += spec.offset  # in place: a fresh array either way
    return _dense(spec, "row" if axis == 0 else "column", lines, supports, center, eps, rng)


def random_probes(
    spec: TensorSpec, count: int, center: np.ndarray, eps: float, rng: np.random.Generator
) -> ProbeSet:
    """``count`` random directions over the whole tensor."""
    support = np.arange(spec.offset, spec.offset + spec.size)
    supports = np.broadcast_to(support, (count, spec.size))  # (count, size): one per row
    return _dense(spec, "direction", np.arange(count), supports, center, eps, rng)


def block_probes(
    spec: TensorSpec, count: int, center: np.ndarray, eps: float, rng: np.random.Generator
) -> ProbeSet:
    """One probe per contiguous block of the tensor's entries, ``count`` blocks in all."""
    blocks = np.array_split(np.arange(spec.offset, spec.offset + spec.size), count)
    return _dense(spec, "block", np.arange(len(blocks)), blocks, center, eps, rng)


def _dense(
    spec: TensorSpec,
    kind: str,
    labels: np.ndarray,
    supports: list[np.ndarray] | np.ndarray,
    center: np.ndarray,
    eps: float,
    rng: np.random.Generator,
) -> ProbeSet:
    """Probes with Gaussian unit directions (``unit_directions``) on ``supports``: a list of
    index arrays, or one (probes, length) array of them, whose rows become the probes without a
    Python loop over them (the seed network's lines are about two thousand)."""
    if isinstance(supports, np.ndarray):
        count, length = supports.shape
        positions = supports.astype(np.int64, copy=False).ravel()  # a view where C-ordered
        start = np.arange(count + 1, dtype=np.int64) * length
    else:
        positions = np.concatenate(supports).astype(np.int64, copy=False)
        start = np.concatenate(([0], np.cumsum([s.size for s in supports]))).astype(np.int64)
    return ProbeSet(
        spec,
        kind,
        labels,
        positions,
        unit_directions(None if _within_one(center, spec) else center[positions], start, rng),
        start,
        np.full(len(supports), np.cbrt(eps)),
    )


def halves(probes: ProbeSet, which: np.ndarray) -> ProbeSet:
    """Probes ``which`` of a set (each moving two entries or more), each split in two: the
    first and the second half of its support, each with its share of the direction scaled
    back to unit length (kind "<kind> part", labelled like the probe it is part of), so that
    a kink crossed by one half no longer spoils the other. One set for all of them: each set
    costs a round of evaluations per stage, whatever its size."""
    lengths = np.diff(probes.start)[which]
    first = lengths // 2
    sizes = np.column_stack((first, lengths - first)).ravel()  # (2n,) first and second halves
    start = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    pick = ranges(probes.start[which], lengths)
    values = probes.values[pick]
    norms = np.sqrt(segment_sum(np.square(values), start))
    norms[norms == 0] = 1.0  # a part of zero weights stays zero
    return ProbeSet(
        probes.spec,
        probes.kind.removesuffix(" part") + " part",
        np.repeat(probes.labels[which], 2),
        probes.positions[pick],
        values / np.repeat(norms, sizes),
        start,
        np.repeat(probes.step[which], 2),
    )


def unit_direction(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian weights times max(1, |x|), scaled to unit length: each entry moves in
    proportion to its own step scale. Gaussian rather than random signs: with signs, an error
    of structured shape (g.T - g is antisymmetric) cancels exactly half of the time."""
    return unit_directions(x, np.array([0, x.size]), rng)


def unit_directions(
    x: np.ndarray | None, start: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``unit_direction`` of each segment ``x[start[k]:start[k+1]]`` (none empty), in one
    draw: the same random numbers as one draw per segment, without numpy calls per probe
    (the seed network's row and column probes are about two thousand). ``x`` None stands for
    entries all within [-1, 1], whose scales are all 1: no gather of them is needed."""
    v = rng.standard_normal(int(start[-1]))
    if x is not None and (x.max() > 1.0 or x.min() < -1.0):
        v *= np.maximum(np.abs(x), 1.0)
    norms = segment_norms(v, start)
    lengths = np.diff(start)
    if lengths.size and lengths.min() == lengths.max():  # rows, columns, whole directions
        rows = v.reshape(lengths.size, -1)  # (segments, length), a view of v
        rows /= norms[:, None]  # the same divisions as by the repeated norms, without them
    else:
        v /= np.repeat(norms, lengths)
    return v


def _within_one(center: np.ndarray, spec: TensorSpec) -> bool:
    """Whether every entry of the tensor lies within [-1, 1] (its steps' scales are all 1)."""
    tensor = center[spec.offset : spec.offset + spec.size]
    return bool(tensor.max(initial=0.0) <= 1.0 and tensor.min(initial=0.0) >= -1.0)


def segment_norms(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The Euclidean norm of each segment ``values[start[k]:start[k+1]]`` (none empty).

    The squares are made for a block of whole segments at a time (``blocks``), each summed as
    ``segment_sum`` sums it: no array of squares as large as a million-entry probe set."""
    norms = np.empty(start.size - 1)
    spans = blocks(start, BLOCK_ENTRIES)
    squares = np.empty(max((int(start[last] - start[first]) for first, last in spans), default=0))
    for first, last in spans:
        lo, hi = int(start[first]), int(start[last])
        block = np.square(values[lo:hi], out=squares[: hi - lo])
        norms[first:last] = segment_sum(block, start[first : last + 1] - lo)
    return np.sqrt(norms, out=norms)


@dataclass(frozen=True)
class Context:
    """What every stage needs: the objective and the numbers that set the tolerances."""

    objective: Objective
    gradient: np.ndarray  # (size,) the analytic gradient, unrolled like the flat vector
    center: np.ndarray  # (size,) the base point as float64, in the buffer's precision
    j0: float
    noise: float  # the loss's rounding noise (absolute)
    rule: Rule
    eps_grad: dict[str, float]  # each gradient's own machine epsilon
    gmax: dict[str, float]  # each tensor's largest |gradient|

    def rounding_g(self, probes: ProbeSet) -> np.ndarray:
        """The analytic gradient's own rounding along each probe (slope units)."""
        name = probes.spec.name
        magnitude = self.gradient[probes.positions]
        np.abs(magnitude, out=magnitude)  # our own gathered copy
        return gradient_rounding(probes, magnitude, self.gmax[name], self.eps_grad[name])


def gradient_rounding(
    probes: ProbeSet, magnitude: np.ndarray, largest: float, eps: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The analytic gradient's own rounding along each probe (slope units).

    ``ROUNDING_GROWTH * eps * Σ (|g| + max|g|) |v|`` over each probe's support: a gradient
    computed in precision ``eps`` is off by a few eps times the magnitudes summed into each
    entry, which the tensor's largest entry stands in for. ``magnitude`` is |g| at
    ``probes.positions``. Entry probes' go into ``out`` where given (``magnitude`` itself
    may be it).
    """
    if probes.is_entries:  # one entry per probe, moved with weight 1: no sums to form
        rounding = np.add(magnitude, largest, out=out)
        rounding *= ROUNDING_GROWTH * eps
        return rounding
    weight = np.add(magnitude, largest)
    # (|g| + max|g|) |v| as |(|g| + max|g|) v|: the same bits (rounding ignores the sign),
    # without a fresh |v| the size of the support.
    np.abs(np.multiply(weight, probes.values, out=weight), out=weight)
    return ROUNDING_GROWTH * eps * segment_sum(weight, probes.start)


@dataclass
class Measured:
    """Per-probe results of one ProbeSet (NaN and UNKNOWN until decided).

    The one-sided slopes are made on first use: only probes measured at a kink get any, and
    most sets have none.
    """

    probes: ProbeSet
    analytic: np.ndarray
    numeric: np.ndarray
    estimate: np.ndarray  # the finite-difference error estimate (truncation + rounding)
    tolerance: np.ndarray
    step: np.ndarray
    status: np.ndarray  # UNKNOWN / PASSED / FAILED / EXCLUDED
    kink: np.ndarray  # bool: the steps h and 2h crossed a kink
    unresolved: np.ndarray  # bool: excluded because the error kept changing as the step shrank
    rounding_g: np.ndarray
    one_sided: np.ndarray  # bool: decided by a one-sided slope (``engine.one_sided``)
    split: np.ndarray  # bool: excluded at a kink and measured again in parts (black box)
    floor: np.ndarray  # an error below this can go unconfirmed (a loss with kinks), else 0
    _slopes: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def empty(cls, probes: ProbeSet, rounding_g: np.ndarray,
              allocate: Callable[..., np.ndarray] = np.empty, filled: bool = True) -> Measured:
        """Results of ``probes``, none decided yet, in arrays from ``allocate(shape, dtype)``
        (``np.empty``'s signature: the exact engine lends arrays kept between checks).

        ``filled=False`` leaves the values as ``allocate`` gives them (the flags start clear
        all the same): for a caller whose first step writes every probe's values, and which
        ``forget``s those an interrupt left unwritten.
        """
        n = probes.count
        # Two blocks, not twelve arrays: numpy backs a block of 4 MiB or more with huge pages,
        # where each fresh array of a large tensor faults in its pages one by one.
        values = allocate((6, n), np.float64)
        if filled:
            values[:5] = np.nan
            values[5] = 0.0
        flags = allocate((5, n), np.int8)
        flags.fill(0)
        return cls(
            probes,
            *values[:5],
            flags[0],
            flags[1].view(bool),
            flags[2].view(bool),
            rounding_g,
            flags[3].view(bool),
            flags[4].view(bool),
            values[5],
        )

    def forget(self, which: np.ndarray) -> None:
        """The values of the probes ``which`` back to undecided (NaN, a floor of 0)."""
        for values in (self.analytic, self.numeric, self.estimate, self.tolerance, self.step):
            values[which] = np.nan
        self.floor[which] = 0.0

    @property
    def slopes(self) -> np.ndarray:
        """(n, 2) one-sided slopes at the smallest step, where steps shrank (else NaN)."""
        if self._slopes is None:
            self._slopes = np.full((self.probes.count, 2), np.nan)
        return self._slopes

    @property
    def error(self) -> np.ndarray:
        return self.numeric - self.analytic

    @property
    def compared(self) -> np.ndarray:
        return (self.status == PASSED) | (self.status == FAILED)

    def record(
        self,
        which: np.ndarray | slice,
        analytic: np.ndarray,
        error: np.ndarray,
        estimate: np.ndarray,
        tolerance: np.ndarray,
        step: np.ndarray,
        status: np.ndarray | int,
    ) -> None:
        self.analytic[which] = analytic
        self.numeric[which] = analytic + error
        self.estimate[which] = estimate
        self.tolerance[which] = tolerance
        self.step[which] = step
        self.status[which] = status


def blocks(start: np.ndarray, entries: int) -> list[tuple[int, int]]:
    """Consecutive ranges ``(first, last)`` of the segments ``start`` bounds, covering them
    all, each of whole segments and about ``entries`` entries (one segment alone where that is
    longer)."""
    spans, first, count = [], 0, start.size - 1
    while first < count:
        last = int(np.searchsorted(start, start[first] + entries, side="right")) - 1
        last = min(max(last, first + 1), count)
        spans.append((first, last))
        first = last
    return spans


def segment_sum(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Sums of ``values[start[k]:start[k+1]]`` (no segment is empty)."""
    if start.size <= 1:
        return np.zeros(0)
    return np.add.reduceat(values, start[:-1])


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` for each (s, n)."""
    if lengths.size == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(int(lengths.sum())) + offsets
