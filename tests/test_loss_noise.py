"""Specs for gradproof.engine.noise: a loss only as accurate as the solver that computes it.

Two such losses, each with its gradient from a second computation, as users write them: a
linear ODE integrated by scipy's ``solve_ivp`` at its default tolerances, its gradient from the
sensitivity equations solved the same way; and a fixed point x = tanh(W x + theta) iterated
until steps fall below 1e-6, its gradient from the implicit function theorem. Each gradient is
right only to about the solver's tolerance (the oracle, ``autograd`` on the exact solution,
confirms it to that), the loss is smooth between the places where a solver step or an
iteration count changes and jumps there. The check says so, passes the right gradients with a
``precision`` note on ``loss``, and still fails an error of 1e-2. A smooth loss, and a ReLU
loss whose kinks are not jumps, get no such note.
"""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import gradproof as gp

T_END = 2.0


def ode_loss(p):
    """sum(y(T)²) for dy/dt = -k y + c, y(0) = 1, per component."""
    k, c = p["k"], p["c"]
    sol = solve_ivp(lambda t, y: -k * y + c, (0, T_END), np.ones(k.size))
    return float(np.sum(sol.y[:, -1] ** 2))


def ode_grad(p):
    """From the sensitivities s_k = dy/dk and s_c = dy/dc, solved beside y:
    ds_k/dt = -k s_k - y, ds_c/dt = -k s_c + 1."""
    k, c = p["k"], p["c"]
    n = k.size

    def rhs(t, z):
        y, sk, sc = z[:n], z[n:2 * n], z[2 * n:]
        return np.concatenate([-k * y + c, -k * sk - y, -k * sc + 1])

    sol = solve_ivp(rhs, (0, T_END), np.concatenate([np.ones(n), np.zeros(2 * n)]))
    y, sk, sc = np.split(sol.y[:, -1], 3)
    return {"k": 2 * y * sk, "c": 2 * y * sc}  # like k, like c


def ode_exact(k, c):
    """The oracle's loss: the closed-form solution y(T) = c/k + (1 - c/k) exp(-k T)."""
    y = c / k + (1 - c / k) * anp.exp(-k * T_END)
    return anp.sum(y ** 2)


W = np.random.default_rng(0).standard_normal((5, 5)) * 0.3


def fixed_point(theta, stop=1e-6):
    x = np.zeros(theta.size)
    while True:
        new = np.tanh(W @ x + theta)
        if np.max(np.abs(new - x)) < stop:
            return new
        x = new


def fp_loss(p):
    return float(np.sum(fixed_point(p["theta"]) ** 2))


def fp_grad(p):
    """x = tanh(W x + θ): (I - D W) dx = D dθ with D = 1 - x², so dJ/dθ = 2x (I - DW)⁻¹ D."""
    x = fixed_point(p["theta"])
    d = 1 - x ** 2
    jac = np.linalg.solve(np.eye(x.size) - d[:, None] * W, np.diag(d))  # (5, 5): dx/dθ
    return {"theta": 2 * x @ jac}


def fp_exact(theta):
    """The oracle's loss: the iteration run until it no longer moves in float64."""
    x = anp.zeros(theta.size)
    for _ in range(200):
        x = anp.tanh(anp.dot(W, x) + theta)
    return anp.sum(x ** 2)


def ode_point(seed):
    rng = np.random.default_rng(seed)
    return {"k": rng.uniform(0.5, 2.0, 4), "c": rng.uniform(-1.0, 1.0, 4)}


def fp_point(seed):
    return {"theta": np.random.default_rng(seed).standard_normal(5) * 0.5}


CASES = {
    "ode": (ode_loss, ode_grad, ode_point),
    "fixed-point": (fp_loss, fp_grad, fp_point),
}


def loss_notes(report):
    return [f for f in report.findings if f.kind == "precision" and f.tensors == ("loss",)]


@pytest.mark.parametrize("seed", [1, 2])
def test_the_solver_gradients_are_right_to_the_solvers_tolerance(seed):
    p = ode_point(seed)
    exact = autograd.grad(ode_exact, (0, 1))(p["k"], p["c"])
    got = ode_grad(p)
    for name, want in zip(("k", "c"), exact):
        np.testing.assert_allclose(got[name], want, rtol=0, atol=5e-2 * np.abs(want).max())
    q = fp_point(seed)
    want = autograd.grad(fp_exact)(q["theta"])
    np.testing.assert_allclose(fp_grad(q)["theta"], want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_a_right_gradient_of_a_solver_loss_passes_with_the_losss_accuracy(case, seed):
    loss, grad, point = CASES[case]
    report = gp.check_gradient(loss, grad, point(seed))
    assert report.passed
    assert not [f for f in report.findings if f.is_bug]
    (note,) = loss_notes(report)
    assert 1e-12 < note.details["relative_accuracy"] < 1e-3
    assert note.details["still_failing"] == []
    assert "only accurate to about" in note.message


@pytest.mark.parametrize("case", list(CASES))
def test_an_error_of_1e_2_is_still_caught(case):
    loss, grad, point = CASES[case]
    p = point(1)
    name = next(iter(p))

    def wrong(q):
        g = {n: v.copy() for n, v in grad(q).items()}
        g[name][1] += 1e-2 * np.abs(g[name]).max()
        return g

    report = gp.check_gradient(loss, wrong, p)
    assert not report.passed
    assert [t.name for t in report.tensors if not t.passed] == [name]
    (note,) = loss_notes(report)
    assert note.details["still_failing"] == [name]


def test_a_factor_within_the_losss_accuracy_is_not_called_scaled():
    # The peer's case: a right gradient that reads 0.9999993 times the finite differences.
    report = gp.check_gradient(
        fp_loss, lambda q: {"theta": 0.9999993 * fp_grad(q)["theta"]}, fp_point(1)
    )
    assert report.passed
    assert "scaled" not in {f.kind for f in report.findings}


def smooth_loss(p):
    return float(np.sum(np.tanh(p["w"] @ np.arange(1.0, 4.0)) ** 2))


def smooth_grad(p):
    a = np.tanh(p["w"] @ np.arange(1.0, 4.0))  # (4,)
    return {"w": np.outer(2 * a * (1 - a ** 2), np.arange(1.0, 4.0))}  # like w


def test_a_smooth_loss_with_a_wrong_gradient_gets_no_noise_note():
    p = {"w": np.random.default_rng(0).standard_normal((4, 3)) * 0.3}
    np.testing.assert_allclose(
        smooth_grad(p)["w"],
        autograd.grad(lambda w: anp.sum(anp.tanh(anp.dot(w, anp.arange(1.0, 4.0))) ** 2))(p["w"]),
    )
    report = gp.check_gradient(smooth_loss, lambda q: {"w": 1.001 * smooth_grad(q)["w"]}, p)
    assert not report.passed
    assert loss_notes(report) == []


A = np.random.default_rng(4).standard_normal((400, 6))


def relu_loss(p):
    """Many kinks along any line: sum(relu(A θ)), piecewise linear."""
    return float(np.sum(np.maximum(A @ p["theta"], 0.0)))


def test_a_relu_losss_kinks_are_not_taken_for_solver_noise():
    theta = np.random.default_rng(5).standard_normal(6)
    right = A.T @ (A @ theta > 0)
    np.testing.assert_allclose(
        right, autograd.grad(lambda t: anp.sum(anp.maximum(anp.dot(A, t), 0.0)))(theta)
    )
    wrong = right.copy()
    wrong[2] += 1e-3 * np.abs(right).max()
    report = gp.check_gradient(relu_loss, {"theta": wrong}, {"theta": theta})
    assert not report.passed
    assert loss_notes(report) == []
