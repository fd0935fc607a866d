"""Losses averaged over every entry of the output, as PyTorch's ``MSELoss`` and ``BCELoss``
and Keras's losses take them (``np.mean((out - y)**2)``), written by hand: identified by
``gp.check_network`` as members of the family, and their typical mistakes named."""

from __future__ import annotations

import numpy as np
import pytest

import gradproof as gp

M, D, H, O = 16, 5, 8, 3


def _regression(bug: str | None = None, outputs: int = O):
    """A tanh regression net, examples as rows, with the mean squared error over every entry."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(M, D)), rng.normal(size=(M, outputs))
    params = {"W1": 0.5 * rng.normal(size=(D, H)), "b1": np.zeros(H),
              "W2": 0.5 * rng.normal(size=(H, outputs)), "b2": np.zeros(outputs)}

    def forward(p):
        z2 = x @ p["W1"] + p["b1"]
        a2 = np.tanh(z2)
        return z2, a2, a2 @ p["W2"] + p["b2"]

    def loss(p):
        return np.mean((forward(p)[2] - y) ** 2)

    def grad(p):
        z2, a2, out = forward(p)
        d3 = 2 * (out - y) / (M if bug == "per_example" else out.size)
        d2 = d3 @ p["W2"].T * (1 - (z2 if bug == "slope_of_z" else a2) ** 2)
        return {"W1": x.T @ d2, "b1": d2.sum(0), "W2": a2.T @ d3, "b2": d3.sum(0)}

    return loss, grad, params, x, y


def _named(report: gp.GradReport, mistake: str) -> set[str]:
    return {f.tensor for f in report.findings if f.details.get("mistake") == mistake}


def test_the_mean_over_every_output_entry_is_identified_and_passes():
    loss, grad, params, x, y = _regression()
    report = gp.check_network(loss, grad, params, x, y)
    assert report.passed, str(report)
    assert report.mode == "network"
    assert "squared error averaged over the 3 outputs and averaged over 16 examples" in (
        report.model["description"]), report.model


def test_a_delta_divided_by_the_examples_alone_is_named_with_its_line():
    loss, grad, params, x, y = _regression("per_example")
    report = gp.check_network(loss, grad, params, x, y)
    assert not report.passed
    assert _named(report, "outputs_mean_never") == {"W1", "b1", "W2", "b2"}, str(report)
    finding = next(f for f in report.findings if f.details.get("mistake") == "outputs_mean_never")
    assert finding.kind == "scaled"
    assert "/ 3" in finding.details["numpy"], finding.details


def test_the_slope_formula_of_the_activation_fed_the_pre_activation_is_named():
    loss, grad, params, x, y = _regression("slope_of_z")
    report = gp.check_network(loss, grad, params, x, y)
    assert not report.passed
    assert _named(report, "slope_formula_of_pre_activation") == {"W1", "b1"}, str(report)
    assert report.tensor("W2").passed and report.tensor("b2").passed


def test_with_two_outputs_the_course_form_names_the_same_factor():
    # np.mean over (m, 2) entries is 1/2 * sum / m: the same loss and gradient
    loss, grad, params, x, y = _regression(outputs=2)
    report = gp.check_network(loss, grad, params, x, y)
    assert report.passed, str(report)
    assert "1/2 * squared error summed over the 2 outputs and averaged over 16 examples" in (
        report.model["description"]), report.model


@pytest.mark.parametrize("bug", [None, "per_example", "slope_again"])
def test_a_multi_label_classifier_with_the_mean_binary_cross_entropy(bug):
    """Sigmoid outputs and Keras's binary cross-entropy: the mean over every label."""
    rng = np.random.default_rng(7)
    x, y = rng.random((12, 6)), (rng.random((12, 4)) < 0.5).astype(float)
    params = {"W1": rng.normal(size=(6, 5)), "b1": rng.normal(size=5),
              "W2": rng.normal(size=(5, 4)), "b2": rng.normal(size=4)}
    sigmoid = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731

    def loss_and_grad(p):
        a2 = sigmoid(x @ p["W1"] + p["b1"])
        a3 = sigmoid(a2 @ p["W2"] + p["b2"])
        value = -np.mean(y * np.log(a3) + (1 - y) * np.log(1 - a3))
        d3 = (a3 - y) / (12 if bug == "per_example" else a3.size)
        if bug == "slope_again":
            d3 = d3 * a3 * (1 - a3)
        d2 = d3 @ p["W2"].T * a2 * (1 - a2)
        return value, {"W1": x.T @ d2, "b1": d2.sum(0), "W2": a2.T @ d3, "b2": d3.sum(0)}

    report = gp.check_network(loss_and_grad, None, params, x, y)
    assert "cross-entropy averaged over the 4 outputs and averaged over 12 examples" in (
        report.model["description"]), report.model
    assert report.passed == (bug is None), str(report)
    if bug == "per_example":
        assert _named(report, "outputs_mean_never") == {"W1", "b1", "W2", "b2"}, str(report)
    if bug == "slope_again":  # the fix line divides by every entry of the output, not by m
        (finding, *_) = [f for f in report.findings
                         if f.details.get("mistake") == "cross_entropy_slope_again"]
        assert "d3 = (a3 - Y) / (m * 4)" in finding.details["numpy"], finding.details
