"""Spec: entries that share one shift give the bits of each entry alone.

On one image the scaled steps move every output of an output-layer weight by ``cbrt(eps)`` up
to its last bits, so ``LocalDifferences._output_rows`` evaluates each output's term once at the
shift most entries share and only the others entry by entry. The same operations on the same
values must give the same changes, rounding bounds and kink flags as the gathering path
(``_output``), which evaluates every entry on its own. A hidden weight's pairs on one image
share a shift the same way: grouped into units without sorting them all, they must give the
units that sorting gives, in its order.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradproof as gp
from gradproof.engine.exact.evaluator import entry_steps
from gradproof.engine.exact.local_delta import LocalDifferences
from gradproof.engine.exact.pairs import shared_shift, sorted_units, units_of_a_shared_shift

OUTPUTS = {
    "sigmoid": dict(),
    "cross_entropy": dict(loss="cross_entropy"),
    "tanh": dict(activation="tanh", output_activation="tanh"),
    "relu_identity": dict(activation="relu", output_activation="identity"),
}


def _engine(options: dict, batch: int, seed: int) -> LocalDifferences:
    rng = np.random.default_rng(seed)
    model = gp.Autoencoder(int(rng.integers(20, 40)), int(rng.integers(5, 12)), **options)
    params = model.init_params(seed=seed)
    # MNIST-like: most pixels exactly 0, the others k/255.
    x = rng.integers(1, 256, (batch, model.n_visible)) / 255.0
    x *= rng.random((batch, model.n_visible)) < 0.3
    return LocalDifferences(model, params, x)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_shared_shift_gives_the_bits_of_each_entry_alone(output, batch, seed):
    engine = _engine(OUTPUTS[output], batch, seed)
    value = engine.params["W2"]
    steps = entry_steps(engine, "W2")
    for factor in (1.0, 2.0):  # the first and the second step
        h = factor * steps
        rows = engine.differences("W2", slice(0, value.size), h)
        gathered = engine.differences("W2", np.arange(value.size), h)
        for field in ("plus", "minus", "rounding", "kink"):
            np.testing.assert_array_equal(getattr(rows, field), getattr(gathered, field),
                                          err_msg=field)


def test_one_image_shares_a_shift_in_most_entries():
    # The case the shortcut is for: the seed-style network on one image.
    engine = _engine({}, 1, 0)
    shifts = entry_steps(engine, "W2").reshape(engine.params["W2"].shape)
    shifts *= engine.acts[1][0][:, None]  # (n_hidden, n_visible): h a, each entry's shift
    common, rest = shared_shift(shifts[None])
    assert rest is not None and 2 * rest.size < shifts.size
    assert np.count_nonzero(shifts == common) == shifts.size - rest.size


def test_no_shared_shift_where_fewer_than_half_share_one():
    shifts = np.random.default_rng(0).random((2, 5, 7))  # all distinct
    _, rest = shared_shift(shifts)
    assert rest is None


def test_a_batch_of_one_image_twice_shares_the_shift_across_examples():
    # Both examples give each entry the same shift: the gathered output terms are indexed by
    # example and output, which a single image does not exercise.
    one = _engine({}, 1, 1)
    x = np.repeat(one.acts[0], 2, axis=0)
    engine = LocalDifferences(one.model, one.params, x)
    steps = entry_steps(engine, "W2")
    size = steps.size
    shifts = steps.reshape(engine.params["W2"].shape)[None] * engine.acts[1][:, :, None]
    assert shared_shift(shifts)[1] is not None
    rows = engine.differences("W2", slice(0, size), steps)
    gathered = engine.differences("W2", np.arange(size), steps)
    for field in ("plus", "minus", "rounding", "kink"):
        np.testing.assert_array_equal(getattr(rows, field), getattr(gathered, field),
                                      err_msg=field)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_hidden_units_of_a_shared_shift_are_the_sorted_units(output, seed):
    engine = _engine(OUTPUTS[output], 1, seed)
    shape = engine.params["W1"].shape
    shifts = entry_steps(engine, "W1").reshape(shape) * engine.acts[0][0][:, None]
    pairs = np.flatnonzero(shifts)  # (pixel, unit) pairs that move, one example
    col, shift = pairs % shape[1], shifts.ravel()[pairs]
    shared = units_of_a_shared_shift(col, shift)
    assert shared is not None
    for got, expected in zip(shared, sorted_units(np.zeros_like(col), col, shift, True)):
        np.testing.assert_array_equal(got, expected)
