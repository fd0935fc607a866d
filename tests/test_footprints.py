"""Specs for gradproof.footprints: entries whose outputs do not overlap, moved in one call.

The oracle is the same sum evaluated one forward call per point: grouped and one-by-one
evaluations of sum(weights * (forward(point) - forward(base))) agree to rounding, on layers
whose entries separate (affine, a convolution, a row-wise softmax), layers where they do not
(every output depends on every entry) and a layer whose footprints the slice moves miss.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradproof as gp
from gradproof.footprints import Footprints, evaluate


class Counted:
    """A forward from one array to flat outputs, counting its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, a):
        self.calls += 1
        return np.asarray(self.fn(a), dtype=np.float64).reshape(-1)


def conv_rows(x):
    """A 3-tap convolution along axis 1 with zero padding: output (i, j) reads x[i, j-1:j+2]."""
    padded = np.pad(x, ((0, 0), (1, 1)))
    return padded[:, :-2] - 2 * padded[:, 1:-1] + 0.5 * padded[:, 2:] ** 2


def softmax_rows(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


W = np.random.default_rng(5).standard_normal((6, 4))
LAYERS = {
    "affine-x": (lambda x: x @ W, (9, 6)),
    "affine-w": (lambda w: np.ones((3, 6)) @ w * np.arange(1, 5), (6, 4)),
    "conv-rows": (conv_rows, (4, 10)),
    "softmax-rows": (softmax_rows, (5, 7)),
    "coupled": (lambda x: np.tanh(x) * x.sum(), (4, 5)),
    "bias": (lambda b: np.tanh(np.ones((3, 1)) * b), (8,)),
}


def points(shape, rng, sides=2):
    """Every entry of a base of ``shape`` moved up and down by a finite-difference step."""
    base = rng.standard_normal(shape)
    local = np.tile(np.arange(base.size), sides)
    step = 1e-5 * (1 + np.abs(base.reshape(-1)[local]))
    sign = np.repeat([1.0, -1.0], base.size)[: local.size]
    return base, local, base.reshape(-1)[local] + sign * step


@pytest.mark.parametrize("name", list(LAYERS))
def test_grouped_sums_equal_one_call_per_point(name):
    fn, shape = LAYERS[name]
    rng = np.random.default_rng(0)
    base, local, values = points(shape, rng)
    weights = rng.standard_normal(Counted(fn)(base).size)
    alone = Counted(fn)
    out0 = Counted(fn)(base)
    expected = evaluate(alone, None, base, local, values, weights, out0)
    forward = Counted(fn)
    found = Footprints.discover(forward, base, np.random.default_rng(1))
    grouped = evaluate(forward, found, base, local, values, weights, out0)
    np.testing.assert_allclose(grouped, expected, rtol=0, atol=1e-13 * np.abs(weights).sum())
    assert alone.calls == local.size


@pytest.mark.parametrize(
    "name, groups", [("affine-x", 6), ("conv-rows", 3), ("softmax-rows", 7), ("bias", 1)]
)
def test_separable_layers_need_a_call_per_group_not_per_entry(name, groups):
    fn, shape = LAYERS[name]
    base = np.random.default_rng(0).standard_normal(shape)
    found = Footprints.discover(Counted(fn), base, np.random.default_rng(1))
    assert found.groups == groups


def test_coupled_layer_separates_nothing():
    fn, shape = LAYERS["coupled"]
    base = np.random.default_rng(0).standard_normal(shape)
    found = Footprints.discover(Counted(fn), base, np.random.default_rng(1))
    assert found.groups == base.size


def test_a_dependence_the_slice_moves_missed_falls_back_to_one_call_per_point():
    # Elementwise for moves up to 1e-2 (the slice moves are 1e-3), every output coupled to the
    # sum beyond: the footprints say "separable", a point moved by 0.1 shows they are not.
    def fn(a):
        far = np.abs(a) > 1e-2
        return a + far.any() * a.sum()

    base = np.zeros((3, 4))
    forward = Counted(fn)
    found = Footprints.discover(forward, base, np.random.default_rng(1))
    assert found.groups == 1
    local = np.array([0, 5, 7, 11])
    values = np.array([1e-3, 0.1, -2e-3, 3e-3])
    weights = np.random.default_rng(2).standard_normal(12)
    out0 = fn(base).reshape(-1)
    expected = evaluate(Counted(fn), None, base, local, values, weights, out0)
    grouped = evaluate(forward, found, base, local, values, weights, out0)
    np.testing.assert_allclose(grouped, expected, rtol=1e-14)


def affine_forward(x, w, b):
    return x @ w + b, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def test_check_vjp_checks_every_entry_of_an_affine_layer_with_few_forward_calls():
    rng = np.random.default_rng(0)
    inputs = (rng.standard_normal((16, 32)), rng.standard_normal((32, 24)),
              rng.standard_normal(24))
    calls = [0]

    def forward(x, w, b):
        calls[0] += 1
        return affine_forward(x, w, b)

    report = gp.check_vjp(forward, affine_backward, inputs)
    entries = sum(a.size for a in inputs)
    assert report.passed
    assert sum(t.checked for t in report.tensors) == entries
    assert calls[0] < entries / 4


@pytest.mark.parametrize("where", [(0, 3, 5), (1, 7, 2), (2, 11, None)])
def test_one_wrong_entry_is_still_caught_when_entries_share_calls(where):
    k, i, j = where
    rng = np.random.default_rng(3)
    inputs = (rng.standard_normal((16, 32)), rng.standard_normal((32, 24)),
              rng.standard_normal(24))

    def backward(dout, cache):
        grads = list(affine_backward(dout, cache))
        index = (i,) if j is None else (i, j)
        grads[k] = grads[k].copy()
        grads[k][index] += 1e-4 * np.abs(grads[k]).max()
        return tuple(grads)

    report = gp.check_vjp(affine_forward, backward, inputs)
    failed = [t.name for t in report.tensors if not t.passed]
    assert failed == [["x", "w", "b"][k]]
