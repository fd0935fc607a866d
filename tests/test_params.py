"""Specs for gradproof.params: params structures <-> one flat vector, names, gradient matching.

A worked example, spelled out once: ``{"enc": {"W": (2, 3)}, "layers": [{"b": (4,)}]}`` has
the tensors ``enc.W`` (flat positions 0-5, row-major) and ``layers[0].b`` (6-9). The loss
receives the same nesting, its arrays being views into one flat buffer, so that writing
``flat[4]`` changes what the loss sees as ``enc.W[1, 1]``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gradproof as gp
from gradproof.errors import InputError
from gradproof.params import SINGLE_NAME, parse_params


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def nested(rng):
    return {
        "enc": {"W": rng.normal(size=(2, 3)), "b": rng.normal(size=3)},
        "layers": [{"W": rng.normal(size=(3, 3))}, (rng.normal(size=(3, 1)), 2.5)],
    }


def test_nested_names_follow_keys_and_positions(rng):
    layout, flat = parse_params(nested(rng))
    assert layout.names == ["enc.W", "enc.b", "layers[0].W", "layers[1][0]", "layers[1][1]"]
    assert flat.size == 6 + 3 + 9 + 3 + 1 == layout.size
    assert layout.spec("layers[1][1]").shape == ()


def test_structure_mirrors_containers_with_views_into_the_buffer(rng):
    params = nested(rng)
    layout, flat = parse_params(params)
    rebuilt = layout.structure(flat)
    assert isinstance(rebuilt["layers"], list) and isinstance(rebuilt["layers"][1], tuple)
    np.testing.assert_array_equal(rebuilt["enc"]["W"], params["enc"]["W"])
    # enc.W[1, 1] is flat position 4: one store in the buffer reaches the loss's view.
    flat[4] = 99.0
    assert rebuilt["enc"]["W"][1, 1] == 99.0
    assert params["enc"]["W"][1, 1] != 99.0  # the user's arrays are never touched
    assert layout.leaves(rebuilt)[0] is rebuilt["enc"]["W"]


def test_a_top_level_list_names_tensors_by_position(rng):
    layout, _ = parse_params([rng.normal(size=2), rng.normal(size=(2, 2))])
    assert layout.names == ["[0]", "[1]"]


def test_one_array_is_one_tensor(rng):
    theta = rng.normal(size=(3, 4)).astype(np.float32)
    layout, flat = parse_params(theta)
    assert layout.names == [SINGLE_NAME]
    assert flat.dtype == np.float64 and layout.specs[0].dtype == np.float32
    assert layout.structure(flat).shape == (3, 4)


@pytest.mark.parametrize("order", ["C", "F"])
def test_flat_vector_with_shapes_unrolls_in_the_given_order(order, rng):
    w1, b1 = rng.normal(size=(3, 4)), rng.normal(size=4)
    theta = np.concatenate([w1.ravel(order=order), b1])
    layout, flat = parse_params(theta, shapes={"W1": (3, 4), "b1": 4}, order=order)
    named = layout.named(flat)
    np.testing.assert_array_equal(named["W1"], w1)
    np.testing.assert_array_equal(named["b1"], b1)
    assert layout.structure(flat).shape == theta.shape
    # The loss sees the flat vector itself, and W1[2, 1] lies where the order puts it.
    position = 2 * 4 + 1 if order == "C" else 1 * 3 + 2
    assert layout.label(position) == "W1[2, 1]"


def test_a_matlab_column_vector_keeps_its_shape(rng):
    theta = rng.normal(size=(7, 1))
    layout, flat = parse_params(theta, shapes=[(2, 3), (1,)], order="F")
    assert layout.names == ["[0]", "[1]"]
    assert layout.structure(flat).shape == (7, 1)


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 4), min_size=0, max_size=3), min_size=1, max_size=4),
    order=st.sampled_from(["C", "F"]),
)
@example(shapes=[[2, 3], [3]], order="F")
def test_unroll_inverts_named_views(shapes, order):
    sizes = [int(np.prod(s)) for s in shapes]
    theta = np.arange(float(sum(sizes)))
    layout, flat = parse_params(
        theta, shapes={f"t{i}": tuple(s) for i, s in enumerate(shapes)}, order=order
    )
    np.testing.assert_array_equal(layout.unroll(layout.named(flat)), theta)
    for spec in layout.specs:
        if spec.size:
            last = spec.offset + spec.size - 1
            assert spec.index(last) == tuple(n - 1 for n in spec.shape)


# ------------------------------------------------------------------ gradients


def test_gradient_of_the_same_structure_matches_by_name(rng):
    params = nested(rng)
    layout, _ = parse_params(params)
    tensors, transposed, dtypes, _ = layout.match_gradient(params)
    assert list(tensors) == layout.names and transposed == []
    assert all(t.dtype == np.float64 for t in tensors.values())
    assert dtypes["enc.W"] == np.float64


def test_flat_params_accept_a_flat_gradient_or_a_dict(rng):
    theta = rng.normal(size=16)
    layout, _ = parse_params(theta, shapes={"W": (3, 4), "b": (4,)}, order="F")
    from_flat, _, _, _ = layout.match_gradient(2 * theta)
    np.testing.assert_array_equal(from_flat["W"], 2 * theta[:12].reshape(3, 4, order="F"))
    from_dict, _, _, _ = layout.match_gradient({"W": from_flat["W"], "b": from_flat["b"]})
    np.testing.assert_array_equal(from_dict["b"], 2 * theta[12:])


def test_missing_and_extra_tensors_are_both_listed(rng):
    layout, _ = parse_params({"W1": rng.normal(size=(2, 2)), "b1": rng.normal(size=2)})
    with pytest.raises(InputError, match=r"missing \['b1'\].*extra \['bias1'\]"):
        layout.match_gradient({"W1": np.zeros((2, 2)), "bias1": np.zeros(2)})


def test_a_transposed_shape_is_transposed_back_and_named(rng):
    layout, _ = parse_params({"W2": rng.normal(size=(2, 5))})
    g = rng.normal(size=(5, 2))
    tensors, transposed, _, _ = layout.match_gradient({"W2": g})
    assert transposed == ["W2"]
    np.testing.assert_array_equal(tensors["W2"], g.T)


def test_any_other_shape_mismatch_names_both_shapes(rng):
    layout, _ = parse_params({"W": rng.normal(size=(2, 5))})
    with pytest.raises(InputError, match=r"W has shape \(2, 4\); expected \(2, 5\)"):
        layout.match_gradient({"W": np.zeros((2, 4))})
    with pytest.raises(InputError, match=r"shape \(10,\); expected \(2, 5\)"):
        layout.match_gradient({"W": np.zeros(10)})


def test_gradients_in_another_order_than_the_parameters_are_named(rng):
    params = [rng.normal(size=(5, 6)), rng.normal(size=(3, 5)), np.zeros((5, 1)), np.zeros((3, 1))]
    layout, _ = parse_params(params)
    swapped = [np.zeros((5, 6)), np.zeros((3, 5)), np.zeros((3, 1)), np.zeros((5, 1))]
    with pytest.raises(InputError, match=r"the gradient of \[2\] has shape \(3, 1\); expected "
                       r"\(5, 1\) like the parameter: it has \[3\]'s shape, and the gradient of "
                       r"\[3\] has \[2\]'s, so the two are swapped"):
        layout.match_gradient(swapped)
    rotated = [np.zeros((5, 6)), np.zeros((3, 5)), np.zeros((3, 1)), np.zeros((3, 1))]
    with pytest.raises(InputError, match=r"that is the shape of \[3\]: are the gradients in "
                       r"the parameters' order\?"):
        layout.match_gradient(rotated)


def test_a_flat_gradient_of_the_wrong_length_is_an_error(rng):
    layout, _ = parse_params(rng.normal(size=6), shapes={"W": (2, 3)})
    with pytest.raises(InputError, match="5 entries.*expected 6"):
        layout.match_gradient(np.zeros(5))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_gradient_names_the_tensor_and_first_index(value, rng):
    layout, _ = parse_params({"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)})
    g = np.zeros(4)
    g[2] = value
    with pytest.raises(InputError, match=rf"gradient of b holds {value} at b\[2\]"):
        layout.match_gradient({"W": np.zeros((3, 4)), "b": g})


@pytest.mark.parametrize(
    ("leaf", "words"),
    [(None, "is None"), ("text", "real numeric array"), (np.zeros(2, dtype=complex), "complex")],
    ids=["none", "string", "complex"],
)
def test_a_non_numeric_gradient_is_an_error(leaf, words, rng):
    layout, _ = parse_params({"b": rng.normal(size=2)})
    with pytest.raises(InputError, match=words):
        layout.match_gradient({"b": leaf})


# ------------------------------------------------- gradients in the shapes real code returns


@pytest.mark.parametrize("key", ["dW1", "gW1", "grad_W1", "W1_grad", "W1"])
def test_a_gradient_key_with_the_usual_affixes_maps_to_its_parameter(key, rng):
    layout, _ = parse_params({"W1": rng.normal(size=(2, 3)), "b1": rng.normal(size=3)})
    g = rng.normal(size=(2, 3))
    tensors, _, _, _ = layout.match_gradient({key: g, "db1": np.ones(3)})
    np.testing.assert_array_equal(tensors["W1"], g)
    np.testing.assert_array_equal(tensors["b1"], np.ones(3))


def test_a_tuple_of_gradients_maps_in_the_parameters_order(rng):
    # The course's (dx, dw, db) for params {"x", "w", "b"}.
    params = {"x": rng.normal(size=(4, 3)), "w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    layout, _ = parse_params(params)
    grads = (np.ones((4, 3)), 2 * np.ones((3, 2)), 3 * np.ones(2))
    tensors, _, _, _ = layout.match_gradient(grads)
    assert [float(tensors[n].flat[0]) for n in ("x", "w", "b")] == [1.0, 2.0, 3.0]


def test_a_shape_apart_by_size_one_axes_is_compared_with_a_convention_note(rng):
    # Batch norm's dgamma, dbeta as (1, D) for (D,) parameters; a column (n, 1) for (n,).
    layout, _ = parse_params({"gamma": rng.normal(size=4), "v": rng.normal(size=3)})
    dgamma, dv = rng.normal(size=(1, 4)), rng.normal(size=(3, 1))
    tensors, transposed, _, notes = layout.match_gradient({"dgamma": dgamma, "dv": dv})
    np.testing.assert_array_equal(tensors["gamma"], dgamma[0])
    np.testing.assert_array_equal(tensors["v"], dv[:, 0])
    assert transposed == [] and [(n.kind, n.tensor) for n in notes] == [
        ("convention", "gamma"), ("convention", "v")
    ]
    assert not any(n.is_bug for n in notes)


def test_check_gradient_passes_a_batchnorm_gradient_of_shape_1_by_d(rng):
    x = rng.normal(size=(6, 4))
    params = {"gamma": rng.normal(size=4), "beta": rng.normal(size=4)}
    xhat = (x - x.mean(0)) / x.std(0)

    def loss(p):
        return float(np.sum(np.sin(p["gamma"] * xhat + p["beta"])))

    def grad(p):
        c = np.cos(p["gamma"] * xhat + p["beta"])
        return {"dgamma": (c * xhat).sum(0, keepdims=True), "dbeta": c.sum(0, keepdims=True)}

    report = gp.check_gradient(loss, grad, params)
    assert report.passed and {f.tensor for f in report.findings_of("convention")} == {
        "gamma", "beta"
    }


def test_check_model_passes_a_bias_gradient_of_shape_1_by_n_with_a_note(rng):
    model = gp.Autoencoder(n_visible=6, n_hidden=3)
    params = model.init_params(seed=0)
    x = rng.random((2, 6))
    _, grads = model.loss_and_grad(params, x)
    grads["b1"] = grads["b1"].reshape(1, -1)
    report = gp.check_model(model, params, x, grad=grads)
    assert report.passed and [(f.kind, f.tensor) for f in report.findings] == [("convention", "b1")]


def test_a_transposed_square_matrix_stays_transposed_not_reshaped(rng):
    layout, _ = parse_params({"W": rng.normal(size=(2, 5))})
    tensors, transposed, _, notes = layout.match_gradient({"dW": np.ones((5, 2))})
    assert transposed == ["W"] and notes == []


def test_ambiguous_gradient_keys_name_the_choices(rng):
    layout, _ = parse_params({"W": rng.normal(size=2), "W_": rng.normal(size=2)})
    with pytest.raises(InputError, match=r"'W_grad' could belong to \['W', 'W_'\]"):
        layout.match_gradient({"W_grad": np.zeros(2), "W_": np.zeros(2)})
    with pytest.raises(InputError, match=r"keys \['dW', 'gW'\] all belong to the parameter 'W'"):
        layout.match_gradient({"dW": np.zeros(2), "gW": np.zeros(2), "W_": np.zeros(2)})


# --------------------------------------------------------------- bad params


def test_a_non_finite_parameter_names_the_tensor_and_first_index():
    w = np.ones((3, 2))
    w[1, 1] = np.nan
    with pytest.raises(InputError, match=r"parameter W holds nan at W\[1, 1\]"):
        parse_params({"W": w})


def test_shapes_that_do_not_cover_the_flat_vector_are_an_error():
    with pytest.raises(InputError, match="cover 10 entries but the flat params vector has 11"):
        parse_params(np.zeros(11), shapes={"W": (2, 3), "b": (4,)})


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"params": {"W": np.zeros(2)}, "order": "K"}, "order must be 'C'"),
        ({"params": {"W": np.zeros(2)}, "order": "F"}, "applies only to a flat vector"),
        ({"params": np.zeros((3, 4)), "shapes": {"W": (3, 4)}}, "must be a flat vector"),
        ({"params": np.zeros(4), "shapes": {"W": (2, "x")}}, "tuple of ints"),
        ({"params": {}}, "holds no arrays"),
        ({"params": {"a": {"b": np.zeros(1)}, "a.b": np.zeros(1)}}, "both named 'a.b'"),
        ({"params": {"W": np.array(["a", "b"])}}, "real numeric array"),
    ],
    ids=[
        "bad-order",
        "order-without-shapes",
        "matrix-with-shapes",
        "bad-shape",
        "empty",
        "duplicate",
        "strings",
    ],
)
def test_malformed_params_are_input_errors(kwargs, words):
    with pytest.raises(InputError, match=words):
        parse_params(**kwargs)
