"""The motivating user's backprop, exported the way a MATLAB user would `save` it.

Writes ``seed_backprop.mat`` with ``encoder`` (784x200), ``decoder`` (200x784), ``x`` (one
MNIST image as a 1x784 row) and the hand-written gradients ``gEncoder`` and ``gDecoder``, so
that ``gradproof compare seed_backprop.mat`` can say what is wrong with them.
"""

from __future__ import annotations

import numpy as np
from scipy.io import savemat
from scipy.special import expit as sigmoid

import gradproof as gp

n_visible, n_hidden = 784, 200
rng = np.random.default_rng(0)
r = 4 * np.sqrt(6 / (n_hidden + n_visible))
encoder = rng.uniform(-r, r, (n_visible, n_hidden))  # (784, 200)
decoder = rng.uniform(-r, r, (n_hidden, n_visible))  # (200, 784)
images, _ = gp.load_mnist(limit=1)
x = images[:1]  # (1, 784)

a = sigmoid(x @ encoder)  # (1, 200)
z = sigmoid(a @ decoder)  # (1, 784)
error_0 = (z - x) * z * (1 - z)  # (1, 784)
gDecoder = error_0.T @ a  # (784, 200): the transpose of the decoder's shape
error_1 = (error_0 @ encoder) * a * (1 - a)  # (1, 200): back through the wrong matrix
gEncoder = error_1.T @ x  # (200, 784)

savemat(
    "seed_backprop.mat",
    {"encoder": encoder, "decoder": decoder, "x": x, "gEncoder": gEncoder, "gDecoder": gDecoder},
)
