"""Spec for gradproof.nn: the autoencoder's hand-written backprop against an autograd oracle.

The oracle below is written from the math with autograd.numpy and never calls gradproof; every
option and their combinations are drawn by hypothesis and must agree with it to 1e-10 relative
error in float64.

A worked tiny example of the seed network, for orientation: layers [2, 1, 2], W1 = [[1], [0]],
b1 = [0], W2 = [[0, 0]], b2 = [0, 0], x = [[1, 0]]: the hidden unit is sigmoid(1) = 0.731,
the output is sigmoid(0) = 0.5 everywhere, and J = 0.5 * ((0.5 - 1)^2 + 0.5^2) = 0.25.
"""

from __future__ import annotations

import json
import math

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad as autograd_grad
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gradproof.errors import InputError
from gradproof.nn import ACTIVATIONS, LOSSES, REDUCTIONS, Autoencoder, Dense
from oracle import ORACLE_ACTIVATIONS, random_params, rel_err

# ----- the independent oracle ---------------------------------------------------------------

DEFAULTS = dict(
    activation="sigmoid", output_activation="sigmoid", loss="squared", reduction="sum",
    bias=True, tied=False, weight_decay=0.0, sparsity_weight=0.0, sparsity_target=0.05,
)


def spec_of(kwargs: dict) -> dict:
    """The model options with defaults filled in and the hidden activations as a list."""
    spec = {**DEFAULTS, **kwargs}
    n_hidden_layers = len(spec["layers"]) - 2
    if isinstance(spec["activation"], str):
        spec["activation"] = [spec["activation"]] * n_hidden_layers
    return spec


def oracle_shapes(spec: dict) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes from the spec: tied stacks own only the encoder weights."""
    layers = spec["layers"]
    n = len(layers) - 1
    owned = range(1, n // 2 + 1) if spec["tied"] else range(1, n + 1)
    shapes: dict[str, tuple[int, ...]] = {f"W{k}": (layers[k - 1], layers[k]) for k in owned}
    if spec["bias"]:
        shapes.update({f"b{k}": (layers[k],) for k in range(1, n + 1)})
    return shapes


def oracle_code_layer(layers: list[int]) -> int:
    """The code layer: the first narrowest hidden layer."""
    hidden = layers[1:-1]
    return 1 + hidden.index(min(hidden))


def oracle_objective(spec: dict, params: dict, x: np.ndarray):
    layers = spec["layers"]
    n = len(layers) - 1
    names = spec["activation"] + [spec["output_activation"]]
    code_k = oracle_code_layer(layers)
    a, code, s = x, None, None
    for k in range(1, n + 1):
        W = params[f"W{n + 1 - k}"].T if spec["tied"] and k > n // 2 else params[f"W{k}"]
        s = anp.dot(a, W)
        if spec["bias"]:
            s = s + params[f"b{k}"]
        a = ORACLE_ACTIVATIONS[names[k - 1]](s)
        if k == code_k:
            code = a
    if spec["loss"] == "squared":
        data = 0.5 * anp.sum((a - x) ** 2)
    else:
        # -[x log σ(s) + (1-x) log(1-σ(s))], with -log σ(s) = log(1 + e^-s)
        data = anp.sum(x * anp.logaddexp(0.0, -s) + (1 - x) * anp.logaddexp(0.0, s))
    if spec["reduction"] == "mean":
        data = data / x.shape[0]
    total = data
    for name in params:
        if name.startswith("W"):
            total = total + 0.5 * spec["weight_decay"] * anp.sum(params[name] ** 2)
    if spec["sparsity_weight"]:
        rho, rho_hat = spec["sparsity_target"], anp.mean(code, axis=0)
        kl = rho * anp.log(rho / rho_hat) + (1 - rho) * anp.log((1 - rho) / (1 - rho_hat))
        total = total + spec["sparsity_weight"] * anp.sum(kl)
    return total


# ----- hypothesis strategy: every option, valid combinations only ---------------------------

widths = st.integers(2, 7)


@st.composite
def cases(draw):
    n_visible = draw(widths)
    if draw(st.booleans()):
        half = draw(st.lists(widths, min_size=1, max_size=2))
        layers = [n_visible, *half, *half[::-1][1:], n_visible]
        tied = draw(st.booleans())
    else:
        layers = [n_visible, *draw(st.lists(widths, min_size=1, max_size=3)), n_visible]
        tied = False
    act_names = st.sampled_from(sorted(ACTIVATIONS))
    hidden = draw(st.lists(act_names, min_size=len(layers) - 2, max_size=len(layers) - 2))
    activation = hidden[0] if len(set(hidden)) == 1 and draw(st.booleans()) else hidden
    output = draw(act_names)
    loss = draw(st.sampled_from(sorted(LOSSES))) if output == "sigmoid" else "squared"
    code_is_sigmoid = hidden[oracle_code_layer(layers) - 1] == "sigmoid"
    kwargs = dict(
        layers=layers, activation=activation, output_activation=output, loss=loss,
        reduction=draw(st.sampled_from(sorted(REDUCTIONS))), bias=draw(st.booleans()),
        tied=tied,
        weight_decay=draw(st.sampled_from([0.0, 0.0, 0.05, 1.3])),
        sparsity_weight=draw(st.sampled_from([0.0, 0.4, 2.0])) if code_is_sigmoid else 0.0,
        sparsity_target=draw(st.floats(0.02, 0.98)),
    )
    return kwargs, draw(st.integers(1, 5)), draw(st.integers(0, 2**32 - 1))


SEED_STYLE = dict(
    layers=[6, 4, 6], activation="sigmoid", output_activation="sigmoid", loss="squared",
    reduction="sum", bias=True, tied=False, weight_decay=0.0, sparsity_weight=0.0,
    sparsity_target=0.05,
)
TIED_DEEP = dict(
    layers=[7, 5, 3, 5, 7], activation=["tanh", "sigmoid", "relu"], output_activation="identity",
    loss="squared", reduction="mean", bias=True, tied=True, weight_decay=0.3,
    sparsity_weight=0.0, sparsity_target=0.05,
)
SPARSE_CROSS_ENTROPY = dict(
    layers=[7, 4, 2, 4, 7], activation="sigmoid", output_activation="sigmoid",
    loss="cross_entropy", reduction="mean", bias=True, tied=False, weight_decay=0.01,
    sparsity_weight=0.7, sparsity_target=0.1,
)
TIED_NO_BIAS_SPARSE = dict(
    layers=[5, 3, 5], activation="sigmoid", output_activation="tanh", loss="squared",
    reduction="sum", bias=False, tied=True, weight_decay=0.2, sparsity_weight=1.5,
    sparsity_target=0.3,
)


@settings(max_examples=100, deadline=None)
@given(case=cases())
@example(case=(SEED_STYLE, 3, 0))
@example(case=(TIED_DEEP, 4, 1))
@example(case=(SPARSE_CROSS_ENTROPY, 5, 2))
@example(case=(TIED_NO_BIAS_SPARSE, 1, 3))
def test_loss_and_grad_match_autograd(case):
    kwargs, batch, seed = case
    spec = spec_of(kwargs)
    rng = np.random.default_rng(seed)
    params = random_params(oracle_shapes(spec), rng)
    x = rng.random((batch, spec["layers"][0]))

    J, grads = Autoencoder(**kwargs).loss_and_grad(params, x)

    expected_J = oracle_objective(spec, params, x)
    expected_grads = autograd_grad(lambda p: oracle_objective(spec, p, x))(params)
    assert abs(J - expected_J) <= 1e-10 * abs(expected_J)
    assert sorted(grads) == sorted(params)
    for name, g in grads.items():
        assert g.shape == params[name].shape, name
        assert rel_err(g, expected_grads[name]) <= 1e-10, name


def test_oracle_reproduces_the_worked_example():
    spec = spec_of(dict(layers=[2, 1, 2]))
    params = {"W1": np.array([[1.0], [0.0]]), "b1": np.zeros(1),
              "W2": np.zeros((1, 2)), "b2": np.zeros(2)}
    x = np.array([[1.0, 0.0]])
    assert oracle_objective(spec, params, x) == pytest.approx(0.25)
    assert Autoencoder(layers=[2, 1, 2]).loss(params, x) == pytest.approx(0.25)


@pytest.mark.parametrize("kwargs", [SEED_STYLE, TIED_DEEP, SPARSE_CROSS_ENTROPY],
                         ids=["seed", "tied-deep", "sparse-ce"])
def test_gradient_at_init_matches_autograd(kwargs):
    model = Autoencoder(**kwargs)
    params = model.init_params(seed=5)
    x = np.random.default_rng(5).random((4, model.n_visible))
    _, grads = model.loss_and_grad(params, x)
    spec = spec_of(kwargs)
    expected = autograd_grad(lambda p: oracle_objective(spec, p, x))(params)
    for name in params:
        assert rel_err(grads[name], expected[name]) <= 1e-10, name


def test_backward_of_forward_cache_equals_loss_and_grad():
    model = Autoencoder(**SPARSE_CROSS_ENTROPY)
    params = model.init_params(seed=2)
    x = np.random.default_rng(2).random((3, 7))
    z, cache = model.forward(params, x)
    _, grads = model.loss_and_grad(params, x)
    assert len(cache.activations) == model.n_layers + 1
    np.testing.assert_array_equal(cache.activations[0], x)
    np.testing.assert_array_equal(cache.activations[-1], z)
    assert [s.shape for s in cache.pre_activations] == [(3, w) for w in model.layers[1:]]
    for name, g in model.backward(params, cache).items():
        np.testing.assert_array_equal(g, grads[name])


# ----- central differences ------------------------------------------------------------------


def central_difference(f, params: dict, name: str, index: tuple, h: float) -> float:
    plus = {k: v.copy() for k, v in params.items()}
    minus = {k: v.copy() for k, v in params.items()}
    plus[name][index] += h
    minus[name][index] -= h
    return (f(plus) - f(minus)) / (2 * h)


def test_every_entry_agrees_with_central_differences_all_options_on():
    model = Autoencoder(layers=[5, 3, 5], loss="cross_entropy", reduction="mean",
                        weight_decay=0.1, sparsity_weight=0.5, sparsity_target=0.2)
    params = model.init_params(seed=3)
    x = np.random.default_rng(3).random((4, 5))
    _, grads = model.loss_and_grad(params, x)
    for name, value in params.items():
        numeric = np.array([
            central_difference(lambda p: model.loss(p, x), params, name, index, 1e-6)
            for index in np.ndindex(value.shape)
        ]).reshape(value.shape)
        assert rel_err(grads[name], numeric) <= 1e-6, name


def test_seed_network_spot_check_against_central_differences():
    # The motivating network at full size: 784-200-784, sigmoid, squared error, seed init.
    model = Autoencoder()
    params = model.init_params(seed=0)
    x = np.random.default_rng(0).random((5, 784))
    _, grads = model.loss_and_grad(params, x)
    rng = np.random.default_rng(1)
    for name, value in params.items():
        for _ in range(8):
            index = tuple(int(rng.integers(d)) for d in value.shape)
            numeric = central_difference(lambda p: model.loss(p, x), params, name, index, 1e-5)
            assert grads[name][index] == pytest.approx(numeric, rel=1e-5, abs=1e-7), (name, index)


# ----- the layer pieces ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivative_from_output_matches_autograd(name):
    s = np.linspace(-3, 3, 13) + 0.01  # avoid the relu kink at exactly 0
    act = ACTIVATIONS[name]
    slope = autograd_grad(lambda v: anp.sum(ORACLE_ACTIVATIONS[name](v)))(s)
    np.testing.assert_allclose(act.forward(s), ORACLE_ACTIVATIONS[name](s), rtol=1e-14)
    np.testing.assert_allclose(act.derivative(act.forward(s)), slope, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_dense_layer_backward_is_the_vector_jacobian_product(name, bias):
    rng = np.random.default_rng(7)
    params = {"W": rng.normal(size=(4, 3))}
    if bias:
        params["b"] = rng.normal(size=3)
    x, d_a = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    layer = Dense(ACTIVATIONS[name])

    def projected(p, inp):
        s = anp.dot(inp, p["W"]) + (p["b"] if bias else 0.0)
        return anp.sum(ORACLE_ACTIVATIONS[name](s) * d_a)

    a, cache = layer.forward(params, x)
    d_x, grads = layer.backward(params, cache, d_a)
    expected = autograd_grad(projected)(params, x)
    assert a.shape == (5, 3) and d_x.shape == (5, 4)
    np.testing.assert_allclose(d_x, autograd_grad(projected, 1)(params, x), rtol=1e-12, atol=1e-14)
    assert sorted(grads) == sorted(params)
    for key in params:
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-12, atol=1e-14)
    no_input_grad, _ = layer.backward(params, cache, d_a, need_d_x=False)
    assert no_input_grad is None


def test_cross_entropy_is_finite_where_the_sigmoid_saturates():
    s = np.array([[-800.0, 800.0, 0.0]])
    x = np.array([[1.0, 0.0, 0.5]])
    z = ACTIVATIONS["sigmoid"].forward(s)
    value = LOSSES["cross_entropy"].value(x, z, s)
    # -log σ(-800) = 800, -log(1 - σ(800)) = 800, and 0.5-0.5 at s = 0 gives log 2.
    assert value == pytest.approx(1600 + math.log(2))
    same_value, d_s = LOSSES["cross_entropy"].value_and_delta(x, z, s, ACTIVATIONS["sigmoid"])
    assert same_value == value
    np.testing.assert_array_equal(d_s, z - x)


# ----- float32 ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(), dict(
    layers=[784, 64, 16, 64, 784], tied=True, loss="cross_entropy", reduction="mean",
    weight_decay=0.01, sparsity_weight=0.3)], ids=["seed", "tied-deep-all-options"])
def test_float32_agrees_with_float64(kwargs):
    model32 = Autoencoder(**kwargs, dtype="float32")
    model64 = Autoencoder(**kwargs)
    params32 = model32.init_params(seed=4)
    params64 = {k: v.astype(np.float64) for k, v in params32.items()}
    x = np.random.default_rng(4).random((20, 784))

    J32, grads32 = model32.loss_and_grad(params32, x.astype(np.float32))
    J64, grads64 = model64.loss_and_grad(params64, x)
    z32, cache32 = model32.forward(params32, x)

    assert isinstance(J32, float)
    assert J32 == pytest.approx(J64, rel=1e-5)
    assert z32.dtype == np.float32
    assert all(a.dtype == np.float32 for a in cache32.activations + cache32.pre_activations)
    for name, g in grads32.items():
        assert g.dtype == np.float32, name
        assert rel_err(g, grads64[name]) <= 1e-4, name


def test_inputs_of_the_model_dtype_are_not_copied_and_others_are_cast():
    model = Autoencoder(layers=[6, 3, 6], dtype="float32")
    x32 = np.random.default_rng(0).random((2, 6)).astype(np.float32)
    assert model.validate_input(x32) is x32
    assert model.validate_input(x32.astype(np.float64)).dtype == np.float32
    assert model.validate_input(np.zeros((2, 6), dtype=np.uint8)).dtype == np.float32


def test_loss_and_grad_leave_params_and_x_untouched():
    model = Autoencoder(**TIED_NO_BIAS_SPARSE)
    params = model.init_params(seed=9)
    x = np.random.default_rng(9).random((3, 5))
    before = ({k: v.copy() for k, v in params.items()}, x.copy())
    model.loss_and_grad(params, x)
    for name in params:
        np.testing.assert_array_equal(params[name], before[0][name])
    np.testing.assert_array_equal(x, before[1])


# ----- structure, config, init --------------------------------------------------------------


def test_seed_defaults():
    model = Autoencoder()
    assert model.layers == [784, 200, 784] and model.n_layers == 2
    assert model.activations == ["sigmoid", "sigmoid"]
    assert model.loss_name == "squared" and model.reduction == "sum"
    assert model.dtype == np.float64 and model.code_layer == 1
    assert model.param_shapes() == {"W1": (784, 200), "b1": (200,), "W2": (200, 784), "b2": (784,)}


@pytest.mark.parametrize("kwargs, shapes", [
    (dict(layers=[8, 6, 4, 6, 8], tied=True),
     {"W1": (8, 6), "b1": (6,), "W2": (6, 4), "b2": (4,), "b3": (6,), "b4": (8,)}),
    (dict(layers=[8, 6, 4, 6, 8], bias=False),
     {"W1": (8, 6), "W2": (6, 4), "W3": (4, 6), "W4": (6, 8)}),
    (dict(layers=[5, 3, 5], tied=True, bias=False), {"W1": (5, 3)}),
], ids=["tied-deep", "deep-nobias", "tied-nobias"])
def test_param_shapes(kwargs, shapes):
    model = Autoencoder(**kwargs)
    assert model.param_shapes() == shapes
    assert {k: v.shape for k, v in model.init_params().items()} == shapes


def test_weights_of_a_tied_stack_are_views_of_the_encoder():
    model = Autoencoder(layers=[8, 6, 4, 6, 8], tied=True)
    params = model.init_params(seed=1)
    weights = model.weights(params)
    assert [w.shape for w in weights] == [(8, 6), (6, 4), (4, 6), (6, 8)]
    assert weights[3].base is params["W1"] and np.array_equal(weights[3], params["W1"].T)
    assert np.array_equal(weights[2], params["W2"].T)


@pytest.mark.parametrize("kwargs, code_width", [
    (dict(layers=[9, 6, 3, 6, 9]), 3),
    (dict(layers=[9, 5, 7, 9]), 5),
    (dict(layers=[9, 4, 9]), 4),
], ids=["hourglass", "narrowest-first", "seed-shape"])
def test_encode_and_reconstruct_shapes(kwargs, code_width):
    model = Autoencoder(**kwargs)
    params = model.init_params(seed=0)
    x = np.random.default_rng(0).random((3, 9))
    code = model.encode(params, x)
    z, cache = model.forward(params, x)
    assert code.shape == (3, code_width)
    np.testing.assert_array_equal(code, cache.activations[model.code_layer])
    assert model.reconstruct(params, x).shape == (3, 9)
    np.testing.assert_array_equal(model.reconstruct(params, x), z)


@settings(max_examples=25, deadline=None)
@given(case=cases())
@example(case=(TIED_DEEP, 1, 0))
def test_config_round_trips_through_json(case):
    kwargs, _, _ = case
    model = Autoencoder(**kwargs, dtype="float32")
    config = json.loads(json.dumps(model.config()))
    rebuilt = Autoencoder.from_config(config)
    assert rebuilt.config() == model.config()
    assert rebuilt == model
    assert rebuilt.param_shapes() == model.param_shapes()


def test_from_config_fills_defaults():
    assert Autoencoder.from_config({}) == Autoencoder()
    assert Autoencoder.from_config({"layers": [4, 2, 4]}).layers == [4, 2, 4]


@pytest.mark.parametrize("activation, scale", [("sigmoid", 4.0), ("relu", 1.0), ("tanh", 1.0)])
def test_init_range(activation, scale):
    model = Autoencoder(activation=activation, output_activation=activation)
    params = model.init_params(seed=0)
    r = scale * math.sqrt(6 / (784 + 200))
    for name in ("W1", "W2"):
        assert np.max(np.abs(params[name])) <= r
        assert np.max(np.abs(params[name])) > 0.99 * r  # 156,800 draws reach the edge
        assert abs(np.mean(params[name])) < 0.01 * r
    assert not params["b1"].any() and not params["b2"].any()


def test_init_is_deterministic_by_seed_in_either_dtype():
    model = Autoencoder(layers=[10, 4, 10])
    first, again = model.init_params(seed=3), model.init_params(seed=3)
    other = model.init_params(seed=4)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["W1"], other["W1"])
    from_generator = model.init_params(np.random.default_rng(3))
    np.testing.assert_array_equal(from_generator["W2"], first["W2"])
    single = Autoencoder(layers=[10, 4, 10], dtype="float32").init_params(seed=3)
    assert all(v.dtype == np.float32 for v in single.values())
    np.testing.assert_array_equal(single["W1"], first["W1"].astype(np.float32))


# ----- bad input: every case names what is wrong --------------------------------------------


@pytest.mark.parametrize("kwargs, words", [
    pytest.param(dict(activation="softmax"),
                 ["activation", "softmax", "sigmoid, tanh, relu, identity"], id="activation"),
    pytest.param(dict(activation=["sigmoid", "gelu"], layers=[6, 4, 3, 6]),
                 ["activation", "gelu"], id="activation-list-name"),
    pytest.param(dict(activation=["sigmoid"], layers=[6, 4, 3, 6]),
                 ["one name per hidden layer", "expected 2, got 1"], id="activation-list-length"),
    pytest.param(dict(output_activation="softmax"),
                 ["output_activation", "softmax", "identity"], id="output-activation"),
    pytest.param(dict(loss="mse"), ["loss", "mse", "squared, cross_entropy"], id="loss"),
    pytest.param(dict(reduction="avg"), ["reduction", "avg", "sum, mean"], id="reduction"),
    pytest.param(dict(dtype="float16"), ["dtype", "float16", "float64, float32"], id="dtype"),
    pytest.param(dict(weight_decay=-0.1),
                 ["weight_decay", ">= 0", "-0.1"], id="negative-weight-decay"),
    pytest.param(dict(weight_decay=math.nan), ["weight_decay", "finite"], id="nan-weight-decay"),
    pytest.param(dict(sparsity_weight=-1.0),
                 ["sparsity_weight", ">= 0"], id="negative-sparsity-weight"),
    pytest.param(dict(sparsity_target=0.0),
                 ["sparsity_target", "between 0 and 1"], id="sparsity-target-0"),
    pytest.param(dict(sparsity_target=1.0),
                 ["sparsity_target", "between 0 and 1"], id="sparsity-target-1"),
    pytest.param(dict(sparsity_target=1.5),
                 ["sparsity_target", "between 0 and 1"], id="sparsity-target-1.5"),
    pytest.param(dict(layers=[6, 4, 3, 6], tied=True),
                 ["tied", "symmetric", "[6, 4, 3, 6]"], id="tied-asymmetric"),
    pytest.param(dict(layers=[6, 4, 4, 6], tied=True),
                 ["tied", "even number"], id="tied-odd-depth"),
    pytest.param(dict(loss="cross_entropy", output_activation="identity"),
                 ["cross_entropy", "output_activation", "sigmoid", "identity"],
                 id="cross-entropy-output"),
    pytest.param(dict(sparsity_weight=0.1, activation="relu"),
                 ["sparsity", "sigmoid", "code layer", "relu"], id="sparsity-code-activation"),
    pytest.param(dict(layers=[784, 784]), ["at least 3"], id="too-few-layers"),
    pytest.param(dict(layers=[784, 200, 100]),
                 ["layers", "[784, 200, 100]", "end with the size"], id="first-not-last"),
    pytest.param(dict(layers=[6, 0, 6]), ["positive integers"], id="zero-width"),
    pytest.param(dict(layers=[6, 2.5, 6]), ["positive integers"], id="float-width"),
    pytest.param(dict(n_hidden=-3), ["n_hidden", "positive integers"], id="negative-n-hidden"),
    pytest.param(dict(bias="yes"), ["bias", "True or False"], id="bias-not-bool"),
])
def test_bad_options_raise_input_error(kwargs, words):
    with pytest.raises(InputError) as info:
        Autoencoder(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_from_config_rejects_unknown_keys():
    with pytest.raises(InputError) as info:
        Autoencoder.from_config({"layers": [4, 2, 4], "hidden": 3, "lr": 0.1})
    message = str(info.value)
    assert "unknown" in message and "hidden" in message and "lr" in message
    assert "layers" in message  # the valid keys are listed


@pytest.fixture
def seed_model():
    return Autoencoder(layers=[6, 4, 6])


def _bad_params(model: Autoencoder, change) -> dict:
    params = model.init_params(seed=0)
    change(params)
    return params


@pytest.mark.parametrize("change, words", [
    (lambda p: p.pop("W2"), ["missing W2", "extra none"]),
    (lambda p: p.update(W3=np.zeros((4, 6))), ["missing none", "extra W3"]),
    (lambda p: (p.pop("b2"), p.update(c2=np.zeros(6))), ["missing b2", "extra c2"]),
    (lambda p: p.update(W1=np.zeros((4, 6))), ["W1", "(4, 6)", "(6, 4)"]),
    (lambda p: p.update(b1=np.zeros((1, 4))), ["b1", "(1, 4)", "(4,)"]),
    (lambda p: p["W2"].__setitem__((0, 1), np.nan), ["W2", "non-finite"]),
    (lambda p: p["b1"].__setitem__(2, np.inf), ["b1", "non-finite"]),
    (lambda p: p.update(W1=p["W1"].astype(complex)), ["W1", "complex", "real"]),
    (lambda p: p.update(W1=[[1.0, 2.0], [3.0]]), ["W1", "rectangular"]),
], ids=["missing", "extra", "missing-and-extra", "W-shape", "b-shape", "nan", "inf",
        "complex", "ragged"])
def test_bad_params_raise_input_error(seed_model, change, words):
    params = _bad_params(seed_model, change)
    x = np.zeros((2, 6))
    for call in (seed_model.validate_params, lambda p: seed_model.loss(p, x),
                 lambda p: seed_model.loss_and_grad(p, x), lambda p: seed_model.encode(p, x)):
        with pytest.raises(InputError) as info:
            call(params)
        for word in words:
            assert word in str(info.value)


def test_params_must_be_a_dict(seed_model):
    with pytest.raises(InputError, match="dict of named arrays"):
        seed_model.validate_params([np.zeros((6, 4))])


def test_sum_overflow_is_not_mistaken_for_a_non_finite_value(seed_model):
    params = seed_model.init_params(seed=0)
    params["b2"] = np.full(6, 1e308)
    seed_model.validate_params(params)  # finite, although their sum overflows


@pytest.mark.parametrize("x, words", [
    (np.zeros((2, 5)), ["(batch, n_visible)", "(batch, 6)", "(2, 5)"]),
    (np.zeros(6), ["(batch, n_visible)", "(6,)"]),
    (np.zeros((0, 6)), ["batch >= 1", "(0, 6)"]),
    (np.zeros((2, 6, 1)), ["(batch, n_visible)", "(2, 6, 1)"]),
    (np.array([[0.0] * 5 + [np.nan]]), ["x", "non-finite"]),
    (np.array([["a"] * 6]), ["x", "real numbers"]),
], ids=["width", "1d", "empty", "3d", "nan", "strings"])
def test_bad_x_raises_input_error(seed_model, x, words):
    params = seed_model.init_params(seed=0)
    for call in (seed_model.validate_input, lambda v: seed_model.loss(params, v),
                 lambda v: seed_model.forward(params, v)):
        with pytest.raises(InputError) as info:
            call(x)
        for word in words:
            assert word in str(info.value)


def test_backward_rejects_a_foreign_cache(seed_model):
    params = seed_model.init_params(seed=0)
    _, cache = Autoencoder(layers=[6, 5, 4, 6]).forward(
        Autoencoder(layers=[6, 5, 4, 6]).init_params(), np.zeros((1, 6)))
    with pytest.raises(InputError, match="ForwardCache"):
        seed_model.backward(params, cache)
    with pytest.raises(InputError, match="ForwardCache"):
        seed_model.backward(params, "cache")


def test_bad_seed_raises_input_error(seed_model):
    with pytest.raises(InputError, match="seed"):
        seed_model.init_params(seed=-1)


def test_an_infinite_sparsity_penalty_is_refused_where_it_is_computed():
    # float32 sigmoid units with s = 40 on every example have a mean activation of exactly 1.
    model = Autoencoder(layers=[4, 2, 4], sparsity_weight=1.0, dtype="float32")
    params = model.init_params(0)
    params["b1"][:] = 40
    x = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(InputError, match=r"sparsity penalty is infinite: code unit\(s\) 0, 1"):
        model.loss(params, x)
    with pytest.raises(InputError, match="mean activation of exactly 1 in float32"):
        model.loss_and_grad(params, x)
    # A train loop that checks the loss itself gets inf, and stops as diverged.
    with np.errstate(all="ignore"):
        loss, _ = model.loss_and_grad(params, x, check_finite=False)
    assert loss == np.inf
