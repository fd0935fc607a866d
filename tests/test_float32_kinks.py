"""Spec: a relu loss evaluated in float32 fails a wrong gradient, and excludes no smooth entry.

A float32 loss resolves a gradient only to about 4e-3 of its largest entry, and no smaller
step can confirm a failure. A relu anywhere in the network makes some steps cross a kink; that
must not excuse the failures of a wrong gradient elsewhere (a kink hidden in a probe's rounding
is an accident of that probe, not of most of a tensor). The classifier below is the course's
two-layer network: ``h = relu(X @ W1 + b1)``, softmax cross-entropy averaged over N examples,
plus ``reg * (sum W1**2 + sum W2**2)``, its loss rounding its parameters to the dtype it is
given. Its hand-written gradient is confirmed by autograd in float64 first.
"""

from __future__ import annotations

from collections.abc import Callable

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad as autograd_grad

import gradproof as gp

MODES = ("auto", "full", "sample", "directional")

# The activation and its derivative from the pre-activation z and output a.
ACTIVATIONS: dict[str, tuple[Callable, Callable, Callable]] = {
    "relu": (lambda z: np.maximum(0, z), lambda z, a: (z > 0).astype(z.dtype),
             lambda z: anp.where(z > 0, z, 0.0)),
    "tanh": (np.tanh, lambda z, a: 1 - a * a, anp.tanh),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z, a: a * (1 - a),
                lambda z: 1 / (1 + anp.exp(-z))),
}

# The planted mistakes, each a change of the correct gradient (same shapes).
BUGS: dict[str, Callable[[dict, dict, float], None]] = {
    # reg * W where the loss has reg * sum W**2: the weight decay's term halved
    "half_decay": lambda g, p, reg: g.update(W1=g["W1"] - reg * p["W1"], W2=g["W2"] - reg * p["W2"]),
    # W1 is square: the outer product taken the wrong way round
    "transposed": lambda g, p, reg: g.update(W1=g["W1"].T.copy()),
    "scaled": lambda g, p, reg: g.update(W2=1.5 * g["W2"]),
    # the bias's term left out of the backprop
    "missing_bias": lambda g, p, reg: g.update(b1=np.zeros_like(g["b1"])),
}


class Classifier:
    """The two-layer classifier on inputs ``x`` (N, D) with labels ``y``, at ``params``."""

    def __init__(self, x: np.ndarray, y: np.ndarray, params: dict, activation: str = "relu",
                 reg: float = 0.1) -> None:
        self.x, self.y, self.params = x, y, params
        self.n, self.dtype = x.shape[0], x.dtype
        self.activation, self.reg = activation, reg

    @classmethod
    def random(cls, seed: int, activation: str = "relu", dtype: type = np.float32) -> Classifier:
        """Random sizes and a random point; W1 square, so that a transposed gradient keeps its
        shape."""
        rng = np.random.default_rng(seed)
        n, d, c = int(rng.integers(10, 30)), int(rng.integers(6, 14)), int(rng.integers(3, 6))
        params = {
            "W1": (0.1 * rng.standard_normal((d, d))).astype(dtype),
            "b1": np.zeros(d, dtype),
            "W2": (0.1 * rng.standard_normal((d, c))).astype(dtype),
            "b2": np.zeros(c, dtype),
        }
        return cls(rng.standard_normal((n, d)).astype(dtype), rng.integers(c, size=n), params,
                   activation)

    def _forward(self, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        act = ACTIVATIONS[self.activation][0]
        z = self.x @ p["W1"] + p["b1"]  # (N, D)
        a = act(z)
        s = a @ p["W2"] + p["b2"]  # (N, C)
        s = s - s.max(axis=1, keepdims=True)
        prob = np.exp(s)
        prob /= prob.sum(axis=1, keepdims=True)
        return z, a, prob

    def _cast(self, p: dict) -> dict:
        return {k: np.asarray(v, self.dtype) for k, v in p.items()}

    def loss(self, p: dict) -> float:
        p = self._cast(p)
        _, _, prob = self._forward(p)
        data = -np.log(prob[np.arange(self.n), self.y]).mean()
        return data + self.reg * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))

    def grad(self, p: dict, bug: str | None = None) -> dict:
        p = self._cast(p)
        z, a, prob = self._forward(p)
        d_s = prob.copy()
        d_s[np.arange(self.n), self.y] -= 1
        d_s /= self.n  # (N, C) dJ/ds
        d_z = (d_s @ p["W2"].T) * ACTIVATIONS[self.activation][1](z, a)  # (N, D)
        g = {
            "W1": self.x.T @ d_z + 2 * self.reg * p["W1"],  # (D, D), like W1
            "b1": d_z.sum(axis=0),
            "W2": a.T @ d_s + 2 * self.reg * p["W2"],  # (D, C), like W2
            "b2": d_s.sum(axis=0),
        }
        if bug is not None:
            BUGS[bug](g, p, self.reg)
        return g

    def oracle(self) -> dict:
        """The gradient by autograd, in float64, written from the math alone."""
        act = ACTIVATIONS[self.activation][2]
        x, y, n = self.x.astype(np.float64), self.y, self.n

        def objective(p):
            s = anp.dot(act(anp.dot(x, p["W1"]) + p["b1"]), p["W2"]) + p["b2"]
            log_prob = s - anp.log(anp.sum(anp.exp(s), axis=1, keepdims=True))
            data = -anp.mean(log_prob[np.arange(n), y])
            return data + self.reg * (anp.sum(p["W1"] ** 2) + anp.sum(p["W2"] ** 2))

        return autograd_grad(objective)({k: v.astype(np.float64) for k, v in self.params.items()})

    def check(self, mode: str, bug: str | None = None) -> gp.GradReport:
        return gp.check_gradient(self.loss, lambda p: self.grad(p, bug), self.params, mode=mode,
                                 seed=0)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_hand_written_gradient_matches_autograd(seed, activation):
    net = Classifier.random(seed, activation, np.float64)
    truth = net.oracle()
    for name, g in net.grad(net.params).items():
        np.testing.assert_allclose(g, truth[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_the_course_classifier_in_float32_fails_its_halved_weight_decay(mode):
    # The case as first reported: 20 examples, 12 inputs, 20 relu units, 4 classes; the
    # wrong gradient passed auto with 219 of W1's 240 and 78 of W2's 80 entries excluded.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 12)).astype(np.float32)
    y = rng.integers(4, size=20)
    params = {"W1": (0.1 * rng.standard_normal((12, 20))).astype(np.float32),
              "b1": np.zeros(20, np.float32)}
    params |= {"W2": (0.1 * rng.standard_normal((20, 4))).astype(np.float32),
               "b2": np.zeros(4, np.float32)}
    net = Classifier(x, y, params)
    correct, wrong = net.check(mode), net.check(mode, "half_decay")
    assert correct.passed, str(correct)
    assert not wrong.passed, str(wrong)
    assert not wrong.tensor("W2").passed, str(wrong)
    # The loss is smooth in W2 (the relu lies before it): none of its entries is a kink.
    assert wrong.tensor("W2").excluded == correct.tensor("W2").excluded == 0, str(wrong)
    # W1 crosses kinks, a few of its entries for either gradient: not most of them.
    assert all(t.verified for t in wrong.tensors + correct.tensors), str(wrong)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bug", sorted(BUGS))
@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_gradient_of_a_relu_classifier_fails(mode, seed, bug, dtype):
    net = Classifier.random(seed, "relu", dtype)
    report = net.check(mode, bug)
    assert not report.passed, str(report)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("mode", MODES)
def test_the_correct_gradient_of_a_relu_classifier_passes(mode, seed, dtype):
    report = Classifier.random(seed, "relu", dtype).check(mode)
    assert report.passed, str(report)


@pytest.mark.parametrize("bug", [None, *sorted(BUGS)])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("mode", MODES)
def test_a_smooth_float32_classifier_has_no_kink(mode, activation, bug):
    report = Classifier.random(5, activation, np.float32).check(mode, bug)
    assert report.passed is (bug is None), str(report)
    assert not report.findings_of("kink"), str(report)
    assert all(t.excluded == 0 for t in report.tensors), str(report)
