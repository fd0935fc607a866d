"""The MATLAB course's digit classifier, its cost and gradient exported the way its users save them.

Writes ``course_classifier.mat`` with ``Theta1`` (25x785, the bias as column 1), ``Theta2``
(10x26), ``X`` (500 MNIST images as rows), ``y`` (labels 1..10, a column), ``lambda``, the cost
``J`` and the hand-written gradients ``Theta1_grad`` and ``Theta2_grad``, with one classic
mistake: the hidden slope taken at the activation, ``sigmoidGradient(a2)``, where
``sigmoidGradient(z2)`` belongs. ``gradproof compare course_classifier.mat`` names it.
"""

from __future__ import annotations

import numpy as np
from scipy.io import savemat
from scipy.special import expit as sigmoid

import gradproof as gp


def sigmoid_gradient(z: np.ndarray) -> np.ndarray:
    g = sigmoid(z)
    return g * (1 - g)


rng = np.random.default_rng(0)
images, digits = gp.load_mnist("train", limit=500)
X = images  # (500, 784), examples as rows
y = (digits + 1).reshape(-1, 1)  # (500, 1): labels 1..10
m, lam = X.shape[0], 1.0
Theta1 = rng.uniform(-0.12, 0.12, (25, 785))  # (25, 785): the bias as column 1
Theta2 = rng.uniform(-0.12, 0.12, (10, 26))  # (10, 26)
Y = np.eye(10)[y.ravel() - 1]  # (500, 10): one-hot rows

a1 = np.hstack([np.ones((m, 1)), X])  # (500, 785)
z2 = a1 @ Theta1.T  # (500, 25)
a2 = np.hstack([np.ones((m, 1)), sigmoid(z2)])  # (500, 26)
h = sigmoid(a2 @ Theta2.T)  # (500, 10)
J = -np.sum(Y * np.log(h) + (1 - Y) * np.log(1 - h)) / m + lam / (2 * m) * (
    np.sum(Theta1[:, 1:] ** 2) + np.sum(Theta2[:, 1:] ** 2))
d3 = h - Y  # (500, 10)
d2 = (d3 @ Theta2[:, 1:]) * sigmoid_gradient(a2[:, 1:])  # (500, 25): the slope at a2, a bug
Theta1_grad = d2.T @ a1 / m  # (25, 785)
Theta2_grad = d3.T @ a2 / m  # (10, 26)
Theta1_grad[:, 1:] += lam / m * Theta1[:, 1:]
Theta2_grad[:, 1:] += lam / m * Theta2[:, 1:]

savemat("course_classifier.mat", {
    "X": X, "y": y.astype(float), "Theta1": Theta1, "Theta2": Theta2, "lambda": lam, "J": J,
    "Theta1_grad": Theta1_grad, "Theta2_grad": Theta2_grad,
})
