"""Training: each method lowers the error, runs are reproducible, resume is exact, divergence
stops."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import gradproof.train as train_module
from gradproof.checkpoint import load_checkpoint
from gradproof.data.mnist import load_mnist
from gradproof.errors import InputError, TrainingDiverged
from gradproof.nn.autoencoder import Autoencoder
from gradproof.train import (
    DIVERGENCE_FACTOR,
    EpochDone,
    StepDone,
    TrainStarted,
    default_learning_rate,
    reconstruction_error,
    train,
)

N_TRAIN = 200


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    x, _ = load_mnist("train", limit=N_TRAIN + 50)
    return x  # (250, 784) in [0, 1]: 200 to train on, 50 to test


@pytest.fixture
def x_train(images: np.ndarray) -> np.ndarray:
    return images[:N_TRAIN]


@pytest.fixture
def x_test(images: np.ndarray) -> np.ndarray:
    return images[N_TRAIN:]


@pytest.fixture
def model() -> Autoencoder:
    return Autoencoder(n_hidden=16)


def test_reconstruction_error_is_the_mean_summed_squared_error(model, x_train, monkeypatch):
    params = model.init_params(seed=1)
    z = model.reconstruct(params, x_train)
    expected = np.mean(np.sum((z - x_train) ** 2, axis=1))
    # A chunk that does not divide 200 exercises the chunked sum's ragged end.
    monkeypatch.setattr(train_module, "_EVAL_CHUNK", 7)
    assert reconstruction_error(model, params, x_train) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("method", "epochs"), [("gd", 10), ("sgd", 3), ("lbfgs", 5)], ids=["gd", "sgd", "lbfgs"]
)
def test_each_method_lowers_the_error(model, x_train, x_test, method, epochs):
    params = model.init_params(seed=0)
    before = reconstruction_error(model, params, x_test)
    result = train(model, params, x_train, x_test=x_test, method=method, epochs=epochs)
    errors = [m.train_error for m in result.history]
    assert len(errors) == epochs
    assert errors[-1] < errors[0]
    assert result.final.test_error < 0.9 * before
    assert result.stop_reason == "completed"


def test_the_callers_params_are_left_alone(model, x_train):
    params = model.init_params(seed=0)
    original = {name: value.copy() for name, value in params.items()}
    result = train(model, params, x_train, epochs=1)
    for name in params:
        np.testing.assert_array_equal(params[name], original[name])
        assert not np.array_equal(result.params[name], original[name])


def test_the_same_seed_gives_the_same_params_and_another_seed_does_not(model, x_train):
    params = model.init_params(seed=0)
    first = train(model, params, x_train, epochs=2, batch_size=32, seed=3).params
    again = train(model, params, x_train, epochs=2, batch_size=32, seed=3).params
    other = train(model, params, x_train, epochs=2, batch_size=32, seed=4).params
    for name in params:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["W1"], other["W1"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", ["sgd", "gd"])
def test_resuming_from_a_checkpoint_equals_the_straight_run_bit_for_bit(
    x_train, x_test, tmp_path, method, dtype
):
    model = Autoencoder(n_hidden=16, dtype=dtype)
    params = model.init_params(seed=0)
    # A pinned BLAS thread count: in float32 the count changes the products' rounding, and
    # by default it follows the machine's load, which may differ between the runs.
    options = dict(x_test=x_test, method=method, batch_size=64, seed=5, blas_threads=1)
    straight = train(model, params, x_train, epochs=4, **options)

    path = tmp_path / "checkpoint.npz"
    train(model, params, x_train, epochs=2, checkpoint_path=path, **options)
    loaded_model, loaded_params, state = load_checkpoint(path)
    assert state.epoch == 2
    # The options come back from the state: resume passes none of them again.
    resumed = train(loaded_model, loaded_params, x_train, x_test=x_test, epochs=4, state=state,
                    blas_threads=1)

    for name in params:
        assert resumed.params[name].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(resumed.params[name], straight.params[name])
    assert [m.train_error for m in resumed.history] == [m.train_error for m in straight.history]
    assert resumed.state.step == straight.state.step


def test_lbfgs_resumes_to_the_requested_epoch(model, x_train, tmp_path):
    path = tmp_path / "checkpoint.npz"
    train(model, model.init_params(seed=0), x_train, method="lbfgs", epochs=2, checkpoint_path=path)
    loaded_model, params, state = load_checkpoint(path)
    assert state.velocity == {}
    result = train(loaded_model, params, x_train, epochs=4, state=state)
    assert result.state.epoch == 4
    assert [m.epoch for m in result.history] == [1, 2, 3, 4]


def test_a_state_past_the_target_trains_nothing(model, x_train):
    first = train(model, model.init_params(seed=0), x_train, epochs=2)
    again = train(model, first.params, x_train, epochs=2, state=first.state)
    assert again.state.epoch == 2
    assert "already" in again.stop_reason
    for name in first.params:
        np.testing.assert_array_equal(again.params[name], first.params[name])


def test_a_checkpoint_is_written_after_every_epoch(model, x_train, tmp_path):
    path = tmp_path / "run" / "checkpoint.npz"
    seen = []

    def callback(event):
        if isinstance(event, EpochDone):
            seen.append(load_checkpoint(event.checkpoint)[2].epoch)

    result = train(model, model.init_params(seed=0), x_train, epochs=3, checkpoint_path=path,
                   callback=callback, info={"note": "kept"})
    assert seen == [1, 2, 3]
    _, params, state = load_checkpoint(path)
    for name in params:
        np.testing.assert_array_equal(params[name], result.params[name])
    assert state.info == {"note": "kept"}
    assert [m.epoch for m in state.history] == [1, 2, 3]


def test_the_callback_sees_start_every_step_and_every_epoch(model, x_train):
    events = []
    params = model.init_params(seed=0)
    train(model, params, x_train, epochs=2, batch_size=64, callback=events.append)
    steps_per_epoch = math.ceil(N_TRAIN / 64)  # 4: three of 64 and one of 8
    assert isinstance(events[0], TrainStarted)
    assert events[0].steps_per_epoch == steps_per_epoch
    steps = [e for e in events if isinstance(e, StepDone)]
    epochs = [e for e in events if isinstance(e, EpochDone)]
    assert len(steps) == 2 * steps_per_epoch
    assert [e.metrics.epoch for e in epochs] == [1, 2]
    first_epoch = steps[:steps_per_epoch]
    assert first_epoch[-1].running_loss == pytest.approx(np.mean([s.loss for s in first_epoch]))
    assert epochs[0].metrics.loss == pytest.approx(first_epoch[-1].running_loss)


def test_default_learning_rate_divides_a_summed_loss_by_the_batch():
    summed, mean = Autoencoder(n_hidden=8), Autoencoder(n_hidden=8, reduction="mean")
    assert default_learning_rate(summed, "sgd", 100) == pytest.approx(
        default_learning_rate(mean, "sgd", 100) / 100
    )
    assert default_learning_rate(mean, "gd", 5000) == default_learning_rate(mean, "gd", 10)


def _linear_model() -> Autoencoder:
    # Identity activations: nothing saturates, so a huge step makes the loss overflow.
    return Autoencoder(n_hidden=16, activation="identity", output_activation="identity")


def test_divergence_raises_and_keeps_the_last_good_checkpoint(x_train, tmp_path):
    model = _linear_model()
    path = tmp_path / "checkpoint.npz"
    good = train(model, model.init_params(seed=0), x_train, epochs=1, learning_rate=1e-4,
                 checkpoint_path=path)

    with pytest.raises(TrainingDiverged) as caught:
        train(model, good.params, x_train, epochs=3, learning_rate=1e200, state=good.state,
              checkpoint_path=path)

    message = str(caught.value)
    assert "diverged in epoch 2" in message
    assert "learning rate" in message
    assert str(path) in message
    _, params, state = load_checkpoint(path)
    assert state.epoch == 1
    for name, value in params.items():
        assert np.isfinite(value).all()
        np.testing.assert_array_equal(value, good.params[name])


def test_divergence_without_a_checkpoint_says_none_was_written(x_train):
    model = _linear_model()
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        train(model, model.init_params(seed=0), x_train, epochs=2, learning_rate=1e200)


def test_a_loss_grown_a_millionfold_is_divergence_before_anything_overflows(x_train, tmp_path):
    # In float64 this network's loss climbs through 1e10 and beyond within a few steps, far
    # from overflowing: without the growth check training went on with weights of 1e85.
    model = _linear_model()
    path = tmp_path / "checkpoint.npz"
    losses: list[float] = []

    def record(event):
        if isinstance(event, StepDone):
            losses.append(event.loss)

    with pytest.raises(TrainingDiverged) as caught:
        train(model, model.init_params(seed=0), x_train, epochs=5, learning_rate=1e-2,
              callback=record, checkpoint_path=path)

    message = str(caught.value)
    assert re.search(r"the loss grew to \S+, more than 1e\+06 times its first value", message)
    assert np.isfinite(losses).all() and max(losses) <= DIVERGENCE_FACTOR * losses[0]
    _, _, state = load_checkpoint(path)
    assert f"the last good checkpoint (epoch {state.epoch})" in message
    assert state.history[-1].loss <= DIVERGENCE_FACTOR * losses[0]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.5}, "momentum"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"seed": -1}, "seed"),
        ({"method": "adam"}, "gd, sgd, lbfgs"),
    ],
    ids=["negative-lr", "zero-lr", "nan-lr", "momentum-1", "negative-momentum", "batch-0",
         "epochs-0", "negative-seed", "unknown-method"],
)
def test_bad_options_raise_input_error_naming_them(model, x_train, options, words):
    with pytest.raises(InputError, match=words):
        train(model, model.init_params(seed=0), x_train, **options)


def test_lbfgs_refuses_float32(x_train):
    model = Autoencoder(n_hidden=8, dtype="float32")
    with pytest.raises(InputError, match="float64"):
        train(model, model.init_params(seed=0), x_train, method="lbfgs")


def test_inputs_of_the_wrong_width_raise_input_error(model):
    with pytest.raises(InputError, match="n_visible"):
        train(model, model.init_params(seed=0), np.zeros((10, 100)))
