"""A loss with a batched ``moves`` method (as ``gradproof.octave``'s runner has) is checked
exactly as the same loss called point by point: the same points, the same values, the same
report; only the number of calls differs. The noise measurement and the solver-accuracy line
(``engine.noise``) send their points together (``Objective.at_points``)."""

from __future__ import annotations

import numpy as np
import pytest
from test_loss_noise import fp_grad, fp_loss, fp_point

import gradproof as gp
from gradproof.engine import objective
from gradproof.errors import InputError
from gradproof.finite_diff import NOISE_POINTS


class Batched:
    """``loss`` of a flat vector, also evaluated at many points near ``base`` per ``moves``
    call; records each call's number of points, and the one-point calls."""

    def __init__(self, loss, base: np.ndarray) -> None:
        self.loss, self.base = loss, base
        self.batches: list[int] = []
        self.single = 0

    def __call__(self, theta: np.ndarray) -> float:
        self.single += 1
        return self.loss(theta)

    def moves(self, positions: np.ndarray, start: np.ndarray, values: np.ndarray) -> np.ndarray:
        self.batches.append(len(start) - 1)
        out = []
        for k in range(len(start) - 1):
            theta = self.base.copy()
            piece = slice(start[k], start[k + 1])
            theta[positions[piece]] = values[piece]
            out.append(self.loss(theta))
        return np.array(out)


def rosenbrock(theta):
    return float(np.sum(100 * (theta[1:] - theta[:-1] ** 2) ** 2 + (1 - theta[:-1]) ** 2))


def rosenbrock_grad(theta):
    g = np.zeros_like(theta)
    g[:-1] = -400 * theta[:-1] * (theta[1:] - theta[:-1] ** 2) - 2 * (1 - theta[:-1])
    g[1:] += 200 * (theta[1:] - theta[:-1] ** 2)
    return g


def summary(report) -> list:
    return [
        report.passed, report.loss_evaluations,
        [(t.name, t.checked, t.max_abs_error, t.max_rel_error, t.passed) for t in report.tensors],
        [(f.kind, f.tensors, f.message) for f in report.findings],
    ]


@pytest.mark.parametrize("mode", ["full", "auto"])
@pytest.mark.parametrize("seed", [0, 1])
def test_batched_loss_gives_the_same_report_and_measures_noise_in_one_call(mode, seed):
    theta = np.random.default_rng(seed).uniform(-1.5, 1.5, size=7 + 3 * seed)
    plain = gp.check_gradient(rosenbrock, rosenbrock_grad(theta), theta, mode=mode, seed=seed)
    batched = Batched(rosenbrock, theta)
    report = gp.check_gradient(batched, rosenbrock_grad(theta), theta, mode=mode, seed=seed)
    assert summary(report) == summary(plain)
    # Point by point: only J at the given parameters, twice at the start and once at the end
    # (to see nondeterminism, and a loss whose state drifts).
    assert batched.single == 3
    # The first batch is the noise measurement: every point of the line but the given one.
    assert batched.batches[0] == NOISE_POINTS - 1


def test_points_beyond_the_entries_per_call_are_split_into_several_calls(monkeypatch):
    theta = np.random.default_rng(2).uniform(-1.5, 1.5, size=6)
    plain = gp.check_gradient(rosenbrock, rosenbrock_grad(theta), theta, mode="full")
    monkeypatch.setattr(objective, "_POINT_ENTRIES", 3 * theta.size)
    batched = Batched(rosenbrock, theta)
    report = gp.check_gradient(batched, rosenbrock_grad(theta), theta, mode="full")
    assert summary(report) == summary(plain)
    assert batched.batches[:3] == [3, 3, NOISE_POINTS - 7]


def test_a_solver_losss_accuracy_is_measured_the_same_in_batches():
    p = fp_point(1)
    theta = p["theta"]
    plain = gp.check_gradient(fp_loss, fp_grad, p)

    def loss(flat):
        return fp_loss({"theta": flat})

    batched = Batched(loss, theta)
    report = gp.check_gradient(batched, fp_grad(p)["theta"], theta)
    note = [f for f in report.findings if f.kind == "precision" and f.tensors == ("loss",)]
    want = [f for f in plain.findings if f.kind == "precision" and f.tensors == ("loss",)]
    assert [f.details for f in note] == [f.details for f in want] != []
    assert [t.max_abs_error for t in report.tensors] == [t.max_abs_error for t in plain.tensors]
    assert batched.single == 3


def test_a_batched_call_that_raises_names_the_point():
    theta = np.ones(4)

    class Failing(Batched):
        def moves(self, positions, start, values):
            raise ValueError("solver diverged")

    with pytest.raises(InputError, match=r"solver diverged.*measuring the loss's rounding noise"):
        gp.check_gradient(Failing(rosenbrock, theta), rosenbrock_grad(theta), theta)
