"""Spec for ``gradproof.layouts``: the user's ways of storing a network, and the way back.

Every layout maps to the network's dict and back without changing an entry, for randomised
networks; a gradient maps the same way (the user's loss, seen through the layout, has the
mapped gradient as its gradient); and the shapes of a user's tensors and data give back their
layout, several candidates where several layouts fit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gradproof as gp
from gradproof.errors import InputError
from gradproof.layouts import (
    Layout,
    examples_as_rows,
    fit_layouts,
    from_canonical,
    stored_shapes,
    to_canonical,
)
from gradproof.nn import Network
from oracle import random_params


@st.composite
def networks_and_layouts(draw) -> tuple[Network, Layout]:
    n_in = draw(st.integers(1, 5))
    tied = draw(st.booleans())
    if tied:
        half = draw(st.lists(st.integers(1, 5), min_size=1, max_size=2))
        layers = [n_in, *half, *half[::-1][1:], n_in]
    else:
        layers = [n_in, *draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))]
    bias = draw(st.booleans())
    net = Network(layers=layers, tied=tied, bias=bias, output="identity",
                  target="input" if tied else "one_hot")
    if not bias:
        biases = "absent"
    else:
        biases = draw(st.sampled_from(["vector", "column", "row"] if tied else
                                      ["vector", "column", "row", "augmented"]))
    container = draw(st.sampled_from(["dict", "list", "flat"]))
    layout = Layout(examples=draw(st.sampled_from(["rows", "columns"])),
                    weights=draw(st.sampled_from(["in_out", "out_in"])), biases=biases)
    # Any interleaving of the weights and the biases, each kind in layer order.
    canonical = list(stored_shapes(layout, net))
    kinds = draw(st.permutations([name[0] for name in canonical]))
    queues = {kind: [name for name in canonical if name[0] == kind] for kind in "Wb"}
    stored = [queues[kind].pop(0) for kind in kinds]
    names = None
    if container == "dict":
        names = [("Theta" if name[0] == "W" else "bias") + name[1:] for name in stored]
    layout = Layout(examples=layout.examples, weights=layout.weights, biases=biases,
                    container=container, order=draw(st.sampled_from(["C", "F"])),
                    stored=stored, names=names)
    return net, layout


COURSE = (Network(layers=[4, 3, 2], target="labels", loss_name="cross_entropy"),
          Layout(weights="out_in", biases="augmented", examples="rows",
                 stored=["W1", "W2"], names=["Theta1", "Theta2"]))
# [W1(:); W2(:); b1(:); b2(:)], column-major, examples as columns
MATLAB_FLAT = (Network(layers=[3, 2, 3]),
               Layout(examples="columns", weights="out_in", biases="column", container="flat",
                      order="F", stored=["W1", "W2", "b1", "b2"]))


def entries_of(user) -> list[np.ndarray]:
    if isinstance(user, dict):
        return list(user.values())
    return list(user) if isinstance(user, list) else [user]


@settings(max_examples=150, deadline=None)
@given(case=networks_and_layouts(), seed=st.integers(0, 2**32 - 1))
@example(case=COURSE, seed=0)
@example(case=MATLAB_FLAT, seed=1)
def test_round_trip_through_every_layout(case, seed):
    net, layout = case
    params = random_params(net.param_shapes(), np.random.default_rng(seed))

    user = from_canonical(layout, net, params)
    back = to_canonical(layout, net, user)

    assert list(back) == list(net.param_shapes())
    for name, value in params.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    again = from_canonical(layout, net, back)
    for mine, theirs in zip(entries_of(user), entries_of(again)):
        np.testing.assert_array_equal(mine, theirs)


@settings(max_examples=60, deadline=None)
@given(case=networks_and_layouts(), seed=st.integers(0, 2**32 - 1))
@example(case=COURSE, seed=0)
@example(case=MATLAB_FLAT, seed=1)
def test_the_mapped_gradient_is_the_gradient_of_the_users_loss(case, seed):
    # The user's loss reads their layout; its derivative along a random direction must be the
    # inner product of that direction with the canonical gradient mapped into the layout.
    net, layout = case
    rng = np.random.default_rng(seed)
    params = random_params(net.param_shapes(), rng)
    x_user = rng.random((3, net.layers[0]))
    x_user = x_user if layout.examples == "rows" else x_user.T
    y = None if net.target == "input" else rng.normal(size=(3, net.layers[-1]))
    if net.target == "labels":
        y = rng.integers(0, net.layers[-1], 3)

    def user_loss(user):
        return net.loss(to_canonical(layout, net, user), examples_as_rows(layout, x_user), y)

    user = from_canonical(layout, net, params)
    _, grads = net.loss_and_grad(params, examples_as_rows(layout, x_user), y)
    user_grad = from_canonical(layout, net, grads)
    direction = from_canonical(layout, net, random_params(net.param_shapes(), rng))

    h = 1e-6
    def shifted(sign):
        if isinstance(user, dict):
            return {k: user[k] + sign * h * direction[k] for k in user}
        if isinstance(user, list):
            return [u + sign * h * d for u, d in zip(user, direction)]
        return user + sign * h * direction
    numeric = (user_loss(shifted(1)) - user_loss(shifted(-1))) / (2 * h)
    analytic = sum(float(np.vdot(g, d)) for g, d in zip(entries_of(user_grad),
                                                        entries_of(direction)))
    assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("case", [COURSE, MATLAB_FLAT], ids=["course-theta", "matlab-flat"])
def test_check_gradient_passes_on_the_users_layout(case):
    net, layout = case
    rng = np.random.default_rng(5)
    params = random_params(net.param_shapes(), rng)
    x = rng.random((4, net.layers[0]))
    y = None if net.target == "input" else rng.integers(0, net.layers[-1], 4)
    user = from_canonical(layout, net, params)
    shapes = stored_shapes(layout, net) if layout.container == "flat" else None

    report = gp.check_gradient(
        lambda u: net.loss(to_canonical(layout, net, u), x, y),
        lambda u: from_canonical(layout, net, net.loss_and_grad(
            to_canonical(layout, net, u), x, y)[1]),
        user, shapes=shapes, order=layout.order,
    )

    assert report.passed, str(report)
    assert [t.name for t in report.tensors] == list(
        layout.names or stored_shapes(layout, net))


def test_the_course_network_is_stored_as_theta_with_the_bias_in_column_0():
    net, layout = COURSE
    params = net.init_params(0)
    params["b1"] = np.arange(3.0)
    user = from_canonical(layout, net, params)
    assert user["Theta1"].shape == (3, 5)  # 25x401 in the course, (n_out, n_in + 1)
    np.testing.assert_array_equal(user["Theta1"][:, 0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(user["Theta1"][:, 1:], params["W1"].T)


def test_a_matlab_flat_vector_unrolls_each_tensor_column_major_in_the_users_order():
    net, layout = MATLAB_FLAT
    params = random_params(net.param_shapes(), np.random.default_rng(0))
    theta = from_canonical(layout, net, params)
    w1 = params["W1"].T  # (n_out, n_in), as MATLAB stores it
    np.testing.assert_array_equal(theta[:w1.size], w1.reshape(-1, order="F"))
    np.testing.assert_array_equal(theta[-3:], params["b2"])  # b2(:) last


# ----- which layouts fit the user's shapes --------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(case=networks_and_layouts(), batch=st.integers(1, 6))
@example(case=COURSE, batch=5)
def test_the_users_own_layout_is_among_the_fits(case, batch):
    net, layout = case
    shapes = stored_shapes(layout, net)
    x_shape = (batch, net.layers[0]) if layout.examples == "rows" else (net.layers[0], batch)
    if layout.container == "dict":
        given_shapes = dict(zip(layout.names, shapes.values()))
    elif layout.container == "list":
        given_shapes = list(shapes.values())
    else:
        given_shapes = dict(shapes)

    fits = fit_layouts(given_shapes, x_shape, flat=layout.container == "flat")

    params = random_params(net.param_shapes(), np.random.default_rng(0))
    user = from_canonical(layout, net, params)
    matching = [
        fit for fit in fits
        if fit.network_options() == {"layers": list(net.layers), "tied": net.tied,
                                     "bias": net.bias}
        and all(np.array_equal(value, params[name]) for name, value in
                to_canonical(fit.layout, net, user).items())
    ]
    assert matching, [fit.layout.describe() for fit in fits]


def test_the_course_shapes_fit_one_layout():
    fits = fit_layouts({"Theta1": (25, 401), "Theta2": (10, 26)}, (5000, 400))
    assert len(fits) == 1
    assert fits[0].layers == (400, 25, 10)
    assert fits[0].layout.describe() == (
        "examples as rows, weights stored (n_out, n_in), biases as column 0 of each weight"
    )


def test_shapes_that_fit_several_layouts_give_several_candidates():
    # Square weights and square data: rows or columns, (n_in, n_out) or (n_out, n_in) all fit.
    fits = fit_layouts({"W1": (4, 4), "b1": (4,), "W2": (4, 4), "b2": (4,)}, (4, 4))
    assert {(f.layout.examples, f.layout.weights) for f in fits} == {
        ("rows", "in_out"), ("rows", "out_in"), ("columns", "in_out"), ("columns", "out_in")}


def test_a_flat_vector_fits_both_unroll_orders():
    fits = fit_layouts([(2, 3), (3, 2)], (10, 2), flat=True)
    assert {f.layout.order for f in fits} == {"C", "F"}
    assert all(f.layout.container == "flat" for f in fits)


def test_a_column_in_a_list_is_tried_as_a_bias_and_as_a_weight():
    # [W (3, 1), b (1, 1)]: logistic regression with a bias column, or two weight layers.
    fits = fit_layouts([(3, 1), (1, 1)], (5, 3))
    assert {f.layout.biases for f in fits} >= {"column", "absent"}


def test_biases_as_rows_fit_as_such():
    # numpy code that adds b of shape (1, n) to x @ W, examples as rows
    fits = fit_layouts({"W1": (4, 6), "b1": (1, 6), "W2": (6, 1), "b2": (1, 1)}, (50, 4))
    assert [(f.layout.biases, f.layers) for f in fits] == [("row", (4, 6, 1))]
    assert "biases as (1, n) rows" in fits[0].layout.describe()


def test_shapes_that_fit_no_layout_give_none():
    assert fit_layouts({"W1": (3, 4), "W2": (5, 3)}, (10, 7)) == []


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        (dict(examples="cols"), "examples must be one of: 'rows', 'columns'"),
        (dict(biases="rows"), "biases must be one of"),
        (dict(order="K"), "order must be one of: 'C', 'F'"),
        (dict(container="list", names=["a"], stored=["W1"]), "names applies to a dict"),
        (dict(names=["Theta1"]), "names needs stored"),
    ],
)
def test_bad_layout_options_name_the_option(layout, match):
    with pytest.raises(InputError, match=match):
        Layout(**layout)


def test_a_layout_that_cannot_hold_the_network_says_why():
    with pytest.raises(InputError, match="bias=False"):
        stored_shapes(Layout(biases="vector"), Network(layers=[3, 2, 3], bias=False))
    with pytest.raises(InputError, match="untied"):
        stored_shapes(Layout(biases="augmented"), Network(layers=[3, 2, 3], tied=True))


def test_user_parameters_of_the_wrong_shape_name_the_users_tensor():
    net, layout = COURSE
    with pytest.raises(InputError, match=r"Theta1 has shape \(4, 3\); this layout expects"):
        to_canonical(layout, net, {"Theta1": np.ones((4, 3)), "Theta2": np.ones((2, 4))})
    with pytest.raises(InputError, match="lack Theta2"):
        to_canonical(layout, net, {"Theta1": np.ones((3, 5))})
    with pytest.raises(InputError, match="parameter Theta2 must be a real numeric array"):
        to_canonical(layout, net, {"Theta1": np.ones((3, 5)), "Theta2": "weights"})
    with pytest.raises(InputError, match="the flat parameter vector has 5 entries"):
        to_canonical(MATLAB_FLAT[1], MATLAB_FLAT[0], np.ones(5))

