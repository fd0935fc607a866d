"""Spec: a tensor whose probes were mostly excluded at kinks is not reported as checked.

Excluding a probe at a kink says nothing about the gradient there; a tensor passed on the few
probes left would claim what the check never measured. Such a tensor reads ``unverified`` in
the table (``TensorResult.verified`` is False), the headline names it, and its kink note says
that an error in an excluded probe goes unseen.
"""

from __future__ import annotations

import numpy as np

import gradproof as gp


def test_a_tensor_mostly_at_its_kinks_reads_unverified_but_passes():
    # relu(w) + relu(-w)/2 at w = 0: one-sided slopes 1 and -1/2, and the analytic value 0
    # (relu'(0) = 0) lies between them: a valid subgradient, excluded at the point.
    def loss(p):
        w = p["w"]
        return float(np.sum(np.maximum(w, 0) + 0.5 * np.maximum(-w, 0)) + np.sum(p["v"] ** 2))

    def grad(p):
        w = p["w"]
        return {"w": (w > 0) - 0.5 * (w < 0), "v": 2 * p["v"]}

    params = {"w": np.array([0.0, 0.0, 0.0, 0.0, 1.0]), "v": np.ones(3)}
    # as arrays: a gradient function would be checked again off the kinks (test_moved_point)
    report = gp.check_gradient(loss, grad(params), params, mode="full")
    w = report.tensor("w")
    assert (w.excluded, w.checked) == (4, 1)
    assert not w.verified and w.passed and w.verdict == "unverified"
    assert report.tensor("v").verified and report.tensor("v").verdict == "ok"
    assert report.passed, str(report)
    note = next(f for f in report.findings_of("kink") if f.tensor == "w")
    assert "w could not be verified" in note.message and not note.details["verified"]
    assert w.to_dict()["verified"] is False


def test_a_tensor_whose_every_difference_was_put_down_to_kinks_reads_unverified():
    # A loss varying faster than any step (period 6e-9): every difference keeps changing as
    # the step shrinks and is excluded as unresolved; nothing about w was verified.
    def loss(p):
        return float(np.sum(np.sin(1e9 * p["w"])) * 1e-9)

    def grad(p):
        return {"w": np.cos(1e9 * p["w"])}

    report = gp.check_gradient(loss, grad, {"w": np.linspace(0.1, 0.2, 5)}, mode="full")
    w = report.tensor("w")
    assert w.excluded == 5 and w.checked == 0
    assert not w.verified and w.verdict == "unverified"
    assert str(report).startswith("gradient check (full): PASSED (w unverified: mostly excluded")
    assert "an error in an excluded one goes unseen" in report.findings_of("kink")[0].message
