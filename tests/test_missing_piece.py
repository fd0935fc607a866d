"""Specs for gradproof.missing_piece: a backward that drops one term of a sum in one output.

Layers of the form out = g(x) + f(x), with f one of the catalogued pieces, whose backward
leaves f's term out: check_vjp and the PyTorch adapter name the term (``missing_term``) and
the fix. The correct backward is autograd's gradient of sum(dout * forward); a backward wrong
in another way (a wrong derivative of the same term) is not called a missing term.
"""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import gradproof as gp
from gradproof.missing_piece import PIECES

A = 0.7

# f, its autograd form, and the piece's key in PIECES.
TERMS = {
    "sin": (np.sin, anp.sin, "sin({x})"),
    "exp": (np.exp, anp.exp, "exp({x})"),
    "tanh": (np.tanh, anp.tanh, "tanh({x})"),
    "square": (np.square, lambda x: x ** 2, "{x}**2"),
}


@pytest.mark.parametrize("term", list(TERMS))
def test_a_dropped_elementwise_term_is_named(term):
    f, af, key = TERMS[term]
    x = np.random.default_rng(0).standard_normal((4, 5))

    def backward(dout, x):
        return A * dout  # drops f'(x) * dout

    def right(dout, x):
        return autograd.grad(lambda x: anp.sum(dout * (A * x + af(x))))(x)

    forward = lambda x: A * x + f(x)  # noqa: E731
    assert gp.check_vjp(forward, right, x).passed
    report = gp.check_vjp(forward, backward, x)
    assert not report.passed
    bugs = [f for f in report.findings if f.is_bug]
    assert [(b.kind, b.tensors) for b in bugs] == [("missing_term", ("x",))]
    assert bugs[0].details["term"] == key.format(x="x")
    assert bugs[0].fix == f"dx += dout * {PIECES[key][0].format(x='x')}"


def residual(x, w):
    return x + anp.tanh(anp.dot(x, w))


def test_a_residual_blocks_dropped_skip_path_is_named():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((6, 5)), rng.standard_normal((5, 5))

    def forward(x, w):
        return residual(x, w), (x, w)

    def backward(dout, cache):
        x, w = cache
        d = dout * (1 - np.tanh(x @ w) ** 2)  # (6, 5), through the tanh branch only
        return d @ w.T, x.T @ d  # like x (the skip path's dout missing), like w

    oracle = autograd.grad(lambda x, w: anp.sum(np.ones((6, 5)) * residual(x, w)), (0, 1))(x, w)
    d = np.ones((6, 5)) * (1 - np.tanh(x @ w) ** 2)
    np.testing.assert_allclose(oracle[1], x.T @ d)
    report = gp.check_vjp(forward, backward, (x, w))
    assert [t.name for t in report.tensors if not t.passed] == ["x"]
    bugs = [f for f in report.findings if f.is_bug]
    assert [(b.kind, b.tensors, b.details["term"]) for b in bugs] == [("missing_term", ("x",), "x")]
    assert bugs[0].fix == "dx += dout"


def test_a_wrong_derivative_of_the_term_is_not_a_missing_term():
    x = np.random.default_rng(2).standard_normal((3, 4))
    report = gp.check_vjp(lambda x: A * x + np.sin(x), lambda d, x: d * (A - np.cos(x)), x)
    assert not report.passed
    assert "missing_term" not in {f.kind for f in report.findings}


def test_the_torch_adapter_names_a_dropped_term():
    torch = pytest.importorskip("torch")
    from gradproof.torch import check_function

    class AffineSin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return A * x + torch.sin(x)

        @staticmethod
        def backward(ctx, grad_output):
            return A * grad_output  # drops cos(x) * grad_output

    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_()
    report = check_function(AffineSin.apply, x, names=["x"])
    bugs = [f for f in report.findings if f.is_bug]
    assert [(b.kind, b.details.get("term")) for b in bugs] == [("missing_term", "sin(x)")]
    assert bugs[0].fix == "dx += grad_output * cos(x)"
