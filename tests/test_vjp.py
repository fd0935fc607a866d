"""Specs for gradproof.check_vjp: a layer's backward against finite differences of its forward.

The oracle is ``autograd``: each layer's forward is written once in ``autograd.numpy`` and
its correct backward is autograd's gradient of sum(dout * forward(inputs)), on shapes drawn at
random. The planted mistakes are the ones course assignments make in ``affine_backward``:
a transposed or scaled weight gradient, dx and dw returned in each other's places, the bias
summed over the wrong axis, a backward that ignores dout or adds it where it should multiply.

A worked example, spelled out once: for out = x @ w + b and a random dout, check_vjp checks
dx = dout @ w.T, dw = x.T @ dout and db = dout.sum(axis=0) as the gradient of the scalar
J(x, w, b) = sum(dout * (x @ w + b)), entry by entry, running forward again for each entry.
"""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import gradproof as gp
from gradproof.errors import InputError


def bugs(report):
    return {(f.kind, f.tensors) for f in report.findings if f.is_bug}


# ------------------------------------------------------------------ layers and their oracle


def affine(x, w, b):
    return anp.dot(x, w) + b


def batchnorm(x, gamma, beta):
    mu = anp.mean(x, axis=0)
    var = anp.mean((x - mu) ** 2, axis=0)
    return gamma * (x - mu) / anp.sqrt(var + 1e-5) + beta


def rnn_step(x, prev_h, Wx, Wh, b):
    return anp.tanh(anp.dot(x, Wx) + anp.dot(prev_h, Wh) + b)


def lstm_step(x, prev_h, prev_c, Wx, Wh, b):
    """(next_h, next_c): two outputs, two upstream gradients."""
    H = prev_h.shape[1]
    a = anp.dot(x, Wx) + anp.dot(prev_h, Wh) + b
    i, f, o = (1 / (1 + anp.exp(-a[:, k * H:(k + 1) * H])) for k in range(3))
    g = anp.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    return o * anp.tanh(next_c), next_c


def embedding(idx, W):
    return W[idx]


def with_cache(fn):
    """The course convention: forward returns (out..., cache), the cache being the inputs."""
    def forward(*inputs):
        out = fn(*inputs)
        return (*out, inputs) if isinstance(out, tuple) else (out, inputs)
    forward.__signature__ = __import__("inspect").signature(fn)
    return forward


def oracle_backward(fn, floats):
    """backward(*douts, cache) by autograd: d/d input of sum_k sum(dout_k * out_k)."""
    def backward(*args):
        *douts, inputs = args

        def projected(*a):
            out = fn(*a)
            outs = out if isinstance(out, tuple) else (out,)
            return sum(anp.sum(d * o) for d, o in zip(douts, outs))

        return tuple(autograd.grad(projected, i)(*inputs) for i in floats)
    return backward


def layer_case(name, rng):
    """(fn, inputs, float positions) of a layer at random shapes."""
    N, D, M, H, V, T = (int(rng.integers(2, 6)) for _ in range(6))
    r = rng.standard_normal
    if name == "affine":
        return affine, (r((N, D)), r((D, M)), r(M)), (0, 1, 2)
    if name == "batchnorm":
        return batchnorm, (r((N + 2, D)), r(D), r(D)), (0, 1, 2)
    if name == "rnn_step":
        return rnn_step, (r((N, D)), r((N, H)), r((D, H)), r((H, H)), r(H)), (0, 1, 2, 3, 4)
    if name == "lstm_step":
        inputs = (r((N, D)), r((N, H)), r((N, H)), r((D, 4 * H)), r((H, 4 * H)), r(4 * H))
        return lstm_step, inputs, (0, 1, 2, 3, 4, 5)
    return embedding, (rng.integers(0, V, size=(N, T)), r((V, D))), (1,)


LAYERS = ["affine", "batchnorm", "rnn_step", "lstm_step", "embedding"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", LAYERS)
def test_a_correct_backward_passes(name, seed):
    fn, inputs, floats = layer_case(name, np.random.default_rng(seed))
    report = gp.check_vjp(with_cache(fn), oracle_backward(fn, floats), inputs, seed=seed)
    assert report.passed, str(report)
    names = [t.name for t in report.tensors]
    assert len(names) == len(floats)
    # Every entry is checked one by one at these sizes.
    assert all(t.checked == t.size for t in report.tensors)


def test_inputs_are_named_after_forward_parameters():
    fn, inputs, floats = layer_case("embedding", np.random.default_rng(0))
    report = gp.check_vjp(with_cache(fn), oracle_backward(fn, floats), inputs)
    assert [t.name for t in report.tensors] == ["W"]  # idx, an integer input, is held fixed


def test_several_outputs_missing_one_upstream_fails():
    fn, inputs, floats = layer_case("lstm_step", np.random.default_rng(3))
    right = oracle_backward(fn, floats)

    def backward(dnext_h, dnext_c, cache):  # bug: the path through next_c is dropped
        return right(dnext_h, np.zeros_like(dnext_c), cache)

    report = gp.check_vjp(with_cache(fn), backward, inputs)
    assert not report.passed
    # prev_c reaches both outputs; the evidence: with dnext_c zero, its gradient matches.
    assert ("missing_term", ("prev_c",)) in bugs(report)
    (finding,) = [f for f in report.findings if f.tensors == ("prev_c",)]
    assert finding.details == {"output": 1}


# ------------------------------------------------------------------ planted affine mistakes


def affine_forward(x, w, b):
    out = x @ w + b  # (N, M)
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)  # like x, like w, like b


def planted(change):
    def backward(dout, cache):
        x, w, b = cache
        return change(dout, x, w, b)
    return backward


def affine_inputs(n, d, m, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((d, m)), rng.standard_normal(m)


PLANTED = {
    "transposed": (
        (4, 3, 3), lambda g, x, w, b: (g @ w.T, (x.T @ g).T, g.sum(0)), {("transposed", ("w",))}
    ),
    "scaled": (
        (4, 3, 5), lambda g, x, w, b: (g @ w.T / 4, x.T @ g, g.sum(0)), {("scaled", ("x",))}
    ),
    "sign": (
        (4, 3, 5), lambda g, x, w, b: (g @ w.T, x.T @ g, -g.sum(0)), {("sign_flipped", ("b",))}
    ),
    "zero": ((4, 3, 5), lambda g, x, w, b: (g @ w.T, 0 * w, g.sum(0)), {("zero", ("w",))}),
    "swapped_shapes": (
        (4, 3, 5), lambda g, x, w, b: (x.T @ g, g @ w.T, g.sum(0)), {("swapped", ("x", "w"))}
    ),
    "swapped_values": (
        (3, 3, 3), lambda g, x, w, b: (x.T @ g, g @ w.T, g.sum(0)), {("swapped", ("x", "w"))}
    ),
    "bias_axis_shape": (
        (4, 3, 5), lambda g, x, w, b: (g @ w.T, x.T @ g, g.sum(1)), {("partial", ("b",))}
    ),
    "bias_axis_square": (
        (5, 3, 5), lambda g, x, w, b: (g @ w.T, x.T @ g, g.sum(1)), {("partial", ("b",))}
    ),
}


@pytest.mark.parametrize("case", list(PLANTED))
def test_a_planted_mistake_is_named(case):
    shape, change, expected = PLANTED[case]
    report = gp.check_vjp(affine_forward, planted(change), affine_inputs(*shape))
    assert not report.passed
    assert bugs(report) == expected, str(report)


def test_the_wrong_axis_names_the_right_one():
    change = PLANTED["bias_axis_shape"][1]
    report = gp.check_vjp(affine_forward, planted(change), affine_inputs(4, 3, 5))
    (finding,) = report.findings_of("partial")
    assert "summed over axis 1" in finding.message
    assert finding.fix == "db = dout.sum(axis=0)"
    assert report.tensor("b").checked == 0 and not report.tensor("b").passed


def test_a_right_shaped_sum_that_lacks_a_derivative_is_not_called_a_wrong_axis():
    # tanh(x @ w + b) with db = dout.sum(0): the activation's derivative is missing, and on a
    # square output dout.sum(1) has b's shape too; it is not the fix, so no `partial` claim.
    def forward(x, w, b):
        y = np.tanh(x @ w + b)
        return y, (x, w, y)

    def backward(dout, cache):
        x, w, y = cache
        da = dout * (1 - y**2)
        return da @ w.T, x.T @ da, dout.sum(0)  # bug: db misses (1 - y**2)

    report = gp.check_vjp(forward, backward, affine_inputs(5, 3, 5))
    assert not report.tensor("b").passed
    assert not report.findings_of("partial")


def test_a_backward_ignoring_dout_is_named():
    change = lambda g, x, w, b: (g @ w.T, x.T @ g, np.full(b.shape, 3.0))  # noqa: E731
    report = gp.check_vjp(affine_forward, planted(change), affine_inputs(4, 3, 5))
    assert bugs(report) == {("scaled", ("b",))}
    assert report.findings_of("scaled")[0].details["cause"] == "upstream_scale_ignored"


def test_a_backward_affine_in_dout_is_named():
    change = lambda g, x, w, b: ((g + 1) @ w.T, x.T @ g, g.sum(0))  # noqa: E731 `+` for `*`
    report = gp.check_vjp(affine_forward, planted(change), affine_inputs(4, 3, 5))
    (finding,) = report.findings_of("scaled")
    assert finding.details["cause"] == "affine_in_upstream"
    assert "affine rather than linear in dout" in finding.message


def test_a_backward_that_accumulates_is_nondeterministic():
    total = np.zeros((4, 3))

    def backward(dout, cache):
        x, w, b = cache
        total[...] += dout @ w.T  # bug: `+=` into a buffer kept between calls
        return total.copy(), x.T @ dout, dout.sum(0)

    report = gp.check_vjp(affine_forward, backward, affine_inputs(4, 3, 5))
    (finding,) = report.findings_of("nondeterministic")
    assert finding.tensors == ("x",) and "hidden state" in finding.message


# ------------------------------------------------------------------ conventions accepted


def test_gradients_keyed_dx_dw_db_pass():
    def backward(dout, cache):
        dx, dw, db = affine_backward(dout, cache)
        return {"dx": dx, "dw": dw, "db": db}

    assert gp.check_vjp(affine_forward, backward, affine_inputs(4, 3, 5)).passed


def test_no_cache_backward_gets_the_inputs_and_dict_inputs_are_keywords():
    def forward(x, w, b):
        return x @ w + b

    def backward(dout, x, w, b):
        return dout @ w.T, x.T @ dout, dout.sum(0)

    x, w, b = affine_inputs(4, 3, 5)
    assert gp.check_vjp(forward, backward, (x, w, b)).passed
    report = gp.check_vjp(forward, backward, {"b": b, "w": w, "x": x})
    # A dict is passed as keywords; a tuple of gradients still comes in forward's order.
    assert report.passed and [t.name for t in report.tensors] == ["x", "w", "b"]


def test_batchnorm_gradients_of_shape_1_by_d_are_compared_with_a_note():
    x, gamma, beta = np.random.default_rng(1).standard_normal((6, 4)), np.ones(4), np.zeros(4)
    right = oracle_backward(batchnorm, (0, 1, 2))

    def backward(dout, cache):
        dx, dgamma, dbeta = right(dout, cache)
        return dx, dgamma.reshape(1, -1), dbeta.reshape(1, -1)  # (1, D) for (D,) params

    report = gp.check_vjp(with_cache(batchnorm), backward, (x, gamma, beta))
    assert report.passed, str(report)
    assert {f.tensor for f in report.findings_of("convention")} == {"gamma", "beta"}


def test_a_given_upstream_is_used():
    x, w, b = affine_inputs(4, 3, 5)
    ones = np.ones((4, 5))
    # With dout all ones, this wrong db (a mean instead of a sum, times 4) cannot be told.
    change = lambda g, x, w, b: (g @ w.T, x.T @ g, np.full(5, 4.0))  # noqa: E731
    report = gp.check_vjp(affine_forward, planted(change), (x, w, b), upstream=ones, draws=1)
    # The linearity probe still catches it: backward ignores dout's values.
    assert bugs(report) == {("scaled", ("b",))}


def test_a_cache_that_is_an_array_needs_cache_true_and_a_scalar_output_works():
    x = np.random.default_rng(0).standard_normal((3, 4))

    def forward(x):
        y = np.tanh(x)
        return y, y  # the cache is the output itself

    def backward(dout, y):
        return dout * (1 - y**2)

    assert gp.check_vjp(forward, backward, x, cache=True).passed
    with pytest.raises(InputError, match="all taken as outputs: if the last is a cache, pass "
                                         "cache=True"):
        gp.check_vjp(forward, backward, x)
    report = gp.check_vjp(lambda x: float(np.sum(np.sin(x))), lambda d, x: d * np.cos(x), x)
    assert report.passed and [t.name for t in report.tensors] == ["x"]


def test_an_integer_input_may_take_none_in_a_full_tuple_and_names_are_used():
    def backward(dout, cache):
        idx, W = cache
        dW = np.zeros_like(W)
        np.add.at(dW, idx, dout)  # rows picked twice get both contributions
        return None, dW

    inputs = (np.array([0, 2, 2]), np.random.default_rng(0).standard_normal((4, 3)))
    report = gp.check_vjp(with_cache(embedding), backward, inputs, names=["ids", "table"])
    assert report.passed and [t.name for t in report.tensors] == ["table"]


def test_float32_inputs_are_checked_with_a_precision_note():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    report = gp.check_vjp(lambda x: (np.tanh(x), (x,)),
                          lambda dout, cache: dout * (1 - np.tanh(cache[0]) ** 2), x)
    assert report.passed, str(report)
    assert [f.tensor for f in report.findings_of("precision")] == ["x"]


def test_a_later_random_draw_catches_what_an_all_ones_upstream_hides():
    # Right when dout is constant, wrong otherwise; linear in dout, so no probe of scale sees it.
    change = lambda g, x, w, b: (g @ w.T, x.T @ np.full_like(g, g.mean()), g.sum(0))  # noqa: E731
    inputs = affine_inputs(4, 3, 5)
    only_ones = gp.check_vjp(affine_forward, planted(change), inputs, upstream=np.ones((4, 5)),
                             draws=1)
    assert only_ones.passed
    report = gp.check_vjp(affine_forward, planted(change), inputs, upstream=np.ones((4, 5)))
    assert not report.passed and not report.tensor("w").passed
    (finding,) = [f for f in report.findings if f.is_bug]
    assert finding.tensors == ("w",) and finding.message.startswith("with another random dout")


# ------------------------------------------------------------------ bad input


def raises(match, forward=affine_forward, backward=affine_backward, inputs=None, **options):
    with pytest.raises(InputError, match=match):
        gp.check_vjp(forward, backward, inputs or affine_inputs(4, 3, 5), **options)


def test_wrong_number_of_gradients():
    raises(r"returned 2 gradients; forward takes 3 float inputs \['x', 'w', 'b'\]",
           backward=planted(lambda g, x, w, b: (g @ w.T, x.T @ g)))


def test_a_gradient_for_an_integer_input():
    def backward(dout, cache):
        idx, W = cache
        dW = np.zeros_like(W)
        np.add.at(dW, idx, dout)
        return np.zeros(idx.shape), dW

    idx = np.array([[0, 2], [1, 1]])
    W = np.random.default_rng(0).standard_normal((3, 4))
    raises("a gradient for idx, an integer input", with_cache(embedding), backward, (idx, W))


def test_forward_outputs_not_finite():
    def forward(x, w, b):
        with np.errstate(invalid="ignore"):
            return np.log(x @ w + b), (x, w, b)  # negative arguments: NaN
    raises(r"forward's output 0 holds nan", forward)


def test_a_cache_mutated_by_backward():
    def backward(dout, cache):
        x, w, b = cache
        x *= 2  # in place: the cache is no longer what forward made
        return dout @ w.T, x.T @ dout, dout.sum(0)
    raises(r"changed cache\[0\] \(an array of shape \(4, 3\)\) in place.*runs forward again",
           backward=backward)


def test_an_upstream_shape_forward_cannot_have():
    raises(r"upstream\[0\] has shape \(5, 4\), which forward's output 0 cannot have",
           upstream=np.ones((5, 4)))
    raises(r"upstream holds 2 arrays; forward returns 1 outputs", upstream=[np.ones((4, 5))] * 2)


def test_backward_raising_and_stray_keys_and_bad_shapes():
    def backward(dout, cache, extra):
        return None

    raises(r"backward \(backward\) raised TypeError.*called as backward\(dout, cache\)",
           backward=backward)
    raises(r"keyed \['dz'\], which name no input",
           backward=lambda dout, cache: {"dx": 0, "dw": 0, "db": 0, "dz": 0})
    raises(r"shape \(2, 2\) for w, which has shape \(3, 5\)",
           backward=planted(lambda g, x, w, b: (g @ w.T, np.ones((2, 2)), g.sum(0))))


@pytest.mark.parametrize(
    ("options", "match"),
    [({"draws": 0}, "draws must be an integer >= 1"),
     ({"names": ["a", "b"]}, "names must give 3 distinct names"),
     ({"cache": "yes"}, "cache must be None, True or False")],
    ids=["draws", "names", "cache"],
)
def test_bad_options(options, match):
    raises(match, **options)
