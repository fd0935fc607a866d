"""Entries whose steps crossed a kink, checked again at a point moved off the kinks, where the
gradient is a function of the point (``grad`` callable, or a loss that returns it)."""

from __future__ import annotations

import numpy as np
import pytest
from autograd import grad as autograd_grad
from autograd import numpy as anp

import gradproof as gp


def _relu_net(seed: int, dtype=np.float64):
    """A relu regression net whose first-layer biases put some units of example 0 exactly at
    their kink, with its hand-written loss and gradient (relu'(0) = 0, as backprop writes it)."""
    rng = np.random.default_rng(seed)
    x, t = rng.normal(size=(3, 5)), rng.normal(size=(3, 2))
    params = {"W1": rng.normal(size=(5, 6)), "b1": np.zeros(6), "W2": rng.normal(size=(6, 2))}
    params["b1"][:4] = -(x[0] @ params["W1"])[:4]  # units 0-3 of example 0 at 0 exactly
    params = {k: v.astype(dtype) for k, v in params.items()}

    def loss(p):
        h = np.maximum(x @ p["W1"] + p["b1"], 0)
        return 0.5 * float(np.sum((h @ p["W2"] - t) ** 2))

    def grad(p):
        s = x @ p["W1"] + p["b1"]
        h = np.maximum(s, 0)
        d = h @ p["W2"] - t
        dh = d @ p["W2"].T * (s > 0)
        return {"W1": x.T @ dh, "b1": dh.sum(0), "W2": h.T @ d}

    return params, loss, grad, x, t


def _planted(grad, size: float):
    def wrong(p):
        g = grad(p)
        g["b1"] = g["b1"].copy()
        g["b1"][1] += size * float(np.max(np.abs(g["b1"])))  # a unit at its kink
        return g
    return wrong


def _moved(report, kind):
    return [f for f in report.findings if f.kind == kind and "moved" in f.details]


@pytest.mark.parametrize("seed", range(6))
def test_the_hand_written_gradient_matches_autograd_off_the_kinks(seed):
    params, _, grad, x, t = _relu_net(seed)
    moved = {k: v + 1e-3 * np.random.default_rng(seed).normal(size=v.shape)
             for k, v in params.items()}

    def oracle(p):
        h = anp.maximum(anp.dot(x, p["W1"]) + p["b1"], 0)
        return 0.5 * anp.sum((anp.dot(h, p["W2"]) - t) ** 2)

    truth, mine = autograd_grad(oracle)(moved), grad(moved)
    for name in params:
        np.testing.assert_allclose(mine[name], truth[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode", ["auto", "full"])
def test_a_wrong_entry_at_a_kink_is_caught_at_the_moved_point(seed, mode):
    params, loss, grad, *_ = _relu_net(seed)
    report = gp.check_gradient(loss, _planted(grad, 1e-4), params, mode=mode, seed=seed)
    assert not report.passed, str(report)
    assert not report.tensor("b1").passed
    failed = _moved(report, "mismatch")
    assert failed and failed[0].tensors == ("b1",), str(report)
    assert failed[0].details["index"] == (1,)


@pytest.mark.parametrize("seed", range(6))
def test_the_right_gradient_is_confirmed_at_the_moved_point(seed):
    params, loss, grad, *_ = _relu_net(seed)
    report = gp.check_gradient(loss, grad, params, seed=seed)
    assert report.passed, str(report)
    confirmed = _moved(report, "kink")
    assert any(f.tensors == ("b1",) for f in confirmed), str(report)
    assert report.tensor("b1").verified
    # the given point's note no longer says what the moved point verified could not be
    assert not any("could not be verified" in f.message for f in report.findings), str(report)


def test_a_loss_that_returns_its_gradient_is_checked_at_the_moved_point_too():
    params, loss, grad, *_ = _relu_net(1)
    wrong = _planted(grad, 1e-4)
    report = gp.check_gradient(lambda p: (loss(p), wrong(p)), None, params)
    assert _moved(report, "mismatch") and not report.passed


def test_gradients_given_as_arrays_hold_no_evidence_elsewhere():
    params, loss, grad, *_ = _relu_net(1)
    report = gp.check_gradient(loss, _planted(grad, 1e-4)(params), params)
    assert not _moved(report, "mismatch") and not _moved(report, "kink")


def test_a_gradient_function_that_raises_at_the_moved_point_leaves_a_note():
    params, loss, grad, *_ = _relu_net(2)
    calls = []

    def once(p):
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("only at the given point")
        return grad(p)

    report = gp.check_gradient(loss, once, params)
    (note,) = [f for f in report.findings if "error" in f.details]
    assert "ValueError: only at the given point" in note.message
    assert report.passed, str(report)


def test_a_float32_loss_is_not_checked_again():
    params, loss, grad, *_ = _relu_net(3)

    def loss32(p):
        return loss({k: np.asarray(v, np.float32) for k, v in p.items()})

    report = gp.check_gradient(loss32, grad, {k: v.astype(np.float32) for k, v in params.items()})
    assert not _moved(report, "kink") and not _moved(report, "mismatch")


@pytest.mark.parametrize("bad", ["shape", "nan_loss"])
def test_bad_output_at_the_moved_point_leaves_a_note_not_a_traceback(bad):
    params, loss, grad, *_ = _relu_net(4)
    given = {k: v.copy() for k, v in params.items()}

    def moved(p):  # the check itself moves one entry at a time; the moved point, every one
        return np.count_nonzero(p["W1"] != given["W1"]) > 1

    def odd_grad(p):
        g = grad(p)
        return {**g, "b1": g["b1"][:-1]} if bad == "shape" and moved(p) else g

    def odd_loss(p):
        return float("nan") if bad == "nan_loss" and moved(p) else loss(p)

    report = gp.check_gradient(odd_loss, odd_grad, params)
    (note,) = [f for f in report.findings if "error" in f.details]
    assert "not checked again at a point moved off the kinks" in note.message
