"""Spec for the train loop's fast path: workspaces, scaled gradients, skipped scans, flushing,
the loss's value and delta from one residual, 64-byte aligned arrays.

None of it may change an answer: the workspace path must give bit for bit the gradient of the
plain ``loss_and_grad`` (itself checked against autograd in test_autoencoder.py), a scaled
gradient must be the gradient times the scale, the loss's ``value_and_delta`` must give
``value`` bit for bit, and ``train`` must be plain SGD with momentum over the batches
``epoch_order`` names, in the model's dtype. A worked example of the flush: a float32 output
unit with ``s = -46`` has ``z = e^-46 = 1.1e-20``; with target 0 its squared-error delta
``(z - x) z (1 - z)`` is 1.1e-40, a subnormal number, and becomes exactly 0, as does every
delta below tiny / eps = 9.9e-32.
"""

from __future__ import annotations

import dataclasses
import math
import tracemalloc
import warnings

import numpy as np
import pytest
from scipy.special import expit

from gradproof.data.mnist import load_mnist
from gradproof.errors import InputError
from gradproof.nn import ACTIVATIONS, LOSSES, Autoencoder, aligned
from gradproof.nn.layers import flush_tiny
from gradproof.train import StepDone, epoch_order, train

CONFIGS = {
    "seed": dict(layers=[12, 5, 12]),
    "deep-mean-ce": dict(layers=[12, 6, 3, 6, 12], activation=["tanh", "relu", "sigmoid"],
                         loss="cross_entropy", reduction="mean"),
    "tied-decay-sparse": dict(layers=[12, 6, 3, 6, 12], tied=True, weight_decay=0.1,
                              sparsity_weight=0.5),
    "nobias-identity": dict(layers=[12, 4, 12], bias=False, activation="identity",
                            output_activation="identity"),
}
DTYPES = ["float64", "float32"]


def model_params_x(config: str, dtype: str, batch: int = 7, seed: int = 0):
    model = Autoencoder(**CONFIGS[config], dtype=dtype)
    params = model.init_params(seed=seed)
    x = np.random.default_rng(seed).random((batch, 12)).astype(dtype)
    return model, params, x


def is_subnormal(arr: np.ndarray) -> np.ndarray:
    return (arr != 0) & (np.abs(arr) < np.finfo(arr.dtype).tiny)


def is_aligned(arr: np.ndarray) -> bool:
    return arr.ctypes.data % aligned.ALIGNMENT == 0


# ----- the workspace ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_workspace_gives_the_plain_gradient_bit_for_bit(config, dtype):
    model, params, x = model_params_x(config, dtype)
    workspace = model.workspace(len(x))
    loss, grads = model.loss_and_grad(params, x)
    for _ in range(2):  # the second call reuses what the first one wrote into
        ws_loss, ws_grads = model.loss_and_grad(params, x, out=workspace)
        assert ws_loss == loss
        assert sorted(ws_grads) == sorted(grads)
        for name, grad in grads.items():
            assert ws_grads[name].dtype == grad.dtype
            np.testing.assert_array_equal(ws_grads[name], grad, err_msg=name)


def test_workspace_gradients_live_in_the_workspace_and_plain_ones_are_fresh():
    model, params, x = model_params_x("seed", "float64")
    workspace = model.workspace(len(x))
    _, first = model.loss_and_grad(params, x, out=workspace)
    _, second = model.loss_and_grad(params, 2 * x, out=workspace)
    assert all(first[name] is second[name] for name in first)  # overwritten in place
    _, plain = model.loss_and_grad(params, x)
    _, plain_again = model.loss_and_grad(params, x)
    for name in plain:
        assert not np.shares_memory(plain[name], plain_again[name])
        assert not np.shares_memory(plain[name], second[name])


@pytest.mark.parametrize(
    ("make_out", "words"),
    [
        (lambda model: model.workspace(3), "holds batches of 3 rows"),
        (lambda model: Autoencoder(layers=[12, 6, 12]).workspace(7), "made for layers"),
        (lambda model: Autoencoder(layers=[12, 5, 12]).workspace(7), "float64"),
        (lambda model: {"W1": np.zeros((12, 5))}, "Workspace"),
    ],
    ids=["batch", "layers", "dtype", "not-a-workspace"],
)
def test_a_workspace_that_does_not_fit_raises_input_error(make_out, words):
    model, params, x = model_params_x("seed", "float32")
    with pytest.raises(InputError, match=words):
        model.loss_and_grad(params, x, out=make_out(model))


@pytest.mark.parametrize("batch", [0, -1, 2.5, "100", True])
def test_a_workspace_needs_a_positive_batch_size(batch):
    with pytest.raises(InputError, match="batch size"):
        Autoencoder(layers=[12, 5, 12]).workspace(batch)


# ----- grad_scale and check_finite ----------------------------------------------------------


@pytest.mark.parametrize("scale", [-0.005, 3.0, 0.0])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_grad_scale_scales_the_gradient_and_not_the_loss(config, scale):
    model, params, x = model_params_x(config, "float64")
    loss, grads = model.loss_and_grad(params, x)
    scaled_loss, scaled = model.loss_and_grad(params, x, grad_scale=scale,
                                              out=model.workspace(len(x)))
    assert scaled_loss == loss
    for name, grad in grads.items():
        np.testing.assert_allclose(scaled[name], scale * grad, rtol=1e-12, atol=1e-300,
                                   err_msg=name)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), "0.1", None])
def test_a_bad_grad_scale_raises_input_error(scale):
    model, params, x = model_params_x("seed", "float64")
    with pytest.raises(InputError, match="grad_scale"):
        model.loss_and_grad(params, x, grad_scale=scale)


def test_check_finite_false_skips_only_the_scan_for_nan_and_inf():
    model, params, x = model_params_x("seed", "float64")
    params["W2"][0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        model.loss_and_grad(params, x)
    with np.errstate(invalid="ignore"):
        loss, _ = model.loss_and_grad(params, x, check_finite=False)
    assert math.isnan(loss)
    with pytest.raises(InputError, match="shape"):  # shapes are still checked
        model.loss_and_grad(params, x[:, :5], check_finite=False)


# ----- activations into buffers -------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_write_into_out_what_they_return_without_it(name, dtype):
    act = ACTIVATIONS[name]
    s = np.linspace(-5, 5, 24, dtype=dtype).reshape(4, 6)
    a = act.forward(s)
    out = np.full_like(s, np.nan)
    assert act.forward(s, out=out) is out
    np.testing.assert_array_equal(out, a)
    d_out = np.full_like(s, np.nan)
    assert act.derivative(a, out=d_out) is d_out
    np.testing.assert_array_equal(d_out, act.derivative(a))
    assert a.dtype == act.derivative(a).dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_agrees_with_expit_everywhere_and_saturates_silently(dtype):
    # scipy's expit, which the sigmoid replaced, computes the same formula in the same dtype.
    s = np.concatenate([np.linspace(-120, 120, 4001), [-1e4, 1e4, 0.0]]).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning where e^-s is inf
        a = ACTIVATIONS["sigmoid"].forward(s)
    expected = expit(s)
    assert np.all(np.abs(a - expected) <= 2 * np.spacing(expected))  # 2 units in the last place
    assert a[-3] == 0 and a[-2] == 1 and a[-1] == 0.5


# ----- the loss's value and delta ----------------------------------------------------------


@pytest.mark.parametrize("into", [False, True], ids=["fresh", "buffers"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_value_and_delta_give_the_value_bit_for_bit_and_the_delta(loss, dtype, into):
    rng = np.random.default_rng(3)
    sigmoid = ACTIVATIONS["sigmoid"]
    s = (8 * rng.normal(size=(5, 12))).astype(dtype)
    z, x = sigmoid.forward(s), rng.random((5, 12)).astype(dtype)
    inputs = [arr.copy() for arr in (x, z, s)]
    out = np.full_like(z, np.nan) if into else None
    scratch = np.full_like(z, np.nan) if into else None
    value, d_s = LOSSES[loss].value_and_delta(x, z, s, sigmoid, out=out, scratch=scratch)
    assert value == LOSSES[loss].value(x, z, s)
    # dJ/ds = (z - x) σ'(s) for the squared error, with σ' = (1 - z) z from the output, and
    # z - x for the cross-entropy of a sigmoid, in the same roundings as before the fusion.
    expected = (z - x) * ((1 - z) * z) if loss == "squared" else z - x
    np.testing.assert_array_equal(d_s, expected)
    assert d_s.dtype == np.dtype(dtype)
    assert (d_s is out) if into else not any(np.shares_memory(d_s, arr) for arr in (x, z, s))
    for before, after in zip(inputs, (x, z, s)):
        np.testing.assert_array_equal(before, after)  # the inputs are left alone


# ----- 64-byte alignment --------------------------------------------------------------------


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "bool"])
@pytest.mark.parametrize("shape", [(100, 784), (7, 3), (5,), (0, 4)],
                         ids=["batch", "small", "vector", "empty"])
def test_aligned_arrays_have_the_shape_dtype_and_order_asked_for(shape, dtype, order):
    for make in (aligned.empty, aligned.zeros):
        arr = make(shape, dtype, order)
        assert arr.shape == shape and arr.dtype == np.dtype(dtype)
        assert arr.flags[f"{order}_CONTIGUOUS"] and arr.flags.writeable
        assert is_aligned(arr) or arr.size == 0  # no data, nothing to align
    assert not aligned.zeros(shape, dtype, order).any()


def test_aligned_copy_is_an_aligned_c_ordered_copy_in_the_dtype_asked_for():
    source = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    copied = aligned.copy(source, np.float32)
    assert is_aligned(copied) and copied.flags.c_contiguous and copied.dtype == np.float32
    np.testing.assert_array_equal(copied, source.astype(np.float32))
    copied[0, 0] = -1
    assert source[0, 0] == 0  # a copy, not a view


# ----- flushing subnormals ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("buffers", [False, True], ids=["fresh", "buffers"])
def test_flush_tiny_zeroes_exactly_the_entries_below_tiny_over_eps(dtype, buffers):
    info = np.finfo(dtype)
    bound = info.tiny / info.eps  # 9.9e-32 in float32, 1.0e-292 in float64
    arr = np.array([info.tiny / 2, -info.tiny, bound / 2, -bound * 0.99, 0.0, bound,
                    -bound * 1.01, 1.0, -1e-30], dtype)
    expected = np.array([0, 0, 0, 0, 0, bound, -bound * 1.01, 1, -1e-30], dtype)
    assert is_subnormal(arr).sum() == 1
    extra = dict(scratch=np.empty_like(arr), mask=np.empty(arr.shape, bool)) if buffers else {}
    assert flush_tiny(arr, **extra) is arr
    np.testing.assert_array_equal(arr, expected)


@pytest.mark.parametrize("s", [-46.0, -40.0], ids=["subnormal-deltas", "tiny-deltas"])
def test_a_saturated_float32_output_gives_zeros_instead_of_subnormal_gradients(s):
    # z = e^s is 1.1e-20 or 4.2e-18, so the deltas (z - 0) z (1 - z) are 1.1e-40 (subnormal)
    # or 1.8e-35 (normal, but times an activation below 1 a subnormal product in the matmul).
    model = Autoencoder(layers=[12, 5, 12], dtype="float32")
    params = model.init_params(seed=0)
    params["W2"][:] = 0
    params["b2"][:] = s
    x = np.zeros((7, 12), np.float32)
    for out in (None, model.workspace(7)):
        _, grads = model.loss_and_grad(params, x, out=out)
        for name, grad in grads.items():
            assert not is_subnormal(grad).any(), name
        np.testing.assert_array_equal(grads["b2"], 0)  # every delta flushed
    # In float64 the same deltas are normal numbers and are kept.
    _, grads64 = Autoencoder(layers=[12, 5, 12]).loss_and_grad(params, x.astype(np.float64))
    assert np.all(grads64["b2"] > 0)


# ----- the train loop -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    x, _ = load_mnist("train", limit=300)
    return x  # (300, 784) float64 in [0, 1]


def test_epoch_order_is_a_seeded_permutation_per_epoch():
    order = epoch_order(3, 1, 50)
    np.testing.assert_array_equal(np.sort(order), np.arange(50))
    np.testing.assert_array_equal(order, epoch_order(3, 1, 50))
    np.testing.assert_array_equal(order, np.random.default_rng((3, 1)).permutation(50))
    assert not np.array_equal(order, epoch_order(3, 2, 50))
    assert not np.array_equal(order, epoch_order(4, 1, 50))


def test_train_is_sgd_with_momentum_over_the_epoch_order_batches(images):
    # 300 images in batches of 64: four of 64 and a last one of 44, two epochs.
    model = Autoencoder(n_hidden=16)
    start = model.init_params(seed=2)
    rate, momentum, batch = 0.003, 0.7, 64
    result = train(model, start, images, epochs=2, learning_rate=rate, momentum=momentum,
                   batch_size=batch, seed=5)

    params = {name: value.copy() for name, value in start.items()}
    velocity = {name: np.zeros_like(value) for name, value in start.items()}
    for epoch in range(2):
        order = epoch_order(5, epoch, len(images))
        for begin in range(0, len(images), batch):
            _, grads = model.loss_and_grad(params, images[order[begin : begin + batch]])
            for name, grad in grads.items():
                velocity[name] = momentum * velocity[name] - rate * grad
                params[name] = params[name] + velocity[name]
    for name, value in params.items():
        np.testing.assert_allclose(result.params[name], value, rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def test_sgd_steps_allocate_no_weight_sized_arrays(images):
    model = Autoencoder()  # W1 and W2 hold 156800 float64 each: 1.25 MB
    weight_bytes = model.init_params()["W1"].nbytes
    peaks = []

    def watch(event: object) -> None:
        # Trace from the end of the first step (the workspace exists) to the last one.
        if isinstance(event, StepDone) and event.step_in_epoch == 1:
            tracemalloc.start()
        elif isinstance(event, StepDone) and event.step_in_epoch == event.steps_per_epoch:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    train(model, model.init_params(), images, epochs=1, batch_size=25, callback=watch)
    # The loss writes into the workspace too, so a step allocates less than one (25, 784)
    # batch-sized array (157 KB; what is left is numpy's iteration buffers, up to 8192
    # entries); a step that allocated its gradients or updates would need a weight-sized one.
    batch_bytes = 25 * model.n_visible * 8
    assert peaks and peaks[0] < batch_bytes < weight_bytes


def test_the_step_arrays_params_and_velocity_start_on_64_byte_boundaries(images):
    model = Autoencoder(n_hidden=16, dtype="float32")
    for buffers in model.workspace(25).buffers:
        for field in dataclasses.fields(buffers):
            arr = getattr(buffers, field.name)
            assert arr is None or is_aligned(arr), field.name
    result = train(model, model.init_params(), images, epochs=1, batch_size=25)
    for name, value in result.params.items():
        assert is_aligned(value) and is_aligned(result.state.velocity[name]), name


def test_a_float32_model_trains_in_float32_from_float64_params_and_velocity(images):
    model = Autoencoder(n_hidden=16, dtype="float32")
    start = {name: value.astype(np.float64) for name, value in model.init_params(1).items()}
    first = train(model, start, images, epochs=1, batch_size=50)
    state = dataclasses.replace(first.state, velocity={
        name: value.astype(np.float64) for name, value in first.state.velocity.items()
    })
    resumed = train(model, start, images, epochs=2, batch_size=50, state=state)
    for result in (first, resumed):
        for name in start:
            assert result.params[name].dtype == np.float32, name
            # A float64 velocity would make every update pass a float64 one.
            assert result.state.velocity[name].dtype == np.float32, name
