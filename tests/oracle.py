"""What the specs that compare a network with its autograd oracle share."""

from __future__ import annotations

import math

import autograd.numpy as anp
import numpy as np

ORACLE_ACTIVATIONS = {
    "sigmoid": lambda s: 1.0 / (1.0 + anp.exp(-s)),
    "tanh": anp.tanh,
    # slope 0 at the kink, like a relu whose derivative is read from its output
    "relu": lambda s: anp.where(s > 0, s, 0.0),
    "identity": lambda s: s,
}


def random_params(shapes: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random parameters for ``shapes``, named ``W...`` (weights) or otherwise (biases)."""
    # Variance-preserving weights keep pre-activations moderate, so that saturated sigmoids
    # do not make 1 - σ(s) (and with it the oracle itself) inaccurate.
    return {
        name: rng.uniform(-1, 1, shape) * math.sqrt(3 / shape[0])
        if name.startswith("W") else rng.uniform(-0.5, 0.5, shape)
        for name, shape in shapes.items()
    }


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest entry error relative to the largest expected entry."""
    err = float(np.max(np.abs(np.asarray(actual) - expected)))
    scale = float(np.max(np.abs(expected)))
    return err / scale if scale > 0 else err
