"""Networks as users write them, from the math of the common course and textbook formulations.

Each is a ``UserNet``: the user's parameters in their own structure, their data, their loss
``loss(params) -> float`` and a gradient ``grad(params, bug=None)`` written by hand, with a
switch that plants one classic mistake (``BUGS`` lists the ones each supports). None of it uses
gradproof: these stand in for the user's code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_gradient(z: np.ndarray) -> np.ndarray:
    g = sigmoid(z)
    return g * (1.0 - g)


@dataclass
class UserNet:
    params: Any
    x: np.ndarray
    y: Any
    loss: Callable[[Any], float]
    grad: Callable[..., Any]
    bugs: tuple[str, ...]


def course_classifier(m: int = 60, n_in: int = 20, hidden: int = 8, classes: int = 4,
                      lam: float = 1.0, seed: int = 0) -> UserNet:
    """The MATLAB course's classifier: ``Theta1`` (hidden, n_in + 1) and ``Theta2``
    (classes, hidden + 1) with the biases as column 1, examples as rows of X, labels 1..K,
    cross-entropy summed over the classes and averaged over the examples, and
    ``lambda/(2m) * sum Theta(:, 2:end).^2``."""
    rng = np.random.default_rng(seed)
    x = rng.random((m, n_in))
    y = rng.integers(1, classes + 1, size=(m, 1))  # a MATLAB column of 1-based labels
    eps = 0.5
    params = {"Theta1": rng.uniform(-eps, eps, (hidden, n_in + 1)),
              "Theta2": rng.uniform(-eps, eps, (classes, hidden + 1))}
    Y = np.eye(classes)[y.ravel() - 1]  # (m, K)

    def forward(p):
        a1 = np.hstack([np.ones((m, 1)), x])  # (m, n_in + 1)
        z2 = a1 @ p["Theta1"].T  # (m, hidden)
        a2 = np.hstack([np.ones((m, 1)), sigmoid(z2)])  # (m, hidden + 1)
        h = sigmoid(a2 @ p["Theta2"].T)  # (m, K)
        return a1, z2, a2, h

    def loss(p):
        h = forward(p)[3]
        data = -np.sum(Y * np.log(h) + (1 - Y) * np.log(1 - h)) / m
        reg = lam / (2 * m) * (np.sum(p["Theta1"][:, 1:] ** 2) + np.sum(p["Theta2"][:, 1:] ** 2))
        return float(data + reg)

    def grad(p, bug=None):
        a1, z2, a2, h = forward(p)
        target = np.roll(Y, 1, axis=1) if bug == "labels_off_by_one" else Y
        d3 = h - target  # (m, K)
        if bug == "cross_entropy_slope_again":
            d3 = d3 * h * (1 - h)
        slope = sigmoid_gradient(a2[:, 1:] if bug == "slope_of_activation" else z2)
        d2 = (d3 @ p["Theta2"][:, 1:]) * slope  # (m, hidden)
        per_m = {"mean_twice": 1.0 / m**2, "mean_never": 1.0}.get(bug, 1.0 / m)
        g1, g2 = d2.T @ a1 * per_m, d3.T @ a2 * per_m  # like Theta1, Theta2
        for g, name in ((g1, "Theta1"), (g2, "Theta2")):
            source = g.copy() if bug == "decay_of_gradient" else p[name]
            first = 0 if bug == "decay_on_biases" else 1  # column 1 holds the biases
            g[:, first:] += lam / m * source[:, first:]
        if bug == "transposed":
            g1 = g1.T
        return {"Theta1": g1, "Theta2": g2}

    bugs = ("labels_off_by_one", "cross_entropy_slope_again", "slope_of_activation",
            "mean_twice", "mean_never", "decay_on_biases", "decay_of_gradient")
    return UserNet(params, x, y, loss, grad, bugs)


def numpy_softmax_classifier(m: int = 50, n_in: int = 12, hidden: int = 7, classes: int = 5,
                             lam: float = 0.3, seed: int = 1) -> UserNet:
    """A numpy textbook classifier: ``W1`` (n_in, hidden), ``b1`` (hidden,), ``W2``, ``b2``,
    tanh hidden, softmax output, mean cross-entropy over 0-based labels, ``lam/2 * sum W**2``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, n_in))
    y = rng.integers(0, classes, size=m)
    params = {"W1": rng.normal(size=(n_in, hidden)) / np.sqrt(n_in),
              "b1": rng.normal(size=hidden) * 0.1,
              "W2": rng.normal(size=(hidden, classes)) / np.sqrt(hidden),
              "b2": rng.normal(size=classes) * 0.1}
    Y = np.eye(classes)[y]

    def forward(p):
        h = np.tanh(x @ p["W1"] + p["b1"])  # (m, hidden)
        s = h @ p["W2"] + p["b2"]  # (m, K)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return h, e / e.sum(axis=1, keepdims=True)

    def loss(p):
        probs = forward(p)[1]
        data = -np.mean(np.log(probs[np.arange(m), y]))
        return float(data + lam / 2 * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2)))

    def grad(p, bug=None):
        h, probs = forward(p)
        ds = (probs if bug == "softmax_without_target" else probs - Y) / m  # (m, K)
        dh = ds @ p["W2"].T * (1 - h**2)  # (m, hidden)
        out = {"W1": x.T @ dh + lam * p["W1"], "b1": dh.sum(axis=0),
               "W2": h.T @ ds + lam * p["W2"], "b2": ds.sum(axis=0)}
        if bug == "transposed":
            out["W2"] = ds.T @ h + lam * p["W2"].T
        return out

    return UserNet(params, x, y, loss, grad, ("softmax_without_target",))


def sparse_autoencoder(m: int = 40, n_in: int = 10, hidden: int = 4, lam: float = 1e-3,
                       beta: float = 3.0, rho: float = 0.1, seed: int = 2,
                       tied: bool = False) -> UserNet:
    """The sparse autoencoder of the UFLDL notes: sigmoid layers, 1/(2m) * sum (z - x)**2,
    ``lam/2 * sum W**2``, ``beta * sum KL(rho || rho_hat)``; with ``tied``, no biases and the
    decoder is ``W1.T``."""
    rng = np.random.default_rng(seed)
    x = rng.random((m, n_in))
    r = np.sqrt(6 / (n_in + hidden + 1))
    params = {"W1": rng.uniform(-r, r, (n_in, hidden)), "b1": rng.uniform(-0.1, 0.1, hidden),
              "W2": rng.uniform(-r, r, (hidden, n_in)), "b2": rng.uniform(-0.1, 0.1, n_in)}
    if tied:
        params = {"W1": params["W1"]}

    def decoder(p):
        return p["W1"].T if tied else p["W2"]

    def forward(p):
        a = sigmoid(x @ p["W1"] + (0 if tied else p["b1"]))  # (m, hidden)
        z = sigmoid(a @ decoder(p) + (0 if tied else p["b2"]))  # (m, n_in)
        return a, z

    def loss(p):
        a, z = forward(p)
        rho_hat = a.mean(axis=0)
        kl = rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))
        decay = sum(np.sum(p[k] ** 2) for k in p if k.startswith("W"))
        return float(0.5 / m * np.sum((z - x) ** 2) + lam / 2 * decay + beta * np.sum(kl))

    def grad(p, bug=None):
        a, z = forward(p)
        rho_hat = a.mean(axis=0)
        d3 = (z - x) * z * (1 - z) / m  # (m, n_in)
        sparse = beta / m * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))
        if bug == "sparsity_missing":
            sparse = 0.0
        # the mirror mistake: the encoder W1 (n_in, hidden) where W2.T belongs, same shape
        back = p["W1"] if bug == "backprop_through_mirror_weight" else decoder(p).T
        d2 = (d3 @ back + sparse) * a * (1 - a)  # (m, hidden)
        encoder_use = x.T @ d2
        decoder_use = (a.T @ d3).T
        if tied:
            use = {"tied_decoder_path_missing": encoder_use,
                   "tied_encoder_path_missing": decoder_use}.get(bug, encoder_use + decoder_use)
            return {"W1": use + lam * p["W1"]}
        return {"W1": encoder_use + lam * p["W1"], "b1": d2.sum(axis=0),
                "W2": a.T @ d3 + lam * p["W2"], "b2": d3.sum(axis=0)}

    bugs = (("tied_decoder_path_missing", "tied_encoder_path_missing") if tied
            else ("sparsity_missing", "backprop_through_mirror_weight"))
    return UserNet(params, x, None, loss, grad, bugs)


def matlab_autoencoder(m: int = 30, n_in: int = 8, hidden: int = 5, seed: int = 3) -> UserNet:
    """An autoencoder in the MATLAB course's layout: examples as columns of X (n_in, m),
    ``Theta1`` (hidden, n_in + 1) and ``Theta2`` (n_in, hidden + 1) with the biases as column
    1, sigmoid layers, ``1/(2m) * sum (h - X).^2``; the bug sends the error back through
    ``Theta1`` (the mirrored weight, whose shapes fit) instead of ``Theta2``."""
    rng = np.random.default_rng(seed)
    x = rng.random((n_in, m))
    params = {"Theta1": rng.uniform(-0.5, 0.5, (hidden, n_in + 1)),
              "Theta2": rng.uniform(-0.5, 0.5, (n_in, hidden + 1))}

    def forward(p):
        a1 = np.vstack([np.ones((1, m)), x])  # (n_in + 1, m)
        a2 = np.vstack([np.ones((1, m)), sigmoid(p["Theta1"] @ a1)])  # (hidden + 1, m)
        return a1, a2, sigmoid(p["Theta2"] @ a2)  # h: (n_in, m)

    def loss(p):
        return float(0.5 / m * np.sum((forward(p)[2] - x) ** 2))

    def grad(p, bug=None):
        a1, a2, h = forward(p)
        d3 = (h - x) * h * (1 - h)  # (n_in, m)
        back = (p["Theta1"][:, 1:] if bug == "backprop_through_mirror_weight"
                else p["Theta2"][:, 1:].T)  # (hidden, n_in)
        d2 = (back @ d3) * a2[1:] * (1 - a2[1:])  # (hidden, m)
        return {"Theta1": d2 @ a1.T / m, "Theta2": d3 @ a2.T / m}

    return UserNet(params, x, None, loss, grad, ("backprop_through_mirror_weight",))


def deep_classifier(m: int = 40, sizes: tuple[int, ...] = (6, 5, 5, 3), lam: float = 0.05,
                    seed: int = 4) -> UserNet:
    """A numpy classifier with two hidden layers of different activations (relu, then tanh),
    a softmax output, mean cross-entropy over 0-based labels and ``lam/2 * sum W**2``; the bug
    sends the error back through the square ``W2`` untransposed (``d @ W2`` for ``d @ W2.T``)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, sizes[0]))
    y = rng.integers(0, sizes[-1], size=m)
    params = {}
    for k in range(1, len(sizes)):
        params[f"W{k}"] = rng.normal(size=(sizes[k - 1], sizes[k])) / np.sqrt(sizes[k - 1])
        params[f"b{k}"] = rng.normal(size=sizes[k]) * 0.1
    Y = np.eye(sizes[-1])[y]

    def forward(p):
        h1 = np.maximum(x @ p["W1"] + p["b1"], 0.0)  # (m, sizes[1])
        h2 = np.tanh(h1 @ p["W2"] + p["b2"])  # (m, sizes[2])
        s = h2 @ p["W3"] + p["b3"]
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return h1, h2, e / e.sum(axis=1, keepdims=True)

    def loss(p):
        probs = forward(p)[2]
        decay = sum(np.sum(p[f"W{k}"] ** 2) for k in range(1, len(sizes)))
        return float(-np.mean(np.log(probs[np.arange(m), y])) + lam / 2 * decay)

    def grad(p, bug=None):
        h1, h2, probs = forward(p)
        d3 = (probs - Y) / m  # (m, K)
        d2 = d3 @ p["W3"].T * (1 - h2**2)  # (m, sizes[2])
        back = p["W2"] if bug == "backprop_untransposed" else p["W2"].T  # (5, 5): both fit
        d1 = d2 @ back * (h1 > 0)  # (m, sizes[1])
        out = {}
        for k, (a, d) in enumerate(((x, d1), (h1, d2), (h2, d3)), start=1):
            out[f"W{k}"] = a.T @ d + lam * p[f"W{k}"]
            out[f"b{k}"] = d.sum(axis=0)
        return out

    return UserNet(params, x, y, loss, grad, ("backprop_untransposed",))
