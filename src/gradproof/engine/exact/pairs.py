"""How the exact engine groups a tensor's entries and their (example, unit, shift) pairs.

Contract: pure functions on integer and float arrays, used by ``local_delta``: ``grid`` and
``divided`` give rows and columns of flat indices; ``shared_shift`` finds the shift most
entries share; ``sorted_units`` and ``units_of_a_shared_shift`` group a hidden layer's pairs
into units (example, column, shift) in one order; ``blocks`` cuts sorted units into slices;
``entry_sums`` and ``segment_sums`` add values back up per entry.

Why a module of its own: these decide how many evaluations a check makes, not what a
difference is; ``local_delta`` computes the differences and their rounding bounds.
"""

from __future__ import annotations

import functools

import numpy as np

# Shifts sampled to find the one most entries of a piece of output rows share.
SHIFT_SAMPLE = 64


@functools.lru_cache(maxsize=4)
def grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of every flat (C-order) index of ``shape``, read-only, made once per
    process: integer division is numpy's slowest elementwise operation here (no vector
    instruction divides integers), and finding them per chunk of a large weight cost a few
    passes of the sigmoid's exp on every check (bench/README.md)."""
    rows, cols = divided(np.arange(shape[0] * shape[1]), shape[1])
    rows.flags.writeable = False
    cols.flags.writeable = False
    return rows, cols


def divided(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.divmod(index, n)`` for non-negative integers, as a floor division and a product:
    numpy's integer divmod is the slower way to the same two arrays, on every chunk of a large
    tensor (bench/README.md has the timings). By 1 (the pairs of a single example), no
    division at all."""
    if n == 1:
        return index, np.zeros_like(index)
    quotient = index // n
    return quotient, index - quotient * n


def shared_shift(d: np.ndarray) -> tuple[float, np.ndarray | None]:
    """The shift most entries of ``d`` share, and the flat positions of the others; None for
    those where fewer than half share one.

    On one image the scaled steps move every output by ``cbrt(eps)`` up to its last bits (the
    seed network's output weights take three values, one of them nine entries in ten), so a
    piece of whole rows evaluates an output's term about once, where each entry would cost an
    exponential per side. The candidate is the commonest of a sample of the shifts."""
    flat = d.reshape(-1)
    values, counts = np.unique(flat[:: max(1, flat.size // SHIFT_SAMPLE)], return_counts=True)
    common = float(values[np.argmax(counts)])
    rest = np.flatnonzero(flat != common)
    return common, rest if 2 * rest.size < flat.size else None


def sorted_units(example: np.ndarray, col: np.ndarray, shift: np.ndarray, one_example: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The units (example, col, shift) of a hidden layer's pairs, sorted by example, then
    column, then shift, as ``LocalDifferences._propagate`` takes them: each pair's unit, and
    the units' example, column and shift."""
    # A single example's key is constant: it orders nothing and changes nowhere.
    order = np.lexsort((shift, col) if one_example else (shift, col, example))
    key_change = np.ones(len(order), dtype=bool)
    key_change[1:] = (np.diff(col[order]) != 0) | (np.diff(shift[order]) != 0)
    if not one_example:
        key_change[1:] |= np.diff(example[order]) != 0
    unit_of_pair = np.empty(len(order), dtype=np.intp)
    unit_of_pair[order] = np.cumsum(key_change) - 1
    first = order[key_change]
    return unit_of_pair, example[first], col[first], shift[first]


def units_of_a_shared_shift(col: np.ndarray, shift: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``sorted_units`` of one example's pairs where most share one shift (on one image the
    scaled steps give a hidden weight's nonzero pixels three shifts, one of them in nine pairs
    in ten): the common shift's units are the columns that have it, and only the others are
    sorted. None where fewer than half the pairs share a shift."""
    if not len(col):
        return None
    common, rest = shared_shift(shift)
    if rest is None:
        return None
    width = int(col.max()) + 1
    with_common = np.bincount(col, minlength=width) - np.bincount(col[rest], minlength=width)
    common_cols = np.flatnonzero(with_common)
    rest_unit, _, rest_cols, rest_shifts = sorted_units(np.zeros_like(rest), col[rest],
                                                         shift[rest], True)
    unit_cols = np.concatenate((common_cols, rest_cols))
    unit_shifts = np.concatenate((np.full(common_cols.size, common), rest_shifts))
    order = np.lexsort((unit_shifts, unit_cols))  # the order of sorting all the pairs
    rank = np.empty(order.size, dtype=np.intp)
    rank[order] = np.arange(order.size)
    unit_of_col = np.zeros(width, dtype=np.intp)
    unit_of_col[common_cols] = rank[:common_cols.size]
    unit_of_pair = unit_of_col[col]
    unit_of_pair[rest] = rank[common_cols.size + rest_unit]
    return (unit_of_pair, np.zeros(order.size, dtype=np.intp), unit_cols[order],
            unit_shifts[order])


def blocks(example: np.ndarray, col: np.ndarray, limit: int) -> list[slice]:
    """Cut units (sorted by example, then unit) into slices of at most ``limit`` units.

    A slice never spans two examples; it ends where the moved unit changes when it can, so
    that most slices share one row of the next layer's weights.
    """
    if not len(example):
        return []
    change = np.flatnonzero((np.diff(example) != 0) | (np.diff(col) != 0)) + 1
    starts = np.r_[0, change]
    ends = np.r_[change, len(example)]
    blocks: list[slice] = []
    lo = 0
    for start, end in zip(starts.tolist(), ends.tolist()):
        if end - lo > limit or example[start] != example[lo]:
            if start > lo:
                blocks.append(slice(lo, start))
            lo = start
        while end - lo > limit:
            blocks.append(slice(lo, lo + limit))
            lo += limit
    if lo < len(example):
        blocks.append(slice(lo, len(example)))
    return blocks


def entry_sums(entry: np.ndarray, values: np.ndarray, n_entries: int) -> np.ndarray:
    """``values`` summed per entry, float64 even when there are none (bincount gives ints)."""
    return np.bincount(entry, values, minlength=n_entries).astype(np.float64, copy=False)


def segment_sums(values: np.ndarray, entry: np.ndarray, n_entries: int) -> np.ndarray:
    """Rows of ``values`` summed per entry (``entry`` sorted); zeros for entries without rows."""
    out = np.zeros((n_entries,) + values.shape[1:])
    if len(entry):
        starts = np.flatnonzero(np.r_[True, np.diff(entry) != 0])
        out[entry[starts]] = np.add.reduceat(values, starts, axis=0)
    return out
