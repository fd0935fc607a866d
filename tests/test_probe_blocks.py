"""The probe sets' work in blocks of whole probes gives the bits of the whole-array formulas.

``probes.unit_directions``, ``probes.segment_norms``, a black-box stage's points and sums and
the report's per-entry thresholds work a block of whole probes at a time, and skip the
scaling, the gathers and the repeats that change nothing: each is compared here, bit for bit,
with the plain formula on whole arrays (written out below), on random sets whose blocks split
them in several places.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradproof.engine import blackbox, probes, verdict
from gradproof.engine.probes import (
    PASSED,
    Context,
    Measured,
    blocks,
    line_probes,
    random_probes,
    segment_norms,
    unit_directions,
)
from gradproof.finite_diff import Rule
from gradproof.params import parse_params


def _segments(rng: np.random.Generator, count: int, equal: bool) -> np.ndarray:
    lengths = np.full(count, 7) if equal else rng.integers(1, 40, size=count)
    return np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)


def _plain_units(x: np.ndarray, start: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The whole-array formula: Gaussian weights times max(1, |x|), each segment scaled to
    unit length."""
    v = rng.standard_normal(x.size) * np.maximum(np.abs(x), 1.0)
    norms = np.sqrt(np.add.reduceat(np.square(v), start[:-1]))
    return v / np.repeat(norms, np.diff(start))


@pytest.mark.parametrize("entries", [1, 5, 64, 1 << 20], ids=lambda e: f"block{e}")
@pytest.mark.parametrize("equal", [True, False], ids=["equal", "ragged"])
def test_blocks_cover_whole_segments(entries: int, equal: bool) -> None:
    start = _segments(np.random.default_rng(3), 50, equal)
    spans = blocks(start, entries)
    firsts, lasts = zip(*spans)
    assert firsts[0] == 0 and lasts[-1] == 50
    assert list(firsts[1:]) == list(lasts[:-1])  # consecutive, no gaps
    for first, last in spans:
        assert last > first
        # At most ``entries`` entries, unless the block is one segment longer than that.
        assert start[last] - start[first] <= entries or last == first + 1


@pytest.mark.parametrize("scale", [0.5, 3.0], ids=["within_one", "scaled"])
@pytest.mark.parametrize("equal", [True, False], ids=["equal", "ragged"])
def test_unit_directions_match_the_plain_formula(
    scale: float, equal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probes, "BLOCK_ENTRIES", 16)  # many blocks
    rng = np.random.default_rng(7)
    start = _segments(rng, 30, equal)
    x = scale * rng.uniform(-1, 1, size=int(start[-1]))
    expected = _plain_units(x, start, np.random.default_rng(11))
    got = unit_directions(x, start, np.random.default_rng(11))
    np.testing.assert_array_equal(got, expected)
    if scale < 1:  # None stands for entries within [-1, 1]: the same directions
        np.testing.assert_array_equal(unit_directions(None, start, np.random.default_rng(11)),
                                      expected)


def test_segment_norms_match_reduceat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes, "BLOCK_ENTRIES", 10)
    rng = np.random.default_rng(5)
    start = _segments(rng, 40, equal=False)
    values = rng.standard_normal(int(start[-1]))
    expected = np.sqrt(np.add.reduceat(np.square(values), start[:-1]))
    np.testing.assert_array_equal(segment_norms(values, start), expected)


def _context(flat: np.ndarray, layout, gradient: np.ndarray, dtype: type) -> Context:
    class Buffer:  # what _Stage.build reads of the objective
        buffer = np.zeros(0, dtype=dtype)

    names = [spec.name for spec in layout.specs]
    return Context(Buffer(), gradient, flat, 1.0, 0.0, Rule(), dict.fromkeys(names, 1e-16),
                   dict.fromkeys(names, 1.0))


def _plain_stage(probe_set, factor: float, context: Context, dtype: type):
    """The whole-array formula of a stage's points and sums."""
    step = np.repeat(probe_set.step * factor, np.diff(probe_set.start)) * probe_set.values
    center = context.center[probe_set.positions]
    plus = (center + step).astype(dtype)
    minus = (center - step).astype(dtype)
    d_plus, d_minus = plus - center, minus - center
    g = context.gradient[probe_set.positions]
    start = probe_set.start[:-1]
    width = np.add.reduceat((d_plus - d_minus) * probe_set.values, start) / np.add.reduceat(
        np.square(probe_set.values), start
    )
    width[width == 0] = np.nan
    return (plus, minus, np.add.reduceat(g * d_plus, start), np.add.reduceat(g * d_minus, start),
            width)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", ["rows", "columns", "directions", "subset"])
def test_stage_build_matches_the_plain_formula(
    kind: str, dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blackbox, "BLOCK_ENTRIES", 40)  # several blocks per set
    rng = np.random.default_rng(2)
    params = {"b": rng.standard_normal(3), "W": 3 * rng.standard_normal((9, 13))}
    layout, flat = parse_params(params)
    spec = layout.spec("W")
    context = _context(flat, layout, rng.standard_normal(flat.size), dtype)
    eps = 1e-12
    if kind == "directions":
        probe_set = random_probes(spec, 3, flat, eps, rng)
    else:
        probe_set = line_probes(spec, 0 if kind != "columns" else 1,
                                np.arange(spec.shape[0 if kind != "columns" else 1]), flat, eps,
                                rng)
    which = np.arange(probe_set.count)
    if kind == "subset":
        which = np.array([6, 1, 4])
    stage = blackbox._Stage.build(probe_set, which, 2.0, context)
    plus, minus = stage._points()
    expected = _plain_stage(probe_set.subset(which), 2.0, context, dtype)
    for got, want in zip((plus, minus, stage.g_plus, stage.g_minus, stage.width), expected):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_entry_thresholds_match_the_plain_formula() -> None:
    """Rows (all compared), columns (some not) and directions: per entry, the smallest
    tolerance over |v| of the probes covering it."""
    rng = np.random.default_rng(4)
    layout, flat = parse_params({"W": rng.standard_normal((6, 5))})
    spec = layout.spec("W")
    sets = [line_probes(spec, 0, np.arange(6), flat, 1e-12, rng),
            line_probes(spec, 1, np.arange(5), flat, 1e-12, rng),
            random_probes(spec, 2, flat, 1e-12, rng)]
    measured = []
    for probe_set in sets:
        m = Measured.empty(probe_set, np.zeros(probe_set.count))
        m.tolerance[:] = rng.uniform(1e-6, 1e-5, size=probe_set.count)
        m.floor[:] = 0.0
        m.status[:] = PASSED
        measured.append(m)
    measured[1].status[2] = 0  # a column left undecided covers nothing
    expected = np.full(spec.size, np.inf)
    for m in measured:
        for k in np.flatnonzero(m.compared):
            piece = slice(m.probes.start[k], m.probes.start[k + 1])
            local = m.probes.positions[piece] - spec.offset
            per_entry = m.tolerance[k] / np.abs(m.probes.values[piece])
            expected[local] = np.minimum(expected[local], per_entry)
    np.testing.assert_array_equal(verdict._entry_thresholds(spec, measured), expected)


def test_no_segments_give_no_norms_and_no_directions() -> None:
    start = np.zeros(1, dtype=np.int64)
    assert segment_norms(np.zeros(0), start).size == 0
    assert unit_directions(None, start, np.random.default_rng(0)).size == 0
