"""Spec: the exact engine's shortcuts for a chunk in the flat order give the same bits.

A chunk of whole rows of a weight is evaluated with its rows' inputs and the output terms
broadcast (``LocalDifferences._output_rows``), and a contiguous chunk reads its rows and
columns from a table made once per shape; the same entries passed as an index array take the
gathering path. Both must give identical changes, rounding bounds and kink flags, bit for bit,
whatever the activations, loss, batch and masks (relu units at 0 leave terms unmoved).
"""

from __future__ import annotations

import numpy as np
import pytest

import gradproof as gp
from gradproof.engine.exact.evaluator import entry_steps
from gradproof.engine.exact.local_delta import LocalDifferences

CONFIGS = {
    "sigmoid": dict(),
    "relu_identity": dict(activation="relu", output_activation="identity"),
    "tanh": dict(activation="tanh", output_activation="tanh"),
    "cross_entropy": dict(loss="cross_entropy"),
    "deep": dict(layers=None, hidden=(6, 5)),
}


def _engine(config: dict, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    n_visible, n_hidden = int(rng.integers(5, 15)), int(rng.integers(2, 9))
    options = {k: v for k, v in config.items() if k not in ("layers", "hidden")}
    if "hidden" in config:
        model = gp.Autoencoder(layers=[n_visible, *config["hidden"], n_visible], **options)
    else:
        model = gp.Autoencoder(n_visible, n_hidden, **options)
    params = model.init_params(seed=seed)
    # Zero pixels: entries that move nothing, so the masks apply.
    x = rng.random((batch, n_visible)) * (rng.random((batch, n_visible)) > 0.4)
    return LocalDifferences(model, params, x)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("batch", [1, 3, 12])
@pytest.mark.parametrize("seed", [0, 1])
def test_whole_rows_give_the_bits_of_the_gathered_path(config, batch, seed):
    engine = _engine(config, batch, seed)
    for name, value in engine.params.items():
        steps = entry_steps(engine, name)
        if value.ndim != 2:
            continue
        width = value.shape[1]
        first, stop = width, min(value.size, 3 * width)  # rows 1 and 2
        if stop <= first:
            first, stop = 0, value.size
        fast = engine.differences(name, slice(first, stop), steps[first:stop])
        gathered = engine.differences(name, np.arange(first, stop), steps[first:stop])
        for field in ("plus", "minus", "rounding", "kink"):
            np.testing.assert_array_equal(getattr(fast, field), getattr(gathered, field),
                                          err_msg=f"{name} {field}")
